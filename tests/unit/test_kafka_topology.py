"""Kafka (KRaft) layout (sluice_infra.kafka_topology) and its filter plugin wrappers."""

from __future__ import annotations

import base64
import importlib.util
import re
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from sluice_infra import kafka_topology
from sluice_infra.kafka_topology import (
    Node,
    PlanError,
    bootstrap_servers,
    changed_nodes,
    cluster_id,
    cluster_problems,
    host_nodes,
    new_cluster_id,
    nodes,
    parse_properties,
    port_problems,
    quorum_voters,
    sizing,
    tls_subjects,
    topic_specs,
)
from sluice_infra.settings import group_vars_all

REPO = Path(__file__).resolve().parents[2]
FILTER = REPO / "ansible" / "plugins" / "filter" / "sluice_kafka.py"
SEED = {"stream": {"ansible_host": "10.77.0.12", "kafka_node_ids": [1, 2, 3]}}
SPREAD = {
    "db": {"ansible_host": "10.77.0.10", "kafka_node_ids": [1]},
    "app": {"ansible_host": "10.77.0.11", "kafka_node_ids": [2]},
    "stream": {"ansible_host": "10.77.0.12", "kafka_node_ids": [3]},
}
#: The study's topics, as the lab inventories declare them.
TOPICS = group_vars_all(REPO / "inventories" / "lab")["kafka_topics"]


def seed_nodes() -> list[Node]:
    return nodes(["stream"], SEED)


def spread_nodes() -> list[Node]:
    return nodes(["db", "app", "stream"], SPREAD)


def layout(**ids_and_roles: tuple[list[int], list[str]]) -> list[Node]:
    """Nodes of hosts given as host=(node ids, roles)."""
    hostvars = {
        host: {"kafka_node_ids": ids, "kafka_process_roles": roles}
        for host, (ids, roles) in ids_and_roles.items()
    }
    return nodes(list(hostvars), hostvars)


# --- nodes -------------------------------------------------------------------------------------


def test_the_seed_runs_three_combined_nodes_on_consecutive_ports():
    items = seed_nodes()

    assert [(n.id, n.host, n.index) for n in items] == [
        (1, "stream", 0),
        (2, "stream", 1),
        (3, "stream", 2),
    ]
    assert [(n.client_port, n.internal_port, n.controller_port) for n in items] == [
        (9092, 9192, 9292),
        (9093, 9193, 9293),
        (9094, 9194, 9294),
    ]
    assert all(
        n.roles == ("broker", "controller") and n.is_broker and n.is_controller for n in items
    )
    assert items[2].endpoint("internal") == "10.77.0.12:9194"


def test_the_spread_runs_one_node_per_host_ordered_by_id():
    items = nodes(["stream", "app", "db", "stream"], SPREAD)

    assert [(n.id, n.host, n.address, n.index, n.client_port) for n in items] == [
        (1, "db", "10.77.0.10", 0, 9092),
        (2, "app", "10.77.0.11", 0, 9092),
        (3, "stream", "10.77.0.12", 0, 9092),
    ]


def test_host_settings_override_the_defaults():
    hostvars = {
        "kafka_node_ids": ["7", 9],
        "kafka_process_roles": ["controller", "broker"],
        "kafka_client_port_base": 19092,
        "kafka_internal_port_base": "19192",
        "kafka_controller_port_base": 19292,
    }

    items = host_nodes("k1", hostvars)

    assert [(n.id, n.address, n.roles) for n in items] == [
        (7, "k1", ("broker", "controller")),  # no ansible_host: the host name; roles in order
        (9, "k1", ("broker", "controller")),
    ]
    assert [(n.client_port, n.internal_port, n.controller_port) for n in items] == [
        (19092, 19192, 19292),
        (19093, 19193, 19293),
    ]


def test_a_node_survives_the_trip_through_ansible_data():
    node = seed_nodes()[1]
    data = node.as_dict()

    assert data["client_endpoint"] == "10.77.0.12:9093"
    assert data["controller_endpoint"] == "10.77.0.12:9293"
    assert data["is_broker"] is True and data["roles"] == ["broker", "controller"]
    assert Node.from_mapping(data) == node


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({}, ["sets no kafka_node_ids", "e.g. kafka_node_ids: [1]"]),
        ({"kafka_node_ids": []}, ["kafka_node_ids must be a non-empty list", "[]"]),
        ({"kafka_node_ids": "1,2"}, ["kafka_node_ids must be a non-empty list", "'1,2'"]),
        ({"kafka_node_ids": [1, -1]}, ["kafka_node_ids value -1 is not a node id"]),
        ({"kafka_node_ids": [True]}, ["kafka_node_ids value True is not a node id"]),
        ({"kafka_node_ids": ["one"]}, ["kafka_node_ids value 'one'", "0-2147483647"]),
        ({"kafka_node_ids": [2**31]}, ["kafka_node_ids value 2147483648 is not a node id"]),
        (
            {"kafka_node_ids": [1], "kafka_process_roles": ["broker", "leader"]},
            ["kafka_process_roles must be a list of broker and/or controller", "'leader'"],
        ),
        (
            {"kafka_node_ids": [1], "kafka_process_roles": "broker"},
            ["kafka_process_roles must be a list", "'broker'"],
        ),
        ({"kafka_node_ids": [1], "kafka_process_roles": []}, ["kafka_process_roles", "[]"]),
        (
            {"kafka_node_ids": [1], "kafka_process_roles": ["broker", "broker"]},
            ["kafka_process_roles"],
        ),
        (
            {"kafka_node_ids": [1, 2, 3], "kafka_client_port_base": 65534},
            ["kafka_client_port_base 65534", "room for 3 node(s)", "+ 0..2"],
        ),
        (
            {"kafka_node_ids": [1], "kafka_internal_port_base": "x"},
            ["kafka_internal_port_base 'x'", "internal listener"],
        ),
        (
            {"kafka_node_ids": [1], "kafka_controller_port_base": 0},
            ["kafka_controller_port_base 0"],
        ),
    ],
)
def test_unusable_host_settings_name_the_host_and_the_variable(settings, words):
    with pytest.raises(PlanError) as raised:
        host_nodes("stream", settings)

    message = str(raised.value)
    assert message.startswith("host stream")
    assert all(word in message for word in words), message


def test_a_host_without_settings_is_refused_by_nodes():
    with pytest.raises(PlanError, match="host db is in group kafka but sets no kafka_node_ids"):
        nodes(["stream", "db"], {"stream": SEED["stream"]})


# --- voters and bootstrap servers ---------------------------------------------------------------


def test_the_quorum_voters_name_every_controller():
    assert quorum_voters(seed_nodes()) == ("1@10.77.0.12:9292,2@10.77.0.12:9293,3@10.77.0.12:9294")
    assert quorum_voters(spread_nodes()) == (
        "1@10.77.0.10:9292,2@10.77.0.11:9292,3@10.77.0.12:9292"
    )


def test_ipv6_addresses_are_bracketed_and_names_are_not():
    hostvars = {
        "v6": {"ansible_host": "fd00::12", "kafka_node_ids": [1, 2]},
        "dns": {"ansible_host": "kafka.lab.internal", "kafka_node_ids": [3]},
    }
    items = nodes(["v6", "dns"], hostvars)

    assert quorum_voters(items) == ("1@[fd00::12]:9292,2@[fd00::12]:9293,3@kafka.lab.internal:9292")
    assert bootstrap_servers(items) == "[fd00::12]:9092,[fd00::12]:9093,kafka.lab.internal:9092"


def test_separate_controllers_vote_and_only_brokers_bootstrap():
    items = layout(c1=([10], ["controller"]), b1=([20, 21], ["broker"]))

    assert quorum_voters(items) == "10@c1:9292"
    assert bootstrap_servers(items) == "b1:9092,b1:9093"
    assert bootstrap_servers(items, "internal") == "b1:9192,b1:9193"


# --- topics ------------------------------------------------------------------------------------


def test_topic_specs_fill_in_the_cluster_settings():
    specs = topic_specs([{"name": "events.raw", "partitions": "30"}], 3, 2)

    assert specs == [
        {
            "name": "events.raw",
            "partitions": 30,
            "replication_factor": 3,
            "configs": {"min.insync.replicas": "2"},
        }
    ]
    assert topic_specs(None, 3, 2) == []


def test_a_topic_keeps_its_own_settings_as_strings_in_key_order():
    raw = [
        {
            "name": "events.aggregated",
            "partitions": 10,
            "replication_factor": 2,
            "configs": {
                "retention.ms": 86400000,
                "cleanup.policy": "compact",
                "unclean.leader.election.enable": False,
                "min.insync.replicas": 1,
            },
        }
    ]

    (spec,) = topic_specs(raw, 3, 2)

    assert spec["replication_factor"] == 2
    assert list(spec["configs"].items()) == [
        ("cleanup.policy", "compact"),
        ("min.insync.replicas", "1"),
        ("retention.ms", "86400000"),
        ("unclean.leader.election.enable", "false"),
    ]


def test_the_study_topics_normalise():
    specs = topic_specs(TOPICS, 3, 2)

    assert [(s["name"], s["partitions"]) for s in specs] == [
        ("events.raw", 30),
        ("events.enriched", 20),
        ("events.aggregated", 10),
        ("events.dlq", 5),
        ("alerts.anomalies", 5),
    ]
    assert {s["replication_factor"] for s in specs} == {3}
    assert specs[2]["configs"] == {"cleanup.policy": "compact", "min.insync.replicas": "2"}


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"name": "a", "partitions": 1}, ["kafka_topics must be a list of topics"]),
        ("events.raw", ["kafka_topics must be a list of topics", "'events.raw'"]),
        ([{"name": "a", "partitions": 1}, {"partitions": 3}], ["kafka_topics[1] needs at least"]),
        (["events.raw"], ["kafka_topics[0] needs at least a name and partitions"]),
        (
            [{"name": "a", "partitions": 1, "partition": 3}],
            ["kafka_topics entry a: unknown key(s) partition", "known: name, partitions"],
        ),
        ([{"name": "a", "partitions": 0}], ["kafka_topics entry a: partitions is 0", ">= 1"]),
        ([{"name": "a"}], ["kafka_topics entry a: partitions is None"]),
        ([{"name": "a", "partitions": "many"}], ["partitions is 'many'"]),
        (
            [{"name": "a", "partitions": 1, "replication_factor": 0}],
            ["kafka_topics entry a: replication_factor is 0", ">= 1"],
        ),
        (
            [{"name": "a", "partitions": 1, "configs": ["cleanup.policy=compact"]}],
            ["kafka_topics entry a: configs must be a mapping"],
        ),
    ],
)
def test_unusable_topics_are_named(raw, words):
    with pytest.raises(PlanError) as raised:
        topic_specs(raw, 3, 2)

    assert all(word in str(raised.value) for word in words), str(raised.value)


# --- cluster problems ----------------------------------------------------------------------------


def test_the_seed_and_spread_clusters_have_no_problem():
    assert cluster_problems(seed_nodes(), TOPICS, 3, 2) == []
    assert cluster_problems(spread_nodes(), TOPICS, 3, 2) == []
    assert cluster_problems(seed_nodes(), None) == []  # defaults: 3 and 2


def test_an_even_number_of_controllers_is_one_problem():
    items = nodes(["stream"], {"stream": {"kafka_node_ids": [1, 2, 3, 4]}})

    assert cluster_problems(items, TOPICS, 3, 2) == [
        "group kafka: 4 KRaft controllers (nodes 1, 2, 3, 4): the quorum needs an odd number "
        "(3 or 5) to keep a majority; add or remove a controller (kafka_process_roles)"
    ]


def test_even_controllers_count_controllers_not_nodes():
    # 4 nodes, 3 of them controllers: fine.
    items = layout(c=([1, 2, 3], ["broker", "controller"]), b=([4], ["broker"]))
    assert cluster_problems(items, TOPICS, 3, 2) == []


def test_zero_controllers_is_named():
    items = layout(b=([1, 2, 3], ["broker"]))

    assert cluster_problems(items, TOPICS, 3, 2) == [
        "group kafka: no node is a controller: give an odd number of nodes (3 or 5) the "
        "controller role in kafka_process_roles"
    ]


def test_zero_brokers_is_named():
    problems = cluster_problems(layout(c=([1, 2, 3], ["controller"])), TOPICS, 3, 2)

    assert problems == [
        "group kafka: no node is a broker: give nodes the broker role in kafka_process_roles"
    ]


def test_duplicate_node_ids_across_hosts_name_both_hosts():
    hostvars = {**SPREAD, "app": {"kafka_node_ids": [1]}}
    items = nodes(["db", "app", "stream"], hostvars)

    assert cluster_problems(items, TOPICS, 3, 2) == [
        "group kafka: node id 1 is used more than once (on app, db): give every node its own "
        "id in kafka_node_ids"
    ]


def test_a_duplicate_id_on_one_host_is_named_too():
    items = nodes(["stream"], {"stream": {"kafka_node_ids": [1, 1, 3]}})

    assert cluster_problems(items, None, 3, 2) == [
        "group kafka: node id 1 is used more than once (on stream): give every node its own "
        "id in kafka_node_ids"
    ]


def test_a_replication_factor_above_the_broker_count_is_one_problem():
    # The topics inherit the factor: the one mistake is reported once, not once per topic.
    assert cluster_problems(seed_nodes(), TOPICS, 4, 2) == [
        "kafka_replication_factor 4 is larger than the 3 broker(s) of group kafka: lower it or "
        "add brokers"
    ]


def test_one_broker_with_the_studys_factor_is_one_problem():
    items = nodes(["stream"], {"stream": {"kafka_node_ids": [1]}})

    problems = cluster_problems(items, TOPICS, 3, 2)

    assert problems == [
        "kafka_replication_factor 3 is larger than the 1 broker(s) of group kafka: lower it or "
        "add brokers"
    ]


def test_min_insync_replicas_above_the_factor_is_one_problem():
    assert cluster_problems(seed_nodes(), TOPICS, 3, 4) == [
        "kafka_min_insync_replicas 4 is larger than kafka_replication_factor 3: no write could "
        "succeed with acks=all; keep it below the replication factor (the study: 2 of 3)"
    ]


def test_min_insync_replicas_equal_to_the_factor_is_allowed():
    assert cluster_problems(seed_nodes(), TOPICS, 3, 3) == []


@pytest.mark.parametrize(
    ("factor", "min_isr", "words"),
    [
        ("three", 2, "kafka_replication_factor is 'three': set a whole number >= 1"),
        (0, 2, "kafka_replication_factor is 0: set a whole number >= 1"),
        (3, 0, "kafka_min_insync_replicas is 0: set a whole number >= 1"),
        (3, None, "kafka_min_insync_replicas is None"),
    ],
)
def test_an_unusable_cluster_setting_is_one_problem(factor, min_isr, words):
    problems = cluster_problems(seed_nodes(), TOPICS, factor, min_isr)

    assert len(problems) == 1, problems
    assert words in problems[0]


def test_a_topic_with_zero_partitions_is_named():
    topics = [*TOPICS[:3], {"name": "events.dlq", "partitions": 0}]

    assert cluster_problems(seed_nodes(), topics, 3, 2) == [
        "kafka_topics entry events.dlq: partitions is 0: set a whole number >= 1"
    ]


def test_a_topic_factor_above_the_broker_count_is_named():
    topics = [*TOPICS, {"name": "audit", "partitions": 1, "replication_factor": 5}]

    assert cluster_problems(seed_nodes(), topics, 3, 2) == [
        "kafka_topics entry audit: replication_factor 5 is larger than the 3 broker(s): lower "
        "it or add brokers"
    ]


def test_a_topic_whose_own_factor_is_below_min_insync_is_named():
    topics = [*TOPICS, {"name": "scratch", "partitions": 1, "replication_factor": 1}]

    assert cluster_problems(seed_nodes(), topics, 3, 2) == [
        "kafka_topics entry scratch: min.insync.replicas 2 is larger than its replication "
        "factor 1: lower it"
    ]


def test_a_topic_whose_own_min_insync_is_above_the_factor_is_named():
    topic = {"name": "strict", "partitions": 1, "configs": {"min.insync.replicas": 4}}

    assert cluster_problems(seed_nodes(), [*TOPICS, topic], 3, 2) == [
        "kafka_topics entry strict: min.insync.replicas 4 is larger than its replication "
        "factor 3: lower it"
    ]


def test_a_duplicate_topic_is_named():
    topics = [*TOPICS, {"name": "events.raw", "partitions": 30}]

    assert cluster_problems(seed_nodes(), topics, 3, 2) == [
        "kafka_topics: topic events.raw is declared 2 times: keep one"
    ]


def test_every_cluster_problem_is_reported_at_once():
    hostvars = {
        "db": {"kafka_node_ids": [1]},
        "app": {"kafka_node_ids": [1]},
        "stream": {"kafka_node_ids": [3, 4]},
    }
    topics = [{"name": "a", "partitions": 1}, {"name": "a", "partitions": 1}]

    problems = cluster_problems(nodes(list(hostvars), hostvars), topics, 5, 6)

    assert len(problems) == 5, problems
    assert "node id 1 is used more than once (on app, db)" in problems[0]
    assert "4 KRaft controllers (nodes 1, 1, 3, 4)" in problems[1]
    assert problems[2].startswith("kafka_replication_factor 5 is larger than the 4 broker(s)")
    assert problems[3].startswith("kafka_min_insync_replicas 6 is larger than")
    assert problems[4] == "kafka_topics: topic a is declared 2 times: keep one"


# --- ports -------------------------------------------------------------------------------------


def test_the_seed_ports_collide_with_nothing():
    others = {"stream": {"ssh (common_ssh_port)": 22, "node_exporter": 9100, "redis": 7000}}

    assert port_problems(seed_nodes(), others) == []


def test_listeners_overlapping_each_other_are_named():
    items = nodes(
        ["stream"], {"stream": {"kafka_node_ids": [1, 2, 3], "kafka_internal_port_base": 9094}}
    )

    assert port_problems(items, {}) == [
        "host stream: port 9094 is used by kafka node 1 internal listener and kafka node 3 "
        "client listener: move kafka_client_port_base, kafka_internal_port_base, "
        "kafka_controller_port_base clear of each other and of the host's other services"
    ]


def test_a_listener_on_another_services_port_is_named_on_its_host_only():
    items = spread_nodes()
    others = {"stream": {"node_exporter (common_node_exporter_port)": 9292}, "nowhere": {"x": 1}}

    problems = port_problems(items, others)

    assert len(problems) == 1, problems
    assert problems[0].startswith(
        "host stream: port 9292 is used by kafka node 3 controller listener and node_exporter "
        "(common_node_exporter_port): move "
    )


# --- sizing ------------------------------------------------------------------------------------


def test_a_small_host_gets_the_floors():
    assert sizing(1, 1024, 3) == {
        "heap_mb": 512,
        "num_network_threads": 3,
        "num_io_threads": 8,
        "num_replica_fetchers": 1,
        "num_recovery_threads_per_data_dir": 1,
        "background_threads": 4,
    }


def test_a_big_host_gets_the_ceilings():
    assert sizing(64, 262144, 1) == {
        "heap_mb": 6144,
        "num_network_threads": 16,
        "num_io_threads": 32,
        "num_replica_fetchers": 4,
        "num_recovery_threads_per_data_dir": 8,
        "background_threads": 10,
    }


def test_the_nodes_on_a_host_share_its_cpus_and_memory():
    assert sizing(16, 32768, 2) == {
        "heap_mb": 4096,
        "num_network_threads": 8,
        "num_io_threads": 16,
        "num_replica_fetchers": 4,
        "num_recovery_threads_per_data_dir": 4,
        "background_threads": 8,
    }
    assert sizing(16, 32768, 4) == {
        "heap_mb": 2048,
        "num_network_threads": 4,
        "num_io_threads": 8,
        "num_replica_fetchers": 2,
        "num_recovery_threads_per_data_dir": 2,
        "background_threads": 4,
    }
    assert sizing(8, 16384, 3)["heap_mb"] == 1365  # a quarter of 16 GiB, in 3


def test_the_heap_bounds_and_share_are_settings():
    assert sizing(4, 1024, 1, heap_share=0.5, heap_min_mb=256, heap_max_mb=1024)["heap_mb"] == 512
    assert sizing(4, 8192, 1, heap_max_mb=1024)["heap_mb"] == 1024
    assert sizing(4, 1024, 1, heap_min_mb=1000)["heap_mb"] == 1000
    assert sizing(4, 8192, 0) == sizing(4, 8192, 1)  # no node: as if one


# --- cluster id --------------------------------------------------------------------------------


def test_a_new_cluster_id_looks_like_kafka_storage_random_uuid():
    ids = [new_cluster_id() for _ in range(300)]

    assert len(set(ids)) == len(ids)
    for value in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", value), value
        assert not value.startswith("-")
        assert len(base64.urlsafe_b64decode(value + "==")) == 16


def test_a_cluster_id_starting_with_a_dash_is_drawn_again(monkeypatch):
    draws = iter([b"\xf8" + bytes(15), bytes(16)])
    monkeypatch.setattr(kafka_topology.secrets, "token_bytes", lambda n: next(draws))

    assert new_cluster_id() == "A" * 22


def test_properties_are_parsed_like_meta_properties():
    text = (
        "#\n#Thu Jan 01 00:00:00 UTC 2026\n"
        "node.id=1\n"
        "directory.id=q5WcIdXuSDuOGzLfSKb5Sw\n"
        "\n"
        "! another comment\n"
        "  cluster.id = MkU3OEVBNTcwNTJENDM2Qk  \n"
        "version=1\n"
        "listeners=SSL://a:1,SASL_SSL://b:2\n"
        "jaas=user=admin\n"
    )

    assert parse_properties(text) == {
        "node.id": "1",
        "directory.id": "q5WcIdXuSDuOGzLfSKb5Sw",
        "cluster.id": "MkU3OEVBNTcwNTJENDM2Qk",
        "version": "1",
        "listeners": "SSL://a:1,SASL_SSL://b:2",
        "jaas": "user=admin",
    }
    assert parse_properties("") == {}


def test_the_configured_cluster_id_wins_when_the_hosts_agree_or_hold_nothing():
    found = {"stream:/etc/kafka/cluster.id": "AAA", "stream:/var/lib/kafka/1": None}

    assert cluster_id(found, "AAA", "NEW") == "AAA"
    assert cluster_id({}, "AAA", "NEW") == "AAA"


def test_a_configured_cluster_id_the_hosts_do_not_hold_names_the_hosts():
    found = {
        "stream:/etc/kafka/cluster.id": "AAA",
        "stream:/var/lib/kafka/1/data/meta.properties": "BBB",
        "db:/var/lib/kafka/2/data/meta.properties": "BBB",
    }

    with pytest.raises(PlanError) as raised:
        cluster_id(found, "AAA", "NEW")

    message = str(raised.value)
    assert message.startswith("kafka_cluster_id is AAA but the hosts hold another id (BBB in ")
    assert (
        "BBB in db:/var/lib/kafka/2/data/meta.properties, "
        "stream:/var/lib/kafka/1/data/meta.properties" in message
    )
    assert "AAA in" not in message
    assert "set kafka_cluster_id to the id the cluster was formatted with" in message


def test_without_configuration_the_id_the_hosts_agree_on_is_used():
    found = {"db:cluster.id": "AAA", "app:meta": "AAA", "stream:meta": None}

    assert cluster_id(found, None, "NEW") == "AAA"
    assert cluster_id(found, "", "NEW") == "AAA"


def test_a_new_cluster_gets_the_candidate():
    assert cluster_id({"stream:meta": None}, None, "NEW") == "NEW"
    assert cluster_id({}, None, "NEW") == "NEW"


def test_hosts_holding_different_ids_stop_the_run_naming_each():
    found = {"db:meta": "AAA", "app:meta": "BBB", "stream:meta": "AAA"}

    with pytest.raises(PlanError) as raised:
        cluster_id(found, None, "NEW")

    message = str(raised.value)
    assert "different cluster ids (AAA in db:meta, stream:meta; BBB in app:meta)" in message
    assert "set kafka_cluster_id to the right one" in message


# --- certificates and restarts -----------------------------------------------------------------


def test_tls_subjects_split_names_and_addresses_and_carry_own_certificates():
    hostvars = {
        "stream": {"ansible_host": "10.77.0.12"},
        "app": {"ansible_host": "fd00::11"},
        "db": {
            "ansible_host": "db.example.org",
            "kafka_tls_cert_file": "/pki/db.pem",
            "kafka_tls_key_file": "/pki/db.key",
        },
        "lonely": {"kafka_tls_cert_file": "/pki/lonely.pem"},
    }
    extra = ["kafka.example.org", "10.77.0.100", "stream"]

    subjects = tls_subjects(["stream", "app", "db", "stream", "lonely"], hostvars, extra)

    assert subjects == [
        {
            "name": "stream",
            "dns_names": ["stream", "kafka.example.org"],
            "ip_addresses": ["10.77.0.12", "10.77.0.100"],
        },
        {
            "name": "app",
            "dns_names": ["app", "kafka.example.org", "stream"],
            "ip_addresses": ["fd00::11", "10.77.0.100"],
        },
        {
            "name": "db",
            "dns_names": ["db", "db.example.org", "kafka.example.org", "stream"],
            "ip_addresses": ["10.77.0.100"],
            "cert": "/pki/db.pem",
            "key": "/pki/db.key",
        },
        {
            "name": "lonely",
            "dns_names": ["lonely", "kafka.example.org", "stream"],
            "ip_addresses": ["10.77.0.100"],
            "cert": "/pki/lonely.pem",
            "key": "",
        },
    ]


NODES = [{"id": 1}, {"id": 2}, {"id": 3}]
EXISTED = [
    {"item": {"id": 1}, "stat": {"exists": True}},
    {"item": {"id": 2}, "stat": {"exists": True}},
    {"item": {"id": 3}, "stat": {"exists": False}},
]
RESULTS = [
    [{"kafka_node": {"id": 1}, "changed": False}, {"kafka_node": {"id": 2}, "changed": True}],
    [{"kafka_node": {"id": 3}, "changed": True}, {"kafka_node": {"id": 1}, "skipped": True}],
]


def test_only_configured_nodes_whose_files_changed_restart():
    assert changed_nodes(NODES, EXISTED, RESULTS, False) == [{"id": 2}]


def test_a_host_wide_change_restarts_every_configured_node_but_not_new_ones():
    assert changed_nodes(NODES, EXISTED, RESULTS, True) == [{"id": 1}, {"id": 2}]


def test_nothing_changed_restarts_nothing():
    unchanged = [[{"kafka_node": {"id": n}, "changed": False} for n in (1, 2, 3)]]

    assert changed_nodes(NODES, EXISTED, unchanged, False) == []
    assert changed_nodes(NODES, [{"item": {"id": 1}, "skipped": True}], RESULTS, True) == []


def test_a_restart_an_earlier_run_deferred_is_queued_though_no_file_changes():
    unchanged = [[{"kafka_node": {"id": n}, "changed": False} for n in (1, 2, 3)]]
    marks = [
        {"item": {"id": 1}, "stat": {"exists": True}},
        {"item": {"id": 2}, "stat": {"exists": False}},
        {"item": {"id": 3}, "stat": {"exists": True}},  # not configured: starts fresh anyway
    ]

    assert changed_nodes(NODES, EXISTED, unchanged, False, marks) == [{"id": 1}]
    assert changed_nodes(NODES, EXISTED, RESULTS, False, marks) == [{"id": 1}, {"id": 2}]


# --- filters -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def filters() -> dict:
    spec = importlib.util.spec_from_file_location("sluice_kafka_filters", FILTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_the_nodes_filter_fails_the_task_with_the_plan_error(filters):
    with pytest.raises(AnsibleFilterError, match="host stream is in group kafka but sets no"):
        filters["sluice_kafka_nodes"](["stream"], {"stream": {}})


def test_the_node_filters_chain_like_the_role_uses_them(filters):
    listed = filters["sluice_kafka_nodes"](["db", "app", "stream"], SPREAD)

    assert listed == [node.as_dict() for node in spread_nodes()]
    assert filters["sluice_kafka_voters"](listed) == quorum_voters(spread_nodes())
    assert filters["sluice_kafka_bootstrap"](listed, "internal") == (
        "10.77.0.10:9192,10.77.0.11:9192,10.77.0.12:9192"
    )
    mine = filters["sluice_kafka_host_nodes"](
        filters["sluice_kafka_nodes"](["stream"], SEED), "stream"
    )
    assert [n["id"] for n in mine] == [1, 2, 3]


def test_the_topics_filter_fails_the_task_with_the_plan_error(filters):
    with pytest.raises(AnsibleFilterError, match="kafka_topics entry a: partitions is 0"):
        filters["sluice_kafka_topics"]([{"name": "a", "partitions": 0}], "3", "2")


def test_found_ids_decode_the_slurped_files(filters):
    meta = [
        {
            "content": b64("#\nnode.id=1\ncluster.id=AAA\n"),
            "source": "/var/lib/kafka/1/data/meta.properties",
        },
        {"content": b64("node.id=2\n"), "source": "/var/lib/kafka/2/data/meta.properties"},
        {"failed": True, "msg": "file not found: /var/lib/kafka/3/data/meta.properties"},
    ]
    id_file = {"content": b64("AAA\n"), "source": "/etc/kafka/cluster.id"}

    found = filters["sluice_kafka_found_ids"](meta, "stream", id_file)

    assert found == {
        "stream:/etc/kafka/cluster.id": "AAA",
        "stream:/var/lib/kafka/1/data/meta.properties": "AAA",
        "stream:/var/lib/kafka/2/data/meta.properties": None,
    }
    assert filters["sluice_kafka_cluster_id"](found, "", "NEW") == "AAA"


def test_found_ids_of_a_fresh_host_are_empty_and_give_the_new_id(filters):
    missing = {"failed": True, "msg": "file not found"}

    found = filters["sluice_kafka_found_ids"]([missing, missing], "stream", missing)

    assert found == {}
    assert filters["sluice_kafka_cluster_id"](found, "", "NEW") == "NEW"


def test_the_cluster_id_filter_fails_the_task_when_hosts_disagree(filters):
    with pytest.raises(AnsibleFilterError, match="different cluster ids"):
        filters["sluice_kafka_cluster_id"]({"db:m": "AAA", "app:m": "BBB"}, "", "NEW")


def test_the_changed_nodes_filter_reads_host_changed_as_ansible_passes_it(filters):
    assert filters["sluice_kafka_changed_nodes"](NODES, EXISTED, RESULTS, "False") == [{"id": 2}]
    assert filters["sluice_kafka_changed_nodes"](NODES, EXISTED, RESULTS, "True") == [
        {"id": 1},
        {"id": 2},
    ]
