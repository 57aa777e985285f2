"""The processor (``sluice process``): ``events.raw`` to PostgreSQL, Redis and the derived
topics, in batches.

:mod:`~sluice.processor.types` holds what it needs from Kafka, PostgreSQL and Redis (the
Protocols the adapters implement), :mod:`~sluice.processor.engine` the batch loop over them and
:mod:`~sluice.processor.metrics` its Prometheus metrics. This package imports none of its
modules here, so an adapter that imports the types does not load the engine.
"""
