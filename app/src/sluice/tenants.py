"""Tenant names: every event, key, row and Redis key belongs to one tenant.

A tenant comes only from a credential (an API key's record, an OIDC token's claim) or, in the
processor, from the Kafka record key the API set from that credential. Every place that takes
one checks it with :func:`validate_tenant`: the API's keys and tokens, the settings' allowed
tenants, the processor's records and ``sluice replay --tenant``.
"""

from __future__ import annotations

import re

#: A tenant name: it becomes part of Kafka keys, Redis key names and PostgreSQL rows, so it is
#: kept to characters that need no quoting in any of them.
_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def validate_tenant(tenant: str) -> str:
    """``tenant`` if it is a valid tenant name, else ValueError saying what is allowed."""
    if not _TENANT.fullmatch(tenant):
        raise ValueError(
            f"invalid tenant name {tenant!r}: use 1 to 63 lowercase letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return tenant
