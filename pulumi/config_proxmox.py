"""What the stack needs from Proxmox: the API and SSH access, the VMs' source (a template to
clone or a Debian 12 genericcloud image to download) and the storages. Readers for
``sluice:proxmox``, ``sluice:proxmoxApiToken``, ``sluice:source`` and ``sluice:storage``."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from config_fields import Section, hint

CHECKSUM_ALGORITHMS = {
    "md5": 32,
    "sha1": 40,
    "sha224": 56,
    "sha256": 64,
    "sha384": 96,
    "sha512": 128,
}
#: File name endings Proxmox accepts for the import content type.
IMAGE_EXTENSIONS = (".qcow2", ".raw", ".vmdk")
_TOKEN = re.compile(r"^[^@\s]+@[^!\s]+![^=\s]+=\S+$")
_NODE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
_STORAGE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ProxmoxSettings:
    endpoint: str
    api_token: str = field(repr=False)
    insecure: bool = False
    ssh_username: str = "root"
    ssh_agent: bool = True
    ssh_nodes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TemplateSource:
    """Clone every VM from this Debian 12 cloud-init template."""

    vm_id: int
    node: str
    full: bool = True
    retries: int = 3


@dataclass(frozen=True)
class ImageSource:
    """Download this Debian 12 genericcloud image to each node and import it as the OS disk."""

    url: str
    file_name: str
    checksum: str = ""
    checksum_algorithm: str = ""


@dataclass(frozen=True)
class Storage:
    disks: str = "local-lvm"
    images: str = "local"
    snippets: str = "local"
    cloud_init: str = "local-lvm"


def is_node_name(name: str) -> bool:
    return bool(_NODE.match(name))


def read_proxmox(top: Section, token_is_secret: bool) -> ProxmoxSettings | None:
    section = top.section("proxmox")
    endpoint = section.text(
        "endpoint",
        missing=hint("sluice:proxmox.endpoint", "https://pve1.example.net:8006/", "the API URL"),
    )
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme != "https" or not parts.hostname:
            section.problem(
                "endpoint", f"{endpoint!r} is not an https:// URL such as https://pve1:8006/"
            )
    token = top.raw("proxmoxApiToken")
    if token is None or token == "":
        top.problems.append(
            'sluice:proxmoxApiToken is not set: create an API token (README, "Provisioning '
            'Proxmox VMs with Pulumi") and `pulumi config set --secret sluice:proxmoxApiToken '
            "'user@realm!tokenid=secret'`"
        )
        token = None
    elif not isinstance(token, str) or not _TOKEN.match(token.strip()):
        top.problems.append(  # never echo the value: it is a secret
            "sluice:proxmoxApiToken is not of the form user@realm!tokenid=secret: set the whole "
            "token with `pulumi config set --secret sluice:proxmoxApiToken ...`"
        )
        token = None
    elif not token_is_secret:
        top.problems.append(
            "sluice:proxmoxApiToken is stored in plain text in Pulumi.<stack>.yaml: encrypt it "
            "with `pulumi config set --secret sluice:proxmoxApiToken 'user@realm!tokenid=secret'`"
        )
    insecure = section.flag("insecure", False)
    ssh = section.section("ssh")
    username = ssh.text("username", "root") or "root"
    agent = ssh.flag("agent", True)
    nodes = ssh.mapping("nodes")
    for name, address in nodes.items():
        try:
            ipaddress.ip_address(address)
        except (TypeError, ValueError):
            ssh.problem(
                f"nodes.{name}", f"{address!r} is not an IP address: give the node's SSH address"
            )
    ssh.finish()
    section.finish()
    if endpoint is None or token is None:
        return None
    return ProxmoxSettings(endpoint, token.strip(), insecure, username, agent, nodes)


def read_source(section: Section, node: str) -> TemplateSource | ImageSource | None:
    has_template, has_image = section.has("template"), section.has("image")
    if has_template == has_image:
        section.problems.append(
            f"{section.path} must set exactly one of template (clone a Debian 12 cloud-init "
            f"template: template.vmId) or image (download a Debian 12 genericcloud image: "
            f"image.url){'; both are set' if has_template else ''}"
        )
    result: TemplateSource | ImageSource | None = None
    if has_template:
        template = section.section("template")
        vm_id = template.integer(
            "vmId",
            minimum=100,
            maximum=999_999_999,
            missing=hint("sluice:source.template.vmId", "9000", "the template's VM id"),
        )
        source_node = template.text("node", node) or node
        full = template.flag("full", True)
        retries = template.integer("retries", 3, minimum=0, maximum=10) or 0
        template.finish()
        if vm_id is not None:
            result = TemplateSource(vm_id, source_node, full, retries)
    if has_image:
        result = _image(section.section("image"))
    section.finish()
    return result


def _image(image: Section) -> ImageSource | None:
    url = image.text(
        "url",
        missing=hint(
            "sluice:source.image.url",
            "https://cloud.debian.org/images/cloud/bookworm/<release>/"
            "debian-12-genericcloud-amd64-<release>.qcow2",
            "the image URL",
        ),
    )
    file_name = image.text("fileName")
    checksum = (image.text("checksum", "") or "").lower()
    algorithm = image.text("checksumAlgorithm", "sha512" if checksum else "") or ""
    image.finish()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        image.problem("url", f"{url!r} is not an http(s) URL")
        return None
    file_name = file_name or parts.path.rsplit("/", 1)[-1]
    if not file_name.endswith(IMAGE_EXTENSIONS):
        image.problem(
            "fileName",
            f"{file_name!r} must end with {', '.join(IMAGE_EXTENSIONS)} (Proxmox's import "
            f"content type): set sluice:source.image.fileName, e.g. debian-12-genericcloud.qcow2",
        )
    if checksum:
        length = CHECKSUM_ALGORITHMS.get(algorithm)
        if length is None:
            image.problem(
                "checksumAlgorithm",
                f"is {algorithm!r}: use one of {', '.join(CHECKSUM_ALGORITHMS)}",
            )
        elif len(checksum) != length or not all(c in "0123456789abcdef" for c in checksum):
            image.problem(
                "checksum",
                f"is not a {algorithm} digest ({length} hex digits): copy the image's line from "
                f"the SHA512SUMS file beside it",
            )
    return ImageSource(url, file_name, checksum, algorithm)


def read_storage(section: Section) -> Storage:
    defaults = Storage()
    values = {}
    for key, attribute in (
        ("disks", "disks"),
        ("images", "images"),
        ("snippets", "snippets"),
        ("cloudInit", "cloud_init"),
    ):
        default = getattr(defaults, attribute)
        value = section.text(key, default) or default
        if not _STORAGE.match(value):
            section.problem(key, f"{value!r} is not a Proxmox storage id such as local-lvm")
        values[attribute] = value
    section.finish()
    return Storage(**values)
