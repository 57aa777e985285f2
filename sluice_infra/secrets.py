"""The secrets Sluice needs, and the lab's vault that holds them.

:data:`VAULT_USERS` is the spec: every service account whose password the roles read from the
vault, as ``vault_<service>_<user>_password``. Production vaults are written by the operator
(``inventories/lab/group_vars/all/vault.yml.example`` documents the keys); the lab's vault is
generated per clone by :func:`ensure_lab_vault` (``make lab-vault``), encrypted with a
per-clone password file.

Secrets never appear on a command line, in a plaintext file or in output: plaintext goes to and
comes from ``ansible-vault`` through its standard input and output only.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

#: Service accounts with a password in the vault, per service; later roles consume them.
VAULT_USERS: dict[str, tuple[str, ...]] = {
    # Kafka SCRAM-SHA-512 users.
    "kafka": ("admin", "sluice_producer", "sluice_processor", "monitoring"),
    # Redis ACL users.
    "redis": ("admin", "sluice", "replication", "monitoring"),
    # PostgreSQL roles.
    "postgresql": ("postgres", "sluice_writer", "sluice_reader", "monitoring", "replication"),
}

#: Length of a generated secret; letters and digits only, so it needs no quoting in a DSN, a
#: Kafka JAAS line or a Redis ACL rule (62**32, about 190 bits).
SECRET_LENGTH = 32
_SECRET_ALPHABET = string.ascii_letters + string.digits

#: The value the example vault uses for every key; a real vault must not keep it.
PLACEHOLDER = "CHANGE-ME"

_VAULT_HEADER = """\
---
# Sluice lab secrets, generated per clone by `make lab-vault`
# (python -m sluice_infra.secrets ensure). Keys: see vault.yml.example beside this file.
# Lab only: a production vault is written by its operator with `ansible-vault edit`.
"""

# Settings that would make ansible-vault use another password than the one passed explicitly.
_VAULT_ENVIRONMENT = (
    "ANSIBLE_VAULT_PASSWORD_FILE",
    "ANSIBLE_VAULT_IDENTITY_LIST",
    "ANSIBLE_VAULT_IDENTITY",
    "ANSIBLE_VAULT_ENCRYPT_IDENTITY",
)


class VaultError(RuntimeError):
    """The lab vault cannot be created or completed; the message says what to do."""


def vault_key(service: str, user: str) -> str:
    """The vault variable holding ``user``'s password for ``service``."""
    return f"vault_{service}_{user}_password"


def required_secrets() -> tuple[str, ...]:
    """Every vault variable the roles read, in spec order."""
    return tuple(
        vault_key(service, user) for service, users in VAULT_USERS.items() for user in users
    )


def vault_path(inventory_dir: Path) -> Path:
    """Where an inventory keeps its vault."""
    return Path(inventory_dir) / "group_vars" / "all" / "vault.yml"


def generate_secret() -> str:
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LENGTH))


@dataclass(frozen=True)
class VaultChange:
    """What :func:`sync_lab_vault` did."""

    vault: Path
    password_file_created: bool
    vault_created: bool
    added: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return self.password_file_created or self.vault_created or bool(self.added)

    def summary(self) -> str:
        """One line for the operator; names keys, never values."""
        if self.vault_created:
            state = "created"
        elif self.added:
            state = f"added {len(self.added)} keys ({', '.join(self.added)})"
        else:
            state = "up to date"
        if self.password_file_created:
            state += " (new vault password file)"
        return f"vault {self.vault}: {state}"


def ensure_password_file(password_file: Path) -> bool:
    """Create the vault password file (0600, in a 0700 folder) unless it exists."""
    password_file = Path(password_file)
    if password_file.exists():
        return False
    if not password_file.parent.exists():
        password_file.parent.mkdir(mode=0o700, parents=True)
    password = base64.urlsafe_b64encode(os.urandom(32))
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(password + b"\n")
    return True


def _ansible_vault() -> str:
    beside_python = Path(sys.executable).parent / "ansible-vault"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("ansible-vault")
    if found is None:
        raise VaultError(
            "ansible-vault not found beside this Python nor on PATH: "
            "install requirements.txt into .venv and run this with .venv/bin/python"
        )
    return found


def _run_vault(args: Sequence[str], password_file: Path, plaintext: str | None = None) -> str:
    """Run ``ansible-vault`` with ``plaintext`` on stdin; return its stdout."""
    environment = {k: v for k, v in os.environ.items() if k not in _VAULT_ENVIRONMENT}
    command = [_ansible_vault(), args[0], "--vault-password-file", str(password_file), *args[1:]]
    result = subprocess.run(
        command,
        input=plaintext,
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    if result.returncode != 0:
        # ansible-vault's errors name files and passwords' sources, never plaintext.
        detail = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
        raise VaultError(f"ansible-vault {args[0]} failed: {detail[0]}")
    return result.stdout


def _encrypt_to(path: Path, plaintext: str, password_file: Path) -> None:
    """Encrypt ``plaintext`` into ``path`` atomically: ciphertext goes to a temporary file
    beside it, then replaces it, so an interrupted run never leaves half a vault."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        _run_vault(
            ["encrypt", "--encrypt-vault-id", "default", "--output", temporary, "-"],
            password_file,
            plaintext,
        )
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _decrypt(path: Path, password_file: Path) -> str:
    try:
        return _run_vault(["view", str(path)], password_file)
    except VaultError as exc:
        raise VaultError(
            f"{path} does not decrypt with {password_file} ({exc}). The lab vault belongs to "
            f"that password file: restore the file, or delete {path} to generate a new lab vault"
        ) from exc


def read_vault(inventory_dir: Path, password_file: Path) -> dict:
    """The decrypted vault of ``inventory_dir`` as a mapping (for tests and tools, never logs)."""
    return yaml.safe_load(_decrypt(vault_path(inventory_dir), password_file)) or {}


def _secret_lines(keys: Sequence[str]) -> str:
    return "".join(f'{key}: "{generate_secret()}"\n' for key in keys)


def _loaded_keys(path: Path, plaintext: str) -> set[str]:
    try:
        data = yaml.safe_load(plaintext)
    except yaml.YAMLError as exc:
        # Report the line only: YAML's own message quotes the text around it, a secret.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise VaultError(
            f"{path} decrypts but is not valid YAML{where}: fix it with `ansible-vault edit {path}`"
        ) from None
    if data is None:
        return set()
    if not isinstance(data, dict):
        raise VaultError(f"{path} must hold a mapping of vault_* variables")
    return set(data)


def sync_lab_vault(inventory_dir: Path, password_file: Path) -> VaultChange:
    """Make ``inventory_dir``'s vault hold every spec key; see :func:`ensure_lab_vault`."""
    path = vault_path(inventory_dir)
    if not path.parent.is_dir():
        raise VaultError(f"{path.parent} does not exist: is {inventory_dir} an inventory?")
    _ansible_vault()  # missing tool: say so before creating anything
    password_created = ensure_password_file(password_file)
    if not path.exists():
        _encrypt_to(path, _VAULT_HEADER + _secret_lines(required_secrets()), password_file)
        return VaultChange(path, password_created, vault_created=True, added=())
    plaintext = _decrypt(path, password_file)
    present = _loaded_keys(path, plaintext)
    missing = tuple(key for key in required_secrets() if key not in present)
    if missing:
        if plaintext and not plaintext.endswith("\n"):
            plaintext += "\n"
        # Append only: the existing text, values and comments stay byte for byte.
        _encrypt_to(path, plaintext + _secret_lines(missing), password_file)
    return VaultChange(path, password_created, vault_created=False, added=missing)


def ensure_lab_vault(inventory_dir: Path, password_file: Path) -> bool:
    """Create the lab's vault password file and vault, or add the keys the spec gained since.

    Existing values never change. Returns whether anything changed.
    """
    return sync_lab_vault(inventory_dir, password_file).changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sluice_infra.secrets", description="Sluice secrets for the lab."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ensure = commands.add_parser(
        "ensure",
        help="create the lab vault (and its password file), or add keys missing from it",
    )
    ensure.add_argument("--inventory", type=Path, required=True, help="e.g. inventories/lab")
    ensure.add_argument("--password-file", type=Path, required=True, help="e.g. .lab/vault-pass")
    args = parser.parse_args(argv)
    try:
        change = sync_lab_vault(args.inventory, args.password_file)
    except VaultError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(change.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
