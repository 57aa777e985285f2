"""Which kernel settings a host can change, and which of them differ from the running kernel.

On a VM every key applies. In a container (the lab's systemd-nspawn machines) the kernel is
the host's: only settings that live in the container's own network namespace (`net.*`)
can be written; `vm.*`, `fs.*`, `kernel.*` belong to the host. Some `net.*` keys are global
in the kernel: inside the container they are missing or read-only (net.core.rmem_max shows
mode 0444 in a child namespace), so the plan also takes which /proc/sys files root may write.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

HOST_KERNEL_REASON = "host kernel setting; set it on the host or on a VM"
NOT_NAMESPACED_REASON = (
    "read-only or missing in this container's network namespace, the kernel keeps it "
    "global; " + HOST_KERNEL_REASON
)
NAMESPACED_PREFIXES = ("net.",)
CONTAINER_TYPES = frozenset(
    {"container", "containerd", "docker", "lxc", "openvz", "podman", "systemd-nspawn", "wsl"}
)
KEY_PATTERN = re.compile(r"^[a-z0-9_]+(?:[./][A-Za-z0-9_\-]+)+$")


class SysctlPlan(TypedDict):
    """file: keys written to sysctl.d; apply: keys whose running value differs;
    skipped: keys this host cannot set, with the reason."""

    file: dict[str, str]
    apply: dict[str, str]
    skipped: dict[str, str]


def is_container(
    virtualization_type: str | None,
    virtualization_role: str | None = None,
    tech_guest: Iterable[str] = (),
) -> bool:
    """True when the host shares its kernel with a container host.

    Ansible reports an nspawn guest as type `container` (read from PID 1's environment when
    run as root) or `systemd-nspawn` (from /run/systemd/container), with `container` in
    virtualization_tech_guest either way.
    """
    if "container" in set(tech_guest or ()):
        return True
    return virtualization_role == "guest" and (virtualization_type or "") in CONTAINER_TYPES


def is_container_from_facts(facts: Mapping[str, Any]) -> bool:
    """is_container() over an ansible_facts dict."""
    return is_container(
        facts.get("virtualization_type"),
        facts.get("virtualization_role"),
        facts.get("virtualization_tech_guest") or (),
    )


def normalize_value(value: Any) -> str:
    """sysctl prints multi-field values tab separated; compare them with single spaces."""
    return " ".join(str(value).split())


def parse_sysctl_output(text: str) -> dict[str, str]:
    """Parse `sysctl KEY...` output ("key = value" lines) into {key: normalized value}."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip().replace("/", ".")] = normalize_value(value)
    return values


def proc_path(key: str) -> str:
    """/proc/sys file of a key: net.core.somaxconn -> /proc/sys/net/core/somaxconn."""
    return "/proc/sys/" + key.replace(".", "/")


def proc_paths(keys: Iterable[str]) -> list[str]:
    """proc_path() of each key, in key order."""
    return [proc_path(key) for key in sorted(keys)]


def keys_from_paths(text: str) -> list[str]:
    """Keys of the /proc/sys paths printed one a line (e.g. by `find PATH... -writable`)."""
    prefix = "/proc/sys/"
    return sorted(
        line.strip()[len(prefix) :].replace("/", ".")
        for line in text.splitlines()
        if line.strip().startswith(prefix)
    )


def sysctl_problems(settings: Any, variable: str = "common_sysctl") -> list[str]:
    """Problems with a sysctl dict, each naming the key and the fix."""
    if not isinstance(settings, Mapping):
        return [f"{variable} must be a mapping of sysctl key to value, got {settings!r}"]
    problems = []
    for key, value in settings.items():
        if not isinstance(key, str) or not KEY_PATTERN.match(key):
            problems.append(f"{variable}: {key!r} is not a sysctl key like vm.swappiness")
        if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip():
            problems.append(
                f"{variable}[{key!r}]: value {value!r} must be a number or a string like "
                "'4096 87380 16777216'"
            )
    return problems


def can_apply(key: str, in_container: bool) -> bool:
    """Whether this kind of host may write the key at all."""
    return not in_container or key.startswith(NAMESPACED_PREFIXES)


def sysctl_plan(
    desired: Mapping[str, Any],
    current: Mapping[str, str],
    in_container: bool,
    writable: Iterable[str] | None = None,
) -> SysctlPlan:
    """Split `desired` into what to write, what to apply now, and what to skip (and why).

    `current` is the running kernel's values (missing keys do not exist on this kernel);
    `writable` the keys root may write here (None: every existing key). On a VM a missing or
    read-only key is an error: the setting name is wrong or the kernel lacks it.
    """
    plan = SysctlPlan(file={}, apply={}, skipped={})
    can_write = set(current) if writable is None else set(writable)
    missing = []
    for key in sorted(desired):
        value = normalize_value(desired[key])
        if not can_apply(key, in_container):
            plan["skipped"][key] = HOST_KERNEL_REASON
        elif key not in current or key not in can_write:
            if in_container:
                plan["skipped"][key] = NOT_NAMESPACED_REASON
            else:
                missing.append(key)
        else:
            plan["file"][key] = value
            if normalize_value(current[key]) != value:
                plan["apply"][key] = value
    if missing:
        raise ValueError(
            f"kernel settings {', '.join(missing)} do not exist or are read-only on this "
            "host's kernel; "
            "fix the names in common_sysctl / common_sysctl_custom or remove them"
        )
    return plan


def skipped_message(skipped: Mapping[str, str]) -> str:
    """One line naming every skipped key, grouped by reason."""
    by_reason: dict[str, list[str]] = {}
    for key in sorted(skipped):
        by_reason.setdefault(skipped[key], []).append(key)
    parts = [f"{', '.join(keys)} ({reason})" for reason, keys in sorted(by_reason.items())]
    return "Kernel settings not applied in this container: " + "; ".join(parts)
