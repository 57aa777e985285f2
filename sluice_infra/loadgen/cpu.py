"""CPU time and memory of every Sluice component on the hosts, from systemd's cgroups (cgroup
v2 ``cpu.stat`` ``usage_usec``, ``memory.current``): one SSH call per host reads every service's
counters, so a bench step costs the hosts two reads. The difference of two CPU samples, divided
by the events a step moved, is the CPU per event per component: the figure that carries to other
hardware.

Each unit is its own entry (``stream/kafka@2.service``): each Kafka broker, API instance,
processor and Redis instance is reported, and :func:`by_component` adds them up per kind."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from sluice_infra.lab.layout import Layout
from sluice_infra.lab.remote import Remote

#: Component name -> the systemd unit name prefix of its processes.
COMPONENTS = {
    "kafka": "kafka@",
    "api": "sluice-api@",
    "processor": "sluice-processor@",
    "postgresql": "postgresql@",
    "redis": "redis-server@",
    "haproxy": "haproxy.service",
}

_READ_CPU = (
    "for f in /sys/fs/cgroup/system.slice/*.service/cpu.stat; do "
    'u=${f%/cpu.stat}; printf "%s %s\\n" "${u##*/}" "$(sed -n "s/^usage_usec //p" "$f")"; done'
)
_READ_MEMORY = (
    "for f in /sys/fs/cgroup/system.slice/*.service/memory.current; do "
    'u=${f%/memory.current}; printf "%s %s\\n" "${u##*/}" "$(cat "$f")"; done'
)


def component(unit: str) -> str | None:
    return next((name for name, prefix in COMPONENTS.items() if unit.startswith(prefix)), None)


def parse(host: str, text: str) -> dict[str, int]:
    """``{"host/unit": usage µs}`` of the Sluice units in one host's listing."""
    usage = {}
    for line in text.splitlines():
        unit, _, value = line.partition(" ")
        if value.strip().isdigit() and component(unit):
            usage[f"{host}/{unit}"] = int(value)
    return usage


def sample(layout: Layout, remote: Remote) -> dict[str, int]:
    """Every Sluice unit's CPU time so far (µs), on every host of the inventory."""
    return _read(layout, remote, _READ_CPU)


def memory(layout: Layout, remote: Remote) -> dict[str, int]:
    """Every Sluice unit's memory now (bytes, the cgroup's: resident and page cache)."""
    return _read(layout, remote, _READ_MEMORY)


def _read(layout: Layout, remote: Remote, command: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for host in layout.groups.get("all", []):
        values.update(parse(host, remote.run(host, command)))
    return values


def delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds per unit between two samples (a unit restarted meanwhile counts from 0)."""
    return {
        unit: (used - before.get(unit, 0) if used >= before.get(unit, 0) else used) / 1e6
        for unit, used in sorted(after.items())
    }


def by_component(seconds: Mapping[str, float]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for unit, used in seconds.items():
        totals[component(unit.split("/", 1)[1]) or "other"] += used
    return dict(totals)
