"""sluice-loadgen: offer the study's load to a deployed Sluice and account for every event.

    sluice-loadgen -i inventories/lab --profile steady --rate 6667 --seconds 60
    sluice-loadgen --mode batch --batch-size 100 --profile spike --rate 5000 --seconds 30
    sluice-loadgen --profile soak --rate 3000 --hours 2

Exit status 0 when the accounting holds (every acknowledged event stored once, the Redis
counters equal PostgreSQL's), 1 when it does not, 2 when the run could not be made."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sluice_infra.lab.lab import DEFAULT_STATE_DIR
from sluice_infra.lab.layout import Layout, LayoutError
from sluice_infra.lab.remote import Remote, RemoteError
from sluice_infra.loadgen.accounting import AccountingError
from sluice_infra.loadgen.profiles import BUILDERS, PROFILES, ProfileError
from sluice_infra.loadgen.run import MODES, LoadgenError, Options, run
from sluice_infra.loadgen.target import Target


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sluice-loadgen",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-i", "--inventory", type=Path, default=Path("inventories/lab"))
    p.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="the lab's SSH settings and vault password; runs are kept under it",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default="structured",
        help="single events (structured or binary CloudEvents) or batches",
    )
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--profile", choices=PROFILES, default="steady")
    p.add_argument(
        "--rate",
        type=float,
        default=6667.0,
        help="events/s: the steady rate, the ramp's end, the spike's base (6667)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="steady and ramp length; before and after the spike (60)",
    )
    p.add_argument("--start-rate", type=float, help="ramp: where it starts (a tenth of --rate)")
    p.add_argument("--spike-factor", type=float, default=2.0)
    p.add_argument("--spike-seconds", type=float, default=60.0)
    p.add_argument("--hours", type=float, default=1.0, help="soak length (1)")
    p.add_argument("--tenants", type=int, help="default: enough to stay within each one's limit")
    p.add_argument("--connections", type=int, help="default: the peak rate times 100 ms")
    p.add_argument("--timeout", type=float, default=10.0, help="per request, seconds (10)")
    p.add_argument("--no-accounting", action="store_true", help="skip the accounting")
    p.add_argument("--progress", choices=("text", "json", "none"), default="text")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def phases(args: argparse.Namespace) -> list:
    build = BUILDERS[args.profile]
    if args.profile == "ramp":
        return build(args.rate, args.seconds, args.start_rate)
    if args.profile == "spike":
        return build(args.rate, args.seconds, args.spike_factor, args.spike_seconds)
    if args.profile == "soak":
        return build(args.rate, args.hours)
    return build(args.rate, args.seconds)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        options = Options(
            phases=phases(args),
            mode=args.mode,
            batch_size=args.batch_size,
            tenants=args.tenants,
            connections=args.connections,
            timeout_seconds=args.timeout,
            accounting=not args.no_accounting,
            progress=args.progress,
        )
        layout = Layout.load(args.inventory)
        target = Target(layout, Remote(args.state_dir))
        report = run(options, target, args.state_dir / "loadgen")
    except (ProfileError, LoadgenError, LayoutError, RemoteError, AccountingError) as exc:
        print(f"sluice-loadgen: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=2) if args.json else "\n".join(report.lines()))
    return 0 if report.accounting is None or report.accounting.ok else 1


if __name__ == "__main__":
    sys.exit(main())
