"""PostgreSQL: the schema and how Sluice writes and reads it.

:mod:`~sluice.storage.rows` is the ``events`` row the processor writes once,
:mod:`~sluice.storage.reads` the tenant-scoped reads and their cursors,
:mod:`~sluice.storage.store` the async stores over a connection pool (events, customers, API
keys), :mod:`~sluice.storage.queries` the API's read side over them and Redis, and
:mod:`~sluice.storage.migrate` the runner of the migrations in :mod:`sluice.storage.migrations`.
"""
