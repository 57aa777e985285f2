"""The build host: preflight refusals, cgroup lookup and the host-command wrapper. Root, the
installed packages and /proc are faked; the only commands run are `true`, `false` and `sh`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sluice_infra.lab import LabError, host


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(host.os, "geteuid", lambda: 0)


def installed_except(*missing: str):
    def which(command):
        return None if command in missing else f"/usr/bin/{command}"

    return which


# -- preflight ---------------------------------------------------------------------------------


def test_preflight_refuses_non_root(monkeypatch):
    monkeypatch.setattr(host.os, "geteuid", lambda: 1000)
    # packages are not even looked at before the root check
    monkeypatch.setattr(host.shutil, "which", lambda c: pytest.fail("checked packages first"))
    with pytest.raises(LabError, match="needs root"):
        host.preflight()


def test_preflight_names_missing_packages(monkeypatch, as_root):
    monkeypatch.setattr(host.shutil, "which", installed_except("nft", "apt-cacher-ng"))
    with pytest.raises(LabError) as info:
        host.preflight()
    message = str(info.value)
    assert "missing host packages: apt-cacher-ng nftables;" in message
    assert "make host-deps" in message
    assert "apt-get install apt-cacher-ng nftables" in message
    assert "debootstrap" not in message


def test_preflight_names_each_package_once(monkeypatch, as_root):
    monkeypatch.setattr(host.shutil, "which", installed_except("ssh", "ssh-keygen"))
    with pytest.raises(LabError) as info:
        host.preflight()
    assert str(info.value).count("openssh-client") == 2  # in the list and in the apt-get line
    assert "apt-get install openssh-client)" in str(info.value)


def test_preflight_names_every_missing_package(monkeypatch, as_root):
    monkeypatch.setattr(host.shutil, "which", lambda command: None)
    with pytest.raises(LabError) as info:
        host.preflight()
    for package in set(host.REQUIRED_COMMANDS.values()):
        assert package in str(info.value)


# -- own_cgroup --------------------------------------------------------------------------------


@pytest.fixture
def proc_self_cgroup(tmp_path, monkeypatch):
    """Points own_cgroup's /proc/self/cgroup at a file the test writes."""
    fake = tmp_path / "cgroup"
    real_path = Path

    def path(p):
        return fake if str(p) == "/proc/self/cgroup" else real_path(p)

    monkeypatch.setattr(host, "Path", path)
    return fake


def test_own_cgroup_v2(proc_self_cgroup):
    proc_self_cgroup.write_text("0::/user.slice/user-1000.slice/session-3.scope\n")
    assert host.own_cgroup("") == "/user.slice/user-1000.slice/session-3.scope"
    assert host.own_cgroup("memory") == "/"


def test_own_cgroup_v1_and_hybrid(proc_self_cgroup):
    proc_self_cgroup.write_text(
        "12:cpu,cpuacct:/docker/abc\n"
        "11:memory:/docker/abc/mem\n"
        "10:name=systemd:/docker/abc/sd\n"
        "0::/docker/abc/unified\n"
    )
    assert host.own_cgroup("memory") == "/docker/abc/mem"
    assert host.own_cgroup("") == "/docker/abc/unified"
    assert host.own_cgroup("cpu") == "/"  # only exact controller lists match


def test_own_cgroup_path_with_colon(proc_self_cgroup):
    proc_self_cgroup.write_text("0::/machine.slice/odd:name\n")
    assert host.own_cgroup("") == "/machine.slice/odd:name"


def test_own_cgroup_default_is_root(proc_self_cgroup):
    proc_self_cgroup.write_text("")
    assert host.own_cgroup("") == "/"
    assert host.own_cgroup("memory") == "/"


# -- run ---------------------------------------------------------------------------------------


def test_run_returns_output():
    result = host.run(
        [sys.executable, "-c", "import sys; print('hi'); print('e', file=sys.stderr)"]
    )
    assert result.returncode == 0
    assert result.stdout == "hi\n"
    assert result.stderr == "e\n"


def test_run_passes_input():
    assert host.run(["cat"], input="ruleset\n").stdout == "ruleset\n"


def test_run_failure_raises_with_stderr_and_code():
    with pytest.raises(LabError) as info:
        host.run(["sh", "-c", "echo out; echo boom >&2; exit 3"])
    message = str(info.value)
    assert "boom" in message
    assert "(3)" in message
    assert "sh -c" in message
    assert message.endswith("failed (3): boom")  # stderr wins over stdout


def test_run_failure_falls_back_to_stdout():
    with pytest.raises(LabError, match=r"failed \(1\): only stdout"):
        host.run(["sh", "-c", "echo only stdout; exit 1"])


def test_run_false_raises():
    with pytest.raises(LabError, match=r"`false` failed \(1\)"):
        host.run(["false"])


def test_run_without_check_returns_failure():
    assert host.run(["false"], check=False).returncode == 1


def test_run_missing_program():
    with pytest.raises(LabError, match="no-such-program-sluice is not installed; run `make host"):
        host.run(["no-such-program-sluice", "--help"])


def test_run_timeout():
    with pytest.raises(LabError, match="did not finish within"):
        host.run(["sleep", "5"], timeout=0.2)


def test_stop_all_shuts_processes_down_side_by_side_and_kills_the_stubborn():
    import subprocess
    import sys

    from sluice_infra.lab.host import stop_all

    polite = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in "ab"]
    stubborn = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True);"
         " time.sleep(60)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    stubborn.stdout.readline()  # SIGTERM is ignored from here on
    stop_all([p.pid for p in (*polite, stubborn)], timeout=2)
    assert [p.wait(timeout=5) for p in (*polite, stubborn)] == [-15, -15, -9]
