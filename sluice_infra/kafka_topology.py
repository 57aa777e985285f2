"""Kafka (KRaft) layout: which nodes run where, on which ports, in which roles; the quorum,
the topics and the sizing derived from them.

The role ``kafka`` runs the nodes listed per host of group ``kafka`` in ``kafka_node_ids``
(seed layout: ``[1, 2, 3]`` on ``stream``; spread: one id per host). Node ids are stable
forever (they are written into each node's formatted data directory), which is why they are
data, not derived from a host's position in the group. Node ``i`` on a host (by position in
its list) listens on ``<base> + i`` for each listener:

- client (SASL_SSL, SCRAM-SHA-512): ``kafka_client_port_base`` (9092)
- internal (SSL with client certificates; brokers among themselves and admin tooling):
  ``kafka_internal_port_base`` (9192)
- controller (SSL with client certificates; the KRaft quorum): ``kafka_controller_port_base``
  (9292)

``kafka_process_roles`` (per host, default ``[broker, controller]``) makes separate
controller-only and broker-only hosts possible for bigger clusters. The inventory checks
(:mod:`sluice_infra.inventory`) call :func:`cluster_problems` before any host is touched;
the filters in ``ansible/plugins/filter/sluice_kafka.py`` wrap the rest.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import secrets
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sluice_infra.numbers import whole_number
from sluice_infra.settings import role_default

GROUP = "kafka"

# The role's defaults, read from ansible/roles/kafka/defaults/main.yml (role defaults are not
# part of `hostvars`, so the checks and filters fall back on these).
DEFAULT_CLIENT_PORT_BASE = role_default("kafka", "kafka_client_port_base")
DEFAULT_INTERNAL_PORT_BASE = role_default("kafka", "kafka_internal_port_base")
DEFAULT_CONTROLLER_PORT_BASE = role_default("kafka", "kafka_controller_port_base")
DEFAULT_ROLES = tuple(role_default("kafka", "kafka_process_roles"))
DEFAULT_REPLICATION_FACTOR = role_default("kafka", "kafka_replication_factor")
DEFAULT_MIN_INSYNC_REPLICAS = role_default("kafka", "kafka_min_insync_replicas")

NODE_IDS_VAR = "kafka_node_ids"
ROLES_VAR = "kafka_process_roles"
PORT_BASE_VARS = {
    "client": ("kafka_client_port_base", DEFAULT_CLIENT_PORT_BASE),
    "internal": ("kafka_internal_port_base", DEFAULT_INTERNAL_PORT_BASE),
    "controller": ("kafka_controller_port_base", DEFAULT_CONTROLLER_PORT_BASE),
}
TOPICS_VAR = "kafka_topics"
REPLICATION_FACTOR_VAR = "kafka_replication_factor"
MIN_INSYNC_VAR = "kafka_min_insync_replicas"

ROLES = ("broker", "controller")
NODE_ID_MAX = 2**31 - 1
PORT_MAX = 65535


class PlanError(ValueError):
    """The layout cannot make a Kafka cluster; the message says why and what to change."""


@dataclass(frozen=True)
class Node:
    """One Kafka process (a KRaft node): where it runs, its id, roles and ports."""

    id: int
    host: str
    address: str
    index: int
    roles: tuple[str, ...]
    client_port: int
    internal_port: int
    controller_port: int

    @property
    def is_broker(self) -> bool:
        return "broker" in self.roles

    @property
    def is_controller(self) -> bool:
        return "controller" in self.roles

    def endpoint(self, listener: str) -> str:
        """``address:port`` of ``listener`` (client, internal or controller); IPv6 bracketed."""
        port = {
            "client": self.client_port,
            "internal": self.internal_port,
            "controller": self.controller_port,
        }[listener]
        return f"{_host_part(self.address)}:{port}"

    def as_dict(self) -> dict[str, Any]:
        """Plain data for Ansible."""
        return {
            "id": self.id,
            "host": self.host,
            "address": self.address,
            "index": self.index,
            "roles": list(self.roles),
            "is_broker": self.is_broker,
            "is_controller": self.is_controller,
            "client_port": self.client_port,
            "internal_port": self.internal_port,
            "controller_port": self.controller_port,
            "client_endpoint": self.endpoint("client"),
            "internal_endpoint": self.endpoint("internal"),
            "controller_endpoint": self.endpoint("controller"),
        }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Node:
        """Back from :meth:`as_dict` (extra keys ignored)."""
        return cls(
            int(data["id"]),
            str(data["host"]),
            str(data["address"]),
            int(data["index"]),
            tuple(data["roles"]),
            int(data["client_port"]),
            int(data["internal_port"]),
            int(data["controller_port"]),
        )


def _host_part(address: str) -> str:
    try:
        if ipaddress.ip_address(address).version == 6:
            return f"[{address}]"
    except ValueError:
        pass
    return address


def host_nodes(host: str, hostvars: Mapping[str, Any]) -> list[Node]:
    """The nodes ``host`` runs, from its ``kafka_node_ids``, ``kafka_process_roles`` and the
    port bases; :class:`PlanError` names the host and the variable when one is unusable."""
    where = f"host {host}"
    raw_ids = hostvars.get(NODE_IDS_VAR)
    if raw_ids is None:
        raise PlanError(
            f"{where} is in group {GROUP} but sets no {NODE_IDS_VAR}: list the KRaft node ids it "
            f"runs, e.g. {NODE_IDS_VAR}: [1] (ids are permanent: never renumber a node)"
        )
    if isinstance(raw_ids, str | bytes) or not isinstance(raw_ids, Sequence) or not raw_ids:
        raise PlanError(
            f"{where}: {NODE_IDS_VAR} must be a non-empty list of node ids, not {raw_ids!r}"
        )
    ids = []
    for raw in raw_ids:
        value = whole_number(raw)
        if value is None or not 0 <= value <= NODE_ID_MAX:
            raise PlanError(
                f"{where}: {NODE_IDS_VAR} value {raw!r} is not a node id (a whole number "
                f"0-{NODE_ID_MAX})"
            )
        ids.append(value)
    roles = hostvars.get(ROLES_VAR, list(DEFAULT_ROLES))
    if (
        isinstance(roles, str | bytes)
        or not isinstance(roles, Sequence)
        or not roles
        or any(role not in ROLES for role in roles)
        or len(set(roles)) != len(roles)
    ):
        raise PlanError(
            f"{where}: {ROLES_VAR} must be a list of broker and/or controller, not {roles!r}"
        )
    bases = {}
    for listener, (variable, default) in PORT_BASE_VARS.items():
        base = whole_number(hostvars.get(variable, default))
        if base is None or base < 1 or base + len(ids) - 1 > PORT_MAX:
            raise PlanError(
                f"{where}: {variable} {hostvars.get(variable)!r} is not a port that leaves room "
                f"for {len(ids)} node(s) ({listener} listener on {variable} + 0..{len(ids) - 1})"
            )
        bases[listener] = base
    address = str(hostvars.get("ansible_host") or host)
    return [
        Node(
            id=node_id,
            host=host,
            address=address,
            index=index,
            roles=tuple(role for role in ROLES if role in roles),
            client_port=bases["client"] + index,
            internal_port=bases["internal"] + index,
            controller_port=bases["controller"] + index,
        )
        for index, node_id in enumerate(ids)
    ]


def nodes(hosts: Iterable[str], hostvars: Mapping[str, Mapping[str, Any]]) -> list[Node]:
    """Every node of the cluster (the hosts of group kafka), ordered by node id."""
    found = []
    for host in dict.fromkeys(hosts):
        found.extend(host_nodes(host, hostvars.get(host) or {}))
    return sorted(found, key=lambda node: node.id)


def quorum_voters(items: Iterable[Node]) -> str:
    """``controller.quorum.voters``: ``id@address:port`` of every controller."""
    return ",".join(f"{n.id}@{n.endpoint('controller')}" for n in items if n.is_controller)


def bootstrap_servers(items: Iterable[Node], listener: str = "client") -> str:
    """``address:port`` of every broker's ``listener``, comma-separated."""
    return ",".join(n.endpoint(listener) for n in items if n.is_broker)


# --- topics -----------------------------------------------------------------------------------


def topic_specs(
    raw_topics: Any, replication_factor: int, min_insync_replicas: int
) -> list[dict[str, Any]]:
    """Normalise ``kafka_topics``: every entry gets its replication factor, and
    ``min.insync.replicas`` in its configs (the cluster's unless the entry sets its own);
    config values become strings. :class:`PlanError` names the entry when one is unusable."""
    if raw_topics is None:
        return []
    if isinstance(raw_topics, str | bytes | Mapping) or not isinstance(raw_topics, Sequence):
        raise PlanError(f"{TOPICS_VAR} must be a list of topics, not {raw_topics!r}")
    specs = []
    for position, entry in enumerate(raw_topics):
        label = f"{TOPICS_VAR}[{position}]"
        if not isinstance(entry, Mapping) or not entry.get("name"):
            raise PlanError(f"{label} needs at least a name and partitions, not {entry!r}")
        name = str(entry["name"])
        label = f"{TOPICS_VAR} entry {name}"
        unknown = set(entry) - {"name", "partitions", "replication_factor", "configs"}
        if unknown:
            raise PlanError(
                f"{label}: unknown key(s) {', '.join(sorted(unknown))} (known: name, "
                f"partitions, replication_factor, configs)"
            )
        partitions = whole_number(entry.get("partitions"))
        if partitions is None or partitions < 1:
            raise PlanError(
                f"{label}: partitions is {entry.get('partitions')!r}: set a whole number >= 1"
            )
        factor = whole_number(entry.get("replication_factor", replication_factor))
        if factor is None or factor < 1:
            raise PlanError(
                f"{label}: replication_factor is {entry.get('replication_factor')!r}: set a "
                f"whole number >= 1"
            )
        configs = entry.get("configs") or {}
        if not isinstance(configs, Mapping):
            raise PlanError(f"{label}: configs must be a mapping of topic settings")
        configs = {str(k): _config_value(v) for k, v in configs.items()}
        configs.setdefault("min.insync.replicas", str(min_insync_replicas))
        specs.append(
            {
                "name": name,
                "partitions": partitions,
                "replication_factor": factor,
                "configs": dict(sorted(configs.items())),
            }
        )
    return specs


def _config_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def cluster_problems(
    items: Sequence[Node],
    raw_topics: Any,
    replication_factor: Any = DEFAULT_REPLICATION_FACTOR,
    min_insync_replicas: Any = DEFAULT_MIN_INSYNC_REPLICAS,
) -> list[str]:
    """Everything about the whole cluster that would make it fail, one line per problem."""
    problems = []
    duplicates = {
        node_id: sorted({n.host for n in items if n.id == node_id})
        for node_id, count in Counter(n.id for n in items).items()
        if count > 1
    }
    for node_id, hosts in sorted(duplicates.items()):
        problems.append(
            f"group {GROUP}: node id {node_id} is used more than once (on {', '.join(hosts)}): "
            f"give every node its own id in {NODE_IDS_VAR}"
        )
    controllers = [n for n in items if n.is_controller]
    brokers = [n for n in items if n.is_broker]
    if items and not controllers:
        problems.append(
            f"group {GROUP}: no node is a controller: give an odd number of nodes (3 or 5) the "
            f"controller role in {ROLES_VAR}"
        )
    elif len(controllers) % 2 == 0 and controllers:
        ids = ", ".join(str(n.id) for n in controllers)
        problems.append(
            f"group {GROUP}: {len(controllers)} KRaft controllers (nodes {ids}): the quorum "
            f"needs an odd number (3 or 5) to keep a majority; add or remove a controller "
            f"({ROLES_VAR})"
        )
    if items and not brokers:
        problems.append(
            f"group {GROUP}: no node is a broker: give nodes the broker role in {ROLES_VAR}"
        )
    factor = whole_number(replication_factor)
    min_isr = whole_number(min_insync_replicas)
    if factor is None or factor < 1:
        problems.append(
            f"{REPLICATION_FACTOR_VAR} is {replication_factor!r}: set a whole number >= 1 "
            f"(the study: 3)"
        )
    if min_isr is None or min_isr < 1:
        problems.append(
            f"{MIN_INSYNC_VAR} is {min_insync_replicas!r}: set a whole number >= 1 (the study: 2)"
        )
    if factor is None or min_isr is None or factor < 1 or min_isr < 1:
        return problems
    if brokers and factor > len(brokers):
        problems.append(
            f"{REPLICATION_FACTOR_VAR} {factor} is larger than the {len(brokers)} broker(s) of "
            f"group {GROUP}: lower it or add brokers"
        )
    if min_isr > factor:
        problems.append(
            f"{MIN_INSYNC_VAR} {min_isr} is larger than {REPLICATION_FACTOR_VAR} {factor}: no "
            f"write could succeed with acks=all; keep it below the replication factor (the "
            f"study: 2 of 3)"
        )
    try:
        specs = topic_specs(raw_topics, factor, min_isr)
    except PlanError as err:
        return [*problems, str(err)]
    for name, count in Counter(spec["name"] for spec in specs).items():
        if count > 1:
            problems.append(f"{TOPICS_VAR}: topic {name} is declared {count} times: keep one")
    for spec in specs:
        name, spec_factor = spec["name"], spec["replication_factor"]
        # A topic on the cluster's settings shares their problems, reported once above.
        if brokers and spec_factor > len(brokers) and spec_factor != factor:
            problems.append(
                f"{TOPICS_VAR} entry {name}: replication_factor {spec_factor} is larger than the "
                f"{len(brokers)} broker(s): lower it or add brokers"
            )
        topic_min_isr = whole_number(spec["configs"]["min.insync.replicas"])
        inherited = (spec_factor, topic_min_isr) == (factor, min_isr)
        if not inherited and (topic_min_isr is None or topic_min_isr > spec_factor):
            problems.append(
                f"{TOPICS_VAR} entry {name}: min.insync.replicas "
                f"{spec['configs']['min.insync.replicas']} is larger than its replication "
                f"factor {spec_factor}: lower it"
            )
    return problems


def port_problems(items: Sequence[Node], others: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Ports used twice on a host: between the nodes' listeners, or with ``others``
    (host -> {service description: port})."""
    problems = []
    per_host: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for node in items:
        for listener in PORT_BASE_VARS:
            per_host[node.host].append(
                (f"kafka node {node.id} {listener} listener", getattr(node, f"{listener}_port"))
            )
    for host, used in sorted(per_host.items()):
        used = used + [(name, port) for name, port in (others.get(host) or {}).items()]
        owners: dict[int, list[str]] = defaultdict(list)
        for name, port in used:
            owners[port].append(name)
        for port, names in sorted(owners.items()):
            # collisions among the other services are theirs to report
            if len(names) > 1 and any(name.startswith("kafka node ") for name in names):
                problems.append(
                    f"host {host}: port {port} is used by {' and '.join(names)}: move "
                    f"{', '.join(v for v, _ in PORT_BASE_VARS.values())} clear of each other "
                    f"and of the host's other services"
                )
    return problems


# --- sizing -----------------------------------------------------------------------------------


def sizing(
    vcpus: int,
    memory_mb: int,
    nodes_on_host: int,
    *,
    heap_share: float = 0.25,
    heap_min_mb: int = 512,
    heap_max_mb: int = 6144,
) -> dict[str, int]:
    """Threads and heap for one node, from the host's vCPUs and memory shared by the
    ``nodes_on_host`` nodes there. The heap is ``heap_share`` of the node's memory within
    [heap_min_mb, heap_max_mb] (Kafka wants the rest as page cache; 6 GiB is the usual
    ceiling); thread pools follow the node's share of the vCPUs."""
    nodes_on_host = max(1, int(nodes_on_host))
    share = max(1.0, int(vcpus) / nodes_on_host)
    heap = int(int(memory_mb) * heap_share / nodes_on_host)
    return {
        "heap_mb": max(heap_min_mb, min(heap_max_mb, heap)),
        "num_network_threads": max(3, min(16, math.ceil(share))),
        "num_io_threads": max(8, min(32, math.ceil(2 * share))),
        "num_replica_fetchers": max(1, min(4, math.ceil(share / 2))),
        "num_recovery_threads_per_data_dir": max(1, min(8, math.ceil(share / 2))),
        "background_threads": max(4, min(10, math.ceil(share))),
    }


# --- cluster id -------------------------------------------------------------------------------


def new_cluster_id() -> str:
    """A random cluster id as ``kafka-storage random-uuid`` prints it: 16 random bytes,
    URL-safe base64 without padding, never starting with '-'."""
    while True:
        text = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def parse_properties(text: str) -> dict[str, str]:
    """``key=value`` lines of a Java properties file such as meta.properties (comments and
    blank lines skipped; no continuation lines, which meta.properties never has)."""
    result = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        key, _, value = line.partition("=")
        result[key.strip()] = value.strip()
    return result


def cluster_id(found: Mapping[str, str | None], configured: str | None, candidate: str) -> str:
    """The cluster id to use: ``configured`` (``kafka_cluster_id``) if set, else the one the
    hosts agree on (``found``: where -> id read there, None where there was nothing), else
    ``candidate`` (new). :class:`PlanError` when they disagree: formatting a node under
    another id would split the cluster."""
    seen: dict[str, list[str]] = defaultdict(list)
    for where, value in found.items():
        if value:
            seen[value].append(where)
    if configured:
        wrong = {value: places for value, places in seen.items() if value != configured}
        if wrong:
            detail = "; ".join(f"{v} in {', '.join(sorted(p))}" for v, p in sorted(wrong.items()))
            raise PlanError(
                f"kafka_cluster_id is {configured} but the hosts hold another id ({detail}): "
                f"set kafka_cluster_id to the id the cluster was formatted with, or wipe those "
                f"nodes' data directories on purpose"
            )
        return configured
    if len(seen) > 1:
        detail = "; ".join(f"{v} in {', '.join(sorted(p))}" for v, p in sorted(seen.items()))
        raise PlanError(
            f"the kafka hosts hold different cluster ids ({detail}): the nodes were formatted "
            f"for different clusters; set kafka_cluster_id to the right one and wipe the data "
            f"directories of the nodes that hold another"
        )
    return next(iter(seen), candidate)


# --- certificates and restarts ----------------------------------------------------------------


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def tls_subjects(
    hosts: Iterable[str], hostvars: Mapping[str, Mapping[str, Any]], extra: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """What each host's certificate must name: its inventory name, its ``ansible_host`` and
    ``extra`` (kafka_tls_extra_sans), split into DNS names and IP addresses. Hosts that bring
    bring their own certificate (``kafka_tls_cert_file`` and ``kafka_tls_key_file``, controller
    paths) carry them as ``cert`` and ``key``, to be checked rather than issued."""
    subjects = []
    for host in dict.fromkeys(hosts):
        variables = hostvars.get(host) or {}
        names = [host, str(variables.get("ansible_host") or host), *extra]
        names = list(dict.fromkeys(str(name) for name in names))
        subject: dict[str, Any] = {
            "name": host,
            "dns_names": [n for n in names if not _is_ip(n)],
            "ip_addresses": [n for n in names if _is_ip(n)],
        }
        if variables.get("kafka_tls_cert_file"):
            subject["cert"] = variables["kafka_tls_cert_file"]
            subject["key"] = variables.get("kafka_tls_key_file") or ""
        subjects.append(subject)
    return subjects


def changed_nodes(
    items: Sequence[Mapping[str, Any]],
    existed: Sequence[Mapping[str, Any]],
    results: Sequence[Sequence[Mapping[str, Any]]],
    host_changed: bool,
    deferred: Sequence[Mapping[str, Any]] = (),
) -> list[Mapping[str, Any]]:
    """The nodes to restart: those configured before this run (``existed``: stat results
    looped over the nodes) whose own files changed (``results``: lists of template results
    looped with ``loop_var: kafka_node``) or whose host-wide files did (``host_changed``), and
    those an earlier run left a restart-pending mark on (``deferred``: stat results of the
    marks, looped over the nodes)."""
    configured = {r["item"]["id"] for r in existed if (r.get("stat") or {}).get("exists")}
    marked = {r["item"]["id"] for r in deferred if (r.get("stat") or {}).get("exists")}
    touched = {r["kafka_node"]["id"] for result in results for r in result if r.get("changed")}
    return [
        node
        for node in items
        if node["id"] in configured
        and (host_changed or node["id"] in touched or node["id"] in marked)
    ]
