"""One lab machine: a writable copy of the base image, its cloud-init seed, and the
systemd-nspawn process that boots it (systemd as PID 1, on the lab bridge)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sluice_infra.cloudinit import Seed
from sluice_infra.lab import LabError
from sluice_infra.lab.host import own_cgroup, processes, run, spawn, stop
from sluice_infra.lab.spec import LabSpec, MachineSpec

SEED_DIR = Path("var/lib/cloud/seed/nocloud")


@dataclass(frozen=True)
class Machine:
    spec: MachineSpec
    lab: LabSpec
    state_dir: Path

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def root(self) -> Path:
        return self.state_dir / "machines" / self.name

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    @property
    def console_log(self) -> Path:
        return self.root / "console.log"

    def exists(self) -> bool:
        """Whether the machine has its disk: a complete copy of the image (an interrupted
        removal can leave a rootfs folder with stray files, which is not a disk)."""
        return (self.rootfs / "usr/lib/os-release").is_file()

    # -- disk and seed ---------------------------------------------------------------------

    def create(self, image: Path) -> bool:
        """Give the machine its own copy of the image, once. Returns True if it made one."""
        if self.exists():
            return False
        _remove_tree(self.rootfs)  # what an interrupted removal left, if anything
        partial = self.root / "rootfs.partial"
        _remove_tree(partial)
        self.root.mkdir(parents=True, exist_ok=True)
        run(["cp", "-a", "--reflink=auto", str(image), str(partial)], timeout=900)
        partial.rename(self.rootfs)
        return True

    def write_seed(self, seed: Seed) -> bool:
        """Write the NoCloud seed; True if it changed (cloud-init applies it on next boot)."""
        seed_dir = self.rootfs / SEED_DIR
        seed_dir.mkdir(parents=True, exist_ok=True)
        changed = False
        for name, text in seed.files().items():
            target = seed_dir / name
            if not target.exists() or target.read_text() != text:
                target.write_text(text)
                target.chmod(0o600)
                changed = True
        if changed:
            # A new seed is a new cloud-init instance, which makes new host keys: drop the
            # old ones so the host key on disk is always the one sshd serves.
            for key in (self.rootfs / "etc/ssh").glob("ssh_host_*"):
                key.unlink()
        return changed

    def host_key(self) -> str | None:
        """The machine's SSH host key, read from its disk (written by cloud-init at boot)."""
        key = self.rootfs / "etc/ssh/ssh_host_ed25519_key.pub"
        try:
            return " ".join(key.read_text().split()[:2])
        except OSError:
            return None

    # -- process ---------------------------------------------------------------------------

    def pid(self) -> int | None:
        marker = f"--directory={self.rootfs}"
        for pid, argv in processes("systemd-nspawn").items():
            if marker in argv and "--boot" in argv:
                return pid
        return None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, memory_cap: int | None, log) -> None:
        if self.running():
            return
        self.console_log.unlink(missing_ok=True)
        procs = _memory_cgroup(self.name, memory_cap, log) if memory_cap else None
        spawn(
            [
                "systemd-nspawn",
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--boot",
                f"--machine={self.name}",
                f"--directory={self.rootfs}",
                f"--network-bridge={self.lab.bridge}",
                "--console=read-only",
                "--link-journal=no",
            ],
            log=self.console_log,
            cgroup_procs=procs,
        )

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        stop(pid, timeout=STOP_TIMEOUT)
        return True

    def destroy(self) -> None:
        self.stop()
        _remove_tree(self.root)
        _remove_cgroup(self.name)

    # -- readiness -------------------------------------------------------------------------

    def wait_booted(self, timeout: float) -> None:
        """Wait until cloud-init has written the host key and sshd answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise LabError(f"machine {self.name} stopped while booting; see {self.console_log}")
            if self.host_key() and _port_open(str(self.spec.address), 22):
                return
            time.sleep(0.5)
        raise LabError(
            f"machine {self.name} ({self.spec.address}) did not answer on port 22 within "
            f"{timeout:.0f}s; see {self.console_log} and "
            f"{self.rootfs / 'var/log/cloud-init-output.log'}"
        )

    def wait_cloud_init(self, ssh_config: Path, timeout: float) -> None:
        try:
            result = subprocess.run(
                ["ssh", "-F", str(ssh_config), self.name, "cloud-init", "status", "--wait"],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(
                f"cloud-init on {self.name} did not finish within {timeout:.0f}s"
            ) from exc
        if result.returncode != 0:
            output = self.rootfs / "var/log/cloud-init-output.log"
            tail = output.read_text(errors="replace").splitlines()[-15:] if output.exists() else []
            raise LabError(
                f"cloud-init on {self.name} failed ({(result.stdout + result.stderr).strip()}); "
                f"last lines of {output}:\n" + "\n".join(tail)
            )


def foreign_machines(lab: LabSpec, state_dir: Path) -> dict[int, str]:
    """Lab machines on this bridge that run from another clone's disks: pid -> directory."""
    mine = str(state_dir / "machines")
    found = {}
    for pid, argv in processes("systemd-nspawn").items():
        if f"--network-bridge={lab.bridge}" not in argv:
            continue
        directory = next((a.split("=", 1)[1] for a in argv if a.startswith("--directory=")), "")
        if directory and not directory.startswith(mine + "/"):
            found[pid] = directory
    return found


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def _cgroup_dir(name: str) -> Path | None:
    v1 = Path("/sys/fs/cgroup/memory")
    if v1.is_dir():
        return v1 / own_cgroup("memory").lstrip("/") / "sluice-lab" / name
    unified = Path("/sys/fs/cgroup")
    if (unified / "cgroup.controllers").exists():
        own = Path(own_cgroup("").lstrip("/"))
        return unified / own.parent / "sluice-lab" / name
    return None


def _memory_cgroup(name: str, cap: int, log) -> Path | None:
    """A memory cgroup for the machine, or None (with a note) where the host does not allow
    one: caps are a nicety of the lab, not a condition for it."""
    path = _cgroup_dir(name)
    if path is None:
        log(f"{name}: no memory cgroup controller on this host; machine runs without a cap")
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
        if (path / "memory.limit_in_bytes").exists():
            (path / "memory.limit_in_bytes").write_text(str(cap))
        else:
            parent = path.parent
            (parent / "cgroup.subtree_control").write_text("+memory")
            (path / "memory.max").write_text(str(cap))
    except OSError as exc:
        log(f"{name}: memory cap not applied ({exc}); machine runs without a cap")
        return None
    return path / "cgroup.procs"


def _remove_cgroup(name: str) -> None:
    path = _cgroup_dir(name)
    if path is not None:
        for directory in (path, path.parent):
            with contextlib.suppress(OSError):
                directory.rmdir()


def memory_cap(name: str) -> int | None:
    path = _cgroup_dir(name)
    for file in ("memory.limit_in_bytes", "memory.max"):
        try:
            value = (path / file).read_text().strip() if path else ""
        except OSError:
            continue
        if value.isdigit():
            return int(value)
    return None


#: Seconds a machine gets to shut down (its services stop in order: Kafka's controlled
#: shutdown alone may take a minute) before systemd-nspawn is killed.
STOP_TIMEOUT = 150
#: Seconds to keep removing a folder that processes of a dying machine still write into.
REMOVE_TIMEOUT = 30


def _remove_tree(path: Path) -> None:
    """Remove ``path`` completely, retrying while the last writes of a stopped machine land;
    LabError naming the folder if it will not go."""
    deadline = time.monotonic() + REMOVE_TIMEOUT
    while True:
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        if time.monotonic() >= deadline:
            raise LabError(
                f"cannot remove {path}: something still writes into it; stop what uses it "
                f"(fuser -vm {path}) and run the command again"
            )
        time.sleep(1)
