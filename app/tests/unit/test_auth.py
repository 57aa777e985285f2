"""Authentication: which credentials prove a tenant, and how every other one is refused.

Tokens are signed with key pairs made here and served by an in-memory JWKS, so the checks run
exactly as against Keycloak, without one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sluice.api.apikeys import StoredKey, new_key
from sluice.api.auth import Authenticator, JwksCache, Principal
from sluice.config import OidcSettings
from sluice.errors import ApiError, Forbidden, Unauthorized, Unavailable

T = TypeVar("T")

ISSUER = "https://sso.example.com/realms/sluice"
AUDIENCE = "sluice-api"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OIDC = OidcSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url=f"{ISSUER}/certs")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def public_jwk(private_key: Any, kid: str, **extra: str) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(private_key, rsa.RSAPrivateKey):
        document = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        document = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    return {**document, "kid": kid, "use": "sig", **extra}


class FakeJwks:
    """The issuer's JWKS endpoint: counts fetches, can be taken down."""

    def __init__(self, *keys: dict[str, Any]) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.down = False

    async def __call__(self) -> Mapping[str, Any]:
        self.fetches += 1
        if self.down:
            raise OSError("connection refused")
        return {"keys": self.keys}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeKeyStore:
    def __init__(self, *stored: StoredKey) -> None:
        self.keys = {key.key_id: key for key in stored}
        self.lookups = 0

    async def get(self, key_id: str) -> StoredKey | None:
        self.lookups += 1
        return self.keys.get(key_id)


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    found = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now + 300,
        "iat": now,
        "sub": "user-1",
        "tenant": "acme",
    }
    found.update(changes)
    return {name: value for name, value in found.items() if value is not None}


def token(
    payload: dict[str, Any] | None = None,
    *,
    key: Any = RSA_KEY,
    algorithm: str = "RS256",
    kid: str | None = "k1",
) -> str:
    headers = {} if kid is None else {"kid": kid}
    return jwt.encode(claims() if payload is None else payload, key, algorithm, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def handmade(header: dict[str, Any], payload: dict[str, Any], signature: bytes) -> str:
    return (
        f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{b64(signature)}"
    )


def oidc_authenticator(
    jwks: FakeJwks | None = None, oidc: OidcSettings = OIDC, clock: FakeClock | None = None
) -> Authenticator:
    clock = clock or FakeClock()
    fetch = jwks or FakeJwks(public_jwk(RSA_KEY, "k1"), public_jwk(EC_KEY, "e1"))
    return Authenticator(
        FakeKeyStore(), oidc, jwks=JwksCache(fetch, clock=clock), key_cache_seconds=10, clock=clock
    )


def refused(authenticator: Authenticator, credential: str) -> ApiError:
    with pytest.raises(ApiError) as raised:
        run(authenticator.authenticate(f"Bearer {credential}"))
    return raised.value


# --- OIDC tokens ------------------------------------------------------------------------------


def test_a_valid_rs256_token_names_its_tenant() -> None:
    principal = run(oidc_authenticator().authenticate(f"Bearer {token()}"))
    assert principal == Principal(tenant="acme", method="oidc", identity="user-1")


def test_a_valid_es256_token_is_accepted() -> None:
    credential = token(key=EC_KEY, algorithm="ES256", kid="e1")
    assert run(oidc_authenticator().authenticate(f"Bearer {credential}")).tenant == "acme"


def test_the_tenant_claim_is_configurable() -> None:
    oidc = OidcSettings(
        issuer=ISSUER, audience=AUDIENCE, jwks_url="https://k", tenant_claim="sluice_tenant"
    )
    credential = token(claims(tenant="wrong", sluice_tenant="globex"))
    assert run(oidc_authenticator(oidc=oidc).authenticate(f"Bearer {credential}")).tenant == (
        "globex"
    )


def test_an_audience_list_containing_ours_is_accepted() -> None:
    credential = token(claims(aud=["account", AUDIENCE]))
    assert run(oidc_authenticator().authenticate(f"Bearer {credential}")).tenant == "acme"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (claims(exp=int(time.time()) - 3600), "expired"),
        (claims(aud="someone-else"), "audience must include 'sluice-api'"),
        (claims(iss="https://evil.example.com/realms/sluice"), f"not issued by {ISSUER}"),
        (claims(exp=None), "'exp'"),
        (claims(aud=None), "'aud'"),
        (claims(iss=None), "'iss'"),
        (claims(nbf=int(time.time()) + 3600), "not valid yet"),
    ],
    ids=["expired", "wrong-audience", "wrong-issuer", "no-exp", "no-aud", "no-iss", "nbf-future"],
)
def test_a_token_failing_a_claim_check_is_refused(payload: dict[str, Any], expected: str) -> None:
    error = refused(oidc_authenticator(), token(payload))
    assert isinstance(error, Unauthorized)
    assert error.code == "invalid_credentials"
    assert expected in error.detail


def test_alg_none_is_refused() -> None:
    unsigned = handmade({"alg": "none", "typ": "JWT", "kid": "k1"}, claims(), b"")
    error = refused(oidc_authenticator(), unsigned)
    assert error.status == 401
    assert "'none'" in error.detail


def test_hs256_signed_with_the_public_key_is_refused() -> None:
    """The algorithm-confusion attack: the RSA public key is public, so an HMAC over it proves
    nothing. The token would verify if Sluice let the header pick the algorithm."""
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": "k1"}
    payload = claims()
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    error = refused(oidc_authenticator(), f"{signing_input}.{b64(signature)}")
    assert error.status == 401
    assert "'HS256'" in error.detail


def test_a_token_signed_by_another_key_under_a_known_kid_is_refused() -> None:
    error = refused(oidc_authenticator(), token(key=OTHER_RSA_KEY))
    assert error.status == 401
    assert "signature does not verify" in error.detail


def test_a_tampered_payload_is_refused() -> None:
    header, _, signature = token().split(".")
    forged = b64(json.dumps(claims(tenant="globex")).encode())
    error = refused(oidc_authenticator(), f"{header}.{forged}.{signature}")
    assert error.status == 401


def test_an_rsa_key_cannot_verify_an_es256_token() -> None:
    error = refused(oidc_authenticator(), token(key=EC_KEY, algorithm="ES256", kid="k1"))
    assert error.status == 401
    assert "cannot verify ES256" in error.detail


def test_a_key_published_for_another_algorithm_is_not_used() -> None:
    jwks = FakeJwks(public_jwk(RSA_KEY, "k1", alg="RS512"))
    error = refused(oidc_authenticator(jwks), token())
    assert error.status == 401
    assert "RS512" in error.detail


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (claims(tenant=None), "no string claim 'tenant'"),
        (claims(tenant=["acme"]), "no string claim 'tenant'"),
        (claims(tenant="Acme Corp"), "invalid tenant name"),
    ],
)
def test_a_valid_token_without_a_usable_tenant_is_forbidden(
    payload: dict[str, Any], expected: str
) -> None:
    error = refused(oidc_authenticator(), token(payload))
    assert isinstance(error, Forbidden)
    assert error.code == "tenant_not_allowed"
    assert expected in error.detail


def test_a_tenant_outside_the_allowed_list_is_forbidden() -> None:
    oidc = OidcSettings(
        issuer=ISSUER, audience=AUDIENCE, jwks_url="https://k", allowed_tenants=frozenset({"b"})
    )
    error = refused(oidc_authenticator(oidc=oidc), token())
    assert error.status == 403
    assert "'acme'" in error.detail


def test_garbage_that_is_not_a_key_or_a_jwt_is_refused() -> None:
    for garbage in ("hello", "a.b.c", "...", "eyJhbGciOi.x.y", "x" * 20_000):
        error = refused(oidc_authenticator(), garbage)
        assert error.status == 401, garbage


def test_tokens_are_refused_when_oidc_is_off() -> None:
    authenticator = Authenticator(FakeKeyStore(), None)
    error = refused(authenticator, token())
    assert error.status == 401
    assert "API keys" in error.detail


# --- the JWKS cache -----------------------------------------------------------------------------


def test_keys_are_fetched_once_and_a_rotated_kid_triggers_one_refresh() -> None:
    jwks = FakeJwks(public_jwk(RSA_KEY, "k1"))
    clock = FakeClock()
    authenticator = oidc_authenticator(jwks, clock=clock)
    run(authenticator.authenticate(f"Bearer {token()}"))
    run(authenticator.authenticate(f"Bearer {token()}"))
    assert jwks.fetches == 1
    clock.now += 60  # past the refresh floor, within the cache lifetime
    jwks.keys.append(public_jwk(OTHER_RSA_KEY, "k2"))
    assert run(authenticator.authenticate(f"Bearer {token(key=OTHER_RSA_KEY, kid='k2')}"))
    assert jwks.fetches == 2


def test_forged_kids_cannot_make_the_cache_hammer_the_issuer() -> None:
    jwks = FakeJwks(public_jwk(RSA_KEY, "k1"))
    authenticator = oidc_authenticator(jwks)
    run(authenticator.authenticate(f"Bearer {token()}"))
    for number in range(5):
        error = refused(authenticator, token(kid=f"forged-{number}"))
        assert "key id (kid) the issuer does not list" in error.detail
    assert jwks.fetches == 1


def test_known_keys_keep_working_while_the_issuer_is_down() -> None:
    jwks = FakeJwks(public_jwk(RSA_KEY, "k1"))
    clock = FakeClock()
    authenticator = oidc_authenticator(jwks, clock=clock)
    run(authenticator.authenticate(f"Bearer {token()}"))
    jwks.down = True
    clock.now += 3600  # the cache is stale and the refresh fails
    assert run(authenticator.authenticate(f"Bearer {token()}")).tenant == "acme"
    assert jwks.fetches == 2


def test_no_keys_at_all_is_a_503_not_a_401() -> None:
    jwks = FakeJwks(public_jwk(RSA_KEY, "k1"))
    jwks.down = True
    error = refused(oidc_authenticator(jwks), token())
    assert isinstance(error, Unavailable)
    assert error.retry_after is not None and error.retry_after >= 1


def test_a_token_without_kid_uses_the_only_key() -> None:
    jwks = FakeJwks(public_jwk(RSA_KEY, "k1"))
    assert run(oidc_authenticator(jwks).authenticate(f"Bearer {token(kid=None)}"))
    with_two = FakeJwks(public_jwk(RSA_KEY, "k1"), public_jwk(EC_KEY, "e1"))
    assert refused(oidc_authenticator(with_two), token(kid=None)).status == 401


# --- API keys -----------------------------------------------------------------------------------


def key_authenticator(
    *stored: StoredKey, cache_seconds: float = 10
) -> tuple[Authenticator, FakeKeyStore, FakeClock]:
    store = FakeKeyStore(*stored)
    clock = FakeClock()
    return Authenticator(store, None, key_cache_seconds=cache_seconds, clock=clock), store, clock


def test_an_api_key_names_its_tenant() -> None:
    key, stored = new_key("acme")
    authenticator, _, _ = key_authenticator(stored)
    principal = run(authenticator.authenticate(f"Bearer {key}"))
    assert principal == Principal(tenant="acme", method="api_key", identity=stored.key_id)


def test_an_api_key_is_looked_up_once_per_cache_period() -> None:
    key, stored = new_key("acme")
    authenticator, store, clock = key_authenticator(stored)
    for _ in range(3):
        run(authenticator.authenticate(f"Bearer {key}"))
    assert store.lookups == 1
    clock.now += 11
    run(authenticator.authenticate(f"Bearer {key}"))
    assert store.lookups == 2


def test_a_revocation_bites_once_the_cache_period_ends() -> None:
    key, stored = new_key("acme")
    authenticator, store, clock = key_authenticator(stored)
    run(authenticator.authenticate(f"Bearer {key}"))
    store.keys[stored.key_id] = StoredKey(
        stored.key_id, "acme", stored.secret_sha256, stored.created, revoked=True
    )
    clock.now += 11
    error = refused(authenticator, key)
    assert error.status == 401
    assert "revoked" in error.detail


def test_a_revoked_key_is_refused_and_not_cached() -> None:
    key, stored = new_key("acme")
    revoked = StoredKey(stored.key_id, "acme", stored.secret_sha256, stored.created, revoked=True)
    authenticator, store, _ = key_authenticator(revoked)
    for _ in range(2):
        assert "revoked" in refused(authenticator, key).detail
    assert store.lookups == 2


def test_a_wrong_secret_is_refused_even_for_a_cached_key() -> None:
    key, stored = new_key("acme")
    authenticator, _, _ = key_authenticator(stored)
    run(authenticator.authenticate(f"Bearer {key}"))
    other_secret = key[:-1] + ("A" if key[-1] != "A" else "B")
    error = refused(authenticator, other_secret)
    assert error.code == "invalid_credentials"
    assert other_secret not in error.detail


def test_unknown_and_malformed_keys_are_refused() -> None:
    key, _ = new_key("acme")
    authenticator, _, _ = key_authenticator()
    assert "not recognised" in refused(authenticator, key).detail
    assert "malformed" in refused(authenticator, "sk_nothex_x").detail


def test_a_zero_cache_period_looks_up_every_time() -> None:
    key, stored = new_key("acme")
    authenticator, store, _ = key_authenticator(stored, cache_seconds=0)
    for _ in range(3):
        run(authenticator.authenticate(f"Bearer {key}"))
    assert store.lookups == 3


# --- the header ---------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "   "])
def test_no_credential_is_missing_credentials(header: str | None) -> None:
    authenticator, _, _ = key_authenticator()
    with pytest.raises(Unauthorized) as raised:
        run(authenticator.authenticate(header))
    assert raised.value.code == "missing_credentials"


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "sk_abc", "Token x"]
)
def test_a_header_that_is_not_a_bearer_credential_is_refused(header: str) -> None:
    authenticator, _, _ = key_authenticator()
    with pytest.raises(Unauthorized) as raised:
        run(authenticator.authenticate(header))
    assert raised.value.code == "invalid_credentials"


def test_the_scheme_is_case_insensitive() -> None:
    key, stored = new_key("acme")
    authenticator, _, _ = key_authenticator(stored)
    assert run(authenticator.authenticate(f"bearer  {key} ")).tenant == "acme"


def test_stored_key_times_are_irrelevant_to_authentication() -> None:
    """An old key stays valid until revoked: Sluice keys do not expire by age."""
    key, stored = new_key("acme")
    old = StoredKey(stored.key_id, "acme", stored.secret_sha256, datetime(2000, 1, 1, tzinfo=UTC))
    authenticator, _, _ = key_authenticator(old)
    assert run(authenticator.authenticate(f"Bearer {key}")).tenant == "acme"
