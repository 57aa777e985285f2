"""sluice_infra.sysctl: which kernel settings a host applies, and which it must skip."""

from __future__ import annotations

import pytest

from sluice_infra.sysctl import (
    HOST_KERNEL_REASON,
    is_container,
    is_container_from_facts,
    keys_from_paths,
    parse_sysctl_output,
    proc_paths,
    skipped_message,
    sysctl_plan,
    sysctl_problems,
)

DESIRED = {
    "vm.swappiness": 1,
    "vm.max_map_count": 262144,
    "net.core.somaxconn": 4096,
    "net.ipv4.tcp_max_syn_backlog": 4096,
    "fs.file-max": 2097152,
    "net.core.rmem_max": 16777216,
}
# What `sysctl -e KEY...` prints inside an nspawn guest on a kernel that keeps rmem_max global:
# the key is absent from the guest's network namespace.
CONTAINER_OUTPUT = """\
fs.file-max = 9223372036854775807
net.core.somaxconn = 4096
net.ipv4.tcp_max_syn_backlog = 512
vm.max_map_count = 65530
vm.swappiness = 60
"""


def test_container_applies_only_network_namespace_keys():
    plan = sysctl_plan(DESIRED, parse_sysctl_output(CONTAINER_OUTPUT), in_container=True)
    assert plan["file"] == {"net.core.somaxconn": "4096", "net.ipv4.tcp_max_syn_backlog": "4096"}
    assert plan["apply"] == {"net.ipv4.tcp_max_syn_backlog": "4096"}  # somaxconn already set
    assert plan["skipped"]["vm.swappiness"] == HOST_KERNEL_REASON
    assert plan["skipped"]["fs.file-max"] == HOST_KERNEL_REASON
    assert "network namespace" in plan["skipped"]["net.core.rmem_max"]
    assert sorted(plan["skipped"]) == [
        "fs.file-max",
        "net.core.rmem_max",
        "vm.max_map_count",
        "vm.swappiness",
    ]


def test_vm_applies_every_key_that_differs():
    current = parse_sysctl_output(CONTAINER_OUTPUT + "net.core.rmem_max = 16777216\n")
    plan = sysctl_plan(DESIRED, current, in_container=False)
    assert plan["skipped"] == {}
    assert set(plan["file"]) == set(DESIRED)
    assert plan["apply"] == {
        "fs.file-max": "2097152",
        "net.ipv4.tcp_max_syn_backlog": "4096",
        "vm.max_map_count": "262144",
        "vm.swappiness": "1",
    }


def test_second_run_applies_nothing():
    current = {key: str(value) for key, value in DESIRED.items()}
    assert sysctl_plan(DESIRED, current, in_container=False)["apply"] == {}


def test_multi_field_values_compare_by_fields():
    output = "net.ipv4.tcp_rmem = 4096\t131072\t6291456\n"
    plan = sysctl_plan(
        {"net.ipv4.tcp_rmem": "4096 131072  6291456"},
        parse_sysctl_output(output),
        in_container=True,
    )
    assert plan["apply"] == {}
    assert plan["file"] == {"net.ipv4.tcp_rmem": "4096 131072 6291456"}


def test_unknown_key_on_a_vm_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"vm\.swapiness do not exist"):
        sysctl_plan({"vm.swapiness": 1}, {}, in_container=False)


def test_read_only_net_key_in_a_container_is_skipped_not_applied():
    # Measured in the lab (kernel 6.18): net.core.rmem_max exists in the guest's network
    # namespace but is mode 0444 there, and `sysctl -w` on it fails (with exit status 0).
    current = parse_sysctl_output(CONTAINER_OUTPUT + "net.core.rmem_max = 4194304\n")
    writable = keys_from_paths(
        "/proc/sys/net/core/somaxconn\n/proc/sys/net/ipv4/tcp_max_syn_backlog\n"
    )
    plan = sysctl_plan(DESIRED, current, in_container=True, writable=writable)
    assert "net.core.rmem_max" not in plan["apply"]
    assert "net.core.rmem_max" not in plan["file"]
    assert "read-only" in plan["skipped"]["net.core.rmem_max"]
    assert set(plan["file"]) == {"net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog"}


def test_read_only_key_on_a_vm_is_an_error():
    with pytest.raises(ValueError, match="read-only"):
        sysctl_plan({"vm.swappiness": 1}, {"vm.swappiness": "60"}, in_container=False, writable=[])


def test_proc_paths_round_trip():
    paths = proc_paths(["vm.swappiness", "net.core.somaxconn"])
    assert paths == ["/proc/sys/net/core/somaxconn", "/proc/sys/vm/swappiness"]
    assert keys_from_paths("\n".join(paths) + "\n") == ["net.core.somaxconn", "vm.swappiness"]


def test_skipped_message_names_every_key_and_the_fix_once():
    plan = sysctl_plan(DESIRED, parse_sysctl_output(CONTAINER_OUTPUT), in_container=True)
    message = skipped_message(plan["skipped"])
    assert message.count(HOST_KERNEL_REASON) == 2  # once per reason, not per key
    for key in ("vm.swappiness", "vm.max_map_count", "fs.file-max", "net.core.rmem_max"):
        assert key in message
    assert "net.core.somaxconn" not in message


def test_nspawn_guest_is_a_container_as_ansible_reports_it():
    # As root Ansible reads container=systemd-nspawn from PID 1's environment: type "container".
    assert is_container("container", "guest", ["container", "systemd-nspawn"])
    # Without root it reads /run/systemd/container.
    assert is_container("systemd-nspawn", "guest")
    assert is_container_from_facts(
        {
            "virtualization_type": "systemd-nspawn",
            "virtualization_role": "guest",
            "virtualization_tech_guest": ["container", "systemd-nspawn"],
        }
    )


def test_vm_and_bare_metal_are_not_containers():
    assert not is_container("kvm", "guest", ["kvm"])
    assert not is_container("kvm", "host", ["kvm"])
    assert not is_container_from_facts({"virtualization_type": "NA", "virtualization_role": "NA"})


def test_parse_accepts_slash_keys():
    assert parse_sysctl_output("net/core/somaxconn = 4096\n") == {"net.core.somaxconn": "4096"}


def test_sysctl_problems():
    assert sysctl_problems(DESIRED) == []
    assert "must be a mapping" in sysctl_problems(["vm.swappiness"])[0]
    assert "not a sysctl key" in sysctl_problems({"swappiness": 1})[0]
    assert "value True" in sysctl_problems({"vm.swappiness": True})[0]
    assert "common_sysctl_custom" in sysctl_problems({"vm x": 1}, "common_sysctl_custom")[0]
