"""The build host: preflight checks and the few host commands the lab runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from sluice_infra.lab import LabError

#: Host commands the lab needs, and the Debian package that provides each.
REQUIRED_COMMANDS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "nft": "nftables",
    "ip": "iproute2",
    "apt-cacher-ng": "apt-cacher-ng",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}


def run(
    args: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    timeout: float | None = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a host command, capturing output; a failure raises LabError with its stderr."""
    try:
        result = subprocess.run(
            list(args), input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise LabError(f"{args[0]} is not installed; run `make host-deps`") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`{' '.join(args)}` did not finish within {timeout:.0f}s") from exc
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise LabError(f"`{' '.join(args)}` failed ({result.returncode}): {detail}")
    return result


def preflight() -> None:
    """Refuse, before touching anything, a host that cannot run the lab."""
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root (it creates a bridge, NAT rules and machines); run it as root"
        )
    missing = sorted({pkg for cmd, pkg in REQUIRED_COMMANDS.items() if not shutil.which(cmd)})
    if missing:
        raise LabError(
            "missing host packages: " + " ".join(missing) + "; run `make host-deps` "
            "(apt-get install " + " ".join(missing) + ")"
        )
    if not Path("/sys/fs/cgroup").is_dir() or not any(Path("/sys/fs/cgroup").iterdir()):
        raise LabError("no cgroup file system at /sys/fs/cgroup: systemd-nspawn cannot run here")
    if not Path("/proc/sys/net/ipv4/ip_forward").exists():
        raise LabError("this kernel has no IPv4 forwarding: the lab machines could not reach out")


def host_memory_bytes() -> int:
    """Memory available to this host: MemTotal, or the cgroup cap when one is lower."""
    total = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            total = int(line.split()[1]) * 1024
    cap = _own_memory_cap()
    return min(total, cap) if cap else total


def _own_memory_cap() -> int | None:
    for path in (
        Path("/sys/fs/cgroup/memory") / own_cgroup("memory").lstrip("/") / "memory.limit_in_bytes",
        Path("/sys/fs/cgroup") / own_cgroup("").lstrip("/") / "memory.max",
    ):
        try:
            value = path.read_text().strip()
        except OSError:
            continue
        if value.isdigit() and int(value) < 1 << 60:
            return int(value)
    return None


def own_cgroup(controller: str) -> str:
    """This process's cgroup path for a v1 controller ("memory") or the v2 hierarchy ("")."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers.split(",") == [controller] or (controller == "" and controllers == ""):
            return path
    return "/"


def spawn(args: Sequence[str], log: Path, cgroup_procs: Path | None = None) -> int:
    """Start a long-running host process in its own session, detached from ours, with its
    output in ``log``. With ``cgroup_procs`` the process joins that cgroup before it execs,
    so every child it makes is capped too. Returns its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)

    def _join_cgroup() -> None:
        if cgroup_procs is not None:
            cgroup_procs.write_text(str(os.getpid()))

    with open(log, "ab") as out, open(os.devnull, "rb") as devnull:
        process = subprocess.Popen(
            list(args),
            stdin=devnull,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_join_cgroup if cgroup_procs else None,
        )
    return process.pid


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def processes(program: str) -> dict[int, list[str]]:
    """Running processes whose executable is ``program``: pid -> argv."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            argv = cmdline(int(entry.name))
            if argv and Path(argv[0]).name == program:
                found[int(entry.name)] = argv
    return found


def stop(pid: int, timeout: float) -> None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
    stop_all([pid], timeout)


def stop_all(pids: Iterable[int], timeout: float) -> None:
    """SIGTERM every process of ``pids`` at once, wait up to ``timeout`` seconds for all of
    them, then SIGKILL those left: machines shut down side by side, not one after another."""
    import signal
    import time

    waiting = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        waiting.append(pid)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        waiting = [pid for pid in waiting if Path(f"/proc/{pid}").exists() and not _is_zombie(pid)]
        if waiting:
            time.sleep(0.2)
    for pid in waiting:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
