"""The stack's settings (``sluice:*`` in ``Pulumi.<stack>.yaml``), typed and validated before any
resource exists; ``Pulumi.example.yaml`` documents every key.

:func:`load` turns the raw values into a :class:`StackConfig` or raises :class:`ConfigError`
listing every problem at once, each naming the key, the value and the fix. :func:`from_pulumi`
reads the running stack's values and calls it. Each part has its reader module:
``config_proxmox`` (API, SSH, source, storage), ``config_network``, ``config_vms``.
"""

from __future__ import annotations

import json
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from config_fields import Section, cloudinit_problem, hint
from config_network import Network, read_network
from config_proxmox import (
    ImageSource,
    ProxmoxSettings,
    Storage,
    TemplateSource,
    is_node_name,
    read_proxmox,
    read_source,
    read_storage,
)
from config_vms import (
    ROLES,
    STARTUP_ORDER,
    STUDY_SIZES,
    Vm,
    check_addresses,
    check_network_nodes,
    check_unique,
    derived_mac,
    read_vms,
)

import pulumi
from sluice_infra import pulumi_inventory
from sluice_infra.cloudinit import CloudInitError, HostBootstrap

__all__ = [
    "NAMESPACE",
    "ROLES",
    "STARTUP_ORDER",
    "STUDY_SIZES",
    "ConfigError",
    "ImageSource",
    "Network",
    "ProxmoxSettings",
    "StackConfig",
    "Storage",
    "TemplateSource",
    "Vm",
    "derived_mac",
    "from_pulumi",
    "load",
]

NAMESPACE = "sluice"

#: Top-level keys: name -> whether its value is JSON (objects and lists) or plain text.
TOP_LEVEL_KEYS = {
    "proxmox": "json",
    "proxmoxApiToken": "text",
    "layout": "text",
    "node": "text",
    "source": "json",
    "storage": "json",
    "network": "json",
    "adminUser": "text",
    "sshAuthorizedKeys": "json",
    "aptProxy": "text",
    "timezone": "text",
    "vms": "json",
}


class ConfigError(ValueError):
    """The stack config is invalid; the message lists every problem with its key and fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            f"the stack config has {len(problems)} problem(s) (keys as in Pulumi.example.yaml; "
            f"`pulumi config` shows the current values):\n  - " + "\n  - ".join(problems)
        )


@dataclass(frozen=True)
class StackConfig:
    proxmox: ProxmoxSettings
    layout: str
    source: TemplateSource | ImageSource
    storage: Storage
    network: Network
    admin_user: str
    ssh_authorized_keys: tuple[str, ...]
    vms: tuple[Vm, ...]
    apt_proxy: str = ""
    timezone: str = "Etc/UTC"

    def vm(self, role: str) -> Vm:
        return next(vm for vm in self.vms if vm.role == role)

    @property
    def nodes(self) -> tuple[str, ...]:
        """The Proxmox nodes that run a VM, sorted."""
        return tuple(sorted({vm.node for vm in self.vms}))

    def bootstrap(self, vm: Vm) -> HostBootstrap:
        """What cloud-init needs for ``vm``: the input of sluice_infra.cloudinit.render, which
        the lab renders too."""
        return HostBootstrap(
            hostname=vm.hostname,
            address=f"{vm.address}/{self.network.subnet.prefixlen}",
            gateway=str(self.network.gateway),
            nameservers=self.network.nameservers,
            admin_user=self.admin_user,
            ssh_authorized_keys=self.ssh_authorized_keys,
            domain=self.network.domain,
            interface_name="eth0",
            interface_mac=vm.mac,
            apt_proxy=self.apt_proxy,
            timezone=self.timezone,
            search_domains=self.network.search_domains,
        )


def load(values: Mapping[str, Any], *, token_is_secret: bool = True) -> StackConfig:
    """The stack config from ``values`` (top-level key without ``sluice:`` -> parsed value)."""
    problems: list[str] = []
    top = Section(NAMESPACE, values, problems, separator=":")
    proxmox = read_proxmox(top, token_is_secret)
    layout = top.text("layout", "seed") or "seed"
    if layout not in pulumi_inventory.LAYOUT_INVENTORIES:
        top.problem("layout", f"is {layout!r}: use seed (the study's) or spread")
        layout = "seed"
    node = top.text("node", missing=hint("sluice:node", "pve1", "the node that runs the VMs"))
    if node and not is_node_name(node):
        top.problem("node", f"{node!r} is not a Proxmox node name")
    source = read_source(top.section("source"), node or "")
    storage = read_storage(top.section("storage"))
    network = read_network(top.section("network"))
    admin_user = top.text("adminUser", "ops") or "ops"
    keys = top.strings(
        "sshAuthorizedKeys",
        missing="give the admin user's SSH public keys, e.g. `pulumi config set --path "
        "'sluice:sshAuthorizedKeys[0]' \"$(cat ~/.ssh/id_ed25519.pub)\"`",
    )
    apt_proxy = top.text("aptProxy", "") or ""
    timezone = top.text("timezone", "Etc/UTC") or "Etc/UTC"
    _check_host_settings(top, admin_user, keys, apt_proxy, timezone)
    vms = read_vms(top.section("vms"), node or "", layout)
    top.finish()
    if network is not None:
        check_addresses(problems, network, vms)
        check_network_nodes(problems, network, vms)
    check_unique(problems, vms, source)
    if problems or network is None or source is None or proxmox is None:
        raise ConfigError(problems or ["the stack config is incomplete"])
    config = StackConfig(
        proxmox=proxmox,
        layout=layout,
        source=source,
        storage=storage,
        network=network,
        admin_user=admin_user,
        ssh_authorized_keys=keys,
        vms=vms,
        apt_proxy=apt_proxy,
        timezone=timezone,
    )
    for vm in vms:  # whatever the checks above missed, the shared renderer refuses here
        try:
            config.bootstrap(vm).validate()
        except CloudInitError as exc:
            problems.append(f"sluice:vms.{vm.role}: {exc}")
    if problems:
        raise ConfigError(problems)
    return config


def from_pulumi() -> StackConfig:
    """The running stack's config (``pulumi up``/``preview``); raises :class:`ConfigError`."""
    bag = pulumi.Config(NAMESPACE)
    values: dict[str, Any] = {}
    problems = []
    for key in sorted(_configured_keys()):
        kind = TOP_LEVEL_KEYS.get(key)
        text = bag.get(key)
        if kind is None or text is None:
            values[key] = text  # load() names unknown keys
        elif kind == "json":
            try:
                values[key] = json.loads(text)
            except json.JSONDecodeError:
                problems.append(
                    f"sluice:{key} must be an object or a list (see Pulumi.example.yaml), not the "
                    f"text {text[:40]!r}: set it with `pulumi config set --path`"
                )
        else:
            values[key] = text
    token_is_secret = _is_secret(f"{NAMESPACE}:proxmoxApiToken")
    try:
        config = load(values, token_is_secret=token_is_secret)
    except ConfigError as exc:
        raise ConfigError(problems + exc.problems) from None
    if problems:
        raise ConfigError(problems)
    return config


def _is_secret(key: str) -> bool:
    """Whether the stack stores ``key`` encrypted: the CLI lists such keys in
    PULUMI_CONFIG_SECRET_KEYS, the Automation API through the runtime."""
    settings = pulumi.runtime.config
    return settings.is_config_secret(key) or key in settings.get_config_secret_keys_env()


def _configured_keys() -> set[str]:
    """Every ``sluice:*`` key the stack sets, without the namespace."""
    settings = pulumi.runtime.config  # the engine's config, set and from the environment
    keys = set(settings.CONFIG.get()) | set(settings.get_config_env())
    prefix = f"{NAMESPACE}:"
    return {key[len(prefix) :] for key in keys if key.startswith(prefix)}


def _check_host_settings(
    top: Section, admin_user: str, keys: tuple[str, ...], apt_proxy: str, timezone: str
) -> None:
    """Check the settings every VM's cloud-init shares with the lab's own validation."""
    fixes = {"adminUser": "a plain login name such as ops"}
    for key, change in [
        ("adminUser", {"admin_user": admin_user}),
        *[(f"sshAuthorizedKeys[{i}]", {"ssh_authorized_keys": (k,)}) for i, k in enumerate(keys)],
    ]:
        reason = cloudinit_problem(**change)
        if reason:
            fix = fixes.get(
                key, "the whole line of a public key file such as ~/.ssh/id_ed25519.pub"
            )
            top.problems.append(f"sluice:{key}: {reason}: set {fix}")
    if apt_proxy:
        parts = urlsplit(apt_proxy)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            top.problem("aptProxy", f"{apt_proxy!r} is not an http(s) URL such as http://apt:3142")
    try:
        zoneinfo.ZoneInfo(timezone)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        top.problem("timezone", f"{timezone!r} is not a time zone such as Etc/UTC or Europe/Warsaw")
