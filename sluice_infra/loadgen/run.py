"""One load run against a deployed Sluice: tenants and keys of its own, the study's event mix,
an open-model driver (``sluice-loadgen-driver``, Go: constant arrival rate, latency from each
request's intended send time) through HAProxy, then the accounting, then the keys revoked.

Everything a run leaves is in its folder (``<state-dir>/loadgen/<run>/``): the plan, the event
pool, the acknowledged ids, the per-second series and ``report.json``. The keys file exists only
while the driver runs (0600)."""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sluice_infra.lab.layout import Layout
from sluice_infra.loadgen import pool
from sluice_infra.loadgen.accounting import Accounting, account
from sluice_infra.loadgen.profiles import Phase, duration, peak_rate
from sluice_infra.loadgen.target import Key, Target

DRIVER = "sluice-loadgen-driver"
MODES = ("structured", "binary", "batch")
#: The service's default per-tenant limit (SLUICE_RATE_LIMIT_REQUESTS per ..._WINDOW_SECONDS).
DEFAULT_LIMIT = (10_000, 60)
#: A run's tenants share its request rate so that each stays below this share of its limit.
LIMIT_SHARE = 0.5


class LoadgenError(RuntimeError):
    """The run could not start or finish; the message names the cause and the fix."""


@dataclass(frozen=True)
class Options:
    phases: list[Phase]
    mode: str = "structured"
    batch_size: int = 100
    tenants: int | None = None
    connections: int | None = None
    timeout_seconds: float = 10.0
    accounting: bool = True
    progress: str = "text"

    @property
    def events_per_request(self) -> int:
        return self.batch_size if self.mode == "batch" else 1

    @property
    def peak_request_rate(self) -> float:
        return peak_rate(self.phases) / self.events_per_request


@dataclass
class Report:
    run: str
    mode: str
    batch_size: int
    tenants: int
    connections: int
    phases: list[dict[str, float]]
    driver: dict[str, Any]
    accounting: Accounting | None = None
    folder: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "mode": self.mode,
            "batch_size": self.batch_size if self.mode == "batch" else 1,
            "tenants": self.tenants,
            "connections": self.connections,
            "phases": self.phases,
            "driver": self.driver,
            "accounting": self.accounting.as_dict() if self.accounting else None,
            "folder": self.folder,
        }

    def lines(self) -> list[str]:
        d = self.driver
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(d.get("errors", {}).items())) or "none"
        out = [
            f"run {self.run}: {self.mode}"
            + (f" (batches of {self.batch_size})" if self.mode == "batch" else "")
            + f", {self.tenants} tenants, {self.connections} connections",
            f"offered {d.get('events_offered', 0)} events, sent {d.get('events_sent', 0)}, "
            f"acknowledged {d.get('acked_events', 0)} in {d.get('duration_seconds', 0):.1f}s; "
            f"not sent on time {d.get('dropped', 0)}; errors {errors}",
            f"latency from the intended send time: p50 {d.get('p50_ms', 0):.1f} ms, "
            f"p95 {d.get('p95_ms', 0):.1f} ms, p99 {d.get('p99_ms', 0):.1f} ms, "
            f"max {d.get('max_ms', 0):.1f} ms",
            f"driver CPU {d.get('cpu_seconds', 0):.1f}s ({d.get('cpu_cores', 0):.2f} core)",
        ]
        if self.accounting:
            out += self.accounting.lines()
        out.append(f"files: {self.folder}")
        return out


def find_driver() -> Path:
    """The driver built by `make loadgen` (into the venv) or any on PATH."""
    beside = Path(sys.executable).parent / DRIVER
    if beside.exists():
        return beside
    found = shutil.which(DRIVER)
    if not found:
        raise LoadgenError(f"{DRIVER} not found beside {sys.executable} or on PATH: make loadgen")
    return Path(found)


def tenant_limit(layout: Layout) -> tuple[int, int]:
    """(requests, window seconds) of the per-tenant limit the API instances run with."""
    settings = layout.hostvars.get(layout.api_host, {}).get("sluice_api_settings") or {}
    requests = int(settings.get("RATE_LIMIT_REQUESTS", DEFAULT_LIMIT[0]))
    window = int(settings.get("RATE_LIMIT_WINDOW_SECONDS", DEFAULT_LIMIT[1]))
    return requests, window


def tenants_needed(request_rate: float, limit: tuple[int, int]) -> int:
    """Enough tenants that each one's share of the request rate stays within LIMIT_SHARE of
    its limit: 400,000 single events a minute need 80 at the default 10,000 a minute."""
    per_tenant = limit[0] / limit[1] * LIMIT_SHARE
    return max(1, math.ceil(request_rate / per_tenant))


def connections_needed(request_rate: float) -> int:
    """Requests in flight at the peak rate if each took 250 ms (in [16, 2000]): room for a
    slow start (a freshly deployed lab answered in about 100 ms at first) without the
    driver's connections becoming the bottleneck it measures."""
    return min(2000, max(16, math.ceil(request_rate * 0.25)))


def plan(options: Options, target: Target, run: str, folder: Path, connections: int) -> dict:
    return {
        "target": target.layout.api_url,
        "path": "/api/v1/events",
        "mode": options.mode,
        "batch_size": options.events_per_request,
        "connections": connections,
        "queue": 200_000,
        "timeout_seconds": options.timeout_seconds,
        "profile": [phase.as_plan() for phase in options.phases],
        "run": run,
        "events": str(folder / "pool.jsonl"),
        "keys": str(folder / "keys.txt"),
        "acks": str(folder / "acks.txt"),
        "series": str(folder / "series.jsonl"),
        "progress": options.progress,
    }


def drive(driver: Path, plan_file: Path) -> dict[str, Any]:
    """Run the driver (its progress goes to our stderr) and return its summary."""
    result = subprocess.run(
        [str(driver), "--plan", str(plan_file)], stdout=subprocess.PIPE, text=True, check=False
    )
    if result.returncode != 0:
        raise LoadgenError(f"{DRIVER} exited {result.returncode} (its message is above)")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(
    options: Options,
    target: Target,
    folder_root: Path,
    lag_timeout: float = 600,
    on_drained: Callable[[], None] | None = None,
) -> Report:
    """One run; ``on_drained`` is called when the processors have caught up (before the
    accounting's queries; at the end of the run without accounting)."""
    if options.mode not in MODES:
        raise LoadgenError(f"--mode {options.mode!r}: choose one of {', '.join(MODES)}")
    if options.mode == "batch" and options.batch_size < 1:
        raise LoadgenError(f"--batch-size {options.batch_size}: must be 1 or more")
    driver = find_driver()
    run_id = "lg" + secrets.token_hex(3)
    folder = folder_root / run_id
    folder.mkdir(parents=True)
    limit = tenant_limit(target.layout)
    tenants = options.tenants or tenants_needed(options.peak_request_rate, limit)
    connections = options.connections or connections_needed(options.peak_request_rate)
    pool.write(folder / "pool.jsonl", pool.build())
    plan_file = folder / "plan.json"
    plan_file.write_text(json.dumps(plan(options, target, run_id, folder, connections), indent=2))

    print(
        f"run {run_id}: {options.mode}, peak {peak_rate(options.phases):.0f} events/s for "
        f"{duration(options.phases):.0f}s, {tenants} tenants, {connections} connections, "
        f"target {target.events_url}",
        file=sys.stderr,
    )
    keys: list[Key] = []
    keys_file = folder / "keys.txt"
    try:
        keys = target.make_keys([f"{run_id}-{i:03d}" for i in range(tenants)])
        fd = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("".join(key.secret + "\n" for key in keys))
        since = datetime.now(UTC) - timedelta(minutes=1)
        summary = drive(driver, plan_file)
        keys_file.unlink()
        report = Report(
            run=run_id,
            mode=options.mode,
            batch_size=options.events_per_request,
            tenants=tenants,
            connections=connections,
            phases=[phase.as_plan() for phase in options.phases],
            driver=summary,
            folder=str(folder),
        )
        if options.accounting:
            last_ack = summary.get("last_ack")
            report.accounting = account(
                target,
                keys,
                folder / "acks.txt",
                since,
                datetime.fromisoformat(last_ack.replace("Z", "+00:00")) if last_ack else None,
                lag_timeout=lag_timeout,
                on_drained=on_drained,
            )
        elif on_drained:
            on_drained()
    finally:
        keys_file.unlink(missing_ok=True)
        target.revoke_keys(keys)
    (folder / "report.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return report
