"""Role kafka: a secured KRaft cluster with the declared topics, users and ACLs.

Runs on every host; cluster-wide checks run from the first host of group kafka, with real
clients (tests/testinfra/kafka_probe.py in the role's admin venv) as each SCRAM user over
SASL_SSL. Passwords reach the machine through Ansible's copy module (the module payload, not
argv) in a root-only file the probe reads and the test removes.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import uuid
from pathlib import Path

import pytest

from sluice_infra.settings import role_default

pytestmark = pytest.mark.system

PROBE = Path(__file__).with_name("kafka_probe.py")
ADMIN_PYTHON = "/opt/kafka/admin-venv/bin/python"
ADMIN_PROPERTIES = "/etc/kafka/admin.properties"


def _vars(host) -> dict:
    return host.ansible.get_variables()


def _setting(hostvars: dict, name: str):
    """The value the role used: the inventory's, else the role's default."""
    return hostvars.get(name, role_default("kafka", name))


def _ports(hostvars: dict, name: str, default: int) -> list[int]:
    base = int(hostvars.get(f"kafka_{name}_port_base", default))
    return [base + i for i, _ in enumerate(hostvars.get("kafka_node_ids") or [])]


def _cluster(host) -> dict:
    """Node ids and endpoints of the whole cluster, as the role computes them."""
    runner = host.backend.ansible_runner
    ids, client, internal = [], [], []
    for member in _vars(host)["groups"]["kafka"]:
        other = runner.get_variables(member)
        address = other.get("ansible_host", member)
        ids += list(other.get("kafka_node_ids") or [])
        client += [f"{address}:{p}" for p in _ports(other, "client", 9092)]
        internal += [f"{address}:{p}" for p in _ports(other, "internal", 9192)]
    return {"ids": sorted(ids), "client": client, "internal": internal}


# Module-scoped like testinfra's `host`: the probe below runs once per host, not once per test.
@pytest.fixture(scope="module")
def kafka_host(host):
    if host.backend.get_hostname() not in _vars(host)["groups"].get("kafka", []):
        pytest.skip("no Kafka node on this host")
    return host


@pytest.fixture(scope="module")
def first_kafka_host(kafka_host):
    if _vars(kafka_host)["groups"]["kafka"][0] != kafka_host.backend.get_hostname():
        pytest.skip("cluster-wide checks run from the first Kafka host")
    return kafka_host


@pytest.fixture(scope="module")
def probe_report(first_kafka_host) -> dict:
    """What real clients could do, as each user (one probe run per test module)."""
    host, hostvars = first_kafka_host, _vars(first_kafka_host)
    cluster = _cluster(host)
    settings = {
        "client_bootstrap": ",".join(cluster["client"]),
        "internal_bootstrap": ",".join(cluster["internal"]),
        "cafile": "/etc/kafka/tls/ca.crt",
        "keystore": "/etc/kafka/tls/node.pem",
        "passwords": {
            user: hostvars[f"vault_kafka_{user.replace('-', '_')}_password"]
            for user in ("admin", "sluice-producer", "sluice-processor", "monitoring")
        },
        "topic": "events.raw",
        # no group: the live processors are members of sluice-processor, and a commit from
        # outside the group's generation is refused (UnknownMemberId); their own commits
        # exercise the group's ACL
        "group": None,
        "run": uuid.uuid4().hex,
    }
    secret = f"/root/.sluice-test-{uuid.uuid4().hex}.json"
    script = f"/root/.sluice-kafka-probe-{uuid.uuid4().hex}.py"
    encoded = base64.b64encode(json.dumps(settings).encode()).decode()
    host.ansible("copy", f"content={encoded} dest={secret} mode=0600", become=True, check=False)
    host.ansible("copy", f"src={PROBE} dest={script} mode=0600", become=True, check=False)
    try:
        result = host.run(f"sudo -n {ADMIN_PYTHON} {script} {secret}")
    finally:
        host.run(f"sudo -n rm -f {secret} {script}")
    assert result.rc == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["run"] = settings["run"]
    return report


def _tool(host, tool: str, *args: str) -> str:
    bootstrap = _cluster(host)["internal"][0]
    command = (
        f"sudo -n kafka-{tool} --bootstrap-server {bootstrap} --command-config "
        f"{ADMIN_PROPERTIES} " + " ".join(shlex.quote(a) for a in args)
    )
    result = host.run(command)
    assert result.rc == 0, f"{command}: {result.stderr}"
    return result.stdout


def test_kafka_nodes_are_active_and_listening(kafka_host):
    hostvars = _vars(kafka_host)
    address = hostvars.get("ansible_host")
    # Java listens on IPv4-mapped IPv6 sockets: [::ffff:10.77.0.12]:9092
    listening = kafka_host.check_output("ss -Hltn | awk '{print $4}'").split()
    for index, node_id in enumerate(hostvars["kafka_node_ids"]):
        assert kafka_host.service(f"kafka@{node_id}").is_running
        assert kafka_host.service(f"kafka@{node_id}").is_enabled
        for name, default in (("client", 9092), ("internal", 9192), ("controller", 9292)):
            port = _ports(hostvars, name, default)[index]
            wanted = {f"{address}:{port}", f"[::ffff:{address}]:{port}"}
            assert wanted & set(listening), (node_id, name, listening)


def test_kafka_runs_the_installed_version_as_kafka(kafka_host):
    version = _vars(kafka_host).get("kafka_version")
    link = kafka_host.file("/opt/kafka/current")
    assert link.is_symlink
    if version:
        assert link.linked_to == f"/opt/kafka/{version}"
    for process in kafka_host.process.filter(comm="java"):
        if "kafka.Kafka" in process.args:
            assert process.user == "kafka"


def test_kafka_quorum_has_every_controller_and_a_leader(first_kafka_host):
    status = _tool(first_kafka_host, "metadata-quorum", "describe", "--status")
    leader = re.search(r"^LeaderId:\s+(\d+)", status, re.MULTILINE)
    voters = re.search(r"^CurrentVoters:\s+(.*)$", status, re.MULTILINE)
    assert leader and voters, status
    ids = sorted(int(i) for i in re.findall(r'"id":\s*(\d+)', voters.group(1)))
    if not ids:  # older formats print [1,2,3]
        ids = sorted(int(i) for i in re.findall(r"\d+", voters.group(1)))
    assert ids == _cluster(first_kafka_host)["ids"], status
    assert int(leader.group(1)) in ids


def test_kafka_topics_are_as_declared(first_kafka_host):
    hostvars = _vars(first_kafka_host)
    brokers = len(_cluster(first_kafka_host)["ids"])
    factor = min(int(_setting(hostvars, "kafka_replication_factor")), brokers)
    # one JVM for every topic: kafka-topics --describe prints a summary line per topic
    # ("Topic: events.raw\tTopicId: ...") followed by one line per partition
    out = _tool(first_kafka_host, "topics", "--describe", "--exclude-internal")
    blocks: dict[str, list[str]] = {}
    for line in out.splitlines():
        named = re.match(r"^Topic: (\S+)\s+TopicId:", line)
        if named:
            blocks[named.group(1)] = [line]
        elif line.strip() and blocks:
            blocks[list(blocks)[-1]].append(line)
    for topic in hostvars["kafka_topics"]:
        assert topic["name"] in blocks, (topic["name"], sorted(blocks))
        summary, *partitions = blocks[topic["name"]]
        assert f"PartitionCount: {topic['partitions']}" in summary, summary
        assert f"ReplicationFactor: {topic.get('replication_factor', factor)}" in summary, summary
        configs = {"min.insync.replicas": _setting(hostvars, "kafka_min_insync_replicas")}
        configs.update(topic.get("configs") or {})
        for key, value in configs.items():
            assert f"{key}={value}" in summary, (key, summary)
        assert len(partitions) == topic["partitions"], partitions
        for line in partitions:
            replicas = re.search(r"Replicas: ([\d,]+)", line).group(1)
            isr = re.search(r"Isr: ([\d,]+)", line).group(1)
            assert sorted(replicas.split(",")) == sorted(isr.split(",")), line


def test_kafka_each_user_produces_and_consumes_over_sasl_ssl(probe_report):
    run = probe_report["run"]
    for writer in ("sluice-producer", "admin"):
        assert probe_report[f"produce:{writer}"]["ok"], probe_report[f"produce:{writer}"]
        for reader in ("sluice-processor", "admin"):
            got = probe_report[f"consume:{reader}:{writer}"]
            assert got == {"ok": True, "value": f"{run}:{writer}"}, got


def test_kafka_refuses_what_the_acls_do_not_allow(probe_report):
    refused = probe_report["produce:monitoring"]
    assert not refused["ok"] and "Authorization" in refused["error"], refused
    read = probe_report["consume:sluice-producer"]
    assert not read["ok"] and "Authorization" in read["error"], read


def test_kafka_refuses_a_wrong_password(probe_report):
    assert probe_report["login:monitoring"]["ok"], probe_report["login:monitoring"]
    refused = probe_report["login:wrong-password"]
    assert not refused["ok"] and refused["auth_failures"], refused


def test_kafka_refuses_a_plaintext_client(probe_report):
    refused = probe_report["plaintext"]
    assert not refused["ok"] and not refused["auth_failures"], refused


def test_kafka_internal_listener_requires_a_client_certificate(first_kafka_host):
    """TLS without a certificate gets no session on the internal listener (TLS 1.2, where the
    server refuses during the handshake; TLS 1.3 refuses after it, on the first read)."""
    endpoint = _cluster(first_kafka_host)["internal"][0]
    result = first_kafka_host.run(
        f"timeout 10 openssl s_client -tls1_2 -connect {endpoint} -CAfile /etc/kafka/tls/ca.crt "
        f"-brief </dev/null"
    )
    combined = result.stdout + result.stderr
    assert result.rc != 0 or "alert" in combined.lower(), combined
