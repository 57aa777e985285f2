"""The short summary `make lab` ends with: machines, addresses, what runs where, next steps."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from sluice_infra.lab import spec as lab_spec
from sluice_infra.lab.lab import Lab


def groups_by_host(hosts_file: Path) -> dict[str, list[str]]:
    """Each host's groups, from an inventory hosts.yml (nested children included)."""
    found: dict[str, set[str]] = {}

    def walk(name: str, group: dict, parents: tuple[str, ...]) -> None:
        group = group or {}
        for host in group.get("hosts") or {}:
            found.setdefault(host, set()).update(g for g in (*parents, name) if g != "all")
        for child, data in (group.get("children") or {}).items():
            walk(child, data, (*parents, name))

    walk("all", (yaml.safe_load(hosts_file.read_text()) or {}).get("all") or {}, ())
    return {host: sorted(groups) for host, groups in found.items()}


def render(lab: Lab) -> str:
    groups = groups_by_host(lab.spec.inventory / "hosts.yml")
    lines = ["", "Sluice lab: machine, address, state, inventory groups", ""]
    for machine in lab.machines:
        state = "running" if machine.running() else "not running"
        runs = ", ".join(groups.get(machine.name, [])) or "nothing yet"
        lines.append(f"  {machine.name:<8} {machine.spec.address!s:<12} {state:<12} {runs}")
    steps = [
        (f"ssh -F {lab.ssh_config} db", "log in to a machine"),
        ("make lab-status", "what runs"),
        ("make deploy", "re-run site.yml (changes nothing when nothing changed)"),
        ("make test", "lint, unit, molecule and system tests"),
        ("make lab-down", "remove machines, bridge and NAT"),
    ]
    width = max(len(command) for command, _ in steps)
    lines += ["", "Next steps:"]
    lines += [f"  {command:<{width}}  # {what}" for command, what in steps]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sluice-summary")
    parser.add_argument("-i", "--inventory", type=Path, default=Path("inventories/lab"))
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    lab = Lab(lab_spec.load(args.inventory), args.state_dir.resolve(), args.cache_dir)
    print(render(lab))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
