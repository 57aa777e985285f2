"""``sluice migrate``: migration files, history checks, pg_partman branching, and the runner
over a fake connection that keeps the state a database would (no PostgreSQL here)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from sluice.storage import migrate
from sluice.storage.migrate import (
    AppliedMigration,
    Migration,
    MigrationError,
    ServerFacts,
    create_parent_sql,
    load_migrations,
    package_files,
    partman_major,
    plan,
)

APPLIED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PACKAGE_NAMES = [
    "0001_events.sql",
    "0002_events_partitions.py",
    "0003_api_keys.sql",
    "0004_customers.sql",
]
FACTS = ServerFacts(
    database="sluice",
    current_user="sluice_writer",
    database_owner="sluice_writer",
    partman_version="4.7.2",
    partman_schema="partman",
    helpers_installed=True,
)


def facts_row(facts: ServerFacts = FACTS) -> tuple[Any, ...]:
    return (
        facts.database,
        facts.current_user,
        facts.database_owner,
        facts.partman_version,
        facts.partman_schema,
        facts.helpers_installed,
    )


def sql_migrations(*names: str) -> list[Migration]:
    return [Migration(int(name[:4]), name, f"-- {name}\nSELECT 1;\n") for name in names]


def applied(*migrations: Migration) -> list[AppliedMigration]:
    return [AppliedMigration(m.version, m.name, m.checksum, APPLIED_AT) for m in migrations]


class FakeCursor:
    def __init__(self, rows: list[Any] | None = None, rowcount: int = -1) -> None:
        self.rows = rows or []
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return list(self.rows)


class FakeConnection:
    """What the runner sees of a database: the recorded migrations, pg_partman's premake for
    events, the advisory lock; transactions roll all of it back on an exception. ``log``
    keeps every statement (BEGIN/COMMIT/ROLLBACK included) in order."""

    def __init__(
        self,
        facts: ServerFacts = FACTS,
        *,
        fail_on: str | None = None,
        lock_busy: bool = False,
        premake: int | None = None,
    ) -> None:
        self.facts = facts
        self.fail_on = fail_on
        self.lock_busy = lock_busy
        self.premake = premake
        self.records: list[tuple[int, str, str, datetime]] = []
        self.locked = False
        self.broken = False
        self.log: list[str] = []

    def execute(self, query: str, params: Any = None) -> FakeCursor:
        self.log.append(query)
        if query == migrate.LOCK_SQL:
            if self.lock_busy:
                raise psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")
            self.locked = True
        elif query == migrate.UNLOCK_SQL:
            self.locked = False
        elif query == migrate.FACTS_SQL:
            return FakeCursor([facts_row(self.facts)])
        elif query == migrate.APPLIED_SQL:
            return FakeCursor(sorted(self.records))
        elif query == migrate.RECORD_SQL:
            self.records.append((*params, APPLIED_AT))
        elif "part_config SET premake" in query:
            wanted = int(re.search(r"premake = ([0-9]+)", query)[1])  # type: ignore[index]
            if self.premake is not None and self.premake != wanted:
                self.premake = wanted
                return FakeCursor(rowcount=1)
            return FakeCursor(rowcount=0)
        elif "create_parent" in query:
            self.premake = self.facts.premake
        if self.fail_on is not None and self.fail_on in query:
            raise psycopg.errors.UndefinedFunction(f"function {self.fail_on}() does not exist")
        return FakeCursor()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        saved = (list(self.records), self.premake)
        self.log.append("BEGIN")
        try:
            yield
        except BaseException:
            self.records, self.premake = saved
            self.log.append("ROLLBACK")
            raise
        self.log.append("COMMIT")

    def migration_statements(self) -> list[str]:
        """The statements that came from migration files (all but the runner's own)."""
        own = {
            migrate.LOCK_SQL,
            migrate.UNLOCK_SQL,
            migrate.LOCK_TIMEOUT_SQL,
            migrate.RESET_LOCK_TIMEOUT_SQL,
            migrate.FACTS_SQL,
            migrate.APPLIED_SQL,
            migrate.RECORD_SQL,
            migrate.CREATE_TABLE_SQL,
            migrate.CITUS_SEQUENTIAL_SQL,
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
        }
        return [q for q in self.log if q not in own and "part_config SET premake" not in q]


# --- the files ----------------------------------------------------------------------------------


def test_the_package_ships_its_migrations_numbered_from_0001() -> None:
    migrations = load_migrations(package_files())

    assert [m.name for m in migrations] == PACKAGE_NAMES
    assert [m.version for m in migrations] == [1, 2, 3, 4]


#: The checksums that databases (the lab's among them) recorded when they applied these files.
APPLIED_CHECKSUMS = {
    "0001_events.sql": "b8c7a21d1df961bf711bbf939bafcf92f6b6e70f5575ed829125f77f781046ce",
    "0002_events_partitions.py": "3d4583e50add1b7fc61ae252fcba17237cdc0c09d312dbd1781f8b4baa9da128",
    "0003_api_keys.sql": "90ac4e4eb801dc468e2b321704ee1b39b07de2da4bc12b2cb14887e72beca58d",
    "0004_customers.sql": "960853834866957645da30921e7b967c7d66a459bc19541e63042ed399fe0429",
}


def test_shipped_migrations_keep_the_checksums_databases_recorded() -> None:
    # An edited file (0002's `from sluice.migrate import ...` included) makes `sluice migrate`
    # refuse every database that applied it: a schema change is a new migration.
    shipped = {m.name: m.checksum for m in load_migrations(package_files())}

    assert {name: shipped.get(name) for name in APPLIED_CHECKSUMS} == APPLIED_CHECKSUMS


def test_migrations_load_in_number_order_whatever_the_listing_order() -> None:
    files = {name: "SELECT 1;" for name in ["0003_c.sql", "0001_a.sql", "0002_b.py"]}
    files["__init__.py"] = '"""the package"""'

    assert [m.name for m in load_migrations(files)] == ["0001_a.sql", "0002_b.py", "0003_c.sql"]


@pytest.mark.parametrize("name", ["events.sql", "0005-add.sql", "05_add.sql", "0005_Add.sql"])
def test_a_file_not_named_like_a_migration_is_refused_by_name(name: str) -> None:
    with pytest.raises(MigrationError, match=re.escape(name)):
        load_migrations({"0001_a.sql": "SELECT 1;", name: "SELECT 1;"})


def test_two_migrations_with_one_number_are_refused() -> None:
    with pytest.raises(MigrationError, match=r"0002_b\.sql and 0002_a\.sql share the number 0002"):
        load_migrations({"0001_x.sql": "", "0002_a.sql": "", "0002_b.sql": ""})


def test_a_gap_in_the_numbers_is_a_missing_file() -> None:
    # What a wheel built without the .sql package data would ship.
    with pytest.raises(MigrationError, match="no migration 0001 before 0002_events_partitions"):
        load_migrations({"0002_events_partitions.py": "def sql(facts): return 'SELECT 1'"})


def test_the_checksum_ignores_line_endings_but_not_content() -> None:
    text = "CREATE TABLE t (x int);\nSELECT 1;\n"

    assert migrate.checksum(text) == migrate.checksum(text.replace("\n", "\r\n"))
    assert migrate.checksum(text) != migrate.checksum(text.replace("int", "bigint"))


def test_events_migration_keys_partitions_indexes_and_distributes_as_designed() -> None:
    events = package_files()["0001_events.sql"]

    assert "PRIMARY KEY (tenant_id, time, id)" in events
    assert "PARTITION BY RANGE (time)" in events
    assert "USING brin (time)" in events
    assert "(tenant_id, type, time)" in events
    assert "(tenant_id, subject, time)" in events
    assert "SELECT sluice.distribute_table('public.events', 'tenant_id');" in events


def test_customers_is_a_reference_table_keyed_by_tenant() -> None:
    customers = package_files()["0004_customers.sql"]

    assert "PRIMARY KEY (tenant_id, customer_id)" in customers
    assert "SELECT sluice.make_reference_table('public.customers');" in customers


def test_migrations_leave_privileges_to_the_default_privileges() -> None:
    # sluice_reader reads through ALTER DEFAULT PRIVILEGES FOR ROLE sluice_writer IN SCHEMA
    # public: a table elsewhere, or an owner or grant change, would escape it.
    for facts in (FACTS, replace(FACTS, partman_version="5.2.4")):
        for migration in load_migrations(package_files()):
            lines = migration.render(facts).splitlines()
            sql = "\n".join(line for line in lines if not line.lstrip().startswith("--"))
            for table in re.findall(r"CREATE TABLE\s+(\S+)", sql):
                assert table.startswith("public."), (migration.name, table)
            assert not re.search(r"\b(GRANT|REVOKE|OWNER TO|SET ROLE)\b", sql), migration.name


def test_api_keys_table_has_the_stored_key_columns() -> None:
    api_keys = package_files()["0003_api_keys.sql"]

    for column in ("key_id", "tenant", "secret_sha256", "created", "revoked_at"):
        assert re.search(rf"^\s+{column}\s", api_keys, re.MULTILINE), column


# --- history ------------------------------------------------------------------------------------


def test_pending_migrations_are_the_unapplied_ones_in_order() -> None:
    migrations = sql_migrations("0001_a.sql", "0002_b.sql", "0003_c.sql")

    assert plan(migrations, []) == migrations
    assert plan(migrations, applied(*migrations[:2])) == migrations[2:]
    assert plan(migrations, applied(*migrations)) == []


def test_an_applied_migration_whose_file_changed_is_refused_by_name() -> None:
    migrations = sql_migrations("0001_a.sql", "0002_b.sql")
    history = applied(*migrations)
    edited = [migrations[0], Migration(2, "0002_b.sql", "SELECT 2;")]

    with pytest.raises(MigrationError, match=r"migration 0002_b\.sql changed after it was applied"):
        plan(edited, history)


def test_a_database_migrated_by_a_newer_sluice_is_refused() -> None:
    migrations = sql_migrations("0001_a.sql", "0002_b.sql")
    newer = [*applied(*migrations), AppliedMigration(3, "0003_new.sql", "ab" * 32, APPLIED_AT)]

    with pytest.raises(MigrationError, match=r"0003_new\.sql .* which this Sluice does not ship"):
        plan(migrations, newer)


def test_a_migration_numbered_before_an_applied_one_is_refused() -> None:
    migrations = sql_migrations("0001_a.sql", "0002_late.sql", "0003_c.sql")
    history = applied(migrations[0], migrations[2])

    with pytest.raises(MigrationError, match=r"0002_late\.sql is not applied, but 0003_c\.sql"):
        plan(migrations, history)


# --- pg_partman ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "major"), [("4.7.2", 4), ("4.0.0", 4), ("5.2.4", 5)])
def test_partman_major_versions_sluice_supports(version: str, major: int) -> None:
    assert partman_major(version) == major


@pytest.mark.parametrize("version", [None, "3.2.1", "6.0.0", "devel"])
def test_other_partman_versions_are_refused_with_what_to_install(version: str | None) -> None:
    with pytest.raises(MigrationError, match="pg_partman"):
        partman_major(version)


def test_partman_4_is_asked_for_native_partitioning() -> None:
    sql = create_parent_sql(FACTS, parent="public.events", control="time", interval="1 day")

    assert "p_type => 'native'" in sql
    assert "p_default_table" not in sql  # not a parameter of pg_partman 4


def test_partman_5_gets_no_p_type_and_an_explicit_default_partition() -> None:
    facts = replace(FACTS, partman_version="5.2.4")
    sql = create_parent_sql(facts, parent="public.events", control="time", interval="1 day")

    assert "p_type" not in sql  # 'native' is an error in pg_partman 5
    assert "p_default_table => true" in sql


@pytest.mark.parametrize("version", ["4.7.2", "5.2.4"])
def test_create_parent_names_the_table_interval_premake_and_keeps_partitions_coming(
    version: str,
) -> None:
    facts = replace(FACTS, partman_version=version, partman_schema='part"man', premake=9)
    sql = create_parent_sql(facts, parent="public.events", control="time", interval="1 day")

    assert sql.startswith('SELECT "part""man".create_parent(')
    for argument in (
        "p_parent_table => 'public.events'",
        "p_control => 'time'",
        "p_interval => '1 day'",
        "p_premake => 9",
    ):
        assert argument in sql
    assert "SET infinite_time_partitions = true" in sql


@pytest.mark.parametrize(
    ("version", "wanted", "unwanted"),
    [("4.7.2", "p_type", "p_default_table"), ("5.0.1", "p_default_table", "p_type")],
)
def test_the_partition_migration_follows_the_installed_partman(
    version: str, wanted: str, unwanted: str
) -> None:
    partitions = load_migrations(package_files())[1]
    sql = partitions.render(replace(FACTS, partman_version=version, premake=7))

    assert "create_parent(p_parent_table => 'public.events'" in sql
    assert "p_premake => 7" in sql
    assert wanted in sql and unwanted not in sql


def test_a_python_migration_without_sql_function_is_refused() -> None:
    migration = Migration(1, "0001_nothing.py", "VALUE = 1\n")

    with pytest.raises(MigrationError, match=r"0001_nothing\.py defines no function sql"):
        migration.render(FACTS)


# --- the runner ---------------------------------------------------------------------------------


def test_a_fresh_database_gets_every_migration_each_in_its_own_transaction() -> None:
    conn = FakeConnection()

    report = migrate.migrate(conn)

    assert report.applied == tuple(PACKAGE_NAMES)
    assert [record[1] for record in conn.records] == PACKAGE_NAMES
    begins = [i for i, q in enumerate(conn.log) if q == "BEGIN"]
    # one transaction per migration (then one for the premake check): BEGIN, the Citus
    # setting, the migration, its record, COMMIT
    for index, name in zip(begins, PACKAGE_NAMES, strict=False):
        block = conn.log[index : index + 5]
        assert block[1] == migrate.CITUS_SEQUENTIAL_SQL
        assert block[3] == migrate.RECORD_SQL, name
        assert block[4] == "COMMIT"
    assert conn.log.index(migrate.LOCK_SQL) < conn.log.index(migrate.FACTS_SQL)
    assert conn.log[-1] == migrate.UNLOCK_SQL and not conn.locked


def test_a_second_run_applies_nothing_and_runs_no_migration_sql() -> None:
    conn = FakeConnection()
    migrate.migrate(conn)
    conn.log.clear()

    report = migrate.migrate(conn)

    assert report.applied == () and not report.changed
    assert report.summary() == "schema up to date: nothing to do"
    assert conn.migration_statements() == []
    assert len(conn.records) == len(PACKAGE_NAMES)


def test_a_failing_migration_is_rolled_back_unrecorded_and_named_and_later_ones_wait() -> None:
    conn = FakeConnection(fail_on="make_reference_table")
    migrations = load_migrations(package_files())
    migrations.append(Migration(5, "0005_after.sql", "SELECT 'after';"))

    with pytest.raises(
        MigrationError, match=r"migration 0004_customers\.sql failed and was rolled"
    ):
        migrate.migrate(conn, migrations=migrations)

    assert [record[1] for record in conn.records] == PACKAGE_NAMES[:3]
    assert "ROLLBACK" in conn.log
    assert "SELECT 'after';" not in conn.log
    assert not conn.locked

    conn.fail_on = None
    report = migrate.migrate(conn, migrations=migrations)

    assert report.applied == ("0004_customers.sql", "0005_after.sql")


def test_migrating_as_another_role_than_the_owner_is_refused_before_any_change() -> None:
    conn = FakeConnection(replace(FACTS, current_user="postgres"))

    with pytest.raises(MigrationError, match="runs as 'postgres', but database 'sluice' is owned"):
        migrate.migrate(conn)

    assert migrate.CREATE_TABLE_SQL not in conn.log
    assert conn.migration_statements() == []
    assert not conn.locked


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        (replace(FACTS, helpers_installed=False), r"sluice\.distribute_table"),
        (replace(FACTS, partman_version=None), "pg_partman is not installed"),
    ],
)
def test_a_server_without_what_the_migrations_call_is_refused(
    facts: ServerFacts, message: str
) -> None:
    conn = FakeConnection(facts)

    with pytest.raises(MigrationError, match=message):
        migrate.migrate(conn)

    assert conn.records == [] and not conn.locked


def test_a_run_behind_another_gives_up_at_the_lock_timeout_with_a_message() -> None:
    conn = FakeConnection(lock_busy=True)

    with pytest.raises(MigrationError, match="another sluice migrate has held the migration lock"):
        migrate.migrate(conn, lock_timeout=2)

    assert conn.log[0] == migrate.LOCK_TIMEOUT_SQL
    assert migrate.FACTS_SQL not in conn.log
    assert conn.log[-1] == migrate.RESET_LOCK_TIMEOUT_SQL


def test_the_lock_is_released_when_the_connection_survives_a_failure() -> None:
    conn = FakeConnection()
    edited = load_migrations(package_files())
    migrate.migrate(conn, migrations=edited)
    edited[0] = Migration(1, "0001_events.sql", edited[0].text + "-- edited\n")

    with pytest.raises(MigrationError, match=r"0001_events\.sql changed"):
        migrate.migrate(conn, migrations=edited)

    assert conn.log[-1] == migrate.UNLOCK_SQL and not conn.locked


def test_a_changed_premake_setting_reaches_partman_without_a_migration() -> None:
    conn = FakeConnection()
    migrate.migrate(conn, premake=7)
    conn.log.clear()

    report = migrate.migrate(conn, premake=10)

    assert report.premake_changed == ("public.events",) and report.applied == ()
    assert conn.premake == 10
    assert any("run_maintenance(p_parent_table => 'public.events')" in q for q in conn.log)
    assert report.summary() == "premake updated for public.events"

    conn.log.clear()
    assert not migrate.migrate(conn, premake=10).changed
    assert not any("run_maintenance" in q for q in conn.log)


@pytest.mark.parametrize("premake", [0, -1, True, "7"])
def test_premake_must_be_a_positive_whole_number(premake: Any) -> None:
    with pytest.raises(MigrationError, match="premake must be a whole number"):
        migrate.migrate(FakeConnection(), premake=premake)
