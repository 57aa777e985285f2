"""The lab network on the host: a bridge, IPv4 forwarding and one nftables table for NAT.

Kernel state outlives the processes of a session, so an earlier run's bridge and table are
usually still there: they are recognised as the lab's own (the bridge carries an alias, the
table a name of its own) and adopted. Anything else on the lab's bridge name or subnet is
refused with a message that names it.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from sluice_infra.lab import LabError
from sluice_infra.lab.host import run
from sluice_infra.lab.spec import LabSpec

#: Marker set as the bridge's alias: a bridge with it is the lab's own.
BRIDGE_ALIAS = "sluice-lab"
#: The lab's nftables table; nothing else is ever written to the host's ruleset.
NFT_TABLE = "sluice_lab"
_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
#: Where the forwarding setting found before the lab switched it on is kept. /run lives as
#: long as the kernel state it describes.
_IP_FORWARD_SAVED = Path("/run/sluice-lab/ip_forward.before")


@dataclass(frozen=True)
class Link:
    name: str
    kind: str
    alias: str
    master: str
    addresses: tuple[ipaddress.IPv4Interface, ...]


def links() -> dict[str, Link]:
    data = json.loads(run(["ip", "-d", "-j", "addr", "show"]).stdout or "[]")
    found = {}
    for item in data:
        addresses = tuple(
            ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
            for a in item.get("addr_info", [])
            if a.get("family") == "inet"
        )
        found[item["ifname"]] = Link(
            name=item["ifname"],
            kind=(item.get("linkinfo") or {}).get("info_kind", ""),
            alias=item.get("ifalias", ""),
            master=item.get("master", ""),
            addresses=addresses,
        )
    return found


def conflicts(spec: LabSpec, current: dict[str, Link], routes: list[dict]) -> list[str]:
    """What on the host stands in the lab's way: a foreign device named like the bridge, or
    the lab's subnet on another device or route."""
    problems = []
    bridge = current.get(spec.bridge)
    if bridge and (bridge.kind != "bridge" or bridge.alias != BRIDGE_ALIAS):
        problems.append(
            f"device {spec.bridge} exists and is not the lab's bridge (kind {bridge.kind or '?'}, "
            f"alias {bridge.alias or 'none'}); set lab_bridge in {spec.inventory}/group_vars/all/"
            "lab.yml to another name, or remove the device"
        )
    for link in current.values():
        if link.name == spec.bridge:
            continue
        for address in link.addresses:
            if address.network.overlaps(spec.subnet):
                problems.append(
                    f"device {link.name} has {address}, inside the lab subnet {spec.subnet}; "
                    f"choose another lab_subnet in {spec.inventory}/group_vars/all/lab.yml"
                )
    for route in routes:
        dst = route.get("dst", "")
        if dst in ("default", "") or route.get("dev") == spec.bridge:
            continue
        try:
            network = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if network.version == 4 and network.overlaps(spec.subnet) and network.prefixlen > 0:
            problems.append(
                f"route {dst} via {route.get('dev', '?')} overlaps the lab subnet {spec.subnet}; "
                f"choose another lab_subnet in {spec.inventory}/group_vars/all/lab.yml"
            )
    return problems


def check(spec: LabSpec) -> None:
    routes = json.loads(run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]")
    problems = conflicts(spec, links(), routes)
    if problems:
        raise LabError("the lab network cannot be set up:\n  - " + "\n  - ".join(problems))


def nft_ruleset(spec: LabSpec) -> str:
    """The lab's table: NAT for the machines, and forwarding to and from the bridge."""
    return f"""table ip {NFT_TABLE} {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {spec.subnet} ip daddr != {spec.subnet} masquerade
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{spec.bridge}" accept
    oifname "{spec.bridge}" ct state established,related accept
  }}
}}
"""


def up(spec: LabSpec) -> list[str]:
    """Create or adopt the bridge, forwarding and NAT. Returns what it did, for the log."""
    check(spec)
    done = []
    bridge = links().get(spec.bridge)
    if bridge is None:
        run(["ip", "link", "add", spec.bridge, "type", "bridge"])
        run(["ip", "link", "set", spec.bridge, "alias", BRIDGE_ALIAS])
        done.append(f"created bridge {spec.bridge}")
        bridge = links()[spec.bridge]
    wanted = ipaddress.IPv4Interface(spec.gateway_interface)
    for address in bridge.addresses:
        if address != wanted:
            run(["ip", "addr", "del", str(address), "dev", spec.bridge])
            done.append(f"removed stale address {address} from {spec.bridge}")
    if wanted not in bridge.addresses:
        run(["ip", "addr", "add", str(wanted), "dev", spec.bridge])
        done.append(f"gave {spec.bridge} {wanted}")
    run(["ip", "link", "set", spec.bridge, "up"])

    if _IP_FORWARD.read_text().strip() != "1":
        _IP_FORWARD_SAVED.parent.mkdir(parents=True, exist_ok=True)
        _IP_FORWARD_SAVED.write_text(_IP_FORWARD.read_text())
        _IP_FORWARD.write_text("1\n")
        done.append("switched on IPv4 forwarding")

    # Declare, flush and refill the table in one transaction: adopting a leftover table and
    # creating a new one are the same step.
    run(
        ["nft", "-f", "-"],
        input=f"table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n{nft_ruleset(spec)}",
    )
    return done


def down(spec: LabSpec) -> list[str]:
    """Remove the lab's bridge and NAT table and restore forwarding. Foreign devices are left
    alone."""
    done = []
    if run(["nft", "list", "table", "ip", NFT_TABLE], check=False).returncode == 0:
        run(["nft", "delete", "table", "ip", NFT_TABLE])
        done.append(f"removed nft table {NFT_TABLE}")
    bridge = links().get(spec.bridge)
    if bridge is not None:
        if bridge.alias != BRIDGE_ALIAS:
            raise LabError(
                f"device {spec.bridge} is not the lab's bridge (no alias {BRIDGE_ALIAS}); "
                "left it in place"
            )
        for link in links().values():
            if link.master == spec.bridge:
                run(["ip", "link", "del", link.name], check=False)
                done.append(f"removed leftover port {link.name}")
        run(["ip", "link", "del", spec.bridge])
        done.append(f"removed bridge {spec.bridge}")
    if _IP_FORWARD_SAVED.exists():
        _IP_FORWARD.write_text(_IP_FORWARD_SAVED.read_text())
        _IP_FORWARD_SAVED.unlink()
        done.append("restored IPv4 forwarding setting")
    return done


def status(spec: LabSpec) -> dict[str, str]:
    bridge = links().get(spec.bridge)
    nat = run(["nft", "list", "table", "ip", NFT_TABLE], check=False).returncode == 0
    return {
        "bridge": (
            f"{spec.bridge} {', '.join(str(a) for a in bridge.addresses)}" if bridge else "absent"
        ),
        "nat": f"nft table ip {NFT_TABLE}" if nat else "absent",
    }
