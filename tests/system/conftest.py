"""System tests: the real lab machines, the real site.yml, over SSH, as an operator runs them.

The seed layout is converged once per session, by the fixture ``converged``: every test that
needs a deployed lab asks for it, so any test runs alone (`pytest tests/system -k poison`) and
none relies on another having run first. ``--assume-converged`` skips that converge on a lab
you know is deployed. Addresses, ports and hosts come from the inventory (``layout``), never
from literals, so ``--inventory`` points the suite at another layout. `make test-system` runs
the files in order and ends with `lab down` (test_09). The Makefile exports the lab's
connection settings; running pytest directly gets the same defaults here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sluice_infra.lab.layout import Layout

REPO = Path(__file__).resolve().parents[2]
INVENTORY = Path(os.environ.get("SLUICE_SYSTEM_INVENTORY", REPO / "inventories" / "lab"))
STATE = REPO / ".lab"
BIN = Path(sys.executable).parent
SITE = REPO / "ansible" / "site.yml"

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


def downtime(host: str, unit: str) -> tuple[int, int]:
    """(last stop, last start) of ``unit`` on ``host``, in µs of the kernel's monotonic clock:
    the lab machines share one kernel, so the times compare across machines."""
    stamps = "-p InactiveEnterTimestampMonotonic -p ActiveEnterTimestampMonotonic"
    out = ssh(host, f"systemctl show {stamps} {unit}").stdout
    values = dict(line.split("=", 1) for line in out.split())
    return (
        int(values["InactiveEnterTimestampMonotonic"]),
        int(values["ActiveEnterTimestampMonotonic"]),
    )


_RECAP = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", re.MULTILINE)


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters per host."""
    return {
        host: {k: int(v) for k, v in (pair.split("=") for pair in counters.split())}
        for host, counters in _RECAP.findall(output)
    }


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--assume-converged",
        action="store_true",
        help="the lab runs site.yml's result already: skip the session's converge",
    )


def assert_clean(result: subprocess.CompletedProcess, hosts: set[str]) -> dict:
    """The recap of a playbook run that must have succeeded on every one of ``hosts``."""
    counters = recap(result.stdout)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert set(counters) >= hosts, result.stdout[-3000:]
    for host in hosts:
        assert counters[host]["failed"] == 0 and counters[host]["unreachable"] == 0, counters
    return counters


@pytest.fixture(scope="session")
def lab_up() -> subprocess.CompletedProcess:
    return lab("--inventory", INVENTORY, "up")


@pytest.fixture(scope="session")
def layout(lab_up) -> Layout:
    """Where everything runs, from the inventory (and the lab vault it holds)."""
    return Layout.load(INVENTORY)


@pytest.fixture(scope="session")
def converged(request, lab_up, layout) -> subprocess.CompletedProcess | None:
    """The lab after one site.yml run of this session (None with --assume-converged)."""
    if request.config.getoption("--assume-converged"):
        return None
    result = playbook(SITE)
    if result.returncode != 0:
        pytest.fail(f"site.yml failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}")
    return result
