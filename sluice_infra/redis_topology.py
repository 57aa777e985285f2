"""Redis Cluster layout: which instances run where, which are masters, who replicates whom.

The role ``redis_cluster`` runs several instances per host (group ``redis_cluster``): host
``h`` runs ``redis_cluster_instances_per_host`` instances on ports ``redis_cluster_port_base``
+ 0, 1, ...; each instance's cluster bus listens on its port + 10000. :func:`instances` lists
them, :func:`plan` decides the cluster (masters spread over the hosts, slots split evenly,
replicas kept off their master's host whenever the hosts allow it), and the inventory checks
(:mod:`sluice_infra.inventory`) refuse a layout the plan cannot build before any host is
touched. The Ansible filters in ``ansible/plugins/filter/sluice_redis.py`` wrap these.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sluice_infra.numbers import whole_number
from sluice_infra.settings import role_default

# The role's defaults, read from ansible/roles/redis_cluster/defaults/main.yml. Role defaults
# are not part of `hostvars`, so the inventory checks and the filters fall back on these when a
# host does not set its own value.
DEFAULT_INSTANCES_PER_HOST = role_default("redis_cluster", "redis_cluster_instances_per_host")
DEFAULT_PORT_BASE = role_default("redis_cluster", "redis_cluster_port_base")
DEFAULT_REPLICAS = role_default("redis_cluster", "redis_cluster_replicas")

#: Host variables a host may set to override the defaults above.
COUNT_VAR = "redis_cluster_instances_per_host"
PORT_BASE_VAR = "redis_cluster_port_base"
REPLICAS_VAR = "redis_cluster_replicas"

#: Redis Cluster's fixed numbers.
BUS_PORT_OFFSET = 10000
HASH_SLOTS = 16384
MIN_MASTERS = 3
PORT_MAX = 65535


class PlanError(ValueError):
    """The layout cannot make a Redis Cluster; the message says why and what to change."""


@dataclass(frozen=True)
class Instance:
    """One Redis server: the inventory host running it, the address it is reached at, its port."""

    host: str
    address: str
    port: int

    @property
    def endpoint(self) -> str:
        """``address:port``, as redis-cli and CLUSTER NODES write it (IPv6 too: no brackets)."""
        return f"{self.address}:{self.port}"

    @property
    def bus_port(self) -> int:
        """The cluster bus port: the instance's port + 10000 (Redis' own default)."""
        return self.port + BUS_PORT_OFFSET

    def as_dict(self) -> dict[str, Any]:
        """Plain data for Ansible: host, address, port, endpoint and bus_port."""
        return {
            "host": self.host,
            "address": self.address,
            "port": self.port,
            "endpoint": self.endpoint,
            "bus_port": self.bus_port,
        }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Instance:
        """Back from :meth:`as_dict` (extra keys ignored)."""
        return cls(str(data["host"]), str(data["address"]), int(data["port"]))


def host_settings(
    host: str, hostvars: Mapping[str, Mapping[str, Any]], default_count: int, default_port_base: int
) -> tuple[int, int]:
    """(instance count, port base) of ``host``: its own host variables, else the defaults.

    Raises PlanError naming the host, the variable and the value when they cannot work.
    """
    own = hostvars.get(host) or {}
    raw_count = own.get(COUNT_VAR, default_count)
    raw_base = own.get(PORT_BASE_VAR, default_port_base)
    count, base = whole_number(raw_count), whole_number(raw_base)
    if count is None or count < 1:
        raise PlanError(
            f"host {host}: {COUNT_VAR} is {raw_count!r}: set a whole number >= 1 "
            f"(the instances this host runs)"
        )
    if base is None or base < 1:
        raise PlanError(
            f"host {host}: {PORT_BASE_VAR} is {raw_base!r}: set a port number, e.g. "
            f"{DEFAULT_PORT_BASE}"
        )
    highest_bus = base + count - 1 + BUS_PORT_OFFSET
    if highest_bus > PORT_MAX:
        raise PlanError(
            f"host {host}: {PORT_BASE_VAR} {base} with {count} instances needs cluster bus ports "
            f"up to {highest_bus} (port + {BUS_PORT_OFFSET}), above {PORT_MAX}: set "
            f"{PORT_BASE_VAR} to at most {PORT_MAX - BUS_PORT_OFFSET - count + 1}"
        )
    return count, base


def instances(
    hosts: Sequence[str],
    hostvars: Mapping[str, Mapping[str, Any]],
    default_count: int = DEFAULT_INSTANCES_PER_HOST,
    default_port_base: int = DEFAULT_PORT_BASE,
) -> list[Instance]:
    """Every instance of ``hosts`` (e.g. ``groups['redis_cluster']``), host by host in the order
    given (duplicates once), ports ascending. A host's address is its ``ansible_host``, or its
    name when unset."""
    result = []
    for host in dict.fromkeys(hosts):
        count, base = host_settings(host, hostvars, default_count, default_port_base)
        address = str((hostvars.get(host) or {}).get("ansible_host") or host)
        result.extend(Instance(host, address, base + i) for i in range(count))
    return result


def _check_counts(total: int, raw_replicas: Any) -> tuple[int, int]:
    """(masters, replicas per master) that ``total`` instances make with ``raw_replicas``."""
    replicas = whole_number(raw_replicas)
    if replicas is None or replicas < 0:
        raise PlanError(f"{REPLICAS_VAR} is {raw_replicas!r}: set a whole number >= 0, e.g. 1")
    group = replicas + 1
    if total % group:
        raise PlanError(
            f"{total} instances cannot be split into masters with {replicas} replicas each; "
            f"use a multiple of {group} instances"
        )
    masters = total // group
    if masters < MIN_MASTERS:
        raise PlanError(f"Redis Cluster needs at least {MIN_MASTERS} masters; have {masters}")
    return masters, replicas


def _choose_masters(items: Sequence[Instance], count: int) -> list[Instance]:
    """``count`` masters, round-robin over the hosts sorted by name, ports ascending."""
    by_host: dict[str, list[Instance]] = defaultdict(list)
    for item in sorted(items, key=lambda i: (i.host, i.port)):
        by_host[item.host].append(item)
    queues = [by_host[host] for host in sorted(by_host)]
    chosen: list[Instance] = []
    depth = 0
    while len(chosen) < count:
        chosen.extend(queue[depth] for queue in queues if depth < len(queue))
        depth += 1
    return chosen[:count]


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """The 16384 hash slots split into ``masters`` contiguous ranges (first, last), as even as
    possible; the first masters take the one extra slot."""
    size, extra = divmod(HASH_SLOTS, masters)
    ranges, first = [], 0
    for index in range(masters):
        last = first + size + (1 if index < extra else 0) - 1
        ranges.append((first, last))
        first = last + 1
    return ranges


def _min_cost_flow(
    edges: list[list[int]], nodes: int, source: int, sink: int, amount: int
) -> list[list[int]]:
    """Send ``amount`` units from source to sink at least total cost (successive shortest paths,
    Bellman-Ford). ``edges`` are [from, to, capacity, cost]; returns the residual graph: per
    node, [to, capacity left, cost, index of the reverse edge]."""
    graph: list[list[list[int]]] = [[] for _ in range(nodes)]
    for start, end, capacity, cost in edges:
        graph[start].append([end, capacity, cost, len(graph[end])])
        graph[end].append([start, 0, -cost, len(graph[start]) - 1])
    for _ in range(amount):
        distance: list[int | None] = [None] * nodes
        previous: list[tuple[int, int] | None] = [None] * nodes
        distance[source] = 0
        changed = True
        while changed:
            changed = False
            for node in range(nodes):
                here = distance[node]
                if here is None:
                    continue
                for index, (end, capacity, cost, _) in enumerate(graph[node]):
                    there = distance[end]
                    if capacity > 0 and (there is None or here + cost < there):
                        distance[end] = here + cost
                        previous[end] = (node, index)
                        changed = True
        if distance[sink] is None:  # cannot happen: capacities add up by construction
            raise PlanError("internal error: replicas could not be assigned")
        node = sink
        while node != source:
            start, index = previous[node]  # type: ignore[misc]
            graph[start][index][1] -= 1
            end, _, _, reverse = graph[start][index]
            graph[end][reverse][1] += 1
            node = start
    return graph


def _assign_replicas(
    masters: Sequence[Instance], spares: Sequence[Instance], replicas: int
) -> dict[Instance, Instance]:
    """{replica: its master}, found as a least-cost flow masters -> hosts. Costs, by priority:
    a replica on its master's host; two replicas of one master on one host; then, to break
    ties the same way every time, the distance from the master's host to the replica's host
    in the sorted host list (so master on host i replicates to host i+1 first)."""
    hosts = sorted({i.host for i in [*masters, *spares]})
    spare_hosts = sorted({i.host for i in spares})
    total = len(spares)
    twin_cost = total * len(hosts) + 1  # more than every tie-break cost together
    same_host_cost = twin_cost * (total + 1)  # more than every twin cost together
    free = {host: sum(1 for i in spares if i.host == host) for host in spare_hosts}

    source, sink = 0, 1
    master_node = {index: 2 + index for index in range(len(masters))}
    host_node = {host: 2 + len(masters) + index for index, host in enumerate(spare_hosts)}
    edges: list[list[int]] = []
    for index, master in enumerate(masters):
        edges.append([source, master_node[index], replicas, 0])
        for host in spare_hosts:
            offset = (hosts.index(host) - hosts.index(master.host)) % len(hosts)
            for unit in range(min(replicas, free[host])):
                cost = offset + unit * twin_cost + (same_host_cost if host == master.host else 0)
                edges.append([master_node[index], host_node[host], 1, cost])
    for host in spare_hosts:
        edges.append([host_node[host], sink, free[host], 0])
    graph = _min_cost_flow(edges, 2 + len(masters) + len(spare_hosts), source, sink, total)

    remaining = {
        host: sorted((i for i in spares if i.host == host), key=lambda i: i.port)
        for host in spare_hosts
    }
    node_host = {node: host for host, node in host_node.items()}
    assignment: dict[Instance, Instance] = {}
    for index, master in enumerate(masters):
        for end, capacity, _, _ in graph[master_node[index]]:
            if end in node_host and capacity == 0:  # a unit edge to a host, used
                assignment[remaining[node_host[end]].pop(0)] = master
    return assignment


def plan(instances: Sequence[Instance], replicas: int = DEFAULT_REPLICAS) -> list[dict[str, Any]]:
    """The cluster to build from ``items``: one entry per instance, masters first (in slot
    order), then replicas (in the order of their masters) — the order ``redis-cli --cluster
    create`` takes them in. Each entry: host, address, port, endpoint, bus_port, role
    ('master' or 'replica'), master (its master's endpoint, None for a master) and slots
    ([first, last] for a master, None for a replica).

    Masters are spread round-robin over the hosts; every master gets ``replicas`` replicas,
    kept off its host and off each other's hosts whenever the hosts allow it. Raises
    PlanError when the instances do not make at least 3 masters with ``replicas`` each.
    """
    items = list(dict.fromkeys(instances))
    count, replicas = _check_counts(len(items), replicas)
    masters = _choose_masters(items, count)
    chosen = set(masters)
    spares = sorted((i for i in items if i not in chosen), key=lambda i: (i.host, i.port))
    assignment = _assign_replicas(masters, spares, replicas) if spares else {}

    entries = [
        {**master.as_dict(), "role": "master", "master": None, "slots": list(slots)}
        for master, slots in zip(masters, slot_ranges(len(masters)), strict=True)
    ]
    order = {master: index for index, master in enumerate(masters)}
    for replica, master in sorted(
        assignment.items(), key=lambda pair: (order[pair[1]], pair[0].host, pair[0].port)
    ):
        entries.append(
            {**replica.as_dict(), "role": "replica", "master": master.endpoint, "slots": None}
        )
    return entries


def anti_affinity_possible(instances: Iterable[Instance], replicas: int = DEFAULT_REPLICAS) -> bool:
    """Whether replicas can live on other hosts than their masters: more than one host runs
    instances (or there are no replicas at all)."""
    return replicas < 1 or len({i.host for i in instances}) > 1


def anti_affinity_violations(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """One message per replica that sits on its master's host (lost together with it)."""
    entries = list(entries)
    host_of = {e["endpoint"]: e["host"] for e in entries if e["role"] == "master"}
    return [
        f"replica {e['endpoint']} is on host {e['host']} with its master {e['master']}: "
        f"losing {e['host']} loses both"
        for e in entries
        if e["role"] == "replica" and host_of.get(e["master"]) == e["host"]
    ]


def port_collisions(
    instances: Iterable[Instance],
    other_ports: Mapping[str, Sequence[int] | Mapping[str, int]] | None = None,
) -> list[str]:
    """Ports used twice on one host: instance ports and cluster bus ports against each other,
    and against the other services' ports per host — a list (``{"stream": [9100]}``) or, to
    name them in the messages, a mapping (``{"stream": {"node_exporter": 9100}}``)."""
    users: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for item in instances:
        users[item.host][item.port].append(f"redis instance {item.port}")
        users[item.host][item.bus_port].append(f"the cluster bus of redis instance {item.port}")
    for host, ports in (other_ports or {}).items():
        named = ports.items() if isinstance(ports, Mapping) else ((None, p) for p in ports)
        for name, port in named:
            users[host][port].append(name or f"another service on port {port}")
    problems = []
    for host in sorted(users):
        for port, names in sorted(users[host].items()):
            if len(names) > 1:
                problems.append(f"host {host}: port {port} is used by both {' and '.join(names)}")
    return problems
