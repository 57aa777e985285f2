"""SCRAM-SHA-256 verifiers as PostgreSQL stores them (pg_authid.rolpassword), computed and
checked on the client: a role's password is set as its verifier, so the clear text never
reaches the server's statement log, and a run that finds the vault password still valid
changes nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

ITERATIONS = 4096  # PostgreSQL's scram_iterations default
_VERIFIER = re.compile(
    r"^SCRAM-SHA-256\$(?P<iterations>\d+):(?P<salt>[A-Za-z0-9+/=]+)"
    r"\$(?P<stored>[A-Za-z0-9+/=]+):(?P<server>[A-Za-z0-9+/=]+)$"
)


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest(), server_key


def verifier(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` for ``password``."""
    salt = os.urandom(16) if salt is None else salt
    stored, server = _keys(password, salt, iterations)
    encode = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{encode(salt).decode()}"
        f"${encode(stored).decode()}:{encode(server).decode()}"
    )


def matches(stored_verifier: str | None, password: str) -> bool:
    """Whether ``stored_verifier`` (pg_authid.rolpassword) accepts ``password``; False for no
    verifier, an MD5 hash or anything else that is not SCRAM-SHA-256."""
    found = _VERIFIER.match(stored_verifier or "")
    if not found:
        return False
    salt = base64.b64decode(found["salt"])
    stored, server = _keys(password, salt, int(found["iterations"]))
    return hmac.compare_digest(stored, base64.b64decode(found["stored"])) and hmac.compare_digest(
        server, base64.b64decode(found["server"])
    )
