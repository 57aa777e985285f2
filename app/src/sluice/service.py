"""Wiring: the API (``sluice serve``) and the processor (``sluice process``) over the real
adapters, from one :class:`sluice.config.Settings`.

The API's dependencies are opened inside the server's event loop (Starlette's lifespan) and
closed there; a dependency that is down at start leaves the instance running and not ready
(``/readyz`` 503), so HAProxy keeps it out of rotation until it is. The processor is a plain
synchronous process: its PostgreSQL writes go through the same
:class:`sluice.storage.store.EventStore` as the API's reads, driven by a private event loop.

Metrics. ``sluice serve`` binds to loopback behind HAProxy, and ``sluice process`` serves no
HTTP at all, so neither can be scraped from the monitoring host as they are. ``--metrics-port
PORT`` starts :func:`serve_metrics`: prometheus_client's server in a daemon thread, on
``SLUICE_METRICS_HOST`` (every interface by default), serving the process's registry at
``/metrics`` (for ``serve``, the same registry as the API's ``GET /metrics``; for ``process``,
:class:`sluice.processor.metrics.ProcessorMetrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import asdict
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from starlette.applications import Starlette

from sluice.adapters.kafka import KafkaConsumer, KafkaProducer, KafkaSink
from sluice.adapters.redis import RedisApi, RedisProcessor
from sluice.api.app import Metrics, create_app
from sluice.api.server import serve
from sluice.config import Settings
from sluice.derived.enrich import Enricher
from sluice.processor.engine import Processor, ProcessorConfig, stop_on_signals
from sluice.processor.metrics import ProcessorMetrics
from sluice.storage import store
from sluice.storage.queries import StoreQuery
from sluice.storage.rows import EventRow, RowKey

log = logging.getLogger("sluice.service")

#: The consumer group of every processor.
PROCESSOR_GROUP = "sluice-processor"


def serve_metrics(registry: CollectorRegistry, port: int, host: str) -> WSGIServer:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread, until the
    process exits or the returned server's ``shutdown()``. Raises RuntimeError naming the
    address when it cannot be bound, so the command fails at start."""
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        reason = error.strerror or str(error)
        raise RuntimeError(
            f"cannot serve metrics on {host}:{port} ({reason}): choose a free --metrics-port "
            "(each instance needs its own) or another SLUICE_METRICS_HOST"
        ) from None
    return server


class ServiceHealth:
    """:class:`sluice.api.ports.Health`: each dependency answered just now, or not."""

    def __init__(self, sink: KafkaSink, redis: RedisApi, events: store.EventStore) -> None:
        self.sink, self.redis, self.events = sink, redis, events

    async def check(self) -> dict[str, bool]:
        async def postgresql() -> bool:
            try:
                await asyncio.wait_for(self.events.ping(), 2.0)
            except Exception:  # any failure means not reachable
                return False
            return True

        kafka, redis, pg = await asyncio.gather(self.sink.ping(), self.redis.ping(), postgresql())
        return {"kafka": kafka, "redis": redis, "postgresql": pg}


class _LazyPool:
    """The reader pool, opened in the lifespan (psycopg's async pool needs a running loop)."""

    def __init__(self) -> None:
        self.pool: Any = None

    def connection(self, *args: Any, **kwargs: Any) -> Any:
        return self.pool.connection(*args, **kwargs)


def build_api(settings: Settings, metrics: Metrics | None = None) -> Starlette:
    """The API application with its adapters; they open and close with the server. ``metrics``
    (default: a fresh registry) is what ``GET /metrics`` serves."""
    reader_dsn = settings.postgres.reader_dsn  # a missing reader password fails here, named
    sink = KafkaSink(settings.kafka)
    redis = RedisApi(
        settings.redis, settings.rate_limit_requests, settings.rate_limit_window_seconds
    )
    pool = _LazyPool()
    events = store.EventStore(pool)  # type: ignore[arg-type]
    app = create_app(
        settings,
        sink,
        redis,
        store.PgKeyStore(pool),  # type: ignore[arg-type]
        StoreQuery(events, redis),
        redis,
        ServiceHealth(sink, redis, events),
        metrics if metrics is not None else Metrics(),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        pool.pool = await store.open_pool(reader_dsn, max_size=8)
        sink.start()
        log.info("sluice api ready to serve on %s:%s", settings.bind_host, settings.bind_port)
        try:
            yield
        finally:
            await sink.close()
            await redis.close()
            await pool.pool.close()

    app.router.lifespan_context = lifespan
    return app


def run_api(settings: Settings, port: int | None = None, metrics_port: int | None = None) -> int:
    """``sluice serve``: one API instance until SIGTERM/SIGINT; 0 after a drained stop. With
    ``metrics_port``, the API's metrics are also served there, bound before anything else so a
    port in use fails the start."""
    metrics = Metrics()
    if metrics_port is not None:
        serve_metrics(metrics.registry, metrics_port, settings.metrics_host)
    return serve(build_api(settings, metrics), settings, port)


class SyncEventWriter:
    """:class:`sluice.processor.types.EventWriter` over
    :class:`sluice.storage.store.EventStore`, for the synchronous processor: one private event
    loop, one writer pool."""

    def __init__(self, conninfo: str) -> None:
        self._runner = asyncio.Runner()
        self._pool = self._runner.run(store.open_pool(conninfo, max_size=2, timeout=30.0))
        self.events = store.EventStore(self._pool)

    def insert_event_keys(self, rows: Sequence[EventRow]) -> Collection[RowKey]:
        return self._runner.run(self.events.insert_event_keys(rows))

    def customers(self, tenant: str, ids: Collection[str]) -> Mapping[str, Mapping[str, Any]]:
        found = self._runner.run(self.events.customers(tenant, ids))
        return {
            customer_id: {
                key: value.isoformat() if hasattr(value, "isoformat") else value
                for key, value in asdict(customer).items()
            }
            for customer_id, customer in found.items()
        }

    def close(self) -> None:
        self._runner.run(self._pool.close())
        self._runner.close()


def run_processor(
    settings: Settings, config: ProcessorConfig | None = None, metrics_port: int | None = None
) -> int:
    """``sluice process``: consume ``events.raw`` until SIGTERM; 0 after a clean stop. With
    ``metrics_port``, its metrics are served there (bound before any client connects, so a
    port in use fails the start) and the consumer reports its lag."""
    config = config or ProcessorConfig()
    metrics = ProcessorMetrics()
    on_lag = None
    if metrics_port is not None:
        serve_metrics(metrics.registry, metrics_port, settings.metrics_host)
        on_lag = metrics.set_consumer_lag
    writer = SyncEventWriter(settings.postgres.writer_dsn)
    redis = RedisProcessor(settings.redis)
    producer = KafkaProducer(settings.kafka)
    consumer = KafkaConsumer(settings.kafka, PROCESSOR_GROUP, [config.topics.raw], on_lag=on_lag)
    processor = Processor(
        consumer,
        writer,
        redis,
        redis,
        redis,
        producer,
        Enricher(writer.customers),
        config=config,
        metrics=metrics,
    )
    stop_on_signals(processor, (signal.SIGTERM, signal.SIGINT))
    try:
        return processor.run()
    finally:
        producer.close()
        redis.close()
        writer.close()
