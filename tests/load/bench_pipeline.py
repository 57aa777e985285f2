"""Benchmark the whole pipeline on a deployed layout with sluice-loadgen, in one run:

(a) the raw Kafka reference (kafka-producer-perf-test, 500-byte records, acks=all);
(b) single events (structured CloudEvents) at increasing offered rates, up to the highest
    sustained one: achieved >= 99 % of offered, errors < 0.1 %, p99 < 500 ms, nothing the
    driver could not send on time, and the processors caught up within 10 s of the last ack;
(c) batches likewise;
(d) a spike to twice the highest sustained single-event rate for 60 s and back, with the
    loss accounting;
(e) for every step, the CPU seconds per event of every component (each Kafka broker, API
    instances, processors, PostgreSQL, Redis, HAProxy: per systemd unit, from /proc on the
    hosts) and of the generator itself.

Every step is a load run with its accounting (every acknowledged event stored once, the Redis
counters equal to PostgreSQL's). Writes docs/bench/pipeline.json (one entry per step, with
``mode`` and ``achieved_rate``), pipeline.png (offered vs achieved rate, p50/p95/p99 and the
consumer lag over time) and pipeline.md (each study target: met or not, by how much).

    make bench-pipeline            # or: python tests/load/bench_pipeline.py -i inventories/lab
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import threading
import time
from pathlib import Path

from bench_kafka_producer import perf_test

from sluice_infra.lab.lab import DEFAULT_STATE_DIR
from sluice_infra.lab.layout import Layout
from sluice_infra.lab.remote import Remote, RemoteError
from sluice_infra.loadgen import cpu
from sluice_infra.loadgen.profiles import duration, spike, steady
from sluice_infra.loadgen.run import Options, run
from sluice_infra.loadgen.target import Target

REPO = Path(__file__).resolve().parents[2]
TARGET_RATE = 400_000 / 60
TARGET_P50_MS, TARGET_P95_MS, TARGET_P99_MS = 50, 200, 500
MAX_ERROR_SHARE = 0.001
MAX_DRAIN_SECONDS = 10.0

#: Sum of the processors' consumer lag (their metric), on one processor host.
_LAG = (
    "for u in $(systemctl list-units --plain --no-legend 'sluice-processor@*' | cut -d' ' -f1); "
    'do p=${u#*@}; p=${p%.service}; python3 -c "import urllib.request as r; '
    "print(r.urlopen('http://127.0.0.1:$p/metrics', timeout=2).read().decode())\"; done "
    "| awk '/^sluice_processor_consumer_lag/ {s += $2} END {print s + 0}'"
)


class LagSampler(threading.Thread):
    """The processors' total consumer lag every ``every`` seconds while a step runs."""

    def __init__(self, layout: Layout, remote: Remote, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.hosts = layout.hosts("sluice_processor")
        self.remote, self.every = remote, every
        self.samples: list[tuple[float, int]] = []
        self.started = time.monotonic()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                lag = sum(int(float(self.remote.run(h, _LAG, timeout=20))) for h in self.hosts)
                self.samples.append((time.monotonic() - self.started, lag))
            except (RemoteError, ValueError):
                pass
            self._done.wait(self.every)

    def stop(self) -> list[tuple[float, int]]:
        self._done.set()
        self.join(timeout=30)
        return self.samples


def _series(folder: Path) -> list[dict]:
    path = folder / "series.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def step(name: str, options: Options, layout: Layout, remote: Remote, state: Path) -> dict:
    """One load run with its accounting, the hosts' CPU time around it and the lag during it."""
    target = Target(layout, remote)
    sampler = LagSampler(layout, remote)
    before = cpu.sample(layout, remote)
    used: dict[str, float] = {}

    def drained() -> None:
        used.update(cpu.delta(before, cpu.sample(layout, remote)))

    sampler.start()
    try:
        report = run(options, target, state / "loadgen", on_drained=drained)
    finally:
        lag = sampler.stop()
    driver, accounting = report.driver, report.accounting
    acked = max(1, driver.get("acked_events", 0))
    seconds = duration(options.phases)
    offered = driver.get("events_offered", 0) / seconds
    achieved = driver.get("acked_events", 0) / seconds
    errors = sum(driver.get("errors", {}).values())
    requests = max(1, driver.get("requests", 0))
    components = cpu.by_component(used)
    components["generator"] = driver.get("cpu_seconds", 0.0)
    entry = {
        "name": name,
        "mode": "batch" if options.mode == "batch" else "single",
        "content_mode": options.mode,
        "batch_size": options.events_per_request,
        "seconds": seconds,
        "offered_rate": round(offered, 1),
        "achieved_rate": round(achieved, 1),
        "error_share": round(errors / requests, 6),
        "errors": driver.get("errors", {}),
        "dropped": driver.get("dropped", 0),
        "p50_ms": driver.get("p50_ms"),
        "p95_ms": driver.get("p95_ms"),
        "p99_ms": driver.get("p99_ms"),
        "max_ms": driver.get("max_ms"),
        "acked_events": driver.get("acked_events", 0),
        "drain_seconds": accounting.drain_seconds if accounting else None,
        "accounting_ok": accounting.ok if accounting else None,
        "missing": accounting.missing if accounting else None,
        "duplicated": accounting.duplicated if accounting else None,
        "cpu_seconds": {k: round(v, 3) for k, v in sorted(components.items())},
        "cpu_us_per_event": {k: round(v / acked * 1e6, 1) for k, v in sorted(components.items())},
        "cpu_seconds_per_unit": {k: round(v, 3) for k, v in used.items()},
        "generator_cpu_cores": driver.get("cpu_cores"),
        "tenants": report.tenants,
        "connections": report.connections,
        "run": report.run,
        "series": _series(Path(report.folder)),
        "lag": lag,
    }
    entry["sustained"] = sustained(entry)
    print(
        f"{name}: offered {offered:,.0f}/s achieved {achieved:,.0f}/s p99 {entry['p99_ms']} ms "
        f"errors {entry['error_share']:.3%} drain {entry['drain_seconds']}s "
        f"accounting {'ok' if entry['accounting_ok'] else 'FAILED'} "
        f"-> {'sustained' if entry['sustained'] else 'not sustained'}",
        flush=True,
    )
    return entry


def sustained(entry: dict) -> bool:
    return (
        entry["achieved_rate"] >= 0.99 * entry["offered_rate"]
        and entry["error_share"] < MAX_ERROR_SHARE
        and (entry["p99_ms"] or 0) < TARGET_P99_MS
        and entry["dropped"] == 0
        and entry["drain_seconds"] is not None
        and entry["drain_seconds"] <= MAX_DRAIN_SECONDS
        and bool(entry["accounting_ok"])
    )


def climb(
    name: str,
    mode: str,
    rates: list[float],
    seconds: float,
    layout: Layout,
    remote: Remote,
    state: Path,
    batch_size: int = 100,
) -> list[dict]:
    """Steps at increasing rates until one is not sustained."""
    entries = []
    for rate in rates:
        options = Options(phases=steady(rate, seconds), mode=mode, batch_size=batch_size,
                          progress="none")  # fmt: skip
        entries.append(step(f"{name} {rate:,.0f}/s", options, layout, remote, state))
        if not entries[-1]["sustained"]:
            break
    return entries


def best(entries: list[dict], mode: str) -> dict | None:
    ok = [
        e
        for e in entries
        if e["mode"] == mode and e["sustained"] and not e["name"].startswith("spike")
    ]
    return max(ok, key=lambda e: e["achieved_rate"]) if ok else None


def plot(entries: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rates, latency, lag) = plt.subplots(3, 1, figsize=(12, 9), sharex=True)
    offset = 0.0
    for entry in entries:
        series = entry["series"]
        t = [offset + s["t"] for s in series]
        rates.plot(t, [s["offered_rate"] for s in series], color="tab:gray", lw=1)
        rates.plot(t, [s["achieved_rate"] for s in series], color="tab:blue", lw=1)
        for key, color in (("p50_ms", "tab:green"), ("p95_ms", "tab:orange"),
                           ("p99_ms", "tab:red")):  # fmt: skip
            latency.plot(t, [s.get(key) or float("nan") for s in series], color=color, lw=1)
        lag.plot([offset + t for t, _ in entry["lag"]], [n for _, n in entry["lag"]],
                 color="tab:purple", lw=1)  # fmt: skip
        rates.axvline(offset, color="k", lw=0.3)
        rates.text(offset, 0, entry["name"], rotation=90, fontsize=6, va="bottom")
        offset += max([s["t"] for s in series] + [entry["seconds"]]) + 5
    rates.set_ylabel("events/s")
    rates.legend(["offered", "achieved (202)"], loc="upper left", fontsize=8)
    latency.set_ylabel("ms (from intended send)")
    latency.set_yscale("log")
    latency.legend(["p50", "p95", "p99"], loc="upper left", fontsize=8)
    lag.set_ylabel("consumer lag (records)")
    lag.set_xlabel("seconds (steps one after another)")
    fig.suptitle(f"Sluice pipeline on {os.cpu_count()} cores (make bench-pipeline)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _verdict(value: float | None, target: float, higher_is_better: bool) -> str:
    if value is None:
        return "not measured"
    met = value >= target if higher_is_better else value < target
    ratio = value / target if target else 0
    return f"{'met' if met else 'not met'} ({value:,.1f} vs {target:,g}: {ratio:.2f}x)"


def summary(entries: list[dict], kafka: dict | None, layout_name: str) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    single, batch = best(entries, "single"), best(entries, "batch")
    spikes = [e for e in entries if e["name"].startswith("spike")]
    components = sorted({k for e in entries for k in e["cpu_us_per_event"]})
    rows = "\n".join(
        f"| {e['name']} | {e['offered_rate']:,.0f} | {e['achieved_rate']:,.0f} | "
        f"{e['p50_ms'] or 0:.1f} | {e['p95_ms'] or 0:.1f} | {e['p99_ms'] or 0:.1f} | "
        f"{e['error_share']:.3%} | {e['drain_seconds']} | "
        f"{'yes' if e['accounting_ok'] else 'NO'} | {'yes' if e['sustained'] else 'no'} |"
        for e in entries
    )

    def cpu_row(entry: dict) -> str:
        cells = [f"{entry['cpu_us_per_event'].get(c, 0):,.0f}" for c in components]
        return f"| {entry['name']} | " + " | ".join(cells) + " |"

    cpu_rows = "\n".join(cpu_row(e) for e in entries)
    kafka_line = (
        f"Raw Kafka reference (kafka-producer-perf-test, 500 B, acks=all, unthrottled): "
        f"{kafka['rate']:,.0f} records/s, p99 {kafka['p99']:.0f} ms."
        if kafka
        else "Raw Kafka reference: not run (--skip-kafka)."
    )
    s_rate = single["achieved_rate"] if single else None
    spike_line = "not run"
    if spikes:
        sp = spikes[-1]
        spike_line = (
            f"{'no' if sp['accounting_ok'] else 'SOME'} data loss (missing {sp['missing']}, "
            f"duplicated {sp['duplicated']}), p99 {sp['p99_ms']:.0f} ms, errors "
            f"{sp['error_share']:.3%}"
        )
    return f"""# The pipeline end to end: what the lab sustains

Measured {now} by `make bench-pipeline` (tests/load/bench_pipeline.py) on the {layout_name}
layout, on a host with **{os.cpu_count()} cores** that the three lab machines and the load
generator share. Each step is a `sluice-loadgen` run (open model: constant arrival rate,
latency from each request's intended send time) through HAProxy, followed by its accounting.
A step is *sustained* when achieved >= 99 % of offered, errors < 0.1 %, p99 < 500 ms, the
driver sent everything on time, the processors caught up within {MAX_DRAIN_SECONDS:.0f} s of
the last acknowledgement, and the accounting held.

{kafka_line}

## The study's targets

| target | result |
|---|---|
| 400,000 events/min (6,667/s), single events | {_verdict(s_rate, TARGET_RATE, True)} |
| 400,000 events/min in batches of 100 | {_verdict(batch["achieved_rate"] if batch else None, TARGET_RATE, True)} |
| P50 < 50 ms (at the highest sustained single-event rate) | {_verdict(single["p50_ms"] if single else None, TARGET_P50_MS, False)} |
| P95 < 200 ms | {_verdict(single["p95_ms"] if single else None, TARGET_P95_MS, False)} |
| P99 < 500 ms | {_verdict(single["p99_ms"] if single else None, TARGET_P99_MS, False)} |
| errors < 0.1 % | {_verdict(single["error_share"] * 100 if single else None, 0.1, False)} |
| 2x spike for 60 s without data loss | {spike_line} |

## Steps

| step | offered/s | achieved/s | p50 ms | p95 ms | p99 ms | errors | drain s | accounting | sustained |
|---|---|---|---|---|---|---|---|---|---|
{rows}

## CPU per event (µs), per component

The figure that carries to other hardware: CPU time of each component's processes during the
step and its drain (per systemd unit, from /proc on the lab machines), divided by the events
acknowledged; the generator's is the driver's own.

| step | {" | ".join(components)} |
|---|{"---|" * len(components)}
{cpu_rows}

![offered vs achieved, latency, consumer lag](pipeline.png)

The figures per step, per unit and per second are in `pipeline.json`.
"""  # noqa: E501


def _p99_over(series: list[dict], first: bool, seconds: float) -> float | None:
    """The worst per-second p99 of the first (or last) ``seconds`` of a run."""
    end = max((s["t"] for s in series), default=0)
    window = [s for s in series if (s["t"] <= seconds if first else s["t"] >= end - seconds)]
    values = [s["p99_ms"] for s in window if s.get("p99_ms")]
    return max(values) if values else None


def soak(args: argparse.Namespace, layout: Layout, remote: Remote) -> int:
    """The steady profile for hours, its accounting, and the drift: p99 and each unit's memory
    at the start against the end. Writes soak.json and soak.md."""
    options = Options(phases=steady(args.soak_rate, args.soak_hours * 3600), progress="text")
    start_memory: dict[str, int] = {}
    timer = threading.Timer(60, lambda: start_memory.update(cpu.memory(layout, remote)))
    timer.start()  # a minute in: the services past their start, under the load
    entry = step(f"soak {args.soak_hours:g} h at {args.soak_rate:,.0f}/s", options, layout,
                 remote, args.state_dir)  # fmt: skip
    timer.cancel()
    end_memory = cpu.memory(layout, remote)
    window = min(600.0, entry["seconds"] / 4)
    drift = {
        "p99_ms_first": _p99_over(entry["series"], True, window),
        "p99_ms_last": _p99_over(entry["series"], False, window),
        "window_seconds": window,
        "memory_mib": {
            unit: [round(start_memory.get(unit, 0) / 2**20, 1), round(used / 2**20, 1)]
            for unit, used in sorted(end_memory.items())
        },
    }
    document = {"measured": dt.datetime.now(dt.UTC).isoformat(), "host_cores": os.cpu_count(),
                "inventory": str(args.inventory), "step": entry, "drift": drift}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(document, indent=1) + "\n")
    rows = "\n".join(
        f"| {unit} | {a:,.1f} | {b:,.1f} | {b - a:+,.1f} |"
        for unit, (a, b) in drift["memory_mib"].items()
    )
    (args.out / "soak.md").write_text(f"""# Soak: {entry["name"]}

Measured {document["measured"][:16]} UTC by `make soak` on a host with {os.cpu_count()} cores.
Achieved {entry["achieved_rate"]:,.0f} of {entry["offered_rate"]:,.0f} events/s offered, p99
{entry["p99_ms"]} ms over the run, errors {entry["error_share"]:.3%}, accounting
{"held" if entry["accounting_ok"] else "FAILED"} (missing {entry["missing"]}, duplicated
{entry["duplicated"]}).

Drift: the worst per-second p99 was {drift["p99_ms_first"]} ms in the first
{window:.0f} s and {drift["p99_ms_last"]} ms in the last {window:.0f} s.

| unit | memory a minute in (MiB) | at the end (MiB) | change |
|---|---|---|---|
{rows}
""")
    print(f"-> {args.out / 'soak.md'}, soak.json")
    return 0 if entry["accounting_ok"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--inventory", type=Path, default=REPO / "inventories" / "lab")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--step-seconds", type=float, default=30)
    parser.add_argument("--single-rates", default="250,400,600,800,1000,1300,1700,2200")
    parser.add_argument("--batch-rates", default="2000,4000,6667,8000,10000,12000,14000")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--skip-kafka", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench")
    parser.add_argument("--soak-hours", type=float, help="instead: soak for this many hours")
    parser.add_argument("--soak-rate", type=float, default=3000.0)
    args = parser.parse_args()

    layout = Layout.load(args.inventory)
    remote = Remote(args.state_dir)
    if args.soak_hours:
        return soak(args, layout, remote)
    kafka = None
    if not args.skip_kafka:
        kafka = perf_test(layout, remote, {"unthrottled": (300_000, -1)})["unthrottled"]
    # a freshly deployed lab answers its first requests slowly (connections, caches, the JIT
    # of the brokers): a minute of load nobody measures
    warm = Options(phases=steady(300, 60), progress="none", accounting=False)
    run(warm, Target(layout, remote), args.state_dir / "loadgen")
    rates = [float(r) for r in args.single_rates.split(",")]
    entries = climb("single", "structured", rates, args.step_seconds, layout, remote,
                    args.state_dir)  # fmt: skip
    batch_rates = [float(r) for r in args.batch_rates.split(",")]
    entries += climb("batch", "batch", batch_rates, args.step_seconds, layout, remote,
                     args.state_dir, args.batch_size)  # fmt: skip
    single = best(entries, "single")
    base = single["achieved_rate"] if single else rates[0]
    options = Options(phases=spike(base, 30, factor=2, spike_seconds=60), progress="none")
    entries.append(step(f"spike 2x {base:,.0f}/s", options, layout, remote, args.state_dir))

    args.out.mkdir(parents=True, exist_ok=True)
    document = {
        "measured": dt.datetime.now(dt.UTC).isoformat(),
        "host_cores": os.cpu_count(),
        "inventory": str(args.inventory),
        "kafka_reference": kafka,
        "steps": entries,
    }
    (args.out / "pipeline.json").write_text(json.dumps(document, indent=1) + "\n")
    plot(entries, args.out / "pipeline.png")
    (args.out / "pipeline.md").write_text(summary(entries, kafka, args.inventory.name))
    print(f"-> {args.out / 'pipeline.md'}, pipeline.json, pipeline.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
