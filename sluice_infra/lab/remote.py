"""Reach the lab machines from the controller as an operator's script does: a command over SSH
(the lab's ssh_config) with its input on stdin, secrets from the lab vault, and redis-cli as an
ACL user whose password travels on stdin into REDISCLI_AUTH, never on a command line.

Used by the system tests and the benchmarks."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sluice_infra.lab.lab import DEFAULT_STATE_DIR
from sluice_infra.secrets import VaultError, read_vault


class RemoteError(RuntimeError):
    """A command on a lab machine failed; the message has its stderr."""


@dataclass(frozen=True)
class Remote:
    state_dir: Path = DEFAULT_STATE_DIR

    def run(self, host: str, command: str, stdin: str = "", timeout: float = 600) -> str:
        result = subprocess.run(
            ["ssh", "-F", str(self.state_dir / "ssh" / "config"), host, command],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RemoteError(f"`{command[:80]}` on {host} failed: {result.stderr.strip()}")
        return result.stdout

    def vault(self, inventory: Path) -> dict:
        """The decrypted lab vault of ``inventory``."""
        try:
            return read_vault(inventory, self.state_dir / "vault-pass")
        except VaultError as exc:
            raise RemoteError(str(exc)) from exc

    def redis_cli(
        self, host: str, user: str, password: str, address: str, port: int, *args: str
    ) -> str:
        """redis-cli on ``host`` against ``address:port`` as ``user``; ``args`` are quoted."""
        return self.run(
            host,
            "read -r REDISCLI_AUTH && export REDISCLI_AUTH && redis-cli --no-auth-warning "
            f"--user {user} -h {address} -p {port} " + " ".join(shlex.quote(a) for a in args),
            stdin=password + "\n",
        )
