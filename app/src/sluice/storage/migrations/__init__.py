"""Sluice's schema, as ordered migrations that :mod:`sluice.storage.migrate` applies.

A migration is a file ``NNNN_name.sql`` or ``NNNN_name.py`` (four digits, then lowercase words):

- ``.sql`` runs as written, in one transaction;
- ``.py`` is for the few steps whose SQL depends on the server (the pg_partman major version,
  the configured premake): it defines ``sql(facts: ServerFacts) -> str`` and the SQL it
  returns runs in one transaction.

Once applied, a migration is immutable: its checksum is recorded, and ``sluice migrate``
refuses to run when the file changed. A change to the schema is a new file with the next
number. Tables live in schema ``public`` and are created by the migrating role, the database
owner ``sluice_writer``: the default privileges the postgresql role sets up (``FOR ROLE
sluice_writer IN SCHEMA public GRANT SELECT ON TABLES TO sluice_reader``) then let
``sluice_reader`` read every one of them, with no GRANT in a migration.
"""
