"""Inventory checks that run before any host is touched (STYLE.md 7).

``ansible/playbooks/validate.yml`` runs first in ``site.yml``; its action plugin hands the
inventory's ``groups`` and templated ``hostvars`` to :func:`validate`, which runs every check
and returns every problem at once, each naming the host or group, the variable and the fix.

A check is a small function from :class:`Inventory` to problem strings, registered with
:func:`check` together with the host variables it reads (the plugin templates only those).
A role adds its own rules the same way, e.g.::

    @check("kafka_controllers", reads=("kafka_process_roles",))
    def _odd_kraft_controllers(inventory: Inventory) -> list[str]: ...
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sluice_infra import kafka_topology, postgresql_topology, redis_topology
from sluice_infra.secrets import PLACEHOLDER, required_secrets
from sluice_infra.settings import role_default

#: Where an inventory keeps its vault, as sluice_infra.secrets.vault_path() writes it.
VAULT_FILE = "group_vars/all/vault.yml"

#: Groups every inventory must define with at least one host: one per service placement.
REQUIRED_GROUPS = (
    "citus_coordinator",
    "citus_workers",
    "kafka",
    "redis_cluster",
    "sluice_api",
    "sluice_processor",
    "monitoring",
)

_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)


@dataclass(frozen=True)
class Inventory:
    """An Ansible inventory as plain data: ``groups`` (group -> host names) and ``hostvars``
    (host -> the variables the checks read, already templated)."""

    groups: Mapping[str, Sequence[str]]
    hostvars: Mapping[str, Mapping[str, Any]]

    @property
    def hosts(self) -> list[str]:
        """Every host named anywhere: in ``all``, in any group or in ``hostvars``."""
        names = set(self.hostvars)
        for members in self.groups.values():
            names.update(members)
        return sorted(names)

    def members(self, group: str) -> list[str]:
        return list(dict.fromkeys(self.groups.get(group) or ()))

    def var(self, host: str, name: str, default: Any = None) -> Any:
        return (self.hostvars.get(host) or {}).get(name, default)

    def service_groups_of(self, host: str) -> list[str]:
        return [group for group in REQUIRED_GROUPS if host in self.members(group)]


@dataclass(frozen=True)
class Check:
    name: str
    reads: frozenset[str]
    run: Callable[[Inventory], Iterable[str]]


#: Every check, in the order their problems are reported.
CHECKS: list[Check] = []


def check(name: str, reads: Iterable[str] = ()) -> Callable:
    """Register a check named ``name`` that reads the host variables ``reads``."""

    def register(func: Callable[[Inventory], Iterable[str]]) -> Callable:
        CHECKS.append(Check(name, frozenset(reads), func))
        return func

    return register


def variables_read(checks: Iterable[Check] | None = None) -> frozenset[str]:
    """The host variables the checks read: all the plugin needs to template."""
    return frozenset().union(*(c.reads for c in (CHECKS if checks is None else checks)))


def validate(
    groups: Mapping[str, Sequence[str]],
    hostvars: Mapping[str, Mapping[str, Any]],
    *,
    skip: Collection[str] = (),
) -> list[str]:
    """Run every check (but those named in ``skip``); return all problems found, [] if none."""
    unknown = sorted(set(skip) - {c.name for c in CHECKS})
    if unknown:
        known = ", ".join(c.name for c in CHECKS)
        raise ValueError(f"unknown inventory checks to skip: {', '.join(unknown)} (known: {known})")
    inventory = Inventory(groups, hostvars)
    problems: list[str] = []
    for entry in CHECKS:
        if entry.name not in skip:
            problems.extend(entry.run(inventory))
    return problems


def _names(items: Iterable[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = sorted(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _hosts(hosts: Iterable[str]) -> str:
    hosts = sorted(hosts)
    return f"{'host' if len(hosts) == 1 else 'hosts'} {_names(hosts)}"


def _grouped(problems: Mapping[str, Iterable[str]]) -> list[str]:
    """One line per problem text, naming every host that has it: {text: hosts} -> lines."""
    return [f"{_hosts(hosts)}: {text}" for text, hosts in sorted(problems.items())]


# --- groups -----------------------------------------------------------------------------------


@check("required_groups")
def _required_groups(inventory: Inventory) -> list[str]:
    problems = []
    for group in REQUIRED_GROUPS:
        if group not in inventory.groups:
            problems.append(
                f"group {group} is missing: add it to hosts.yml under all.children, "
                f"with at least one host"
            )
        elif not inventory.members(group):
            problems.append(
                f"group {group} has no hosts: add at least one host under "
                f"all.children.{group}.hosts in hosts.yml"
            )
    return problems


@check("shared_settings", reads=("kafka_topics",))
def _shared_settings(inventory: Inventory) -> list[str]:
    """Ansible skips a group_vars link that does not resolve without a word: without the
    shared settings the firewall would open no service's port."""
    missing = [
        host for host in inventory.members("all") if inventory.var(host, "kafka_topics") is None
    ]
    if not missing:
        return []
    return [
        f"{_hosts(missing)}: the shared settings did not load (kafka_topics is not set): "
        f"group_vars/all/00-shared.yml must be a link to inventories/shared/all.yml "
        f"(in group_vars/all: ln -sf ../../../shared/all.yml 00-shared.yml)"
    ]


@check("citus_coordinator")
def _one_citus_coordinator(inventory: Inventory) -> list[str]:
    coordinators = inventory.members("citus_coordinator")
    if len(coordinators) <= 1:  # none: reported by required_groups
        return []
    return [
        f"group citus_coordinator has {len(coordinators)} hosts ({_names(coordinators)}): "
        f"exactly one host is the Citus coordinator; keep one there and move the others to "
        f"citus_workers in hosts.yml"
    ]


@check("service_hosts_in_all")
def _service_hosts_in_all(inventory: Inventory) -> list[str]:
    everyone = set(inventory.members("all"))
    problems = []
    for host in inventory.hosts:
        groups = inventory.service_groups_of(host)
        if groups and host not in everyone:
            problems.append(
                f"host {host} is in {_names(groups)} but not in all: define it under "
                f"all.hosts in hosts.yml with its ansible_host"
            )
    return problems


# --- addresses --------------------------------------------------------------------------------


def _is_dns_name(name: str) -> bool:
    name = name[:-1] if name.endswith(".") else name
    labels = name.split(".")
    return (
        0 < len(name) <= 253
        and all(_DNS_LABEL.match(label) for label in labels)
        and not labels[-1].isdigit()  # 10.77.0.300 is a bad address, not a host name
    )


def address_key(value: str) -> str | None:
    """The canonical form of an address or DNS name (None if it is neither), so that
    ``2001:db8::1`` equals ``2001:DB8:0::1`` and ``DB.example.`` equals ``db.example``."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    return value.rstrip(".").lower() if _is_dns_name(value) else None


@check("host_addresses", reads=("ansible_host",))
def _host_addresses(inventory: Inventory) -> list[str]:
    problems = []
    owners: dict[str, list[str]] = defaultdict(list)
    for host in inventory.hosts:
        address = inventory.var(host, "ansible_host")
        groups = inventory.service_groups_of(host)
        where = f" (in {_names(groups)})" if groups else ""
        if address is None or address == "":
            problems.append(
                f"host {host}{where}: ansible_host is not set: add ansible_host: <IPv4/IPv6 "
                f"address or DNS name> under all.hosts.{host} in hosts.yml"
            )
            continue
        key = address_key(address) if isinstance(address, str) else None
        if key is None:
            problems.append(
                f"host {host}: ansible_host {address!r} is neither an IPv4/IPv6 address nor a "
                f"DNS name: set the machine's address under all.hosts.{host} in hosts.yml"
            )
            continue
        owners[key].append(host)
    for key, hosts in sorted(owners.items()):
        if len(hosts) > 1:
            problems.append(
                f"{_hosts(hosts)} share ansible_host {key}: give each host its own address "
                f"in hosts.yml"
            )
    return problems


# --- firewall ---------------------------------------------------------------------------------


def cidr_problem(value: Any) -> str | None:
    """Why ``value`` is not a network in CIDR notation (None if it is)."""
    if not isinstance(value, str):
        return f"{value!r} is not a string"
    try:
        ipaddress.ip_network(value)
    except ValueError:
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value!r} is not a CIDR"
        address = value.split("/")[0]
        return (
            f"{value!r} has host bits set: write {network} for the network or "
            f"{address}/{network.max_prefixlen} for the one address"
        )
    return None


@check("ssh_sources", reads=("common_firewall_ssh_sources",))
def _ssh_sources(inventory: Inventory) -> list[str]:
    variable = "common_firewall_ssh_sources"
    fix = "set it in group_vars/all/main.yml, e.g. [10.77.0.1/32, 2001:db8::/64]"
    problems: dict[str, list[str]] = defaultdict(list)
    for host in inventory.members("all") or inventory.hosts:
        sources = inventory.var(host, variable)
        if sources is None:
            problems[f"{variable} is not set: the firewall would shut SSH; {fix}"].append(host)
        elif isinstance(sources, str) or not isinstance(sources, Sequence):
            problems[f"{variable} must be a list of CIDRs, not {sources!r}; {fix}"].append(host)
        elif not sources:
            problems[f"{variable} is empty: the firewall would shut SSH; {fix}"].append(host)
        else:
            for source in sources:
                reason = cidr_problem(source)
                if reason:
                    problems[f"{variable} value {reason}; {fix}"].append(host)
    return _grouped(problems)


# --- secrets ----------------------------------------------------------------------------------


def _vault_file(inventory: Inventory, host: str) -> str:
    """The host's vault, relative to the current folder when it is inside it."""
    directory = inventory.var(host, "inventory_dir")
    if not directory:
        return "inventories/<env>/group_vars/all/vault.yml"
    # Ansible runs from the repository root: name its inventories as the README does.
    relative = os.path.relpath(directory)
    return os.path.join(directory if relative.startswith("..") else relative, VAULT_FILE)


def _vault_fix(inventory: Inventory, host: str, *, whole_vault: bool) -> str:
    """How to add secrets: the lab generates its vault, production's is written by hand."""
    vault = _vault_file(inventory, host)
    if inventory.var(host, "lab_subnet") is not None:
        inventory_dir = vault.removesuffix("/" + VAULT_FILE)
        return (
            f"run `make lab-vault` (.venv/bin/python -m sluice_infra.secrets ensure "
            f"--inventory {inventory_dir} --password-file .lab/vault-pass)"
        )
    if whole_vault:
        return f"create it with `ansible-vault create {vault}` (keys: vault.yml.example)"
    return f"add it with `ansible-vault edit {vault}` (keys: vault.yml.example)"


@check("vault_secrets", reads=(*required_secrets(), "inventory_dir", "lab_subnet"))
def _vault_secrets(inventory: Inventory) -> list[str]:
    keys = required_secrets()
    problems: dict[str, list[str]] = defaultdict(list)
    for host in inventory.members("all") or inventory.hosts:
        missing = [key for key in keys if inventory.var(host, key) in (None, "")]
        if len(missing) == len(keys):
            text = (
                f"none of the {len(keys)} vault secrets (vault_<service>_<user>_password, see "
                f"vault.yml.example) is defined: the vault is missing; "
                f"{_vault_fix(inventory, host, whole_vault=True)}"
            )
            problems[text].append(host)
            continue
        fix = _vault_fix(inventory, host, whole_vault=False)
        for key in missing:
            problems[f"vault secret {key} is not defined: {fix}"].append(host)
        for key in keys:
            if inventory.var(host, key) == PLACEHOLDER:
                text = (
                    f"vault secret {key} is still the example value {PLACEHOLDER}: set a "
                    f"random value with `ansible-vault edit {_vault_file(inventory, host)}`"
                )
                problems[text].append(host)
    return _grouped(problems)


# --- redis cluster ----------------------------------------------------------------------------

REDIS_GROUP = "redis_cluster"

#: Ports role `common` opens on every host: variable -> (service, default). The defaults are
#: the role's own (role defaults are not part of hostvars).
COMMON_PORTS = {
    "common_ssh_port": ("ssh", role_default("common", "common_ssh_port")),
    "common_node_exporter_port": (
        "node_exporter",
        role_default("common", "common_node_exporter_port"),
    ),
}

_REDIS_SETTINGS = (
    redis_topology.COUNT_VAR,
    redis_topology.PORT_BASE_VAR,
    redis_topology.REPLICAS_VAR,
    "ansible_host",
)
#: Where the role runs one prometheus-redis-exporter per instance: base + i (default: the
#: role's).
REDIS_EXPORTER_PORT_BASE = (
    "redis_cluster_exporter_port_base",
    role_default("redis_cluster", "redis_cluster_exporter_port_base"),
)
_REDIS_FIX_MASTERS = f"raise {redis_topology.COUNT_VAR} or add hosts to {REDIS_GROUP}"


@dataclass(frozen=True)
class _RedisLayout:
    """The redis_cluster group's instances and its replicas per master."""

    instances: list[redis_topology.Instance]
    replicas: int

    def counts(self) -> str:
        """'app: 2, db: 2, stream: 2': instances per host."""
        per_host: dict[str, int] = defaultdict(int)
        for item in self.instances:
            per_host[item.host] += 1
        return ", ".join(f"{host}: {count}" for host, count in sorted(per_host.items()))


def _redis_replicas(inventory: Inventory) -> dict[int | str, list[str]]:
    """{redis_cluster_replicas: the hosts of redis_cluster with it}; a value that is not a
    whole number >= 0 is keyed by its repr."""
    values: dict[int | str, list[str]] = defaultdict(list)
    for host in inventory.members(REDIS_GROUP):
        raw = inventory.var(host, redis_topology.REPLICAS_VAR, redis_topology.DEFAULT_REPLICAS)
        value = redis_topology.whole_number(raw)
        values[repr(raw) if value is None or value < 0 else value].append(host)
    return values


def _redis_layout(inventory: Inventory) -> _RedisLayout | None:
    """The layout, or None when redis_cluster is empty or a setting is unusable (the check
    redis_cluster_settings says which)."""
    hosts = inventory.members(REDIS_GROUP)
    replicas = list(_redis_replicas(inventory))
    if not hosts or len(replicas) != 1 or not isinstance(replicas[0], int):
        return None
    try:
        return _RedisLayout(redis_topology.instances(hosts, inventory.hostvars), replicas[0])
    except redis_topology.PlanError:
        return None


@check("redis_cluster_settings", reads=_REDIS_SETTINGS)
def _redis_settings(inventory: Inventory) -> list[str]:
    problems = []
    for host in inventory.members(REDIS_GROUP):
        try:
            redis_topology.instances([host], inventory.hostvars)
        except redis_topology.PlanError as err:
            problems.append(f"{err} (in host_vars/{host}.yml or group_vars)")
    variable = redis_topology.REPLICAS_VAR
    replicas = sorted(_redis_replicas(inventory).items(), key=lambda pair: str(pair[0]))
    for value, hosts in replicas:
        if not isinstance(value, int):
            problems.append(
                f"{_hosts(hosts)}: {variable} is {value}: set a whole number >= 0 (replicas "
                f"per master, e.g. 1) in group_vars/all/main.yml"
            )
    if len(replicas) > 1:
        found = "; ".join(f"{value} on {_names(hosts)}" for value, hosts in replicas)
        problems.append(
            f"group {REDIS_GROUP}: {variable} differs between its hosts ({found}): it is one "
            f"setting for the whole cluster; set it once in group_vars/all/main.yml"
        )
    return problems


@check("redis_cluster_masters", reads=_REDIS_SETTINGS)
def _redis_masters(inventory: Inventory) -> list[str]:
    layout = _redis_layout(inventory)
    if layout is None:
        return []
    total, replicas = len(layout.instances), layout.replicas
    masters = total // (replicas + 1)
    if masters >= redis_topology.MIN_MASTERS:
        return []
    needed = redis_topology.MIN_MASTERS * (replicas + 1)
    return [
        f"group {REDIS_GROUP}: {total} instances ({redis_topology.COUNT_VAR} per host: "
        f"{layout.counts()}) with {redis_topology.REPLICAS_VAR} {replicas} make {masters} "
        f"master(s); Redis Cluster needs at least {redis_topology.MIN_MASTERS} masters, i.e. "
        f"{needed} instances: {_REDIS_FIX_MASTERS}"
    ]


@check("redis_cluster_replica_count", reads=_REDIS_SETTINGS)
def _redis_replica_count(inventory: Inventory) -> list[str]:
    layout = _redis_layout(inventory)
    if layout is None:
        return []
    total, replicas = len(layout.instances), layout.replicas
    group = replicas + 1
    left = total % group
    if not left:
        return []
    return [
        f"group {REDIS_GROUP}: {total} instances ({redis_topology.COUNT_VAR} per host: "
        f"{layout.counts()}) are not a multiple of {group} (a master and its {replicas} "
        f"replica(s), {redis_topology.REPLICAS_VAR} {replicas}): {left} would be replicas that "
        f"cannot be placed; change {redis_topology.COUNT_VAR} so the total is a multiple of "
        f"{group} (e.g. {total - left} or {total - left + group}), or change "
        f"{redis_topology.REPLICAS_VAR}"
    ]


@check("redis_cluster_ports", reads=(*_REDIS_SETTINGS, *COMMON_PORTS, REDIS_EXPORTER_PORT_BASE[0]))
def _redis_ports(inventory: Inventory) -> list[str]:
    problems = []
    for host in inventory.members(REDIS_GROUP):
        try:
            items = redis_topology.instances([host], inventory.hostvars)
        except redis_topology.PlanError:
            continue  # reported by redis_cluster_settings
        others = {}
        for variable, (service, default) in COMMON_PORTS.items():
            port = redis_topology.whole_number(inventory.var(host, variable, default))
            if port is not None:
                others[f"{service} ({variable})"] = port
        variable, default = REDIS_EXPORTER_PORT_BASE
        exporters = redis_topology.whole_number(inventory.var(host, variable, default))
        if exporters is not None:
            for index, item in enumerate(items):
                others[f"the exporter of redis instance {item.port} ({variable})"] = (
                    exporters + index
                )
        first, last = items[0].port, items[-1].port
        fix = (
            f"set {redis_topology.PORT_BASE_VAR} for host {host} (now {first}: ports "
            f"{first}-{last}, cluster bus ports {items[0].bus_port}-{items[-1].bus_port}) "
            f"clear of it, or move the other service's port"
        )
        problems += [
            f"{text}: {fix}" for text in redis_topology.port_collisions(items, {host: others})
        ]
    return problems


@check("redis_cluster_anti_affinity", reads=_REDIS_SETTINGS)
def _redis_anti_affinity(inventory: Inventory) -> list[str]:
    layout = _redis_layout(inventory)
    if layout is None or not redis_topology.anti_affinity_possible(
        layout.instances, layout.replicas
    ):
        return []
    try:
        entries = redis_topology.plan(layout.instances, layout.replicas)
    except redis_topology.PlanError:
        return []  # reported by redis_cluster_masters or redis_cluster_replica_count
    return [
        f"group {REDIS_GROUP}: {violation}, although the group has several hosts: spread the "
        f"instances more evenly ({redis_topology.COUNT_VAR} per host: {layout.counts()}) so "
        f"that no host holds more than its share"
        for violation in redis_topology.anti_affinity_violations(entries)
    ]


# --- kafka ------------------------------------------------------------------------------------

_KAFKA_SETTINGS = (
    kafka_topology.NODE_IDS_VAR,
    kafka_topology.ROLES_VAR,
    *(variable for variable, _ in kafka_topology.PORT_BASE_VARS.values()),
    "ansible_host",
)
_KAFKA_CLUSTER_SETTINGS = (
    kafka_topology.TOPICS_VAR,
    kafka_topology.REPLICATION_FACTOR_VAR,
    kafka_topology.MIN_INSYNC_VAR,
)


def _kafka_nodes(inventory: Inventory) -> list[kafka_topology.Node]:
    """The nodes of every host whose settings are usable (kafka_settings reports the rest)."""
    found = []
    for host in inventory.members(kafka_topology.GROUP):
        try:
            found += kafka_topology.host_nodes(host, inventory.hostvars.get(host) or {})
        except kafka_topology.PlanError:
            continue
    return found


@check("kafka_settings", reads=_KAFKA_SETTINGS)
def _kafka_settings(inventory: Inventory) -> list[str]:
    problems = []
    for host in inventory.members(kafka_topology.GROUP):
        try:
            kafka_topology.host_nodes(host, inventory.hostvars.get(host) or {})
        except kafka_topology.PlanError as err:
            problems.append(f"{err} (in hosts.yml, host_vars/{host}.yml or group_vars)")
    return problems


@check("kafka_cluster", reads=(*_KAFKA_SETTINGS, *_KAFKA_CLUSTER_SETTINGS))
def _kafka_cluster(inventory: Inventory) -> list[str]:
    hosts = inventory.members(kafka_topology.GROUP)
    if not hosts:
        return []
    try:
        items = kafka_topology.nodes(hosts, inventory.hostvars)
    except kafka_topology.PlanError:
        return []  # reported by kafka_settings; the other hosts' nodes alone would miscount
    # Cluster-wide settings: one value for the whole group (group_vars), read off its first host.
    first = hosts[0]
    return kafka_topology.cluster_problems(
        items,
        inventory.var(first, kafka_topology.TOPICS_VAR),
        inventory.var(
            first,
            kafka_topology.REPLICATION_FACTOR_VAR,
            kafka_topology.DEFAULT_REPLICATION_FACTOR,
        ),
        inventory.var(
            first, kafka_topology.MIN_INSYNC_VAR, kafka_topology.DEFAULT_MIN_INSYNC_REPLICAS
        ),
    )


@check(
    "kafka_ports",
    reads=(*_KAFKA_SETTINGS, *_REDIS_SETTINGS, *COMMON_PORTS, REDIS_EXPORTER_PORT_BASE[0]),
)
def _kafka_ports(inventory: Inventory) -> list[str]:
    others: dict[str, dict[str, int]] = defaultdict(dict)
    for host in inventory.members(kafka_topology.GROUP):
        for variable, (service, default) in COMMON_PORTS.items():
            port = redis_topology.whole_number(inventory.var(host, variable, default))
            if port is not None:
                others[host][f"{service} ({variable})"] = port
    for host in inventory.members(REDIS_GROUP):
        try:
            items = redis_topology.instances([host], inventory.hostvars)
        except redis_topology.PlanError:
            continue
        variable, default = REDIS_EXPORTER_PORT_BASE
        exporters = redis_topology.whole_number(inventory.var(host, variable, default))
        for index, item in enumerate(items):
            others[item.host][f"redis instance {item.port}"] = item.port
            others[item.host][f"the cluster bus of redis instance {item.port}"] = item.bus_port
            if exporters is not None:
                others[item.host][f"the exporter of redis instance {item.port} ({variable})"] = (
                    exporters + index
                )
    return kafka_topology.port_problems(_kafka_nodes(inventory), others)


# --- postgresql and citus ---------------------------------------------------------------------

_PG = postgresql_topology
_POSTGRESQL_SETTINGS = (
    _PG.CITUS_ENABLED_VAR,
    _PG.WORKERS_PER_HOST_VAR,
    _PG.PORT_BASE_VAR,
    _PG.STANDBY_HOSTS_VAR,
    _PG.CONFIG_CUSTOM_VAR,
    _PG.MEMORY_VAR,
    _PG.MEMORY_FACT,
    "ansible_host",
)


@dataclass(frozen=True)
class _PostgresqlLayout:
    """Where the clusters run: citus_enabled, the coordinator host, the usable standby hosts
    and host -> the kinds of clusters it runs."""

    citus_enabled: bool
    coordinator: str
    standbys: list[str]
    placement: dict[str, tuple[str, ...]]

    def host_vars(self, inventory: Inventory, host: str) -> Mapping[str, Any]:
        return inventory.hostvars.get(host) or {}


def _postgresql_layout(inventory: Inventory) -> _PostgresqlLayout | None:
    """The layout, or None when it cannot be made: no single coordinator (citus_coordinator,
    required_groups), citus_enabled unusable (citus) or Citus without workers
    (required_groups). Unusable standby entries are left out (postgresql_standby)."""
    coordinators = inventory.members(_PG.COORDINATOR_GROUP)
    if len(coordinators) != 1:
        return None
    coordinator = coordinators[0]
    try:
        enabled = _PG.citus_flag(
            inventory.var(coordinator, _PG.CITUS_ENABLED_VAR, _PG.DEFAULT_CITUS_ENABLED)
        )
        standbys = _PG.standby_hosts(
            inventory.var(coordinator, _PG.STANDBY_HOSTS_VAR),
            coordinator,
            inventory.hosts,
            strict=False,
        )
        placement = _PG.layout(inventory.groups, enabled, standbys)
    except _PG.PlanError:
        return None
    return _PostgresqlLayout(enabled, coordinator, standbys, placement)


def _postgresql_clusters(inventory: Inventory, layout: _PostgresqlLayout) -> list[_PG.Cluster]:
    """The clusters of every host whose settings are usable (postgresql_settings reports the
    rest); standbys when the primary's host is usable."""
    found: list[_PG.Cluster] = []
    primary = None
    for host, kinds in layout.placement.items():
        if primary is None:
            kinds = tuple(kind for kind in kinds if kind != "standby")
        try:
            items = _PG.host_clusters(host, layout.host_vars(inventory, host), kinds, primary)
        except _PG.PlanError:
            continue
        if host == layout.coordinator:
            primary = items[0]
        found += items
    return found


@check("citus", reads=(_PG.CITUS_ENABLED_VAR,))
def _citus_enabled_everywhere(inventory: Inventory) -> list[str]:
    variable = _PG.CITUS_ENABLED_VAR
    values: dict[str, bool] = {}
    unusable: dict[str, list[str]] = defaultdict(list)
    for host in inventory.members("all") or inventory.hosts:
        raw = inventory.var(host, variable, _PG.DEFAULT_CITUS_ENABLED)
        try:
            values[host] = _PG.citus_flag(raw)
        except _PG.PlanError:
            unusable[repr(raw)].append(host)
    problems = [
        f"{_hosts(hosts)}: {variable} is {raw}: set true (PostgreSQL with Citus) or false "
        f"(plain PostgreSQL) once in group_vars/all/main.yml"
        for raw, hosts in sorted(unusable.items())
    ]
    coordinators = inventory.members(_PG.COORDINATOR_GROUP)
    rest = dict(values)
    if len(coordinators) == 1 and values.get(coordinators[0]):
        without = [h for h in inventory.members(_PG.WORKERS_GROUP) if values.get(h) is False]
        if without:
            problems.append(
                f"{_hosts(without)} in group {_PG.WORKERS_GROUP}: {variable} is false while the "
                f"coordinator {coordinators[0]} has it true: a worker without Citus cannot join "
                f"the cluster; set {variable} once for every host in group_vars/all/main.yml "
                f"and drop the host's own value"
            )
            for host in without:
                del rest[host]
    if len(set(rest.values())) > 1:
        on = [host for host, value in rest.items() if value]
        off = [host for host, value in rest.items() if not value]
        problems.append(
            f"{variable} differs between hosts (true on {_names(on)}, false on {_names(off)}): "
            f"it is one setting for the whole inventory; set it once in "
            f"group_vars/all/main.yml"
        )
    return problems


@check("postgresql_standby", reads=(_PG.STANDBY_HOSTS_VAR,))
def _postgresql_standby(inventory: Inventory) -> list[str]:
    coordinators = inventory.members(_PG.COORDINATOR_GROUP)
    if len(coordinators) != 1:
        return []  # reported by required_groups or citus_coordinator
    coordinator = coordinators[0]
    return _PG.standby_problems(
        inventory.var(coordinator, _PG.STANDBY_HOSTS_VAR), coordinator, inventory.hosts
    )


@check("postgresql_settings", reads=_POSTGRESQL_SETTINGS)
def _postgresql_settings(inventory: Inventory) -> list[str]:
    layout = _postgresql_layout(inventory)
    if layout is None:
        return []
    problems = []
    for host, kinds in layout.placement.items():
        own = layout.host_vars(inventory, host)
        where = f"(in hosts.yml, host_vars/{host}.yml or group_vars)"
        try:
            workers, _ = _PG.host_settings(host, own, kinds)
        except _PG.PlanError as err:
            problems += [f"{problem} {where}" for problem in err.problems]
            continue
        count = sum(workers if kind == "worker" else 1 for kind in kinds)
        custom = own.get(_PG.CONFIG_CUSTOM_VAR)
        raw_memory = own.get(_PG.MEMORY_VAR)
        memory = _PG.whole_number(raw_memory)
        if raw_memory is not None and (memory is None or memory < 1):
            problems.append(
                f"host {host}: {_PG.MEMORY_VAR} is {raw_memory!r}: set the memory PostgreSQL may "
                f"use on this host in MB, or leave it unset for the host's own {where}"
            )
            memory = None
        if memory is None:
            memory = _PG.whole_number(own.get(_PG.MEMORY_FACT))  # facts, when cached
        if memory:
            problems += _PG.memory_problems(memory, count, custom, host=host)
        else:
            problems += _PG.config_problems(custom, host=host)
    for host in _PG.hba_hosts(inventory.groups, layout.citus_enabled, layout.standbys):
        address = inventory.var(host, "ansible_host")
        if not isinstance(address, str) or address_key(address) is None:
            continue  # reported by host_addresses
        try:
            _PG.hba_address(host, inventory.hostvars.get(host) or {})
        except _PG.PlanError as err:
            problems.append(str(err))
    return problems


@check(
    "postgresql_ports",
    reads=(
        *_POSTGRESQL_SETTINGS,
        *_KAFKA_SETTINGS,
        *_REDIS_SETTINGS,
        *COMMON_PORTS,
        REDIS_EXPORTER_PORT_BASE[0],
    ),
)
def _postgresql_ports(inventory: Inventory) -> list[str]:
    layout = _postgresql_layout(inventory)
    if layout is None:
        return []
    items = _postgresql_clusters(inventory, layout)
    others: dict[str, dict[str, int]] = defaultdict(dict)
    for host in layout.placement:
        for variable, (service, default) in COMMON_PORTS.items():
            port = _PG.whole_number(inventory.var(host, variable, default))
            if port is not None:
                others[host][f"{service} ({variable})"] = port
    for node in _kafka_nodes(inventory):
        for listener in kafka_topology.PORT_BASE_VARS:
            others[node.host][f"kafka node {node.id} {listener} listener"] = getattr(
                node, f"{listener}_port"
            )
    for host in inventory.members(REDIS_GROUP):
        try:
            instances = redis_topology.instances([host], inventory.hostvars)
        except redis_topology.PlanError:
            continue
        variable, default = REDIS_EXPORTER_PORT_BASE
        exporters = redis_topology.whole_number(inventory.var(host, variable, default))
        for index, item in enumerate(instances):
            others[host][f"redis instance {item.port}"] = item.port
            others[host][f"the cluster bus of redis instance {item.port}"] = item.bus_port
            if exporters is not None:
                others[host][f"the exporter of redis instance {item.port} ({variable})"] = (
                    exporters + index
                )
    return _PG.port_problems(items, others)
