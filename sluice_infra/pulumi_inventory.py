"""The hand-off from Pulumi to Ansible: ``inventories/proxmox/hosts.yml`` from the stack outputs.

``make inventory`` pipes ``pulumi stack output --json`` into this module::

    python -m sluice_infra.pulumi_inventory --from-json - --out inventories/proxmox/hosts.yml

Placement comes from the lab inventory of the stack's layout (``inventories/lab`` for seed,
``inventories/lab-spread`` for spread): its groups, and the host variables it sets in them, are
copied as they are; only the addresses (and the admin user) come from the stack. Production
therefore places every service exactly where the lab does. The Pulumi program reads the same
layouts (:func:`layout`, :func:`stateful_hosts`) to protect the VMs that hold data.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import jinja2
import yaml

from sluice_infra import REPO_ROOT, TEMPLATES_DIR
from sluice_infra.settings import SHARED_FILE, SHARED_LINK, SettingsError, group_vars_all

#: Layout name -> the lab inventory whose groups it uses.
LAYOUT_INVENTORIES = {"seed": "lab", "spread": "lab-spread"}
#: The study's three VMs, in the order the inventory lists them.
ROLES = ("db", "app", "stream")
#: Groups whose hosts keep data (PGDATA, Kafka logs, Redis): their VMs are protected.
DATA_GROUPS = ("citus_coordinator", "citus_workers", "kafka", "redis_cluster")
#: Address ranges reserved for documentation (RFC 5737, RFC 3849): example values only.
DOCUMENTATION_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
TEMPLATE = "hosts.yml.j2"


class InventoryError(ValueError):
    """The stack outputs or a layout cannot make an inventory; the message says which and why."""


# --- layouts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """One group of a layout: its hosts with the host variables the group sets, its vars."""

    name: str
    hosts: tuple[tuple[str, dict[str, Any]], ...]
    vars: dict[str, Any]

    @property
    def members(self) -> list[str]:
        return [host for host, _ in self.hosts]


@dataclass(frozen=True)
class Layout:
    """Where services run: the groups of a lab inventory's ``hosts.yml``."""

    name: str
    source: Path
    hosts: tuple[str, ...]
    groups: tuple[Group, ...]

    def groups_of(self, host: str) -> list[str]:
        return [group.name for group in self.groups if host in group.members]


def layout(name: str, inventories: Path = REPO_ROOT / "inventories") -> Layout:
    """The layout ``name`` (seed or spread), read from its lab inventory."""
    if name not in LAYOUT_INVENTORIES:
        known = ", ".join(LAYOUT_INVENTORIES)
        raise InventoryError(f"layout {name!r} is unknown: use one of {known}")
    source = inventories / LAYOUT_INVENTORIES[name] / "hosts.yml"
    try:
        document = yaml.safe_load(source.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InventoryError(f"layout {name}: cannot read {source}: {exc}") from exc
    top = document.get("all") or {}
    hosts = tuple(top.get("hosts") or {})
    if sorted(hosts) != sorted(ROLES):
        raise InventoryError(
            f"layout {name}: {source} defines hosts {', '.join(hosts) or 'none'} under "
            f"all.hosts; the Proxmox stack provides exactly {', '.join(ROLES)}"
        )
    groups = []
    for group_name, body in (top.get("children") or {}).items():
        body = body or {}
        if body.get("children"):
            raise InventoryError(
                f"layout {name}: group {group_name} in {source} has child groups; the "
                f"Proxmox inventory copies flat groups only: list its hosts instead"
            )
        members = tuple(
            (host, dict(variables or {})) for host, variables in (body.get("hosts") or {}).items()
        )
        strangers = sorted({host for host, _ in members} - set(hosts))
        if strangers:
            raise InventoryError(
                f"layout {name}: group {group_name} in {source} names {', '.join(strangers)}, "
                f"which all.hosts does not define"
            )
        groups.append(Group(group_name, members, dict(body.get("vars") or {})))
    return Layout(name, source, hosts, tuple(groups))


def stateful_hosts(layout_: Layout) -> frozenset[str]:
    """The hosts that keep data in this layout (members of :data:`DATA_GROUPS`)."""
    return frozenset(
        host for group in layout_.groups if group.name in DATA_GROUPS for host in group.members
    )


# --- stack outputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """One VM as the stack reports it."""

    role: str
    name: str
    address: str
    vcpu: int
    memory_gb: int
    os_disk_gb: int
    data_disk_gb: int
    vm_id: int
    node: str


@dataclass(frozen=True)
class StackOutputs:
    layout: str
    admin_user: str
    hosts: tuple[Host, ...]


_HOST_FIELDS = {
    "name": ("name", str),
    "address": ("address", str),
    "role": ("role", str),
    "vcpu": ("vcpu", int),
    "memoryGb": ("memory_gb", int),
    "osDiskGb": ("os_disk_gb", int),
    "dataDiskGb": ("data_disk_gb", int),
    "vmId": ("vm_id", int),
    "node": ("node", str),
}
_FIX = "run `pulumi up` with this repository's program, then `make inventory` again"


def parse_outputs(data: Any) -> StackOutputs:
    """Check ``pulumi stack output --json`` and return it typed; every problem is reported at
    once, each naming the output key."""
    if not isinstance(data, Mapping):
        raise InventoryError(f"the stack outputs must be a JSON object, not {type(data).__name__}")
    problems: list[str] = []
    layout_name = data.get("layout")
    if layout_name not in LAYOUT_INVENTORIES:
        problems.append(
            f"output layout is {layout_name!r}: expected one of {', '.join(LAYOUT_INVENTORIES)}"
        )
    admin_user = data.get("adminUser")
    if not isinstance(admin_user, str) or not admin_user:
        problems.append(f"output adminUser is {admin_user!r}: expected the VMs' admin login")
    raw_hosts = data.get("hosts")
    hosts: list[Host] = []
    if not isinstance(raw_hosts, Mapping):
        problems.append(f"output hosts is {raw_hosts!r}: expected an object keyed by role")
        raw_hosts = {}
    elif sorted(raw_hosts) != sorted(ROLES):
        problems.append(
            f"output hosts has {', '.join(sorted(raw_hosts)) or 'no hosts'}: expected exactly "
            f"{', '.join(ROLES)}"
        )
    for role, raw in raw_hosts.items():
        host, host_problems = _parse_host(role, raw)
        problems += host_problems
        if host is not None:
            hosts.append(host)
    owners: dict[str, list[str]] = {}
    for host in hosts:
        owners.setdefault(host.address, []).append(host.role)
    for address, roles in sorted(owners.items()):
        if len(roles) > 1:
            problems.append(f"outputs hosts.{' and hosts.'.join(roles)} share address {address}")
    if problems:
        raise InventoryError(
            "the stack outputs cannot make an inventory:\n  "
            + "\n  ".join(problems)
            + f"\n({_FIX})"
        )
    order = {role: index for index, role in enumerate(ROLES)}
    hosts.sort(key=lambda host: order[host.role])
    return StackOutputs(str(layout_name), str(admin_user), tuple(hosts))


def _parse_host(role: str, raw: Any) -> tuple[Host | None, list[str]]:
    where = f"output hosts.{role}"
    if not isinstance(raw, Mapping):
        return None, [f"{where} is {raw!r}: expected an object"]
    problems, values = [], {}
    for key, (field, kind) in _HOST_FIELDS.items():
        value = raw.get(key)
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            problems.append(f"{where}.{key} is {value!r}: expected a positive whole number")
        elif kind is str and (not isinstance(value, str) or not value):
            problems.append(f"{where}.{key} is {value!r}: expected a non-empty string")
        values[field] = value
    if not problems:
        if values["role"] != role:
            problems.append(f"{where}.role is {values['role']!r}: expected {role!r}")
        try:
            values["address"] = str(ipaddress.ip_address(values["address"]))
        except ValueError:
            problems.append(f"{where}.address {values['address']!r} is not an IP address")
    return (None if problems else Host(**values)), problems


# --- rendering --------------------------------------------------------------------------------


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR / "inventory"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(
    outputs: StackOutputs, *, stack: str = "", inventories: Path = REPO_ROOT / "inventories"
) -> str:
    """``hosts.yml`` for the stack's VMs, with the groups of its layout's lab inventory."""
    place = layout(outputs.layout, inventories)
    try:
        source = place.source.relative_to(REPO_ROOT)
    except ValueError:
        source = place.source
    text = (
        _environment()
        .get_template(TEMPLATE)
        .render(
            stack=stack,
            layout=place.name,
            layout_source=str(source),
            admin_user=outputs.admin_user,
            hosts=outputs.hosts,
            groups=place.groups,
        )
    )
    _check_rendered(text, outputs, place)
    return text


def _check_rendered(text: str, outputs: StackOutputs, place: Layout) -> None:
    """The rendered text must parse back to the stack's hosts and the layout's groups."""
    top = (yaml.safe_load(text) or {}).get("all") or {}
    addresses = {host: (vars_ or {}).get("ansible_host") for host, vars_ in top["hosts"].items()}
    expected = {host.role: host.address for host in outputs.hosts}
    groups = {name: list((body or {}).get("hosts") or {}) for name, body in top["children"].items()}
    if addresses != expected or groups != {g.name: g.members for g in place.groups}:
        raise InventoryError(f"{TEMPLATE} rendered an inventory that does not match its input")


#: Settings that ship with an example network, and what the example would do if left in place.
EXAMPLE_NETWORK_SETTINGS = {
    "common_firewall_ssh_sources": "the hosts' firewall shuts SSH out",
    "sluice_http_client_cidrs": "the firewall keeps the event clients away from HAProxy",
}


def documentation_sources(
    inventory: Path, setting: str = "common_firewall_ssh_sources"
) -> list[str]:
    """Entries of the network list ``setting`` in ``inventory``'s group_vars/all that lie in
    documentation ranges: the shipped example value (see EXAMPLE_NETWORK_SETTINGS for what it
    would do)."""
    try:
        settings = group_vars_all(inventory)
    except (OSError, SettingsError):
        return []
    found = []
    for source in settings.get(setting) or []:
        try:
            network = ipaddress.ip_network(str(source), strict=False)
        except ValueError:
            continue  # the inventory validation names bad values
        if any(
            network.version == doc.version and network.subnet_of(doc)
            for doc in DOCUMENTATION_NETWORKS
        ):
            found.append(str(source))
    return found


def write(text: str, out: Path) -> bool:
    """Write ``text`` to ``out`` atomically; return whether the file changed."""
    if out.exists() and out.read_text() == text:
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, out)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return True


def _read_json(source: str, stdin: TextIO) -> Any:
    where = "standard input" if source == "-" else source
    try:
        text = stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise InventoryError(f"cannot read the stack outputs from {where}: {exc}") from exc
    if not text.strip():
        raise InventoryError(
            f"{where} is empty: expected `pulumi stack output --json` of a stack that ran "
            f"`pulumi up` (is the right stack selected? `pulumi stack ls`)"
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InventoryError(
            f"{where} is not JSON ({exc}): pipe `pulumi stack output --json`"
        ) from None


def main(argv: Sequence[str] | None = None, stdin: TextIO = sys.stdin) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sluice_infra.pulumi_inventory",
        description="Render the Ansible inventory of the Proxmox VMs from the Pulumi outputs.",
    )
    parser.add_argument(
        "--from-json", required=True, metavar="FILE|-", help="`pulumi stack output --json`"
    )
    parser.add_argument("--out", type=Path, required=True, help="inventories/proxmox/hosts.yml")
    parser.add_argument("--stack", default="", help="the stack's name, for the file's header")
    args = parser.parse_args(argv)
    try:
        outputs = parse_outputs(_read_json(args.from_json, stdin))
        changed = write(render(outputs, stack=args.stack), args.out)
    except InventoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    hosts = ", ".join(f"{host.role} {host.address}" for host in outputs.hosts)
    print(
        f"{args.out}: {'written' if changed else 'up to date'} ({outputs.layout} layout: {hosts})"
    )
    shared = args.out.parent / "group_vars" / "all" / SHARED_LINK
    if not shared.is_file():
        target = os.path.relpath(SHARED_FILE, shared.parent)
        print(
            f"warning: {shared} is missing or a broken link: the hosts would miss the settings "
            f"every environment shares (ports, firewall entries, Kafka topics); restore it with "
            f"`ln -sf {target} {shared}`",
            file=sys.stderr,
        )
    main_yml = args.out.parent / "group_vars" / "all" / "main.yml"
    for setting, consequence in EXAMPLE_NETWORK_SETTINGS.items():
        examples = documentation_sources(args.out.parent, setting)
        if examples:
            print(
                f"warning: {setting} in {main_yml} is still the example {', '.join(examples)} "
                f"(a documentation range): set your network there before ansible-playbook, or "
                f"{consequence}",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
