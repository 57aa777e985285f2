"""The clients of Kafka (:mod:`~sluice.adapters.kafka`) and the Redis Cluster
(:mod:`~sluice.adapters.redis`), implementing the API's ports (:mod:`sluice.api.ports`) and the
processor's (:mod:`sluice.processor.types`). PostgreSQL's are in :mod:`sluice.storage`.
"""
