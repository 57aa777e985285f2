"""Daily partitions of ``public.events``, made and kept by pg_partman.

Python, not SQL, because ``partman.create_parent`` differs between the versions Sluice runs
on: pg_partman 4 (the lab's Debian PostgreSQL 15) needs ``p_type => 'native'``, pg_partman 5
(production) has only native partitioning and refuses that value.
:func:`sluice.migrate.create_parent_sql` makes the call for the installed version, with the
configured premake (days made ahead) and a default partition for events outside every range.
"""

from __future__ import annotations

from sluice.migrate import ServerFacts, create_parent_sql


def sql(facts: ServerFacts) -> str:
    """The create_parent call for ``public.events``: one partition per day on ``time``."""
    return create_parent_sql(facts, parent="public.events", control="time", interval="1 day")
