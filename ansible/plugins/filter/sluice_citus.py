"""Filters for the role `citus`: thin wrappers over sluice_infra.citus_sql.

The role reads with ``psql -X -At -F '|'`` (one row a line, fields separated by ``|``, NULL as
an empty field) and hands the read's stdout to these filters, which return the SQL to run:
'' when nothing is missing, so a second run writes nothing.

citus_sql: "{{ citus_database | sluice_citus_sql }}"   # the reads, finish_upgrade
stdin: "{{ citus_nodes_read.stdout
           | sluice_citus_register_sql(citus_primary, citus_worker_clusters) }}"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sluice_infra import citus_sql
from sluice_infra.filter_errors import filter_errors
from sluice_infra.postgresql_topology import PlanError, citus_flag

_filter_errors = filter_errors(citus_sql.SqlError, PlanError)

#: psql's field separator in the role's reads (-F); no value read here can contain it.
SEPARATOR = "|"
#: The columns of each read, in its SELECT's order.
COLUMNS = {
    "database": ("datname",),
    "extension": ("installed", "available"),
    "nodes": ("nodename", "nodeport", "groupid", "noderole"),
    "helpers": ("fingerprint",),
}


def rows(stdout: Any, read: str) -> list[dict[str, str]]:
    """The rows of read ``read`` from psql's unaligned output: one mapping per non-blank line.
    A line with another number of fields means the output is not this read's:
    :class:`citus_sql.SqlError` rather than a guess."""
    columns = COLUMNS[read]
    found = []
    for line in str(stdout or "").splitlines():
        if not line.strip():
            continue
        fields = line.split(SEPARATOR)
        if len(fields) != len(columns):
            raise citus_sql.SqlError(
                f"psql printed {line!r} for the {read} read, which has the columns "
                f"{', '.join(columns)} separated by {SEPARATOR!r}: the role's psql arguments "
                f"(citus_psql) and this read disagree"
            )
        found.append(dict(zip(columns, fields, strict=True)))
    return found


def _endpoint(cluster: Mapping[str, Any]) -> tuple[str, Any]:
    return str(cluster["address"]), cluster["port"]


def _script(statements: Sequence[str]) -> str:
    return "".join(f"{statement};\n" for statement in statements)


@_filter_errors
def sluice_citus_sql(database: str) -> dict[str, str]:
    """citus_database | sluice_citus_sql: the role's reads and its fixed statements."""
    return {
        "database_query": (
            "SELECT datname FROM pg_catalog.pg_database "
            f"WHERE datname = {citus_sql.quote_literal(database)}"
        ),
        "extension_query": citus_sql.extension_versions_query("citus"),
        "nodes_query": citus_sql.DIST_NODE_QUERY,
        "helpers_query": citus_sql.helpers_query(),
        "finish_upgrade": _script([citus_sql.finish_upgrade()]),
    }


@_filter_errors
def sluice_citus_create_database(stdout: Any, database: str) -> str:
    """database read | sluice_citus_create_database(name): CREATE DATABASE, or '' if it exists.
    (A worker's database; the postgresql role creates the coordinator's.)"""
    if any(row["datname"] == database for row in rows(stdout, "database")):
        return ""
    return _script([f"CREATE DATABASE {citus_sql.quote_ident(database)}"])


@_filter_errors
def sluice_citus_create_extension(stdout: Any) -> str:
    """extension read | sluice_citus_create_extension: step 1, or '' when citus is there."""
    if rows(stdout, "extension"):
        return ""
    return _script([citus_sql.create_extension("citus")])


@_filter_errors
def sluice_citus_update_extension(stdout: Any) -> str:
    """extension read | sluice_citus_update_extension: step 5 (ALTER EXTENSION citus UPDATE)
    when the installed version is not the package's, else ''."""
    if citus_sql.extension_update_needed(rows(stdout, "extension")):
        return _script([citus_sql.update_extension("citus")])
    return ""


@_filter_errors
def sluice_citus_register_sql(
    stdout: Any, coordinator: Mapping[str, Any], workers: Sequence[Mapping[str, Any]]
) -> str:
    """pg_dist_node read | sluice_citus_register_sql(coordinator, workers): steps 2 and 3,
    citus_set_coordinator_host unless pg_dist_node has the coordinator there, then
    citus_add_node for each worker it lacks; '' when nothing is missing."""
    found = rows(stdout, "nodes")
    statements = [citus_sql.coordinator_statement(*_endpoint(coordinator), found)]
    statements += citus_sql.add_node_statements([_endpoint(w) for w in workers], found)
    return _script([s for s in statements if s])


@_filter_errors
def sluice_citus_unexpected_nodes(
    stdout: Any, coordinator: Mapping[str, Any], workers: Sequence[Mapping[str, Any]]
) -> list[str]:
    """pg_dist_node read | sluice_citus_unexpected_nodes(coordinator, workers): the workers
    pg_dist_node lists and the inventory does not, as address:port (never removed by the role).
    The coordinator's row is left out: citus_set_coordinator_host moves it."""
    found = [row for row in rows(stdout, "nodes") if row["groupid"] != "0"]
    wanted = [_endpoint(w) for w in workers]
    return [
        f"{name}:{port}"
        for name, port in citus_sql.unexpected_nodes(wanted, _endpoint(coordinator), found)
    ]


@_filter_errors
def sluice_citus_helpers_sql(stdout: Any, citus_enabled: Any) -> str:
    """helpers read | sluice_citus_helpers_sql(citus_enabled): step 4, the helper functions
    (no-ops without Citus), or '' when the installed ones are current."""
    enabled = citus_flag(citus_enabled)
    if citus_sql.helpers_current(rows(stdout, "helpers"), enabled):
        return ""
    return citus_sql.helper_functions_sql(enabled)


class FilterModule:
    """Filters for the role `citus`."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "sluice_citus_sql": sluice_citus_sql,
            "sluice_citus_create_database": sluice_citus_create_database,
            "sluice_citus_create_extension": sluice_citus_create_extension,
            "sluice_citus_update_extension": sluice_citus_update_extension,
            "sluice_citus_register_sql": sluice_citus_register_sql,
            "sluice_citus_unexpected_nodes": sluice_citus_unexpected_nodes,
            "sluice_citus_helpers_sql": sluice_citus_helpers_sql,
        }
