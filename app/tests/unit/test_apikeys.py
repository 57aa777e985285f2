"""Per-tenant API keys: their shape, what is stored of them, and who they authenticate."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest

from sluice.api.apikeys import StoredKey, authenticate, new_key, parse_key, verify
from sluice.errors import Unauthorized
from sluice.tenants import validate_tenant

KEY_SHAPE = re.compile(r"sk_(?P<key_id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})")


class DictStore:
    """A KeyStore over a dict, as the PostgreSQL store will be over a table."""

    def __init__(self, *keys: StoredKey) -> None:
        self.keys = {key.key_id: key for key in keys}

    def get(self, key_id: str) -> StoredKey | None:
        return self.keys.get(key_id)


def test_a_new_key_has_the_documented_shape_and_matches_its_record() -> None:
    before = datetime.now(UTC)
    key, stored = new_key("acme")

    match = KEY_SHAPE.fullmatch(key)
    assert match is not None
    assert stored.key_id == match["key_id"]
    assert stored.tenant == "acme"
    assert stored.secret_sha256 == hashlib.sha256(match["secret"].encode()).hexdigest()
    assert before <= stored.created <= datetime.now(UTC)
    assert stored.revoked is False


def test_the_record_never_holds_the_secret() -> None:
    key, stored = new_key("acme")
    secret = parse_key(key)[1]

    assert secret not in repr(stored)


def test_new_keys_are_unique() -> None:
    keys = [new_key("acme") for _ in range(50)]

    assert len({key for key, _ in keys}) == 50
    assert len({stored.key_id for _, stored in keys}) == 50


def test_parse_key_splits_id_and_secret() -> None:
    key, stored = new_key("acme")

    key_id, secret = parse_key(key)

    assert key_id == stored.key_id
    assert key == f"sk_{key_id}_{secret}"


def test_a_secret_may_contain_underscores() -> None:
    key = "sk_0123456789ab_" + "_" * 43

    assert parse_key(key) == ("0123456789ab", "_" * 43)


VALID = "sk_0123456789ab_" + "A" * 43


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "sk_",
        VALID.replace("sk_", "pk_"),
        VALID.replace("0123456789ab", "0123456789a"),
        VALID.replace("0123456789ab", "0123456789AB"),
        VALID.replace("0123456789ab", "0123456789ag"),
        VALID[:-1],
        VALID + "A",
        VALID[:-1] + "=",
        VALID[:-1] + "+",
        f"Bearer {VALID}",
        f" {VALID}",
        f"{VALID}\n",
    ],
)
def test_malformed_keys_are_invalid_credentials_without_echo(presented: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        parse_key(presented)

    error = caught.value
    assert (error.status, error.code) == (401, "invalid_credentials")
    assert error.detail.startswith("the API key is malformed")
    assert "A" * 10 not in error.detail


def test_verify_accepts_the_key_it_was_made_with() -> None:
    key, stored = new_key("acme")

    assert verify(key, stored) is True


def test_verify_rejects_other_keys() -> None:
    key, stored = new_key("acme")
    other, other_stored = new_key("acme")
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    same_id_other_secret = f"sk_{stored.key_id}_{parse_key(other)[1]}"
    other_id_same_secret = f"sk_{other_stored.key_id}_{parse_key(key)[1]}"

    assert verify(other, stored) is False
    assert verify(key, other_stored) is False
    assert verify(tampered, stored) is False
    assert verify(same_id_other_secret, stored) is False
    assert verify(other_id_same_secret, stored) is False
    assert verify("not a key", stored) is False


def test_authenticate_returns_the_stored_key() -> None:
    key, stored = new_key("acme")
    _, other = new_key("globex")

    assert authenticate(key, DictStore(stored, other)) == stored


@pytest.mark.parametrize("case", ["unknown id", "wrong secret"])
def test_unknown_ids_and_wrong_secrets_get_one_answer(case: str) -> None:
    _, stored = new_key("acme")
    other_key, _ = new_key("acme")
    presented = other_key if case == "unknown id" else f"sk_{stored.key_id}_{'x' * 43}"

    with pytest.raises(Unauthorized) as caught:
        authenticate(presented, DictStore(stored))

    assert caught.value.code == "invalid_credentials"
    assert caught.value.detail == "the API key is not recognised: check it or ask for a new one"


def test_a_revoked_key_is_refused_and_said_so() -> None:
    key, stored = new_key("acme")
    revoked = StoredKey(
        key_id=stored.key_id,
        tenant=stored.tenant,
        secret_sha256=stored.secret_sha256,
        created=stored.created - timedelta(days=1),
        revoked=True,
    )

    with pytest.raises(Unauthorized) as caught:
        authenticate(key, DictStore(revoked))

    assert caught.value.code == "invalid_credentials"
    assert caught.value.detail == (
        f"the API key sk_{stored.key_id}_... has been revoked: ask for a new one"
    )


def test_authenticate_refuses_a_malformed_key_before_any_lookup() -> None:
    class NoLookups:
        def get(self, key_id: str) -> StoredKey | None:
            raise AssertionError(f"looked up {key_id}")

    with pytest.raises(Unauthorized, match="malformed"):
        authenticate("sk_nope", NoLookups())


@pytest.mark.parametrize("tenant", ["acme", "a", "0team", "a-b_c", "x" * 63])
def test_valid_tenant_names(tenant: str) -> None:
    assert validate_tenant(tenant) == tenant
    assert new_key(tenant)[1].tenant == tenant


@pytest.mark.parametrize(
    "tenant", ["", "Acme", "-acme", "_acme", "x" * 64, "acme corp", "acmé", "acme\n", "a.b"]
)
def test_invalid_tenant_names_are_refused_with_the_rule(tenant: str) -> None:
    expected = f"invalid tenant name {re.escape(repr(tenant))}: use 1 to 63 lowercase letters"

    with pytest.raises(ValueError, match=expected):
        validate_tenant(tenant)
    with pytest.raises(ValueError, match=expected):
        new_key(tenant)
