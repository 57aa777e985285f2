"""Filters for the role `kafka`: thin wrappers over sluice_infra.kafka_topology.

kafka_nodes: "{{ groups['kafka'] | sluice_kafka_nodes(hostvars) }}"
kafka_my_nodes: "{{ kafka_nodes | sluice_kafka_host_nodes(inventory_hostname) }}"
controller.quorum.voters: "{{ kafka_nodes | sluice_kafka_voters }}"
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sluice_infra import kafka_topology
from sluice_infra.filter_errors import filter_errors

_filter_errors = filter_errors(kafka_topology.PlanError)


def _nodes(items: Sequence[Mapping[str, Any]]) -> list[kafka_topology.Node]:
    return [kafka_topology.Node.from_mapping(item) for item in items]


@_filter_errors
def sluice_kafka_nodes(
    hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """groups['kafka'] | sluice_kafka_nodes(hostvars): every node, by id."""
    return [node.as_dict() for node in kafka_topology.nodes(hosts, hostvars)]


def sluice_kafka_host_nodes(
    items: Sequence[Mapping[str, Any]], host: str
) -> list[Mapping[str, Any]]:
    """kafka_nodes | sluice_kafka_host_nodes(inventory_hostname): this host's nodes."""
    return sorted((item for item in items if item["host"] == host), key=lambda i: i["index"])


def sluice_kafka_voters(items: Sequence[Mapping[str, Any]]) -> str:
    """kafka_nodes | sluice_kafka_voters: controller.quorum.voters."""
    return kafka_topology.quorum_voters(_nodes(items))


def sluice_kafka_bootstrap(items: Sequence[Mapping[str, Any]], listener: str = "client") -> str:
    """kafka_nodes | sluice_kafka_bootstrap('internal'): the brokers' endpoints."""
    return kafka_topology.bootstrap_servers(_nodes(items), listener)


@_filter_errors
def sluice_kafka_topics(
    raw: Any, replication_factor: int, min_insync_replicas: int
) -> list[dict[str, Any]]:
    """kafka_topics | sluice_kafka_topics(rf, min_isr): normalised topic specs."""
    return kafka_topology.topic_specs(raw, int(replication_factor), int(min_insync_replicas))


def sluice_kafka_sizing(
    vcpus: Any,
    memory_mb: Any,
    nodes_on_host: Any,
    heap_share: float = 0.25,
    heap_min_mb: int = 512,
    heap_max_mb: int = 6144,
) -> dict[str, int]:
    """ansible_local.sluice.vcpus | sluice_kafka_sizing(memory_mb, n, ...): threads, heap."""
    return kafka_topology.sizing(
        int(vcpus),
        int(memory_mb),
        int(nodes_on_host),
        heap_share=float(heap_share),
        heap_min_mb=int(heap_min_mb),
        heap_max_mb=int(heap_max_mb),
    )


def sluice_kafka_properties(text: str) -> dict[str, str]:
    """slurped meta.properties | b64decode | sluice_kafka_properties: its keys."""
    return kafka_topology.parse_properties(text or "")


@_filter_errors
def sluice_kafka_cluster_id(
    found: Mapping[str, str | None], configured: str | None, candidate: str
) -> str:
    """{where: id} | sluice_kafka_cluster_id(kafka_cluster_id, new id): the cluster's id."""
    return kafka_topology.cluster_id(found, configured or None, candidate)


def sluice_kafka_new_cluster_id(_seed: Any = None) -> str:
    """'' | sluice_kafka_new_cluster_id: a new random id (set it once with run_once)."""
    return kafka_topology.new_cluster_id()


def sluice_kafka_tls_hosts(
    hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, Any]], extra: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """ansible_play_hosts_all | sluice_kafka_tls_hosts(hostvars, kafka_tls_extra_sans)."""
    return kafka_topology.tls_subjects(hosts, hostvars, extra or ())


def sluice_kafka_changed_nodes(
    items: Sequence[Mapping[str, Any]],
    existed: Sequence[Mapping[str, Any]],
    results: Sequence[Sequence[Mapping[str, Any]]],
    host_changed: Any = False,
    deferred: Sequence[Mapping[str, Any]] = (),
) -> list[Mapping[str, Any]]:
    """kafka_my_nodes | sluice_kafka_changed_nodes(stats, [template results], host_changed,
    restart-pending mark stats)."""
    return kafka_topology.changed_nodes(
        items, existed, results, _bool(host_changed), deferred or ()
    )


def sluice_kafka_found_ids(
    meta_results: Sequence[Mapping[str, Any]], host: str, id_file: Mapping[str, Any]
) -> dict[str, str | None]:
    """slurped meta.properties | sluice_kafka_found_ids(inventory_hostname, slurped cluster.id):
    {where: cluster id found there (None: nothing there)} for sluice_kafka_cluster_id."""
    found: dict[str, str | None] = {}
    if id_file.get("content"):
        text = base64.b64decode(id_file["content"]).decode().strip()
        found[f"{host}:{id_file.get('source', 'cluster.id')}"] = text or None
    for result in meta_results:
        if result.get("content"):
            text = base64.b64decode(result["content"]).decode()
            where = f"{host}:{result.get('source', 'meta.properties')}"
            found[where] = kafka_topology.parse_properties(text).get("cluster.id")
    return found


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1", "on")
    return bool(value)


class FilterModule:
    """Filters for the role `kafka`."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "sluice_kafka_nodes": sluice_kafka_nodes,
            "sluice_kafka_host_nodes": sluice_kafka_host_nodes,
            "sluice_kafka_voters": sluice_kafka_voters,
            "sluice_kafka_bootstrap": sluice_kafka_bootstrap,
            "sluice_kafka_topics": sluice_kafka_topics,
            "sluice_kafka_sizing": sluice_kafka_sizing,
            "sluice_kafka_properties": sluice_kafka_properties,
            "sluice_kafka_cluster_id": sluice_kafka_cluster_id,
            "sluice_kafka_new_cluster_id": sluice_kafka_new_cluster_id,
            "sluice_kafka_tls_hosts": sluice_kafka_tls_hosts,
            "sluice_kafka_changed_nodes": sluice_kafka_changed_nodes,
            "sluice_kafka_found_ids": sluice_kafka_found_ids,
        }
