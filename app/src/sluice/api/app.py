"""The HTTP API (``sluice serve``): a Starlette app over the ports of :mod:`sluice.api.ports`.

The ingest path, in the order a request meets it: authenticate (the tenant comes from the
credential), rate limit (per tenant), read the body under a hard size cap, parse and validate
the CloudEvents (:func:`sluice.cloudevents.parse_request`), produce to Kafka and wait for
``acks=all``, answer ``202`` with the event ids. Each step either passes or ends the request
with its 4xx, so bad input never reaches Kafka; when Kafka cannot take the events within the
produce deadline the answer is ``503`` with ``Retry-After``, and the client resends the same
events (same ids, which the processor's idempotent write makes harmless).

Every error is ``{"error": code, "detail": text}`` (:mod:`sluice.errors`). An unexpected
exception is answered 500 with an error id and no internals, and logged with that id; the unit
tests hold that nothing a client sends can cause one.

The app carries no global state: its Prometheus registry belongs to its :class:`Metrics`, and
``app.state.draining`` (set by the server's SIGTERM handler) turns ``/readyz`` to 503 so HAProxy
stops sending new requests while the ones in flight finish.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from importlib import resources
from typing import Any, Final

import anyio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from sluice.api.auth import Authenticator, JwksCache, JwksFetch, Principal
from sluice.api.ports import (
    AsyncKeyStore,
    EventQuery,
    EventQueryParams,
    EventSink,
    Health,
    LiveFeed,
    RateLimiter,
)
from sluice.cloudevents import Event, parse_request
from sluice.config import Settings
from sluice.errors import ApiError, BadRequest, RateLimited, TooLarge, Unauthorized, Unavailable

log = logging.getLogger(__name__)

API: Final = "/api/v1"
#: The dependencies ``/readyz`` requires, as :meth:`sluice.api.ports.Health.check` names them.
DEPENDENCIES: Final = ("kafka", "redis", "postgresql")
#: What an instance needs to take events: Kafka. Without Redis the rate limiter fails open, and
#: without PostgreSQL API keys come from the cache; those two are reported, not required, so a
#: Redis or PostgreSQL outage does not take every instance out of HAProxy (issue #15).
READINESS_GATE: Final = ("kafka",)
#: How long ``/readyz`` waits for the dependency checks; HAProxy's check must not hang.
READY_TIMEOUT_SECONDS: Final = 2.0
#: How long a request waits for the rate limiter. Past it, or when Redis is down, the request
#: goes on unlimited: Redis holds derived data only, and losing it must not stop ingestion.
LIMITER_TIMEOUT_SECONDS: Final = 0.5
#: While the limiter is unavailable, one warning per this many seconds.
LIMITER_WARNING_SECONDS: Final = 10.0
#: Longest filter value (type, source, subject, a stream type) the read endpoints take.
MAX_FILTER_LENGTH: Final = 4096
#: Cursors embed the last event id, so they are allowed as long as a URL through HAProxy can be.
MAX_CURSOR_LENGTH: Final = 16 * 1024
QUERY_LIMIT_DEFAULT: Final = 100
QUERY_LIMIT_MAX: Final = 1000
AGGREGATE_MINUTES_DEFAULT: Final = 5
AGGREGATE_MINUTES_MAX: Final = 60
#: WebSocket close codes (RFC 6455): policy violation (bad credential or parameters), try
#: again later (rate limited, feed unavailable), internal error.
WS_POLICY_VIOLATION: Final = 1008
WS_TRY_AGAIN_LATER: Final = 1013
WS_INTERNAL_ERROR: Final = 1011

_HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CONTENT_LENGTH = re.compile(r"[0-9]{1,20}")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CURSOR = re.compile(r"[!-~]+")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(?P<fraction>\.[0-9]+)?(?P<offset>Z|[+ -][0-9]{2}:[0-9]{2})",
    re.IGNORECASE,
)


class _AnyText(Convertor[str]):
    """A path parameter that may hold anything, '/' and line breaks included. Starlette's
    ``path`` convertor matches ``.*``, which stops at a line break, so a subject holding one
    (``%0A``) fell through to a 404; with this the endpoint refuses it with a 400 that names
    the parameter, like any other control character."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anytext", _AnyText())


class Metrics:
    """The API's Prometheus metrics, in a registry of their own (one per app, so tests and
    several apps in one process never collide). The server adds process metrics to
    ``registry`` if it wants them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "sluice_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "sluice_http_request_duration_seconds",
            "Time from request to the end of the response, by route template and method.",
            ["route", "method"],
            registry=self.registry,
        )
        self.produce_seconds = Histogram(
            "sluice_produce_duration_seconds",
            "Time Kafka took to acknowledge a request's events (acks=all), by outcome.",
            ["outcome"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.batch_events = Histogram(
            "sluice_batch_events",
            "Events per accepted POST /api/v1/events request.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
            registry=self.registry,
        )
        self.events_accepted = Counter(
            "sluice_events_accepted",
            "Events acknowledged by Kafka and answered 202.",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "sluice_rate_limited",
            "Requests refused with 429 because the tenant's budget was spent.",
            registry=self.registry,
        )
        self.limiter_errors = Counter(
            "sluice_rate_limiter_errors",
            "Requests let through unlimited because the rate limiter did not answer.",
            registry=self.registry,
        )
        self.stream_clients = Gauge(
            "sluice_stream_clients",
            "WebSocket clients connected to /api/v1/stream.",
            registry=self.registry,
        )


def create_app(
    settings: Settings,
    sink: EventSink,
    limiter: RateLimiter,
    keys: AsyncKeyStore,
    query: EventQuery,
    feed: LiveFeed,
    health: Health,
    metrics: Metrics | None = None,
    *,
    jwks_fetch: JwksFetch | None = None,
) -> Starlette:
    """The API over the given ports. ``jwks_fetch`` replaces the HTTP fetch of the OIDC
    issuer's keys (tests sign tokens with a local key pair); ``metrics`` defaults to a fresh
    registry. The committed OpenAPI document is loaded here, so a build that lost it fails at
    start-up instead of on the first request for it."""
    metrics = metrics if metrics is not None else Metrics()
    jwks = None if jwks_fetch is None else JwksCache(jwks_fetch)
    authenticator = Authenticator(
        keys, settings.oidc, jwks=jwks, key_cache_seconds=settings.api_key_cache_seconds
    )
    api = _Api(settings, authenticator, sink, limiter, query, feed, health, metrics)
    app = Starlette(
        routes=api.routes(),
        middleware=[Middleware(_Observe, metrics=metrics)],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )
    app.state.draining = False
    app.state.metrics = metrics
    app.state.authenticator = authenticator
    return app


def openapi_document() -> bytes:
    """The committed OpenAPI document, as shipped in the package."""
    return resources.files("sluice.api").joinpath("openapi.json").read_bytes()


class _Api:
    """The endpoints, bound to the ports they use."""

    def __init__(
        self,
        settings: Settings,
        authenticator: Authenticator,
        sink: EventSink,
        limiter: RateLimiter,
        query: EventQuery,
        feed: LiveFeed,
        health: Health,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self.sink = sink
        self.limiter = limiter
        self.query = query
        self.feed = feed
        self.health = health
        self.metrics = metrics
        self._limiter_warned_at = -math.inf
        self.openapi = openapi_document()
        json.loads(self.openapi)  # a corrupt document fails start-up, not a client's request

    def routes(self) -> list[BaseRoute]:
        # A subject may hold '/' (orders/42), sent percent-encoded or not: see _AnyText.
        subject = f"{API}/subjects/{{subject:anytext}}"
        return [
            Route(f"{API}/events", self.post_events, methods=["POST"]),
            Route(f"{API}/query", self.get_query, methods=["GET"]),
            Route(f"{API}/aggregates", self.get_aggregates, methods=["GET"]),
            Route(f"{subject}/events", self.subject_events, methods=["GET"]),
            Route(f"{subject}/state", self.subject_state, methods=["GET"]),
            WebSocketRoute(f"{API}/stream", self.stream),
            Route(f"{API}/stream", self.stream_without_upgrade, methods=["GET"]),
            Route(f"{API}/openapi.json", self.get_openapi, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.get_metrics, methods=["GET"]),
        ]

    # --- ingest -----------------------------------------------------------------------------

    async def post_events(self, request: Request) -> Response:
        principal = await self.authenticator.authenticate(request.headers.get("authorization"))
        await self._limit(principal.tenant)
        body = await self._read_body(request)
        events = parse_request(
            request.headers.get("content-type"), request.headers, body, self.settings.limits
        )
        await self._produce(principal.tenant, events)
        self.metrics.batch_events.observe(len(events))
        self.metrics.events_accepted.inc(len(events))
        return JSONResponse(
            {"status": "accepted", "ids": [event.id for event in events]}, status_code=202
        )

    async def _read_body(self, request: Request) -> bytes:
        """The body, never more than ``max_request_bytes`` of it: a declared Content-Length
        over the limit is refused before reading, a chunked body as soon as it passes it."""
        limit = self.settings.limits.max_request_bytes
        declared = request.headers.getlist("content-length")
        if declared:
            if len(set(declared)) > 1 or not _CONTENT_LENGTH.fullmatch(declared[0].strip()):
                raise BadRequest(
                    "invalid_content_length",
                    "the Content-Length header must be one whole number of bytes",
                )
            if int(declared[0]) > limit:
                raise _too_large(f"declares {int(declared[0])} bytes", limit)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(f"passed {limit} bytes while being read", limit)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _produce(self, tenant: str, events: list[Event]) -> None:
        timeout = self.settings.kafka.produce_timeout_seconds
        started = time.perf_counter()
        outcome = "error"
        try:
            async with asyncio.timeout(timeout):
                await self.sink.send(tenant, events)
            outcome = "acked"
        except TimeoutError:
            outcome = "timeout"
            raise Unavailable(
                "kafka_timeout",
                f"Kafka did not acknowledge the events within {timeout:g} s, so they are not "
                "accepted: resend the same events (same ids) after Retry-After",
                retry_after=max(1, math.ceil(timeout)),
            ) from None
        except Unavailable:
            outcome = "unavailable"
            raise
        finally:
            self.metrics.produce_seconds.labels(outcome).observe(time.perf_counter() - started)

    async def _limit(self, tenant: str) -> None:
        try:
            async with asyncio.timeout(LIMITER_TIMEOUT_SECONDS):
                decision = await self.limiter.check(tenant)
        except (TimeoutError, Unavailable):
            # Fails open: events keep flowing to Kafka while Redis is away. One warning per
            # LIMITER_WARNING_SECONDS, not one per request; the metric counts every one.
            self.metrics.limiter_errors.inc()
            now = time.monotonic()
            if now - self._limiter_warned_at >= LIMITER_WARNING_SECONDS:
                self._limiter_warned_at = now
                log.warning("rate limiter unavailable; tenants go unlimited", exc_info=True)
            return
        if not decision.allowed:
            self.metrics.rate_limited.inc()
            retry_after = max(1, math.ceil(decision.retry_after_s))
            raise RateLimited(
                "rate_limited",
                f"tenant {tenant!r} has used its {self.settings.rate_limit_requests} requests "
                f"per {self.settings.rate_limit_window_seconds} s; retry after {retry_after} s",
                retry_after=retry_after,
            )

    async def _tenant(self, request: Request) -> str:
        principal = await self.authenticator.authenticate(request.headers.get("authorization"))
        await self._limit(principal.tenant)
        return principal.tenant

    # --- read side --------------------------------------------------------------------------

    async def get_query(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        params = _Params(
            request.query_params, {"type", "source", "subject", "since", "until", "cursor", "limit"}
        )
        since = params.time("since")
        until = params.time("until")
        if since is not None and until is not None and until <= since:
            raise BadRequest(
                "invalid_parameter", "parameter 'until' must be later than parameter 'since'"
            )
        cursor = params.text("cursor", MAX_CURSOR_LENGTH)
        if cursor is not None and not _CURSOR.fullmatch(cursor):
            raise BadRequest(
                "invalid_parameter",
                "parameter 'cursor' must be a next_cursor value returned by an earlier page",
            )
        query = EventQueryParams(
            type=params.text("type"),
            source=params.text("source"),
            subject=params.text("subject"),
            since=since,
            until=until,
            cursor=cursor,
            limit=params.integer("limit", QUERY_LIMIT_DEFAULT, 1, QUERY_LIMIT_MAX),
        )
        return JSONResponse(await self.query.query(tenant, query))

    async def get_aggregates(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        params = _Params(request.query_params, {"minutes"})
        minutes = params.integer("minutes", AGGREGATE_MINUTES_DEFAULT, 1, AGGREGATE_MINUTES_MAX)
        return JSONResponse(await self.query.aggregates(tenant, minutes))

    async def subject_events(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        subject = _subject(request)
        until = _Params(request.query_params, {"until"}).time("until")
        events = await self.query.subject_events(tenant, subject, until)
        return JSONResponse({"subject": subject, "until": _iso(until), "events": events})

    async def subject_state(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        subject = _subject(request)
        as_of = _Params(request.query_params, {"as_of"}).time("as_of")
        state = await self.query.subject_state(tenant, subject, as_of)
        return JSONResponse({"subject": subject, "as_of": _iso(as_of), **state})

    # --- live stream ------------------------------------------------------------------------

    async def stream(self, websocket: WebSocket) -> None:
        """Forward the tenant's live events until either side goes away.

        The connection is accepted before the credential is checked so that a refusal reaches
        the client as a close code (1008) with a reason, which browsers expose, instead of a
        bare HTTP 403 they hide.
        """
        await websocket.accept()
        try:
            principal = await self._stream_principal(websocket)
            types = self._stream_types(websocket.query_params)
            await self._limit(principal.tenant)
        except ApiError as error:
            code = WS_TRY_AGAIN_LATER if error.status in (429, 503) else WS_POLICY_VIOLATION
            await websocket.close(code=code, reason=_close_reason(error))
            return
        self.metrics.stream_clients.inc()
        try:
            await self._forward(websocket, principal.tenant, types)
        finally:
            self.metrics.stream_clients.dec()

    async def _stream_principal(self, websocket: WebSocket) -> Principal:
        header = websocket.headers.get("authorization")
        token = websocket.query_params.get("access_token")
        if header is None and token is not None:
            # Browsers cannot set headers on a WebSocket; the token then rides in the URL.
            return await self.authenticator.authenticate_credential(token)
        return await self.authenticator.authenticate(header)

    @staticmethod
    def _stream_types(query_params: QueryParams) -> frozenset[str]:
        _Params(query_params, {"types", "access_token"}, repeatable={"types"})
        types = frozenset(
            name.strip()
            for value in query_params.getlist("types")
            for name in value.split(",")
            if name.strip()
        )
        for name in types:
            _check_text("types", name, MAX_FILTER_LENGTH)
        return types

    async def _forward(self, websocket: WebSocket, tenant: str, types: frozenset[str]) -> None:
        """Pump the feed into the socket while watching the socket for the client leaving;
        whichever ends first ends both, and the subscription is closed either way."""
        messages = self.feed.subscribe(tenant, types)
        client_left = False
        failure: BaseException | None = None

        try:
            async with anyio.create_task_group() as group:

                async def pump() -> None:
                    nonlocal failure
                    try:
                        async for message in messages:
                            await websocket.send_text(message.decode("utf-8", errors="replace"))
                    except Exception as error:
                        failure = error
                    group.cancel_scope.cancel()

                async def watch() -> None:
                    nonlocal client_left
                    while (await websocket.receive())["type"] != "websocket.disconnect":
                        pass
                    client_left = True
                    group.cancel_scope.cancel()

                group.start_soon(pump)
                group.start_soon(watch)
        finally:
            aclose = getattr(messages, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
        if client_left or isinstance(failure, WebSocketDisconnect):
            return
        if isinstance(failure, Unavailable):
            await websocket.close(code=WS_TRY_AGAIN_LATER, reason=_close_reason(failure))
        elif failure is not None:
            error_id = uuid.uuid4().hex[:12]
            log.error("live stream of tenant %s failed [%s]", tenant, error_id, exc_info=failure)
            await websocket.close(code=WS_INTERNAL_ERROR, reason=f"internal error {error_id}")
        else:
            await websocket.close(code=1000, reason="the live feed ended")

    async def stream_without_upgrade(self, request: Request) -> Response:
        return _error_response(
            426,
            "upgrade_required",
            f"{API}/stream is a WebSocket: connect with ws:// or wss:// (Upgrade: websocket)",
            headers={"Upgrade": "websocket"},
        )

    # --- operations -------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        """The process answers; no dependency is consulted (that is /readyz)."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if request.app.state.draining:
            return _error_response(
                503,
                "draining",
                "this instance is shutting down: it finishes the requests in flight and takes "
                "no new ones",
            )
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                checks = dict(await self.health.check())
        except Exception:
            log.warning("readiness check failed", exc_info=True)
            checks = {}
        checks = {name: checks.get(name) is True for name in DEPENDENCIES}
        down = [name for name in READINESS_GATE if not checks[name]]
        if down:
            return _error_response(
                503, "not_ready", f"unreachable: {', '.join(down)}", extra={"checks": checks}
            )
        return JSONResponse({"status": "ready", "checks": checks})

    async def get_metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def get_openapi(self, request: Request) -> Response:
        return Response(self.openapi, media_type="application/json")


class _Params:
    """A read endpoint's query string, checked: unknown or repeated parameters are refused
    (a misspelt filter would otherwise silently widen the result), each value is validated
    and every error names its parameter."""

    def __init__(
        self, query: QueryParams, allowed: set[str], *, repeatable: Iterable[str] = ()
    ) -> None:
        self.query = query
        unknown = sorted(set(query.keys()) - allowed)
        if unknown:
            raise BadRequest(
                "invalid_parameter",
                f"unknown parameter {unknown[0][:64]!r}; this endpoint takes "
                f"{', '.join(sorted(allowed))}",
            )
        for name in set(query.keys()) - set(repeatable):
            if len(query.getlist(name)) > 1:
                raise BadRequest("invalid_parameter", f"parameter {name!r} is given twice")

    def text(self, name: str, max_length: int = MAX_FILTER_LENGTH) -> str | None:
        value = self.query.get(name)
        return None if value is None else _check_text(name, value, max_length)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.query.get(name)
        if raw is None:
            return default
        if not re.fullmatch(r"[0-9]{1,9}", raw) or not low <= int(raw) <= high:
            raise BadRequest(
                "invalid_parameter",
                f"parameter {name!r} must be a whole number from {low} to {high}, got {raw[:32]!r}",
            )
        return int(raw)

    def time(self, name: str) -> datetime | None:
        raw = self.query.get(name)
        return None if raw is None else _parse_time(name, raw)


def _check_text(name: str, value: str, max_length: int) -> str:
    if not value:
        raise BadRequest("invalid_parameter", f"parameter {name!r} must not be empty")
    if len(value) > max_length:
        raise BadRequest(
            "invalid_parameter", f"parameter {name!r} is longer than {max_length} characters"
        )
    if _CONTROL.search(value):
        raise BadRequest("invalid_parameter", f"parameter {name!r} contains control characters")
    return value


def _parse_time(name: str, raw: str) -> datetime:
    """An RFC 3339 timestamp with offset. A space where the offset's '+' belongs is read as
    '+': it is what an unencoded '+' becomes in a query string."""
    match = _RFC3339.fullmatch(raw)
    problem = f"parameter {name!r} must be an RFC 3339 time such as 2024-05-01T12:00:00Z"
    if match is None:
        raise BadRequest("invalid_parameter", f"{problem}, got {raw[:64]!r}")
    text = raw[: match.start("offset")].upper()
    if match["fraction"]:
        text = text[: match.start("fraction")] + match["fraction"][:7]
    offset = match["offset"].upper()
    text += "+00:00" if offset == "Z" else offset.replace(" ", "+")
    try:
        return datetime.fromisoformat(text)
    except ValueError as error:
        raise BadRequest("invalid_parameter", f"{problem}: {error}") from None


def _subject(request: Request) -> str:
    return _check_text("subject", request.path_params["subject"], MAX_FILTER_LENGTH)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _too_large(what: str, limit: int) -> TooLarge:
    return TooLarge(
        "request_too_large",
        f"the request body {what}, over the limit of {limit}; send fewer events per request",
    )


def _close_reason(error: ApiError) -> str:
    """A WebSocket close reason: the error code and as much detail as fits in 123 bytes."""
    reason = f"{error.code}: {error.detail}"
    encoded = reason.encode("utf-8")[:123]
    return encoded.decode("utf-8", errors="ignore")


def _error_response(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, **(extra or {})}, status, headers)


async def _api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    headers: dict[str, str] = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = (
            'Bearer realm="sluice"'
            if error.code == "missing_credentials"
            else 'Bearer realm="sluice", error="invalid_token"'
        )
    if error.status >= 500:
        log.warning("%s %s answered %s", request.method, request.scope["path"][:200], error)
    return _error_response(error.status, error.code, error.detail, headers=headers)


_HTTP_CODES: Final = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, error: Exception) -> Response:
    """Starlette's own errors (no such path, wrong method) in Sluice's error shape."""
    assert isinstance(error, HTTPException)
    code = _HTTP_CODES.get(error.status_code, "http_error")
    detail = {
        404: f"there is nothing at {request.scope['path'][:200]!r}; see {API}/openapi.json",
        405: f"{request.method[:16]} is not allowed here",
    }.get(error.status_code, str(error.detail))
    return _error_response(error.status_code, code, detail, headers=dict(error.headers or {}))


class _Observe:
    """Outermost middleware: records every HTTP request's metrics by route template, and turns
    an exception nothing else handled into a logged 500 with an error id, no internals."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except ClientDisconnect:
            status = status or 499  # nginx's "client closed request": nobody to answer
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            log.exception("unhandled error [%s] on %s %s", error_id, scope["method"], _route(scope))
            if status == 0:
                status = 500
                response = _error_response(
                    500,
                    "internal_error",
                    f"Sluice failed on this request; the error is logged as {error_id}. "
                    "Retry later; if it persists, report the error id",
                )
                await response(scope, receive, send)
        finally:
            route = _route(scope)
            method = scope["method"] if scope["method"] in _HTTP_METHODS else "other"
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.request_seconds.labels(route, method).observe(
                time.perf_counter() - started
            )


def _route(scope: Scope) -> str:
    """The matched route's template (bounded label values), or ``unmatched``."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "unmatched"
