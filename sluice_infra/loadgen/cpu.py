"""CPU time and memory of every Sluice component on the hosts, per systemd unit, read from
``/proc``: each process's unit is the last ``*.service`` of its cgroup path (systemd's own
hierarchy, present on cgroup v1 and v2 alike; the lab's nspawn machines on a v1 host get no
per-service cpu or memory controllers, so ``cpu.stat`` is not there to read). CPU is user +
system time of the unit's processes and of their reaped children (PostgreSQL's backends count
in the postmaster's); memory is the resident set. One SSH call per host reads every unit, so a
bench step costs the hosts two reads. The difference of two CPU samples, divided by the events
a step moved, is the CPU per event per component: the figure that carries to other hardware.

Each unit is its own entry (``stream/kafka@2.service``): each Kafka broker, API instance,
processor and Redis instance is reported, and :func:`by_component` adds them up per kind."""

from __future__ import annotations

import shlex
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

#: Runs on a host (python3 is there): "<unit> <value>" per systemd service, CPU in µs or RSS in
#: bytes (argv[1]: cpu or rss).
_PER_UNIT = r"""
import glob, os, sys
hz, page, totals = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE"), {}
for proc in glob.glob("/proc/[0-9]*"):
    try:
        paths = [line.split(":", 2)[2] for line in open(proc + "/cgroup").read().splitlines()]
        stat = open(proc + "/stat").read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        continue
    units = [p.rsplit("/", 1)[1] for p in paths if p.endswith(".service")]
    if not units:
        continue
    if sys.argv[1] == "cpu":  # utime stime cutime cstime, in clock ticks
        value = sum(int(x) for x in stat[11:15]) * 1_000_000 // hz
    else:  # rss, in pages
        value = int(stat[21]) * page
    totals[units[0]] = totals.get(units[0], 0) + value
for unit, value in sorted(totals.items()):
    print(unit, value)
"""


def _command(kind: str) -> str:
    return f"python3 -c {shlex.quote(_PER_UNIT)} {kind}"


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
    return _read(layout, remote, _command("cpu"))


def memory(layout: Layout, remote: Remote) -> dict[str, int]:
    """Every Sluice unit's resident memory now (bytes)."""
    return _read(layout, remote, _command("rss"))


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
