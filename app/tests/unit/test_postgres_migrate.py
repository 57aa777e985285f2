"""``sluice migrate`` against a real PostgreSQL 15 with pg_partman (:mod:`pg_server`): every
statement of the runner and every migration, run as the writer role on a database prepared
with the postgresql role's grants, as on the nodes."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from pg_server import (
    READER,
    SUPERUSER,
    WRITER,
    PgServer,
    role_extensions,
    role_partman_bgw_role,
)

from sluice import cli
from sluice.storage import migrate
from sluice.storage.migrate import (
    LOCK_KEY,
    Migration,
    MigrationError,
    ServerFacts,
    load_migrations,
    package_files,
    partman_major,
    read_facts,
)

pytestmark = pytest.mark.postgres

PACKAGE = load_migrations(package_files())
TABLES = ("events", "api_keys", "customers", "sluice_schema_migrations")
_BOUND = re.compile(r"FOR VALUES FROM \('([^']+)'\) TO \('([^']+)'\)")


@pytest.fixture
def writer(pg_server: PgServer, pg_database: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection as sluice_writer, what ``sluice migrate`` opens."""
    with pg_server.connect(pg_database, WRITER) as conn:
        yield conn


@pytest.fixture
def admin(pg_server: PgServer, pg_database: str) -> Iterator[psycopg.Connection[Any]]:
    with pg_server.connect(pg_database) as conn:
        yield conn


def with_files(changes: dict[str, str]) -> list[Migration]:
    """The package's migrations with files changed or added, by file name."""
    return load_migrations({**package_files(), **changes})


def records(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT version, name, checksum, applied_at FROM public.sluice_schema_migrations "
        "ORDER BY version"
    ).fetchall()


def table_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def schema_snapshot(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """What a migration run could change: relations, columns, partitions, records, partman."""
    return {
        "relations": conn.execute(
            "SELECT n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner), c.relacl::text "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('public', 'partman', 'sluice') ORDER BY 1, 2"
        ).fetchall(),
        "columns": conn.execute(
            "SELECT table_name, column_name, data_type, column_default, is_nullable "
            "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"
        ).fetchall(),
        "records": records(conn),
        "part_config": conn.execute("SELECT * FROM partman.part_config").fetchall(),
    }


def partitions(conn: psycopg.Connection[Any]) -> dict[str, tuple[datetime, datetime] | None]:
    """The partitions of public.events by name: their [from, to) range, None for the default."""
    found: dict[str, tuple[datetime, datetime] | None] = {}
    for name, bound in conn.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'public.events'::regclass"
    ):
        match = _BOUND.fullmatch(bound)
        if bound == "DEFAULT":
            found[name] = None
        else:
            assert match, bound
            found[name] = (_timestamp(match[1]), _timestamp(match[2]))
    return found


def _timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text if len(text) > 22 else text + ":00")


def daily_ranges(today: datetime, behind: int, ahead: int) -> set[tuple[datetime, datetime]]:
    return {
        (today + timedelta(days=day), today + timedelta(days=day + 1))
        for day in range(-behind, ahead + 1)
    }


def server_today(conn: psycopg.Connection[Any]) -> datetime:
    """Midnight of the server's day (its TimeZone is UTC), where pg_partman counts from."""
    midnight = conn.execute("SELECT date_trunc('day', now())").fetchone()[0]
    assert isinstance(midnight, datetime)
    return midnight.astimezone(UTC)


# --- the whole run ----------------------------------------------------------------------------


def test_sluice_migrate_applies_every_migration_then_nothing(
    pg_server: PgServer, pg_database: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    for name, value in pg_server.sluice_environment(pg_database).items():
        monkeypatch.setenv(name, value)

    assert cli.main(["migrate"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [*(f"applied {m.name}" for m in PACKAGE), json.dumps({"changed": True})]

    with pg_server.connect(pg_database) as conn:
        assert [(v, n, c) for v, n, c, _ in records(conn)] == [
            (m.version, m.name, m.checksum) for m in PACKAGE
        ]
        owners = dict(
            conn.execute(
                "SELECT relname, pg_get_userbyid(relowner) FROM pg_class "
                "WHERE relnamespace = 'public'::regnamespace AND relname = ANY(%s)",
                (list(TABLES),),
            ).fetchall()
        )
        assert owners == dict.fromkeys(TABLES, WRITER)
        before = schema_snapshot(conn)

    assert cli.main(["migrate"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["schema up to date: nothing to do", json.dumps({"changed": False})]
    with pg_server.connect(pg_database) as conn:
        assert schema_snapshot(conn) == before


def test_sluice_migrate_names_the_problem_and_exits_2_when_it_cannot_migrate(
    pg_server: PgServer, pg_database: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    for name, value in pg_server.sluice_environment(pg_database).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLUICE_POSTGRES_WRITER_USER", READER)

    assert cli.main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert "sluice migrate: sluice migrate runs as 'sluice_reader'" in err
    assert f"connect as '{WRITER}'" in err


def test_the_tables_have_the_columns_keys_and_checks_the_store_relies_on(
    writer: psycopg.Connection[Any],
) -> None:
    migrate.migrate(writer)
    keys = dict(
        writer.execute(
            "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE contype = 'p' AND conrelid = ANY(%s::regclass[])",
            (["public.events", "public.api_keys", "public.customers"],),
        ).fetchall()
    )
    assert keys == {
        "events": 'PRIMARY KEY (tenant_id, "time", id)',
        "api_keys": "PRIMARY KEY (key_id)",
        "customers": "PRIMARY KEY (tenant_id, customer_id)",
    }
    with pytest.raises(psycopg.errors.CheckViolation, match="events_one_payload"):
        writer.execute(
            "INSERT INTO public.events (tenant_id, id, source, type, time, data, data_base64) "
            "VALUES ('acme', '1', '/s', 't', now(), '{}', 'AA==')"
        )
    with pytest.raises(psycopg.errors.CheckViolation, match="events_extensions_object"):
        writer.execute(
            "INSERT INTO public.events (tenant_id, id, source, type, time, extensions) "
            "VALUES ('acme', '1', '/s', 't', now(), '[]')"
        )
    with pytest.raises(psycopg.errors.CheckViolation, match="api_keys_key_id_check"):
        writer.execute(
            "INSERT INTO public.api_keys (key_id, tenant, secret_sha256) "
            "VALUES ('NOT-HEX', 'acme', repeat('a', 64))"
        )
    with pytest.raises(psycopg.errors.CheckViolation, match="api_keys_secret_sha256_check"):
        writer.execute(
            "INSERT INTO public.api_keys (key_id, tenant, secret_sha256) "
            "VALUES ('ab12', 'acme', 'short')"
        )
    with pytest.raises(psycopg.errors.CheckViolation, match="customers_attributes_check"):
        writer.execute(
            "INSERT INTO public.customers (tenant_id, customer_id, attributes) "
            "VALUES ('acme', 'c1', '[]')"
        )
    indexes = {
        row[0]
        for row in writer.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'events'"
        )
    }
    assert {"events_time_brin", "events_tenant_type_time", "events_tenant_subject_time"} <= indexes


# --- history --------------------------------------------------------------------------------


def test_an_applied_migration_that_changed_is_refused_and_nothing_runs(
    writer: psycopg.Connection[Any],
) -> None:
    migrate.migrate(writer)
    before = schema_snapshot(writer)
    edited = package_files()["0003_api_keys.sql"] + "\nALTER TABLE public.api_keys ADD x int;\n"
    extra = "CREATE TABLE public.after_the_edit (x int);\n"

    with pytest.raises(MigrationError) as refused:
        migrate.migrate(
            writer, migrations=with_files({"0003_api_keys.sql": edited, "0005_later.sql": extra})
        )

    message = str(refused.value)
    assert "migration 0003_api_keys.sql changed after it was applied" in message
    assert PACKAGE[2].checksum[:12] in message
    assert schema_snapshot(writer) == before


def test_a_database_a_newer_sluice_migrated_is_refused(writer: psycopg.Connection[Any]) -> None:
    migrate.migrate(writer)
    before = schema_snapshot(writer)

    with pytest.raises(
        MigrationError, match=r"has migration 0004_customers\.sql .* a newer Sluice"
    ):
        migrate.migrate(writer, migrations=PACKAGE[:3])
    assert schema_snapshot(writer) == before


def test_a_new_migration_runs_once_and_the_reader_may_read_its_table(
    pg_server: PgServer, pg_database: str, writer: psycopg.Connection[Any]
) -> None:
    migrate.migrate(writer)
    extra = "CREATE TABLE public.notes (id int PRIMARY KEY, body text);\n"
    migrations = with_files({"0005_notes.sql": extra})

    report = migrate.migrate(writer, migrations=migrations)
    assert report.applied == ("0005_notes.sql",)
    assert records(writer)[-1][:3] == (5, "0005_notes.sql", migrations[-1].checksum)
    assert migrate.migrate(writer, migrations=migrations).changed is False

    writer.execute("INSERT INTO public.notes VALUES (1, 'written by the writer')")
    with pg_server.connect(pg_database, READER) as reader:
        # the role's default privileges: no GRANT in the migration
        assert reader.execute("SELECT body FROM public.notes").fetchall() == [
            ("written by the writer",)
        ]


def test_a_failing_migration_leaves_nothing_and_the_next_run_applies_it(
    writer: psycopg.Connection[Any],
) -> None:
    migrate.migrate(writer)
    broken = "CREATE TABLE public.half_done (x int);\nSELECT 1 / 0;\n"
    fixed = "CREATE TABLE public.half_done (x int);\n"

    with pytest.raises(MigrationError) as failed:
        migrate.migrate(writer, migrations=with_files({"0005_half_done.sql": broken}))
    assert "migration 0005_half_done.sql failed and was rolled back" in str(failed.value)
    assert "division by zero" in str(failed.value)
    assert not table_exists(writer, "public.half_done")
    assert [r[0] for r in records(writer)] == [1, 2, 3, 4]
    # the lock went with the run
    assert writer.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]
    writer.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))

    report = migrate.migrate(writer, migrations=with_files({"0005_half_done.sql": fixed}))
    assert report.applied == ("0005_half_done.sql",)
    assert table_exists(writer, "public.half_done")


def test_a_migration_that_fails_halfway_on_a_fresh_database_keeps_the_ones_before(
    writer: psycopg.Connection[Any],
) -> None:
    broken = package_files()["0004_customers.sql"].replace("text", "no_such_type", 1)

    with pytest.raises(
        MigrationError, match=r'0004_customers\.sql failed .*"no_such_type" does not'
    ):
        migrate.migrate(writer, migrations=with_files({"0004_customers.sql": broken}))

    assert [r[1] for r in records(writer)] == [m.name for m in PACKAGE[:3]]
    assert not table_exists(writer, "public.customers")
    assert migrate.migrate(writer).applied == ("0004_customers.sql",)


# --- the server's facts -----------------------------------------------------------------------


def test_the_facts_are_read_from_the_catalog(
    pg_database: str, writer: psycopg.Connection[Any]
) -> None:
    installed = writer.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'pg_partman'"
    ).fetchone()[0]
    schema = next(e["schema"] for e in role_extensions() if e["name"] == "pg_partman")

    assert read_facts(writer, 9) == ServerFacts(
        database=pg_database,
        current_user=WRITER,
        database_owner=WRITER,
        partman_version=installed,
        partman_schema=schema,
        helpers_installed=True,
        premake=9,
    )
    assert partman_major(installed) in migrate.SUPPORTED_PARTMAN_MAJORS


def test_a_role_other_than_the_owner_is_refused_before_anything_changes(
    pg_server: PgServer, pg_database: str
) -> None:
    for role in (SUPERUSER, READER):
        with pg_server.connect(pg_database, role) as conn:
            with pytest.raises(MigrationError, match=f"runs as '{role}', but .* owned by"):
                migrate.migrate(conn)
            assert not table_exists(conn, "public.sluice_schema_migrations")


def test_a_database_without_pg_partman_is_refused(
    admin: psycopg.Connection[Any], writer: psycopg.Connection[Any]
) -> None:
    admin.execute("DROP EXTENSION pg_partman")

    with pytest.raises(MigrationError, match="pg_partman is not installed in this database"):
        migrate.migrate(writer)
    assert not table_exists(writer, "public.events")


@pytest.mark.parametrize(
    "remove",
    [
        "REVOKE USAGE ON SCHEMA sluice FROM sluice_writer",
        "DROP FUNCTION sluice.make_reference_table(regclass)",
        "DROP SCHEMA sluice CASCADE",
    ],
)
def test_missing_helper_functions_are_refused(
    remove: str, admin: psycopg.Connection[Any], writer: psycopg.Connection[Any]
) -> None:
    admin.execute(remove)

    with pytest.raises(MigrationError, match="lacks the helper functions"):
        migrate.migrate(writer)
    assert not table_exists(writer, "public.events")


# --- the lock ---------------------------------------------------------------------------------


def test_a_run_waits_for_the_lock_at_most_its_timeout(
    pg_server: PgServer, pg_database: str, writer: psycopg.Connection[Any]
) -> None:
    with pg_server.connect(pg_database, WRITER) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        started = time.monotonic()

        with pytest.raises(MigrationError, match="another sluice migrate has held the migration"):
            migrate.migrate(writer, lock_timeout=0.3)

        assert 0.25 <= time.monotonic() - started < 5
        assert writer.execute("SHOW lock_timeout").fetchone()[0] == "0"
        assert not table_exists(writer, "public.sluice_schema_migrations")

        # released while a run waits: that run goes ahead
        release = threading.Timer(
            0.3, lambda: other.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        )
        release.start()
        try:
            report = migrate.migrate(writer, lock_timeout=30)
        finally:
            release.join()
    assert report.applied == tuple(m.name for m in PACKAGE)


def test_two_runs_at_once_migrate_once(pg_server: PgServer, pg_database: str) -> None:
    start = threading.Barrier(2)
    reports: list[migrate.MigrationReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            reports.append(migrate.run(pg_server.conninfo(pg_database, WRITER)))
        except BaseException as error:  # handed to the test thread
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert sorted(len(report.applied) for report in reports) == [0, len(PACKAGE)]
    with pg_server.connect(pg_database) as conn:
        assert len(records(conn)) == len(PACKAGE)
        # both sessions are gone and so is the lock
        assert conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]


# --- pg_partman -------------------------------------------------------------------------------


def test_events_get_daily_partitions_premake_days_around_today_and_a_default(
    writer: psycopg.Connection[Any],
) -> None:
    facts = read_facts(writer, 7)
    migrate.migrate(writer, premake=7)

    config = writer.execute(
        "SELECT control, partition_interval, partition_type, premake, infinite_time_partitions "
        "FROM partman.part_config WHERE parent_table = 'public.events'"
    ).fetchone()
    # pg_partman 4 is told p_type 'native'; pg_partman 5 partitions natively by range
    kind = {4: "native", 5: "range"}[partman_major(facts.partman_version)]
    assert config == ("time", "1 day", kind, 7, True)
    found = partitions(writer)
    assert found.pop("events_default") is None
    assert set(found.values()) == daily_ranges(server_today(writer), 7, 7)
    assert writer.execute(
        "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'public.events'::regclass"
    ).fetchone() == ("r",)


def test_a_changed_premake_is_kept_without_a_migration(writer: psycopg.Connection[Any]) -> None:
    migrate.migrate(writer, premake=3)
    today = server_today(writer)
    assert set(partitions(writer).values()) - {None} == daily_ranges(today, 3, 3)

    raised = migrate.migrate(writer, premake=6)
    assert raised.applied == ()
    assert raised.premake_changed == ("public.events",)
    assert raised.summary() == "premake updated for public.events"
    # made now by run_maintenance, as the writer, not at the background worker's next hour
    # (maintenance counts premake from now, not from midnight: a day more past 00:00)
    made = set(partitions(writer).values()) - {None}
    assert daily_ranges(today, 3, 6) <= made <= daily_ranges(today, 3, 7)

    assert migrate.migrate(writer, premake=6).changed is False
    lowered = migrate.migrate(writer, premake=2)
    assert lowered.premake_changed == ("public.events",)
    # nothing is dropped: premake is how far ahead, not retention
    assert set(partitions(writer).values()) - {None} == made
    assert writer.execute(
        "SELECT premake FROM partman.part_config WHERE parent_table = 'public.events'"
    ).fetchone() == (2,)


def test_partitions_the_background_worker_makes_stay_the_writers(
    pg_server: PgServer, pg_database: str, writer: psycopg.Connection[Any]
) -> None:
    """On the nodes pg_partman_bgw runs run_maintenance hourly as the role the postgresql role
    configures (postgres). Its partitions must still belong to the owner of public.events with
    the reader's grant, or the next migration that alters the table fails ("must be owner of
    table events_p...")."""
    migrate.migrate(writer, premake=2)
    with pg_server.connect(pg_database) as postgres:
        postgres.execute(
            "UPDATE partman.part_config SET premake = 4 WHERE parent_table = 'public.events'"
        )
    with pg_server.connect(pg_database, role_partman_bgw_role()) as worker:
        worker.execute("SELECT partman.run_maintenance(p_analyze := false)")
    made = writer.execute(
        "SELECT c.relname, pg_get_userbyid(c.relowner), "
        "has_table_privilege(%s, c.oid, 'SELECT') FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'public.events'::regclass",
        (READER,),
    ).fetchall()
    assert len(made) > 2 + 1 + 2 + 1  # the worker's maintenance made some
    assert {(owner, readable) for _, owner, readable in made} == {(WRITER, True)}

    extra = "ALTER TABLE public.events ADD COLUMN trace_id text;\n"
    report = migrate.migrate(writer, migrations=with_files({"0005_trace_id.sql": extra}))
    assert report.applied == ("0005_trace_id.sql",)
