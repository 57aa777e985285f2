-- Per-tenant API keys, as sluice.apikeys.StoredKey describes them: never the secret, only its
-- SHA-256. The API looks a key up by key_id on every request, before it knows the tenant, so
-- this is the one table read without a tenant condition; the tenant comes out of the row.
-- A key is revoked by setting revoked_at, never deleted, so a revoked key stays recognisable
-- ("has been revoked") and its history stays auditable.
CREATE TABLE public.api_keys (
    key_id        text        PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]+$'),
    tenant        text        NOT NULL,
    secret_sha256 text        NOT NULL CHECK (secret_sha256 ~ '^[0-9a-f]{64}$'),
    created       timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

-- Listing and revoking a tenant's keys.
CREATE INDEX api_keys_tenant ON public.api_keys (tenant);
