"""Typed reading of one stack config object, reporting problems by their full key.

A :class:`Section` wraps a mapping (``sluice:network``, ``sluice:vms.db``...). Each reader takes a
key, checks its type and range, and records a problem naming the key, the value and the fix
instead of raising, so the stack reports every problem at once. :meth:`Section.finish` reports
the keys nobody read: a typo is an error, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from sluice_infra.cloudinit import CloudInitError, HostBootstrap

_HOST_PREFIX = re.compile(r"^host '[^']*': ")
# A syntactically valid key, for probing the lab's cloud-init validation one setting at a time.
_PROBE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHByb2JlcHJvYmVwcm9iZXByb2JlcHJvYmVwcm9i probe"


class Section:
    """A config object at ``path`` (e.g. ``sluice:vms.db``) whose problems go to ``problems``."""

    def __init__(
        self, path: str, values: Any, problems: list[str], *, separator: str = "."
    ) -> None:
        self.path = path
        self.problems = problems
        self._separator = separator
        self._read: set[str] = set()
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            problems.append(
                f"{path} must be an object (key: value pairs), not {_shown(values)}: see "
                f"Pulumi.example.yaml"
            )
            values = {}
        self.values: Mapping[str, Any] = values

    def key(self, name: str) -> str:
        return f"{self.path}{self._separator}{name}"

    def has(self, name: str) -> bool:
        return self.raw(name) is not None

    def problem(self, name: str, text: str) -> None:
        self.problems.append(f"{self.key(name)} {text}")

    def raw(self, name: str) -> Any:
        self._read.add(name)
        return self.values.get(name)

    def text(self, name: str, default: str | None = None, *, missing: str = "") -> str | None:
        """A string; ``missing`` (the fix) makes it required."""
        value = self.raw(name)
        if value is None:
            if missing and default is None:
                self.problems.append(f"{self.key(name)} is not set: {missing}")
            return default
        if not isinstance(value, str):
            self.problem(name, f"must be a string, not {_shown(value)}")
            return default
        return value.strip()

    def integer(
        self,
        name: str,
        default: int | None = None,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        missing: str = "",
        why: str = "",
    ) -> int | None:
        """A whole number within [minimum, maximum]; ``why`` explains the minimum."""
        value = self.raw(name)
        if value is None:
            if missing and default is None:
                self.problems.append(f"{self.key(name)} is not set: {missing}")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(name, f"must be a whole number, not {_shown(value)}")
            return default
        if minimum is not None and value < minimum:
            reason = f" {why}" if why else ""
            self.problem(
                name, f"is {value}, below the minimum {minimum}{reason}: set {minimum} or more"
            )
            return default
        if maximum is not None and value > maximum:
            self.problem(name, f"is {value}, above the maximum {maximum}: set {maximum} or less")
            return default
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(name, f"must be true or false, not {_shown(value)}")
            return default
        return value

    def strings(
        self, name: str, default: tuple[str, ...] = (), *, missing: str = ""
    ) -> tuple[str, ...]:
        """A list of strings; ``missing`` (the fix) makes a non-empty list required."""
        value = self.raw(name)
        if value is None or value == []:
            if missing and not default:
                self.problems.append(f"{self.key(name)} is not set: {missing}")
            return default
        if isinstance(value, str) or not isinstance(value, list):
            self.problem(name, f"must be a list of strings, not {_shown(value)}")
            return default
        bad = [item for item in value if not isinstance(item, str) or not item.strip()]
        if bad:
            self.problem(name, f"must hold non-empty strings only, not {_shown(bad[0])}")
            return default
        return tuple(item.strip() for item in value)

    def section(self, name: str) -> Section:
        return Section(self.key(name), self.raw(name), self.problems)

    def mapping(self, name: str) -> dict[str, Any]:
        """A free-form object (e.g. node name -> address); its values are checked by the caller."""
        value = self.raw(name)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(name, f"must be an object, not {_shown(value)}")
            return {}
        return dict(value)

    def finish(self) -> None:
        """Report every key that no reader asked for: a typo or a setting that does not exist."""
        for name in sorted(set(self.values) - self._read):
            known = ", ".join(sorted(self._read)) or "none"
            self.problems.append(
                f"{self.key(name)} is not a setting (known here: {known}): fix the spelling or "
                f"remove it (`pulumi config rm --path '{self.key(name)}'`)"
            )


def _shown(value: Any) -> str:
    """A value for a message, shortened; never used for secrets."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def hint(key: str, example: str, what: str) -> str:
    """The fix for a missing key: the command that sets it."""
    return f"set {what} with `pulumi config set --path {key} {example}`"


def cloudinit_problem(**change: Any) -> str | None:
    """Why sluice_infra.cloudinit (the lab's validation) refuses one setting, the others being
    fine, or None: the stack applies the same rules as the lab, and names its own key."""
    probe = HostBootstrap(
        hostname="probe",
        address="192.0.2.10/24",
        gateway="192.0.2.1",
        nameservers=("192.0.2.53",),
        admin_user="ops",
        ssh_authorized_keys=(_PROBE_KEY,),
    )
    try:
        dataclasses.replace(probe, **change).validate()
    except CloudInitError as exc:
        return _HOST_PREFIX.sub("", str(exc))
    return None
