"""The SQL the roles ``postgresql`` and ``citus`` issue, as text: pure functions, tested here,
run by the roles through psql / community.postgresql (no driver in this module).

Every value goes through :func:`quote_literal` or :func:`quote_ident` (PostgreSQL's own rules),
every port through a range check, so inventory data cannot change a statement's meaning.

Citus (``citus_enabled: true``), on the ``sluice`` database of every node:

1. :func:`create_extension` ``citus`` on the coordinator and every worker;
2. :func:`coordinator_statement` on the coordinator, when pg_dist_node does not already name it;
3. :func:`add_node_statements` on the coordinator: ``citus_add_node`` for the workers
   pg_dist_node (read with :data:`DIST_NODE_QUERY`) does not list yet, nothing else;
4. :func:`helper_functions_sql` on the coordinator, when :func:`helpers_current` says the
   installed helpers differ;
5. after a package upgrade: :func:`update_extension` on every node where
   :func:`extension_update_needed` says so, then :func:`finish_upgrade` on the coordinator.

Without Citus only step 4 runs, and installs the same helper functions as no-ops, so the app's
migrations call ``sluice.distribute_table(...)`` and ``sluice.make_reference_table(...)`` on
plain PostgreSQL too: one code path.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PORT_MAX = 65535
#: PostgreSQL truncates identifiers beyond this many bytes (NAMEDATALEN - 1).
IDENTIFIER_MAX_BYTES = 63
#: The schema of the helper functions the app calls.
HELPER_SCHEMA = "sluice"
#: Roles that get USAGE on the helper schema (the app's migrations run as the writer).
HELPER_GRANTEES = ("sluice_writer",)

_PLAIN_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
#: Keywords quote_ident() quotes: PostgreSQL's reserved, type/function-name and column-name
#: keywords (quoting a word needlessly is harmless; leaving a keyword bare is not).
_KEYWORD_LIST = """
    all analyse analyze and any array as asc asymmetric authorization between bigint binary
    bit boolean both case cast char character check coalesce collate collation column
    concurrently constraint create cross current_catalog current_date current_role
    current_schema current_time current_timestamp current_user dec decimal default deferrable
    desc distinct do else end except exists extract false fetch float for foreign freeze from
    full grant greatest group grouping having ilike in initially inner inout int integer
    intersect interval into is isnull join json json_array json_arrayagg json_exists
    json_object json_objectagg json_query json_scalar json_serialize json_table json_value
    lateral leading least left like limit localtime localtimestamp merge_action national nchar
    natural none normalize not notnull null nullif numeric offset on only or order out outer
    overlaps overlay placing position precision primary real references returning right row
    select session_user setof similar smallint some substring symmetric system_user table
    tablesample then time timestamp to trailing treat trim true union unique user using values
    varchar variadic verbose when where window with xmlattributes xmlconcat xmlelement
    xmlexists xmlforest xmlnamespaces xmlparse xmlpi xmlroot xmlserialize xmltable
"""
KEYWORDS = frozenset(_KEYWORD_LIST.split())

#: Every node of the Citus cluster as the coordinator knows it.
DIST_NODE_QUERY = (
    "SELECT nodename, nodeport, groupid, noderole FROM pg_catalog.pg_dist_node ORDER BY nodeid"
)


class SqlError(ValueError):
    """A value cannot be put into SQL safely; the message says which and why."""


# --- quoting ----------------------------------------------------------------------------------


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise SqlError(f"{what} must be text, not {value!r}")
    if "\x00" in value:
        raise SqlError(f"{what} {value!r} contains a NUL character, which PostgreSQL refuses")
    return value


def quote_literal(value: str) -> str:
    """``value`` as an SQL string literal, as PostgreSQL's quote_literal() writes it: single
    quotes doubled; with a backslash, an E'' literal with backslashes doubled (correct
    whatever standard_conforming_strings says)."""
    text = _text(value, "a literal").replace("'", "''")
    if "\\" in text:
        return "E'" + text.replace("\\", "\\\\") + "'"
    return "'" + text + "'"


def quote_ident(name: str) -> str:
    """``name`` as an SQL identifier, as PostgreSQL's quote_ident() writes it: bare when it is
    lower case letters, digits and _ and not a keyword; else in double quotes, inner
    double quotes doubled. Empty names and names PostgreSQL would truncate are refused."""
    text = _text(name, "an identifier")
    if not text:
        raise SqlError("an identifier cannot be empty")
    if len(text.encode()) > IDENTIFIER_MAX_BYTES:
        raise SqlError(
            f"identifier {text!r} is longer than {IDENTIFIER_MAX_BYTES} bytes: PostgreSQL would "
            f"truncate it; shorten it"
        )
    if _PLAIN_IDENTIFIER.match(text) and text not in KEYWORDS:
        return text
    return '"' + text.replace('"', '""') + '"'


def _port(port: Any) -> int:
    if isinstance(port, bool) or not isinstance(port, int | str):
        raise SqlError(f"port {port!r} is not a port number (1-{PORT_MAX})")
    text = str(port).strip()
    if not text.isdigit() or not 1 <= int(text) <= PORT_MAX:
        raise SqlError(f"port {port!r} is not a port number (1-{PORT_MAX})")
    return int(text)


def _node_key(name: Any) -> str:
    """A node name compared as PostgreSQL's peers would: addresses canonical
    (``2001:DB8::1`` equals ``2001:db8::1``), DNS names case-insensitive."""
    text = str(name).strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text.rstrip(".").lower()


# --- extensions -------------------------------------------------------------------------------


def create_extension(name: str = "citus", schema: str | None = None) -> str:
    """``CREATE EXTENSION IF NOT EXISTS`` (in ``schema`` when given, e.g. pg_partman in
    ``partman``; the schema must exist)."""
    statement = f"CREATE EXTENSION IF NOT EXISTS {quote_ident(name)}"
    return statement + (f" SCHEMA {quote_ident(schema)}" if schema else "")


def create_schema(name: str) -> str:
    """``CREATE SCHEMA IF NOT EXISTS``."""
    return f"CREATE SCHEMA IF NOT EXISTS {quote_ident(name)}"


def update_extension(name: str = "citus") -> str:
    """``ALTER EXTENSION ... UPDATE``: to the version the installed package provides. Citus
    needs it on every node after a package upgrade and a restart."""
    return f"ALTER EXTENSION {quote_ident(name)} UPDATE"


def extension_versions_query(name: str = "citus") -> str:
    """The installed and the available version of extension ``name`` (one row, or none when it
    is not installed)."""
    return (
        "SELECT e.extversion AS installed, a.default_version AS available "
        "FROM pg_catalog.pg_extension e "
        "JOIN pg_catalog.pg_available_extensions a ON a.name = e.extname "
        f"WHERE e.extname = {quote_literal(name)}"
    )


def extension_update_needed(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether :func:`update_extension` would change anything, from the rows of
    :func:`extension_versions_query`: the installed version is not the package's."""
    return any(str(row["installed"]) != str(row["available"]) for row in rows)


def finish_upgrade() -> str:
    """Run on the coordinator once every node is updated: finishes a Citus major upgrade (a
    no-op when there is nothing to finish)."""
    return "CALL pg_catalog.citus_finish_citus_upgrade()"


# --- nodes ------------------------------------------------------------------------------------


def _row(row: Mapping[str, Any] | Sequence[Any]) -> tuple[str, int, int | None]:
    """(nodename, nodeport, groupid) of a pg_dist_node row: a mapping (as
    community.postgresql returns rows) or a sequence in DIST_NODE_QUERY's column order."""
    if isinstance(row, Mapping):
        name, port, group = row["nodename"], row["nodeport"], row.get("groupid")
    else:
        name, port = row[0], row[1]
        group = row[2] if len(row) > 2 else None
    return str(name), int(port), None if group is None else int(group)


def set_coordinator_host(address: str, port: Any) -> str:
    """``citus_set_coordinator_host``: where the workers reach the coordinator."""
    return f"SELECT pg_catalog.citus_set_coordinator_host({quote_literal(address)}, {_port(port)})"


def coordinator_statement(
    address: str, port: Any, rows: Iterable[Mapping[str, Any] | Sequence[Any]]
) -> str | None:
    """:func:`set_coordinator_host`, or None when pg_dist_node (``rows``) already has the
    coordinator (group 0) at ``address``:``port``."""
    wanted = (_node_key(address), _port(port))
    for name, node_port, group in map(_row, rows):
        if group == 0 and (_node_key(name), node_port) == wanted:
            return None
    return set_coordinator_host(address, port)


def nodes_to_add(
    wanted: Iterable[tuple[str, Any]], rows: Iterable[Mapping[str, Any] | Sequence[Any]]
) -> list[tuple[str, int]]:
    """The workers of ``wanted`` ((address, port), in order, each once) that pg_dist_node
    (``rows`` of :data:`DIST_NODE_QUERY`) does not list yet."""
    present = {(_node_key(name), port) for name, port, _ in map(_row, rows)}
    missing: list[tuple[str, int]] = []
    for address, port in wanted:
        key = (_node_key(address), _port(port))
        if key not in present:
            present.add(key)
            missing.append((str(address), key[1]))
    return missing


def add_node(address: str, port: Any) -> str:
    """``citus_add_node``: a worker joins the cluster (as a primary of a new group)."""
    return f"SELECT pg_catalog.citus_add_node({quote_literal(address)}, {_port(port)})"


def add_node_statements(
    wanted: Iterable[tuple[str, Any]], rows: Iterable[Mapping[str, Any] | Sequence[Any]]
) -> list[str]:
    """:func:`add_node` for each worker of ``wanted`` that pg_dist_node lacks; [] when none."""
    return [add_node(address, port) for address, port in nodes_to_add(wanted, rows)]


def unexpected_nodes(
    wanted: Iterable[tuple[str, Any]],
    coordinator: tuple[str, Any],
    rows: Iterable[Mapping[str, Any] | Sequence[Any]],
) -> list[tuple[str, int]]:
    """Nodes pg_dist_node lists that the inventory does not (neither a wanted worker nor the
    coordinator). Never removed automatically: a worker holding shards must be drained
    first (citus_drain_node), an operator's decision."""
    known = {(_node_key(a), _port(p)) for a, p in [*wanted, coordinator]}
    return [
        (name, port) for name, port, _ in map(_row, rows) if (_node_key(name), port) not in known
    ]


# --- helper functions the app calls -----------------------------------------------------------

_CITUS_HELPERS = """\
CREATE OR REPLACE FUNCTION {schema}.citus_enabled()
    RETURNS boolean
    LANGUAGE sql
    AS $sluice$ SELECT true $sluice$;

CREATE OR REPLACE FUNCTION {schema}.distribute_table(
    rel regclass, dist_column text, colocate text DEFAULT 'default')
    RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $sluice$
DECLARE
    method text;
    model text;
BEGIN
    SELECT partmethod::text, repmodel::text INTO method, model
        FROM pg_catalog.pg_dist_partition WHERE logicalrelid = rel;
    IF FOUND AND method = 'h' THEN
        RETURN false;  -- distributed already
    END IF;
    IF FOUND AND method = 'n' AND model = 't' THEN
        RAISE EXCEPTION 'table % is a reference table: it cannot be distributed by %',
            rel, dist_column;
    END IF;
    PERFORM pg_catalog.create_distributed_table(rel, dist_column, colocate_with => colocate);
    RETURN true;
END
$sluice$;

CREATE OR REPLACE FUNCTION {schema}.make_reference_table(rel regclass)
    RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $sluice$
DECLARE
    method text;
    model text;
BEGIN
    SELECT partmethod::text, repmodel::text INTO method, model
        FROM pg_catalog.pg_dist_partition WHERE logicalrelid = rel;
    IF FOUND AND method = 'n' AND model = 't' THEN
        RETURN false;  -- a reference table already
    END IF;
    IF FOUND AND method <> 'n' THEN
        RAISE EXCEPTION 'table % is distributed: it cannot become a reference table', rel;
    END IF;
    PERFORM pg_catalog.create_reference_table(rel);
    RETURN true;
END
$sluice$;
"""

# Plain PostgreSQL: the same functions, same signatures, changing nothing. They still check
# their arguments, so a migration that is wrong on Citus is wrong here too.
_PLAIN_HELPERS = """\
CREATE OR REPLACE FUNCTION {schema}.citus_enabled()
    RETURNS boolean
    LANGUAGE sql
    AS $sluice$ SELECT false $sluice$;

CREATE OR REPLACE FUNCTION {schema}.distribute_table(
    rel regclass, dist_column text, colocate text DEFAULT 'default')
    RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $sluice$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_attribute
        WHERE attrelid = rel AND attname = dist_column AND attnum > 0 AND NOT attisdropped
    ) THEN
        RAISE EXCEPTION 'column % of table % does not exist', dist_column, rel;
    END IF;
    RETURN false;  -- without Citus every table stays local
END
$sluice$;

CREATE OR REPLACE FUNCTION {schema}.make_reference_table(rel regclass)
    RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $sluice$
BEGIN
    RETURN false;  -- without Citus every table stays local
END
$sluice$;
"""


def _helper_body(citus_enabled: bool, schema: str, grant_to: Iterable[str]) -> str:
    template = _CITUS_HELPERS if citus_enabled else _PLAIN_HELPERS
    name = quote_ident(schema)
    grants = "".join(f"GRANT USAGE ON SCHEMA {name} TO {quote_ident(g)};\n" for g in grant_to)
    return f"{create_schema(schema)};\n\n" + template.format(schema=name) + "\n" + grants


def helpers_fingerprint(
    citus_enabled: bool, schema: str = HELPER_SCHEMA, grant_to: Iterable[str] = HELPER_GRANTEES
) -> str:
    """What :func:`helper_functions_sql` installs, as a short text kept in the schema's
    comment: the role compares it (:func:`helpers_current`) to change nothing twice."""
    digest = hashlib.sha256(_helper_body(citus_enabled, schema, grant_to).encode()).hexdigest()
    mode = "citus" if citus_enabled else "plain"
    return f"sluice helpers {mode} sha256:{digest[:16]}"


def helper_functions_sql(
    citus_enabled: bool, schema: str = HELPER_SCHEMA, grant_to: Iterable[str] = HELPER_GRANTEES
) -> str:
    """The script that (re)creates the helper functions the app's migrations call, on the
    coordinator/main cluster's sluice database:

    - ``sluice.distribute_table(rel regclass, dist_column text, colocate text DEFAULT
      'default') -> boolean``: create_distributed_table unless the table is distributed
      already (pg_dist_partition); true when it distributed it now;
    - ``sluice.make_reference_table(rel regclass) -> boolean``: likewise with
      create_reference_table;
    - ``sluice.citus_enabled() -> boolean``.

    Without Citus (``citus_enabled`` false) the same functions change nothing and return
    false. The script ends by recording :func:`helpers_fingerprint` in the schema's comment.
    """
    grant_to = tuple(grant_to)
    comment = quote_literal(helpers_fingerprint(citus_enabled, schema, grant_to))
    return (
        _helper_body(citus_enabled, schema, grant_to)
        + f"COMMENT ON SCHEMA {quote_ident(schema)} IS {comment};\n"
    )


def helpers_query(schema: str = HELPER_SCHEMA) -> str:
    """The helper schema's comment (no row when the schema does not exist)."""
    return (
        "SELECT pg_catalog.obj_description(oid, 'pg_namespace') AS fingerprint "
        f"FROM pg_catalog.pg_namespace WHERE nspname = {quote_literal(schema)}"
    )


def helpers_current(
    rows: Sequence[Mapping[str, Any]],
    citus_enabled: bool,
    schema: str = HELPER_SCHEMA,
    grant_to: Iterable[str] = HELPER_GRANTEES,
) -> bool:
    """Whether the installed helpers (``rows`` of :func:`helpers_query`) are the ones
    :func:`helper_functions_sql` would install now."""
    wanted = helpers_fingerprint(citus_enabled, schema, tuple(grant_to))
    return any(row.get("fingerprint") == wanted for row in rows)
