"""The HTTP API over in-memory ports: what a client sees, and what reaches the ports.

The fakes record every call, so the tests assert both sides of each promise: a 202 means the
sink received exactly those events under the credential's tenant, and every refusal means the
sink received nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fakes import Service, stored_event, token
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect

from sluice.api.app import openapi_document
from sluice.api.ports import EventQueryParams
from sluice.cloudevents import BATCH_MEDIA_TYPE, STRUCTURED_MEDIA_TYPE
from sluice.errors import Unavailable


@pytest.fixture
def service() -> Iterator[Service]:
    service = Service()
    with service.client:
        yield service


def event(**attributes: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": "e-1", "source": "/orders", "type": "order.created"} | (
        attributes
    )


def structured(body: Any) -> dict[str, Any]:
    return {"content": json.dumps(body), "headers": {"Content-Type": STRUCTURED_MEDIA_TYPE}}


def batch(body: Any) -> dict[str, Any]:
    return {"content": json.dumps(body), "headers": {"Content-Type": BATCH_MEDIA_TYPE}}


def post(service: Service, request: dict[str, Any], key: str | None = None) -> Any:
    headers = {**service.auth(key), **request.get("headers", {})}
    return service.client.post("/api/v1/events", content=request["content"], headers=headers)


def assert_error(response: Any, status: int, code: str, detail: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) >= {"error", "detail"}
    assert body["error"] == code
    assert detail in body["detail"]
    return body


# --- ingest -------------------------------------------------------------------------------------

MODES: dict[str, dict[str, Any]] = {
    "structured": structured(event(id="s-1", tenant="b")),
    "batch": batch([event(id="b-1", tenant="b"), event(id="b-2", subject="x")]),
    "binary": {
        "content": json.dumps({"total": 42}),
        "headers": {
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": "bin-1",
            "ce-source": "/orders",
            "ce-type": "order.created",
            "ce-tenant": "b",
        },
    },
}


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_is_accepted_under_the_credentials_tenant(service: Service, mode: str) -> None:
    response = post(service, MODES[mode])
    assert response.status_code == 202, response.text
    ids = {"structured": ["s-1"], "batch": ["b-1", "b-2"], "binary": ["bin-1"]}[mode]
    assert response.json() == {"status": "accepted", "ids": ids}
    # The body's `tenant` extension says "b"; the key says "a", and only the key counts.
    assert [(tenant, [e.id for e in events]) for tenant, events in service.sink.sent] == [
        ("a", ids)
    ]
    if mode == "binary":
        assert service.sink.sent[0][1][0].data == {"total": 42}


def test_an_oidc_token_sends_under_its_tenant_claim(service: Service) -> None:
    response = post(service, structured(event()), key=token(tenant="b"))
    assert response.status_code == 202, response.text
    assert service.sink.sent[0][0] == "b"


def test_binary_data_that_is_not_json_is_kept_as_base64(service: Service) -> None:
    response = service.client.post(
        "/api/v1/events",
        content=b"\x00\xffpng",
        headers={
            **service.auth(),
            "Content-Type": "image/png",
            "ce-specversion": "1.0",
            "ce-id": "img-1",
            "ce-source": "/cam",
            "ce-type": "photo.taken",
        },
    )
    assert response.status_code == 202, response.text
    assert service.sink.sent[0][1][0].data_base64 == base64.b64encode(b"\x00\xffpng").decode()


REVOKED = "revoked"
TEXT = {"Content-Type": "text/plain"}
XML = {"Content-Type": "application/cloudevents+xml"}
UNKNOWN_KEY = "sk_0123456789ab_" + "A" * 43
EXPIRED = token(exp=int(time.time()) - 3600)
CLASSES = [
    pytest.param(structured(event(id=None)), None, 400, "invalid_event", "'id'", id="no-id"),
    pytest.param(structured(event(time="noon")), None, 400, "invalid_event", "'time'", id="time"),
    pytest.param(
        batch([event(), event(specversion="0.3")]),
        None,
        400,
        "invalid_event",
        "events[1]",
        id="batch-index",
    ),
    pytest.param(batch([]), None, 400, "invalid_batch", "empty", id="empty-batch"),
    pytest.param(
        {"content": "{", "headers": {"Content-Type": STRUCTURED_MEDIA_TYPE}},
        None,
        400,
        "malformed_json",
        "",
        id="malformed",
    ),
    pytest.param(
        structured(event(Tenant="x")), None, 400, "invalid_event", "'Tenant'", id="extension"
    ),
    pytest.param(
        structured(event()),
        UNKNOWN_KEY,
        401,
        "invalid_credentials",
        "not recognised",
        id="unknown-key",
    ),
    pytest.param(
        structured(event()), REVOKED, 401, "invalid_credentials", "revoked", id="revoked-key"
    ),
    pytest.param(
        structured(event()), EXPIRED, 401, "invalid_credentials", "expired", id="expired-token"
    ),
    pytest.param(
        structured(event()),
        token(tenant="Not A Tenant"),
        403,
        "tenant_not_allowed",
        "",
        id="no-tenant",
    ),
    pytest.param(
        structured(event(data="x" * 4000)), None, 413, "event_too_large", "2048", id="big-event"
    ),
    pytest.param(
        batch([event(id=str(n)) for n in range(11)]),
        None,
        413,
        "batch_too_large",
        "10",
        id="big-batch",
    ),
    pytest.param(
        structured(event(data="x" * 9000)),
        None,
        413,
        "request_too_large",
        "8192",
        id="big-request",
    ),
    pytest.param(
        {"content": "hi", "headers": TEXT}, None, 415, "unsupported_media_type", "", id="no-mode"
    ),
    pytest.param(
        {"content": "<e/>", "headers": XML}, None, 415, "unsupported_media_type", "", id="xml"
    ),
]


@pytest.mark.parametrize(("request_", "key", "status", "code", "detail"), CLASSES)
def test_each_class_of_bad_input_gets_its_4xx_and_reaches_no_kafka(
    service: Service,
    request_: dict[str, Any],
    key: str | None,
    status: int,
    code: str,
    detail: str,
) -> None:
    response = post(service, request_, service.key_revoked if key == REVOKED else key)
    assert_error(response, status, code, detail)
    assert service.sink.sent == []


def test_no_credential_is_401_with_a_bearer_challenge(service: Service) -> None:
    response = service.client.post("/api/v1/events", **structured(event()))
    assert_error(response, 401, "missing_credentials")
    assert response.headers["www-authenticate"] == 'Bearer realm="sluice"'
    bad = post(service, structured(event()), key="nonsense")
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]


def test_a_spent_budget_is_429_with_retry_after(service: Service) -> None:
    service.limiter.denied["a"] = 2.2
    response = post(service, structured(event()))
    body = assert_error(response, 429, "rate_limited", "10000 requests per 60 s")
    assert response.headers["retry-after"] == "3"
    assert set(body) == {"error", "detail"}  # Retry-After travels beside the body, not in it
    assert service.sink.sent == []
    assert post(service, structured(event()), key=service.key_b).status_code == 202


def test_the_limiter_being_down_does_not_stop_ingestion(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    service.limiter.down = True
    for _ in range(3):
        assert post(service, structured(event())).status_code == 202
    assert "sluice_rate_limiter_errors_total 3.0" in service.client.get("/metrics").text
    warnings = [r for r in caplog.records if "rate limiter unavailable" in r.getMessage()]
    assert len(warnings) == 1  # one warning per LIMITER_WARNING_SECONDS, not one per request


def test_an_oversized_content_length_is_refused_before_reading(service: Service) -> None:
    headers = {**service.auth(), "Content-Type": STRUCTURED_MEDIA_TYPE, "Content-Length": "9000"}
    scope_headers = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    received, sent = asgi_post(service.app, scope_headers, [b"x" * 1000] * 9)
    assert received == 0
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"] == "request_too_large"


def test_a_streamed_body_is_cut_off_at_the_limit(service: Service) -> None:
    """No Content-Length (chunked): reading stops at the first chunk past the limit."""
    headers = [(b"authorization", f"Bearer {service.key_a}".encode())]
    headers.append((b"content-type", STRUCTURED_MEDIA_TYPE.encode()))
    received, sent = asgi_post(service.app, headers, [b"x" * 1000] * 50)
    assert received == 9  # 9000 bytes passed the 8192 limit; 41 chunks were never read
    assert sent[0]["status"] == 413
    assert service.sink.sent == []


def test_a_streamed_body_over_the_limit_through_http(service: Service) -> None:
    def chunks() -> Iterator[bytes]:
        yield from [b" " * 1000] * 10

    response = service.client.post(
        "/api/v1/events",
        content=chunks(),
        headers={**service.auth(), "Content-Type": STRUCTURED_MEDIA_TYPE},
    )
    assert_error(response, 413, "request_too_large", "while being read")


@pytest.mark.parametrize("length", ["abc", "-1", "1e3", "²", "10, 20"])
def test_a_malformed_content_length_is_400(service: Service, length: str) -> None:
    headers = [
        (b"authorization", f"Bearer {service.key_a}".encode()),
        (b"content-type", STRUCTURED_MEDIA_TYPE.encode()),
        (b"content-length", length.encode()),
    ]
    _, sent = asgi_post(service.app, headers, [b"{}"])
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["error"] == "invalid_content_length"


def asgi_post(
    app: Starlette, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> tuple[int, list[dict[str, Any]]]:
    """POST /api/v1/events straight through ASGI, counting the body chunks the app read."""
    received = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received < len(chunks):
            received += 1
            return {
                "type": "http.request",
                "body": chunks[received - 1],
                "more_body": received < len(chunks),
            }
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/events",
        "raw_path": b"/api/v1/events",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8081),
    }
    asyncio.run(app(scope, receive, send))
    return received, sent


def test_kafka_not_acknowledging_in_time_is_503_with_retry_after(service: Service) -> None:
    service.sink.mode = "hang"
    started = time.monotonic()
    response = post(service, structured(event()))
    assert time.monotonic() - started < 3
    assert_error(response, 503, "kafka_timeout", "resend the same events")
    assert response.headers["retry-after"] == "1"


def test_an_unavailable_sink_is_503_with_its_retry_after(service: Service) -> None:
    service.sink.mode = "unavailable"
    response = post(service, structured(event()))
    assert_error(response, 503, "kafka_unavailable")
    assert response.headers["retry-after"] == "7"


# --- read side and tenant isolation -------------------------------------------------------------

READS = [
    ("/api/v1/query?type=order.created", "query"),
    ("/api/v1/aggregates?minutes=10", "aggregates"),
    ("/api/v1/subjects/orders-1/events", "subject_events"),
    ("/api/v1/subjects/orders-1/state?as_of=2024-05-01T12:00:00Z", "subject_state"),
]


@pytest.mark.parametrize(("url", "method"), READS)
def test_reads_are_scoped_to_the_credentials_tenant(
    service: Service, url: str, method: str
) -> None:
    for credential, tenant in (
        (service.key_b, "b"),
        (token(tenant="b"), "b"),
        (service.key_a, "a"),
    ):
        response = service.client.get(url, headers=service.auth(credential))
        assert response.status_code == 200, response.text
        assert service.query.calls[-1][:2] == (method, tenant)
        assert f"{tenant}-1" in response.text
    assert [call[1] for call in service.query.calls] == ["b", "b", "a"]


def test_a_tenant_parameter_cannot_widen_a_query(service: Service) -> None:
    response = service.client.get("/api/v1/query?tenant=a", headers=service.auth(service.key_b))
    assert_error(response, 400, "invalid_parameter", "'tenant'")
    assert service.query.calls == []


def test_query_parameters_reach_the_port_parsed(service: Service) -> None:
    url = (
        "/api/v1/query?type=t&source=%2Fs&subject=x&since=2024-05-01T12:00:00.1234567%2B02:00"
        "&until=2024-05-01T13:00:00 02:00&cursor=abc.DEF_1&limit=7"
    )
    response = service.client.get(url, headers=service.auth())
    assert response.status_code == 200, response.text
    params = service.query.calls[0][2][0]
    assert params == EventQueryParams(
        type="t",
        source="/s",
        subject="x",
        since=datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC),
        until=datetime(2024, 5, 1, 11, 0, 0, tzinfo=UTC),
        cursor="abc.DEF_1",
        limit=7,
    )


@pytest.mark.parametrize(
    ("url", "parameter"),
    [
        ("/api/v1/query?limit=0", "'limit'"),
        ("/api/v1/query?limit=1001", "'limit'"),
        ("/api/v1/query?limit=ten", "'limit'"),
        ("/api/v1/query?limit=%EF%BC%91", "'limit'"),
        ("/api/v1/query?since=yesterday", "'since'"),
        ("/api/v1/query?since=2024-05-01T12:00:00", "'since'"),
        ("/api/v1/query?since=2024-02-30T12:00:00Z", "'since'"),
        ("/api/v1/query?until=2024-05-01T12:00:00%2B25:00", "'until'"),
        ("/api/v1/query?since=2024-05-02T00:00:00Z&until=2024-05-01T00:00:00Z", "'until'"),
        ("/api/v1/query?type=", "'type'"),
        ("/api/v1/query?type=a&type=b", "'type'"),
        ("/api/v1/query?subject=%00", "'subject'"),
        ("/api/v1/query?source=" + "s" * 5000, "'source'"),
        ("/api/v1/query?cursor=a%20b", "'cursor'"),
        ("/api/v1/query?cursor=stale", "'cursor'"),
        ("/api/v1/query?tpye=order.created", "'tpye'"),
        ("/api/v1/aggregates?minutes=61", "'minutes'"),
        ("/api/v1/aggregates?minutes=-1", "'minutes'"),
        ("/api/v1/subjects/x/events?until=now", "'until'"),
        ("/api/v1/subjects/x/state?as_of=1714564800", "'as_of'"),
        ("/api/v1/subjects//state", "'subject'"),
        ("/api/v1/subjects/a%0Ab/state", "'subject'"),
        ("/api/v1/subjects/%0A/events", "'subject'"),
    ],
)
def test_a_bad_parameter_is_400_naming_it(service: Service, url: str, parameter: str) -> None:
    response = service.client.get(url, headers=service.auth())
    assert_error(response, 400, "invalid_parameter", parameter)


def test_a_subject_may_contain_slashes(service: Service) -> None:
    for url in ("/api/v1/subjects/orders/42/events", "/api/v1/subjects/orders%2F42/events"):
        assert service.client.get(url, headers=service.auth()).status_code == 200
    assert [call[2][0] for call in service.query.calls] == ["orders/42", "orders/42"]


def test_the_subject_endpoints_wrap_the_ports_answers(service: Service) -> None:
    history = service.client.get(
        "/api/v1/subjects/o-1/events?until=2024-05-01T12:00:00Z", headers=service.auth()
    ).json()
    assert history == {
        "subject": "o-1",
        "until": "2024-05-01T12:00:00Z",
        "events": [stored_event("a", "o-1")],
    }
    state = service.client.get("/api/v1/subjects/o-1/state", headers=service.auth()).json()
    assert state == {
        "subject": "o-1",
        "as_of": None,
        "state": {"owner": "a"},
        "events": 1,
        "last_event_id": "a-1",
    }


def test_reads_need_a_credential_and_count_against_the_budget(service: Service) -> None:
    assert_error(service.client.get("/api/v1/query"), 401, "missing_credentials")
    service.limiter.denied["a"] = 30
    response = service.client.get("/api/v1/aggregates", headers=service.auth())
    assert_error(response, 429, "rate_limited")
    assert service.query.calls == []


# --- failures inside Sluice ---------------------------------------------------------------------


def test_an_unexpected_exception_is_a_logged_500_without_internals(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    service.query.failure = RuntimeError("password=hunter2 in a stack trace")
    with caplog.at_level(logging.ERROR, logger="sluice.api.app"):
        response = service.client.get("/api/v1/query", headers=service.auth())
    body = assert_error(response, 500, "internal_error")
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    error_id = re.search(r"logged as ([0-9a-f]{12})", body["detail"])
    assert error_id is not None
    logged = [record for record in caplog.records if error_id.group(1) in record.getMessage()]
    assert logged and logged[0].exc_info is not None


def test_a_port_that_is_unavailable_is_503(service: Service) -> None:
    service.query.failure = Unavailable("postgresql_unavailable", "no primary", retry_after=4)
    response = service.client.get("/api/v1/aggregates", headers=service.auth())
    assert_error(response, 503, "postgresql_unavailable")
    assert response.headers["retry-after"] == "4"


def fuzz_requests(service: Service) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Bad input of every kind a client can send, at every endpoint."""
    auth = service.auth()
    bodies: list[bytes] = [
        b"",
        b"null",
        b"[]",
        b"[null]",
        b"{}",
        b"\xff\xfe",
        b'"\\ud800"',
        b"[" * 100_000,
        b'{"specversion":"1.0","id":"1","source":"s","type":"t","data":' + b"[" * 5000 + b"}",
        b"1e999999",
        b"9" * 5000,
        b'{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"!!"}',
        b'{"specversion":"1.0","id":"1","source":"s","type":"t","x":{"y":1}}',
        b'{"specversion":"1.0","id":"\\u0000","source":"s","type":"t"}',
        b'{"specversion":"1.0","id":"1","source":"s","type":"t","time":"2024-13-45T99:99:99Z"}',
        b'{"specversion":"1.0","id":"1","source":"s","type":"t","n":99999999999999}',
        json.dumps(event(data="\udfff")).encode("utf-8", "surrogatepass"),
    ]
    content_types = [
        STRUCTURED_MEDIA_TYPE,
        BATCH_MEDIA_TYPE,
        f"{STRUCTURED_MEDIA_TYPE}; charset=latin-1",
        "application/json",
        "",
        ";;;",
        "application/cloudevents",
    ]
    for body in bodies:
        for content_type in content_types:
            yield (
                "POST",
                "/api/v1/events",
                {
                    "content": body,
                    "headers": {**auth, "Content-Type": content_type},
                },
            )
    binary_headers = [
        {"ce-specversion": "1.0"},
        {"ce-specversion": "1.0", "ce-id": "%ZZ", "ce-source": "s", "ce-type": "t"},
        {"ce-specversion": "1.0", "ce-id": "%C3%28", "ce-source": "s", "ce-type": "t"},
        {"ce-specversion": "1.0", "ce-id": '"unterminated', "ce-source": "s", "ce-type": "t"},
        {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t", "ce-time": "x"},
        {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t", "ce-a_b": "1"},
        {"ce-specversion": "1.0", "ce-datacontenttype": "x"},
        {"ce-specversion": "\xe9\xff"},
        {"ce-specversion": "1.0", "ce-id": "é".encode(), "ce-source": "s", "ce-type": "t"},
    ]
    for headers in binary_headers:
        yield (
            "POST",
            "/api/v1/events",
            {
                "content": b"{bad json",
                "headers": {**auth, "Content-Type": "application/json", **headers},
            },
        )
    for header in ["Bearer", "Bearer \xff\xfe", "Bearer " + "a." * 3000, "Bearer e30.e30.", "\xff"]:
        yield "POST", "/api/v1/events", {"content": b"{}", "headers": {"Authorization": header}}
    queries = [
        "limit=99999999999999999999",
        "limit=1.5",
        "since=%FF",
        "since=0000-00-00T00:00:00Z",
        "since=9999-12-31T23:59:59-23:59",
        "since=2024-05-01T12:00:00.%2B01:00",
        "cursor=" + "%FF" * 10,
        "type=%C0%80",
        "=&&&=",
        "%00=1",
    ]
    for query in queries:
        for path in ("/api/v1/query", "/api/v1/aggregates", "/api/v1/subjects/%FF%00/events"):
            yield "GET", f"{path}?{query}", {"headers": auth}
    for path in ("/api/v1/events", "/readyz", "/metrics", "/api/v1/stream", "/nope", "/api/v1/"):
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"):
            yield method, path, {"headers": auth}


def test_nothing_a_client_sends_produces_a_5xx(service: Service) -> None:
    count = 0
    for method, url, options in fuzz_requests(service):
        # Header bytes as a client may send them: httpx itself only encodes ASCII text.
        options["headers"] = {
            name: value.encode("latin-1") if isinstance(value, str) else value
            for name, value in options["headers"].items()
        }
        response = service.client.request(method, url, **options)
        assert response.status_code < 500, (method, url, options, response.text)
        if response.status_code >= 400 and method != "HEAD":
            body = response.json()
            assert set(body) >= {"error", "detail"}, (method, url, body)
        count += 1
    assert count > 150
    assert service.sink.sent == []


# --- the live stream ----------------------------------------------------------------------------


def test_the_stream_forwards_the_tenants_feed(service: Service) -> None:
    service.feed.messages = [b'{"id":"1"}', '{"id":"é"}'.encode()]
    with service.client.websocket_connect(
        "/api/v1/stream?types=a,b&types=c", headers=service.auth(service.key_b)
    ) as websocket:
        assert websocket.receive_text() == '{"id":"1"}'
        assert websocket.receive_text() == '{"id":"é"}'
    assert service.feed.subscriptions == [("b", frozenset({"a", "b", "c"}))]
    assert service.feed.closed == 1  # the subscription ends with the client


def test_the_stream_takes_an_access_token_parameter(service: Service) -> None:
    service.feed.messages = [b"m"]
    service.feed.end = True
    with service.client.websocket_connect(
        f"/api/v1/stream?access_token={token(tenant='b')}"
    ) as websocket:
        assert websocket.receive_text() == "m"
        with pytest.raises(WebSocketDisconnect) as closed:
            websocket.receive_text()
    assert closed.value.code == 1000
    assert service.feed.subscriptions == [("b", frozenset())]


@pytest.mark.parametrize(
    ("url", "headers", "reason"),
    [
        ("/api/v1/stream", {}, "missing_credentials"),
        ("/api/v1/stream?access_token=sk_bad", {}, "invalid_credentials"),
        ("/api/v1/stream", {"Authorization": "Bearer nonsense"}, "invalid_credentials"),
        ("/api/v1/stream?tenant=b", None, "invalid_parameter"),
        ("/api/v1/stream?types=%00", None, "invalid_parameter"),
    ],
)
def test_the_stream_closes_with_1008_on_bad_auth_or_parameters(
    service: Service, url: str, headers: dict[str, str] | None, reason: str
) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        service.client.websocket_connect(
            url, headers=service.auth() if headers is None else headers
        ) as websocket,
    ):
        websocket.receive_text()
    assert closed.value.code == 1008
    assert closed.value.reason.startswith(reason)
    assert service.feed.subscriptions == []


def test_the_stream_closes_with_1013_when_rate_limited(service: Service) -> None:
    service.limiter.denied["a"] = 5
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        service.client.websocket_connect("/api/v1/stream", headers=service.auth()) as websocket,
    ):
        websocket.receive_text()
    assert closed.value.code == 1013


def test_plain_http_to_the_stream_is_426(service: Service) -> None:
    response = service.client.get("/api/v1/stream", headers=service.auth())
    assert_error(response, 426, "upgrade_required")
    assert response.headers["upgrade"] == "websocket"


# --- operations ---------------------------------------------------------------------------------


def test_healthz_needs_no_dependency(service: Service) -> None:
    service.health.checks = {"kafka": False, "redis": False, "postgresql": False}
    assert service.client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_200_when_every_dependency_answers(service: Service) -> None:
    response = service.client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"kafka": True, "redis": True, "postgresql": True}


def test_readyz_is_503_naming_kafka_when_kafka_is_down(service: Service) -> None:
    service.health.checks["kafka"] = False
    body = assert_error(service.client.get("/readyz"), 503, "not_ready", "kafka")
    assert body["checks"] == {"kafka": False, "redis": True, "postgresql": True}


@pytest.mark.parametrize("down", ["redis", "postgresql"])
def test_readyz_stays_200_without_redis_or_postgresql_and_events_are_taken(
    service: Service, down: str
) -> None:
    """Ingest needs Kafka only: the limiter fails open, API keys come from the cache."""
    assert post(service, structured(event())).status_code == 202  # the key is cached now
    service.health.checks[down] = False
    response = service.client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"][down] is False
    if down == "redis":
        service.limiter.down = True
    else:
        service.keys.down = True
    assert post(service, structured(event())).status_code == 202


def test_readyz_is_503_when_the_check_itself_fails(service: Service) -> None:
    service.health.failure = ConnectionError("boom")
    assert_error(service.client.get("/readyz"), 503, "not_ready", "kafka")
    service.health.failure = None
    service.health.checks = {"redis": True}  # a check that forgets Kafka is not "up"
    assert_error(service.client.get("/readyz"), 503, "not_ready", "kafka")


def test_draining_turns_readyz_to_503_while_requests_still_succeed(service: Service) -> None:
    service.app.state.draining = True
    assert_error(service.client.get("/readyz"), 503, "draining")
    assert post(service, structured(event())).status_code == 202
    service.app.state.draining = False
    assert service.client.get("/readyz").status_code == 200


def test_metrics_count_requests_latency_produce_batches_and_limits(service: Service) -> None:
    post(service, batch([event(id="1"), event(id="2"), event(id="3")]))
    post(service, structured({}))
    service.limiter.denied["a"] = 1
    post(service, structured(event()))
    service.client.get("/api/v1/subjects/x/events", headers=service.auth(service.key_b))
    text = service.client.get("/metrics").text
    assert (
        'sluice_http_requests_total{method="POST",route="/api/v1/events",status="202"} 1.0' in text
    )
    assert (
        'sluice_http_requests_total{method="POST",route="/api/v1/events",status="400"} 1.0' in text
    )
    assert 'route="/api/v1/subjects/{subject:anytext}/events",status="200"' in text
    assert (
        'sluice_http_request_duration_seconds_count{method="POST",route="/api/v1/events"} 3.0'
        in text
    )
    assert 'sluice_produce_duration_seconds_count{outcome="acked"} 1.0' in text
    assert "sluice_batch_events_sum 3.0" in text
    assert "sluice_events_accepted_total 3.0" in text
    assert "sluice_rate_limited_total 1.0" in text
    assert service.client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_two_apps_in_one_process_keep_their_own_metrics() -> None:
    first, second = Service(), Service()
    post(first, structured(event()))
    assert "sluice_events_accepted_total 1.0" in first.client.get("/metrics").text
    assert "sluice_events_accepted_total 0.0" in second.client.get("/metrics").text


def test_unknown_paths_and_methods_answer_in_the_error_shape(service: Service) -> None:
    assert_error(service.client.get("/api/v2/events"), 404, "not_found")
    response = service.client.delete("/api/v1/events", headers=service.auth())
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]


# --- the OpenAPI document -----------------------------------------------------------------------


def app_operations(app: Starlette) -> set[tuple[str, str]]:
    """(path, method) of every route, in OpenAPI's spelling: ``{subject:anytext}`` is
    ``{subject}``, HEAD is implied by GET, and the WebSocket is documented as its GET."""
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        assert isinstance(route, Route | WebSocketRoute)
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        methods = {"get"} if isinstance(route, WebSocketRoute) else set()
        methods |= {method.lower() for method in getattr(route, "methods", None) or ()}
        found |= {(path, method) for method in methods - {"head"}}
    return found


def test_the_document_describes_every_route_and_nothing_else(service: Service) -> None:
    document = json.loads(openapi_document())
    documented = {
        (path, method)
        for path, operations in document["paths"].items()
        for method in operations
        if method in {"get", "post", "put", "patch", "delete", "options"}
    }
    assert documented == app_operations(service.app)


def test_the_document_is_openapi_3_1_with_resolvable_references(service: Service) -> None:
    document = json.loads(openapi_document())
    assert document["openapi"].startswith("3.1")
    assert {"openapi", "info", "paths", "components"} <= set(document)
    assert {"title", "version"} <= set(document["info"])
    assert set(document["components"]["securitySchemes"]) == {"apiKey", "oidc"}

    def references(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from references(value)
        elif isinstance(node, list):
            for item in node:
                yield from references(item)

    refs = set(references(document))
    assert refs
    for ref in refs:
        target: Any = document
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        assert isinstance(target, dict), ref


def test_the_document_is_served_as_committed(service: Service) -> None:
    response = service.client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.content == openapi_document()
    assert response.json()["info"]["title"] == "Sluice ingest API"
