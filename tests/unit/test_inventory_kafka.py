"""The Kafka inventory checks (kafka_settings, kafka_cluster, kafka_ports) through validate(),
on the lab's layouts with the Kafka settings the repository ships."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from seed_layout import ADDRESSES, valid_hostvars

from sluice_infra import kafka_topology
from sluice_infra.inventory import validate, variables_read
from sluice_infra.settings import group_vars_all

REPO = Path(__file__).resolve().parents[2]
LAYOUTS = ["lab", "lab-spread"]
#: Kafka settings the inventories share (inventories/shared/all.yml).
KAFKA_SHARED = {
    "kafka_topics",
    "kafka_client_port_base",
    "kafka_internal_port_base",
    "kafka_controller_port_base",
}
#: Kafka settings the checks read that the inventories leave to the kafka role's defaults.
KAFKA_ROLE_DEFAULTS = {"kafka_replication_factor", "kafka_min_insync_replicas"}


def lab_inventory(name: str) -> tuple[dict[str, list[str]], dict[str, dict]]:
    """``inventories/<name>`` as validate() gets it: groups and host variables from hosts.yml,
    the group_vars/all settings the checks read, and a complete vault."""
    root = REPO / "inventories" / name
    tree = yaml.safe_load((root / "hosts.yml").read_text())["all"]
    shared = group_vars_all(root)
    shared = {key: value for key, value in shared.items() if key in variables_read()}
    # Untemplated here: the checks must read these values as they are written.
    assert set(shared) >= KAFKA_SHARED and "{{" not in repr(shared), shared
    assert not set(shared) & KAFKA_ROLE_DEFAULTS, "the checks must fall back on the role's"

    groups = {"all": list(tree["hosts"]), "ungrouped": []}
    per_host = {host: dict(shared, inventory_dir=str(root)) for host in tree["hosts"]}
    for host, settings in tree["hosts"].items():
        per_host[host].update(settings or {})
    for group, entry in tree["children"].items():
        groups[group] = list(entry["hosts"])
        for host, settings in entry["hosts"].items():
            per_host[host].update(settings or {})  # inventory host vars beat group_vars/all
    assert sorted(groups["all"]) == sorted(ADDRESSES)
    return groups, valid_hostvars(per_host)


def set_everywhere(hostvars: dict[str, dict], name: str, value: object) -> None:
    """A group_vars/all setting: the same value on every host."""
    for settings in hostvars.values():
        settings[name] = copy.deepcopy(value)


def only_problem(problems: list[str]) -> str:
    assert len(problems) == 1, problems
    return problems[0]


# --- the shipped layouts -----------------------------------------------------------------------


@pytest.mark.parametrize("name", LAYOUTS)
def test_the_lab_layouts_with_their_kafka_settings_are_valid(name):
    assert validate(*lab_inventory(name)) == []


@pytest.mark.parametrize(
    ("name", "placement"),
    [
        ("lab", [(1, "stream", 9092), (2, "stream", 9093), (3, "stream", 9094)]),
        ("lab-spread", [(1, "db", 9092), (2, "app", 9092), (3, "stream", 9092)]),
    ],
)
def test_the_lab_layouts_place_three_combined_nodes(name, placement):
    groups, hostvars = lab_inventory(name)

    items = kafka_topology.nodes(groups["kafka"], hostvars)

    assert [(n.id, n.host, n.client_port) for n in items] == placement
    assert all(n.is_broker and n.is_controller for n in items)


def test_the_checks_read_the_kafka_settings():
    assert {
        "kafka_node_ids",
        "kafka_process_roles",
        *KAFKA_SHARED,
        *KAFKA_ROLE_DEFAULTS,
    } <= variables_read()


# --- the bad inputs of the issue: one line each, naming the variable and the fix ---------------


def test_an_even_number_of_controllers_is_one_problem():
    groups, hostvars = lab_inventory("lab")
    hostvars["stream"]["kafka_node_ids"] = [1, 2, 3, 4]

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith("group kafka: 4 KRaft controllers (nodes 1, 2, 3, 4)")
    assert "odd number (3 or 5)" in problem and "(kafka_process_roles)" in problem


def test_an_even_number_of_controllers_across_hosts_is_one_problem():
    groups, hostvars = lab_inventory("lab-spread")
    hostvars["app"]["kafka_node_ids"] = [2, 4]

    problem = only_problem(validate(groups, hostvars))

    assert "4 KRaft controllers (nodes 1, 2, 3, 4)" in problem
    assert "add or remove a controller (kafka_process_roles)" in problem


def test_duplicate_node_ids_across_hosts_are_one_problem():
    groups, hostvars = lab_inventory("lab-spread")
    hostvars["app"]["kafka_node_ids"] = [1]

    assert validate(groups, hostvars) == [
        "group kafka: node id 1 is used more than once (on app, db): give every node its own "
        "id in kafka_node_ids"
    ]


def test_duplicate_node_ids_on_one_host_are_one_problem():
    groups, hostvars = lab_inventory("lab")
    hostvars["stream"]["kafka_node_ids"] = [1, 2, 2]

    problem = only_problem(validate(groups, hostvars))

    assert "node id 2 is used more than once (on stream)" in problem
    assert "give every node its own id in kafka_node_ids" in problem


@pytest.mark.parametrize("name", LAYOUTS)
def test_a_replication_factor_above_the_broker_count_is_one_problem(name):
    groups, hostvars = lab_inventory(name)
    set_everywhere(hostvars, "kafka_replication_factor", 4)

    assert validate(groups, hostvars) == [
        "kafka_replication_factor 4 is larger than the 3 broker(s) of group kafka: lower it or "
        "add brokers"
    ]


def test_a_single_broker_with_the_studys_factor_is_one_problem():
    groups, hostvars = lab_inventory("lab")
    hostvars["stream"]["kafka_node_ids"] = [1]

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith("kafka_replication_factor 3 is larger than the 1 broker(s)")
    assert "lower it or add brokers" in problem


@pytest.mark.parametrize("name", LAYOUTS)
def test_min_insync_replicas_above_the_factor_is_one_problem(name):
    groups, hostvars = lab_inventory(name)
    set_everywhere(hostvars, "kafka_min_insync_replicas", 4)

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith(
        "kafka_min_insync_replicas 4 is larger than kafka_replication_factor 3"
    )
    assert "keep it below the replication factor" in problem


def test_a_topic_with_zero_partitions_is_one_problem():
    groups, hostvars = lab_inventory("lab")
    topics = copy.deepcopy(hostvars["db"]["kafka_topics"])
    topics[1]["partitions"] = 0
    set_everywhere(hostvars, "kafka_topics", topics)

    assert validate(groups, hostvars) == [
        "kafka_topics entry events.enriched: partitions is 0: set a whole number >= 1"
    ]


def test_a_topic_replication_factor_above_the_broker_count_is_one_problem():
    groups, hostvars = lab_inventory("lab-spread")
    topics = [*hostvars["db"]["kafka_topics"], {"name": "audit", "partitions": 3}]
    topics[-1]["replication_factor"] = 4
    set_everywhere(hostvars, "kafka_topics", topics)

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith("kafka_topics entry audit: replication_factor 4 is larger")
    assert problem.endswith("lower it or add brokers")


def test_a_duplicate_topic_is_one_problem():
    groups, hostvars = lab_inventory("lab")
    topics = hostvars["db"]["kafka_topics"]
    set_everywhere(hostvars, "kafka_topics", [*topics, topics[0]])

    assert validate(groups, hostvars) == [
        "kafka_topics: topic events.raw is declared 2 times: keep one"
    ]


@pytest.mark.parametrize(
    "secret", ["vault_kafka_sluice_producer_password", "vault_kafka_admin_password"]
)
def test_a_missing_kafka_secret_is_one_problem(secret):
    groups, hostvars = lab_inventory("lab")
    for settings in hostvars.values():
        del settings[secret]

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith(f"hosts app, db and stream: vault secret {secret} is not defined")
    assert "make lab-vault" in problem and "--inventory inventories/lab " in problem


# --- host settings and ports -------------------------------------------------------------------


def test_a_kafka_host_without_node_ids_is_one_problem():
    groups, hostvars = lab_inventory("lab")
    del hostvars["stream"]["kafka_node_ids"]

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith("host stream is in group kafka but sets no kafka_node_ids")
    assert problem.endswith("(in hosts.yml, host_vars/stream.yml or group_vars)")


@pytest.mark.parametrize("name", LAYOUTS)
def test_an_unusable_host_setting_does_not_also_miscount_the_cluster(name):
    groups, hostvars = lab_inventory(name)
    hostvars["stream"]["kafka_node_ids"] = "3"

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith("host stream: kafka_node_ids must be a non-empty list")


@pytest.mark.parametrize(
    ("settings", "port", "users"),
    [
        (
            {"kafka_controller_port_base": 7005},
            7005,
            "kafka node 1 controller listener and redis instance 7005",
        ),
        (
            {"kafka_client_port_base": 9098},
            9100,
            "kafka node 3 client listener and node_exporter (common_node_exporter_port)",
        ),
        (
            {"kafka_internal_port_base": 9126},
            9126,
            "kafka node 1 internal listener and the exporter of redis instance 7005 "
            "(redis_cluster_exporter_port_base)",
        ),
        (
            {"kafka_internal_port_base": 17005},
            17005,
            "kafka node 1 internal listener and the cluster bus of redis instance 7005",
        ),
        (
            {"common_ssh_port": 9293},
            9293,
            "kafka node 2 controller listener and ssh (common_ssh_port)",
        ),
    ],
)
def test_a_kafka_port_used_by_another_service_is_one_problem(settings, port, users):
    groups, hostvars = lab_inventory("lab")
    hostvars["stream"].update(settings)

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith(f"host stream: port {port} is used by {users}: move ")
    assert "kafka_client_port_base, kafka_internal_port_base, kafka_controller_port_base" in problem


def test_kafka_ports_on_another_host_do_not_collide():
    groups, hostvars = lab_inventory("lab-spread")
    hostvars["db"]["common_node_exporter_port"] = 9094  # db runs node 1 on 9092 only

    assert validate(groups, hostvars) == []
