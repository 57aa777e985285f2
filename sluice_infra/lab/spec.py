"""The lab's shape, read from an Ansible inventory: the inventory is the single source of truth
for which machines exist and their addresses (``ansible_host``); ``group_vars/all/lab.yml``
holds the lab-only settings (subnet, bridge, memory weights)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from sluice_infra.lab import LabError
from sluice_infra.settings import SettingsError, group_vars_all

_BRIDGE = re.compile(r"[a-z][a-z0-9_-]{0,14}")
# Host-side veth names are "vb-<machine>", and interface names have at most 15 characters.
_MACHINE = re.compile(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?")


@dataclass(frozen=True)
class MachineSpec:
    name: str
    address: ipaddress.IPv4Address
    memory_weight: float


@dataclass(frozen=True)
class LabSpec:
    inventory: Path
    subnet: ipaddress.IPv4Network
    bridge: str
    admin_user: str
    memory_share: float
    machines: tuple[MachineSpec, ...]

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The bridge's address: the machines' gateway, NAT source and apt cache."""
        return next(self.subnet.hosts())

    @property
    def gateway_interface(self) -> str:
        return f"{self.gateway}/{self.subnet.prefixlen}"

    def machine(self, name: str) -> MachineSpec:
        for machine in self.machines:
            if machine.name == name:
                return machine
        known = ", ".join(m.name for m in self.machines)
        raise LabError(f"no machine {name!r} in {self.inventory} (machines: {known})")

    def memory_caps(self, host_memory_bytes: int) -> dict[str, int]:
        """Per-machine memory caps in bytes: the seed proportions scaled to the host."""
        budget = host_memory_bytes * self.memory_share
        total = sum(m.memory_weight for m in self.machines)
        return {m.name: int(budget * m.memory_weight / total) for m in self.machines}


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise LabError(f"{path} is missing: the lab reads its settings from it") from exc
    except yaml.YAMLError as exc:
        raise LabError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise LabError(f"{path} must hold a mapping")
    return data


def load(inventory: Path) -> LabSpec:
    """Read and check the lab described by ``inventory``. Every problem is reported at once."""
    inventory = Path(inventory)
    hosts_file = inventory / "hosts.yml"
    settings_file = inventory / "group_vars" / "all" / "lab.yml"
    main_file = inventory / "group_vars" / "all" / "main.yml"
    hosts = (_load_yaml(hosts_file).get("all") or {}).get("hosts") or {}
    settings = _load_yaml(settings_file)
    try:
        group_vars = group_vars_all(inventory)  # every group_vars/all file, merged as Ansible does
    except SettingsError as exc:
        raise LabError(str(exc)) from None
    problems: list[str] = []

    subnet_text = settings.get("lab_subnet", "")
    try:
        subnet = ipaddress.IPv4Network(str(subnet_text))
    except ValueError:
        raise LabError(
            f"{settings_file}: lab_subnet {subnet_text!r} is not an IPv4 network such as "
            "10.77.0.0/24"
        ) from None
    if subnet.num_addresses < 8:
        problems.append(f"{settings_file}: lab_subnet {subnet} is too small; use a /24")
    if not subnet.is_private:
        problems.append(
            f"{settings_file}: lab_subnet {subnet} is not a private range; use one from "
            "10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"
        )

    bridge = str(settings.get("lab_bridge", ""))
    if not _BRIDGE.fullmatch(bridge):
        problems.append(
            f"{settings_file}: lab_bridge {bridge!r} must be a short interface name "
            "(letters, digits, '-', at most 15 characters)"
        )

    admin_user = str(group_vars.get("ansible_user", ""))
    if not admin_user:
        problems.append(f"{main_file}: set ansible_user, the admin account cloud-init creates")

    share = settings.get("lab_memory_share", 0.9)
    if not isinstance(share, int | float) or not 0 < share <= 1:
        problems.append(f"{settings_file}: lab_memory_share {share!r} must be in (0, 1]")
        share = 0.9

    weights = settings.get("lab_memory_weights") or {}
    gateway = next(subnet.hosts())
    machines: list[MachineSpec] = []
    seen: dict[ipaddress.IPv4Address, str] = {}
    if not hosts:
        problems.append(f"{hosts_file}: all.hosts is empty; the lab needs its machines there")
    for name, hostvars in hosts.items():
        hostvars = hostvars or {}
        if not _MACHINE.fullmatch(name):
            problems.append(
                f"{hosts_file}: host {name!r}: a lab machine name has at most 12 lower-case "
                "letters, digits or '-'"
            )
            continue
        raw = hostvars.get("ansible_host")
        try:
            address = ipaddress.IPv4Address(str(raw))
        except ValueError:
            problems.append(f"{hosts_file}: host {name}: ansible_host {raw!r} is not an address")
            continue
        if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
            problems.append(
                f"{hosts_file}: host {name}: ansible_host {address} is outside lab_subnet "
                f"{subnet}; change one of them"
            )
        elif address == gateway:
            problems.append(
                f"{hosts_file}: host {name}: ansible_host {address} is the bridge's address; "
                "the machines start at .2"
            )
        if address in seen:
            problems.append(
                f"{hosts_file}: hosts {seen[address]} and {name} share the address {address}"
            )
        seen[address] = name
        weight = weights.get(name)
        if not isinstance(weight, int | float) or weight <= 0:
            problems.append(
                f"{settings_file}: lab_memory_weights has no positive weight for {name}"
            )
            weight = 1
        machines.append(MachineSpec(name=name, address=address, memory_weight=float(weight)))

    if problems:
        raise LabError("the lab inventory has problems:\n  - " + "\n  - ".join(problems))
    return LabSpec(
        inventory=inventory,
        subnet=subnet,
        bridge=bridge,
        admin_user=admin_user,
        memory_share=float(share),
        machines=tuple(machines),
    )
