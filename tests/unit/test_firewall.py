"""sluice_infra.firewall: the input rules each host gets from the inventory."""

from __future__ import annotations

import pytest
from seed_layout import ADDRESSES, GROUPS

from sluice_infra.firewall import (
    FirewallError,
    cidr_problems,
    firewall_rules,
    host_addresses,
    merge_port_ranges,
    parse_port_spec,
    service_problems,
    ssh_rule,
)

NODE_EXPORTER = {
    "name": "node_exporter",
    "group": "all",
    "ports": [9100],
    "proto": "tcp",
    "sources": ["monitoring"],
}


def test_stream_opens_node_exporter_to_the_monitoring_host_only():
    rules = firewall_rules([NODE_EXPORTER], GROUPS, ADDRESSES, "stream")
    assert rules == [
        {
            "name": "node_exporter",
            "proto": "tcp",
            "ports": ["9100"],
            "sources": ["10.77.0.11"],
            "sources_ipv4": ["10.77.0.11"],
            "sources_ipv6": [],
        }
    ]


def test_service_is_only_opened_on_hosts_of_its_group():
    kafka = {"name": "kafka", "group": "kafka", "ports": [9092], "sources": ["sluice_api"]}
    assert firewall_rules([kafka], GROUPS, ADDRESSES, "db") == []
    assert [r["name"] for r in firewall_rules([kafka], GROUPS, ADDRESSES, "stream")] == ["kafka"]


def test_sources_default_to_every_inventory_host_and_add_cidrs():
    redis = {
        "name": "redis",
        "group": "redis_cluster",
        "ports": ["7000-7005", 17000],
        "source_cidrs": ["192.168.5.0/24", "fd00::/64"],
    }
    (rule,) = firewall_rules([redis], GROUPS, ADDRESSES, "stream")
    assert rule["sources_ipv4"] == ["10.77.0.10", "10.77.0.11", "10.77.0.12", "192.168.5.0/24"]
    assert rule["sources_ipv6"] == ["fd00::/64"]
    assert rule["ports"] == ["7000-7005", "17000"]
    assert rule["proto"] == "tcp"


def test_hosts_and_source_hosts_place_a_service_without_a_group():
    standby = {"name": "pg_standby", "hosts": ["app"], "ports": [5432], "source_hosts": ["db"]}
    assert firewall_rules([standby], GROUPS, ADDRESSES, "db") == []
    (rule,) = firewall_rules([standby], GROUPS, ADDRESSES, "app")
    assert rule["sources"] == ["10.77.0.10"]
    both = dict(standby, sources=["monitoring"])
    (rule,) = firewall_rules([both], GROUPS, ADDRESSES, "app")
    assert rule["sources"] == ["10.77.0.10", "10.77.0.11"]


def test_no_hosts_open_nothing():
    empty = {"name": "pg_standby", "hosts": [], "ports": [5432], "source_hosts": []}
    assert service_problems([empty]) == []
    assert firewall_rules([empty], GROUPS, ADDRESSES, "app") == []


def test_rules_are_sorted_by_port_and_sources_numerically_deduplicated():
    addresses = {**ADDRESSES, "app": "10.77.0.9"}
    services = [
        {"name": "zeta", "group": "all", "ports": [9100], "sources": ["all", "monitoring"]},
        {"name": "alpha", "group": "all", "ports": [5432], "sources": ["sluice_api"]},
    ]
    rules = firewall_rules(services, GROUPS, addresses, "db")
    assert [r["name"] for r in rules] == ["alpha", "zeta"]
    # 10.77.0.9 sorts before 10.77.0.10 as an address, and app appears once.
    assert rules[1]["sources"] == ["10.77.0.9", "10.77.0.10", "10.77.0.12"]


def test_overlapping_sources_and_ports_are_merged_for_nft_sets():
    service = {
        "name": "pg",
        "group": "all",
        "ports": [5432, "5432-5434", 5435],
        "sources": ["all"],
        "source_cidrs": ["10.77.0.0/24"],
    }
    (rule,) = firewall_rules([service], GROUPS, ADDRESSES, "db")
    assert rule["sources"] == ["10.77.0.0/24"]
    assert rule["ports"] == ["5432-5435"]


def test_empty_source_group_opens_nothing():
    groups = {**GROUPS, "monitoring": []}
    assert firewall_rules([NODE_EXPORTER], groups, ADDRESSES, "stream") == []


def test_unknown_source_group_names_the_service_and_group():
    service = {**NODE_EXPORTER, "sources": ["prometheus"]}
    expected = r"'node_exporter'.*source group 'prometheus' is not in"
    with pytest.raises(FirewallError, match=expected):
        firewall_rules([service], GROUPS, ADDRESSES, "stream")


def test_unknown_service_group_names_the_service_and_group():
    service = {**NODE_EXPORTER, "group": "kafak"}
    with pytest.raises(FirewallError, match=r"'node_exporter'.*service group 'kafak'"):
        firewall_rules([service], GROUPS, ADDRESSES, "stream")


def test_hostname_instead_of_address_is_an_error():
    with pytest.raises(FirewallError, match=r"host 'app' has ansible_host 'app.example'"):
        firewall_rules([NODE_EXPORTER], GROUPS, {**ADDRESSES, "app": "app.example"}, "db")


@pytest.mark.parametrize(
    ("service", "fragment"),
    [
        ({"name": "x", "group": "all", "ports": [70000]}, "outside 1-65535"),
        ({"name": "x", "group": "all", "ports": ["9000-8000"]}, "low > high"),
        ({"name": "x", "group": "all", "ports": [True]}, "is not a port"),
        ({"name": "x", "group": "all", "ports": []}, "needs 'ports'"),
        ({"name": "x", "group": "all", "ports": [1], "proto": "sctp"}, "proto 'sctp'"),
        ({"name": "x", "group": "all", "ports": [1], "source": ["all"]}, "unknown keys ['source']"),
        ({"name": "x", "ports": [1]}, "needs exactly one of 'group'"),
        ({"name": "x", "group": "all", "hosts": ["db"], "ports": [1]}, "exactly one of 'group'"),
        ({"name": "x", "group": "", "ports": [1]}, "needs 'group'"),
        ({"name": "x", "hosts": "app", "ports": [1]}, "'hosts' must be a list"),
        ({"name": "x", "hosts": ["app"], "ports": [1], "source_hosts": [""]}, "'source_hosts'"),
        ({"name": "x", "group": "all", "ports": [1], "sources": "all"}, "list of inventory group"),
        (
            {"name": "x", "group": "all", "ports": [1], "source_cidrs": ["10.0.0.5/24"]},
            "'10.0.0.5/24' is not a valid",
        ),
    ],
)
def test_service_problems_name_entry_and_fix(service, fragment):
    problems = service_problems([service])
    assert any(fragment in p and "common_firewall_services" in p for p in problems), problems
    with pytest.raises(FirewallError):
        firewall_rules([service], GROUPS, ADDRESSES, "db")


def test_duplicate_service_names_are_reported():
    assert any("appears twice" in p for p in service_problems([NODE_EXPORTER, NODE_EXPORTER]))


def test_valid_services_have_no_problems():
    assert (
        service_problems(
            [NODE_EXPORTER, {"name": "dns", "group": "all", "ports": ["53"], "proto": "udp"}]
        )
        == []
    )


def test_ssh_rule_requires_sources():
    assert ssh_rule(["10.77.0.1/32"], 22)["sources_ipv4"] == ["10.77.0.1"]
    with pytest.raises(FirewallError, match="common_firewall_ssh_sources is empty"):
        ssh_rule([], 22)
    with pytest.raises(FirewallError, match="common_ssh_port"):
        ssh_rule(["10.77.0.1/32"], 0)


def test_cidr_problems():
    assert cidr_problems(["10.77.0.1/32", "fd00::1"], "v") == []
    assert "must be a list" in cidr_problems("10.77.0.1/32", "v")[0]
    assert "'nope' is not a valid" in cidr_problems(["nope"], "v")[0]
    assert cidr_problems([], "v", required=False) == []


def test_port_parsing_and_merging():
    assert parse_port_spec(22) == (22, 22)
    assert parse_port_spec("9092-9094") == (9092, 9094)
    assert merge_port_ranges([(10, 12), (13, 13), (20, 21), (11, 11)]) == [(10, 13), (20, 21)]


def test_host_addresses_fall_back_to_the_inventory_name():
    hostvars = {"db": {"ansible_host": "10.77.0.10"}, "app": {}}
    assert host_addresses(hostvars, ["db", "app"]) == {"db": "10.77.0.10", "app": "app"}
