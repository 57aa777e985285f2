"""The SQL the postgresql and citus roles issue (sluice_infra.citus_sql): quoting, node
registration that adds only what is missing, extension updates, the app's helper functions."""

from __future__ import annotations

import re

import pytest

from sluice_infra import citus_sql
from sluice_infra.citus_sql import (
    DIST_NODE_QUERY,
    SqlError,
    add_node,
    add_node_statements,
    coordinator_statement,
    create_extension,
    extension_update_needed,
    extension_versions_query,
    finish_upgrade,
    helper_functions_sql,
    helpers_current,
    helpers_fingerprint,
    helpers_query,
    nodes_to_add,
    quote_ident,
    quote_literal,
    set_coordinator_host,
    unexpected_nodes,
    update_extension,
)

#: pg_dist_node of the seed layout once set up: the coordinator (group 0) and two workers on db.
SEED_ROWS = [
    {"nodename": "10.77.0.10", "nodeport": 5432, "groupid": 0, "noderole": "primary"},
    {"nodename": "10.77.0.10", "nodeport": 5433, "groupid": 1, "noderole": "primary"},
    {"nodename": "10.77.0.10", "nodeport": 5434, "groupid": 2, "noderole": "primary"},
]
SEED_WORKERS = [("10.77.0.10", 5433), ("10.77.0.10", 5434)]


# --- quoting ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("10.77.0.10", "'10.77.0.10'"),
        ("", "''"),
        ("it's", "'it''s'"),
        ("'); DROP TABLE events; --", "'''); DROP TABLE events; --'"),
        ("a\\b", "E'a\\\\b'"),
        ("\\'", "E'\\\\'''"),
        ("zażółć", "'zażółć'"),
    ],
)
def test_literals_are_quoted_as_postgresql_quotes_them(value, literal):
    assert quote_literal(value) == literal


@pytest.mark.parametrize(
    ("name", "identifier"),
    [
        ("citus", "citus"),
        ("pg_partman", "pg_partman"),
        ("_x1", "_x1"),
        ("Sluice", '"Sluice"'),
        ("select", '"select"'),
        ("user", '"user"'),
        ("table", '"table"'),
        ("a$b", '"a$b"'),
        ("1abc", '"1abc"'),
        ("with space", '"with space"'),
        ('dq"inside', '"dq""inside"'),
        ("über", '"über"'),
    ],
)
def test_identifiers_are_quoted_as_postgresql_quotes_them(name, identifier):
    assert quote_ident(name) == identifier


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("nul\x00byte", "NUL character"),
        (5432, "must be text"),
        (None, "must be text"),
    ],
)
def test_values_that_cannot_be_quoted_are_refused(value, words):
    for quote in (quote_literal, quote_ident):
        with pytest.raises(SqlError, match=words):
            quote(value)


def test_identifiers_postgresql_would_truncate_or_cannot_hold_are_refused():
    assert quote_ident("a" * 63) == "a" * 63
    with pytest.raises(SqlError, match="longer than 63 bytes"):
        quote_ident("a" * 64)
    with pytest.raises(SqlError, match="longer than 63 bytes"):
        quote_ident("ż" * 32)  # 64 bytes in UTF-8
    with pytest.raises(SqlError, match="cannot be empty"):
        quote_ident("")


# --- extensions ---------------------------------------------------------------------------------


def test_extensions_are_created_once_and_in_their_schema():
    assert create_extension() == "CREATE EXTENSION IF NOT EXISTS citus"
    assert create_extension("pg_stat_statements") == (
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
    )
    assert create_extension("pg_partman", "partman") == (
        "CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman"
    )
    assert (
        create_extension("x; DROP", "Odd")
        == 'CREATE EXTENSION IF NOT EXISTS "x; DROP" SCHEMA "Odd"'
    )


def test_the_extension_update_after_a_package_upgrade():
    assert update_extension() == "ALTER EXTENSION citus UPDATE"
    assert finish_upgrade() == "CALL pg_catalog.citus_finish_citus_upgrade()"
    assert "WHERE e.extname = 'citus'" in extension_versions_query()
    assert "WHERE e.extname = 'it''s'" in extension_versions_query("it's")


@pytest.mark.parametrize(
    ("rows", "needed"),
    [
        ([{"installed": "13.0-1", "available": "13.1-1"}], True),
        ([{"installed": "13.1-1", "available": "13.1-1"}], False),
        ([], False),  # not installed: CREATE EXTENSION's business
    ],
)
def test_the_extension_is_updated_only_when_the_package_is_newer(rows, needed):
    assert extension_update_needed(rows) is needed


# --- the coordinator and the workers ------------------------------------------------------------


def test_the_coordinator_is_set_by_address_and_port():
    assert set_coordinator_host("10.77.0.10", 5432) == (
        "SELECT pg_catalog.citus_set_coordinator_host('10.77.0.10', 5432)"
    )
    assert set_coordinator_host("x'); --", "5432").endswith("('x''); --', 5432)")


@pytest.mark.parametrize("port", [0, 65536, "54a", True, 5432.5, None])
def test_a_port_that_is_not_one_is_refused(port):
    with pytest.raises(SqlError, match="is not a port number"):
        set_coordinator_host("10.77.0.10", port)
    with pytest.raises(SqlError, match="is not a port number"):
        add_node("10.77.0.10", port)


def test_the_coordinator_is_set_only_when_pg_dist_node_does_not_name_it():
    assert coordinator_statement("10.77.0.10", 5432, SEED_ROWS) is None
    assert coordinator_statement("10.77.0.10", 5432, []) == set_coordinator_host("10.77.0.10", 5432)
    moved = coordinator_statement("10.77.0.10", 6432, SEED_ROWS)
    assert moved == set_coordinator_host("10.77.0.10", 6432)
    # a worker at the coordinator's address and port is not the coordinator
    assert coordinator_statement("10.77.0.10", 5433, SEED_ROWS) is not None


def test_only_the_workers_pg_dist_node_lacks_are_added():
    rows = SEED_ROWS[:2]  # the coordinator and worker1 only

    assert nodes_to_add(SEED_WORKERS, rows) == [("10.77.0.10", 5434)]
    assert add_node_statements(SEED_WORKERS, rows) == [
        "SELECT pg_catalog.citus_add_node('10.77.0.10', 5434)"
    ]


def test_a_complete_cluster_adds_nothing():
    assert add_node_statements(SEED_WORKERS, SEED_ROWS) == []


def test_a_new_cluster_adds_every_worker_in_order_once():
    wanted = [("10.77.0.11", 5432), ("10.77.0.12", "5432"), ("10.77.0.11", 5432)]

    assert add_node_statements(wanted, []) == [
        "SELECT pg_catalog.citus_add_node('10.77.0.11', 5432)",
        "SELECT pg_catalog.citus_add_node('10.77.0.12', 5432)",
    ]


def test_nodes_compare_as_addresses_and_rows_may_be_tuples():
    rows = [("2001:db8::11", 5432, 1, "primary"), ("Worker.Example.", "5432", 2, "primary")]

    assert nodes_to_add([("2001:DB8:0::11", 5432), ("worker.example", 5432)], rows) == []
    assert nodes_to_add([("2001:db8::11", 5433)], rows) == [("2001:db8::11", 5433)]


def test_nodes_the_inventory_does_not_know_are_reported_not_removed():
    rows = [*SEED_ROWS, {"nodename": "10.77.0.99", "nodeport": 5432, "groupid": 3}]

    assert unexpected_nodes(SEED_WORKERS, ("10.77.0.10", 5432), rows) == [("10.77.0.99", 5432)]
    assert unexpected_nodes(SEED_WORKERS, ("10.77.0.10", 5432), SEED_ROWS) == []


def test_the_node_query_reads_what_the_comparisons_need():
    assert DIST_NODE_QUERY.startswith("SELECT nodename, nodeport, groupid, noderole FROM")
    assert "pg_catalog.pg_dist_node" in DIST_NODE_QUERY


# --- helper functions the app calls -------------------------------------------------------------

_SIGNATURE = re.compile(r"CREATE OR REPLACE FUNCTION (\S+)\(([^)]*)\)\s+RETURNS (\w+)", re.S)


def signatures(sql: str) -> list[tuple[str, str, str]]:
    return [(name, " ".join(args.split()), ret) for name, args, ret in _SIGNATURE.findall(sql)]


def function(sql: str, name: str) -> str:
    """The text of function ``name``'s definition in ``sql``."""
    start = sql.index(f"CREATE OR REPLACE FUNCTION sluice.{name}(")
    end = sql.index("$sluice$;", start)
    return sql[start:end]


def test_both_modes_define_the_same_functions_so_the_app_has_one_code_path():
    on, off = signatures(helper_functions_sql(True)), signatures(helper_functions_sql(False))

    assert on == off
    assert [name for name, _, _ in on] == [
        "sluice.citus_enabled",
        "sluice.distribute_table",
        "sluice.make_reference_table",
    ]
    assert on[1] == (
        "sluice.distribute_table",
        "rel regclass, dist_column text, colocate text DEFAULT 'default'",
        "boolean",
    )


def test_with_citus_a_table_is_distributed_only_if_it_is_not_yet():
    body = function(helper_functions_sql(True), "distribute_table")

    check = body.index("FROM pg_catalog.pg_dist_partition WHERE logicalrelid = rel")
    early = body.index("IF FOUND AND method = 'h' THEN\n        RETURN false;")
    create = body.index("PERFORM pg_catalog.create_distributed_table(rel, dist_column")
    assert check < early < create
    assert "colocate_with => colocate" in body
    assert "SET search_path = pg_catalog, pg_temp" in body


def test_with_citus_a_reference_table_is_made_only_if_it_is_not_one_yet():
    body = function(helper_functions_sql(True), "make_reference_table")

    check = body.index("FROM pg_catalog.pg_dist_partition WHERE logicalrelid = rel")
    early = body.index("IF FOUND AND method = 'n' AND model = 't' THEN\n        RETURN false;")
    create = body.index("PERFORM pg_catalog.create_reference_table(rel);")
    assert check < early < create


def test_without_citus_the_helpers_change_nothing_and_need_no_citus():
    sql = helper_functions_sql(False)

    for name in ("pg_dist_partition", "create_distributed_table", "create_reference_table"):
        assert name not in sql
    assert "SELECT false" in function(sql, "citus_enabled")
    assert "SELECT true" in function(helper_functions_sql(True), "citus_enabled")
    assert "RETURN false;" in function(sql, "make_reference_table")
    distribute = function(sql, "distribute_table")
    assert "RAISE EXCEPTION 'column % of table % does not exist'" in distribute
    assert distribute.index("RAISE EXCEPTION") < distribute.index("RETURN false;")


@pytest.mark.parametrize("enabled", [True, False])
def test_the_script_creates_the_schema_grants_it_and_records_its_fingerprint(enabled):
    sql = helper_functions_sql(enabled)

    assert sql.startswith("CREATE SCHEMA IF NOT EXISTS sluice;\n")
    assert "GRANT USAGE ON SCHEMA sluice TO sluice_writer;\n" in sql
    assert sql.endswith(f"COMMENT ON SCHEMA sluice IS '{helpers_fingerprint(enabled)}';\n")


def test_the_schema_and_grantees_are_quoted():
    sql = helper_functions_sql(True, schema="App Helpers", grant_to=["writer", "Migrator"])

    assert 'CREATE OR REPLACE FUNCTION "App Helpers".distribute_table(' in sql
    assert 'GRANT USAGE ON SCHEMA "App Helpers" TO "Migrator";' in sql


def test_the_helpers_are_reinstalled_only_when_they_differ():
    installed = [{"fingerprint": helpers_fingerprint(False)}]

    assert helpers_current(installed, False) is True
    assert helpers_current(installed, True) is False  # Citus switched on: replace the no-ops
    assert helpers_current([], False) is False  # no schema yet
    assert helpers_current([{"fingerprint": None}], False) is False
    assert helpers_fingerprint(True) != helpers_fingerprint(False)
    assert helpers_fingerprint(True, grant_to=["other"]) != helpers_fingerprint(True)
    assert "WHERE nspname = 'sluice'" in helpers_query()


def test_the_dollar_quote_tag_never_appears_inside_a_body():
    for enabled in (True, False):
        sql = helper_functions_sql(enabled)
        assert sql.count("$sluice$") == 2 * len(signatures(sql))


def test_the_keywords_cover_the_reserved_words():
    assert {"select", "user", "table", "order", "group", "limit", "all"} <= citus_sql.KEYWORDS
