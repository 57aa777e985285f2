"""Kafka: a server.properties change restarts the nodes one at a time, the quorum leader last,
while a producer (acks=all) keeps writing; no acknowledged record is lost. Then
kafka_skip_restarts leaves running nodes alone, and the next run restarts them.

What happened is read from the nodes (systemd's stop and start times, the quorum's leader),
not from the playbook's output."""

from __future__ import annotations

import itertools
import json
import re
import subprocess

from conftest import INVENTORY, REPO, STATE, downtime, playbook

from sluice_infra.lab.remote import Remote

KAFKA = REPO / "ansible" / "playbooks" / "kafka.yml"
WRITER = REPO / "tests" / "system" / "scripts" / "kafka_writer.py"
ADMIN_PYTHON = "/opt/kafka/admin-venv/bin/python"
REMOTE = Remote(STATE)


def _window(node) -> tuple[int, int]:
    return downtime(node.host, f"kafka@{node.id}")


def _setting(node, key: str) -> str:
    text = REMOTE.run(node.host, f"sudo -n grep '^{key}=' /etc/kafka/{node.id}/server.properties")
    return text.strip().split("=", 1)[1]


def _quorum_leader(node) -> int:
    status = REMOTE.run(
        node.host,
        f"sudo -n kafka-metadata-quorum --bootstrap-server {node.endpoint('internal')} "
        "--command-config /etc/kafka/admin.properties describe --status",
    )
    return int(re.search(r"^LeaderId:\s+(\d+)", status, re.MULTILINE).group(1))


def test_a_config_change_restarts_one_node_at_a_time_under_a_producer(converged, layout):
    nodes = layout.kafka_nodes
    writer_host = nodes[0].host
    vault = REMOTE.vault(INVENTORY)
    before = {node.id: _window(node) for node in nodes}
    leader = _quorum_leader(nodes[0])
    REMOTE.run(writer_host, "cat > /tmp/sluice_kafka_writer.py", stdin=WRITER.read_text())
    writer = subprocess.Popen(
        [
            "ssh",
            "-F",
            str(STATE / "ssh" / "config"),
            writer_host,
            f"sudo -n {ADMIN_PYTHON} /tmp/sluice_kafka_writer.py 900",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    settings = {
        "bootstrap": layout.kafka_bootstrap,
        "cafile": "/etc/kafka/tls/ca.crt",
        "topic": "events.raw",
        "producer_password": vault["vault_kafka_sluice_producer_password"],
        "admin_password": vault["vault_kafka_admin_password"],
    }
    writer.stdin.write(json.dumps(settings) + "\n")
    writer.stdin.flush()
    change = json.dumps({"kafka_config_custom": {"log.retention.check.interval.ms": 300001}})
    try:
        result = playbook(KAFKA, "-e", change)
    finally:
        out, err = writer.communicate("stop\n", timeout=600)
    assert result.returncode == 0, result.stdout[-6000:]
    report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err}
    print(f"writer during the rolling restart: {report}")

    after = {node.id: _window(node) for node in nodes}
    assert all(after[n][1] > before[n][1] for n in after), ("every node restarts", before, after)
    order = sorted(after, key=lambda n: after[n])
    windows = [after[n] for n in order]
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(windows)), (
        f"two nodes were down at once: {dict(zip(order, windows, strict=True))}"
    )
    assert order[-1] == leader, f"the quorum leader ({leader}) restarts last, not {order}"
    assert all(_setting(n, "log.retention.check.interval.ms") == "300001" for n in nodes)

    # the producer kept going through all three restarts and lost nothing it was told was safe
    assert report["acked"] > 1000, report
    assert report["missing_count"] == 0, report
    assert report["found"] >= report["acked"], report


def test_kafka_skip_restarts_defers_the_restarts_to_the_next_run(converged, layout):
    nodes = layout.kafka_nodes
    before = {node.id: _window(node) for node in nodes}
    change = json.dumps({"kafka_config_custom": {"log.retention.check.interval.ms": 300002}})
    result = playbook(KAFKA, "-e", change, "-e", json.dumps({"kafka_skip_restarts": True}))
    assert result.returncode == 0, result.stdout[-6000:]
    # the change is in the files; the nodes keep running what they started with
    assert all(_setting(n, "log.retention.check.interval.ms") == "300002" for n in nodes)
    assert {node.id: _window(node) for node in nodes} == before, "a deferred restart ran"

    # the next run (back to the inventory's value) restarts the nodes that were left behind,
    # and nothing else restarts them meanwhile
    result = playbook(KAFKA)
    assert result.returncode == 0, result.stdout[-6000:]
    assert all(_setting(n, "log.retention.check.interval.ms") == "300000" for n in nodes)
    after = {node.id: _window(node) for node in nodes}
    assert all(after[n][1] > before[n][1] for n in after), (before, after)
