"""``SluiceNetwork``: the layer 2 the VMs attach to.

- mode bridge, ``createBridge: false`` (the default): an existing Linux bridge (``vmbr0``);
  nothing is created, the VMs' NIC joins it, tagged with ``vlan`` if set.
- mode bridge, ``createBridge: true``: a Linux bridge of that name on every node that runs a VM,
  over ``bridgePorts``, VLAN-aware when ``vlan`` is set.
- mode sdn: an SDN simple zone on the VMs' node, a vnet (the VMs' bridge) and the subnet with its
  gateway on the node (SNAT for outbound traffic), applied cluster-wide.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi_proxmoxve as proxmoxve
from config import Network

import pulumi


class SluiceNetwork(pulumi.ComponentResource):
    """The VMs' network. ``bridge`` and ``vlan`` say where a NIC attaches; a VM must wait for
    every resource in ``ready`` before it boots."""

    bridge: str
    vlan: int | None
    ready: list[pulumi.Resource]

    def __init__(
        self,
        name: str,
        network: Network,
        nodes: Sequence[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sluice:proxmox:Network", name, None, opts)
        self.bridge = network.bridge
        self.vlan = network.vlan
        self.ready = []
        child = pulumi.ResourceOptions(parent=self)
        if network.mode == "bridge" and network.create_bridge:
            self.ready = [
                proxmoxve.network.linux.Bridge(
                    f"{name}-{node}",
                    node_name=node,
                    name=network.bridge,
                    ports=list(network.bridge_ports),
                    vlan_aware=network.vlan is not None,
                    autostart=True,
                    comment="Sluice VMs (Pulumi)",
                    opts=child,
                )
                for node in nodes
            ]
        elif network.mode == "sdn":
            self.ready = [self._sdn(name, network, nodes, child)]
        self.register_outputs({"bridge": self.bridge, "vlan": self.vlan})

    def _sdn(
        self, name: str, network: Network, nodes: Sequence[str], child: pulumi.ResourceOptions
    ) -> pulumi.Resource:
        zone = proxmoxve.sdn.zone.Simple(
            f"{name}-zone",
            resource_id=network.sdn_zone,
            nodes=list(nodes),
            ipam="pve",
            opts=child,
        )
        vnet = proxmoxve.sdn.Vnet(
            f"{name}-vnet",
            resource_id=network.bridge,
            zone=zone.resource_id,
            alias="Sluice VMs",
            opts=child,
        )
        subnet = proxmoxve.sdn.Subnet(
            f"{name}-subnet",
            vnet=vnet.resource_id,
            cidr=str(network.subnet),
            gateway=str(network.gateway),
            snat=network.sdn_snat,
            opts=child,
        )
        # Proxmox stages SDN changes until they are applied; re-apply whenever they change.
        return proxmoxve.sdn.Applier(
            f"{name}-apply",
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[zone, vnet, subnet],
                replacement_trigger={
                    "zone": network.sdn_zone,
                    "vnet": network.bridge,
                    "nodes": list(nodes),
                    "subnet": str(network.subnet),
                    "gateway": str(network.gateway),
                    "snat": network.sdn_snat,
                },
            ),
        )
