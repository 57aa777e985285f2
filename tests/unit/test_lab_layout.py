"""The layout the system tests and benchmarks ask for addresses and ports: read from an
inventory as Ansible merges it (ansible-inventory) over the roles' defaults."""

from __future__ import annotations

import shutil

import pytest

from sluice_infra import REPO_ROOT
from sluice_infra.lab.layout import Layout, LayoutError

pytestmark = pytest.mark.ansible


def _copy(tmp_path, name: str):
    """The inventory without its lab vault (made per clone; not needed for the layout)."""
    inventory = tmp_path / name
    shutil.copytree(
        REPO_ROOT / "inventories" / name, inventory, ignore=shutil.ignore_patterns("vault.yml")
    )
    return inventory


def test_the_seed_layout(tmp_path):
    layout = Layout.load(_copy(tmp_path, "lab"))
    assert layout.kafka_bootstrap == "10.77.0.12:9092,10.77.0.12:9093,10.77.0.12:9094"
    assert [i.endpoint for i in layout.redis_instances] == [
        f"10.77.0.12:{port}" for port in range(7000, 7006)
    ]
    assert layout.api_url == "http://10.77.0.11:8080"
    assert (layout.api_host, layout.processor_host, layout.database_host) == ("app", "app", "db")


def test_the_spread_layout(tmp_path):
    layout = Layout.load(_copy(tmp_path, "lab-spread"))
    assert [(n.id, n.host, n.client_port) for n in layout.kafka_nodes] == [
        (1, "db", 9092),
        (2, "app", 9092),
        (3, "stream", 9092),
    ]
    assert [i.endpoint for i in layout.redis_instances] == [
        f"10.77.0.{last}:{port}" for last in (10, 11, 12) for port in (7000, 7001)
    ]
    assert layout.processor_host == "db"


def test_the_inventory_wins_over_role_defaults_and_gaps_are_named(tmp_path):
    inventory = _copy(tmp_path, "lab")
    (inventory / "group_vars" / "all" / "zz-test.yml").write_text(
        "sluice_http_port: 8443\nredis_cluster_port_base: '{{ 7000 + 100 }}'\n"
    )
    hosts = inventory / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("    sluice_api:\n      hosts:\n        app:\n", ""))
    layout = Layout.load(inventory)
    assert layout.var("app", "sluice_http_port") == 8443
    with pytest.raises(LayoutError, match="no host in group sluice_api"):
        _ = layout.api_url
    with pytest.raises(LayoutError, match="redis_cluster_port_base of host stream is templated"):
        _ = layout.redis_instances
