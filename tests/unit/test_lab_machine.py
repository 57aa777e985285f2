"""One lab machine on disk (seed, host key), which nspawn processes are its own or another
clone's, and the SSH files the lab writes. A temporary state dir and faked process lists;
no machine is started."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sluice_infra.cloudinit import Seed
from sluice_infra.lab import LabError
from sluice_infra.lab import lab as lab_module
from sluice_infra.lab import machine as machine_module
from sluice_infra.lab.lab import Lab
from sluice_infra.lab.machine import SEED_DIR, Machine, foreign_machines
from sluice_infra.lab.spec import load

REPO = Path(__file__).resolve().parents[2]
SEED = Seed(
    meta_data='instance-id: "sluice-db-aaaa"\nlocal-hostname: "db"\n',
    user_data="#cloud-config\nhostname: db\n",
    network_config="version: 2\nethernets: {}\n",
)
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRlc3Rob3N0a2V5dGVzdGhvc3RrZXl0ZXN0aG9z"


@pytest.fixture(scope="module")
def spec():
    return load(REPO / "inventories" / "lab")


@pytest.fixture
def state_dir(tmp_path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def db(spec, state_dir) -> Machine:
    """Machine db with a fake rootfs holding old host keys."""
    machine = Machine(spec.machine("db"), spec, state_dir)
    ssh = machine.rootfs / "etc" / "ssh"
    ssh.mkdir(parents=True)
    (ssh / "sshd_config").write_text("PasswordAuthentication no\n")
    for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key"):
        (ssh / name).write_text("old\n")
    (machine.rootfs / "usr/lib").mkdir(parents=True)
    (machine.rootfs / "usr/lib/os-release").write_text("ID=debian\n")
    return machine


@pytest.fixture
def fake_processes(monkeypatch):
    """Replace the /proc scan with a list the test fills: pid -> argv."""
    table: dict[int, list[str]] = {}

    def processes(program):
        assert program == "systemd-nspawn"
        return dict(table)

    monkeypatch.setattr(machine_module, "processes", processes)
    return table


def nspawn(directory, bridge="sluice0", boot=True) -> list[str]:
    argv = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit"]
    argv += ["--boot"] if boot else []
    argv += [f"--directory={directory}", f"--network-bridge={bridge}"]
    return argv


def host_keys(machine: Machine) -> list[str]:
    return sorted(p.name for p in (machine.rootfs / "etc/ssh").glob("ssh_host_*"))


# -- paths -------------------------------------------------------------------------------------


def test_machine_paths_are_under_state_dir(db, state_dir):
    assert db.root == state_dir / "machines" / "db"
    assert db.rootfs == state_dir / "machines" / "db" / "rootfs"
    assert db.console_log == state_dir / "machines" / "db" / "console.log"
    assert db.exists()
    assert not Machine(db.lab.machine("app"), db.lab, state_dir).exists()


def test_a_rootfs_an_interrupted_removal_left_is_not_a_disk_and_is_replaced(db, tmp_path):
    (db.rootfs / "usr/lib/os-release").unlink()  # what an rmtree racing a dying machine leaves
    assert not db.exists()
    image = tmp_path / "image"
    (image / "usr/lib").mkdir(parents=True)
    (image / "usr/lib/os-release").write_text("ID=debian\n")

    assert db.create(image) is True
    assert db.exists()
    assert not (db.rootfs / "etc/ssh/sshd_config").exists(), "the leftovers are gone"


# -- seed --------------------------------------------------------------------------------------


def test_write_seed_writes_nocloud_files_private(db):
    assert db.write_seed(SEED) is True
    seed_dir = db.rootfs / "var/lib/cloud/seed/nocloud"
    assert seed_dir == db.rootfs / SEED_DIR
    assert sorted(p.name for p in seed_dir.iterdir()) == [
        "meta-data",
        "network-config",
        "user-data",
    ]
    assert (seed_dir / "meta-data").read_text() == SEED.meta_data
    assert (seed_dir / "user-data").read_text() == SEED.user_data
    assert (seed_dir / "network-config").read_text() == SEED.network_config
    for name in ("meta-data", "user-data", "network-config"):
        assert stat.S_IMODE((seed_dir / name).stat().st_mode) == 0o600


def test_write_seed_first_time_removes_stale_host_keys(db):
    assert db.write_seed(SEED) is True
    assert host_keys(db) == []
    assert (db.rootfs / "etc/ssh/sshd_config").exists()


def test_write_seed_unchanged_keeps_host_keys(db):
    db.write_seed(SEED)
    (db.rootfs / "etc/ssh/ssh_host_ed25519_key.pub").write_text(HOST_KEY + " root@db\n")
    assert db.write_seed(SEED) is False
    assert host_keys(db) == ["ssh_host_ed25519_key.pub"]


def test_write_seed_changed_rewrites_and_drops_host_keys(db):
    db.write_seed(SEED)
    (db.rootfs / "etc/ssh/ssh_host_ed25519_key").write_text("new private\n")
    (db.rootfs / "etc/ssh/ssh_host_ed25519_key.pub").write_text(HOST_KEY + "\n")
    changed = Seed(
        meta_data=SEED.meta_data.replace("aaaa", "bbbb"),
        user_data=SEED.user_data + "timezone: Etc/UTC\n",
        network_config=SEED.network_config,
    )
    assert db.write_seed(changed) is True
    assert (db.rootfs / SEED_DIR / "user-data").read_text() == changed.user_data
    assert (db.rootfs / SEED_DIR / "meta-data").read_text() == changed.meta_data
    assert host_keys(db) == []
    assert db.write_seed(changed) is False


def test_write_seed_restores_a_tampered_file(db):
    db.write_seed(SEED)
    (db.rootfs / SEED_DIR / "network-config").write_text("version: 1\n")
    assert db.write_seed(SEED) is True
    assert (db.rootfs / SEED_DIR / "network-config").read_text() == SEED.network_config


def test_write_seed_replaces_a_missing_file(db):
    db.write_seed(SEED)
    (db.rootfs / SEED_DIR / "meta-data").unlink()
    assert db.write_seed(SEED) is True
    assert (db.rootfs / SEED_DIR / "meta-data").read_text() == SEED.meta_data


# -- host key ----------------------------------------------------------------------------------


def test_host_key_is_type_and_key_without_comment(db):
    (db.rootfs / "etc/ssh/ssh_host_ed25519_key.pub").write_text(HOST_KEY + " root@db\n")
    assert db.host_key() == HOST_KEY


def test_host_key_absent(db):
    (db.rootfs / "etc/ssh/ssh_host_ed25519_key.pub").unlink()
    assert db.host_key() is None


# -- processes ---------------------------------------------------------------------------------


def test_pid_finds_the_booted_machine_on_its_own_disk(db, fake_processes):
    fake_processes[100] = nspawn(db.rootfs, boot=False)  # an image build step, not a boot
    fake_processes[101] = nspawn(str(db.rootfs) + "-other")
    assert db.pid() is None
    assert not db.running()
    fake_processes[102] = nspawn(db.rootfs)
    assert db.pid() == 102
    assert db.running()


def test_foreign_machines_only_other_clones_on_this_bridge(spec, state_dir, fake_processes):
    mine = state_dir / "machines"
    fake_processes.update(
        {
            10: nspawn(mine / "db" / "rootfs"),
            11: nspawn(mine / "app" / "rootfs"),
            20: nspawn("/srv/other-clone/.lab/machines/db/rootfs"),
            21: nspawn(f"{state_dir}-copy/machines/app/rootfs"),  # shares our prefix
            22: nspawn(f"{mine}-old/stream/rootfs"),
            30: nspawn("/srv/other-clone/.lab/machines/stream/rootfs", bridge="otherbr"),
            31: ["systemd-nspawn", "--directory=/var/cache/sluice/images/x.build/rootfs", "sh"],
            32: ["systemd-nspawn", "--boot", "--network-bridge=sluice0"],  # no directory
        }
    )
    assert foreign_machines(spec, state_dir) == {
        20: "/srv/other-clone/.lab/machines/db/rootfs",
        21: f"{state_dir}-copy/machines/app/rootfs",
        22: f"{mine}-old/stream/rootfs",
    }


def test_foreign_machines_none(spec, state_dir, fake_processes):
    fake_processes[10] = nspawn(state_dir / "machines" / "db" / "rootfs")
    assert foreign_machines(spec, state_dir) == {}


# -- the lab's SSH files and resolvers ---------------------------------------------------------


def test_ssh_files_pin_host_keys_from_disk(spec, state_dir):
    lab = Lab(spec, state_dir, state_dir / "cache")
    db, app, _stream = lab.machines
    for machine in (db, app):
        (machine.rootfs / "etc/ssh").mkdir(parents=True)
    (db.rootfs / "etc/ssh/ssh_host_ed25519_key.pub").write_text(HOST_KEY + " root@db\n")
    lab.ssh_dir.mkdir(parents=True)
    lab._write_ssh_files()

    # only machines whose key is on disk are trusted
    assert lab.known_hosts.read_text() == f"db,10.77.0.10 {HOST_KEY}\n"
    config = lab.ssh_config.read_text()
    for name, address in (("db", "10.77.0.10"), ("app", "10.77.0.11"), ("stream", "10.77.0.12")):
        assert f"Host {name} {address}\n  HostName {address}\n  User ops\n" in config
    assert config.count("StrictHostKeyChecking yes") == 3
    assert config.count(f"IdentityFile {lab.ssh_key}") == 3
    assert config.count(f"UserKnownHostsFile {lab.known_hosts}") == 3


@pytest.fixture
def resolv_files(tmp_path, monkeypatch):
    """Point the lab's two resolv.conf paths at files the test writes."""
    files = {
        "/etc/resolv.conf": tmp_path / "resolv.conf",
        "/run/systemd/resolve/resolv.conf": tmp_path / "resolved.conf",
    }
    real_path = Path
    monkeypatch.setattr(lab_module, "Path", lambda p: files.get(str(p), real_path(p)))
    return files


def test_nameservers_skip_loopback_and_ipv6(spec, state_dir, resolv_files):
    resolv_files["/etc/resolv.conf"].write_text(
        "# generated\nsearch example\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\n"
        "nameserver 192.0.2.53\nnameserver 192.0.2.54\noptions edns0\n"
    )
    assert Lab(spec, state_dir)._nameservers() == ("192.0.2.53", "192.0.2.54")


def test_nameservers_fall_back_to_resolved_upstreams(spec, state_dir, resolv_files):
    resolv_files["/etc/resolv.conf"].write_text("nameserver 127.0.0.53\n")
    resolv_files["/run/systemd/resolve/resolv.conf"].write_text("nameserver 198.51.100.1\n")
    assert Lab(spec, state_dir)._nameservers() == ("198.51.100.1",)


def test_nameservers_none_reachable(spec, state_dir, resolv_files):
    resolv_files["/etc/resolv.conf"].write_text("nameserver 127.0.0.1\n")
    with pytest.raises(LabError, match=r"no IPv4 nameserver in /etc/resolv\.conf"):
        Lab(spec, state_dir)._nameservers()
