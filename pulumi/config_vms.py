"""The study's three VMs (``sluice:vms.<role>``): ids, nodes, addresses and sizes, with the
study's sizes as defaults and minimums, and the checks across VMs (unique ids, addresses)."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

from config_fields import Section, cloudinit_problem, hint
from config_network import Network
from config_proxmox import ImageSource, TemplateSource, is_node_name

from sluice_infra import pulumi_inventory

ROLES = pulumi_inventory.ROLES
#: Proxmox starts the VMs in this order at boot (and stops them in reverse).
STARTUP_ORDER = {"db": 1, "stream": 2, "app": 3}


@dataclass(frozen=True)
class Size:
    vcpu: int
    memory_gb: int


#: The study's VM sizes for 400,000 events/min: the defaults, and the minimum accepted.
STUDY_SIZES = {"db": Size(8, 32), "app": Size(12, 24), "stream": Size(6, 16)}
#: Data disk defaults (GB): PGDATA on db; Prometheus TSDB on app; Kafka logs and Redis on stream.
DATA_DISK_GB = {"db": 500, "app": 100, "stream": 1000}
OS_DISK_GB = 32
#: No disk below this (GB): the Debian image, packages, logs and the Sluice wheelhouse.
MIN_DISK_GB = 20
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


@dataclass(frozen=True)
class Vm:
    role: str
    hostname: str
    vm_id: int
    node: str
    address: ipaddress.IPv4Address
    vcpu: int
    sockets: int
    memory_gb: int
    os_disk_gb: int
    data_disk_gb: int
    stateful: bool  # keeps data in this layout (PGDATA, Kafka logs, Redis)
    protect: bool
    mac: str

    @property
    def startup_order(self) -> int:
        return STARTUP_ORDER[self.role]


def derived_mac(vm_id: int) -> str:
    """A stable, locally administered unicast MAC for the VM with ``vm_id`` (02:xx:...): the
    network-config matches the NIC by it, so the guest names it eth0 whatever its PCI slot."""
    digest = hashlib.sha256(f"sluice-vm-{vm_id}".encode()).digest()
    return ":".join(f"{byte:02x}" for byte in (0x02, *digest[:5]))


def read_vms(section: Section, node: str, layout: str) -> tuple[Vm, ...]:
    stateful = pulumi_inventory.stateful_hosts(pulumi_inventory.layout(layout))
    vms = []
    for role in ROLES:
        if not section.has(role):
            section.problems.append(
                f"sluice:vms.{role} is not set: give the {role} VM at least a free VM id and an "
                f"address (`pulumi config set --path sluice:vms.{role}.vmId <id>` and "
                f"`... sluice:vms.{role}.address <address in sluice:network.subnet>`)"
            )
            continue
        vm = _vm(section.section(role), role, node, role in stateful)
        if vm is not None:
            vms.append(vm)
    for name in section.values:
        section.has(name)  # reported below when it is not a role
        if name not in ROLES:
            section.problems.append(
                f"sluice:vms.{name} is not one of the study's VMs ({', '.join(ROLES)}): rename "
                f"or remove it"
            )
    return tuple(vms)


def _vm(section: Section, role: str, node: str, stateful: bool) -> Vm | None:
    study = STUDY_SIZES[role]
    why = f"(the study's {role} VM for 400,000 events/min)"
    vm_id = section.integer(
        "vmId",
        minimum=100,
        maximum=999_999_999,
        missing=f"pick a free VM id (`pvesh get /cluster/nextid`) and `pulumi config set --path "
        f"sluice:vms.{role}.vmId <id>`",
    )
    address_text = section.text(
        "address",
        missing=hint(f"sluice:vms.{role}.address", "10.20.0.10", "the VM's IPv4 address"),
    )
    hostname = section.text("hostname", role) or role
    vm_node = section.text("node", node) or node
    vcpu = section.integer("vcpu", study.vcpu, minimum=study.vcpu, maximum=512, why=why)
    sockets = section.integer("sockets", 1, minimum=1, maximum=8)
    memory = section.integer("memoryGb", study.memory_gb, minimum=study.memory_gb, why=why)
    os_disk = section.integer("osDiskGb", OS_DISK_GB, minimum=MIN_DISK_GB)
    data_disk = section.integer("dataDiskGb", DATA_DISK_GB[role], minimum=MIN_DISK_GB)
    protect = section.flag("protect", stateful)
    mac = (section.text("mac", "") or "").lower()
    section.finish()
    address = None
    if address_text:
        try:
            address = ipaddress.IPv4Address(address_text)
        except ValueError:
            section.problem(
                "address", f"{address_text!r} is not an IPv4 address such as 10.20.0.10"
            )
    reason = cloudinit_problem(hostname=hostname)
    if reason:
        section.problem("hostname", f"{hostname!r}: {reason}")
    if vm_node and not is_node_name(vm_node):
        section.problem("node", f"{vm_node!r} is not a Proxmox node name")
    if vcpu and sockets and vcpu % sockets:
        section.problem(
            "sockets", f"is {sockets}, which does not divide vcpu {vcpu}: pick a divisor"
        )
    if mac and (not _MAC.match(mac) or int(mac[:2], 16) & 1):
        section.problem("mac", f"{mac!r} is not a unicast MAC such as 02:5c:00:00:00:10")
    if None in (vm_id, address, vcpu, sockets, memory, os_disk, data_disk) or reason:
        return None
    assert vm_id is not None and address is not None  # for the type checker
    return Vm(
        role=role,
        hostname=hostname,
        vm_id=vm_id,
        node=vm_node,
        address=address,
        vcpu=int(vcpu or 0),
        sockets=int(sockets or 1),
        memory_gb=int(memory or 0),
        os_disk_gb=int(os_disk or 0),
        data_disk_gb=int(data_disk or 0),
        stateful=stateful,
        protect=protect,
        mac=mac or derived_mac(vm_id),
    )


def check_addresses(problems: list[str], network: Network, vms: tuple[Vm, ...]) -> None:
    subnet = network.subnet
    for vm in vms:
        key = f"sluice:vms.{vm.role}.address"
        if vm.address not in subnet:
            problems.append(
                f"{key} {vm.address} is outside sluice:network.subnet {subnet}: give the VM an "
                f"address inside it (or change the subnet)"
            )
        elif vm.address in (subnet.network_address, subnet.broadcast_address):
            problems.append(
                f"{key} {vm.address} is the network or broadcast address of {subnet}: pick a "
                f"host address"
            )
        elif vm.address == network.gateway:
            problems.append(
                f"{key} {vm.address} is sluice:network.gateway: give the VM its own address"
            )


def check_network_nodes(problems: list[str], network: Network, vms: tuple[Vm, ...]) -> None:
    nodes = sorted({vm.node for vm in vms})
    if network.mode == "sdn" and len(nodes) > 1:
        problems.append(
            f"sluice:network.mode sdn (a simple zone) connects VMs on one node only, but the "
            f"VMs run on {', '.join(nodes)}: put them on one node (sluice:vms.<role>.node), or "
            f"use mode bridge with a VLAN the nodes share"
        )


def check_unique(
    problems: list[str], vms: tuple[Vm, ...], source: TemplateSource | ImageSource | None
) -> None:
    for label, attribute in (
        ("vmId", "vm_id"),
        ("address", "address"),
        ("hostname", "hostname"),
        ("mac", "mac"),
    ):
        owners: dict[str, list[str]] = {}
        for vm in vms:
            owners.setdefault(str(getattr(vm, attribute)), []).append(vm.role)
        for value, roles in sorted(owners.items()):
            derived = all(vm.mac == derived_mac(vm.vm_id) for vm in vms if vm.role in roles)
            if label == "mac" and derived:
                continue  # the same vmId twice, reported as such
            if len(roles) > 1:
                keys = " and ".join(f"sluice:vms.{role}.{label}" for role in roles)
                problems.append(f"{keys} are both {value}: give each VM its own {label}")
    if isinstance(source, TemplateSource):
        for vm in vms:
            if vm.vm_id == source.vm_id:
                problems.append(
                    f"sluice:vms.{vm.role}.vmId {vm.vm_id} is the template's id "
                    f"(sluice:source.template.vmId): pick a free VM id"
                )
