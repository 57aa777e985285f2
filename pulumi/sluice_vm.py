"""``SluiceVm``: one of the study's three VMs with its cloud-init snippets.

The VM is cloned from a template (with retries, to an explicit VM id) or built on the imported
Debian 12 genericcloud image. Settings, and why:

- CPU type ``host`` (every instruction the node has, for Kafka's and PostgreSQL's CRC and
  crypto paths) with NUMA on, so the guest sees the sockets it runs on;
- memory dedicated, ballooning off: PostgreSQL's shared buffers, Redis and the JVM heap size
  themselves from the memory they see at start;
- ``virtio-scsi-single`` with an iothread per disk; ``discard`` and ``ssd`` on both disks, so
  the guest's trim reaches thin storage; the data disk (PGDATA, Kafka logs, Redis) is separate
  from the OS disk and carries the serial :data:`DATA_DISK_SERIAL`, so the guest finds it at
  ``/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_sluice-data`` whatever the probe order;
- QEMU guest agent on (installed by the seed's vendor-data) with fstrim after moves;
- cloud-init from the snippets of :mod:`seed`, which exist before the VM references them;
- on boot, in the order db, stream, app; stateful VMs protected in Proxmox and in Pulumi;
- no automatic reboots during updates: a change that needs one fails until it is planned.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi_proxmoxve as proxmoxve
from config import StackConfig, TemplateSource, Vm
from network import SluiceNetwork
from seed import KINDS, seed_files

import pulumi

DATA_DISK_SERIAL = "sluice-data"
#: Seconds Proxmox waits after starting a VM before it starts the next one in the order.
UP_DELAY_S = 30
#: Seconds a VM gets to shut down cleanly: stateful ones flush PostgreSQL, Kafka and Redis.
DOWN_DELAY_S = {True: 180, False: 60}
#: Properties the provider reports as changed although nothing changed, or that matter only at
#: creation. Wildcards (``disks[*]``) do not work with this provider (muhlba91/pulumi-proxmoxve
#: issue 514), hence one entry per disk.
IGNORE_CHANGES = [
    # 8.x reports an all-zero speed block on every preview (muhlba91/pulumi-proxmoxve#664).
    "disks[0].speed",
    "disks[1].speed",
    # A re-downloaded or newer base image must never rebuild a running VM's OS disk.
    "disks[0].importFrom",
    # The clone source matters only when the VM is created.
    "clone",
]


class SluiceVm(pulumi.ComponentResource):
    """One VM and its cloud-init snippets; ``vm`` is the proxmoxve.VmLegacy resource."""

    snippets: dict[str, proxmoxve.FileLegacy]
    vm: proxmoxve.VmLegacy

    def __init__(
        self,
        name: str,
        config: StackConfig,
        spec: Vm,
        *,
        network: SluiceNetwork,
        image: proxmoxve.download.File | None,
        services: Sequence[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sluice:proxmox:Vm", name, None, opts)
        self.snippets = {
            item.kind: proxmoxve.FileLegacy(
                f"{name}-{item.kind}",
                content_type="snippets",
                datastore_id=config.storage.snippets,
                node_name=spec.node,
                source_raw=proxmoxve.FileLegacySourceRawArgs(
                    data=item.text, file_name=item.file_name
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for item in seed_files(config, spec)
        }
        waits_for = [*self.snippets.values(), *network.ready, *([image] if image else [])]
        self.vm = proxmoxve.VmLegacy(
            name,
            name=spec.hostname,
            node_name=spec.node,
            vm_id=spec.vm_id,
            description=_description(config, spec, services),
            tags=sorted({"sluice", spec.role, config.layout}),
            clone=_clone(config, spec),
            machine="q35",
            operating_system=proxmoxve.VmLegacyOperatingSystemArgs(type="l26"),
            cpu=proxmoxve.VmLegacyCpuArgs(
                type="host", cores=spec.vcpu // spec.sockets, sockets=spec.sockets, numa=True
            ),
            memory=proxmoxve.VmLegacyMemoryArgs(dedicated=spec.memory_gb * 1024, floating=0),
            scsi_hardware="virtio-scsi-single",
            disks=_disks(config, spec, image),
            boot_orders=["scsi0"],
            network_devices=[
                proxmoxve.VmLegacyNetworkDeviceArgs(
                    bridge=network.bridge,
                    vlan_id=network.vlan,
                    model="virtio",
                    mac_address=spec.mac.upper(),  # Proxmox reports it in upper case
                    queues=min(spec.vcpu, 16),
                    firewall=False,  # the hosts' own nftables rules (role common) filter
                )
            ],
            agent=proxmoxve.VmLegacyAgentArgs(
                enabled=True,
                trim=True,
                type="virtio",
                timeout="15m",
                wait_for_ip=proxmoxve.VmLegacyAgentWaitForIpArgs(ipv4=True),
            ),
            initialization=proxmoxve.VmLegacyInitializationArgs(
                datastore_id=config.storage.cloud_init,
                type="nocloud",
                **{KINDS[kind]: snippet.id for kind, snippet in self.snippets.items()},
            ),
            serial_devices=[proxmoxve.VmLegacySerialDeviceArgs(device="socket")],
            vga=proxmoxve.VmLegacyVgaArgs(type="serial0"),  # the cloud image's console
            tablet_device=False,
            on_boot=True,
            started=True,
            startup=proxmoxve.VmLegacyStartupArgs(
                order=spec.startup_order,
                up_delay=UP_DELAY_S,
                down_delay=DOWN_DELAY_S[spec.stateful],
            ),
            protection=spec.protect,
            migrate=True,  # a new node moves the VM instead of rebuilding it
            reboot_after_update=False,
            stop_on_destroy=False,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=waits_for,
                protect=spec.protect,
                ignore_changes=IGNORE_CHANGES,
            ),
        )
        self.register_outputs({"vmId": self.vm.vm_id, "node": self.vm.node_name})


def _clone(config: StackConfig, spec: Vm) -> proxmoxve.VmLegacyCloneArgs | None:
    source = config.source
    if not isinstance(source, TemplateSource):
        return None
    return proxmoxve.VmLegacyCloneArgs(
        vm_id=source.vm_id,
        node_name=source.node,
        full=source.full,
        retries=source.retries,
        datastore_id=config.storage.disks,
    )


def _disks(
    config: StackConfig, spec: Vm, image: proxmoxve.download.File | None
) -> list[proxmoxve.VmLegacyDiskArgs]:
    common = {
        "datastore_id": config.storage.disks,
        "iothread": True,
        "discard": "on",
        "ssd": True,
        "cache": "none",
        "aio": "io_uring",
    }
    os_disk = proxmoxve.VmLegacyDiskArgs(
        interface="scsi0",
        size=spec.os_disk_gb,
        import_from=image.id if image is not None else None,
        **common,
    )
    data_disk = proxmoxve.VmLegacyDiskArgs(
        interface="scsi1", size=spec.data_disk_gb, serial=DATA_DISK_SERIAL, **common
    )
    return [os_disk, data_disk]


def _description(config: StackConfig, spec: Vm, services: Sequence[str]) -> str:
    data = f"data disk serial {DATA_DISK_SERIAL}" + (" (stateful)" if spec.stateful else "")
    return (
        f"Sluice {spec.role} VM, {config.layout} layout: {', '.join(services)}. {data}. "
        f"Managed by Pulumi (project sluice); Ansible configures it."
    )
