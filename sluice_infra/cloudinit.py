"""Render a host's cloud-init seed (meta-data, user-data, network-config).

The lab writes the result into a machine's NoCloud seed directory; the Pulumi program uploads
the same user-data to Proxmox as a snippet. Both call :func:`render`, so the lab proves the
bootstrap that production uses.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field

import jinja2
import yaml

from sluice_infra import TEMPLATES_DIR

_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_USERNAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


class CloudInitError(ValueError):
    """A host's bootstrap settings are invalid; the message names the setting."""


@dataclass(frozen=True)
class HostBootstrap:
    """Everything cloud-init needs to bring one host onto the network, reachable over SSH."""

    hostname: str
    address: str  # with prefix length, e.g. 10.77.0.10/24
    gateway: str
    nameservers: tuple[str, ...]
    admin_user: str
    ssh_authorized_keys: tuple[str, ...]
    domain: str = ""
    interface_name: str = "eth0"
    interface_mac: str = ""
    apt_proxy: str = ""
    timezone: str = "Etc/UTC"
    search_domains: tuple[str, ...] = field(default_factory=tuple)

    def validate(self) -> None:
        where = f"host {self.hostname!r}"
        if not _HOSTNAME.fullmatch(self.hostname):
            raise CloudInitError(
                f"{where}: hostname must be lower-case letters, digits and '-' (RFC 1123)"
            )
        try:
            iface = ipaddress.ip_interface(self.address)
        except ValueError as exc:
            raise CloudInitError(
                f"{where}: address {self.address!r} is not an address with prefix "
                "length such as 10.77.0.10/24"
            ) from exc
        if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
            raise CloudInitError(
                f"{where}: address {self.address!r} is the subnet's network or broadcast "
                "address; give the host an address inside the subnet"
            )
        if iface.network.prefixlen == iface.max_prefixlen:
            raise CloudInitError(
                f"{where}: address {self.address!r} needs the subnet's prefix length, such as /24"
            )
        try:
            gateway = ipaddress.ip_address(self.gateway)
        except ValueError as exc:
            raise CloudInitError(f"{where}: gateway {self.gateway!r} is not an address") from exc
        if gateway not in iface.network:
            raise CloudInitError(
                f"{where}: gateway {self.gateway} is outside the host's subnet {iface.network}"
            )
        if gateway == iface.ip:
            raise CloudInitError(f"{where}: gateway {self.gateway} is the host's own address")
        if not self.nameservers:
            raise CloudInitError(f"{where}: set at least one nameserver")
        for server in self.nameservers:
            try:
                ipaddress.ip_address(server)
            except ValueError as exc:
                raise CloudInitError(f"{where}: nameserver {server!r} is not an address") from exc
        if not _USERNAME.fullmatch(self.admin_user) or self.admin_user == "root":
            raise CloudInitError(
                f"{where}: admin user {self.admin_user!r} must be a plain login name, not root"
            )
        if not self.ssh_authorized_keys:
            raise CloudInitError(f"{where}: give at least one SSH public key for the admin user")
        for key in self.ssh_authorized_keys:
            parts = key.split()
            if (
                len(parts) < 2
                or not parts[0].startswith(("ssh-", "ecdsa-", "sk-"))
                or not _BASE64.fullmatch(parts[1])
                or "\n" in key
            ):
                raise CloudInitError(f"{where}: {key[:30]!r}... is not an OpenSSH public key line")
        if self.interface_mac and not _MAC.fullmatch(self.interface_mac):
            raise CloudInitError(
                f"{where}: interface MAC {self.interface_mac!r} must look like 52:54:00:12:34:56"
            )


@dataclass(frozen=True)
class Seed:
    """The three NoCloud seed files, as text."""

    meta_data: str
    user_data: str
    network_config: str

    def files(self) -> dict[str, str]:
        return {
            "meta-data": self.meta_data,
            "user-data": self.user_data,
            "network-config": self.network_config,
        }


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR / "cloud-init"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_user_data(host: HostBootstrap) -> str:
    host.validate()
    return _render("user-data.yaml.j2", host, fqdn=_fqdn(host))


def render_network_config(host: HostBootstrap) -> str:
    host.validate()
    return _render("network-config.yaml.j2", host)


def render(host: HostBootstrap) -> Seed:
    """Render the whole seed. The instance id changes whenever user-data or network-config do,
    so cloud-init applies a changed seed on the next boot and leaves an unchanged one alone."""
    user_data = render_user_data(host)
    network_config = render_network_config(host)
    digest = hashlib.sha256((user_data + network_config).encode()).hexdigest()[:12]
    meta_data = _render("meta-data.yaml.j2", host, instance_id=f"sluice-{host.hostname}-{digest}")
    return Seed(meta_data=meta_data, user_data=user_data, network_config=network_config)


def _fqdn(host: HostBootstrap) -> str:
    return f"{host.hostname}.{host.domain}" if host.domain else host.hostname


def _render(template: str, host: HostBootstrap, **extra: str) -> str:
    context = {
        "hostname": host.hostname,
        "address": host.address,
        "gateway": host.gateway,
        "nameservers": list(host.nameservers),
        "admin_user": host.admin_user,
        "ssh_authorized_keys": list(host.ssh_authorized_keys),
        "interface_name": host.interface_name,
        "interface_mac": host.interface_mac,
        "apt_proxy": host.apt_proxy,
        "timezone": host.timezone,
        "search_domains": list(host.search_domains),
        **extra,
    }
    text = _environment().get_template(template).render(context)
    yaml.safe_load(text)  # a template bug must fail here, not on the booting host
    return text
