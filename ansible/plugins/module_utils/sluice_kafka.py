"""Pure logic of the module sluice_kafka_cluster: what to change to reach the declared topics,
ACLs and users, and whether the cluster is healthy. No Kafka client here: the module feeds
these functions what it read with kafka-python, and the unit tests feed them plain data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

RESOURCE_TYPES = ("topic", "group", "cluster", "transactional_id")
OPERATIONS = (
    "all",
    "read",
    "write",
    "create",
    "delete",
    "alter",
    "describe",
    "cluster_action",
    "describe_configs",
    "alter_configs",
    "idempotent_write",
)
PERMISSIONS = ("allow", "deny")
PATTERN_TYPES = ("literal", "prefixed")
ACL_KEYS = frozenset(
    {
        "principal",
        "resource_type",
        "resource_names",
        "operations",
        "permission",
        "pattern_type",
        "host",
    }
)


class SpecError(ValueError):
    """The declared data is unusable; the message names the entry and the fix."""


class AclEntry(NamedTuple):
    """One ACL binding, normalised to lower case names."""

    principal: str
    host: str
    operation: str
    permission: str
    resource_type: str
    resource_name: str
    pattern_type: str

    def describe(self) -> str:
        return (
            f"{self.permission} {self.principal} {self.operation} on {self.resource_type} "
            f"{self.resource_name}"
            + ("" if self.pattern_type == "literal" else f" ({self.pattern_type})")
            + ("" if self.host == "*" else f" from {self.host}")
        )


def _names(value: Any, label: str, field: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not items or not all(isinstance(i, str) for i in items):
        raise SpecError(f"{label}: {field} must be a name or a non-empty list of names")
    return list(items)


def expand_acls(spec: Iterable[Mapping[str, Any]]) -> list[AclEntry]:
    """kafka_acls entries -> one :class:`AclEntry` per (resource name, operation)."""
    entries: list[AclEntry] = []
    for position, item in enumerate(spec):
        label = f"kafka_acls[{position}]"
        if not isinstance(item, Mapping):
            raise SpecError(f"{label} must be a mapping, not {item!r}")
        unknown = set(item) - ACL_KEYS
        if unknown:
            raise SpecError(
                f"{label}: unknown key(s) {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(ACL_KEYS))})"
            )
        principal = item.get("principal")
        if not isinstance(principal, str) or ":" not in principal:
            raise SpecError(f"{label}: principal must look like User:<name>, not {principal!r}")
        label = f"kafka_acls[{position}] ({principal})"
        resource_type = str(item.get("resource_type", "")).lower()
        if resource_type not in RESOURCE_TYPES:
            raise SpecError(f"{label}: resource_type must be one of {', '.join(RESOURCE_TYPES)}")
        default_names = "kafka-cluster" if resource_type == "cluster" else None
        names = _names(item.get("resource_names", default_names), label, "resource_names")
        operations = [op.lower() for op in _names(item.get("operations"), label, "operations")]
        bad = [op for op in operations if op not in OPERATIONS]
        if bad:
            raise SpecError(
                f"{label}: unknown operation(s) {', '.join(bad)} (known: {', '.join(OPERATIONS)})"
            )
        permission = str(item.get("permission", "allow")).lower()
        pattern_type = str(item.get("pattern_type", "literal")).lower()
        if permission not in PERMISSIONS or pattern_type not in PATTERN_TYPES:
            raise SpecError(
                f"{label}: permission must be allow or deny and pattern_type literal or prefixed"
            )
        host = str(item.get("host", "*"))
        for name in names:
            for operation in operations:
                entry = AclEntry(
                    principal, host, operation, permission, resource_type, name, pattern_type
                )
                if entry not in entries:
                    entries.append(entry)
    return entries


def acl_actions(
    desired: Sequence[AclEntry], current: Iterable[AclEntry], delete_undeclared: bool
) -> tuple[list[AclEntry], list[AclEntry]]:
    """(to create, to delete): declared entries missing from ``current``; with
    ``delete_undeclared``, current entries of the declared principals that are not declared."""
    have = set(current)
    create = [entry for entry in desired if entry not in have]
    delete: list[AclEntry] = []
    if delete_undeclared:
        principals = {entry.principal for entry in desired}
        wanted = set(desired)
        delete = sorted(e for e in have if e.principal in principals and e not in wanted)
    return create, delete


class TopicPlan(NamedTuple):
    create: list[Mapping[str, Any]]
    partitions: dict[str, int]
    configs: dict[str, dict[str, str]]
    delete: list[str]
    problems: list[str]


def topic_actions(
    desired: Sequence[Mapping[str, Any]],
    current: Mapping[str, Mapping[str, Any]],
    *,
    delete_undeclared: bool = False,
) -> TopicPlan:
    """What to do so the cluster has the declared topics.

    ``desired``: normalised specs (name, partitions, replication_factor, configs);
    ``current``: name -> {partitions, replication_factor, configs} for each existing,
    non-internal topic, ``configs`` holding the topic's own (non-default) settings.
    Missing topics are created, partitions raised, configs set; a lower partition count or
    another replication factor is a problem (Kafka cannot shrink a topic; a replication change
    is a reassignment an operator plans), never done silently."""
    create, partitions, configs, problems = [], {}, {}, []
    for spec in desired:
        name = spec["name"]
        have = current.get(name)
        if have is None:
            create.append(spec)
            continue
        if spec["partitions"] > have["partitions"]:
            partitions[name] = spec["partitions"]
        elif spec["partitions"] < have["partitions"]:
            problems.append(
                f"topic {name} has {have['partitions']} partitions, kafka_topics declares "
                f"{spec['partitions']}: Kafka cannot remove partitions; declare "
                f"{have['partitions']} or more"
            )
        if spec["replication_factor"] != have["replication_factor"]:
            problems.append(
                f"topic {name} has replication factor {have['replication_factor']}, "
                f"kafka_topics declares {spec['replication_factor']}: changing it is a "
                f"partition reassignment (kafka-reassign-partitions), which this role does not "
                f"do on its own; declare {have['replication_factor']} or reassign first"
            )
        changed = {
            key: str(value)
            for key, value in spec["configs"].items()
            if str(have["configs"].get(key)) != str(value)
        }
        if changed:
            configs[name] = changed
    declared = {spec["name"] for spec in desired}
    delete = sorted(set(current) - declared) if delete_undeclared else []
    return TopicPlan(create, partitions, configs, delete, problems)


def partition_problems(
    topics: Iterable[Mapping[str, Any]], min_isr: Mapping[str, int], default_min_isr: int
) -> list[str]:
    """Offline, under-replicated and under-min-ISR partitions, one line per topic.

    ``topics``: describe_topics() output (topic, partitions with leader, replicas, isr)."""
    problems = []
    for topic in topics:
        name = topic.get("topic") or topic.get("name")
        offline, under, below = [], [], []
        limit = min_isr.get(name, default_min_isr)
        for partition in topic.get("partitions") or []:
            index = partition.get("partition", partition.get("partition_index"))
            leader = partition.get("leader", partition.get("leader_id", -1))
            replicas = partition.get("replicas", partition.get("replica_nodes")) or []
            isr = partition.get("isr", partition.get("isr_nodes")) or []
            if leader is None or leader < 0:
                offline.append(index)
            if len(isr) < len(replicas):
                under.append(index)
            if len(isr) < min(limit, len(replicas)):
                below.append(index)
        for label, found in (
            ("without a leader", offline),
            ("under-replicated", under),
            (f"under min.insync.replicas={limit}", below),
        ):
            if found:
                shown = ", ".join(str(i) for i in sorted(found)[:10])
                more = f" and {len(found) - 10} more" if len(found) > 10 else ""
                problems.append(f"{name}: partitions {shown}{more} {label}")
    return problems


def quorum_problems(quorum: Mapping[str, Any], voters: Iterable[int], max_lag: int) -> list[str]:
    """A leader, every expected voter in the quorum and caught up within ``max_lag`` records.

    ``quorum``: describe_metadata_quorum() output (leader_id, current_voters with replica_id
    and log_end_offset)."""
    partition = _quorum_partition(quorum)
    leader = partition.get("leader_id", -1)
    if leader is None or leader < 0:
        return ["the KRaft quorum has no leader"]
    states = {state.get("replica_id"): state for state in partition.get("current_voters") or []}
    expected = sorted(set(voters))
    missing = [v for v in expected if v not in states]
    problems = []
    if missing:
        problems.append(
            f"KRaft voters {', '.join(map(str, missing))} are not in the quorum "
            f"(voters: {', '.join(map(str, sorted(states)))})"
        )
    leader_offset = (states.get(leader) or {}).get("log_end_offset", -1)
    for replica_id, state in sorted(states.items()):
        offset = state.get("log_end_offset", -1)
        if replica_id != leader and (offset < 0 or leader_offset - offset > max_lag):
            problems.append(
                f"KRaft voter {replica_id} lags the leader {leader} "
                f"(log end offset {offset} vs {leader_offset})"
            )
    return problems


def quorum_leader(quorum: Mapping[str, Any]) -> int:
    return int(_quorum_partition(quorum).get("leader_id", -1))


def _quorum_partition(quorum: Mapping[str, Any]) -> Mapping[str, Any]:
    """The __cluster_metadata partition of a DescribeQuorum response, whatever its nesting."""
    if "leader_id" in quorum:
        return quorum
    for topic in quorum.get("topics") or []:
        for partition in topic.get("partitions") or []:
            return partition
    return {}


def broker_problems(cluster: Mapping[str, Any], brokers: Iterable[int]) -> list[str]:
    """Every expected broker registered (describe_cluster() output: brokers with broker_id)."""
    registered = {b.get("broker_id", b.get("node_id")) for b in cluster.get("brokers") or []}
    missing = sorted(set(brokers) - registered)
    if missing:
        return [f"brokers {', '.join(map(str, missing))} are not registered with the cluster"]
    return []
