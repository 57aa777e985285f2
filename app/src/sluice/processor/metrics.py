"""The processor's Prometheus metrics, in a registry of its own that ``sluice process
--metrics-port`` serves (:func:`sluice.service.serve_metrics`).

The processor's counters are :class:`sluice.processor.types.ProcessorStats` itself, read at
scrape time (:data:`STATS_COUNTERS` names them), so what the logs report and what Prometheus
scrapes cannot drift apart. Batch sizes and durations are histograms the processor observes per
batch, and the consumer lag per assigned partition comes from librdkafka's statistics
(:func:`sluice.adapters.kafka.consumer_lags`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from sluice.processor.types import ProcessorStats, TopicPartition

#: :class:`~sluice.processor.types.ProcessorStats` field -> (counter name without ``_total``, help).
STATS_COUNTERS: Final[Mapping[str, tuple[str, str]]] = {
    "batches": (
        "sluice_processor_batches",
        "Batches polled from events.raw and processed, committed or not.",
    ),
    "records": ("sluice_processor_records", "Records polled from events.raw."),
    "inserted": (
        "sluice_processor_inserted_rows",
        "Rows PostgreSQL newly inserted; only these are counted in Redis and by the detector.",
    ),
    "already_stored": (
        "sluice_processor_already_stored",
        "Events PostgreSQL already held (redelivered batches, resent events), counted nowhere.",
    ),
    "duplicates_in_batch": (
        "sluice_processor_duplicates_in_batch",
        "Records skipped because an earlier record of the same batch had the same row key.",
    ),
    "dead_lettered": (
        "sluice_processor_dead_lettered",
        "Records produced to events.dlq (undecodable or unstorable).",
    ),
    "anomalies": (
        "sluice_processor_anomalies",
        "Anomaly alerts raised (produced to alerts.anomalies and stored in Redis).",
    ),
    "retries": (
        "sluice_processor_retries",
        "Failed attempts of a batch step (PostgreSQL, Redis, enrichment, Kafka), each retried.",
    ),
    "publish_failures": (
        "sluice_processor_publish_failures",
        "Batches whose live stream publish failed (best effort, not retried).",
    ),
    "commit_failures": (
        "sluice_processor_commit_failures",
        "Offset commits refused (usually a rebalance); the batch is redelivered.",
    ),
    "abandoned_batches": (
        "sluice_processor_abandoned_batches",
        "Batches left uncommitted because a stop came while a step kept failing.",
    ),
}


class _StatsCollector(Collector):
    """The processor's running totals as counters, read when Prometheus scrapes."""

    def __init__(self, stats: ProcessorStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        for field, (name, documentation) in STATS_COUNTERS.items():
            yield CounterMetricFamily(name, documentation, value=getattr(self.stats, field))


class ProcessorMetrics:
    """The processor's metrics, in a registry of their own (one per processor, so tests never
    collide): the counters of :meth:`follow`, the batch histograms and the consumer lag."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.batch_records = Histogram(
            "sluice_processor_batch_records",
            "Records per batch polled from events.raw.",
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "sluice_processor_batch_duration_seconds",
            "Time from poll to commit (or abandon) of a batch, retries included.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "sluice_processor_consumer_lag",
            "Messages between the committed offset and the high watermark, per partition "
            "assigned to this processor (librdkafka statistics).",
            ["topic", "partition"],
            registry=self.registry,
        )
        self._lag_series: set[tuple[str, str]] = set()
        self._lag_lock = threading.Lock()

    def follow(self, stats: ProcessorStats) -> None:
        """Expose ``stats`` as the ``sluice_processor_*_total`` counters."""
        self.registry.register(_StatsCollector(stats))

    def observe_batch(self, records: int, seconds: float) -> None:
        self.batch_records.observe(records)
        self.batch_seconds.observe(seconds)

    def set_consumer_lag(self, lags: Mapping[TopicPartition, int]) -> None:
        """Replace the lag series with ``lags``: a partition no longer in it (revoked, or its
        lag unknown) loses its series instead of keeping a stale value."""
        current = {(tp.topic, str(tp.partition)): lag for tp, lag in lags.items()}
        with self._lag_lock:
            for labels in self._lag_series - current.keys():
                self.consumer_lag.remove(*labels)
            for labels, lag in current.items():
                self.consumer_lag.labels(*labels).set(lag)
            self._lag_series = set(current)
