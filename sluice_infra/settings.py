"""Sluice's settings read the way Ansible reads them, for the tools that need a value outside a
play: an inventory's ``group_vars/all`` (every file, in Ansible's order) and the roles'
defaults (what a play falls back on; they are not part of ``hostvars``).

Every inventory's ``group_vars/all/`` holds ``00-shared.yml``, a link to
``inventories/shared/all.yml`` (the settings every environment shares), then the
environment's own ``main.yml``: later files win, so an environment overrides a shared value by
setting it in its ``main.yml``.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from sluice_infra import REPO_ROOT

ROLES = REPO_ROOT / "ansible" / "roles"
#: The settings every inventory shares, and the link to them in each group_vars/all/.
SHARED_FILE = REPO_ROOT / "inventories" / "shared" / "all.yml"
SHARED_LINK = "00-shared.yml"
#: Extensions Ansible reads in a group_vars directory (C.YAML_FILENAME_EXTENSIONS, plus none).
VARS_EXTENSIONS = ("", ".yml", ".yaml", ".json")
_VAULT_HEADER = "$ANSIBLE_VAULT;"


class SettingsError(RuntimeError):
    """A settings file cannot be read; the message names the file and what to do."""


class VaultedValue(str):
    """An inline ``!vault`` value: opaque here (the secrets are sluice_infra.secrets' business)."""


class _Loader(yaml.SafeLoader):
    """YAML with Ansible's tags: ``!vault`` (kept opaque) and ``!unsafe`` (a plain string)."""


_Loader.add_constructor("!vault", lambda loader, node: VaultedValue(loader.construct_scalar(node)))
_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def vars_files(directory: Path) -> Iterator[Path]:
    """The files Ansible loads from a group_vars directory, in its order: names sorted, hidden
    files and backups (``~``) skipped, sub-folders walked in place, links followed."""
    for path in sorted(directory.iterdir(), key=lambda p: p.name):
        if path.name.startswith(".") or path.name.endswith("~"):
            continue
        if path.is_dir() and not path.suffix:
            yield from vars_files(path)
        elif path.is_file() and path.suffix in VARS_EXTENSIONS:
            yield path


def _load(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if text.lstrip().startswith(_VAULT_HEADER):
        return {}  # a vault: secrets only, read through sluice_infra.secrets
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader with Ansible's two tags
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path} must hold a mapping of variables, not {type(data).__name__}")
    return data


def group_vars_all(inventory: Path) -> dict[str, Any]:
    """Every variable ``inventory``'s group_vars set for group all, merged as Ansible merges
    them (later files replace earlier keys whole); vault-encrypted files are left out.
    Ansible reads the folder ``group_vars/all/`` when there is one, else ``all.yml`` (or
    ``all.yaml``, ``all.json``, ``all``)."""
    base = Path(inventory) / "group_vars"
    for extension in VARS_EXTENSIONS:
        candidate = base / f"all{extension}"
        if candidate.is_dir():
            files = list(vars_files(candidate))
            break
        if candidate.is_file():
            files = [candidate]
            break
    else:
        return {}
    merged: dict[str, Any] = {}
    for path in files:
        merged.update(_load(path))
    return merged


@cache
def role_defaults(role: str) -> dict[str, Any]:
    """Every variable of ``ansible/roles/<role>/defaults/main.yml``."""
    path = ROLES / role / "defaults" / "main.yml"
    try:
        return _load(path)
    except FileNotFoundError:
        raise SettingsError(f"{path} is missing: is {role!r} one of {ROLES}'s roles?") from None


def role_default(role: str, name: str) -> Any:
    """``name``'s value in ``ansible/roles/<role>/defaults/main.yml``: what a play uses when
    the inventory leaves it unset."""
    defaults = role_defaults(role)
    if name not in defaults:
        raise SettingsError(
            f"{name} is not in {ROLES / role / 'defaults' / 'main.yml'}: declare it there, "
            f"with a one-line comment"
        )
    return defaults[name]
