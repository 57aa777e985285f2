"""``sluice-lab``: bring the local lab up, stop it, take it down, show it.

Used by the Make targets (`make lab-up`, `lab-down`, `lab-status`) and by molecule's
delegated driver, so role tests get the same machines as the system tests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sluice_infra import REPO_ROOT
from sluice_infra.cloudinit import CloudInitError
from sluice_infra.lab import LabError, spec
from sluice_infra.lab.lab import DEFAULT_CACHE_DIR, DEFAULT_STATE_DIR, Lab


def _log(message: str) -> None:
    print(f"lab: {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sluice-lab", description=__doc__.splitlines()[0])
    parser.add_argument(
        "command",
        choices=["up", "stop", "down", "status", "ssh-config"],
        help="up: create/adopt and start; stop: stop, keep disks; down: remove everything the "
        "lab made except cached image and packages; status: show; ssh-config: print its path",
    )
    parser.add_argument(
        "-i",
        "--inventory",
        type=Path,
        default=REPO_ROOT / "inventories" / "lab",
        help="inventory that describes the machines (default: inventories/lab)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="per-checkout state: disks, SSH key (default: .lab)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE_DIR,
        help="shared cache: base image, apt cache (default: /var/cache/sluice)",
    )
    args = parser.parse_args(argv)
    try:
        lab = Lab(spec.load(args.inventory), args.state_dir.resolve(), args.cache_dir)
        if args.command == "up":
            lab.up(_log)
            print(lab.status())
        elif args.command == "stop":
            lab.stop(_log)
        elif args.command == "down":
            lab.down(_log)
        elif args.command == "status":
            print(lab.status())
        else:
            print(lab.ssh_config)
    except (LabError, CloudInitError) as exc:
        print(f"sluice-lab {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
