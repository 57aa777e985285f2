"""The whole stack: provider, network, base image, the three VMs, and the outputs that
``make inventory`` turns into ``inventories/proxmox/hosts.yml``.

:func:`build` takes a validated :class:`config.StackConfig` and returns the outputs, so the
unit tests run it under ``pulumi.runtime.Mocks`` and read them.
"""

from __future__ import annotations

from typing import Any

import pulumi_proxmoxve as proxmoxve
from config import ImageSource, ProxmoxSettings, StackConfig
from network import SluiceNetwork
from sluice_vm import DATA_DISK_SERIAL, SluiceVm

import pulumi
from sluice_infra import pulumi_inventory


def build(config: StackConfig) -> dict[str, Any]:
    """Declare every resource of the stack; return its outputs (see :func:`outputs`)."""
    provider = proxmox_provider(config.proxmox)
    components = pulumi.ResourceOptions(providers=[provider])
    network = SluiceNetwork("network", config.network, config.nodes, opts=components)
    images = base_images(config, provider)
    layout = pulumi_inventory.layout(config.layout)
    vms = {
        spec.role: SluiceVm(
            spec.role,
            config,
            spec,
            network=network,
            image=images.get(spec.node),
            services=layout.groups_of(spec.role),
            opts=components,
        )
        for spec in config.vms
    }
    return outputs(config, vms)


def proxmox_provider(settings: ProxmoxSettings) -> proxmoxve.Provider:
    """The provider, configured from the stack config: the API token for the API (a secret in
    the state too), SSH to the nodes for the snippet uploads."""
    return proxmoxve.Provider(
        "proxmox",
        endpoint=settings.endpoint,
        api_token=pulumi.Output.secret(settings.api_token),
        insecure=settings.insecure,
        ssh=proxmoxve.ProviderSshArgs(
            username=settings.ssh_username,
            agent=settings.ssh_agent,
            nodes=[
                proxmoxve.ProviderSshNodeArgs(name=node, address=address)
                for node, address in sorted(settings.ssh_nodes.items())
            ],
        ),
    )


def base_images(
    config: StackConfig, provider: proxmoxve.Provider
) -> dict[str, proxmoxve.download.File]:
    """The Debian 12 genericcloud image on every node that runs a VM (none when cloning)."""
    source = config.source
    if not isinstance(source, ImageSource):
        return {}
    if not source.checksum:
        pulumi.log.warn(
            "sluice:source.image.checksum is not set: the image is not verified; copy its "
            "sha512 from the SHA512SUMS file beside it"
        )
    checksum = (
        {"checksum": source.checksum, "checksum_algorithm": source.checksum_algorithm}
        if source.checksum
        else {}
    )
    return {
        node: proxmoxve.download.File(
            f"image-{node}",
            node_name=node,
            datastore_id=config.storage.images,
            content_type="import",
            url=source.url,
            file_name=source.file_name,
            overwrite=False,  # a changed upstream file is not a reason to touch running VMs
            upload_timeout=1800,
            **checksum,
            # the VMs copied the image at creation: a replacement may delete it first, which
            # also frees its file name on the node for the new download
            opts=pulumi.ResourceOptions(provider=provider, delete_before_replace=True),
        )
        for node in config.nodes
    }


def outputs(config: StackConfig, vms: dict[str, SluiceVm]) -> dict[str, Any]:
    """What ``pulumi stack output --json`` shows: the layout, the admin user and each host's
    name, address, role and size (the input of sluice_infra.pulumi_inventory)."""
    hosts = {}
    for spec in config.vms:
        vm = vms[spec.role].vm
        hosts[spec.role] = {
            "name": vm.name,
            "address": str(spec.address),
            "role": spec.role,
            "vcpu": spec.vcpu,
            "memoryGb": spec.memory_gb,
            "osDiskGb": spec.os_disk_gb,
            "dataDiskGb": spec.data_disk_gb,
            "dataDiskSerial": DATA_DISK_SERIAL,
            "vmId": vm.vm_id,
            "node": vm.node_name,
            "protected": spec.protect,
        }
    return {
        "layout": config.layout,
        "adminUser": config.admin_user,
        "network": {
            "subnet": str(config.network.subnet),
            "gateway": str(config.network.gateway),
            "bridge": config.network.bridge,
            "vlan": config.network.vlan,
        },
        "hosts": hosts,
    }
