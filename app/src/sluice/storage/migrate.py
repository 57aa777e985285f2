"""``sluice migrate``: brings the database schema up to the migrations this package ships.

The migrations are the files of :mod:`sluice.storage.migrations` (``0001_events.sql``, ...). A run:

1. takes a PostgreSQL advisory lock, so two instances started together (two hosts, a rolling
   deploy) never migrate at once; the second waits, then finds nothing to do;
2. checks the server before touching it: the migrating role owns the database (so the
   reader's default privileges cover the new tables), pg_partman 4 or 5 is installed, and the
   ops roles' helper functions ``sluice.distribute_table`` / ``sluice.make_reference_table``
   are there;
3. compares the files with ``public.sluice_schema_migrations`` and refuses, naming the file,
   when an applied migration changed, when the database has one this package does not know
   (a newer Sluice migrated it), or when an unapplied one sorts before an applied one;
4. applies each pending migration in its own transaction together with its record, so a
   failure leaves nothing of that migration behind and the next run retries it;
5. keeps pg_partman's premake for ``public.events`` at the configured value (a setting, not
   history: changing it needs no new migration).

A second run applies nothing and changes nothing. The runner only needs the few methods of
:class:`Connection`, which a psycopg connection in autocommit mode has; the unit tests pass a
fake one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any, Final, Protocol

import psycopg

#: Days of partitions pg_partman keeps made ahead of now (and makes behind now at creation).
DEFAULT_PREMAKE: Final = 7
#: How long a run waits for another run's lock before giving up, in seconds.
DEFAULT_LOCK_TIMEOUT: Final = 300.0
#: The advisory lock key every ``sluice migrate`` takes: the bytes of "sluice_m" as a bigint.
LOCK_KEY: Final = int.from_bytes(b"sluice_m", "big", signed=True)
#: The parent tables pg_partman manages for Sluice, whose premake follows the setting.
PARTITIONED_TABLES: Final = ("public.events",)
#: pg_partman major versions whose create_parent the migrations know how to call.
SUPPORTED_PARTMAN_MAJORS: Final = (4, 5)

_FILE = re.compile(r"(?P<version>[0-9]{4})_(?P<name>[a-z0-9]+(?:_[a-z0-9]+)*)\.(?P<kind>sql|py)")
_PACKAGE = "sluice.storage.migrations"

# The runner's statements, as constants so that a fake connection can recognise them.
CREATE_TABLE_SQL: Final = """\
CREATE TABLE IF NOT EXISTS public.sluice_schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
APPLIED_SQL: Final = (
    "SELECT version, name, checksum, applied_at FROM public.sluice_schema_migrations "
    "ORDER BY version"
)
RECORD_SQL: Final = (
    "INSERT INTO public.sluice_schema_migrations (version, name, checksum) VALUES (%s, %s, %s)"
)
FACTS_SQL: Final = """\
SELECT pg_catalog.current_database(),
       current_user,
       pg_catalog.pg_get_userbyid(d.datdba),
       e.extversion,
       n.nspname,
       CASE WHEN pg_catalog.has_schema_privilege(h.oid, 'USAGE')
            THEN pg_catalog.to_regprocedure('sluice.distribute_table(regclass,text,text)')
                     IS NOT NULL
                 AND pg_catalog.to_regprocedure('sluice.make_reference_table(regclass)')
                     IS NOT NULL
            ELSE false END
FROM pg_catalog.pg_database d
LEFT JOIN pg_catalog.pg_extension e ON e.extname = 'pg_partman'
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
LEFT JOIN pg_catalog.pg_namespace h ON h.nspname = 'sluice'
WHERE d.datname = pg_catalog.current_database()"""
LOCK_TIMEOUT_SQL: Final = "SELECT pg_catalog.set_config('lock_timeout', %s, false)"
LOCK_SQL: Final = "SELECT pg_catalog.pg_advisory_lock(%s)"
UNLOCK_SQL: Final = "SELECT pg_catalog.pg_advisory_unlock(%s)"
RESET_LOCK_TIMEOUT_SQL: Final = "RESET lock_timeout"
#: Citus runs a multi-shard DDL over parallel connections, and a later statement of the same
#: transaction can then fail ("cannot ... since DDL has been executed on a connection that is
#: in use"). Sequential mode is Citus's documented answer for DDL-heavy transactions; without
#: Citus the setting is an unused placeholder and changes nothing.
CITUS_SEQUENTIAL_SQL: Final = "SET LOCAL citus.multi_shard_modify_mode TO 'sequential'"


class MigrationError(RuntimeError):
    """The schema cannot be brought up to date; the message says why and what to do."""


class Cursor(Protocol):
    """What the runner reads from a statement's result."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The part of :class:`psycopg.Connection` (autocommit on) the runner uses."""

    @property
    def broken(self) -> bool: ...

    def execute(self, query: Any, params: Any = None) -> Cursor: ...

    def transaction(self) -> AbstractContextManager[Any]: ...


@dataclass(frozen=True)
class ServerFacts:
    """What the migrations depend on, read from the server before anything changes.

    ``premake`` is the setting, not a server fact; it travels here because the partition
    migration needs it next to the pg_partman version.
    """

    database: str
    current_user: str
    database_owner: str
    partman_version: str | None
    partman_schema: str | None
    helpers_installed: bool
    premake: int = DEFAULT_PREMAKE


@dataclass(frozen=True)
class Migration:
    """One migration file of the package: its number, file name, text and checksum."""

    version: int
    name: str
    text: str
    checksum: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "checksum", checksum(self.text))

    @property
    def kind(self) -> str:
        """``sql`` or ``py``, from the file name."""
        return self.name.rsplit(".", 1)[1]

    def render(self, facts: ServerFacts) -> str:
        """The SQL this migration runs on a server with ``facts``.

        A ``.py`` migration runs from the very text that was checksummed (not an import that
        could pick up another copy of the module) and must define ``sql(facts) -> str``.
        """
        if self.kind == "sql":
            return self.text
        namespace: dict[str, Any] = {"__name__": f"{_PACKAGE}._{self.version:04d}"}
        exec(compile(self.text, f"<{_PACKAGE}/{self.name}>", "exec"), namespace)
        render = namespace.get("sql")
        if not callable(render):
            raise MigrationError(
                f"migration {self.name} defines no function sql(facts) -> str: a .py migration "
                "must return the SQL it runs from that function"
            )
        text = render(facts)
        if not isinstance(text, str) or not text.strip():
            raise MigrationError(f"migration {self.name}: sql(facts) returned no SQL: {text!r}")
        return text


@dataclass(frozen=True)
class AppliedMigration:
    """A row of ``public.sluice_schema_migrations``."""

    version: int
    name: str
    checksum: str
    applied_at: datetime


@dataclass(frozen=True)
class MigrationReport:
    """What a run did: the migrations it applied and whether it changed partman's premake."""

    applied: tuple[str, ...] = ()
    premake_changed: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether the run changed the database (Ansible's ``changed_when`` reads this)."""
        return bool(self.applied or self.premake_changed)

    def summary(self) -> str:
        """One line per change, or a line saying there was nothing to do."""
        if not self.changed:
            return "schema up to date: nothing to do"
        lines = [f"applied {name}" for name in self.applied]
        lines += [f"premake updated for {table}" for table in self.premake_changed]
        return "\n".join(lines)


def checksum(text: str) -> str:
    """SHA-256 of a migration's text, line endings normalised so that a checkout with CRLF
    (git autocrlf) does not look like an edit."""
    normalised = text.replace("\r\n", "\n").encode("utf-8")
    return hashlib.sha256(normalised).hexdigest()


def package_files() -> dict[str, str]:
    """The migration files shipped in :mod:`sluice.storage.migrations`, by file name."""
    files: dict[str, str] = {}
    for entry in resources.files(_PACKAGE).iterdir():
        if entry.is_file() and entry.name.endswith((".sql", ".py")):
            files[entry.name] = entry.read_text(encoding="utf-8")
    return files


def load_migrations(files: Mapping[str, str]) -> list[Migration]:
    """The migrations among ``files`` (file name -> text), in version order.

    ``__init__.py`` is the package, not a migration. Any other ``.sql`` or ``.py`` file must be
    named ``NNNN_name``, each number used once and the numbers contiguous from 0001: a file the
    runner would skip silently is a migration that never runs, and a gap is a file missing.
    """
    migrations: dict[int, Migration] = {}
    for name in sorted(files):
        if name == "__init__.py":
            continue
        match = _FILE.fullmatch(name)
        if match is None:
            raise MigrationError(
                f"{_PACKAGE}/{name} is not named like a migration: use NNNN_words.sql or "
                "NNNN_words.py (four digits, lowercase words joined by '_'), e.g. 0005_add_x.sql"
            )
        version = int(match["version"])
        if version in migrations:
            raise MigrationError(
                f"{_PACKAGE}/{name} and {migrations[version].name} share the number "
                f"{version:04d}: give the newer one the next free number"
            )
        migrations[version] = Migration(version, name, files[name])
    for expected, version in enumerate(sorted(migrations), start=1):
        if version != expected:
            raise MigrationError(
                f"{_PACKAGE} has no migration {expected:04d} before "
                f"{migrations[version].name}: numbers run from 0001 without gaps, so a gap is a "
                "missing file (a wheel built without the .sql package data, "
                "'sluice.storage.migrations' = ['*.sql'] in pyproject.toml, lacks every .sql "
                "migration)"
            )
    return [migrations[version] for version in sorted(migrations)]


def plan(available: Sequence[Migration], applied: Iterable[AppliedMigration]) -> list[Migration]:
    """The migrations of ``available`` still to apply, in order, after checking history.

    Refuses when an applied migration's file changed (applied migrations are immutable: the
    change belongs in a new migration), when the database has a migration this package lacks
    (a newer Sluice migrated it; running this one against it would be a downgrade), and when
    an unapplied migration is numbered below the newest applied one (it was added out of
    order and would run against a schema it was not written for).
    """
    by_version = {migration.version: migration for migration in available}
    done: dict[int, AppliedMigration] = {}
    for record in applied:
        done[record.version] = record
        migration = by_version.get(record.version)
        if migration is None:
            raise MigrationError(
                f"the database has migration {record.name} (applied {_when(record)}), which "
                "this Sluice does not ship: a newer Sluice migrated it; deploy that version (or "
                "newer) instead"
            )
        if migration.checksum != record.checksum:
            raise MigrationError(
                f"migration {migration.name} changed after it was applied to the database "
                f"(applied as {record.name} on {_when(record)}, checksum "
                f"{record.checksum[:12]}..., file now {migration.checksum[:12]}...): applied "
                "migrations are immutable; restore the file and put the change in a new "
                "migration"
            )
    pending = [migration for migration in available if migration.version not in done]
    newest = max(done, default=0)
    for migration in pending:
        if migration.version < newest:
            raise MigrationError(
                f"migration {migration.name} is not applied, but {done[newest].name} (a later "
                f"number) is: renumber {migration.name} after {newest:04d} so it runs against "
                "the schema it was written for"
            )
    return pending


def _when(record: AppliedMigration) -> str:
    return record.applied_at.isoformat(sep=" ", timespec="seconds")


def partman_major(version: str | None) -> int:
    """The major version of an installed pg_partman (``extversion``), if Sluice supports it."""
    if version is None:
        raise MigrationError(
            "pg_partman is not installed in this database: the postgresql role creates it "
            "(extension pg_partman in schema partman); run the role, then sluice migrate"
        )
    match = re.match(r"([0-9]+)\.", version)
    major = int(match[1]) if match else None
    if major not in SUPPORTED_PARTMAN_MAJORS:
        raise MigrationError(
            f"pg_partman {version} is installed; Sluice's migrations call create_parent as "
            f"pg_partman {' and '.join(f'{m}.x' for m in SUPPORTED_PARTMAN_MAJORS)} define it: "
            "install one of those"
        )
    return major


def create_parent_sql(facts: ServerFacts, *, parent: str, control: str, interval: str) -> str:
    """pg_partman's ``create_parent`` for the installed version, then its upkeep settings.

    - pg_partman 4 has trigger-based and native partitioning and must be told
      ``p_type => 'native'``; it always makes a default partition.
    - pg_partman 5 only partitions natively; its ``p_type`` means range/list, so 'native' is an
      error there. The default partition is asked for explicitly.

    Both make ``premake`` partitions ahead (and behind) now. ``infinite_time_partitions`` keeps
    maintenance making partitions while no events arrive (partman's default stops at the newest
    row), so events after a quiet spell land in their day, not in the default partition.
    ``inherit_privileges`` gives each partition maintenance makes the owner and grants of the
    parent: pg_partman's background worker runs as postgres, and a partition it owns would make
    every later ``ALTER TABLE public.events`` by the writer fail ("must be owner of table").
    """
    major = partman_major(facts.partman_version)
    _check_premake(facts.premake)
    schema = quote_ident(facts.partman_schema or "partman")
    arguments = [
        f"p_parent_table => {quote_literal(parent)}",
        f"p_control => {quote_literal(control)}",
        f"p_interval => {quote_literal(interval)}",
        f"p_premake => {facts.premake}",
    ]
    arguments.append("p_type => 'native'" if major == 4 else "p_default_table => true")
    return (
        f"SELECT {schema}.create_parent({', '.join(arguments)});\n"
        f"UPDATE {schema}.part_config SET infinite_time_partitions = true, "
        "inherit_privileges = true\n"
        f"    WHERE parent_table = {quote_literal(parent)};\n"
    )


def premake_sql(facts: ServerFacts, parent: str) -> str:
    """Sets ``parent``'s premake to the configured value if it differs (no row when it does not,
    or when the table is not partitioned yet)."""
    schema = quote_ident(facts.partman_schema or "partman")
    return (
        f"UPDATE {schema}.part_config SET premake = {int(facts.premake)} "
        f"WHERE parent_table = {quote_literal(parent)} AND premake <> {int(facts.premake)}"
    )


def maintenance_sql(facts: ServerFacts, parent: str) -> str:
    """pg_partman's maintenance for ``parent`` (same signature in 4 and 5): makes the partitions
    a raised premake asks for now rather than at the background worker's next hour."""
    schema = quote_ident(facts.partman_schema or "partman")
    return f"SELECT {schema}.run_maintenance(p_parent_table => {quote_literal(parent)})"


def check_facts(facts: ServerFacts) -> None:
    """Refuses a server the migrations would leave wrong or fail halfway on."""
    if facts.current_user != facts.database_owner:
        raise MigrationError(
            f"sluice migrate runs as {facts.current_user!r}, but database {facts.database!r} is "
            f"owned by {facts.database_owner!r}: the tables would be owned by "
            f"{facts.current_user!r}, and sluice_reader's default privileges (granted for the "
            f"owner's tables) would not cover them; connect as {facts.database_owner!r}"
        )
    partman_major(facts.partman_version)
    if not facts.helpers_installed:
        raise MigrationError(
            f"database {facts.database!r} lacks the helper functions "
            "sluice.distribute_table(regclass, text, text) and "
            f"sluice.make_reference_table(regclass), or {facts.current_user!r} may not use "
            "schema sluice: the citus role installs them (with or without Citus); run it, then "
            "sluice migrate"
        )


def read_facts(conn: Connection, premake: int) -> ServerFacts:
    """The :class:`ServerFacts` of the database ``conn`` is connected to."""
    row = conn.execute(FACTS_SQL).fetchone()
    database, user, owner, partman_version, partman_schema, helpers = row
    return ServerFacts(
        database=database,
        current_user=user,
        database_owner=owner,
        partman_version=partman_version,
        partman_schema=partman_schema,
        helpers_installed=bool(helpers),
        premake=premake,
    )


def read_applied(conn: Connection) -> list[AppliedMigration]:
    """The migrations recorded as applied, in version order."""
    return [AppliedMigration(*row) for row in conn.execute(APPLIED_SQL).fetchall()]


def migrate(
    conn: Connection,
    *,
    premake: int = DEFAULT_PREMAKE,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    migrations: Sequence[Migration] | None = None,
) -> MigrationReport:
    """Applies the pending migrations (default: the package's) over ``conn`` (autocommit on).

    Raises :class:`MigrationError` with what to do when the schema cannot be brought up to
    date; a migration that fails is rolled back whole and not recorded.
    """
    _check_premake(premake)
    available = list(load_migrations(package_files()) if migrations is None else migrations)
    if not available:
        raise MigrationError(
            f"no migrations found in {_PACKAGE}: the package was built without its .sql files "
            "(they must be package data: 'sluice.storage.migrations' = ['*.sql'] in "
            "pyproject.toml)"
        )
    with _migration_lock(conn, lock_timeout):
        facts = read_facts(conn, premake)
        check_facts(facts)
        conn.execute(CREATE_TABLE_SQL)
        applied: list[str] = []
        for migration in plan(available, read_applied(conn)):
            _apply(conn, migration, facts)
            applied.append(migration.name)
        premake_changed = _keep_premake(conn, facts)
    return MigrationReport(applied=tuple(applied), premake_changed=premake_changed)


def run(
    conninfo: str, *, premake: int = DEFAULT_PREMAKE, lock_timeout: float = DEFAULT_LOCK_TIMEOUT
) -> MigrationReport:
    """:func:`migrate` over a new connection to ``conninfo`` (a libpq DSN or URI)."""
    try:
        conn = psycopg.connect(conninfo, autocommit=True, application_name="sluice migrate")
    except psycopg.OperationalError as error:
        raise MigrationError(f"cannot connect to PostgreSQL to migrate: {error}") from None
    with conn:
        return migrate(conn, premake=premake, lock_timeout=lock_timeout)


def _check_premake(premake: object) -> None:
    if isinstance(premake, bool) or not isinstance(premake, int) or premake < 1:
        raise MigrationError(
            f"premake must be a whole number of daily partitions >= 1, got {premake!r}"
        )


def _apply(conn: Connection, migration: Migration, facts: ServerFacts) -> None:
    sql = migration.render(facts)
    try:
        with conn.transaction():
            conn.execute(CITUS_SEQUENTIAL_SQL)
            conn.execute(sql)
            conn.execute(RECORD_SQL, (migration.version, migration.name, migration.checksum))
    except psycopg.Error as error:
        raise MigrationError(
            f"migration {migration.name} failed and was rolled back, nothing of it is applied: "
            f"{str(error).strip()}; fix the cause and run sluice migrate again"
        ) from error


def _keep_premake(conn: Connection, facts: ServerFacts) -> tuple[str, ...]:
    changed: list[str] = []
    for parent in PARTITIONED_TABLES:
        with conn.transaction():
            if conn.execute(premake_sql(facts, parent)).rowcount:
                conn.execute(maintenance_sql(facts, parent))
                changed.append(parent)
    return tuple(changed)


@contextmanager
def _migration_lock(conn: Connection, timeout: float) -> Iterator[None]:
    """Holds the session-level advisory lock :data:`LOCK_KEY` for the ``with`` block.

    Session-level, not transaction-level, because the lock must span the separate transaction
    of every migration. ``timeout`` bounds the wait, so a run stuck behind a hung one fails
    with a message instead of hanging a deploy.
    """
    conn.execute(LOCK_TIMEOUT_SQL, (f"{int(timeout * 1000)}ms",))
    try:
        conn.execute(LOCK_SQL, (LOCK_KEY,))
    except psycopg.errors.LockNotAvailable:
        raise MigrationError(
            f"another sluice migrate has held the migration lock (advisory lock {LOCK_KEY}) "
            f"for over {timeout:g} s: wait for it to finish, or find it with SELECT pid FROM "
            "pg_locks WHERE locktype = 'advisory'"
        ) from None
    finally:
        conn.execute(RESET_LOCK_TIMEOUT_SQL)
    try:
        yield
    finally:
        # A broken connection has lost its session, and with it the lock.
        if not conn.broken:
            conn.execute(UNLOCK_SQL, (LOCK_KEY,))


def quote_ident(name: str) -> str:
    """``name`` as a double-quoted SQL identifier: always quoted, so no keyword list is needed
    and any name reads back exactly."""
    if not name or "\x00" in name:
        raise MigrationError(f"{name!r} cannot be an SQL identifier")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """``value`` as an SQL string literal (quotes doubled; with a backslash, an E'' literal
    with backslashes doubled, correct whatever standard_conforming_strings says)."""
    if "\x00" in value:
        raise MigrationError(f"{value!r} contains a NUL character, which PostgreSQL refuses")
    text = value.replace("'", "''")
    if "\\" in text:
        return "E'" + text.replace("\\", "\\\\") + "'"
    return "'" + text + "'"
