"""Per-tenant API keys, stored hashed.

A key reads ``sk_<key_id>_<secret>``: ``key_id`` (12 hex characters) finds the stored record
without a scan, ``secret`` (32 random bytes, URL-safe base64) proves possession. Sluice stores
the key id, the tenant, the SHA-256 of the secret, the creation time and a revoked flag; the key
itself is shown once, when it is made, and cannot be recovered from the store.

SHA-256 without salt or stretching is enough here, unlike for passwords: a 256-bit random
secret cannot be guessed or looked up in a table, so a leaked store reveals no key. The cheap
hash keeps authentication cheap on the hot path of 400,000 events a minute.

Storage is not this module's concern: the API implements :class:`KeyStore` over PostgreSQL.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

from sluice.errors import Unauthorized
from sluice.tenants import validate_tenant

KEY_PREFIX: Final = "sk_"
KEY_ID_BYTES: Final = 6
SECRET_BYTES: Final = 32
#: Length of ``secrets.token_urlsafe(SECRET_BYTES)``: unpadded base64 of 32 bytes.
_SECRET_LENGTH: Final = math.ceil(SECRET_BYTES * 4 / 3)
_KEY = re.compile(
    rf"{KEY_PREFIX}(?P<key_id>[0-9a-f]{{{KEY_ID_BYTES * 2}}})"
    rf"_(?P<secret>[A-Za-z0-9_-]{{{_SECRET_LENGTH}}})"
)


@dataclass(frozen=True)
class StoredKey:
    """What Sluice keeps of an API key: never the secret, only its SHA-256."""

    key_id: str
    tenant: str
    secret_sha256: str
    created: datetime
    revoked: bool = False


class KeyStore(Protocol):
    """Where :func:`authenticate` looks keys up by id."""

    def get(self, key_id: str) -> StoredKey | None:
        """The stored key with this id, revoked or not; None when there is none."""
        ...


def new_key(tenant: str) -> tuple[str, StoredKey]:
    """A new key for ``tenant``: the key to hand over once, and the record to store."""
    key_id = secrets.token_hex(KEY_ID_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    stored = StoredKey(
        key_id=key_id,
        tenant=validate_tenant(tenant),
        secret_sha256=_hash(secret),
        created=datetime.now(UTC),
    )
    return f"{KEY_PREFIX}{key_id}_{secret}", stored


def parse_key(presented: str) -> tuple[str, str]:
    """``(key_id, secret)`` of a presented key; Unauthorized when it is not shaped like one.

    The detail never echoes the presented value: it may be a real secret sent by mistake.
    """
    match = _KEY.fullmatch(presented)
    if match is None:
        raise Unauthorized(
            "invalid_credentials",
            f"the API key is malformed: Sluice keys read {KEY_PREFIX}<key id>_<secret>, as "
            "printed when the key was created",
        )
    return match["key_id"], match["secret"]


def verify(presented: str, stored: StoredKey) -> bool:
    """Whether ``presented`` is the key ``stored`` records (revocation aside).

    The hashes are compared in constant time, so response timing tells an attacker nothing
    about how close a guess came. A malformed key is simply not this key.
    """
    match = _KEY.fullmatch(presented)
    if match is None or match["key_id"] != stored.key_id:
        return False
    return hmac.compare_digest(_hash(match["secret"]), stored.secret_sha256)


def authenticate(presented: str, store: KeyStore) -> StoredKey:
    """The stored key a request's API key stands for; Unauthorized unless it is known, matches
    and is not revoked.

    Unknown ids and wrong secrets get the same answer, so the API does not confirm which key
    ids exist.
    """
    key_id, _ = parse_key(presented)
    stored = store.get(key_id)
    if stored is None or not verify(presented, stored):
        raise Unauthorized(
            "invalid_credentials", "the API key is not recognised: check it or ask for a new one"
        )
    if stored.revoked:
        raise Unauthorized(
            "invalid_credentials",
            f"the API key {KEY_PREFIX}{key_id}_... has been revoked: ask for a new one",
        )
    return stored


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
