"""Who is calling: from an ``Authorization: Bearer ...`` credential to a tenant.

Two kinds of bearer credential are accepted, told apart by shape:

- a Sluice API key (``sk_<key id>_<secret>``, :mod:`sluice.api.apikeys`), looked up by id in the
  key store and checked against its stored hash;
- an OIDC access token (a JWT) from the configured issuer (Keycloak or any OIDC provider),
  verified against the issuer's JWKS: signature with an allowed asymmetric algorithm, ``iss``,
  ``aud``, ``exp``, ``nbf``; the tenant is the configured top-level claim.

The tenant comes only from the credential. Nothing in a request body or a query string can
name or change it, so one tenant's credential never reaches another tenant's data.

Failures: no credential is 401 ``missing_credentials``; a credential that does not prove who
the caller is (malformed, unknown, revoked, expired, badly signed, wrong issuer or audience) is
401 ``invalid_credentials``; a valid token that names no acceptable tenant is 403
``tenant_not_allowed``. Details never echo the credential, which may be a real secret sent to
the wrong place.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import jwt

from sluice.api.apikeys import KEY_PREFIX, StoredKey, authenticate, parse_key
from sluice.api.ports import AsyncKeyStore
from sluice.config import OidcSettings
from sluice.errors import Forbidden, Unauthorized, Unavailable
from sluice.tenants import validate_tenant

log = logging.getLogger(__name__)

#: Fetches the issuer's JWKS document (``{"keys": [...]}``); injectable so tests use local keys.
JwksFetch = Callable[[], Awaitable[Mapping[str, Any]]]

#: Longest bearer credential read. Real tokens are a few KiB; anything longer is refused before
#: any parsing or signature work is spent on it.
MAX_CREDENTIAL_LENGTH: Final = 16 * 1024
#: Most verified API keys kept in memory; enough for every active key of a large deployment.
MAX_CACHED_KEYS: Final = 10_000
#: Largest JWKS document read from the issuer.
MAX_JWKS_BYTES: Final = 1024 * 1024


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the tenant it acts for, how it proved it, and who it is (the
    API key id or the token's ``sub``), for logs."""

    tenant: str
    method: Literal["api_key", "oidc"]
    identity: str


def http_jwks_fetch(url: str, *, timeout: float = 5.0) -> JwksFetch:
    """A :data:`JwksFetch` that GETs ``url``. It runs the blocking urllib call in a thread: the
    fetch is rare (cache refreshes) and urllib keeps httpx out of the service's dependencies."""

    def get() -> Mapping[str, Any]:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            document = json.loads(response.read(MAX_JWKS_BYTES + 1)[:MAX_JWKS_BYTES])
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError(f"{url} did not return a JWKS document (a JSON object with 'keys')")
        return document

    async def fetch() -> Mapping[str, Any]:
        return await asyncio.to_thread(get)

    return fetch


class JwksCache:
    """The issuer's signing keys by ``kid``, fetched once and refreshed when stale.

    A token signed with a key id the cache does not know triggers a refresh (the issuer rotated
    its keys), but at most once per ``min_refresh_seconds``, so a stream of forged key ids
    cannot turn into a stream of requests to the issuer. When a refresh fails the keys already
    known keep working; only when none were ever fetched are tokens answered 503.
    """

    def __init__(
        self,
        fetch: JwksFetch,
        *,
        ttl_seconds: float = 300.0,
        min_refresh_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl_seconds
        self._min_refresh = min_refresh_seconds
        self._clock = clock
        self._keys: dict[str | None, dict[str, Any]] = {}
        #: Parsed keys by (kid, algorithm): parsing a JWK costs more than verifying with it.
        self._parsed: dict[tuple[str | None, str], jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None, algorithm: str) -> jwt.PyJWK:
        """The verification key ``kid`` names, for ``algorithm``; Unauthorized when the issuer
        has no such key or it does not fit the algorithm."""
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at >= self._ttl
        if stale or self._lookup(kid) is None:
            await self._refresh(now)
        parsed = self._parsed.get((kid, algorithm))
        if parsed is not None:
            return parsed
        jwk = self._lookup(kid)
        if jwk is None:
            named = "no key id (kid)" if kid is None else "a key id (kid) the issuer does not list"
            raise Unauthorized("invalid_credentials", f"the token is signed with {named}")
        if jwk.get("alg") not in (None, algorithm):
            raise Unauthorized(
                "invalid_credentials",
                f"the token says {algorithm} but its key is for {jwk['alg']}",
            )
        try:
            parsed = jwt.PyJWK(jwk, algorithm=algorithm)
        except jwt.PyJWTError:
            raise Unauthorized(
                "invalid_credentials", f"the token's key cannot verify {algorithm} signatures"
            ) from None
        self._parsed[(kid, algorithm)] = parsed
        return parsed

    def _lookup(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None and len(self._keys) == 1:
            # An issuer with one key may leave kid out; with several the key would be a guess.
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _refresh(self, now: float) -> None:
        async with self._lock:
            if self._attempted_at is not None and now - self._attempted_at < self._min_refresh:
                if not self._keys:
                    raise self._unavailable()
                return
            self._attempted_at = self._clock()
            try:
                document = await self._fetch()
                keys = {
                    jwk.get("kid"): dict(jwk)
                    for jwk in document["keys"]
                    if isinstance(jwk, dict) and jwk.get("use", "sig") == "sig"
                }
            except Exception:
                log.warning("cannot fetch the OIDC issuer's JWKS", exc_info=True)
                if not self._keys:
                    raise self._unavailable() from None
                return
            self._keys = keys
            self._parsed = {}
            self._fetched_at = self._attempted_at

    def _unavailable(self) -> Unavailable:
        return Unavailable(
            "identity_provider_unavailable",
            "Sluice cannot fetch the token issuer's signing keys right now, so it cannot verify "
            "tokens; retry later or use an API key",
            retry_after=max(1, round(self._min_refresh)),
        )


class Authenticator:
    """Turns a request's credential into a :class:`Principal`, or an ApiError (401/403/503).

    Verified API keys are remembered for ``key_cache_seconds``, so the key store (PostgreSQL)
    sees one lookup per key and period instead of one per request; a revocation therefore takes
    effect within that period. Failed lookups are not remembered: a key created a moment ago
    works at once.
    """

    def __init__(
        self,
        keys: AsyncKeyStore,
        oidc: OidcSettings | None,
        *,
        jwks: JwksCache | None = None,
        key_cache_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = keys
        self._oidc = oidc
        if oidc is not None and jwks is None:
            jwks = JwksCache(http_jwks_fetch(oidc.jwks_url), clock=clock)
        self._jwks = jwks
        self._key_cache_seconds = key_cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[StoredKey, float]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind an ``Authorization`` header value (None when absent)."""
        if authorization is None or not authorization.strip():
            raise Unauthorized(
                "missing_credentials",
                "send 'Authorization: Bearer <credential>' with a Sluice API key "
                f"({KEY_PREFIX}...) or an access token from the configured OIDC issuer",
            )
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise Unauthorized(
                "invalid_credentials",
                "the Authorization header must read 'Bearer <credential>' (an API key or an "
                "access token)",
            )
        return await self.authenticate_credential(credential.strip())

    async def authenticate_credential(self, credential: str) -> Principal:
        """The caller behind a bare bearer credential (the WebSocket ``access_token``)."""
        if len(credential) > MAX_CREDENTIAL_LENGTH:
            raise Unauthorized(
                "invalid_credentials",
                f"the credential is longer than {MAX_CREDENTIAL_LENGTH} characters",
            )
        if credential.startswith(KEY_PREFIX):
            return await self._api_key(credential)
        if self._oidc is None or self._jwks is None:
            raise Unauthorized(
                "invalid_credentials",
                f"this Sluice accepts API keys ({KEY_PREFIX}...) only: OIDC tokens are not "
                "configured",
            )
        return await self._token(credential, self._oidc, self._jwks)

    async def _api_key(self, presented: str) -> Principal:
        key_id, _ = parse_key(presented)
        stored = self._cached(key_id)
        if stored is None:
            stored = await self._keys.get(key_id)
        record = authenticate(presented, _OneKey(stored))
        self._remember(record)
        return Principal(tenant=record.tenant, method="api_key", identity=record.key_id)

    def _cached(self, key_id: str) -> StoredKey | None:
        entry = self._cache.get(key_id)
        if entry is None:
            return None
        stored, expires = entry
        if self._clock() >= expires:
            del self._cache[key_id]
            return None
        return stored

    def _remember(self, stored: StoredKey) -> None:
        if self._key_cache_seconds <= 0:
            return
        if stored.key_id not in self._cache and len(self._cache) >= MAX_CACHED_KEYS:
            del self._cache[next(iter(self._cache))]  # the oldest entry
        self._cache[stored.key_id] = (stored, self._clock() + self._key_cache_seconds)

    async def _token(self, token: str, oidc: OidcSettings, jwks: JwksCache) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized(
                "invalid_credentials",
                f"the bearer credential is neither an API key ({KEY_PREFIX}...) nor a "
                "well-formed JWT",
            ) from None
        algorithm = header.get("alg")
        if algorithm not in oidc.algorithms:
            raise Unauthorized(
                "invalid_credentials",
                f"the token is signed with {algorithm!r}; Sluice accepts "
                f"{', '.join(oidc.algorithms)}",
            )
        kid = header.get("kid")
        key = await jwks.key(kid if isinstance(kid, str) else None, algorithm)
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=oidc.audience,
                issuer=oidc.issuer,
                leeway=oidc.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as error:
            raise Unauthorized("invalid_credentials", _token_problem(error, oidc)) from None
        tenant = claims.get(oidc.tenant_claim)
        if not isinstance(tenant, str):
            raise Forbidden(
                "tenant_not_allowed",
                f"the token has no string claim {oidc.tenant_claim!r} naming its tenant; map "
                "the user's tenant into that claim at the issuer (a Keycloak user attribute "
                "mapper)",
            )
        try:
            validate_tenant(tenant)
        except ValueError as error:
            raise Forbidden("tenant_not_allowed", f"the token's {error}") from None
        if oidc.allowed_tenants and tenant not in oidc.allowed_tenants:
            raise Forbidden(
                "tenant_not_allowed",
                f"tokens may not act for tenant {tenant!r} on this Sluice; ask its operators to "
                "add the tenant to SLUICE_OIDC_ALLOWED_TENANTS",
            )
        subject = claims.get("sub")
        return Principal(
            tenant=tenant, method="oidc", identity=subject if isinstance(subject, str) else ""
        )


class _OneKey:
    """A :class:`sluice.api.apikeys.KeyStore` holding one record already fetched, so the async path
    reuses :func:`sluice.api.apikeys.authenticate` and gives the very same answers."""

    def __init__(self, stored: StoredKey | None) -> None:
        self._stored = stored

    def get(self, key_id: str) -> StoredKey | None:
        return self._stored if self._stored is not None and self._stored.key_id == key_id else None


def _token_problem(error: jwt.PyJWTError, oidc: OidcSettings) -> str:
    """What is wrong with a token, in words a client can act on."""
    if isinstance(error, jwt.ExpiredSignatureError):
        return "the token has expired: get a new one from the issuer"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "the token is not valid yet (nbf/iat in the future): check the clocks"
    if isinstance(error, jwt.InvalidAudienceError):
        return f"the token is not for this service: its audience must include {oidc.audience!r}"
    if isinstance(error, jwt.InvalidIssuerError):
        return f"the token was not issued by {oidc.issuer}"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"the token lacks the {error.claim!r} claim"
    if isinstance(error, jwt.InvalidSignatureError):
        return "the token's signature does not verify"
    return "the token is malformed or cannot be verified"
