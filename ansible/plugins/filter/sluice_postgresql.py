"""Filters for the role `postgresql`: thin wrappers over sluice_infra.postgresql_topology.

postgresql_clusters: "{{ groups | sluice_pg_clusters(hostvars, citus_enabled) }}"
postgresql_my_clusters: >-
  "{{ postgresql_clusters | sluice_pg_host_clusters(inventory_hostname) }}"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sluice_infra import postgresql_topology as topology
from sluice_infra.filter_errors import filter_errors

_filter_errors = filter_errors(topology.PlanError)


def _cluster(item: Mapping[str, Any]) -> topology.Cluster:
    return topology.Cluster.from_mapping(item)


@_filter_errors
def sluice_pg_clusters(
    groups: Mapping[str, Sequence[str]], hostvars: Mapping[str, Any], citus_enabled: Any
) -> list[dict[str, Any]]:
    """groups | sluice_pg_clusters(hostvars, citus_enabled): every cluster of the inventory."""
    return [c.as_dict() for c in topology.clusters(groups, hostvars, citus_enabled)]


def sluice_pg_host_clusters(
    items: Sequence[Mapping[str, Any]], host: str
) -> list[Mapping[str, Any]]:
    """postgresql_clusters | sluice_pg_host_clusters(inventory_hostname), in port order."""
    return sorted((i for i in items if i["host"] == host), key=lambda i: i["index"])


@_filter_errors
def sluice_pg_memory_settings(
    memory_mb: Any,
    vcpus: Any,
    clusters_on_host: Any,
    kind: str = "standalone",
    shared_buffers_share: float = 0.25,
    effective_cache_share: float = 0.75,
    max_connections: int = topology.DEFAULT_MAX_CONNECTIONS,
) -> dict[str, str]:
    """memory_mb | sluice_pg_memory_settings(vcpus, n, kind, ...): the study's sizing."""
    return topology.memory_settings(
        memory_mb,
        vcpus,
        clusters_on_host,
        kind,
        shared_buffers_share=float(shared_buffers_share),
        effective_cache_share=float(effective_cache_share),
        max_connections=int(max_connections),
    )


def sluice_pg_memory_problems(
    memory_mb: Any, clusters_on_host: Any, custom: Any, host: str = ""
) -> list[str]:
    """memory_mb | sluice_pg_memory_problems(n, postgresql_config_custom, host): [] if fine."""
    return topology.memory_problems(memory_mb, clusters_on_host, custom, host=host or None)


def sluice_pg_preload(citus_enabled: Any, extra: Sequence[str] = ()) -> list[str]:
    """citus_enabled | sluice_pg_preload(extra): shared_preload_libraries, citus first."""
    return topology.preload_libraries(citus_enabled, extra or ())


def sluice_pg_conf_lines(settings: Mapping[str, Any]) -> list[str]:
    """settings | sluice_pg_conf_lines: sorted, quoted ``key = value`` lines."""
    return topology.conf_lines(settings)


def sluice_pg_cluster_settings(
    cluster: Mapping[str, Any],
    sizing: Mapping[str, Any],
    defaults: Mapping[str, Any],
    custom: Mapping[str, Any],
    conf_dir: str,
    stanza_prefix: str,
    primary_planned: Mapping[str, Any] | None = None,
    primary_running: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """cluster | sluice_pg_cluster_settings(sizing, defaults, custom, conf_dir, stanza_prefix,
    primary_planned, primary_running): every setting of the cluster's conf.d file."""
    return topology.cluster_settings(
        _cluster(cluster),
        sizing,
        defaults,
        custom or {},
        conf_dir=conf_dir,
        stanza_prefix=stanza_prefix,
        primary_planned=primary_planned,
        primary_running=primary_running,
    )


@_filter_errors
def sluice_pg_hba_lines(
    cluster: Mapping[str, Any],
    groups: Mapping[str, Sequence[str]],
    hostvars: Mapping[str, Any],
    citus_enabled: Any,
) -> list[str]:
    """cluster | sluice_pg_hba_lines(groups, hostvars, citus_enabled): pg_hba.conf lines."""
    rules = topology.hba_rules(_cluster(cluster), groups, hostvars, citus_enabled)
    return topology.hba_lines(rules)


class FilterModule:
    """Filters for the role `postgresql`."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "sluice_pg_clusters": sluice_pg_clusters,
            "sluice_pg_host_clusters": sluice_pg_host_clusters,
            "sluice_pg_memory_settings": sluice_pg_memory_settings,
            "sluice_pg_memory_problems": sluice_pg_memory_problems,
            "sluice_pg_preload": sluice_pg_preload,
            "sluice_pg_conf_lines": sluice_pg_conf_lines,
            "sluice_pg_cluster_settings": sluice_pg_cluster_settings,
            "sluice_pg_hba_lines": sluice_pg_hba_lines,
        }
