-- Customer data the processor adds to events on their way to events.enriched. Loaded by the
-- tenants' own tooling, read by the processor (cached) by (tenant_id, customer_id).
--
-- A reference table where Citus is on: a full copy on every worker, so it joins with the
-- distributed events table on any shard without moving data. Small and rarely written, which
-- is what a reference table is for. A no-op without Citus.
CREATE TABLE public.customers (
    tenant_id   text        NOT NULL,
    customer_id text        NOT NULL,
    name        text,
    segment     text,
    attributes  jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, customer_id)
);

SELECT sluice.make_reference_table('public.customers');
