"""Redis Cluster failover: stop a master while a writer keeps going; its replica takes over
within cluster-node-timeout plus a margin, the writer resumes, the old master rejoins as a
replica."""

from __future__ import annotations

import json
import subprocess
import time

from conftest import INVENTORY, REPO, STATE

from sluice_infra.lab.remote import Remote

NODE_TIMEOUT = 5.0  # cluster-node-timeout 5000 (role vars)
# Failure detection takes node-timeout; the election adds 0.5-1 s plus 1 s per replica rank.
MARGIN = 5.0
KEY = "sluice:{failover}:counter"
WRITER = REPO / "tests" / "system" / "scripts" / "redis_writer.py"


REMOTE = Remote(STATE)


def _password(user: str) -> str:
    return REMOTE.vault(INVENTORY)[f"vault_redis_{user}_password"]


class Cluster:
    """redis-cli as admin on the host of each instance of the inventory's cluster."""

    def __init__(self, layout, password: str) -> None:
        self.hosts = {i.endpoint: i.host for i in layout.redis_instances}
        self.first = layout.redis_instances[0].endpoint
        self.password = password

    def ssh(self, endpoint: str, command: str, stdin: str = "") -> str:
        return REMOTE.run(self.hosts[endpoint], command, stdin=stdin, timeout=120)

    def admin(self, *args: str, endpoint: str | None = None) -> str:
        endpoint = endpoint or self.first
        address, port = endpoint.rsplit(":", 1)
        return REMOTE.redis_cli(
            self.hosts[endpoint], "admin", self.password, address, int(port), *args
        )

    def nodes(self) -> list[list[str]]:
        return [line.split() for line in self.admin("CLUSTER", "NODES").splitlines()]

    def role(self, endpoint: str) -> str:
        for line in self.admin("INFO", "replication", endpoint=endpoint).splitlines():
            if line.startswith("role:"):
                return line.split(":", 1)[1].strip()
        return ""


def test_a_stopped_master_fails_over_while_a_writer_keeps_going(converged, layout):
    admin = _password("admin")
    cluster = Cluster(layout, admin)
    slot = cluster.admin("CLUSTER", "KEYSLOT", KEY).strip()
    nodes = cluster.nodes()
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
    master_at = master[1].split("@")[0]
    replica_at = replica[1].split("@")[0]
    master_port = int(master_at.rsplit(":", 1)[1])
    replica_port = int(replica_at.rsplit(":", 1)[1])
    endpoints = [n[1].split("@")[0] for n in nodes]
    # the writer runs where the replica does: it must survive the master's host
    writer_host = cluster.hosts[replica_at]

    cluster.ssh(replica_at, "cat > /tmp/sluice_redis_writer.py", stdin=WRITER.read_text())
    writer = subprocess.Popen(
        [
            "ssh",
            "-F",
            str(STATE / "ssh" / "config"),
            writer_host,
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
        cluster.ssh(master_at, f"sudo -n systemctl stop redis-server@{master_port}")
        stopped = time.monotonic()
        while cluster.role(replica_at) != "master":
            assert time.monotonic() - stopped < NODE_TIMEOUT + MARGIN + 10, "no failover"
            time.sleep(0.2)
        took_over = time.monotonic() - stopped
        writer.wait(timeout=90)
        out, err = writer.stdout.read(), writer.stderr.read()
    finally:
        cluster.ssh(master_at, f"sudo -n systemctl start redis-server@{master_port}")
    result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err}
    print(f"failover after {took_over:.1f}s; writer: {result}")

    assert took_over <= NODE_TIMEOUT + MARGIN, f"replica took over after {took_over:.1f}s"
    assert result["acked"] > 0 and result["failures"] > 0, result  # the outage was real
    assert result["outage_seconds"] <= NODE_TIMEOUT + MARGIN + 1, result
    assert result["last_value"] >= result["acked"] * 0.99, "the writer did not resume"

    # the old master comes back as a replica of the one that took over, in sync
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = cluster.admin("INFO", "replication", endpoint=master_at)
        if "role:slave" in info and "master_link_status:up" in info:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"{master[1]} did not rejoin as a replica:\n{info}")
    assert f"master_port:{replica_port}" in info
    assert "cluster_state:ok" in cluster.admin("CLUSTER", "INFO", endpoint=replica_at)
