"""The lab: three machines, booted by systemd, configured by cloud-init, reachable over SSH."""

from __future__ import annotations

import ipaddress

import pytest
import yaml
from conftest import INVENTORY, lab, ssh

LAB_SETTINGS = yaml.safe_load((INVENTORY / "group_vars/all/lab.yml").read_text())
SUBNET = ipaddress.ip_network(LAB_SETTINGS["lab_subnet"])


@pytest.fixture(scope="module")
def machines(layout) -> dict[str, str]:
    """Each lab machine and its static address, from the inventory."""
    return {host: layout.address(host) for host in layout.groups["all"]}


def test_each_machine_answers_ssh_as_itself_with_its_static_address(machines):
    for name, address in machines.items():
        out = ssh(name, "hostname; ip -4 -o addr show dev host0; systemd-detect-virt").stdout
        hostname, addr_line, virt = out.splitlines()
        assert hostname == name
        assert f"inet {address}/{SUBNET.prefixlen}" in addr_line
        assert virt == "systemd-nspawn"


def test_systemd_is_pid_1_and_cloud_init_finished_cleanly(machines):
    for name in machines:
        out = ssh(name, "ps -o comm= -p 1; cloud-init status --long").stdout
        assert out.splitlines()[0] == "systemd"
        assert "status: done" in out
        # the seed came from the shared template, through the NoCloud datasource
        assert "DataSourceNoCloud" in out


def test_admin_user_has_passwordless_sudo_and_root_login_is_closed(machines):
    for name in machines:
        assert ssh(name, "sudo -n id -u").stdout.strip() == "0"
        sshd = ssh(name, "sudo -n sshd -T").stdout
        assert "passwordauthentication no" in sshd
        assert "permitrootlogin without-password" in sshd or "permitrootlogin no" in sshd


def test_machines_reach_debian_through_the_apt_cache(machines):
    name = next(iter(machines))
    out = ssh(name, "sudo -n apt-get update -q && apt-config dump | grep -i proxy").stdout
    assert f"{next(SUBNET.hosts())}:3142" in out


def test_memory_caps_keep_the_inventorys_proportions(machines):
    caps = {
        name: int(ssh(name, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes").stdout)
        for name in machines
    }
    weights = LAB_SETTINGS["lab_memory_weights"]
    first = next(iter(machines))
    for name in machines:
        assert abs(caps[name] / caps[first] - weights[name] / weights[first]) < 0.01


def _booted_at(machines) -> dict[str, str]:
    # PID 1 of each machine is its own systemd: its start time is the machine's boot time
    return {name: ssh(name, "ps -o lstart= -p 1").stdout for name in machines}


def test_lab_up_twice_is_harmless(machines):
    before = _booted_at(machines)
    again = lab("--inventory", INVENTORY, "up").stdout
    assert "booting" not in again and "created" not in again
    assert _booted_at(machines) == before, "a second lab-up must not reboot the machines"


def test_machines_come_back_with_their_disks_after_a_stop(machines):
    """A machine's disk outlives a stop (in file order this runs before the session's
    converge, so the stop interrupts no service another test uses)."""
    name = next(iter(machines))
    ssh(name, "sudo -n sh -c 'echo kept > /var/lib/sluice-lab-marker'")
    lab("--inventory", INVENTORY, "stop")
    assert ssh(name, "true", check=False).returncode != 0, f"{name} should be down"
    lab("--inventory", INVENTORY, "up")
    assert ssh(name, "cat /var/lib/sluice-lab-marker").stdout.strip() == "kept"
    ssh(name, "sudo -n rm /var/lib/sluice-lab-marker")
