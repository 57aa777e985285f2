"""Operations on a running Redis Cluster that Ansible drives: the order of a rolling restart."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def restart_order(
    pending: Iterable[Mapping[str, Any]], nodes: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Instances to restart, replicas first, then masters, each group in endpoint order.

    Roles are the cluster's current ones (``nodes``, as returned by the sluice_redis_cluster
    module), not the planned ones: a failover swaps them. An instance the cluster does not
    report counts as a master, so it goes last and gets a handover check before its restart.
    """
    role = {node["endpoint"]: node.get("role") for node in nodes}
    unique = {entry["endpoint"]: dict(entry) for entry in pending}
    return sorted(
        unique.values(),
        key=lambda entry: (role.get(entry["endpoint"]) != "replica", entry["endpoint"]),
    )
