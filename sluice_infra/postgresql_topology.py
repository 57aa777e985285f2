"""PostgreSQL (+ Citus) layout: which clusters run where, on which ports, how they are tuned
and who may connect to them.

The roles ``postgresql`` and ``citus`` run several clusters per host (Debian's
``pg_createcluster``), each with its own port. Where they run is inventory only:

- ``citus_enabled: false`` (the lab): one cluster ``main`` (kind ``standalone``) on the host of
  group ``citus_coordinator``.
- ``citus_enabled: true`` (production): ``coordinator`` on the host of ``citus_coordinator``
  and ``citus_workers_per_host`` clusters ``worker1``..``workerN`` (host variable, default 1)
  on every host of ``citus_workers``; a host may be both (``db`` in the seed layout).
- Every host in ``postgresql_standby_hosts`` (one list for the whole inventory, default
  ``[]``) runs a streaming standby of the coordinator/main cluster, named like it, fed through
  a physical replication slot.

A host's clusters listen on ``postgresql_port_base`` (default 5432) + their index on the
host, in the order coordinator/main, workers, standby. The two install paths (PGDG 18 + Citus
13 in production, Debian's 15 without Citus in the lab) are one code path that differs only
in ``citus_enabled``.

:func:`clusters` lists the clusters, :func:`memory_settings` tunes postgresql.conf from the
host's memory and vCPUs, :func:`hba_rules` writes pg_hba.conf from the inventory. The inventory
checks (:mod:`sluice_infra.inventory`) refuse an unusable layout before any host is touched;
Ansible filters wrap the rest. SQL for Citus lives in :mod:`sluice_infra.citus_sql`.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sluice_infra.numbers import whole_number
from sluice_infra.settings import role_default

COORDINATOR_GROUP = "citus_coordinator"
WORKERS_GROUP = "citus_workers"
DATABASE = "sluice"

# The roles' defaults, read from ansible/roles/postgresql/defaults/main.yml and
# ansible/roles/citus/defaults/main.yml (role defaults are not part of `hostvars`, so the
# checks and filters fall back on these).
DEFAULT_CITUS_ENABLED = role_default("citus", "citus_enabled")
DEFAULT_PORT_BASE = role_default("postgresql", "postgresql_port_base")
DEFAULT_WORKERS_PER_HOST = role_default("citus", "citus_workers_per_host")
DEFAULT_MAX_CONNECTIONS = role_default("postgresql", "postgresql_max_connections")

CITUS_ENABLED_VAR = "citus_enabled"
WORKERS_PER_HOST_VAR = "citus_workers_per_host"
PORT_BASE_VAR = "postgresql_port_base"
STANDBY_HOSTS_VAR = "postgresql_standby_hosts"
CONFIG_CUSTOM_VAR = "postgresql_config_custom"
#: Memory PostgreSQL may use on a host, in MB; the host's own (ansible_memtotal_mb) when unset.
#: Set it where the facts overstate it (a lab machine sees its build host's memory).
MEMORY_VAR = "postgresql_memory_mb"
MEMORY_FACT = "ansible_memtotal_mb"

KINDS = ("standalone", "coordinator", "worker", "standby")
PRIMARY_NAME = {False: "main", True: "coordinator"}
PORT_MAX = 65535

# Roles of the database (the vault holds their passwords: sluice_infra.secrets.VAULT_USERS).
SUPERUSER = "postgres"
WRITER = "sluice_writer"
READER = "sluice_reader"
MONITORING = "monitoring"
REPLICATION = "replication"
#: Who connects between the Citus nodes: the coordinator runs every distributed query on the
#: workers as the user who sent it, and manages the nodes as the superuser.
CITUS_INTERNODE_USERS = (SUPERUSER, WRITER, READER, MONITORING)
#: Which inventory group's hosts connect as which user (to the coordinator/main cluster).
CLIENT_GROUPS = (("sluice_processor", WRITER), ("sluice_api", READER))
MONITORING_GROUP = "monitoring"

#: shared_preload_libraries of every cluster, after citus (when enabled).
PRELOAD_LIBRARIES = ("pg_stat_statements", "pg_partman_bgw")

#: Settings the layout owns: postgresql_config_custom must not set them.
RESERVED_SETTINGS = {
    "port": f"ports come from {PORT_BASE_VAR}",
    "shared_preload_libraries": (
        f"it is built from {CITUS_ENABLED_VAR} and the role's list of extra libraries "
        f"(citus must come first)"
    ),
    "password_encryption": "the study's authentication is scram-sha-256 only",
}

#: Settings a hot standby needs at least as high as its primary's, or it stops replaying.
HOT_STANDBY_MINIMUMS = {
    # setting: PostgreSQL's default, what a cluster runs when its conf does not set it
    "max_connections": 100,
    "max_worker_processes": 8,
    "max_wal_senders": 10,
    "max_prepared_transactions": 0,
    "max_locks_per_transaction": 64,
}

_SLOT_INVALID = re.compile(r"[^a-z0-9_]")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|kB|MB|GB|TB)?\s*$")
_UNIT_KB = {"B": 1 / 1024, "kB": 1, "MB": 1024, "GB": 1024**2, "TB": 1024**3}
#: The unit PostgreSQL reads a bare number of these settings in, in kB.
_BASE_UNIT_KB = {
    "shared_buffers": 8,
    "effective_cache_size": 8,
    "work_mem": 1,
    "maintenance_work_mem": 1,
}
_BARE_CONF_VALUE = re.compile(r"^-?[A-Za-z0-9_.]+$")
#: Room in max_worker_processes beside the parallel workers: Citus' maintenance daemon,
#: pg_partman_bgw, the logical replication launcher.
BACKGROUND_WORKER_ROOM = 8


class PlanError(ValueError):
    """The layout or a setting cannot make working PostgreSQL clusters; the message (one line
    per problem) says which host, which variable, which value and what to change."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Cluster:
    """One PostgreSQL cluster (``pg_createcluster <version> <name>``) on an inventory host."""

    host: str
    address: str
    name: str
    kind: str
    port: int
    index: int
    #: ``host:port`` (inventory host) of the cluster a standby replicates; None otherwise.
    primary: str | None = None
    #: The physical replication slot a standby streams through; None otherwise.
    slot: str | None = None
    #: The address a standby reaches its primary at; None otherwise.
    primary_address: str | None = None

    @property
    def is_standby(self) -> bool:
        return self.kind == "standby"

    @property
    def primary_host(self) -> str | None:
        return None if self.primary is None else self.primary.rpartition(":")[0]

    @property
    def primary_port(self) -> int | None:
        return None if self.primary is None else int(self.primary.rpartition(":")[2])

    def as_dict(self) -> dict[str, Any]:
        """Plain data for Ansible."""
        return {
            "host": self.host,
            "address": self.address,
            "name": self.name,
            "kind": self.kind,
            "port": self.port,
            "index": self.index,
            "primary": self.primary,
            "slot": self.slot,
            "primary_address": self.primary_address,
            "primary_host": self.primary_host,
            "primary_port": self.primary_port,
            "is_standby": self.is_standby,
        }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Cluster:
        """Back from :meth:`as_dict` (extra keys ignored)."""
        return cls(
            host=str(data["host"]),
            address=str(data["address"]),
            name=str(data["name"]),
            kind=str(data["kind"]),
            port=int(data["port"]),
            index=int(data["index"]),
            primary=None if data.get("primary") is None else str(data["primary"]),
            slot=None if data.get("slot") is None else str(data["slot"]),
            primary_address=(
                None if data.get("primary_address") is None else str(data["primary_address"])
            ),
        )


# --- settings ---------------------------------------------------------------------------------


def citus_flag(value: Any) -> bool:
    """``citus_enabled`` as a bool: true/false, or the yes/no/true/false/on/off text a
    templated inventory gives. :class:`PlanError` for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0"):
        return False
    raise PlanError(
        f"{CITUS_ENABLED_VAR} is {value!r}: set true (PostgreSQL with Citus) or false (plain "
        f"PostgreSQL, as the lab) in group_vars/all/main.yml"
    )


def _unique(items: Iterable[Any]) -> list[Any]:
    """``items`` in order, each once (unhashable ones too, as an inventory may hold)."""
    result: list[Any] = []
    for item in items:
        if item not in result:
            result.append(item)
    return result


def _members(groups: Mapping[str, Sequence[str]], group: str) -> list[str]:
    return list(dict.fromkeys(groups.get(group) or ()))


def known_hosts(
    groups: Mapping[str, Sequence[str]], hostvars: Mapping[str, Any] | None = None
) -> set[str]:
    """Every host of the inventory: in any group, or in ``hostvars``."""
    names = set(hostvars or ())
    for members in groups.values():
        names.update(members or ())
    return names


def coordinator_host(groups: Mapping[str, Sequence[str]]) -> str:
    """The host of group citus_coordinator: it runs the coordinator (Citus) or main cluster."""
    hosts = _members(groups, COORDINATOR_GROUP)
    if len(hosts) != 1:
        found = f"{len(hosts)} hosts ({', '.join(hosts)})" if hosts else "no host"
        raise PlanError(
            f"group {COORDINATOR_GROUP} has {found}: exactly one host runs the coordinator "
            f"(the main cluster without Citus); keep one there in hosts.yml and move the "
            f"others to {WORKERS_GROUP}"
        )
    return hosts[0]


def slot_name(host: str) -> str:
    """The replication slot of the standby on ``host``: ``standby_<host>`` as a slot name
    may be written (lower case letters, digits and _; at most 63 characters)."""
    return ("standby_" + _SLOT_INVALID.sub("_", host.lower()))[:63]


def standby_problems(raw: Any, primary_host: str, known: Iterable[str]) -> list[str]:
    """Why ``postgresql_standby_hosts`` (``raw``) cannot place standbys of the cluster on
    ``primary_host``, one line per problem; [] when it can."""
    where = STANDBY_HOSTS_VAR
    if raw is None:
        return []
    if isinstance(raw, str | bytes | Mapping) or not isinstance(raw, Sequence):
        return [
            f"{where} must be a list of inventory host names, not {raw!r}: e.g. "
            f"{STANDBY_HOSTS_VAR}: [app] in group_vars/all/main.yml ([] for no standby)"
        ]
    known = set(known)
    problems = []
    for entry in _unique(raw):
        if not isinstance(entry, str) or entry not in known:
            problems.append(
                f"{where} names {entry!r}, which is not a host of the inventory: add it under "
                f"all.hosts in hosts.yml (with its ansible_host) or take it off the list"
            )
        elif entry == primary_host:
            problems.append(
                f"{where} names {entry}, the host of the primary cluster (group "
                f"{COORDINATOR_GROUP}): a standby there would point at itself and survive "
                f"nothing; name another host"
            )
    slots = Counter(slot_name(h) for h in _unique(raw) if isinstance(h, str))
    for slot, count in sorted(slots.items()):
        if count > 1:
            hosts = sorted(h for h in _unique(raw) if isinstance(h, str) and slot_name(h) == slot)
            problems.append(
                f"{where}: hosts {', '.join(hosts)} would share the replication slot {slot}: "
                f"rename one of them in hosts.yml"
            )
    return problems


def standby_hosts(
    raw: Any, primary_host: str, known: Iterable[str], *, strict: bool = True
) -> list[str]:
    """The standby hosts ``postgresql_standby_hosts`` names (``raw``, None meaning none).
    With ``strict`` a problem raises :class:`PlanError`; without, unusable entries are left
    out (for checks that judge something else)."""
    known = set(known)
    problems = standby_problems(raw, primary_host, known)
    if problems and strict:
        raise PlanError(*problems)
    if raw is None or isinstance(raw, str | bytes | Mapping) or not isinstance(raw, Sequence):
        return []
    return [h for h in _unique(raw) if isinstance(h, str) and h in known and h != primary_host]


def layout(
    groups: Mapping[str, Sequence[str]], citus_enabled: bool, standbys: Sequence[str] = ()
) -> dict[str, tuple[str, ...]]:
    """host -> the kinds of clusters it runs, in port order (coordinator/standalone, worker,
    standby); hosts in the order coordinator, workers, standbys. ``standbys`` as
    :func:`standby_hosts` returns them."""
    coordinator = coordinator_host(groups)
    plan: dict[str, list[str]] = {coordinator: ["coordinator" if citus_enabled else "standalone"]}
    if citus_enabled:
        workers = _members(groups, WORKERS_GROUP)
        if not workers:
            raise PlanError(
                f"{CITUS_ENABLED_VAR} is true but group {WORKERS_GROUP} has no hosts: add the "
                f"hosts that run Citus workers under all.children.{WORKERS_GROUP}.hosts in "
                f"hosts.yml"
            )
        for host in workers:
            plan.setdefault(host, []).append("worker")
    for host in dict.fromkeys(standbys):
        if host == coordinator:
            raise PlanError(*standby_problems([host], coordinator, [host]))
        plan.setdefault(host, []).append("standby")
    return {host: tuple(kinds) for host, kinds in plan.items()}


def host_settings(host: str, own: Mapping[str, Any], kinds: Sequence[str]) -> tuple[int, int]:
    """(workers on the host, port base) for ``host`` running ``kinds`` (from :func:`layout`),
    from its ``citus_workers_per_host`` and ``postgresql_port_base``; :class:`PlanError`
    names the host, the variable and the value when they cannot work."""
    problems = []
    workers = 0
    if "worker" in kinds:
        raw = own.get(WORKERS_PER_HOST_VAR, DEFAULT_WORKERS_PER_HOST)
        value = whole_number(raw)
        if value is None or value < 1:
            problems.append(
                f"host {host}: {WORKERS_PER_HOST_VAR} is {raw!r}: set a whole number >= 1 "
                f"(the Citus worker clusters this host runs; the seed layout: 2 on db)"
            )
        else:
            workers = value
    raw_base = own.get(PORT_BASE_VAR, DEFAULT_PORT_BASE)
    base = whole_number(raw_base)
    count = sum((workers or 1) if kind == "worker" else 1 for kind in kinds)
    if base is None or base < 1:
        problems.append(
            f"host {host}: {PORT_BASE_VAR} is {raw_base!r}: set a port number, e.g. "
            f"{DEFAULT_PORT_BASE}"
        )
    elif base + count - 1 > PORT_MAX:
        problems.append(
            f"host {host}: {PORT_BASE_VAR} {base} leaves no room for its {count} cluster(s) "
            f"(ports {PORT_BASE_VAR} + 0..{count - 1}): set it to at most {PORT_MAX - count + 1}"
        )
    if problems:
        raise PlanError(*problems)
    return workers, base


def host_address(host: str, own: Mapping[str, Any]) -> str:
    """The address the host's clusters are reached at: its ansible_host, else its name."""
    return str(own.get("ansible_host") or host)


def host_clusters(
    host: str, own: Mapping[str, Any], kinds: Sequence[str], primary: Cluster | None = None
) -> list[Cluster]:
    """The clusters ``host`` runs (``kinds`` from :func:`layout`); a standby needs
    ``primary``, the coordinator/main cluster it replicates."""
    workers, base = host_settings(host, own, kinds)
    address = host_address(host, own)
    found: list[Cluster] = []
    for kind in kinds:
        if kind == "worker":
            names = [(f"worker{n}", "worker") for n in range(1, workers + 1)]
        elif kind == "standby":
            if primary is None:
                raise ValueError(f"host {host}: a standby cluster needs its primary")
            names = [(primary.name, "standby")]
        else:
            names = [(PRIMARY_NAME[kind == "coordinator"], kind)]
        for name, cluster_kind in names:
            index = len(found)
            standby = cluster_kind == "standby" and primary is not None
            found.append(
                Cluster(
                    host=host,
                    address=address,
                    name=name,
                    kind=cluster_kind,
                    port=base + index,
                    index=index,
                    primary=f"{primary.host}:{primary.port}" if standby and primary else None,
                    slot=slot_name(host) if standby else None,
                    primary_address=primary.address if standby and primary else None,
                )
            )
    return found


def clusters(
    groups: Mapping[str, Sequence[str]],
    hostvars: Mapping[str, Mapping[str, Any]],
    citus_enabled: Any,
) -> list[Cluster]:
    """Every cluster of the inventory: the coordinator/main cluster first, then the workers
    host by host (group order), then the standbys. ``postgresql_standby_hosts`` is read from
    the coordinator host's variables (one list for the whole inventory). :class:`PlanError`
    carries every problem at once."""
    enabled = citus_flag(citus_enabled)
    coordinator = coordinator_host(groups)
    own = hostvars.get(coordinator) or {}
    standbys = standby_hosts(own.get(STANDBY_HOSTS_VAR), coordinator, known_hosts(groups, hostvars))
    plan = layout(groups, enabled, standbys)
    found: list[Cluster] = []
    problems: list[str] = []
    primary: Cluster | None = None
    for host, kinds in plan.items():
        try:
            if primary is None and "standby" in kinds:
                # The primary's host has a problem (reported): judge this host's settings only.
                host_settings(host, hostvars.get(host) or {}, kinds)
                continue
            items = host_clusters(host, hostvars.get(host) or {}, kinds, primary)
        except PlanError as err:
            problems += err.problems
            continue
        if host == coordinator:
            primary = items[0]
        found += items
    if problems:
        raise PlanError(*problems)
    return found


def on_host(items: Iterable[Cluster], host: str) -> list[Cluster]:
    """The clusters of ``host``, in port order."""
    return sorted((c for c in items if c.host == host), key=lambda c: c.index)


def primary_cluster(items: Iterable[Cluster]) -> Cluster:
    """The coordinator (Citus) or main cluster."""
    for item in items:
        if item.kind in ("coordinator", "standalone"):
            return item
    raise PlanError("no coordinator or main cluster in the layout")


def workers(items: Iterable[Cluster]) -> list[Cluster]:
    """The Citus worker clusters, in layout order."""
    return [c for c in items if c.kind == "worker"]


def standbys_of(items: Iterable[Cluster], primary: Cluster) -> list[Cluster]:
    """The standbys that replicate ``primary`` (their slots must exist on it)."""
    wanted = f"{primary.host}:{primary.port}"
    return [c for c in items if c.is_standby and c.primary == wanted]


# --- postgresql.conf --------------------------------------------------------------------------


def format_size(mb: int) -> str:
    """A memory size in MB as postgresql.conf takes it: ``4GB`` when whole, else ``2730MB``."""
    return f"{mb // 1024}GB" if mb % 1024 == 0 and mb else f"{mb}MB"


def size_kb(key: str, value: Any) -> float | None:
    """A postgresql.conf memory size in kB (``4GB``, ``512MB``, ``64kB``; a bare number in the
    setting's own unit: 8kB pages for shared_buffers), or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) * _BASE_UNIT_KB.get(key, 1)
    match = _SIZE.match(str(value))
    if not match:
        return None
    number, unit = float(match.group(1)), match.group(2)
    return number * (_UNIT_KB[unit] if unit else _BASE_UNIT_KB.get(key, 1))


def _positive(name: str, value: Any) -> int:
    number = whole_number(value)
    if number is None or number < 1:
        raise PlanError(f"{name} is {value!r}: it must be a whole number >= 1")
    return number


def memory_settings(
    memory_mb: Any,
    vcpus: Any,
    clusters_on_host: Any,
    kind: str = "standalone",
    *,
    shared_buffers_share: float = 0.25,
    effective_cache_share: float = 0.75,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> dict[str, str]:
    """The study's postgresql.conf values for one cluster of kind ``kind`` on a host with
    ``memory_mb`` of memory and ``vcpus`` shared by ``clusters_on_host`` clusters, as
    strings with units. Memory: shared_buffers 25% and effective_cache_size 75% of the
    cluster's share; work_mem what is left after shared_buffers over 3 sorts per connection,
    within 4-64MB; maintenance_work_mem 1/16 of the share within 64MB-2GB. Parallelism: the
    cluster's share of the vCPUs (at least 2). WAL: 1GB/4GB, scaled down when a cluster has
    less than 4GB. Floors keep a small lab machine working. postgresql_config_custom
    overrides any of these (combine it over this dict)."""
    memory = _positive("memory (MB)", memory_mb)
    cpus = _positive("vCPUs", vcpus)
    count = _positive("clusters on the host", clusters_on_host)
    connections = _positive("max_connections", max_connections)
    if kind not in KINDS:
        raise PlanError(f"cluster kind {kind!r} is not one of {', '.join(KINDS)}")
    share = memory // count
    shared_buffers = max(32, int(share * shared_buffers_share))
    effective_cache = max(128, int(share * effective_cache_share))
    work_mem = max(4, min(64, (share - shared_buffers) // (connections * 3)))
    maintenance = max(64, min(2048, share // 16))
    max_wal = max(1024, min(4096, share // 256 * 256))
    parallel = max(2, cpus // count)
    per_gather = max(1, min(4, parallel // 2))
    settings = {
        "max_connections": str(connections),
        "shared_buffers": format_size(shared_buffers),
        "effective_cache_size": format_size(effective_cache),
        "work_mem": format_size(work_mem),
        "maintenance_work_mem": format_size(maintenance),
        "max_worker_processes": str(parallel + BACKGROUND_WORKER_ROOM),
        "max_parallel_workers": str(parallel),
        "max_parallel_workers_per_gather": str(per_gather),
        "max_parallel_maintenance_workers": str(per_gather),
        "min_wal_size": format_size(max_wal // 4),
        "max_wal_size": format_size(max_wal),
        "checkpoint_timeout": "15min",
        "checkpoint_completion_target": "0.9",
        "log_min_duration_statement": "100ms",
        "jit": "on",
        "password_encryption": "scram-sha-256",
    }
    if kind == "standby":
        settings["hot_standby"] = "on"
        settings["hot_standby_feedback"] = "on"
    return dict(sorted(settings.items()))


def standby_minimums(own: Mapping[str, Any], primary: Mapping[str, Any]) -> dict[str, Any]:
    """A standby's settings (``own``) with the ones a hot standby needs at least as high as
    its primary's (max_connections, max_worker_processes, ...) raised to ``primary``'s:
    otherwise the standby stops replaying WAL. A setting ``own`` leaves out counts as
    PostgreSQL's default, so a primary running the default adds nothing."""
    result = dict(own)
    for key, default in HOT_STANDBY_MINIMUMS.items():
        theirs, mine = whole_number(primary.get(key)), whole_number(own.get(key))
        if theirs is not None and theirs > (default if mine is None else mine):
            result[key] = str(theirs)
    return result


def kind_settings(cluster: Cluster, conf_dir: str, stanza_prefix: str) -> dict[str, str]:
    """What a cluster's kind sets by itself. A standby streams from its primary through its
    slot over TLS, its password in a passfile beside its configuration (never in this file); a
    primary archives its WAL to its pgBackRest stanza ``<stanza_prefix><cluster name>``."""
    if cluster.is_standby:
        conninfo = (
            f"host={cluster.primary_address} port={cluster.primary_port} user=replication "
            f"passfile={conf_dir}/{cluster.name}/replication.pgpass sslmode=require "
            f"application_name={cluster.slot}"
        )
        return {"primary_conninfo": conninfo, "primary_slot_name": str(cluster.slot)}
    return {
        "archive_mode": "on",
        "archive_command": f"pgbackrest --stanza={stanza_prefix}{cluster.name} archive-push %p",
    }


def cluster_settings(
    cluster: Cluster,
    sizing: Mapping[str, Any],
    defaults: Mapping[str, Any],
    custom: Mapping[str, Any],
    *,
    conf_dir: str,
    stanza_prefix: str,
    primary_planned: Mapping[str, Any] | None = None,
    primary_running: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every setting of a cluster's conf.d file, later ones winning: the host's sizing, the
    role's defaults, its kind's own (:func:`kind_settings`), the operator's custom ones. A
    standby then raises what must be at least its primary's, planned and running: the
    running value matters while a lowered setting has not yet reached the primary."""
    settings = {**sizing, **defaults, **kind_settings(cluster, conf_dir, stanza_prefix), **custom}
    if cluster.is_standby:
        settings = standby_minimums(settings, primary_planned or {})
        settings = standby_minimums(settings, primary_running or {})
    return settings


def config_problems(custom: Any, *, host: str | None = None) -> list[str]:
    """Why ``postgresql_config_custom`` (``custom``) cannot be rendered, whatever the host's
    memory: not a mapping, a setting the layout owns, a memory size PostgreSQL cannot read."""
    where = f"host {host}: " if host else ""
    fix = f"(in host_vars/{host or '<host>'}.yml or group_vars)"
    if custom is None:
        return []
    if not isinstance(custom, Mapping):
        return [
            f"{where}{CONFIG_CUSTOM_VAR} must be a mapping of postgresql.conf settings, not "
            f"{custom!r} {fix}"
        ]
    problems = []
    for key in sorted(set(custom) & set(RESERVED_SETTINGS)):
        if key == "password_encryption" and custom[key] == "scram-sha-256":
            continue
        problems.append(
            f"{where}{CONFIG_CUSTOM_VAR} sets {key}: {RESERVED_SETTINGS[key]}; take it out {fix}"
        )
    for key in sorted(set(custom) & set(_BASE_UNIT_KB)):
        if size_kb(key, custom[key]) is None:
            problems.append(
                f"{where}{CONFIG_CUSTOM_VAR} {key} is {custom[key]!r}: not a PostgreSQL memory "
                f"size (e.g. 4GB, 512MB, 64kB; units are case-sensitive) {fix}"
            )
    if "max_connections" in custom:
        connections = whole_number(custom["max_connections"])
        if connections is None or connections < 1:
            problems.append(
                f"{where}{CONFIG_CUSTOM_VAR} max_connections is {custom['max_connections']!r}: "
                f"set a whole number >= 1 {fix}"
            )
    return problems


def memory_problems(
    memory_mb: Any,
    clusters_on_host: Any,
    custom: Any,
    *,
    host: str | None = None,
) -> list[str]:
    """Why ``postgresql_config_custom`` (``custom``, applied to each of the host's
    ``clusters_on_host`` clusters) cannot work on a host with ``memory_mb`` of memory, one
    line per problem naming the key; [] when it can. Only explicit overrides are judged (the
    derived values always fit): shared_buffers and effective_cache_size times the clusters,
    and work_mem x max_connections times the clusters, must stay within the host's memory.
    Includes :func:`config_problems`."""
    problems = config_problems(custom, host=host)
    if not isinstance(custom, Mapping) or problems:
        return problems
    where = f"host {host}: " if host else ""
    fix = f"(in host_vars/{host or '<host>'}.yml or group_vars)"
    memory = _positive("memory (MB)", memory_mb)
    count = _positive("clusters on the host", clusters_on_host)
    defaults = memory_settings(memory, 1, count)
    merged = {**defaults, **custom}
    mb = {key: (size_kb(key, merged[key]) or 0) / 1024 for key in _BASE_UNIT_KB}
    clusters = f"each of its {count} clusters" if count > 1 else "its cluster"
    for key, share in (("shared_buffers", "25"), ("effective_cache_size", "75")):
        if key in custom and mb[key] * count > memory:
            problems.append(
                f"{where}{CONFIG_CUSTOM_VAR} {key} {custom[key]} on {clusters} needs "
                f"{math.ceil(mb[key] * count)}MB, more than the host's {memory}MB: lower it "
                f"(the default is {defaults[key]}: {share}% of the host's memory split across "
                f"its clusters) {fix}"
            )
    connections = whole_number(merged["max_connections"]) or 1
    if ("work_mem" in custom or "max_connections" in custom) and (
        mb["work_mem"] * connections * count > memory
    ):
        problems.append(
            f"{where}{CONFIG_CUSTOM_VAR} work_mem {merged['work_mem']} x max_connections "
            f"{connections} on {clusters} may use {math.ceil(mb['work_mem'] * connections * count)}"
            f"MB, more than the host's {memory}MB: lower work_mem or max_connections {fix}"
        )
    return problems


def preload_libraries(citus_enabled: Any, extra: Iterable[str] = ()) -> list[str]:
    """shared_preload_libraries: citus first when enabled (Citus refuses to load otherwise),
    then pg_stat_statements and pg_partman_bgw, then ``extra`` (each once)."""
    enabled = citus_flag(citus_enabled)
    extra = [str(name) for name in extra]
    if "citus" in extra and not enabled:
        raise PlanError(
            f"citus is among the extra preload libraries but {CITUS_ENABLED_VAR} is false: set "
            f"{CITUS_ENABLED_VAR}: true instead"
        )
    names = (["citus"] if enabled else []) + list(PRELOAD_LIBRARIES) + extra
    return list(dict.fromkeys(names))


def conf_value(value: Any) -> str:
    """A postgresql.conf value: booleans on/off, lists comma-joined and quoted, anything but
    a plain word or number single-quoted (quotes doubled)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        value = ",".join(str(item) for item in value)
        return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    text = str(value)
    if _BARE_CONF_VALUE.match(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def conf_lines(settings: Mapping[str, Any]) -> list[str]:
    """``key = value`` lines of postgresql.conf, sorted by key (stable output)."""
    return [f"{key} = {conf_value(settings[key])}" for key in sorted(settings)]


# --- pg_hba.conf ------------------------------------------------------------------------------


def hba_address(host: str, own: Mapping[str, Any]) -> str:
    """``host``'s ansible_host as a pg_hba.conf address: ``a.b.c.d/32`` or ``x::y/128``.
    A DNS name is refused: pg_hba.conf is written with addresses here."""
    value = host_address(host, own)
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise PlanError(
            f"host {host}: ansible_host {value!r} is not an IP address, and pg_hba.conf allows "
            f"clients by address here (a name there costs a DNS lookup per connection and "
            f"fails when DNS does): set ansible_host to the host's IP address in hosts.yml"
        ) from None
    return f"{address}/{address.max_prefixlen}"


def hba_hosts(
    groups: Mapping[str, Sequence[str]], citus_enabled: bool, standbys: Sequence[str] = ()
) -> list[str]:
    """Every host pg_hba.conf names somewhere: the clients, monitoring, standbys and, with
    Citus, the nodes of the Citus cluster."""
    names = [host for group, _ in CLIENT_GROUPS for host in _members(groups, group)]
    names += _members(groups, MONITORING_GROUP) + list(standbys)
    if citus_enabled:
        names += _members(groups, COORDINATOR_GROUP) + _members(groups, WORKERS_GROUP)
    return list(dict.fromkeys(names))


def _rule(kind: str, database: str, user: str, address: str, method: str) -> dict[str, str]:
    return {"type": kind, "database": database, "user": user, "address": address, "method": method}


def hba_rules(
    cluster: Cluster | Mapping[str, Any],
    groups: Mapping[str, Sequence[str]],
    hostvars: Mapping[str, Mapping[str, Any]],
    citus_enabled: Any,
) -> list[dict[str, str]]:
    """pg_hba.conf of ``cluster``, in order: the superuser over the local socket by peer, every
    other local login by password; then by scram-sha-256 only, from /32 or /128 addresses:
    replication from the standby hosts (on the primary only), the Citus nodes among
    themselves (with Citus), the processors as sluice_writer and the API as sluice_reader
    (coordinator/main cluster and its standby) and the monitoring hosts as monitoring.
    Never trust; the standby keeps its primary's client rules for when it is promoted."""
    item = cluster if isinstance(cluster, Cluster) else Cluster.from_mapping(cluster)
    enabled = citus_flag(citus_enabled)
    coordinator = coordinator_host(groups)
    standbys = standby_hosts(
        (hostvars.get(coordinator) or {}).get(STANDBY_HOSTS_VAR),
        coordinator,
        known_hosts(groups, hostvars),
    )

    def addresses(hosts: Iterable[str]) -> list[str]:
        return list(dict.fromkeys(hba_address(h, hostvars.get(h) or {}) for h in hosts))

    rules = [
        _rule("local", "all", SUPERUSER, "", "peer"),
        _rule("local", "all", "all", "", "scram-sha-256"),
    ]
    serves_clients = item.kind in ("standalone", "coordinator", "standby")
    if item.kind in ("standalone", "coordinator"):
        for address in addresses(standbys):
            rules.append(_rule("host", "replication", REPLICATION, address, "scram-sha-256"))
    if enabled and item.kind in ("coordinator", "worker", "standby"):
        peers = _members(groups, COORDINATOR_GROUP) + _members(groups, WORKERS_GROUP) + standbys
        for user in CITUS_INTERNODE_USERS:
            for address in addresses(peers):
                rules.append(_rule("host", DATABASE, user, address, "scram-sha-256"))
    if serves_clients:
        for group, user in CLIENT_GROUPS:
            for address in addresses(_members(groups, group)):
                rules.append(_rule("host", DATABASE, user, address, "scram-sha-256"))
    for address in addresses(_members(groups, MONITORING_GROUP)):
        rules.append(_rule("host", "all", MONITORING, address, "scram-sha-256"))
    unique: list[dict[str, str]] = []
    for rule in rules:
        if rule not in unique:
            unique.append(rule)
    return unique


def hba_lines(rules: Iterable[Mapping[str, str]]) -> list[str]:
    """pg_hba.conf lines of ``rules``, columns aligned; a trust rule is refused."""
    lines = []
    for rule in rules:
        if rule["method"] == "trust":
            raise PlanError(f"pg_hba rule {dict(rule)} uses trust: Sluice never trusts a login")
        address = "" if rule["type"] == "local" else rule["address"]
        lines.append(
            f"{rule['type']:<7} {rule['database']:<12} {rule['user']:<14} {address:<40} "
            f"{rule['method']}"
        )
    return lines


# --- ports ------------------------------------------------------------------------------------


def port_problems(items: Sequence[Cluster], others: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Ports a cluster shares on its host with ``others`` (host -> {service: port})."""
    problems = []
    hosts = list(dict.fromkeys(c.host for c in items))
    for host in sorted(hosts):
        used = [(f"postgresql cluster {c.name}", c.port) for c in on_host(items, host)]
        used += list((others.get(host) or {}).items())
        owners: dict[int, list[str]] = {}
        for name, port in used:
            owners.setdefault(port, []).append(name)
        for port, names in sorted(owners.items()):
            if len(names) > 1 and any(n.startswith("postgresql cluster ") for n in names):
                problems.append(
                    f"host {host}: port {port} is used by {' and '.join(names)}: move "
                    f"{PORT_BASE_VAR} for host {host} (now {on_host(items, host)[0].port}) "
                    f"clear of it, or move the other service's port"
                )
    return problems
