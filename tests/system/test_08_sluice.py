"""The Sluice service on the lab, end to end, through HAProxy on app:8080, as a client uses it.

Events sent land exactly once in PostgreSQL and in the Redis counters, the query API returns
them, a WebSocket client receives them, a poison record on events.raw reaches the DLQ, each
class of bad input gets its 4xx, one tenant cannot read another's events, killing a processor
mid-stream loses and duplicates nothing, and a deploy's rolling restart fails no request.
Every test uses tenants of its own, so the tests can run again on the same lab."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import httpx
import pytest
from conftest import INVENTORY, REPO, playbook, ssh
from websockets.sync.client import connect

from sluice_infra.lab.remote import Remote

API = "http://10.77.0.11:8080"
EVENTS = f"{API}/api/v1/events"
KAFKA = "10.77.0.12:9092,10.77.0.12:9093,10.77.0.12:9094"
POISON = REPO / "tests" / "system" / "scripts" / "kafka_poison.py"
SLUICE_PLAY = REPO / "ansible" / "playbooks" / "sluice.yml"
CE_JSON = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"


@pytest.fixture(scope="module")
def vault() -> dict[str, str]:
    return Remote().vault(INVENTORY)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as http:
        yield http


def new_key(tenant: str) -> str:
    """An API key for ``tenant``, made by the operators' `sluice keys new` on app."""
    out = ssh("app", f"sudo -n /usr/local/sbin/sluice keys new --tenant {tenant}").stdout
    return out.strip().splitlines()[-1]


def tenant_and_key(prefix: str) -> tuple[str, dict[str, str]]:
    tenant = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return tenant, {"Authorization": f"Bearer {new_key(tenant)}"}


def event(kind: str = "order.created", subject: str = "order-1", **data) -> dict:
    return {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "/system-tests",
        "type": kind,
        "subject": subject,
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": data or {"amount": 1},
    }


def post_batch(client: httpx.Client, auth: dict[str, str], events: list[dict]) -> httpx.Response:
    return client.post(
        EVENTS, headers={**auth, "Content-Type": CE_BATCH}, content=json.dumps(events)
    )


def stored_ids(tenant: str) -> list[str]:
    """The ids of the tenant's rows in PostgreSQL, read on db by the superuser (repeats kept)."""
    sql = f"SELECT id FROM events WHERE tenant_id = '{tenant}'"
    out = ssh("db", f'cd / && sudo -n -u postgres psql -d sluice -tAc "{sql}"').stdout
    return out.split()


def wait_for(what: str, probe: Callable[[], object], timeout: float = 120) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1)


def query_all(client: httpx.Client, auth: dict[str, str], **params) -> list[dict]:
    events, cursor = [], None
    while True:
        page = client.get(
            f"{API}/api/v1/query",
            headers=auth,
            params={**params, "limit": 500, **({"cursor": cursor} if cursor else {})},
        )
        assert page.status_code == 200, page.text
        body = page.json()
        events += body["events"]
        cursor = body["next_cursor"]
        if cursor is None:
            return events


def total_counted(client: httpx.Client, auth: dict[str, str]) -> int:
    reply = client.get(f"{API}/api/v1/aggregates", headers=auth, params={"minutes": 30})
    assert reply.status_code == 200, reply.text
    return reply.json()["total"]


def test_events_land_once_in_postgresql_and_redis_in_every_mode(client):
    tenant, auth = tenant_and_key("once")
    structured = event("order.created", amount=5)
    assert (
        client.post(
            EVENTS, headers={**auth, "Content-Type": CE_JSON}, content=json.dumps(structured)
        ).status_code
        == 202
    )
    binary = client.post(
        EVENTS,
        headers={
            **auth,
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": uuid.uuid4().hex,
            "ce-source": "/system-tests",
            "ce-type": "order.paid",
            "ce-subject": "order-1",
            "ce-time": datetime.now(UTC).isoformat(),
        },
        content=json.dumps({"paid": True}),
    )
    assert binary.status_code == 202, binary.text
    batch = [event("order.created", f"order-{i}") for i in range(2, 40)]
    reply = post_batch(client, auth, batch)
    assert reply.status_code == 202, reply.text
    assert reply.json() == {"status": "accepted", "ids": [e["id"] for e in batch]}
    # a client retrying the whole batch (a lost 202) must not count anything twice
    assert post_batch(client, auth, batch).status_code == 202
    sent = {structured["id"], binary.request.headers["ce-id"], *(e["id"] for e in batch)}

    wait_for("40 rows in PostgreSQL", lambda: len(stored_ids(tenant)) >= len(sent))
    time.sleep(3)  # a duplicate would arrive with the retried batch, right behind
    rows = stored_ids(tenant)
    assert sorted(rows) == sorted(sent)
    assert {e["id"] for e in query_all(client, auth)} == sent
    wait_for("the counters", lambda: total_counted(client, auth) >= len(sent), timeout=30)
    counts = client.get(f"{API}/api/v1/aggregates", headers=auth, params={"minutes": 30}).json()
    assert counts["total"] == len(sent)
    assert counts["totals"] == {"order.created": len(sent) - 1, "order.paid": 1}
    state = client.get(f"{API}/api/v1/subjects/order-1/state", headers=auth).json()
    assert state["state"] == {"amount": 5, "paid": True}, state


def test_a_websocket_client_receives_the_tenants_events(client):
    _, auth = tenant_and_key("stream")
    url = API.replace("http", "ws") + "/api/v1/stream?types=order.shipped"
    with connect(url, additional_headers=auth, open_timeout=10) as websocket:
        time.sleep(1)  # the server subscribes after the upgrade
        wanted = event("order.shipped")
        other = event("order.created")
        assert post_batch(client, auth, [other, wanted]).status_code == 202
        received = json.loads(websocket.recv(timeout=60))
    assert received["id"] == wanted["id"] and received["type"] == "order.shipped"


@pytest.mark.parametrize(
    ("headers", "body", "status", "code_or_detail"),
    [
        ({"Content-Type": CE_JSON}, {**event(), "source": None}, 400, "source"),
        ({"Content-Type": CE_JSON}, {**event(), "specversion": "0.3"}, 400, "specversion"),
        ({"Content-Type": CE_JSON}, {**event(), "time": "yesterday"}, 400, "time"),
        ({"Content-Type": CE_BATCH}, [event(), {**event(), "id": ""}], 400, "[1]"),
        ({"Content-Type": CE_JSON}, b"{not json", 400, "JSON"),
        ({"Content-Type": "text/plain"}, b"hello", 415, "media_type"),
        ({"Content-Type": CE_JSON}, {**event(), "data": "x" * 300_000}, 413, "too_large"),
        ({"Content-Type": CE_BATCH}, [event(data="x" * 200_000)] * 30, 413, "too_large"),
    ],
    ids=[
        "no-source",
        "specversion",
        "bad-time",
        "batch-index",
        "not-json",
        "415",
        "event-413",
        "request-413",
    ],
)
def test_each_class_of_bad_input_gets_its_4xx(client, headers, body, status, code_or_detail):
    _, auth = bad_input_tenant()
    content = body if isinstance(body, bytes) else json.dumps(body)
    reply = client.post(EVENTS, headers={**auth, **headers}, content=content)
    assert reply.status_code == status, reply.text
    error = reply.json()
    assert set(error) == {"error", "detail"}
    assert code_or_detail in error["error"] + error["detail"], error


_BAD_INPUT: list[tuple[str, dict[str, str]]] = []


def bad_input_tenant() -> tuple[str, dict[str, str]]:
    if not _BAD_INPUT:
        _BAD_INPUT.append(tenant_and_key("bad"))
    return _BAD_INPUT[0]


@pytest.mark.parametrize(
    ("authorization", "status"),
    [(None, 401), ("Bearer sk_not-a-key", 401), ("Basic dXNlcjpwYXNz", 401)],
)
def test_a_missing_or_wrong_credential_is_refused(client, authorization, status):
    headers = {
        "Content-Type": CE_JSON,
        **({"Authorization": authorization} if authorization else {}),
    }
    reply = client.post(EVENTS, headers=headers, content=json.dumps(event()))
    assert reply.status_code == status and reply.json()["error"], reply.text
    assert client.get(f"{API}/api/v1/query", headers=headers).status_code == status


def test_a_revoked_key_is_refused(client):
    tenant = f"revoked-{uuid.uuid4().hex[:8]}"
    out = ssh("app", f"sudo -n /usr/local/sbin/sluice keys new --tenant {tenant} 2>&1").stdout
    key_id = out.split("key id ", 1)[1].split()[0]
    key = out.strip().splitlines()[-1]
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get(f"{API}/api/v1/query", headers=auth).status_code == 200
    ssh("app", f"sudo -n /usr/local/sbin/sluice keys revoke {key_id}")
    # instances trust a verified key for SLUICE_API_KEY_CACHE_SECONDS (10 s by default)
    wait_for(
        "the revocation to bite",
        lambda: client.get(f"{API}/api/v1/query", headers=auth).status_code == 401,
        timeout=30,
    )


def test_tenant_b_cannot_read_tenant_a(client):
    _, auth_a = tenant_and_key("iso-a")
    _, auth_b = tenant_and_key("iso-b")
    secret = event("order.created", "shared-subject", secret="a-only")
    assert post_batch(client, auth_a, [secret]).status_code == 202
    wait_for("A's event", lambda: query_all(client, auth_a))
    assert query_all(client, auth_b) == []
    assert query_all(client, auth_b, subject="shared-subject") == []
    history = client.get(f"{API}/api/v1/subjects/shared-subject/events", headers=auth_b).json()
    assert history["events"] == []
    assert total_counted(client, auth_b) == 0
    assert total_counted(client, auth_a) == 1


def test_a_poison_record_reaches_the_dlq_and_the_processor_moves_on(client, vault):
    tenant, auth = tenant_and_key("poison")
    remote = Remote()
    remote.run("app", "cat > /tmp/sluice_kafka_poison.py", stdin=POISON.read_text())
    settings = {
        "bootstrap": KAFKA,
        "cafile": "/etc/sluice/kafka-ca.crt",
        "producer_password": vault["vault_kafka_sluice_producer_password"],
        "admin_password": vault["vault_kafka_admin_password"],
        "tenant": tenant,
        "marker": uuid.uuid4().hex,
    }
    out = remote.run(
        "app",
        "sudo -n /opt/sluice/current/venv/bin/python /tmp/sluice_kafka_poison.py",
        stdin=json.dumps(settings) + "\n",
        timeout=300,
    )
    dead = json.loads(out.strip().splitlines()[-1])
    assert dead["found"], dead
    headers = dead["headers"]
    assert headers["sluice-origin-topic"] == "events.raw"
    assert headers["sluice-error-stage"] == "decode" and headers["sluice-error"]
    # the processor moved on: an event sent after the poison is stored
    after = event("order.created")
    assert post_batch(client, auth, [after]).status_code == 202
    wait_for("the event after the poison", lambda: after["id"] in stored_ids(tenant))


def _sender(client: httpx.Client, auth: dict[str, str], batches: int, size: int,
            failures: list, sent: list, pause: float = 0.0) -> threading.Thread:  # fmt: skip
    def send() -> None:
        for _ in range(batches):
            batch = [event("order.created", f"order-{i}") for i in range(size)]
            try:
                reply = post_batch(client, auth, batch)
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
                continue
            if reply.status_code == 202:
                sent.extend(e["id"] for e in batch)
            else:
                failures.append(f"{reply.status_code} {reply.text[:200]}")
            time.sleep(pause)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_killing_a_processor_mid_stream_loses_and_duplicates_nothing(client):
    tenant, auth = tenant_and_key("kill")
    failures: list[str] = []
    sent: list[str] = []
    thread = _sender(client, auth, batches=60, size=50, failures=failures, sent=sent, pause=0.05)
    wait_for("the stream to start", lambda: len(sent) >= 500, timeout=60)
    ssh("app", "sudo -n systemctl kill --signal=SIGKILL sluice-processor@9501.service")
    thread.join(timeout=300)
    assert not failures, failures[:5]
    assert len(sent) == 3000

    wait_for("every event in PostgreSQL", lambda: len(stored_ids(tenant)) >= len(sent), 300)
    time.sleep(5)
    rows = stored_ids(tenant)
    assert len(rows) == len(set(rows)) == len(sent)
    assert set(rows) == set(sent)
    restarted = ssh("app", "systemctl show --property=NRestarts sluice-processor@9501.service")
    assert restarted.stdout.strip() != "NRestarts=0"  # systemd brought the killed one back
    # The counters never count an event twice; counts a killed processor had not yet written
    # to Redis are rebuilt from PostgreSQL by `sluice replay aggregates`.
    assert total_counted(client, auth) <= len(sent)


def test_a_deploy_restarts_every_instance_and_fails_no_request(client):
    _, auth = tenant_and_key("deploy")
    before = ssh("app", "systemctl show --property=MainPID 'sluice-api@*' | sort").stdout
    failures: list[str] = []
    sent: list[str] = []
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            batch = [event("order.created")]
            try:
                reply = post_batch(client, auth, batch)
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
                continue
            (sent if reply.status_code == 202 else failures).append(reply.status_code)
            time.sleep(0.05)  # 4 senders stay below the tenant's 10,000 requests a minute

    threads = [threading.Thread(target=send, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    # a settings change restarts every API instance and processor, drained one at a time
    extra = json.dumps({"sluice_api_settings": {"API_KEY_CACHE_SECONDS": "9"},
                        "sluice_processor_settings": {"API_KEY_CACHE_SECONDS": "9"}})  # fmt: skip
    result = playbook(SLUICE_PLAY, "-e", extra)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert result.returncode == 0, result.stdout[-5000:]
    assert "Drain in HAProxy" in result.stdout
    after = ssh("app", "systemctl show --property=MainPID 'sluice-api@*' | sort").stdout
    assert set(before.split()).isdisjoint(after.split()), (before, after)
    assert len(sent) > 100 and not failures, (len(sent), failures[:5])
    # and back: the lab ends as site.yml left it
    assert playbook(SLUICE_PLAY).returncode == 0


def test_haproxy_sends_no_request_to_an_instance_that_is_not_ready(client):
    ssh("app", "sudo -n systemctl stop sluice-api@8101.service")
    try:
        _, auth = tenant_and_key("failover")
        codes = {post_batch(client, auth, [event()]).status_code for _ in range(30)}
        assert codes == {202}
    finally:
        ssh("app", "sudo -n systemctl start sluice-api@8101.service")
        status = "sudo -n /usr/local/sbin/sluice-haproxy ready api8101 --timeout 60"
        assert json.loads(ssh("app", status).stdout)["done"]


def test_with_no_instance_ready_haproxy_answers_503_json_with_retry_after(client):
    _, auth = tenant_and_key("all-down")
    ssh("app", "sudo -n systemctl stop sluice-api@8101.service sluice-api@8102.service")
    try:
        wait_for(
            "HAProxy to see both instances down",
            lambda: post_batch(client, auth, [event()]).status_code == 503,
            timeout=30,
        )
        reply = post_batch(client, auth, [event()])
        assert reply.headers["content-type"] == "application/json"
        assert reply.json()["error"] == "unavailable" and int(reply.headers["retry-after"]) >= 1
    finally:
        ssh("app", "sudo -n systemctl start sluice-api@8101.service sluice-api@8102.service")
        for port in (8101, 8102):
            ready = f"sudo -n /usr/local/sbin/sluice-haproxy ready api{port} --timeout 60"
            assert json.loads(ssh("app", ready).stdout)["done"]
