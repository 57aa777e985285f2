"""Bad input to the lab: one clear message naming the problem and the fix, nothing changed.

These run against a scratch copy of the lab inventory on its own subnet and bridge name, so
the running lab is not disturbed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, INVENTORY, REPO, lab, run

SUBNET = "10.78.9.0/24"
BRIDGE = "sluicetst"
FOREIGN = "sluicefgn"


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    inventory = tmp_path / "inventory"
    shutil.copytree(INVENTORY, inventory, ignore=shutil.ignore_patterns("vault.yml"))
    settings = inventory / "group_vars/all/lab.yml"
    data = yaml.safe_load(settings.read_text())
    data.update(lab_subnet=SUBNET, lab_bridge=BRIDGE)
    settings.write_text(yaml.safe_dump(data))
    hosts = inventory / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("10.77.0.", "10.78.9."))
    yield inventory
    subprocess.run(["ip", "link", "del", FOREIGN], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)


def _exists(device: str) -> bool:
    return run("ip", "link", "show", device).returncode == 0


def _fails(inventory: Path, tmp_path: Path) -> str:
    result = lab("--inventory", inventory, "--state-dir", tmp_path / "state", "up", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert not _exists(BRIDGE), "a refused lab-up must not leave a bridge behind"
    assert not (tmp_path / "state").exists(), "a refused lab-up must not create machines"
    return result.stderr


def test_subnet_already_in_use_is_refused_naming_the_device(scratch, tmp_path):
    run("ip", "link", "add", FOREIGN, "type", "bridge", check=True)
    run("ip", "addr", "add", "10.78.9.200/24", "dev", FOREIGN, check=True)
    message = _fails(scratch, tmp_path)
    assert FOREIGN in message and SUBNET in message and "lab_subnet" in message


def test_a_foreign_device_with_the_bridge_name_is_refused(scratch, tmp_path):
    # a veth end carrying the bridge's name: not a bridge, and not the lab's
    run("ip", "link", "add", BRIDGE, "type", "veth", "peer", "name", f"{BRIDGE}p", check=True)
    message = _fails_keeping(scratch, tmp_path)
    assert f"device {BRIDGE} exists and is not the lab's bridge" in message
    assert "lab_bridge" in message


def _fails_keeping(inventory: Path, tmp_path: Path) -> str:
    """Like _fails, for the case where the foreign device carries the bridge's name."""
    result = lab("--inventory", inventory, "--state-dir", tmp_path / "state", "up", check=False)
    assert result.returncode == 1
    kind = run("ip", "-d", "link", "show", BRIDGE).stdout
    assert "veth" in kind, "the foreign device must be left as it was"
    return result.stderr


def test_duplicate_addresses_are_refused_naming_both_hosts(scratch, tmp_path):
    hosts = scratch / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("10.78.9.12", "10.78.9.11"))
    message = _fails(scratch, tmp_path)
    assert "app and stream share the address 10.78.9.11" in message


def test_address_outside_the_subnet_is_refused(scratch, tmp_path):
    hosts = scratch / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("10.78.9.10", "10.99.0.10"))
    message = _fails(scratch, tmp_path)
    assert "host db" in message and "outside lab_subnet" in message


def test_site_refuses_a_bad_kafka_layout_before_touching_any_host(tmp_path):
    """Even controllers, a duplicate node id, min.insync.replicas above the replication factor,
    a topic with no partitions: site.yml stops in its validation play with one line each."""
    inventory = tmp_path / "inventory"
    shutil.copytree(INVENTORY, inventory, ignore=shutil.ignore_patterns(".pki"))
    hosts = inventory / "hosts.yml"
    hosts.write_text(
        hosts.read_text().replace("kafka_node_ids: [1, 2, 3]", "kafka_node_ids: [1, 2, 2, 4]")
    )
    # copytree copied the shared settings' link as a file: edit the copy, not the original
    shared = inventory / "group_vars/all/00-shared.yml"
    assert not shared.is_symlink()
    shared.write_text(shared.read_text().replace("partitions: 5\n", "partitions: 0\n", 1))
    settings = inventory / "group_vars/all/main.yml"
    settings.write_text(settings.read_text() + "kafka_min_insync_replicas: 4\n")

    result = run(BIN / "ansible-playbook", "-i", inventory, REPO / "ansible" / "site.yml")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "node id 2 is used more than once" in output
    assert "4 KRaft controllers" in output and "odd number" in output
    assert "kafka_min_insync_replicas 4 is larger than kafka_replication_factor 3" in output
    assert "partitions is 0" in output
    assert "PLAY [Common base" not in output, "validation must stop the run before any host"
