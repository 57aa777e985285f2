"""The summary `make lab` ends with: which inventory groups (services) run on which machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice_infra import summary
from sluice_infra.lab import machine as machine_module
from sluice_infra.lab.lab import Lab
from sluice_infra.lab.spec import load

REPO = Path(__file__).resolve().parents[2]


def test_seed_layout_groups():
    assert summary.groups_by_host(REPO / "inventories" / "lab" / "hosts.yml") == {
        "db": ["citus_coordinator", "citus_workers"],
        "app": ["monitoring", "sluice_api", "sluice_processor"],
        "stream": ["kafka", "redis_cluster"],
    }


def test_spread_layout_puts_kafka_and_redis_everywhere():
    groups = summary.groups_by_host(REPO / "inventories" / "lab-spread" / "hosts.yml")
    assert set(groups) == {"db", "app", "stream"}
    for host, names in groups.items():
        assert "kafka" in names, host
        assert "redis_cluster" in names, host
    assert groups["db"] == ["citus_coordinator", "kafka", "redis_cluster", "sluice_processor"]
    assert "citus_workers" in groups["app"]
    assert "citus_workers" in groups["stream"]


def test_nested_children_and_no_all_group(tmp_path):
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(
        "all:\n"
        "  hosts:\n"
        "    lonely:\n"
        "  children:\n"
        "    data:\n"
        "      children:\n"
        "        citus_workers:\n"
        "          hosts:\n"
        "            db:\n"
        "        empty:\n"
        "    kafka:\n"
        "      hosts:\n"
        "        db:\n"
    )
    assert summary.groups_by_host(hosts) == {
        "lonely": [],
        "db": ["citus_workers", "data", "kafka"],
    }


def test_empty_inventory(tmp_path):
    hosts = tmp_path / "hosts.yml"
    hosts.write_text("")
    assert summary.groups_by_host(hosts) == {}


@pytest.fixture
def no_machines_running(monkeypatch):
    monkeypatch.setattr(machine_module, "processes", lambda program: {})


def test_render_lists_machines_groups_and_next_steps(tmp_path, no_machines_running):
    lab = Lab(load(REPO / "inventories" / "lab"), tmp_path / "state", tmp_path / "cache")
    text = summary.render(lab)
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    assert "10.77.0.10" in rows["db"]
    assert "not running" in rows["db"]
    assert rows["db"].endswith("citus_coordinator, citus_workers")
    assert rows["stream"].endswith("kafka, redis_cluster")
    assert rows["app"].endswith("monitoring, sluice_api, sluice_processor")
    assert f"ssh -F {lab.ssh_config} db" in text
    assert "make lab-down" in text
