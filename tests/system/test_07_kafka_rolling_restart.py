"""Kafka: kafka_skip_restarts writes a server.properties change and leaves the running nodes
alone, marked restart-pending; the next run (back to the inventory's value) restarts them one
at a time, the quorum leader last, while a producer (acks=all) keeps writing, and no
acknowledged record is lost.

Two playbook runs serve both tests (fixture ``rollout``), and the lab ends as site.yml left
it. What happened is read from the nodes (systemd's stop and start times, the quorum's leader,
the marks), not from the playbook's output."""

from __future__ import annotations

import itertools
import json
import re
import subprocess

import pytest
from conftest import INVENTORY, REPO, STATE, downtime, playbook

from sluice_infra.lab.remote import Remote

KAFKA = REPO / "ansible" / "playbooks" / "kafka.yml"
WRITER = REPO / "tests" / "system" / "scripts" / "kafka_writer.py"
ADMIN_PYTHON = "/opt/kafka/admin-venv/bin/python"
SETTING = "log.retention.check.interval.ms"
REMOTE = Remote(STATE)


def _window(node) -> tuple[int, int]:
    return downtime(node.host, f"kafka@{node.id}")


def _setting(node) -> str:
    properties = f"/etc/kafka/{node.id}/server.properties"
    text = REMOTE.run(node.host, f"sudo -n grep '^{SETTING}=' {properties}")
    return text.strip().split("=", 1)[1]


def _marked(node) -> bool:
    mark = f"/etc/kafka/{node.id}/restart-pending"
    return REMOTE.run(node.host, f"sudo -n test -e {mark} && echo yes || echo no").strip() == "yes"


def _quorum_leader(node) -> int:
    status = REMOTE.run(
        node.host,
        f"sudo -n kafka-metadata-quorum --bootstrap-server {node.endpoint('internal')} "
        "--command-config /etc/kafka/admin.properties describe --status",
    )
    return int(re.search(r"^LeaderId:\s+(\d+)", status, re.MULTILINE).group(1))


def _start_writer(layout) -> subprocess.Popen:
    """kafka_writer.py on the first Kafka host, producing until told to stop."""
    host = layout.kafka_nodes[0].host
    vault = REMOTE.vault(INVENTORY)
    REMOTE.run(host, "cat > /tmp/sluice_kafka_writer.py", stdin=WRITER.read_text())
    writer = subprocess.Popen(
        [
            "ssh",
            "-F",
            str(STATE / "ssh" / "config"),
            host,
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
    return writer


@pytest.fixture(scope="module")
def rollout(converged, layout) -> dict:
    """Run 1: a changed setting with kafka_skip_restarts. Run 2: the inventory's settings
    again, without it, under a producer. What the nodes showed before, between and after."""
    nodes = layout.kafka_nodes
    seen: dict = {"before": {n.id: _window(n) for n in nodes}, "leader": _quorum_leader(nodes[0])}

    change = json.dumps({"kafka_config_custom": {SETTING: 300001}})
    deferred = playbook(KAFKA, "-e", change, "-e", json.dumps({"kafka_skip_restarts": True}))
    assert deferred.returncode == 0, deferred.stdout[-6000:]
    seen["deferred"] = {
        "windows": {n.id: _window(n) for n in nodes},
        "settings": {n.id: _setting(n) for n in nodes},
        "marked": {n.id: _marked(n) for n in nodes},
    }

    writer = _start_writer(layout)
    try:
        rolled = playbook(KAFKA)
    finally:
        out, err = writer.communicate("stop\n", timeout=600)
    assert rolled.returncode == 0, rolled.stdout[-6000:]
    seen["writer"] = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err}
    print(f"writer during the rolling restart: {seen['writer']}")
    seen["rolled"] = {
        "windows": {n.id: _window(n) for n in nodes},
        "settings": {n.id: _setting(n) for n in nodes},
        "marked": {n.id: _marked(n) for n in nodes},
    }
    return seen


def test_kafka_skip_restarts_writes_the_change_and_marks_the_nodes_instead(rollout):
    deferred = rollout["deferred"]
    assert set(deferred["settings"].values()) == {"300001"}, deferred["settings"]
    assert deferred["windows"] == rollout["before"], "a node restarted under kafka_skip_restarts"
    assert all(deferred["marked"].values()), ("every changed node is marked", deferred["marked"])


def test_the_next_run_restarts_one_node_at_a_time_under_a_producer(rollout):
    before, after = rollout["before"], rollout["rolled"]["windows"]
    assert all(after[n][1] > before[n][1] for n in after), ("every node restarts", before, after)
    order = sorted(after, key=lambda n: after[n])
    windows = [after[n] for n in order]
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(windows)), (
        f"two nodes were down at once: {dict(zip(order, windows, strict=True))}"
    )
    leader = rollout["leader"]
    assert order[-1] == leader, f"the quorum leader ({leader}) restarts last, not {order}"
    # back to the inventory's value, and no restart left pending
    assert set(rollout["rolled"]["settings"].values()) == {"300000"}, rollout["rolled"]
    assert not any(rollout["rolled"]["marked"].values()), rollout["rolled"]["marked"]

    # the producer kept going through all three restarts and lost nothing it was told was safe
    report = rollout["writer"]
    assert report["acked"] > 1000, report
    assert report["missing_count"] == 0, report
    assert report["found"] >= report["acked"], report
