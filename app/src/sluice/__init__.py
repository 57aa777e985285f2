"""Sluice: the CloudEvents ingest service.

The packages follow the data flow. :mod:`sluice.api` takes HTTP requests: it authenticates the
tenant, validates the events (:mod:`sluice.cloudevents`, or a client error from
:mod:`sluice.errors`) and produces them to Kafka through :mod:`sluice.adapters`.
:mod:`sluice.processor` consumes them in batches into PostgreSQL (:mod:`sluice.storage`) and
Redis, with what :mod:`sluice.derived` computes from them (aggregates, anomalies, enrichment, a
subject's state); the API reads them back from there. :mod:`sluice.config` reads the settings,
:mod:`sluice.service` wires the real adapters, :mod:`sluice.cli` is the ``sluice`` command.
"""

__version__ = "0.1.0"
