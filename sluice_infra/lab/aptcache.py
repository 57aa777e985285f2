"""apt-cacher-ng on the bridge address: the machines' apt proxy, so a redeploy or a rebuilt
machine does not download the same packages again. Its cache lives in the shared cache folder
(outside the clone), so it also survives ``lab-down`` and new clones."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from sluice_infra.lab import LabError
from sluice_infra.lab.host import processes, spawn, stop
from sluice_infra.lab.spec import LabSpec

PORT = 3142


def _config(spec: LabSpec, root: Path) -> str:
    # No Remap rules: the cache is a plain caching proxy keyed by host and path, so it serves
    # whichever mirror the machines' sources name (Debian's stock backends point at mirrors
    # that the build host may not reach).
    return "\n".join(
        [
            f"CacheDir: {root / 'cache'}",
            f"LogDir: {root / 'log'}",
            "SupportDir: /usr/lib/apt-cacher-ng",
            f"BindAddress: {spec.gateway}",
            f"Port: {PORT}",
            f"PidFile: {root / 'apt-cacher-ng.pid'}",
            f"SocketPath: {root / 'socket'}",
            "ForeGround: 1",
            "ExThreshold: 4",
            "",
        ]
    )


def url(spec: LabSpec) -> str:
    return f"http://{spec.gateway}:{PORT}"


def _running(root: Path) -> list[int]:
    marker = str(root / "conf")
    return [pid for pid, argv in processes("apt-cacher-ng").items() if marker in argv]


def _listeners(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on ``port``; 0.0.0.0 stands for all, including
    an IPv6 wildcard socket (dual-stack, it takes IPv4 connections too)."""
    found = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:
                continue
            if table == "tcp":
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
            elif int(address, 16) == 0:
                found.add("0.0.0.0")
    return found


def check(spec: LabSpec, cache_dir: Path) -> None:
    """Refuse, before anything changes, a port taken by a program that is not the lab's."""
    taken = _listeners(PORT) & {"0.0.0.0", str(spec.gateway)}
    if taken and not _running(cache_dir / "apt-cacher-ng"):
        raise LabError(
            f"port {PORT} is taken on {', '.join(sorted(taken))} by a program that is not the "
            "lab's apt cache (a system apt-cacher-ng listening on all addresses?); stop it or "
            "bind it to other addresses, then run lab-up again"
        )


def up(spec: LabSpec, cache_dir: Path) -> str:
    root = cache_dir / "apt-cacher-ng"
    conf = root / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    text = _config(spec, root)
    current = (conf / "acng.conf").read_text() if (conf / "acng.conf").exists() else ""
    running = _running(root)
    if running and current == text and _answers(spec):
        return f"apt cache running at {url(spec)}"
    for pid in running:
        stop(pid, timeout=10)
    check(spec, cache_dir)
    (conf / "acng.conf").write_text(text)
    spawn(["apt-cacher-ng", "-c", str(conf)], log=root / "log" / "daemon.out")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _answers(spec):
            return f"apt cache started at {url(spec)}"
        time.sleep(0.2)
    raise LabError(
        f"apt-cacher-ng did not answer on {spec.gateway}:{PORT} within 15s; is the port taken "
        f"by another program? See {root / 'log'}"
    )


def down(cache_dir: Path) -> list[str]:
    pids = _running(cache_dir / "apt-cacher-ng")
    for pid in pids:
        stop(pid, timeout=10)
    return ["stopped apt cache"] if pids else []


def _answers(spec: LabSpec) -> bool:
    try:
        with socket.create_connection((str(spec.gateway), PORT), timeout=1):
            return True
    except OSError:
        return False


def status(cache_dir: Path, spec: LabSpec) -> str:
    if _running(cache_dir / "apt-cacher-ng"):
        return url(spec) + (" (answering)" if _answers(spec) else " (not answering)")
    return "stopped"
