"""The names migration ``0002_events_partitions.py`` imports, where it imports them from.

Applied migrations are immutable: ``sluice migrate`` records each file's checksum and refuses a
database whose record differs from the shipped file, so 0002 keeps its ``from sluice.migrate
import ServerFacts, create_parent_sql`` as it was applied. The runner is
:mod:`sluice.storage.migrate`; a new ``.py`` migration imports from there.
"""

from __future__ import annotations

from sluice.storage.migrate import ServerFacts, create_parent_sql

__all__ = ["ServerFacts", "create_parent_sql"]
