"""Measure the choices of issue 6 on this host: the Kafka client and the HTTP server of the API.

1. Clients: kafka-python, confluent-kafka and aiokafka produce N 500-byte CloudEvents (keys over
   20 tenants) from C concurrent "requests" that each await their own acknowledgement, as the
   API does (acks=all, idempotent producer, lz4, linger so concurrent requests share batches).
2. Servers: granian and uvicorn serve one Starlette app (the accept path: parse and validate
   with sluice.cloudevents, produce with the winning client, 202 only after the broker's ack),
   one worker process each, driven by a raw-asyncio load generator at fixed concurrency.

Everything runs against a throwaway single-node Kafka (tests/load/local_kafka.py, PLAINTEXT on
127.0.0.1:19092) that the script starts and removes; the lab is not touched. Each measured run
first waits for the 1-minute load average to fall below a threshold; candidates are interleaved
(A B C A B C). Writes docs/decisions/kafka-client.md and docs/decisions/http-server.md.

    .venv/bin/python tests/load/bench_app_choices.py            # full run, ~1 hour
    .venv/bin/python tests/load/bench_app_choices.py --quick    # smoke run, reports to /tmp
    .venv/bin/python tests/load/bench_app_choices.py --report-only --results RUN.json...

Raw results go to /tmp/sluice-bench-app-choices.json as runs finish; --report-only renders the
pages again from such files (several: their server runs are reported together, as series).

Needs the `candidates` extra of app/pyproject.toml plus lz4 and cramjam (lz4 codecs of
kafka-python and aiokafka), uvloop and httptools (the servers' fast paths).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from sluice.cloudevents import Limits, parse_request
from sluice.errors import ApiError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from local_kafka import LocalKafka  # noqa: E402  the helper beside this file, not a package

CLIENTS = ("kafka-python", "confluent-kafka", "aiokafka")
SERVERS: dict[str, str] = {
    "granian": "granian 1 worker, ASGI, Rust HTTP/1, --loop uvloop",
    "uvicorn": "uvicorn 1 worker, --http httptools --loop uvloop (uvicorn[standard])",
    "granian-asyncio": "granian 1 worker, ASGI, Rust HTTP/1, --loop asyncio",
    "granian-rust-tasks": "granian 1 worker, ASGI, Rust HTTP/1, --loop uvloop --task-impl rust",
    "uvicorn-h11": "uvicorn 1 worker, --http h11 --loop asyncio (no extras installed)",
}
TENANTS = [f"tenant-{i:02d}".encode() for i in range(20)]
EVENT_BYTES = 500
SERVER_PORT = 18080


# --------------------------------------------------------------------------------------------
# The produce path: one interface over the three clients


@dataclass(frozen=True)
class ProducerSettings:
    """The settings the API needs, given to every client in its own terms."""

    bootstrap: str
    topic: str
    linger_ms: int
    batch_bytes: int = 64 * 1024
    timeout_ms: int = 30_000
    request_timeout_ms: int = 10_000


class AsyncProducer(Protocol):
    async def start(self) -> None: ...

    async def send(self, key: bytes, value: bytes) -> None:
        """Return once the broker acknowledged the record (acks=all); raise if it did not."""

    async def stop(self) -> None: ...


class AiokafkaProducer:
    """aiokafka: asyncio-native, ``send_and_wait`` awaits the ack on the event loop itself."""

    def __init__(self, settings: ProducerSettings) -> None:
        self.settings = settings

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        s = self.settings
        self.producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap,
            client_id="sluice-bench-aiokafka",
            acks="all",
            enable_idempotence=True,
            compression_type="lz4",
            linger_ms=s.linger_ms,
            max_batch_size=s.batch_bytes,
            request_timeout_ms=s.request_timeout_ms,  # aiokafka has no delivery timeout
        )
        await self.producer.start()

    async def send(self, key: bytes, value: bytes) -> None:
        await self.producer.send_and_wait(self.settings.topic, value, key=key)

    async def stop(self) -> None:
        await self.producer.stop()


class ConfluentProducer:
    """confluent-kafka (librdkafka): ``produce()`` on the event loop (it only enqueues), a
    background thread calling ``poll()`` runs the delivery callbacks, and each poll's finished
    deliveries are handed to the loop in one ``call_soon_threadsafe`` that resolves the requests'
    futures. The loop never blocks on librdkafka."""

    def __init__(self, settings: ProducerSettings) -> None:
        self.settings = settings
        self._done: list[tuple[asyncio.Future[None], Any]] = []
        self._stopping = threading.Event()

    async def start(self) -> None:
        from confluent_kafka import Producer

        s = self.settings
        self.loop = asyncio.get_running_loop()
        self.producer = Producer(
            {
                "bootstrap.servers": s.bootstrap,
                "client.id": "sluice-bench-confluent",
                "acks": "all",
                "enable.idempotence": True,
                "compression.type": "lz4",
                "linger.ms": s.linger_ms,
                "batch.size": s.batch_bytes,
                "message.timeout.ms": s.timeout_ms,
                "request.timeout.ms": s.request_timeout_ms,
                # the Java clients' (and kafka-python's, aiokafka's) partitioner: a tenant's
                # records land on the same partition whichever client wrote them
                "partitioner": "murmur2_random",
                # TCP_NODELAY, as the other clients (and asyncio) set it; librdkafka leaves
                # Nagle on by default, which holds small produce requests back
                "socket.nagle.disable": True,
            }
        )
        self.poller = threading.Thread(target=self._poll, name="rdkafka-poll", daemon=True)
        self.poller.start()
        # fail here, not on the first request, when the broker cannot be reached
        await self.loop.run_in_executor(None, self.producer.list_topics, s.topic, 10)

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self.producer.poll(0.05)
            if self._done:
                done, self._done = self._done, []
                self.loop.call_soon_threadsafe(_resolve_all, done)

    async def send(self, key: bytes, value: bytes) -> None:
        future = self.loop.create_future()
        # the callback runs inside poll(), on the poll thread, which also swaps the list
        self.producer.produce(
            self.settings.topic,
            value,
            key,
            on_delivery=lambda error, _message: self._done.append((future, error)),
        )
        await future

    async def stop(self) -> None:
        self._stopping.set()
        await self.loop.run_in_executor(None, self.poller.join)
        await self.loop.run_in_executor(None, self.producer.flush, 30)
        done, self._done = self._done, []
        _resolve_all(done)


def _resolve_all(done: list[tuple[asyncio.Future[None], Any]]) -> None:
    for future, error in done:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(RuntimeError(f"delivery failed: {error}"))


class KafkaPythonProducer:
    """kafka-python: ``send()`` appends to its accumulator on the event loop (it can block for
    metadata or a full buffer, up to max_block_ms); its own I/O thread completes the record
    future, whose callbacks hand the ack to the loop with ``call_soon_threadsafe``."""

    def __init__(self, settings: ProducerSettings) -> None:
        self.settings = settings

    async def start(self) -> None:
        from kafka import KafkaProducer

        s = self.settings
        self.loop = asyncio.get_running_loop()
        self.producer = await self.loop.run_in_executor(
            None,
            lambda: KafkaProducer(
                bootstrap_servers=s.bootstrap,
                client_id="sluice-bench-kafka-python",
                acks="all",
                enable_idempotence=True,
                compression_type="lz4",
                linger_ms=s.linger_ms,
                batch_size=s.batch_bytes,
                delivery_timeout_ms=s.timeout_ms,
                request_timeout_ms=s.request_timeout_ms,
            ),
        )
        await self.loop.run_in_executor(None, self.producer.partitions_for, s.topic)

    async def send(self, key: bytes, value: bytes) -> None:
        future = self.loop.create_future()
        loop = self.loop
        record = self.producer.send(self.settings.topic, value=value, key=key)
        record.add_callback(lambda _metadata: loop.call_soon_threadsafe(_resolve, future, None))
        record.add_errback(lambda error: loop.call_soon_threadsafe(_resolve, future, error))
        await future

    async def stop(self) -> None:
        await self.loop.run_in_executor(None, self.producer.close, 30)


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


PRODUCERS: dict[str, Callable[[ProducerSettings], AsyncProducer]] = {
    "kafka-python": KafkaPythonProducer,
    "confluent-kafka": ConfluentProducer,
    "aiokafka": AiokafkaProducer,
}


def client_versions() -> dict[str, str]:
    import confluent_kafka

    versions = {name: importlib.metadata.version(name) for name in CLIENTS}
    versions["librdkafka"] = confluent_kafka.libversion()[0]
    return versions


# --------------------------------------------------------------------------------------------
# Events


def event_template() -> str:
    """A structured-mode CloudEvent of exactly EVENT_BYTES bytes in Sluice's canonical JSON (so
    parse + to_json_bytes gives the same bytes), with ``{id}`` for a 16-hex-digit id."""

    def render(pad: str, event_id: str) -> str:
        document = {
            "data": {"amount": 1250, "currency": "EUR", "note": pad, "order": "o-48213"},
            "datacontenttype": "application/json",
            "id": event_id,
            "source": "/bench/shop/orders",
            "specversion": "1.0",
            "subject": "order/o-48213",
            "time": "2026-01-01T00:00:00Z",
            "type": "com.example.order.created",
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":"))

    pad = "x" * (EVENT_BYTES - len(render("", "0" * 16)))
    template = render(pad, "{id}")
    sample = template.replace("{id}", "0" * 16).encode()
    (event,) = parse_request("application/cloudevents+json", {}, sample, Limits())
    if len(sample) != EVENT_BYTES or event.to_json_bytes() != sample:
        raise AssertionError("the bench event is not 500 bytes of canonical CloudEvents JSON")
    return template


def make_events(count: int) -> list[bytes]:
    head, tail = event_template().split("{id}")
    return [f"{head}{i:016x}{tail}".encode() for i in range(count)]


# --------------------------------------------------------------------------------------------
# Measurement helpers


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and its live descendants (all threads), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        if current in stats:
            total += (int(stats[current][11]) + int(stats[current][12])) / ticks
        todo.extend(children.get(current, []))
    return total


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_for_quiet(threshold: float, max_wait: float) -> tuple[float, float]:
    """Poll until the 1-minute load average is below ``threshold`` or ``max_wait`` seconds
    passed; return (load average at the start of the run, seconds waited)."""
    started = time.monotonic()
    while load_average() >= threshold and time.monotonic() - started < max_wait:
        time.sleep(5)
    waited = time.monotonic() - started
    print(f"  load average {load_average():.2f} after waiting {waited:.0f} s", flush=True)
    return load_average(), waited


# --------------------------------------------------------------------------------------------
# Client bench (one run per child process, so no client's threads or buffers outlive its run)


async def client_run(
    client: str,
    bootstrap: str,
    topic: str,
    events: int,
    concurrency: int,
    warmup: int,
    linger_ms: int,
) -> dict[str, Any]:
    payloads = make_events(events + warmup)
    producer = PRODUCERS[client](ProducerSettings(bootstrap, topic, linger_ms))
    await producer.start()
    latencies: list[float] = []
    errors = 0

    async def requests(indexes: range) -> None:
        nonlocal errors
        queue = iter(indexes)
        record = indexes.start >= warmup

        async def one_request_at_a_time() -> None:
            nonlocal errors
            for i in queue:
                started = time.perf_counter()
                try:
                    await producer.send(TENANTS[i % len(TENANTS)], payloads[i])
                except Exception:
                    errors += 1
                    continue
                if record:
                    latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(one_request_at_a_time() for _ in range(concurrency)))

    await requests(range(warmup))
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    await requests(range(warmup, warmup + events))
    elapsed = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    await producer.stop()
    latencies.sort()
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {
        "acked": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "events_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
        "client_cpu_s": cpu,
    }


@dataclass
class ClientResult:
    client: str
    concurrency: int
    repeat: int
    load_before: float
    waited_s: float
    acked: int
    errors: int
    seconds: float
    events_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    client_cpu_s: float
    broker_cpu_s: float
    records_in_topic: int
    batches: int
    codecs: list[str]
    idempotent: bool


def client_child(kafka: LocalKafka, **spec: Any) -> dict[str, Any]:
    """One client run in a fresh process; its measurements."""
    child = subprocess.run(
        [sys.executable, __file__, "_client", json.dumps({"bootstrap": kafka.bootstrap, **spec})],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if child.returncode != 0:
        raise RuntimeError(f"the {spec['client']} run failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def warm_broker(args: argparse.Namespace, kafka: LocalKafka) -> None:
    """Produce with every client before the first measured run, so that no candidate meets a
    broker whose JIT has not compiled the produce path yet (the first runs were up to twice as
    slow without this)."""
    kafka.create_topic("warmup", args.partitions)
    for client in CLIENTS:
        print(f"broker warm-up with {client}", flush=True)
        client_child(
            kafka,
            client=client,
            topic="warmup",
            events=args.broker_warmup_events // len(CLIENTS),
            concurrency=max(args.client_concurrency),
            warmup=0,
            linger_ms=args.linger_ms,
        )


def bench_clients(args: argparse.Namespace, kafka: LocalKafka) -> list[ClientResult]:
    results: list[ClientResult] = []
    for repeat in range(1, args.repeats + 1):
        for concurrency in args.client_concurrency:
            for client in args.clients:
                topic = f"bench-{client}-c{concurrency}-r{repeat}"
                kafka.create_topic(topic, args.partitions)
                print(f"client {client} c={concurrency} run {repeat}", flush=True)
                load, waited = wait_for_quiet(args.load_threshold, args.max_wait)
                broker_before = cpu_seconds(kafka.pid)
                measured = client_child(
                    kafka,
                    client=client,
                    topic=topic,
                    events=args.events,
                    concurrency=concurrency,
                    warmup=args.warmup_events,
                    linger_ms=args.linger_ms,
                )
                broker_cpu = cpu_seconds(kafka.pid) - broker_before
                batches = kafka.dump_batches(topic)
                result = ClientResult(
                    client=client,
                    concurrency=concurrency,
                    repeat=repeat,
                    load_before=load,
                    waited_s=waited,
                    broker_cpu_s=broker_cpu,
                    records_in_topic=kafka.end_offsets(topic),
                    batches=len(batches),
                    codecs=sorted({b["compresscodec"] for b in batches}),
                    idempotent=bool(batches) and all(int(b["producerId"]) >= 0 for b in batches),
                    **measured,
                )
                print(f"  {asdict(result)}", flush=True)
                results.append(result)
                save(args, "clients", results)
    return results


# --------------------------------------------------------------------------------------------
# Server bench: the app both servers run, and the load generator


def bench_app() -> Starlette:
    """The accept path of POST /api/v1/events, minus auth and rate limiting: the tenant comes
    from an X-Tenant header that stands in for the credential."""
    limits = Limits()
    timeout = float(os.environ.get("SLUICE_BENCH_PRODUCE_TIMEOUT", "10"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings = ProducerSettings(
            os.environ["SLUICE_BENCH_BOOTSTRAP"],
            os.environ["SLUICE_BENCH_TOPIC"],
            int(os.environ["SLUICE_BENCH_LINGER_MS"]),
        )
        producer = PRODUCERS[os.environ["SLUICE_BENCH_CLIENT"]](settings)
        await producer.start()
        app.state.producer = producer
        yield
        await producer.stop()

    async def accept(request: Request) -> Response:
        body = await request.body()
        try:
            events = parse_request(
                request.headers.get("content-type"), request.headers, body, limits
            )
        except ApiError as error:
            return JSONResponse(error.to_body(), status_code=error.status)
        tenant = request.headers.get("x-tenant", "anonymous").encode()
        producer: AsyncProducer = request.app.state.producer
        try:
            async with asyncio.timeout(timeout):
                if len(events) == 1:
                    await producer.send(tenant, events[0].to_json_bytes())
                else:
                    await asyncio.gather(
                        *(producer.send(tenant, event.to_json_bytes()) for event in events)
                    )
        except Exception as error:
            return JSONResponse(
                {"error": "kafka_unavailable", "detail": f"Kafka did not take the event: {error}"},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        return JSONResponse({"status": "accepted", "ids": [e.id for e in events]}, status_code=202)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/api/v1/events", accept, methods=["POST"]),
            Route("/healthz", healthz),
        ],
        lifespan=lifespan,
    )


def __getattr__(name: str) -> Any:
    """``bench_app_choices:app`` for the servers, built on first use only (the harness itself and
    its client runs never need it)."""
    if name == "app":
        globals()["app"] = bench_app()
        return globals()["app"]
    raise AttributeError(name)


async def generate_load(
    port: int, concurrency: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    """Keep-alive HTTP/1.1 connections, one per concurrent client, each sending the next request
    when the last one is answered. Raw asyncio streams: the generator shares the two cores with
    the server and the broker, so it must cost as little as possible."""
    head, tail = event_template().split("{id}")
    measure_from = time.perf_counter() + warmup_s
    stop_at = measure_from + duration_s
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0

    async def client(number: int) -> None:
        nonlocal errors
        tenant = TENANTS[number % len(TENANTS)].decode()
        sequence = 0
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (started := time.perf_counter()) < stop_at:
            body = f"{head}{number:06x}{sequence:010x}{tail}".encode()
            sequence += 1
            request = (
                f"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: application/cloudevents+json\r\nX-Tenant: {tenant}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            try:
                writer.write(request)
                response_head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in response_head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                status = response_head[9:12].decode()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            finished = time.perf_counter()
            if started >= measure_from:
                statuses[status] = statuses.get(status, 0) + 1
                if status == "202":
                    latencies.append(finished - started)
                else:
                    errors += 1
        writer.close()

    await asyncio.gather(*(client(n) for n in range(concurrency)))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    latencies.sort()
    return {
        "accepted": len(latencies),
        "errors": errors,
        "statuses": statuses,
        "requests_per_s": len(latencies) / duration_s,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
        "generator_cpu_s": usage.ru_utime + usage.ru_stime,
    }


def server_command(server: str, port: int) -> list[str]:
    bin_dir = Path(sys.executable).parent
    if server.startswith("granian"):
        loop = "asyncio" if server == "granian-asyncio" else "uvloop"
        tasks = "rust" if server == "granian-rust-tasks" else "asyncio"
        return [
            str(bin_dir / "granian"),
            *("--interface", "asgi", "--host", "127.0.0.1", "--port", str(port)),
            *("--workers", "1", "--loop", loop, "--task-impl", tasks),
            *("--no-access-log", "--log-level", "warning"),
            *("--working-dir", str(HERE), "bench_app_choices:app"),
        ]
    http, loop = ("h11", "asyncio") if server == "uvicorn-h11" else ("httptools", "uvloop")
    return [
        str(bin_dir / "uvicorn"),
        *("--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(port)),
        *("--workers", "1", "--http", http, "--loop", loop),
        *("--no-access-log", "--log-level", "warning", "bench_app_choices:app"),
    ]


def wait_for_http(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before answering")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                return
        time.sleep(0.5)
    raise RuntimeError(f"the server did not answer /healthz on port {port} in {timeout} s")


@dataclass
class ServerResult:
    server: str
    concurrency: int
    repeat: int
    load_before: float
    waited_s: float
    accepted: int
    errors: int
    statuses: dict[str, int]
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    generator_cpu_s: float
    server_cpu_s: float
    broker_cpu_s: float
    records_in_topic: int = 0
    series: int = 1

    @property
    def per_cpu_second(self) -> float:
        """Events accepted (the run's whole topic: warm-up, window and the last in flight) per
        second of the server's CPU: what one instance does per core, whatever else ran."""
        return self.records_in_topic / self.server_cpu_s if self.server_cpu_s else float("nan")


def bench_servers(args: argparse.Namespace, kafka: LocalKafka, client: str) -> list[ServerResult]:
    results: list[ServerResult] = []
    for repeat in range(1, args.repeats + 1):
        for concurrency in args.server_concurrency:
            for server in args.servers:
                topic = f"serve-{server}-c{concurrency}-r{repeat}"
                kafka.create_topic(topic, args.partitions)
                print(f"server {server} c={concurrency} run {repeat}", flush=True)
                environment = {
                    **os.environ,
                    "SLUICE_BENCH_BOOTSTRAP": kafka.bootstrap,
                    "SLUICE_BENCH_TOPIC": topic,
                    "SLUICE_BENCH_CLIENT": client,
                    "SLUICE_BENCH_LINGER_MS": str(args.linger_ms),
                }
                log = (kafka.root / f"{topic}.log").open("wb")
                process = subprocess.Popen(
                    server_command(server, SERVER_PORT),
                    env=environment,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                try:
                    wait_for_http(SERVER_PORT, process)
                    load, waited = wait_for_quiet(args.load_threshold, args.max_wait)
                    server_before = cpu_seconds(process.pid)
                    broker_before = cpu_seconds(kafka.pid)
                    child = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "_load",
                            json.dumps(
                                {
                                    "port": SERVER_PORT,
                                    "concurrency": concurrency,
                                    "warmup_s": args.warmup_s,
                                    "duration_s": args.duration_s,
                                }
                            ),
                        ],
                        capture_output=True,
                        text=True,
                        timeout=args.warmup_s + args.duration_s + 300,
                    )
                    server_cpu = cpu_seconds(process.pid) - server_before
                    broker_cpu = cpu_seconds(kafka.pid) - broker_before
                finally:
                    os.killpg(process.pid, signal.SIGTERM)
                    try:
                        process.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        os.killpg(process.pid, signal.SIGKILL)
                        process.wait()
                    log.close()
                if child.returncode != 0:
                    raise RuntimeError(f"the load generator failed:\n{child.stderr[-3000:]}")
                measured = json.loads(child.stdout.strip().splitlines()[-1])
                result = ServerResult(
                    server=server,
                    concurrency=concurrency,
                    repeat=repeat,
                    load_before=load,
                    waited_s=waited,
                    server_cpu_s=server_cpu,
                    broker_cpu_s=broker_cpu,
                    records_in_topic=kafka.end_offsets(topic),
                    **measured,
                )
                print(f"  {asdict(result)}", flush=True)
                results.append(result)
                save(args, "servers", results)
    return results


# --------------------------------------------------------------------------------------------
# Reports


#: The options a report describes; kept with the raw results so --report-only renders the same.
REPORTED_OPTIONS = (
    *("quick", "events", "warmup_events", "broker_warmup_events", "client_concurrency"),
    *("clients", "servers", "server_concurrency", "duration_s", "warmup_s", "repeats"),
    *("partitions", "linger_ms", "load_threshold", "max_wait", "kafka_version", "argv"),
    *("measured", "server_client"),
)


def save(args: argparse.Namespace, part: str, results: list[Any]) -> None:
    """Raw results as they come (a crash keeps the runs done so far), with the options."""
    path = args.results
    data = json.loads(path.read_text()) if path.exists() else {}
    data["options"] = {name: getattr(args, name) for name in REPORTED_OPTIONS}
    data[part] = [asdict(r) for r in results]
    path.write_text(json.dumps(data, indent=1))


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def counted(rows: list[Any], key: str, name: str, concurrency: int, threshold: float) -> list[Any]:
    """The runs the medians (and the choice) use: a candidate's runs at one concurrency that
    started below the load threshold, or all of them if none did."""
    mine = [r for r in rows if getattr(r, key) == name and r.concurrency == concurrency]
    return [r for r in mine if r.load_before < threshold] or mine


def of(
    rows: list[Any], key: str, name: str, concurrency: int, metric: str, threshold: float
) -> float:
    """The median of one metric over the counted runs of a candidate at one concurrency."""
    return median([getattr(r, metric) for r in counted(rows, key, name, concurrency, threshold)])


def fallback(rows: list[Any], key: str, name: str, concurrency: int, threshold: float) -> str:
    """A mark for a candidate none of whose runs at this concurrency started below threshold."""
    mine = [r for r in rows if getattr(r, key) == name and r.concurrency == concurrency]
    return "" if any(r.load_before < threshold for r in mine) else " *"


def pick(
    rows: list[Any],
    key: str,
    candidates: list[str],
    metric: str,
    concurrency: int,
    threshold: float,
) -> list[tuple[str, float, float]]:
    """(candidate, median throughput, median p99) at one concurrency over the counted runs, best
    first: highest median throughput, unless the next is within 10 %, then the lower p99."""
    table = []
    for name in candidates:
        mine = counted(rows, key, name, concurrency, threshold)
        table.append(
            (name, median([getattr(r, metric) for r in mine]), median([r.p99_ms for r in mine]))
        )
    table.sort(key=lambda row: -row[1])
    close = [row for row in table if row[1] >= 0.9 * table[0][1]]
    close.sort(key=lambda row: row[2])
    return close + [row for row in table if row not in close]


def spread(rows: list[ServerResult], metric: str) -> float:
    """The largest highest/lowest ratio of a metric within one server and concurrency."""
    groups: dict[tuple[str, int], list[float]] = {}
    for r in rows:
        groups.setdefault((r.server, r.concurrency), []).append(getattr(r, metric))
    return max((max(v) / min(v) for v in groups.values() if min(v) > 0), default=float("nan"))


def compare(ranking: list[tuple[str, float, float]]) -> str:
    """'a 5,127/s vs b 4,821/s (+6 %, a tie by the 10 % margin)' for a throughput ranking."""
    ordered = sorted(ranking, key=lambda row: -row[1])
    best, rest = ordered[0], ordered[1:]
    parts = []
    for name, rate, _ in rest:
        lead = (best[1] / rate - 1) * 100
        tie = ", a tie by the 10 % margin" if lead < 10 else ""
        parts.append(f"{best[0]} {best[1]:,.0f}/s vs {name} {rate:,.0f}/s (+{lead:.0f} %{tie})")
    return ", ".join(parts)


def round_scores(rows: list[ServerResult], servers: list[str]) -> dict[str, float]:
    """Per server, the median over its runs of events per server CPU second divided by the mean
    of that figure over the servers of the same round (series, run, concurrency)."""
    rounds: dict[tuple[int, int, int], list[ServerResult]] = {}
    for r in rows:
        rounds.setdefault((r.series, r.repeat, r.concurrency), []).append(r)
    relative: dict[str, list[float]] = {name: [] for name in servers}
    for members in rounds.values():
        mean = statistics.fmean(m.per_cpu_second for m in members)
        for m in members:
            if m.server in relative:
                relative[m.server].append(m.per_cpu_second / mean)
    return {name: median(values) for name, values in relative.items() if values}


def paired_ratios(rows: list[ServerResult], servers: list[str]) -> str:
    """Per interleaved pair of the first two servers: the ratio of their events per CPU s."""
    if len(servers) < 2:
        return "there is nothing to pair"
    first, second = servers[0], servers[1]
    by_pair: dict[tuple[int, int, int], dict[str, ServerResult]] = {}
    for r in rows:
        by_pair.setdefault((r.concurrency, r.series, r.repeat), {})[r.server] = r
    ratios = [
        pair[second].per_cpu_second / pair[first].per_cpu_second
        for _, pair in sorted(by_pair.items())
        if first in pair and second in pair
    ]
    ahead = sum(ratio > 1 for ratio in ratios)
    listed = ", ".join(f"{ratio:.2f}" for ratio in ratios)
    return (
        f"Pair by pair, {second} accepted more events per CPU second than {first} in {ahead} of "
        f"{len(ratios)} rounds (ratios {second}/{first} by concurrency, series, run: {listed})"
    )


def header(args: argparse.Namespace, measured: str | None = None) -> str:
    return (
        f"Measured {measured or args.measured} on this build host: {os.cpu_count()} cores "
        "(`os.cpu_count()`), "
        f"{_memory_gib()} GiB RAM, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}; Apache Kafka {args.kafka_version} (single KRaft node, "
        f"combined broker+controller, -Xmx1g, PLAINTEXT on 127.0.0.1:19092, {args.partitions} "
        "partitions, replication factor 1), started and removed by the harness. Broker, clients, "
        "servers and the load generator all share the same cores, and other work on the host "
        "was running too: the load average before each run is in the tables."
    )


def _memory_gib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024)
    return 0


def command(args: argparse.Namespace) -> str:
    """The command line that produced this report, as run from the repository root."""
    return "`" + " ".join([".venv/bin/python tests/load/bench_app_choices.py", *args.argv]) + "`"


def client_report(args: argparse.Namespace, rows: list[ClientResult]) -> str:
    versions = client_versions()
    top = max(args.client_concurrency)
    ranking = pick(rows, "client", list(args.clients), "events_per_s", top, args.load_threshold)
    winner = ranking[0][0]
    table = "\n".join(
        f"| {r.repeat} | {r.concurrency} | {r.client} | {r.load_before:.2f} | {r.acked:,} | "
        f"{r.errors} | {r.events_per_s:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.max_ms:.0f} | "
        f"{r.client_cpu_s:.1f} | {r.broker_cpu_s:.1f} | {r.acked / max(r.batches, 1):.1f} | "
        f"{'/'.join(r.codecs)} | {'yes' if r.idempotent else 'NO'} |"
        for r in rows
    )
    limit = args.load_threshold
    summary = "\n".join(
        f"| {c} | {name}{fallback(rows, 'client', name, c, limit)} | "
        + " | ".join(
            f"{of(rows, 'client', name, c, metric, limit):{form}}"
            for metric, form in [
                *(("events_per_s", ",.0f"), ("p50_ms", ".1f"), ("p99_ms", ".1f")),
                *(("client_cpu_s", ".1f"), ("broker_cpu_s", ".1f")),
            ]
        )
        + " |"
        for c in args.client_concurrency
        for name in args.clients
    )
    lost = [r for r in rows if r.records_in_topic != r.acked + args.warmup_events or r.errors]
    check = (
        "Every run's topic held exactly the acknowledged records plus the warm-up ones (end "
        "offsets), with no errors."
        if not lost
        else "Runs whose topic did not hold exactly the acknowledged records, or with errors: "
        + ", ".join(f"{r.client} c={r.concurrency} run {r.repeat}" for r in lost)
    )
    ranked = ", ".join(f"{name} {rate:,.0f}/s (p99 {p99:.1f} ms)" for name, rate, p99 in ranking)
    without = sorted({r.client for r in rows if not r.idempotent})
    idempotence = (
        "every client ran with it in effect (every stored batch carries a producer id)."
        if not without
        else f"NOT in effect for {', '.join(without)} (batches without a producer id)."
    )
    return f"""# Decision: the Kafka client of the Sluice API

{header(args)}

Versions: kafka-python {versions["kafka-python"]}, confluent-kafka {versions["confluent-kafka"]}
(librdkafka {versions["librdkafka"]}, bundled in its manylinux wheel), aiokafka
{versions["aiokafka"]}.

## Method

`tests/load/bench_app_choices.py` produces {args.events:,} CloudEvents of {EVENT_BYTES} bytes
(canonical JSON, as `Event.to_json_bytes()` gives them) with keys over {len(TENANTS)} tenants,
from C concurrent "requests" on one asyncio loop; each request produces one event and awaits its
own acknowledgement before taking the next, which is what `POST /api/v1/events` does. Throughput
is acknowledged events per second of wall time; latency is from the call to the ack arriving on
the loop. {args.warmup_events:,} warm-up events (connections, metadata, producer id) precede
each measured run, and {args.broker_warmup_events:,} events (a third from each client) warm the
fresh broker's JVM before the first run. Each run is a fresh process and a fresh
{args.partitions}-partition topic; runs are interleaved (A B C A B C) and each waits first for the
1-minute load average to drop below {args.load_threshold} (at most {args.max_wait:.0f} s).

Same settings for all three: acks=all, idempotent producer, lz4, linger {args.linger_ms} ms,
batch 64 KiB, 10 s request timeout, 30 s delivery timeout (aiokafka has none); key = tenant.
confluent-kafka also gets `partitioner=murmur2_random` (the partitioner of the Java clients,
kafka-python and aiokafka, so a tenant's partition does not depend on the client) and
`socket.nagle.disable=true` (TCP_NODELAY, which kafka-python and asyncio set by default and
librdkafka does not). The asyncio bridges:

- aiokafka: native; `await producer.send_and_wait(...)`.
- confluent-kafka: `produce(..., on_delivery=cb)` called on the loop (it only enqueues); a
  background thread loops on `poll(0.05)`, collects the finished deliveries and resolves their
  futures on the loop with one `call_soon_threadsafe` per poll.
- kafka-python: `send()` on the loop, `add_callback`/`add_errback` on the record future (run on
  kafka-python's own I/O thread) resolve an asyncio future via `call_soon_threadsafe`.

`confluent_kafka.aio.AIOProducer` was not measured: it collects messages in Python (by default
until 1,000 are waiting or 1 s passed) before handing them to librdkafka, a shape made for
throughput, not for a request that waits for its own ack within milliseconds.

Client CPU is the client process's user+system time over the measured events; broker CPU is the
broker's over the whole run (its warm-up included). Each run's record batches were read back
from the broker's log files (`DumpLogSegments`): the table shows records per batch (batching
across concurrent requests), the codec the broker stored, and whether every batch carries a
producer id (idempotence in effect). {check}

PLAINTEXT is enough to compare the clients: SASL_SSL on the lab costs the same TLS and SCRAM
work whichever client sits on top. With one broker, acks=all waits for one replica; on the
lab's three brokers it adds a replication round trip for every client alike.

## Runs

{CLIENT_COLUMNS}
{table}

Medians over the runs that started below the load threshold ({args.load_threshold}); a
candidate with no such run at a concurrency is marked * and its median is over all its runs
there. The choice uses these medians.

| C | client | events/s | p50 ms | p99 ms | client CPU s | broker CPU s |
|---|---|---|---|---|---|---|
{summary}

## Choice: {winner}

Rule (in the harness): at the highest concurrency measured (C={top}), the highest median
throughput wins; candidates within 10 % of it are ranked by median p99 instead. Ranking: {ranked}.

{CLIENT_REASONS.strip()}
- Idempotence: {idempotence}

kafka-python stays in use for Sluice's operations tooling regardless of this choice: the
`sluice_kafka_cluster` Ansible module in the Kafka hosts' admin venv, the testinfra probe, the
system-test scripts, and this harness (topic creation, end offsets). It is pure Python, installs
offline from one wheel and its admin client covers what the tooling does. Only the API's produce
path is decided here.

Regenerate: {command(args)} from the repository root (about an hour: it waits for a quiet
host before every run; `--quick` is a smoke run of the same code that writes to /tmp).
"""


def columns(*names: str) -> str:
    return "| " + " | ".join(names) + " |\n" + "|---" * len(names) + "|"


CLIENT_COLUMNS = columns(
    *("run", "C", "client", "load avg before", "acked", "errors", "events/s", "p50 ms"),
    *("p99 ms", "max ms", "client CPU s", "broker CPU s", "records/batch", "codec", "producer id"),
)
SERVER_COLUMNS = columns(
    *("series.run", "C", "server", "load avg before", "requests/s", "p50 ms", "p99 ms", "max ms"),
    *("errors", "server CPU s", "events per server CPU s", "broker CPU s", "generator CPU s"),
)

CLIENT_REASONS = """Reasons beyond the ranking:

- asyncio fit: aiokafka is the only native one; confluent-kafka needs the small poll-thread
  bridge above (`ConfluentProducer` in the harness; librdkafka does its I/O, compression and
  batching in C threads off the GIL); kafka-python's `send()` can block the event loop
  (metadata, full buffer, up to `max_block_ms`) and its I/O thread runs Python code under the
  GIL.
- Broker CPU differs between the clients (medians table): it follows how each packs batches into
  produce requests. On the lab the brokers share the `stream` machine with Redis, so it counts.
- Operations: confluent-kafka ships manylinux binary wheels with librdkafka inside (lz4
  included), so the wheelhouse needs no compiler or system librdkafka; aiokafka's wheels are
  manylinux too (Cython record builders) but its lz4 needs `cramjam`, and kafka-python's needs
  `lz4`: both are extra pins the `candidates` extra does not have yet; kafka-python is pure
  Python. librdkafka is
  maintained by Confluent alongside the Java client; aiokafka (aio-libs) and kafka-python are
  community projects.
"""


def server_report(args: argparse.Namespace, rows: list[ServerResult], client: str) -> str:
    series = getattr(args, "series", None) or [(args.measured, command(args))]
    measured = (
        "in " + " and ".join(f"series {i} ({when})" for i, (when, _) in enumerate(series, 1))
        if len(series) > 1
        else series[0][0]
    )
    regenerate = "\n".join(f"- series {i}: {how}" for i, (_, how) in enumerate(series, 1))
    scores = round_scores(rows, args.servers)
    winner = max(scores, key=lambda name: scores[name])
    scored = ", ".join(f"{name} {score:.2f}" for name, score in sorted(scores.items()))
    servers, limit = list(args.servers), args.load_threshold
    by_concurrency = "; ".join(
        f"C={c}: {compare(pick(rows, 'server', servers, 'requests_per_s', c, limit))}"
        for c in args.server_concurrency
    )
    pairs = paired_ratios(rows, args.servers)
    versions = {
        name: importlib.metadata.version(name)
        for name in ("granian", "uvicorn", "uvloop", "httptools", "starlette")
    }
    table = "\n".join(
        f"| {r.series}.{r.repeat} | {r.concurrency} | {r.server} | {r.load_before:.2f} | "
        f"{r.requests_per_s:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.max_ms:.0f} | "
        f"{r.errors} | {r.server_cpu_s:.1f} | {r.per_cpu_second:,.0f} | {r.broker_cpu_s:.1f} | "
        f"{r.generator_cpu_s:.1f} |"
        for r in sorted(rows, key=lambda r: (r.concurrency, r.series, r.repeat))
    )
    limit = args.load_threshold
    summary = "\n".join(
        f"| {c} | {name}{fallback(rows, 'server', name, c, limit)} | "
        + " | ".join(
            f"{of(rows, 'server', name, c, metric, limit):{form}}"
            for metric, form in [
                *(("requests_per_s", ",.0f"), ("p50_ms", ".1f"), ("p99_ms", ".1f")),
                ("per_cpu_second", ",.0f"),
            ]
        )
        + f" | {sum(r.errors for r in rows if r.server == name and r.concurrency == c)} |"
        for c in args.server_concurrency
        for name in args.servers
    )
    all_runs = "\n".join(
        f"| {c} | {name} | "
        + " | ".join(
            f"{of(rows, 'server', name, c, metric, float('inf')):{form}}"
            for metric, form in [
                *(("requests_per_s", ",.0f"), ("p99_ms", ".1f"), ("per_cpu_second", ",.0f")),
            ]
        )
        + " |"
        for c in args.server_concurrency
        for name in args.servers
    )
    configs = "\n".join(f"- `{name}`: {SERVERS[name]}" for name in args.servers)
    short = [r for r in rows if r.records_in_topic < r.accepted]
    check = (
        "In every run the topic held at least the records answered 202 in the measured window "
        "(it also holds the warm-up's), so no 202 was given for a record the broker lacks."
        if not short
        else "Runs whose topic held fewer records than 202 answers: "
        + ", ".join(f"{r.server} c={r.concurrency} run {r.repeat}" for r in short)
    )
    return f"""# Decision: the HTTP server of the Sluice API

{header(args, measured)}

Versions: granian {versions["granian"]}, uvicorn {versions["uvicorn"]}, uvloop
{versions["uvloop"]}, httptools {versions["httptools"]}, Starlette {versions["starlette"]};
Kafka client {client} {importlib.metadata.version(client)} (the choice of
docs/decisions/kafka-client.md).

## Method

One minimal Starlette app (`bench_app()` in `tests/load/bench_app_choices.py`), the same code
under both servers, one worker process each (the `sluice` role runs N instances behind
HAProxy, so per-process efficiency is what counts): `POST /api/v1/events` reads the body,
parses and validates it with `sluice.cloudevents.parse_request`, produces
`Event.to_json_bytes()` with {client} (acks=all, idempotent, lz4, linger {args.linger_ms} ms,
key = tenant from an `X-Tenant` header standing in for the credential; the bridge and settings
of docs/decisions/kafka-client.md) and answers 202 with the ids only after the broker's
acknowledgement (503 after 10 s without one). Auth, rate limiting and metrics are left out: they
cost the same under either server.

Load: a raw-asyncio HTTP/1.1 generator (uvloop where installed) in its own process, one
keep-alive connection per concurrent client, each sending a {EVENT_BYTES}-byte structured
CloudEvent (`application/cloudevents+json`, unique id) as soon as its last one was answered.
{args.warmup_s:.0f} s warm-up, then {args.duration_s:.0f} s measured; requests/s counts 202s
in that window, latency is send to full response, errors are every non-202 answer or broken
connection. The generator shares the {os.cpu_count()} cores with the server and the broker (its
own CPU time is in the table). Runs are interleaved and each waits for the 1-minute load average
to drop below {args.load_threshold} (at most {args.max_wait:.0f} s). Server and broker CPU are
counted over warm-up plus measured window ({args.warmup_s + args.duration_s:.0f} s): a server
figure near that number means the one worker process used a whole core, a lower one that it
was kept from it. Events per server CPU second (the run's records in Kafka, warm-up included,
over the server's CPU time) is the instance's cost per accepted event, which other work on the
host changes far less than requests/s. {check}

Configurations:

{configs}

## Runs

{SERVER_COLUMNS}
{table}

Medians over the runs that started below the load threshold ({args.load_threshold}); a
candidate with no such run at a concurrency is marked * and its median is over all its runs
there. The choice uses these medians.

| C | server | requests/s | p50 ms | p99 ms | events per server CPU s | errors (all runs) |
|---|---|---|---|---|---|---|
{summary}

Medians over all runs, whatever the load:

| C | server | requests/s | p99 ms | events per server CPU s |
|---|---|---|---|---|
{all_runs}

## Choice: {winner.split("-")[0]}

Rule (in the harness): the most events accepted per second of the server's own CPU, compared
within each round of interleaved runs (same series, run and concurrency, all concurrencies): each
run's figure over the round's mean, the median of those per candidate wins. Scores: {scored}.
{pairs}.

Why this rule and not the client page's (median requests/s at the highest concurrency): other
sessions' work on this 2-core host came and went during the runs (the load average column shows
when). Between runs of the same candidate at the same concurrency, requests/s varied by up to
{spread(rows, "requests_per_s"):.2f}x (highest over lowest), events per server CPU second by up
to {spread(rows, "per_cpu_second"):.2f}x; the rule was changed to this one after series 1 showed
that. A worker process here is CPU-bound, so events per CPU second is also what one `sluice` API
instance can take per core it is given. Requests/s medians over the runs that started below
the load threshold: {by_concurrency}.

{SERVER_REASONS}

Regenerate, from the repository root (`--only servers` runs the server part alone, with the
client named by `--server-client`; without `--only` the client bench runs first and picks it;
a series number in the runs table is the command that measured the run):

{regenerate}

and render this page from their raw results with `--report-only --results FILE...`.
"""


SERVER_REASONS = """Reasons beyond the ranking:

- Both are ASGI servers for the same Starlette app, so the choice can be revisited without
  touching application code; the `sluice` role only changes the command line of its unit.
- Operations: granian is one manylinux binary wheel (Rust HTTP stack, no extras needed);
  uvicorn is pure Python and needs `uvicorn[standard]` (uvloop and httptools, both manylinux
  wheels) for its fast path, without which it falls back to h11 on the stock asyncio loop
  (`--servers uvicorn-h11` measures that). uvloop is worth pinning either way, and the
  `candidates` extra pins neither yet.
- Each instance is one process that uses a whole core at these rates, so the `sluice` role's
  instance count per host (from vCPUs) is what scales the accept path."""


# --------------------------------------------------------------------------------------------


def main() -> int:
    if sys.argv[1:2] == ["_client"]:
        spec = json.loads(sys.argv[2])
        print(json.dumps(asyncio.run(client_run(**spec))))
        return 0
    if sys.argv[1:2] == ["_load"]:
        spec = json.loads(sys.argv[2])
        try:
            import uvloop

            result = uvloop.run(generate_load(**spec))
        except ImportError:
            result = asyncio.run(generate_load(**spec))
        print(json.dumps(result))
        return 0

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run; reports go to /tmp")
    parser.add_argument("--only", choices=["clients", "servers"], help="run one part only")
    parser.add_argument("--events", type=int, default=100_000, help="per client run")
    parser.add_argument("--warmup-events", type=int, default=2_000)
    parser.add_argument("--client-concurrency", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS))
    parser.add_argument(
        "--servers", nargs="+", choices=list(SERVERS), default=["granian", "uvicorn"]
    )
    parser.add_argument("--server-concurrency", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--server-client", choices=CLIENTS, help="default: the client bench's pick")
    parser.add_argument("--duration-s", type=float, default=30.0, help="measured, per server run")
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs per candidate")
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--linger-ms", type=int, default=5, help="all clients, both parts")
    parser.add_argument("--load-threshold", type=float, default=0.8)
    parser.add_argument("--max-wait", type=float, default=900.0, help="seconds, per run")
    parser.add_argument("--kafka-version", default="4.4.0")
    parser.add_argument("--out-dir", type=Path, default=REPO / "docs" / "decisions")
    parser.add_argument(
        "--results",
        type=Path,
        nargs="+",
        help="raw results (JSON), written as runs finish; default: "
        "/tmp/sluice-bench-app-choices.json (--quick: results.json in --out-dir). With "
        "--report-only, several files: their server runs are reported together, as series",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: render the reports again from --results",
    )
    parser.add_argument(
        "--broker-warmup-events",
        type=int,
        default=150_000,
        help="produced (a third by each client, not measured) before the first run: a fresh "
        "broker's JVM is still compiling its produce path",
    )
    if "--quick" in sys.argv[1:]:  # smaller defaults; options given explicitly still win
        parser.set_defaults(
            events=5_000,
            warmup_events=500,
            broker_warmup_events=15_000,
            duration_s=5.0,
            warmup_s=1.0,
            repeats=1,
            max_wait=0.0,
            out_dir=Path("/tmp/sluice-bench-quick"),
        )
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        if args.results is None:
            parser.error("--report-only needs --results")
        return report_only(args)
    if args.results is None:
        quick_results = args.out_dir / "results.json"
        args.results = quick_results if args.quick else Path("/tmp/sluice-bench-app-choices.json")
    elif len(args.results) > 1:
        parser.error("one --results file when measuring")
    else:
        args.results = args.results[0]
    if args.only == "servers" and args.server_client is None:
        parser.error("--only servers needs --server-client (the client bench picks it otherwise)")
    args.argv = [shlex.quote(word) for word in sys.argv[1:]]
    args.measured = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    args.results.unlink(missing_ok=True)

    with LocalKafka(version=args.kafka_version) as kafka:
        warm_broker(args, kafka)
        if args.only != "servers":
            rows = bench_clients(args, kafka)
            (args.out_dir / "kafka-client.md").write_text(client_report(args, rows))
            if args.server_client is None:
                top = max(args.client_concurrency)
                ranking = pick(
                    rows, "client", args.clients, "events_per_s", top, args.load_threshold
                )
                args.server_client = ranking[0][0]
        if args.only != "clients":
            rows_s = bench_servers(args, kafka, args.server_client)
            report = server_report(args, rows_s, args.server_client)
            (args.out_dir / "http-server.md").write_text(report)
    print(f"reports in {args.out_dir}; raw results in {args.results}")
    return 0


def report_only(args: argparse.Namespace) -> int:
    """Render the reports from saved raw results, with the options they were measured with.
    Server runs of several files are reported together, numbered by series in file order."""
    out_dir, files = args.out_dir, args.results
    series: list[tuple[str, str]] = []
    rows_s: list[ServerResult] = []
    for path in files:
        data = json.loads(path.read_text())
        for name, value in data["options"].items():
            setattr(args, name, value)
        if data.get("clients"):
            rows = [ClientResult(**row) for row in data["clients"]]
            (out_dir / "kafka-client.md").write_text(client_report(args, rows))
        if data.get("servers"):
            series.append((args.measured, command(args)))
            for row in data["servers"]:
                rows_s.append(ServerResult(**{**row, "series": len(series)}))
    if rows_s:
        args.series = series
        report = server_report(args, rows_s, args.server_client)
        (out_dir / "http-server.md").write_text(report)
    print(f"reports in {out_dir}, from {', '.join(map(str, files))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
