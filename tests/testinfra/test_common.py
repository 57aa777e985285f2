"""Role common on the lab machines: what the data services and their operators rely on.

Run after converging ansible/playbooks/common.yml:
    pytest tests/testinfra/test_common.py --hosts=ansible://all \
        --ansible-inventory=inventories/lab -m system
"""

from __future__ import annotations

import re
import socket
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml

pytestmark = pytest.mark.system

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "common"
DEFAULTS: dict[str, Any] = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())

# Runs on a lab machine: fetch node exporter's metrics, print OK or the error. Always exits 0.
# argv: the URL, the timeout in seconds (the firewall drops: a closed port is a timeout).
PROBE = (
    "import sys, urllib.request\n"
    "try:\n"
    "    body = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode()\n"
    "    print('OK' if 'node_exporter_build_info' in body else 'NO-METRICS')\n"
    "except Exception as err:\n"
    "    print('FAILED', type(err).__name__, err)\n"
)


def setting(host, name: str) -> Any:
    """The value the role used: inventory (group_vars/host_vars) over the role's defaults."""
    return host.ansible.get_variables().get(name, DEFAULTS.get(name))


def inventory(host) -> tuple[dict[str, list[str]], str]:
    variables = host.ansible.get_variables()
    return variables["groups"], variables.get("ansible_host", variables["inventory_hostname"])


def address_of(host, name: str) -> str:
    other = lab_host(host, name)
    return other.ansible.get_variables().get("ansible_host", name)


def lab_host(host, name: str):
    """Another machine of the same inventory, reached the way `host` is."""
    backend = host.backend
    return _lab_host(name, backend.ansible_inventory, getattr(backend, "ssh_config", None))


@cache
def _lab_host(name: str, inventory_file: str | None, ssh_config: str | None):
    kwargs = {"ansible_inventory": inventory_file}
    if ssh_config:
        kwargs["ssh_config"] = ssh_config
    return testinfra.get_host(f"ansible://{name}", **kwargs)


def in_container(host) -> bool:
    return host.run("systemd-detect-virt --container").rc == 0


# An open port answers a LAN peer within milliseconds; a dropped SYN is never answered, and
# each closed-port probe waits this long.
CLOSED_AFTER = 2.0


def probe_metrics(source, address: str, port: int, timeout: float = 10.0) -> str:
    url = f"http://{address}:{port}/metrics"
    return source.check_output("python3 -c %s %s %s", PROBE, url, str(timeout))


def test_nftables_loads_a_default_deny_input_chain_with_ssh_first(host):
    service = host.service("nftables")
    assert service.is_enabled
    assert service.is_running
    with host.sudo():
        chain = host.check_output("nft list chain inet filter input")
        forward = host.check_output("nft list chain inet filter forward")
    assert re.search(r"hook input priority filter; policy drop;", chain), chain
    assert "policy drop;" in forward
    rules = [line.strip() for line in chain.splitlines() if "accept" in line or "drop" in line]
    rules = [line for line in rules if not line.startswith("type filter")]
    ssh_port = setting(host, "common_ssh_port")
    assert re.search(rf"dport ({ssh_port}|ssh) accept", rules[0]), f"SSH not first: {rules}"


def test_node_exporter_answers_monitoring_hosts(host):
    groups, address = inventory(host)
    port = setting(host, "common_node_exporter_port")
    assert groups.get("monitoring"), "the inventory has no monitoring host to test from"
    for name in groups["monitoring"]:
        result = probe_metrics(lab_host(host, name), address, port)
        assert result.startswith("OK"), f"from monitoring host {name} to {address}:{port}: {result}"


def test_node_exporter_is_closed_to_everyone_else(host):
    groups, address = inventory(host)
    port = setting(host, "common_node_exporter_port")
    others = [h for h in groups["all"] if h not in groups.get("monitoring", [])]
    others = [h for h in others if h != host.backend.get_hostname()]
    assert others, "the inventory has no non-monitoring host to test from"
    for name in others:
        result = probe_metrics(lab_host(host, name), address, port, CLOSED_AFTER)
        assert result.startswith("FAILED"), f"{name} reached {address}:{port}: {result}"
    # The controller (this test run) may SSH in but is not a monitoring host either.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{address}:{port}/metrics", timeout=CLOSED_AFTER)


def test_node_exporter_runs_on_its_port(host):
    service = host.service("prometheus-node-exporter")
    assert service.is_enabled
    assert service.is_running
    port = setting(host, "common_node_exporter_port")
    assert host.socket(f"tcp://{port}").is_listening
    assert probe_metrics(host, "127.0.0.1", port).startswith("OK")


def test_kernel_settings(host):
    wanted = {**setting(host, "common_sysctl"), **(setting(host, "common_sysctl_custom") or {})}
    assert host.sysctl("net.core.somaxconn") == int(wanted["net.core.somaxconn"])
    backlog = int(wanted["net.ipv4.tcp_max_syn_backlog"])
    assert host.sysctl("net.ipv4.tcp_max_syn_backlog") == backlog
    conf = host.file("/etc/sysctl.d/60-sluice.conf").content_string
    assert f"net.core.somaxconn = {wanted['net.core.somaxconn']}" in conf
    if in_container(host):
        # The host's kernel: listed as skipped, not written as settings.
        assert f"# vm.swappiness = {wanted['vm.swappiness']}  -- host kernel setting" in conf
        assert not re.search(r"^vm\.", conf, re.MULTILINE)
    else:
        assert host.sysctl("vm.swappiness") == int(wanted["vm.swappiness"])
        assert host.sysctl("vm.max_map_count") == int(wanted["vm.max_map_count"])


def test_transparent_hugepages(host):
    unit = host.service("disable-transparent-hugepages")
    if in_container(host):
        assert not unit.is_enabled  # the host's kernel: the role leaves it alone
    else:
        mode = setting(host, "common_transparent_hugepages")
        assert unit.is_enabled
        enabled = host.file("/sys/kernel/mm/transparent_hugepage/enabled").content_string
        assert f"[{mode}]" in enabled


def test_no_automatic_upgrades(host):
    assert not host.package("unattended-upgrades").is_installed
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        assert not host.service(timer).is_enabled, timer
        assert not host.service(timer).is_running, timer
    periodic = host.check_output("apt-config dump APT::Periodic")
    assert 'APT::Periodic::Unattended-Upgrade "0";' in periodic
    assert 'APT::Periodic::Update-Package-Lists "0";' in periodic


def hard_nofile(host, pid: int | str) -> int:
    with host.sudo():
        limits = host.check_output(f"cat /proc/{pid}/limits")
    (line,) = [line for line in limits.splitlines() if line.startswith("Max open files")]
    return int(line.split()[4])


def test_open_file_limit_reaches_services(host):
    limit = setting(host, "common_nofile_limit")
    assert host.check_output("systemctl show -p DefaultLimitNOFILE --value") == str(limit)
    assert host.check_output("systemctl show -p DefaultLimitNOFILESoft --value") == str(limit)
    expected = limit
    if in_container(host):
        # Without CAP_SYS_RESOURCE the container's init cannot grant more than its own hard
        # limit, set where the container starts; the role reports that. Services get the most
        # there is.
        expected = min(limit, hard_nofile(host, 1))
    pid = host.check_output("systemctl show -p MainPID --value prometheus-node-exporter")
    assert hard_nofile(host, pid) == expected


def test_time_sync(host):
    assert host.package("chrony").is_installed
    conf = host.file("/etc/chrony/chrony.conf").content_string
    for server in setting(host, "common_ntp_servers"):
        assert f"server {server} iburst" in conf
    chrony = host.service("chrony")
    assert chrony.is_enabled
    if in_container(host):
        # Skipped by its ConditionCapability=CAP_SYS_TIME: the container keeps the host's clock.
        assert host.check_output("systemctl show -p ConditionResult --value chrony") == "no"
    else:
        assert chrony.is_running
        assert host.run("chronyc -n sources").rc == 0


def test_controller_reaches_ssh(host):
    _, address = inventory(host)
    with socket.create_connection((address, 22), timeout=5) as conn:
        assert conn.recv(64).startswith(b"SSH-")
