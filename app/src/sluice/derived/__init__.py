"""What the processor derives from the events it stores, and what rebuilds it.

:mod:`~sluice.derived.aggregates` (per-tenant counts in tumbling windows, in Redis and on
``events.aggregated``), :mod:`~sluice.derived.anomaly` (z-score alerts on per-minute counts),
:mod:`~sluice.derived.enrich` (``events.enriched`` from the customers table),
:mod:`~sluice.derived.state` (a subject's state folded from its events, for the API) and
:mod:`~sluice.derived.replay` (``sluice replay``: Redis aggregates rebuilt from PostgreSQL).
"""
