"""Data quality of events: ``sluice validate`` and the event mix of the architecture study.

:mod:`~sluice.quality.rules` (the rule table as data: required fields per event type, ISO 4217
codes, what each rule checks and how to fix it; the checks of one event, pure functions over
its JSON), :mod:`~sluice.quality.report` (the rules over a whole sample: unique ids per tenant,
counts per rule, the score, the worst examples, text and JSON), :mod:`~sluice.quality.generator`
(the study's event mix, which the rules score 100 %) and :mod:`~sluice.quality.sources` (where
the events come from: a file, a bounded Kafka sample, a time range in PostgreSQL).
"""
