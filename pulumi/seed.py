"""The cloud-init seed a VM boots with, as Proxmox snippets.

user-data, network-config and meta-data are exactly what ``sluice_infra.cloudinit.render`` gives
for the VM's settings: the renderer, and the templates, the lab boots its machines with. Only
vendor-data is Proxmox's own: it installs and starts the QEMU guest agent, which the VM's
``agent`` setting relies on and which a container in the lab has no channel for. cloud-init
merges it under user-data, so it cannot change what the lab proves.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import yaml
from config import StackConfig, Vm

from sluice_infra import cloudinit

#: Seed file kind -> the initialization argument of proxmoxve.VmLegacy that references it.
KINDS = {
    "user-data": "user_data_file_id",
    "network-config": "network_data_file_id",
    "meta-data": "meta_data_file_id",
    "vendor-data": "vendor_data_file_id",
}

VENDOR_DATA = "#cloud-config\n" + yaml.safe_dump(
    {
        # Proxmox reads addresses and freezes filesystems for backups through the guest agent;
        # the Debian cloud images do not ship it. packages: implies an apt update first.
        "packages": ["qemu-guest-agent"],
        "runcmd": [["systemctl", "start", "qemu-guest-agent"]],
    },
    sort_keys=False,
)


@dataclass(frozen=True)
class SeedFile:
    kind: str
    file_name: str
    text: str


def seed_files(config: StackConfig, vm: Vm) -> list[SeedFile]:
    """The four snippets of ``vm``. Each file name carries a digest of its text, so a changed
    seed is a new snippet the VM switches to (cloud-init applies it at the next boot) and the old
    one is deleted only after the switch."""
    seed = cloudinit.render(config.bootstrap(vm))
    texts = {**seed.files(), "vendor-data": VENDOR_DATA}
    return [
        SeedFile(kind, f"sluice-{vm.hostname}-{kind}-{_digest(texts[kind])}.yaml", texts[kind])
        for kind in KINDS
    ]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]
