"""The VMs' network (``sluice:network``): an existing or a created Linux bridge with an optional
VLAN, or an SDN simple zone; and the subnet, gateway and DNS each VM's cloud-init gets."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from config_fields import Section, hint

MODES = ("bridge", "sdn")
_BRIDGE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]{0,9}$")
_SDN_ID = re.compile(r"^[a-z][a-z0-9]{1,7}$")
_PORT = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.:-]{0,14}$")
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z][a-z0-9-]{0,61}[a-z0-9]$"
)


@dataclass(frozen=True)
class Network:
    mode: str  # "bridge" (an existing or created Linux bridge) or "sdn" (a simple zone)
    bridge: str  # what the VMs' NIC attaches to: the Linux bridge, or the SDN vnet
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    nameservers: tuple[str, ...]
    vlan: int | None = None
    create_bridge: bool = False
    bridge_ports: tuple[str, ...] = ()
    sdn_zone: str = ""
    sdn_snat: bool = True
    search_domains: tuple[str, ...] = ()
    domain: str = ""


@dataclass(frozen=True)
class _Attachment:
    """The layer-2 part of the config: where the NIC attaches and what gets created for it."""

    bridge: str
    vlan: int | None = None
    create_bridge: bool = False
    bridge_ports: tuple[str, ...] = ()
    sdn_zone: str = ""
    sdn_snat: bool = True


def read_network(section: Section) -> Network | None:
    mode = section.text("mode", "bridge") or "bridge"
    addressing = _addressing(section)
    if mode == "sdn":
        attachment = _sdn(section)
    else:
        if mode != "bridge":
            section.problem(
                "mode", f"is {mode!r}: use bridge (a Linux bridge) or sdn (an SDN zone)"
            )
        attachment = _bridge(section)
    section.finish()
    if addressing is None:
        return None
    subnet, gateway, nameservers, search_domains, domain = addressing
    return Network(
        mode=mode,
        bridge=attachment.bridge,
        subnet=subnet,
        gateway=gateway,
        nameservers=nameservers,
        vlan=attachment.vlan,
        create_bridge=attachment.create_bridge,
        bridge_ports=attachment.bridge_ports,
        sdn_zone=attachment.sdn_zone,
        sdn_snat=attachment.sdn_snat,
        search_domains=search_domains,
        domain=domain,
    )


def _addressing(
    section: Section,
) -> (
    tuple[ipaddress.IPv4Network, ipaddress.IPv4Address, tuple[str, ...], tuple[str, ...], str]
    | None
):
    """Subnet, gateway, nameservers, search domains and domain; None when one is unusable."""
    subnet_text = section.text(
        "subnet", missing=hint("sluice:network.subnet", "10.20.0.0/24", "the VMs' subnet")
    )
    gateway_text = section.text(
        "gateway", missing=hint("sluice:network.gateway", "10.20.0.1", "the subnet's router")
    )
    nameservers = section.strings(
        "nameservers",
        missing="set the DNS servers, e.g. `pulumi config set --path "
        "'sluice:network.nameservers[0]' 10.20.0.53`",
    )
    search_domains = section.strings("searchDomains")
    domain = (section.text("domain", "") or "").lower()
    subnet = gateway = None
    if subnet_text:
        try:
            subnet = ipaddress.IPv4Network(subnet_text)
        except ValueError:
            section.problem(
                "subnet", f"{subnet_text!r} is not an IPv4 network such as 10.20.0.0/24"
            )
    if gateway_text:
        try:
            gateway = ipaddress.IPv4Address(gateway_text)
        except ValueError:
            section.problem("gateway", f"{gateway_text!r} is not an IPv4 address")
    if subnet is not None and gateway is not None and gateway not in subnet:
        section.problem(
            "gateway",
            f"{gateway} is outside sluice:network.subnet {subnet}: set the subnet's router",
        )
    bad_servers = False
    for index, server in enumerate(nameservers):
        try:
            ipaddress.ip_address(server)
        except ValueError:
            section.problem(f"nameservers[{index}]", f"{server!r} is not an IP address")
            bad_servers = True
    names = [(f"searchDomains[{i}]", name) for i, name in enumerate(search_domains)]
    for key, name in names + ([("domain", domain)] if domain else []):
        if not _DNS_NAME.match(name.lower()):
            section.problem(key, f"{name!r} is not a DNS domain such as sluice.example.net")
    if subnet is None or gateway is None or not nameservers or bad_servers:
        return None
    return subnet, gateway, nameservers, search_domains, domain


def _bridge(section: Section) -> _Attachment:
    bridge = section.text("bridge", "vmbr0") or "vmbr0"
    vlan = section.integer("vlan", minimum=1, maximum=4094)
    create = section.flag("createBridge", False)
    ports = section.strings("bridgePorts")
    if section.has("sdn"):
        section.problem(
            "sdn", "is set but sluice:network.mode is bridge: set mode: sdn, or remove sdn"
        )
    if not _BRIDGE.match(bridge):
        section.problem(
            "bridge",
            f"{bridge!r} is not a Linux bridge name (a letter, then up to 9 letters, digits or _), "
            "e.g. vmbr0",
        )
    if create and not ports:
        section.problem(
            "bridgePorts",
            "is empty but createBridge is true: name the NIC(s) the bridge joins on every node, "
            "e.g. [eno2], or set createBridge: false to use an existing bridge",
        )
    if ports and not create:
        section.problem(
            "bridgePorts", "is set but createBridge is false: remove it, or set createBridge: true"
        )
    for index, port in enumerate(ports):
        if not _PORT.match(port):
            section.problem(f"bridgePorts[{index}]", f"{port!r} is not a network interface name")
    return _Attachment(bridge, vlan, create, ports)


def _sdn(section: Section) -> _Attachment:
    for key in ("bridge", "vlan", "createBridge", "bridgePorts"):
        if section.has(key):
            section.problem(
                key, "applies to mode bridge only (the SDN vnet is the VMs' bridge): remove it"
            )
    if not section.has("sdn"):
        section.problems.append(
            "sluice:network.sdn is not set but sluice:network.mode is sdn: set sdn.zone and "
            "sdn.vnet (e.g. zone: sluice, vnet: vnsluice)"
        )
        return _Attachment("")
    sdn = section.section("sdn")
    zone = sdn.text("zone", missing="set the simple zone's id, e.g. sluice") or ""
    vnet = sdn.text("vnet", missing="set the vnet's id, e.g. vnsluice") or ""
    snat = sdn.flag("snat", True)
    for key, value in (("zone", zone), ("vnet", vnet)):
        if value and not _SDN_ID.match(value):
            sdn.problem(
                key,
                f"{value!r} is not an SDN id (2-8 lower-case letters and digits, a letter first)",
            )
    sdn.finish()
    return _Attachment(vnet, sdn_zone=zone, sdn_snat=snat)
