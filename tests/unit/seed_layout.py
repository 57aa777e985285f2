"""The lab's seed layout (inventories/lab/hosts.yml) as plain data, shared by unit tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from sluice_infra.secrets import required_secrets
from sluice_infra.settings import group_vars_all

REPO = Path(__file__).resolve().parents[2]
GROUPS = {
    "all": ["db", "app", "stream"],
    "ungrouped": [],
    "citus_coordinator": ["db"],
    "citus_workers": ["db"],
    "kafka": ["stream"],
    "redis_cluster": ["stream"],
    "sluice_api": ["app"],
    "sluice_processor": ["app"],
    "monitoring": ["app"],
}
ADDRESSES = {"db": "10.77.0.10", "app": "10.77.0.11", "stream": "10.77.0.12"}
#: Host variables hosts.yml sets per host: the study's 3 Redis masters + 3 replicas on stream.
HOSTVARS = {"stream": {"redis_cluster_instances_per_host": 6}}
#: Every layout's Kafka nodes unless a test says otherwise: the study's 3 on stream.
KAFKA_HOSTVARS = {"stream": {"kafka_node_ids": [1, 2, 3]}}
#: The shared settings' marker the validation looks for (the topics every inventory declares).
SHARED = {"kafka_topics": group_vars_all(REPO / "inventories" / "lab")["kafka_topics"]}


def valid_hostvars(
    per_host: Mapping[str, Mapping] = HOSTVARS,
    ssh_sources: Sequence[str] = ("10.77.0.1/32",),
) -> dict[str, dict]:
    """Hostvars of the seed layout with a complete vault, plus ``per_host`` settings: valid."""
    return {
        host: {
            "ansible_host": address,
            "common_firewall_ssh_sources": list(ssh_sources),
            "inventory_dir": str(REPO / "inventories" / "lab"),
            "lab_subnet": "10.77.0.0/24",
            **SHARED,
            **{key: f"secret{n:02d}-0123456789abcdef" for n, key in enumerate(required_secrets())},
            **KAFKA_HOSTVARS.get(host, {}),
            **per_host.get(host, {}),
        }
        for host, address in ADDRESSES.items()
    }


def the_problem(problems: list[str], *words: str) -> str:
    """The one problem mentioning every word."""
    matching = [p for p in problems if all(w in p for w in words)]
    assert len(matching) == 1, f"expected one problem with {words}, got {problems}"
    return matching[0]
