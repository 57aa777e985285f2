"""Where `make test`'s time goes: each phase timed, and every Ansible task's duration.

``python -m sluice_infra.phases run NAME -- COMMAND...`` runs COMMAND, passes its exit code
through and appends the phase's wall time to the record. ``report`` prints the phases, then the
slowest Ansible tasks across every playbook run of the session, read from the files Ansible's
``junit`` callback wrote (the Makefile enables it for `make test`; ``JUNIT_OUTPUT_DIR``).
The report goes to the CI log, so every run shows where its time went."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    status: int


@dataclass(frozen=True)
class Task:
    playbook: str
    name: str
    seconds: float


def record(record_file: Path, phase: Phase) -> None:
    record_file.parent.mkdir(parents=True, exist_ok=True)
    with record_file.open("a") as out:
        out.write(f"{phase.seconds:.1f}\t{phase.status}\t{phase.name}\n")


def read_phases(record_file: Path) -> list[Phase]:
    if not record_file.exists():
        return []
    phases = []
    for line in record_file.read_text().splitlines():
        seconds, status, name = line.split("\t", 2)
        phases.append(Phase(name, float(seconds), int(status)))
    return phases


def read_tasks(junit_dir: Path) -> list[Task]:
    """Every task of every playbook run in ``junit_dir``: one entry per task and run, its time
    the longest of its hosts' (hosts run a task in parallel)."""
    tasks = []
    for path in sorted(junit_dir.glob("*.xml")):
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError:
            continue  # a run killed while writing its report
        playbook = path.stem.rsplit("-", 1)[0]
        longest: dict[str, float] = {}
        for case in root.iter("testcase"):
            # junit names a case "[host] play: task"; the task is what is common to the hosts
            name = case.get("name", "").split("] ", 1)[-1]
            longest[name] = max(longest.get(name, 0.0), float(case.get("time") or 0))
        tasks.extend(Task(playbook, name, seconds) for name, seconds in longest.items())
    return tasks


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def render(phases: Sequence[Phase], tasks: Iterable[Task], top: int = 30) -> str:
    lines = ["", "== make test: phases (wall time) =="]
    for phase in phases:
        verdict = "ok" if phase.status == 0 else f"FAILED (exit {phase.status})"
        lines.append(f"{_minutes(phase.seconds):>9}  {phase.name}  {verdict}")
    lines.append(f"{_minutes(sum(p.seconds for p in phases)):>9}  total")
    tasks = list(tasks)
    if tasks:
        per_run: dict[str, float] = defaultdict(float)
        summed: dict[tuple[str, str], list[float]] = defaultdict(list)
        for task in tasks:
            per_run[task.playbook] += task.seconds
            summed[(task.playbook, task.name)].append(task.seconds)
        lines.append("")
        lines.append("== Ansible: time in tasks per playbook (all its runs) ==")
        for playbook, seconds in sorted(per_run.items(), key=lambda kv: -kv[1]):
            lines.append(f"{_minutes(seconds):>9}  {playbook}")
        lines.append("")
        lines.append(f"== Ansible: the {top} slowest tasks (summed over runs; runs) ==")
        ranked = sorted(summed.items(), key=lambda kv: -sum(kv[1]))[:top]
        for (playbook, name), times in ranked:
            lines.append(f"{_minutes(sum(times)):>9}  {len(times):>3}x  {playbook}: {name}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sluice_infra.phases", description=__doc__)
    parser.add_argument("--record", type=Path, required=True, help="the phases file")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a command as a timed phase")
    run.add_argument("name")
    run.add_argument("argv", nargs=argparse.REMAINDER)
    report = sub.add_parser("report", help="print the phases and the slowest Ansible tasks")
    report.add_argument("--junit-dir", type=Path)
    report.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)

    if args.command == "run":
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not command:
            parser.error("run: give the command after --")
        print(f"== phase: {args.name} ==", flush=True)
        start = time.monotonic()
        status = subprocess.run(command, check=False).returncode
        record(args.record, Phase(args.name, time.monotonic() - start, status))
        print(f"== phase: {args.name}: exit {status} after {_minutes(time.monotonic() - start)}")
        return status
    tasks = read_tasks(args.junit_dir) if args.junit_dir and args.junit_dir.is_dir() else []
    sys.stdout.write(render(read_phases(args.record), tasks, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
