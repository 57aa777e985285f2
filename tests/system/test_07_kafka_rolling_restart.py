"""Kafka: a server.properties change restarts the nodes one at a time, the quorum leader last,
each behind a health gate, while a producer (acks=all) keeps writing; no acknowledged record is
lost. Then kafka_skip_restarts leaves running nodes alone."""

from __future__ import annotations

import json
import re
import subprocess

from conftest import REPO, STATE, playbook

from sluice_infra.lab.remote import Remote

KAFKA = REPO / "ansible" / "playbooks" / "kafka.yml"
HOST = "stream"
NODES = (1, 2, 3)
BOOTSTRAP = "10.77.0.12:9092,10.77.0.12:9093,10.77.0.12:9094"
WRITER = REPO / "tests" / "system" / "scripts" / "kafka_writer.py"
ADMIN_PYTHON = "/opt/kafka/admin-venv/bin/python"
_RESTART = re.compile(r"TASK \[kafka : Restart kafka node (\d+) on (\S+)\][^\n]*\n(\w+): ")
_GATE = re.compile(r"TASK \[kafka : Wait until the cluster is healthy again after node (\d+)\]")


def _start_time(remote: Remote, node: int) -> str:
    return remote.run(
        HOST, f"systemctl show -p ActiveEnterTimestampMonotonic --value kafka@{node}"
    ).strip()


def _setting(remote: Remote, node: int, key: str) -> str:
    text = remote.run(HOST, f"sudo -n grep '^{key}=' /etc/kafka/{node}/server.properties")
    return text.strip().split("=", 1)[1]


def test_a_config_change_restarts_one_node_at_a_time_under_a_producer(lab_up):
    remote = Remote(STATE)
    vault = remote.vault(REPO / "inventories" / "lab")
    before = {node: _start_time(remote, node) for node in NODES}
    remote.run(HOST, "cat > /tmp/sluice_kafka_writer.py", stdin=WRITER.read_text())
    writer = subprocess.Popen(
        [
            "ssh",
            "-F",
            str(STATE / "ssh" / "config"),
            HOST,
            f"sudo -n {ADMIN_PYTHON} /tmp/sluice_kafka_writer.py 900",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    settings = {
        "bootstrap": BOOTSTRAP,
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

    restarts = [(int(node), outcome) for node, _, outcome in _RESTART.findall(result.stdout)]
    assert sorted(node for node, _ in restarts) == list(NODES), "each node restarts once"
    assert all(outcome == "changed" for _, outcome in restarts), restarts
    gates = [int(node) for node in _GATE.findall(result.stdout)]
    assert gates == [node for node, _ in restarts], "a health gate after every restart"
    after = {node: _start_time(remote, node) for node in NODES}
    assert all(after[node] != before[node] for node in NODES), (before, after)
    assert all(_setting(remote, n, "log.retention.check.interval.ms") == "300001" for n in NODES)

    # the producer kept going through all three restarts and lost nothing it was told was safe
    assert report["acked"] > 1000, report
    assert report["missing_count"] == 0, report
    assert report["found"] >= report["acked"], report


def test_kafka_skip_restarts_defers_the_restarts_to_the_next_run(lab_up):
    remote = Remote(STATE)
    before = {node: _start_time(remote, node) for node in NODES}
    result = playbook(KAFKA, "-e", json.dumps({"kafka_skip_restarts": True}))
    assert result.returncode == 0, result.stdout[-6000:]
    assert not _RESTART.findall(result.stdout)
    # the inventory's value is back in the files; the nodes keep running what they started with
    assert all(_setting(remote, n, "log.retention.check.interval.ms") == "300000" for n in NODES)
    assert {node: _start_time(remote, node) for node in NODES} == before

    # the next run changes no file, yet restarts the nodes that were left behind
    result = playbook(KAFKA)
    assert result.returncode == 0, result.stdout[-6000:]
    assert sorted(int(node) for node, _, _ in _RESTART.findall(result.stdout)) == list(NODES)
    after = {node: _start_time(remote, node) for node in NODES}
    assert all(after[node] != before[node] for node in NODES), (before, after)
