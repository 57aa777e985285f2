"""Filters for the role `redis_cluster`: thin wrappers over sluice_infra.redis_topology.

    redis_cluster_plan: >-
      {{ groups['redis_cluster'] | sluice_redis_instances(hostvars)
         | sluice_redis_plan(redis_cluster_replicas) }}
    redis_cluster_local: >-
      {{ redis_cluster_plan | sluice_redis_host_instances(inventory_hostname) }}

Role defaults are not part of ``hostvars``: a host without its own
``redis_cluster_instances_per_host`` / ``redis_cluster_port_base`` gets the module's defaults
(equal to the role's). Pass the counts explicitly only to override them for every host.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sluice_infra import redis_ops, redis_topology
from sluice_infra.filter_errors import filter_errors

_filter_errors = filter_errors(redis_topology.PlanError)


@_filter_errors
def sluice_redis_instances(
    hosts: Sequence[str],
    hostvars: Mapping[str, Mapping[str, Any]],
    default_count: int = redis_topology.DEFAULT_INSTANCES_PER_HOST,
    default_port_base: int = redis_topology.DEFAULT_PORT_BASE,
) -> list[dict[str, Any]]:
    """groups['redis_cluster'] | sluice_redis_instances(hostvars): host, address, port,
    endpoint and bus_port of every instance."""
    items = redis_topology.instances(list(hosts), hostvars, default_count, default_port_base)
    return [item.as_dict() for item in items]


@_filter_errors
def sluice_redis_plan(
    instances: Sequence[Mapping[str, Any]], replicas: int = redis_topology.DEFAULT_REPLICAS
) -> list[dict[str, Any]]:
    """instances | sluice_redis_plan(redis_cluster_replicas): role, master and slots of each."""
    return redis_topology.plan(
        [redis_topology.Instance.from_mapping(i) for i in instances], replicas
    )


def sluice_redis_host_instances(
    plan: Sequence[Mapping[str, Any]], host: str
) -> list[Mapping[str, Any]]:
    """plan | sluice_redis_host_instances(inventory_hostname): the entries this host runs,
    ports ascending."""
    return sorted((entry for entry in plan if entry["host"] == host), key=lambda e: e["port"])


class FilterModule:
    """Filters for the role `redis_cluster`."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "sluice_redis_instances": sluice_redis_instances,
            "sluice_redis_plan": sluice_redis_plan,
            "sluice_redis_host_instances": sluice_redis_host_instances,
            "sluice_redis_restart_order": redis_ops.restart_order,
        }
