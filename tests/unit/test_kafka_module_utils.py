"""The pure logic behind the module sluice_kafka_cluster (module_utils/sluice_kafka.py): ACLs,
topics and cluster health from plain data, no Kafka client."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sluice_infra.settings import group_vars_all

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "ansible" / "plugins" / "module_utils"))

from sluice_kafka import (  # noqa: E402  (found through the path added above)
    AclEntry,
    SpecError,
    acl_actions,
    broker_problems,
    expand_acls,
    partition_problems,
    quorum_leader,
    quorum_problems,
    topic_actions,
)

#: The study's ACLs, as the lab inventories declare them.
ACLS = group_vars_all(REPO / "inventories" / "lab")["kafka_acls"]


def acl(principal: str, operation: str, name: str = "t", resource_type: str = "topic") -> AclEntry:
    return AclEntry(principal, "*", operation, "allow", resource_type, name, "literal")


# --- ACLs --------------------------------------------------------------------------------------


def test_an_acl_entry_expands_per_resource_name_and_operation():
    entries = expand_acls(
        [
            {
                "principal": "User:sluice-processor",
                "resource_type": "topic",
                "resource_names": ["events.enriched", "events.dlq"],
                "operations": ["write", "describe"],
            }
        ]
    )

    assert entries == [
        acl("User:sluice-processor", "write", "events.enriched"),
        acl("User:sluice-processor", "describe", "events.enriched"),
        acl("User:sluice-processor", "write", "events.dlq"),
        acl("User:sluice-processor", "describe", "events.dlq"),
    ]


def test_acl_defaults_allow_literal_from_anywhere_and_the_cluster_resource():
    (entry,) = expand_acls(
        [{"principal": "User:monitoring", "resource_type": "cluster", "operations": "describe"}]
    )

    assert entry == AclEntry(
        "User:monitoring", "*", "describe", "allow", "cluster", "kafka-cluster", "literal"
    )
    assert entry.describe() == "allow User:monitoring describe on cluster kafka-cluster"


def test_acl_words_are_case_insensitive_and_options_are_kept():
    (entry,) = expand_acls(
        [
            {
                "principal": "User:ops",
                "resource_type": "Group",
                "resource_names": "sluice-",
                "operations": ["READ"],
                "permission": "DENY",
                "pattern_type": "Prefixed",
                "host": "10.77.0.11",
            }
        ]
    )

    assert entry == AclEntry(
        "User:ops", "10.77.0.11", "read", "deny", "group", "sluice-", "prefixed"
    )
    assert entry.describe() == "deny User:ops read on group sluice- (prefixed) from 10.77.0.11"


def test_a_repeated_acl_is_listed_once():
    item = {"principal": "User:a", "resource_type": "topic", "resource_names": "t"}
    entries = expand_acls(
        [{**item, "operations": ["read", "read"]}, {**item, "operations": "read"}]
    )

    assert entries == [acl("User:a", "read")]


def test_the_study_acls_expand():
    entries = expand_acls(ACLS)

    assert len(entries) == 18
    assert acl("User:sluice-producer", "write", "events.raw") in entries
    assert acl("User:sluice-processor", "read", "sluice-processor", "group") in entries
    assert acl("User:monitoring", "describe", "kafka-cluster", "cluster") in entries
    assert not [
        e for e in entries if e.principal == "User:sluice-producer" and e.operation == "read"
    ]


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("User:a", ["kafka_acls[0] must be a mapping"]),
        ({"principal": "User:a", "resource": "topic"}, ["unknown key(s) resource", "known: host"]),
        (
            {"principal": "alice", "resource_type": "topic"},
            ["principal must look like User:<name>"],
        ),
        ({"resource_type": "topic"}, ["principal must look like User:<name>, not None"]),
        (
            {"principal": "User:a", "resource_type": "queue", "operations": "read"},
            ["kafka_acls[0] (User:a): resource_type must be one of topic, group"],
        ),
        (
            {"principal": "User:a", "resource_type": "topic", "operations": "read"},
            ["(User:a): resource_names must be a name or a non-empty list"],
        ),
        (
            {
                "principal": "User:a",
                "resource_type": "topic",
                "resource_names": [],
                "operations": "r",
            },
            ["resource_names must be a name or a non-empty list"],
        ),
        (
            {"principal": "User:a", "resource_type": "topic", "resource_names": "t"},
            ["operations must be a name or a non-empty list"],
        ),
        (
            {
                "principal": "User:a",
                "resource_type": "topic",
                "resource_names": "t",
                "operations": ["read", "fly"],
            },
            ["unknown operation(s) fly", "known: all, read"],
        ),
        (
            {
                "principal": "User:a",
                "resource_type": "topic",
                "resource_names": "t",
                "operations": "read",
                "permission": "maybe",
            },
            ["permission must be allow or deny"],
        ),
        (
            {
                "principal": "User:a",
                "resource_type": "topic",
                "resource_names": "t",
                "operations": "read",
                "pattern_type": "regex",
            },
            ["pattern_type literal or prefixed"],
        ),
    ],
)
def test_unusable_acls_name_the_entry_and_the_fix(item, words):
    with pytest.raises(SpecError) as raised:
        expand_acls([item])

    message = str(raised.value)
    assert message.startswith("kafka_acls[0]")
    assert all(word in message for word in words), message


def test_the_position_of_a_bad_acl_is_named():
    good = {
        "principal": "User:a",
        "resource_type": "topic",
        "resource_names": "t",
        "operations": "read",
    }

    with pytest.raises(SpecError, match=r"^kafka_acls\[2\] \(User:b\): resource_type"):
        expand_acls([good, good, {"principal": "User:b", "resource_type": "topics"}])


DESIRED = [acl("User:a", "read"), acl("User:a", "write")]
CURRENT = [
    acl("User:a", "write"),
    acl("User:a", "delete"),  # declared principal, undeclared entry
    acl("User:admin", "all", "*"),  # another principal
]


def test_missing_acls_are_created_and_nothing_is_deleted_by_default():
    assert acl_actions(DESIRED, CURRENT, False) == ([acl("User:a", "read")], [])


def test_delete_undeclared_removes_only_the_declared_principals_extra_acls():
    create, delete = acl_actions(DESIRED, CURRENT, True)

    assert create == [acl("User:a", "read")]
    assert delete == [acl("User:a", "delete")]


def test_acls_in_place_need_nothing():
    assert acl_actions(DESIRED, list(reversed(DESIRED)), True) == ([], [])


# --- topics ------------------------------------------------------------------------------------


def spec(name: str, partitions: int = 3, factor: int = 3, **configs: str) -> dict:
    return {
        "name": name,
        "partitions": partitions,
        "replication_factor": factor,
        "configs": {"min.insync.replicas": "2", **configs},
    }


def have(partitions: int = 3, factor: int = 3, **configs: object) -> dict:
    return {
        "partitions": partitions,
        "replication_factor": factor,
        "configs": {"min.insync.replicas": 2, **configs},
    }


def test_declared_topics_already_in_place_need_nothing():
    plan = topic_actions([spec("a"), spec("b", 10)], {"a": have(), "b": have(10)})

    assert plan == ([], {}, {}, [], [])


def test_missing_topics_are_created_and_partitions_raised():
    plan = topic_actions([spec("a"), spec("b", 10)], {"b": have(5)})

    assert plan.create == [spec("a")]
    assert plan.partitions == {"b": 10}
    assert (plan.configs, plan.delete, plan.problems) == ({}, [], [])


def test_only_the_changed_configs_are_altered():
    desired = [spec("a", **{"cleanup.policy": "compact", "retention.ms": "1000"})]
    current = {"a": have(**{"cleanup.policy": "delete", "retention.ms": 1000})}

    assert topic_actions(desired, current).configs == {"a": {"cleanup.policy": "compact"}}


def test_a_topic_is_never_shrunk():
    plan = topic_actions([spec("a", 3)], {"a": have(12)})

    assert plan.partitions == {}
    assert plan.problems == [
        "topic a has 12 partitions, kafka_topics declares 3: Kafka cannot remove partitions; "
        "declare 12 or more"
    ]


def test_a_replication_factor_change_is_a_problem_not_an_action():
    plan = topic_actions([spec("a", 6, 2)], {"a": have(3, 3)})

    assert plan.partitions == {"a": 6}
    (problem,) = plan.problems
    assert problem.startswith("topic a has replication factor 3, kafka_topics declares 2")
    assert "kafka-reassign-partitions" in problem and "declare 3 or reassign first" in problem


def test_undeclared_topics_are_deleted_only_when_asked():
    current = {"a": have(), "zombie": have(), "old": have()}

    assert topic_actions([spec("a")], current).delete == []
    assert topic_actions([spec("a")], current, delete_undeclared=True).delete == ["old", "zombie"]


# --- health ------------------------------------------------------------------------------------


def partition(index: int, leader: int | None, replicas: list[int], isr: list[int]) -> dict:
    return {"partition": index, "leader": leader, "replicas": replicas, "isr": isr}


def test_healthy_partitions_have_no_problem():
    topics = [{"topic": "t", "partitions": [partition(0, 1, [1, 2, 3], [3, 1, 2])]}]

    assert partition_problems(topics, {}, 2) == []


def test_offline_under_replicated_and_under_min_isr_partitions_are_named_per_topic():
    topics = [
        {
            "topic": "t",
            "partitions": [
                partition(0, 1, [1, 2, 3], [1, 2, 3]),
                partition(3, 3, [1, 2, 3], [3]),
                partition(1, -1, [1, 2, 3], []),
                partition(2, 2, [1, 2, 3], [2, 3]),
            ],
        },
        {"topic": "fine", "partitions": [partition(0, 2, [2], [2])]},  # rf 1: min ISR is 1
    ]

    assert partition_problems(topics, {}, 2) == [
        "t: partitions 1 without a leader",
        "t: partitions 1, 2, 3 under-replicated",
        "t: partitions 1, 3 under min.insync.replicas=2",
    ]


def test_a_topics_own_min_isr_applies():
    topics = [{"topic": "t", "partitions": [partition(0, 3, [1, 2, 3], [3])]}]

    assert partition_problems(topics, {"t": 1}, 2) == ["t: partitions 0 under-replicated"]


def test_the_protocol_key_names_are_read_too():
    topics = [
        {
            "name": "u",
            "partitions": [
                {"partition_index": 4, "leader_id": -1, "replica_nodes": [1, 2], "isr_nodes": [2]},
                {
                    "partition_index": 5,
                    "leader_id": 1,
                    "replica_nodes": [1, 2],
                    "isr_nodes": [1, 2],
                },
            ],
        },
        {"topic": "v", "partitions": [partition(0, None, [1], [1])]},
    ]

    assert partition_problems(topics, {}, 2) == [
        "u: partitions 4 without a leader",
        "u: partitions 4 under-replicated",
        "u: partitions 4 under min.insync.replicas=2",
        "v: partitions 0 without a leader",
    ]


def test_many_bad_partitions_are_summarised():
    topics = [{"topic": "t", "partitions": [partition(i, -1, [1], [1]) for i in range(12, 0, -1)]}]

    assert partition_problems(topics, {}, 1) == [
        "t: partitions 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more without a leader"
    ]


def voter(replica_id: int, offset: int) -> dict:
    return {"replica_id": replica_id, "log_end_offset": offset}


def test_a_caught_up_quorum_has_no_problem():
    quorum = {"leader_id": 2, "current_voters": [voter(1, 95), voter(2, 100), voter(3, 100)]}

    assert quorum_problems(quorum, [1, 2, 3], 10) == []
    assert quorum_leader(quorum) == 2


@pytest.mark.parametrize(
    "quorum", [{"leader_id": -1, "current_voters": []}, {"leader_id": None}, {}]
)
def test_a_quorum_without_leader_is_one_problem(quorum):
    assert quorum_problems(quorum, [1, 2, 3], 10) == ["the KRaft quorum has no leader"]


def test_a_missing_voter_is_named():
    quorum = {"leader_id": 1, "current_voters": [voter(1, 100), voter(2, 100)]}

    assert quorum_problems(quorum, [3, 1, 2, 3], 10) == [
        "KRaft voters 3 are not in the quorum (voters: 1, 2)"
    ]


def test_a_lagging_voter_is_named_beyond_the_allowed_lag_only():
    quorum = {"leader_id": 1, "current_voters": [voter(1, 100), voter(2, 100), voter(3, 40)]}

    assert quorum_problems(quorum, [1, 2, 3], 50) == [
        "KRaft voter 3 lags the leader 1 (log end offset 40 vs 100)"
    ]
    assert quorum_problems(quorum, [1, 2, 3], 60) == []


def test_a_voter_without_offset_lags():
    quorum = {"leader_id": 1, "current_voters": [voter(1, 5), voter(2, -1), voter(3, 5)]}

    assert quorum_problems(quorum, [1, 2, 3], 1000) == [
        "KRaft voter 2 lags the leader 1 (log end offset -1 vs 5)"
    ]


def test_the_nested_describe_quorum_response_is_read():
    quorum = {
        "topics": [
            {
                "topic_name": "__cluster_metadata",
                "partitions": [
                    {"leader_id": 3, "current_voters": [voter(1, 10), voter(3, 10)]},
                ],
            }
        ]
    }

    assert quorum_leader(quorum) == 3
    assert quorum_problems(quorum, [1, 2, 3], 0) == [
        "KRaft voters 2 are not in the quorum (voters: 1, 3)"
    ]


def test_unregistered_brokers_are_named():
    cluster = {"brokers": [{"broker_id": 1}, {"node_id": 2}]}

    assert broker_problems(cluster, [1, 2]) == []
    assert broker_problems(cluster, [4, 1, 2, 3]) == [
        "brokers 3, 4 are not registered with the cluster"
    ]
    assert broker_problems({}, [1]) == ["brokers 1 are not registered with the cluster"]
