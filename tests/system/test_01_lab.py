"""The lab: three machines, booted by systemd, configured by cloud-init, reachable over SSH."""

from __future__ import annotations

import yaml
from conftest import INVENTORY, lab, ssh

MACHINES = {"db": "10.77.0.10", "app": "10.77.0.11", "stream": "10.77.0.12"}


def test_each_machine_answers_ssh_as_itself_with_its_static_address(lab_up):
    for name, address in MACHINES.items():
        out = ssh(name, "hostname; ip -4 -o addr show dev host0; systemd-detect-virt").stdout
        hostname, addr_line, virt = out.splitlines()
        assert hostname == name
        assert f"inet {address}/24" in addr_line
        assert virt == "systemd-nspawn"


def test_systemd_is_pid_1_and_cloud_init_finished_cleanly(lab_up):
    for name in MACHINES:
        out = ssh(name, "ps -o comm= -p 1; cloud-init status --long").stdout
        assert out.splitlines()[0] == "systemd"
        assert "status: done" in out
        # the seed came from the shared template, through the NoCloud datasource
        assert "DataSourceNoCloud" in out


def test_admin_user_has_passwordless_sudo_and_root_login_is_closed(lab_up):
    for name in MACHINES:
        assert ssh(name, "sudo -n id -u").stdout.strip() == "0"
        sshd = ssh(name, "sudo -n sshd -T").stdout
        assert "passwordauthentication no" in sshd
        assert "permitrootlogin without-password" in sshd or "permitrootlogin no" in sshd


def test_machines_reach_debian_through_the_apt_cache(lab_up):
    out = ssh("db", "sudo -n apt-get update -q && apt-config dump | grep -i proxy").stdout
    assert "10.77.0.1:3142" in out


def test_memory_caps_keep_the_seed_proportions(lab_up):
    caps = {
        name: int(ssh(name, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes").stdout)
        for name in MACHINES
    }
    weights = yaml.safe_load((INVENTORY / "group_vars/all/lab.yml").read_text())[
        "lab_memory_weights"
    ]
    for name in MACHINES:
        assert abs(caps[name] / caps["stream"] - weights[name] / weights["stream"]) < 0.01


def _booted_at() -> dict[str, str]:
    # PID 1 of each machine is its own systemd: its start time is the machine's boot time
    return {name: ssh(name, "ps -o lstart= -p 1").stdout for name in MACHINES}


def test_lab_up_twice_is_harmless(lab_up):
    before = _booted_at()
    again = lab("--inventory", INVENTORY, "up").stdout
    assert "booting" not in again and "created" not in again
    assert _booted_at() == before, "a second lab-up must not reboot the machines"


def test_machines_come_back_with_their_disks_after_a_stop(lab_up):
    ssh("app", "sudo -n sh -c 'echo kept > /var/lib/sluice-lab-marker'")
    lab("--inventory", INVENTORY, "stop")
    assert ssh("app", "true", check=False).returncode != 0, "app should be down"
    lab("--inventory", INVENTORY, "up")
    assert ssh("app", "cat /var/lib/sluice-lab-marker").stdout.strip() == "kept"
    ssh("app", "sudo -n rm /var/lib/sluice-lab-marker")
