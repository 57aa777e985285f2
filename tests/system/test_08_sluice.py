"""The Sluice service on the lab, end to end, through HAProxy, as a client uses it.

Events sent land exactly once in PostgreSQL and in the Redis counters, the query API returns
them, a WebSocket client receives them, a poison record on events.raw reaches the DLQ, each
class of bad input gets its 4xx, one tenant cannot read another's events, killing a processor
mid-stream loses and duplicates nothing, and a deploy's rolling restart fails no request.
Every test uses tenants of its own, so the tests can run again on the same lab. Hosts, addresses
and ports come from the inventory (``layout``); "nothing more will arrive" is Kafka saying the
processors' consumer group has no lag, not a sleep."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import INVENTORY, REPO, playbook, ssh
from websockets.sync.client import connect

from sluice_infra.lab.layout import Layout
from sluice_infra.lab.remote import Remote
from sluice_infra.loadgen.target import Target

POISON = REPO / "tests" / "system" / "scripts" / "kafka_poison.py"
SLUICE_PLAY = REPO / "ansible" / "playbooks" / "sluice.yml"
CE_JSON = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"


@dataclass
class Where:
    """The deployment under test, from the inventory (filled in by ``_where``)."""

    layout: Layout | None = None
    api: str = ""
    api_host: str = ""
    admin_host: str = ""
    database_host: str = ""

    @property
    def events(self) -> str:
        return f"{self.api}/api/v1/events"


WHERE = Where()


@pytest.fixture(scope="module", autouse=True)
def _where(converged, layout: Layout) -> None:
    WHERE.layout = layout
    WHERE.api = layout.api_url
    WHERE.api_host = layout.api_host
    WHERE.admin_host = layout.processor_host  # the admin wrapper runs where processors do
    WHERE.database_host = layout.database_host


@pytest.fixture(scope="module")
def vault() -> dict[str, str]:
    return Remote().vault(INVENTORY)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as http:
        yield http


def new_key(tenant: str) -> str:
    """An API key for ``tenant``, made by the operators' `sluice keys new` (admin wrapper)."""
    out = ssh(WHERE.admin_host, f"sudo -n /usr/local/sbin/sluice keys new --tenant {tenant}")
    return out.stdout.strip().splitlines()[-1]


def tenant_and_key(prefix: str) -> tuple[str, dict[str, str]]:
    tenant = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return tenant, {"Authorization": f"Bearer {new_key(tenant)}"}


def event(
    kind: str = "order.created", subject: str = "order-1", at: datetime | None = None, **data
) -> dict:
    return {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "/system-tests",
        "type": kind,
        "subject": subject,
        "time": (at or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": data or {"amount": 1},
    }


def post_batch(client: httpx.Client, auth: dict[str, str], events: list[dict]) -> httpx.Response:
    return client.post(
        WHERE.events, headers={**auth, "Content-Type": CE_BATCH}, content=json.dumps(events)
    )


def stored_ids(tenant: str) -> list[str]:
    """The ids of the tenant's rows in PostgreSQL, read on db by the superuser (repeats kept)."""
    sql = f"SELECT id FROM events WHERE tenant_id = '{tenant}'"
    command = f'cd / && sudo -n -u postgres psql -d sluice -tAc "{sql}"'
    return ssh(WHERE.database_host, command).stdout.split()


def wait_for(what: str, probe: Callable[[], object], timeout: float = 120) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1)


def processed_everything() -> bool:
    """Kafka says the processors' group has read and committed every record of events.raw:
    nothing sent so far (a duplicate included) can still arrive in PostgreSQL."""
    lags = Target(WHERE.layout, Remote()).consumer_lag()
    return bool(lags) and not any(lags.values())


def wait_until_processed() -> None:
    wait_for("the processors to have no consumer lag", processed_everything, timeout=180)


def replay_aggregates(tenant: str, since: datetime, until: datetime) -> dict:
    """`sluice replay aggregates` for the tenant's closed buckets of [since, until)."""
    command = (
        f"sudo -n /usr/local/sbin/sluice replay aggregates --tenant {tenant} "
        f"--since {since.isoformat()} --until {until.isoformat()}"
    )
    return json.loads(ssh(WHERE.admin_host, command).stdout.strip().splitlines()[-1])


def query_all(client: httpx.Client, auth: dict[str, str], **params) -> list[dict]:
    events, cursor = [], None
    while True:
        page = client.get(
            f"{WHERE.api}/api/v1/query",
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
    reply = client.get(f"{WHERE.api}/api/v1/aggregates", headers=auth, params={"minutes": 30})
    assert reply.status_code == 200, reply.text
    return reply.json()["total"]


def test_events_land_once_in_postgresql_and_redis_in_every_mode(client):
    tenant, auth = tenant_and_key("once")
    structured = event("order.created", amount=5)
    assert (
        client.post(
            WHERE.events, headers={**auth, "Content-Type": CE_JSON}, content=json.dumps(structured)
        ).status_code
        == 202
    )
    binary = client.post(
        WHERE.events,
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
    wait_until_processed()  # the retried batch too: a duplicate would be in by now
    rows = stored_ids(tenant)
    assert sorted(rows) == sorted(sent)
    assert {e["id"] for e in query_all(client, auth)} == sent
    wait_for("the counters", lambda: total_counted(client, auth) >= len(sent), timeout=30)
    counts = client.get(
        f"{WHERE.api}/api/v1/aggregates", headers=auth, params={"minutes": 30}
    ).json()
    assert counts["total"] == len(sent)
    assert counts["totals"] == {"order.created": len(sent) - 1, "order.paid": 1}
    state = client.get(f"{WHERE.api}/api/v1/subjects/order-1/state", headers=auth).json()
    assert state["state"] == {"amount": 5, "paid": True}, state


def test_a_websocket_client_receives_the_tenants_events(client):
    _, auth = tenant_and_key("stream")
    url = WHERE.api.replace("http", "ws", 1) + "/api/v1/stream?types=order.shipped"
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
    reply = client.post(WHERE.events, headers={**auth, **headers}, content=content)
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
    reply = client.post(WHERE.events, headers=headers, content=json.dumps(event()))
    assert reply.status_code == status and reply.json()["error"], reply.text
    assert client.get(f"{WHERE.api}/api/v1/query", headers=headers).status_code == status


def test_a_revoked_key_is_refused(client):
    tenant = f"revoked-{uuid.uuid4().hex[:8]}"
    out = ssh(WHERE.admin_host, f"sudo -n /usr/local/sbin/sluice keys new --tenant {tenant} 2>&1")
    out = out.stdout
    key_id = out.split("key id ", 1)[1].split()[0]
    key = out.strip().splitlines()[-1]
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get(f"{WHERE.api}/api/v1/query", headers=auth).status_code == 200
    ssh(WHERE.admin_host, f"sudo -n /usr/local/sbin/sluice keys revoke {key_id}")
    # instances trust a verified key for SLUICE_API_KEY_CACHE_SECONDS (10 s by default)
    wait_for(
        "the revocation to bite",
        lambda: client.get(f"{WHERE.api}/api/v1/query", headers=auth).status_code == 401,
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
    history = client.get(
        f"{WHERE.api}/api/v1/subjects/shared-subject/events", headers=auth_b
    ).json()
    assert history["events"] == []
    assert total_counted(client, auth_b) == 0
    assert total_counted(client, auth_a) == 1


def test_a_poison_record_reaches_the_dlq_and_the_processor_moves_on(client, vault):
    tenant, auth = tenant_and_key("poison")
    remote = Remote()
    host = WHERE.api_host  # holds the service's venv (confluent-kafka) and the Kafka CA
    remote.run(host, "cat > /tmp/sluice_kafka_poison.py", stdin=POISON.read_text())
    settings = {
        "bootstrap": WHERE.layout.kafka_bootstrap,
        "cafile": "/etc/sluice/kafka-ca.crt",
        "producer_password": vault["vault_kafka_sluice_producer_password"],
        "admin_password": vault["vault_kafka_admin_password"],
        "tenant": tenant,
        "marker": uuid.uuid4().hex,
    }
    out = remote.run(
        host,
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


def units(host: str, pattern: str) -> list[str]:
    """The running units of ``pattern`` on ``host``, e.g. sluice-api@8101.service."""
    out = ssh(host, f"systemctl list-units --plain --no-legend --state=active '{pattern}'")
    return sorted(line.split()[0] for line in out.stdout.splitlines())


def instance(unit: str) -> str:
    """HAProxy's server name of an API unit: sluice-api@8101.service -> api8101."""
    return "api" + unit.split("@", 1)[1].removesuffix(".service")


def _sender(client: httpx.Client, auth: dict[str, str], batches: int, size: int,
            failures: list, sent: list, pause: float = 0.0,
            at: datetime | None = None) -> threading.Thread:  # fmt: skip
    def send() -> None:
        for _ in range(batches):
            batch = [event("order.created", f"order-{i}", at=at) for i in range(size)]
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
    # every event in one minute bucket that closed long ago, so `sluice replay aggregates` may
    # recount it at once (it leaves open and just-closed buckets to the processors)
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    thread = _sender(client, auth, batches=60, size=50, failures=failures, sent=sent,
                     pause=0.05, at=minute + timedelta(seconds=30))  # fmt: skip
    wait_for("the stream to start", lambda: len(sent) >= 500, timeout=60)
    host = WHERE.layout.processor_host
    victim = units(host, "sluice-processor@*")[0]
    ssh(host, f"sudo -n systemctl kill --signal=SIGKILL {victim}")
    thread.join(timeout=300)
    assert not failures, failures[:5]
    assert len(sent) == 3000

    wait_for("every event in PostgreSQL", lambda: len(stored_ids(tenant)) >= len(sent), 300)
    wait_until_processed()  # a redelivered batch would be stored again by now
    rows = stored_ids(tenant)
    assert len(rows) == len(set(rows)) == len(sent)
    assert set(rows) == set(sent)
    restarted = ssh(host, f"systemctl show --property=NRestarts {victim}")
    assert restarted.stdout.strip() != "NRestarts=0"  # systemd brought the killed one back
    # The counters never count an event twice, but a processor killed between its PostgreSQL
    # commit and its Redis write leaves counts out: `sluice replay aggregates` rebuilds them
    # from PostgreSQL, after which every event is counted exactly once.
    assert total_counted(client, auth) <= len(sent)
    replayed = replay_aggregates(tenant, minute, minute + timedelta(minutes=1))
    assert replayed["events"] == len(sent), replayed
    assert total_counted(client, auth) == len(sent)


def test_a_deploy_restarts_every_instance_and_fails_no_request(client):
    _, auth = tenant_and_key("deploy")
    host = WHERE.api_host
    before = ssh(host, "systemctl show --property=MainPID 'sluice-api@*' | sort").stdout
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
    after = ssh(host, "systemctl show --property=MainPID 'sluice-api@*' | sort").stdout
    assert set(before.split()).isdisjoint(after.split()), (before, after)
    assert len(sent) > 100 and not failures, (len(sent), failures[:5])
    # and back: the lab ends as site.yml left it
    assert playbook(SLUICE_PLAY).returncode == 0


def _start_and_wait_ready(host: str, stopped: list[str]) -> None:
    ssh(host, f"sudo -n systemctl start {' '.join(stopped)}")
    for unit in stopped:
        ready = f"sudo -n /usr/local/sbin/sluice-haproxy ready {instance(unit)} --timeout 60"
        assert json.loads(ssh(host, ready).stdout)["done"]


def test_haproxy_sends_no_request_to_an_instance_that_is_not_ready(client):
    host = WHERE.api_host
    stopped = units(host, "sluice-api@*")[:1]
    ssh(host, f"sudo -n systemctl stop {stopped[0]}")
    try:
        _, auth = tenant_and_key("failover")
        codes = {post_batch(client, auth, [event()]).status_code for _ in range(30)}
        assert codes == {202}
    finally:
        _start_and_wait_ready(host, stopped)


def test_with_no_instance_ready_haproxy_answers_503_json_with_retry_after(client):
    _, auth = tenant_and_key("all-down")
    host = WHERE.api_host
    stopped = units(host, "sluice-api@*")
    assert len(stopped) >= 2, stopped
    ssh(host, f"sudo -n systemctl stop {' '.join(stopped)}")
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
        _start_and_wait_ready(host, stopped)
