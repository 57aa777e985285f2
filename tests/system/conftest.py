"""System tests: the real lab machines, the real site.yml, over SSH, as an operator runs them.

They run in file order (test_01 ... test_09) in one session, which ends with `lab down`.
The Makefile exports the lab's connection settings; running pytest directly gets the same
defaults here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventories" / "lab"
STATE = REPO / ".lab"
BIN = Path(sys.executable).parent

os.environ.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible" / "ansible.cfg"))
os.environ.setdefault("ANSIBLE_SSH_COMMON_ARGS", f"-F {STATE / 'ssh' / 'config'}")
os.environ.setdefault("ANSIBLE_VAULT_PASSWORD_FILE", str(STATE / "vault-pass"))
os.environ["ANSIBLE_NOCOLOR"] = "1"

pytestmark = pytest.mark.system


def run(
    *args: str | Path, timeout: float = 1800, check: bool = False
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def lab(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    return run(BIN / "sluice-lab", *args, check=check)


def ssh(host: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
    return run("ssh", "-F", STATE / "ssh" / "config", host, command, timeout=120, check=check)


def playbook(*args: str | Path) -> subprocess.CompletedProcess:
    return run(BIN / "ansible-playbook", "-i", INVENTORY, *args)


_RECAP = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", re.MULTILINE)


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters per host."""
    return {
        host: {k: int(v) for k, v in (pair.split("=") for pair in counters.split())}
        for host, counters in _RECAP.findall(output)
    }


@pytest.fixture(scope="session")
def lab_up() -> subprocess.CompletedProcess:
    return lab("--inventory", INVENTORY, "up")
