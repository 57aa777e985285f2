"""Redis Cluster failover: stop a master while a writer keeps going; its replica takes over
within cluster-node-timeout plus a margin, the writer resumes, the old master rejoins as a
replica."""

from __future__ import annotations

import json
import subprocess
import time

from conftest import REPO, STATE

from sluice_infra.lab.remote import Remote

HOST = "stream"
NODE_TIMEOUT = 5.0  # cluster-node-timeout 5000 (role vars)
# Failure detection takes node-timeout; the election adds 0.5-1 s plus 1 s per replica rank.
MARGIN = 5.0
KEY = "sluice:{failover}:counter"
WRITER = REPO / "tests" / "system" / "scripts" / "redis_writer.py"


REMOTE = Remote(STATE)


def _password(user: str) -> str:
    return REMOTE.vault(REPO / "inventories" / "lab")[f"vault_redis_{user}_password"]


def _ssh(command: str, stdin: str = "") -> str:
    return REMOTE.run(HOST, command, stdin=stdin, timeout=120)


def _admin(password: str, *args: str, port: int = 7000) -> str:
    return REMOTE.redis_cli(HOST, "admin", password, "10.77.0.12", port, *args)


def _nodes(password: str) -> list[list[str]]:
    return [line.split() for line in _admin(password, "CLUSTER", "NODES").splitlines()]


def _role(password: str, port: int) -> str:
    for line in _admin(password, "INFO", "replication", port=port).splitlines():
        if line.startswith("role:"):
            return line.split(":", 1)[1].strip()
    return ""


def test_a_stopped_master_fails_over_while_a_writer_keeps_going(lab_up):
    admin = _password("admin")
    slot = _admin(admin, "CLUSTER", "KEYSLOT", KEY).strip()
    nodes = _nodes(admin)
    master = next(
        n
        for n in nodes
        if "master" in n[2]
        and any(
            int(r.split("-")[0]) <= int(slot) <= int(r.split("-")[-1])
            for r in n[8:]
            if not r.startswith("[")
        )
    )
    replica = next(n for n in nodes if n[3] == master[0])
    master_port = int(master[1].split("@")[0].split(":")[1])
    replica_port = int(replica[1].split("@")[0].split(":")[1])
    endpoints = [n[1].split("@")[0] for n in nodes]

    _ssh("cat > /tmp/sluice_redis_writer.py", stdin=WRITER.read_text())
    writer = subprocess.Popen(
        [
            "ssh",
            "-F",
            str(STATE / "ssh" / "config"),
            HOST,
            f"python3 /tmp/sluice_redis_writer.py '{KEY}' 30 {' '.join(endpoints)}",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writer.stdin.write(_password("sluice") + "\n")
    writer.stdin.close()
    try:
        time.sleep(4)
        _ssh(f"sudo -n systemctl stop redis-server@{master_port}")
        stopped = time.monotonic()
        while _role(admin, replica_port) != "master":
            assert time.monotonic() - stopped < NODE_TIMEOUT + MARGIN + 10, "no failover"
            time.sleep(0.2)
        took_over = time.monotonic() - stopped
        writer.wait(timeout=90)
        out, err = writer.stdout.read(), writer.stderr.read()
    finally:
        _ssh(f"sudo -n systemctl start redis-server@{master_port}")
    result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err}
    print(f"failover after {took_over:.1f}s; writer: {result}")

    assert took_over <= NODE_TIMEOUT + MARGIN, f"replica took over after {took_over:.1f}s"
    assert result["acked"] > 0 and result["failures"] > 0, result  # the outage was real
    assert result["outage_seconds"] <= NODE_TIMEOUT + MARGIN + 1, result
    assert result["last_value"] >= result["acked"] * 0.99, "the writer did not resume"

    # the old master comes back as a replica of the one that took over, in sync
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = _admin(admin, "INFO", "replication", port=master_port)
        if "role:slave" in info and "master_link_status:up" in info:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"{master[1]} did not rejoin as a replica:\n{info}")
    assert f"master_port:{replica_port}" in info
    assert "cluster_state:ok" in _admin(admin, "CLUSTER", "INFO")
