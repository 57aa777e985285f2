"""The lab's shape from an Ansible inventory: every problem at once, naming file, host and fix."""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path

import pytest
import yaml

from sluice_infra.lab import LabError
from sluice_infra.lab.spec import load

REPO = Path(__file__).resolve().parents[2]
GIB = 2**30


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    """A writable copy of inventories/lab."""
    copy = tmp_path / "lab"
    shutil.copytree(REPO / "inventories" / "lab", copy)
    return copy


def edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def hosts_file(inventory: Path) -> Path:
    return inventory / "hosts.yml"


def lab_file(inventory: Path) -> Path:
    return inventory / "group_vars" / "all" / "lab.yml"


def set_host(inventory: Path, name: str, address: str) -> None:
    def change(data):
        data["all"]["hosts"][name] = {"ansible_host": address}

    edit(hosts_file(inventory), change)


def set_setting(inventory: Path, key: str, value) -> None:
    def change(data):
        data[key] = value

    edit(lab_file(inventory), change)


def problems(inventory: Path) -> str:
    with pytest.raises(LabError) as info:
        load(inventory)
    return str(info.value)


# -- the shipped inventories -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lab", "lab-spread"])
def test_shipped_inventories_load(name):
    spec = load(REPO / "inventories" / name)
    assert [m.name for m in spec.machines] == ["db", "app", "stream"]
    assert spec.gateway == ipaddress.IPv4Address("10.77.0.1")
    assert spec.gateway_interface == "10.77.0.1/24"
    assert spec.bridge == "sluice0"
    assert spec.admin_user == "ops"
    assert spec.subnet == ipaddress.IPv4Network("10.77.0.0/24")
    assert {m.name: str(m.address) for m in spec.machines} == {
        "db": "10.77.0.10",
        "app": "10.77.0.11",
        "stream": "10.77.0.12",
    }


@pytest.mark.parametrize("memory", [8 * GIB, 31 * GIB + 12345, 64 * GIB])
def test_memory_caps_keep_proportions_and_sum_to_share(memory):
    spec = load(REPO / "inventories" / "lab")
    caps = spec.memory_caps(memory)
    assert set(caps) == {"db", "app", "stream"}
    budget = memory * spec.memory_share
    # whole bytes: each cap is at most one byte under its exact share
    assert budget - len(caps) <= sum(caps.values()) <= budget
    assert caps["db"] / caps["stream"] == pytest.approx(2.0, rel=1e-6)
    assert caps["app"] / caps["stream"] == pytest.approx(1.5, rel=1e-6)
    assert caps["db"] == pytest.approx(budget * 32 / 72, abs=1)


def test_machine_lookup_names_known_machines():
    spec = load(REPO / "inventories" / "lab")
    assert str(spec.machine("app").address) == "10.77.0.11"
    with pytest.raises(LabError, match=r"no machine 'web'.*db, app, stream"):
        spec.machine("web")


def test_copy_of_inventory_loads(inventory):
    assert load(inventory).inventory == inventory


# -- one problem each --------------------------------------------------------------------------


def test_address_outside_subnet(inventory):
    set_host(inventory, "app", "10.78.0.11")
    message = problems(inventory)
    assert str(hosts_file(inventory)) in message
    assert "host app" in message
    assert "10.78.0.11 is outside lab_subnet 10.77.0.0/24" in message
    assert "change one of them" in message


@pytest.mark.parametrize("address", ["10.77.0.0", "10.77.0.255"])
def test_network_and_broadcast_address_refused(inventory, address):
    set_host(inventory, "app", address)
    assert f"host app: ansible_host {address} is outside lab_subnet" in problems(inventory)


def test_two_hosts_share_an_address(inventory):
    set_host(inventory, "app", "10.77.0.10")
    message = problems(inventory)
    assert "hosts db and app share the address 10.77.0.10" in message
    assert str(hosts_file(inventory)) in message


def test_host_on_gateway_address(inventory):
    set_host(inventory, "stream", "10.77.0.1")
    message = problems(inventory)
    assert "host stream" in message
    assert "the bridge's address" in message
    assert "start at .2" in message


def test_address_not_an_address(inventory):
    set_host(inventory, "stream", "stream.example")
    assert "host stream: ansible_host 'stream.example' is not an address" in problems(inventory)


def test_missing_weight(inventory):
    def change(data):
        del data["lab_memory_weights"]["app"]

    edit(lab_file(inventory), change)
    message = problems(inventory)
    assert str(lab_file(inventory)) in message
    assert "lab_memory_weights has no positive weight for app" in message


@pytest.mark.parametrize("weight", [0, -4, "big"])
def test_non_positive_weight(inventory, weight):
    def change(data):
        data["lab_memory_weights"]["db"] = weight

    edit(lab_file(inventory), change)
    assert "no positive weight for db" in problems(inventory)


@pytest.mark.parametrize("subnet", ["10.77.0.1/24", "10.77.0.0/33", "lab", "fd00::/64"])
def test_invalid_subnet(inventory, subnet):
    set_setting(inventory, "lab_subnet", subnet)
    message = problems(inventory)
    assert str(lab_file(inventory)) in message
    assert "is not an IPv4 network such as 10.77.0.0/24" in message


def test_missing_subnet(inventory):
    def change(data):
        del data["lab_subnet"]

    edit(lab_file(inventory), change)
    assert "lab_subnet '' is not an IPv4 network" in problems(inventory)


def test_public_subnet(inventory):
    set_setting(inventory, "lab_subnet", "8.8.8.0/24")
    message = problems(inventory)
    assert "lab_subnet 8.8.8.0/24 is not a private range" in message
    assert "192.168.0.0/16" in message
    assert str(lab_file(inventory)) in message


def test_too_small_subnet(inventory):
    set_setting(inventory, "lab_subnet", "10.77.0.0/30")
    assert "lab_subnet 10.77.0.0/30 is too small; use a /24" in problems(inventory)


def test_too_long_machine_name(inventory):
    def change(data):
        data["all"]["hosts"]["streamprocessor"] = {"ansible_host": "10.77.0.13"}

    edit(hosts_file(inventory), change)
    set_setting(
        inventory, "lab_memory_weights", {"db": 32, "app": 24, "stream": 16, "streamprocessor": 8}
    )
    message = problems(inventory)
    assert "host 'streamprocessor'" in message
    assert "at most 12 lower-case letters" in message
    assert str(hosts_file(inventory)) in message


def test_twelve_character_name_is_fine(inventory):
    def change(data):
        data["all"]["hosts"]["processor-12"] = {"ansible_host": "10.77.0.13"}

    edit(hosts_file(inventory), change)
    set_setting(
        inventory, "lab_memory_weights", {"db": 32, "app": 24, "stream": 16, "processor-12": 8}
    )
    assert "processor-12" in [m.name for m in load(inventory).machines]


@pytest.mark.parametrize("bridge", ["", "a-bridge-name-too-long", "Sluice0", "0sluice"])
def test_bad_bridge_name(inventory, bridge):
    set_setting(inventory, "lab_bridge", bridge)
    assert f"lab_bridge {bridge!r} must be a short interface name" in problems(inventory)


@pytest.mark.parametrize("share", [0, 1.5, "most"])
def test_bad_memory_share(inventory, share):
    set_setting(inventory, "lab_memory_share", share)
    assert f"lab_memory_share {share!r} must be in (0, 1]" in problems(inventory)


def test_missing_admin_user(inventory):
    main = inventory / "group_vars" / "all" / "main.yml"
    edit(main, lambda data: data.pop("ansible_user"))
    message = problems(inventory)
    assert str(main) in message
    assert "set ansible_user" in message


def test_no_hosts(inventory):
    hosts_file(inventory).write_text("all:\n  hosts: {}\n")
    assert "all.hosts is empty" in problems(inventory)


def test_missing_settings_file(inventory):
    lab_file(inventory).unlink()
    message = problems(inventory)
    assert str(lab_file(inventory)) in message
    assert "is missing" in message


def test_settings_file_not_yaml(inventory):
    lab_file(inventory).write_text("lab_subnet: [10.77.0.0/24\n")
    assert "is not valid YAML" in problems(inventory)


def test_settings_file_not_a_mapping(inventory):
    lab_file(inventory).write_text("- 10.77.0.0/24\n")
    assert "must hold a mapping" in problems(inventory)


# -- every problem at once ---------------------------------------------------------------------


def test_all_problems_reported_together(inventory):
    set_host(inventory, "app", "10.78.0.11")
    set_host(inventory, "stream", "10.77.0.10")

    def change(data):
        del data["lab_memory_weights"]["app"]
        data["lab_bridge"] = "Bad Bridge"

    edit(lab_file(inventory), change)
    message = problems(inventory)
    assert message.startswith("the lab inventory has problems:")
    assert "host app: ansible_host 10.78.0.11 is outside lab_subnet" in message
    assert "hosts db and stream share the address 10.77.0.10" in message
    assert "no positive weight for app" in message
    assert "lab_bridge 'Bad Bridge'" in message
    assert message.count("\n  - ") == 4


def test_machine_name_ending_in_dash_is_refused(inventory):
    def change(data):
        data["all"]["hosts"]["db-"] = data["all"]["hosts"].pop("db")

    edit(hosts_file(inventory), change)
    set_setting(inventory, "lab_memory_weights", {"db-": 32, "app": 24, "stream": 16})
    assert "host 'db-'" in problems(inventory)
