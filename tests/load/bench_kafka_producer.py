"""Benchmark the raw Kafka produce path on the lab cluster: Kafka's own producer performance tool
(kafka-producer-perf-test, from kafka-tools) over SASL_SSL as sluice-producer, acks=all,
500-byte records, into events.raw. Writes docs/bench/kafka-producer.md: the ceiling Sluice's
ingest is compared with.

The tool runs on the first Kafka host; the producer password goes there on ssh's standard
input into a root-only client properties file (removed afterwards), never on a command line.

    make bench-kafka
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import uuid
from pathlib import Path

from sluice_infra.lab.layout import Layout
from sluice_infra.lab.remote import Remote

REPO = Path(__file__).resolve().parents[2]

#: The tool's closing line, e.g. "500000 records sent, 41234.5 records/sec (19.66 MB/sec),
#: 1234.56 ms avg latency, 2345.00 ms max latency, 1200 ms 50th, 2000 ms 95th, 2200 ms 99th,
#: 2300 ms 99.9th."
SUMMARY = re.compile(
    r"(?P<records>\d+) records sent, (?P<rate>[\d.]+) records/sec \((?P<mb>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency, (?P<p50>\d+) ms 50th, "
    r"(?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th, (?P<p999>\d+) ms 99.9th"
)
#: The study's target: 400,000 events per minute.
TARGET_PER_SECOND = 400_000 / 60


def parse_summary(output: str) -> dict[str, float]:
    """The figures of the tool's last summary line; ValueError if there is none."""
    matches = list(SUMMARY.finditer(output))
    if not matches:
        raise ValueError(f"no summary line in kafka-producer-perf-test output:\n{output[-2000:]}")
    return {key: float(value) for key, value in matches[-1].groupdict().items()}


def client_properties(bootstrap: str, password: str, extra: dict[str, str]) -> str:
    """The producer's settings file (SASL_SSL as sluice-producer)."""
    lines = {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="sluice-producer" password="{password}";'
        ),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": "/etc/kafka/tls/ca.crt",
        **extra,
    }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def report(args: argparse.Namespace, runs: dict[str, dict[str, float]], producer: dict) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    settings = ", ".join(f"{k}={v}" for k, v in producer.items())
    rows = "\n".join(
        f"| {name} | {int(f['records']):,} | {f['rate']:,.0f} | {f['mb']:.2f} | {f['avg']:.1f} | "
        f"{f['p50']:.0f} | {f['p95']:.0f} | {f['p99']:.0f} | {f['p999']:.0f} | {f['max']:.0f} |"
        for name, f in runs.items()
    )
    ceiling = runs["unthrottled (ceiling)"]["rate"]
    return f"""# Kafka: raw produce throughput on the lab cluster

Measured {now} by `make bench-kafka` (tests/load/bench_kafka_producer.py) on a build host
with {os.cpu_count()} cores, all three lab machines sharing them; the seed layout runs the three
Kafka nodes (and six Redis instances) on the `stream` machine, and the producer runs there too.

Kafka's own tool, `kafka-producer-perf-test`, as `sluice-producer` over SASL_SSL (SCRAM-SHA-512,
TLS 1.3) into `{args.topic}` (30 partitions, replication factor 3, min.insync.replicas 2),
records of {args.record_size} bytes; producer settings: {settings}. Two runs: unthrottled, and
throttled to the study's rate.

| run | records | records/s | MB/s | avg ms | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms |
|---|---|---|---|---|---|---|---|---|---|
{rows}

The study's target is 400,000 events/minute = {TARGET_PER_SECOND:,.0f} events/s: the unthrottled
run reaches {ceiling / TARGET_PER_SECOND:.1f}x that. Its latencies measure queueing with the
brokers saturated; the throttled run shows the latency at the study's rate.
"""


#: The producer's settings: Sluice's own (acks=all, idempotent) with batching for throughput.
PRODUCER = {
    "acks": "all",
    "enable.idempotence": "true",
    "compression.type": "lz4",
    "linger.ms": "10",
    "batch.size": "262144",
}


def perf_test(
    layout: Layout,
    remote: Remote,
    plans: dict[str, tuple[int, float]],
    record_size: int = 500,
    topic: str = "events.raw",
) -> dict[str, dict[str, float]]:
    """kafka-producer-perf-test on the first Kafka host, one run per plan (name: records,
    records/s or -1 for unthrottled), as sluice-producer over SASL_SSL: the figures of each."""
    host = layout.kafka_nodes[0].host
    password = remote.vault(layout.inventory)["vault_kafka_sluice_producer_password"]
    path = f"/root/.sluice-bench-{uuid.uuid4().hex}.properties"
    remote.run(
        host,
        f"sudo -n sh -c 'umask 077; cat > {path}'",
        stdin=client_properties(layout.kafka_bootstrap, password, PRODUCER),
    )
    runs = {}
    try:
        for name, (records, throughput) in plans.items():
            output = remote.run(
                host,
                "sudo -n env KAFKA_TOOL_OPTS='-Xmx1g -XX:+UseG1GC' kafka-producer-perf-test "
                f"--topic {topic} --num-records {records} --record-size {record_size} "
                f"--throughput {int(throughput)} --producer.config {path}",
                timeout=1800,
            )
            runs[name] = parse_summary(output)
            print(f"{name}: {runs[name]['rate']:,.0f} records/s, p99 {runs[name]['p99']:.0f} ms")
    finally:
        remote.run(host, f"sudo -n rm -f {path}")
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--inventory", type=Path, default=REPO / "inventories" / "lab")
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--record-size", type=int, default=500)
    parser.add_argument("--rate-seconds", type=int, default=30, help="length of the throttled run")
    parser.add_argument("--topic", default="events.raw")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "kafka-producer.md")
    args = parser.parse_args()

    plans = {
        "unthrottled (ceiling)": (args.records, -1),
        "at the study's rate": (int(TARGET_PER_SECOND * args.rate_seconds), TARGET_PER_SECOND),
    }
    layout = Layout.load(args.inventory)
    runs = perf_test(layout, Remote(), plans, args.record_size, args.topic)
    args.out.write_text(report(args, runs, PRODUCER))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
