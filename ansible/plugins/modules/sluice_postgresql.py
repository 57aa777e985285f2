#!/usr/bin/python
"""Ansible module: roles, databases, extensions and grants of one PostgreSQL cluster, as data,
idempotently. Runs on the database host as the postgres user (peer over the local socket)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sluice_postgresql
short_description: Roles (with SCRAM passwords), databases, extensions and grants as data
description:
  - Creates missing roles and sets their attributes and memberships; a password is written only
    when the stored SCRAM-SHA-256 verifier does not accept the vault's, and it is sent as a
    verifier computed here, so the clear text never reaches the server or its logs.
  - Creates missing databases (with their owner), missing extensions (in their schema), and
    runs each grant whose check query does not already return true.
  - Creates missing physical replication slots (one per standby). A physical slot no standby
    claims is never dropped but reported as a warning, since it keeps WAL until it is dropped.
  - Never drops anything. Check mode reports what would change.
options:
  port: {type: int, required: true}
  socket_dir: {type: path, default: /var/run/postgresql}
  roles:
    type: list
    elements: dict
    default: []
    description: "[{name, password, login, replication, member_of: [roles]}]"
  databases: {type: list, elements: dict, default: [], description: "[{name, owner}]"}
  extensions: {type: list, elements: dict, default: [], description: "[{name, database, schema}]"}
  grants:
    type: list
    elements: dict
    default: []
    description: "[{database, check: query returning true when done, sql}]"
  replication_slots:
    type: list
    elements: str
    default: []
    description: Physical replication slots that must exist (the standbys' primary_slot_name).
requirements: [psycopg2]
author: Sluice
"""

EXAMPLES = r"""
- name: The sluice database and its roles
  sluice_postgresql:
    port: 5432
    roles: [{name: sluice_reader, password: "{{ vault_postgresql_sluice_reader_password }}"}]
    databases: [{name: sluice, owner: sluice_writer}]
  become: true
  become_user: postgres
"""

RETURN = r"""
changes: {type: list, returned: always, description: what was (or would be) done, no secrets}
"""

import traceback  # noqa: E402  (Ansible modules put their documentation first)
from typing import Any  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible.module_utils.sluice_scram import matches, verifier  # noqa: E402

PSYCOPG_IMPORT_ERROR = None
try:
    import psycopg2
    from psycopg2 import sql
except ImportError:
    PSYCOPG_IMPORT_ERROR = traceback.format_exc()


class Cluster:
    """Connections to one cluster's databases over the local socket, autocommit."""

    def __init__(self, socket_dir: str, port: int) -> None:
        self.socket_dir, self.port = socket_dir, port
        self._connections: dict[str, Any] = {}

    def cursor(self, database: str = "postgres") -> Any:
        if database not in self._connections:
            connection = psycopg2.connect(
                host=self.socket_dir, port=self.port, dbname=database, user="postgres"
            )
            connection.autocommit = True
            self._connections[database] = connection
        return self._connections[database].cursor()

    def value(self, query: Any, args: tuple | None = None, database: str = "postgres") -> Any:
        # no args: None, so a literal % in the query is not read as a placeholder
        cursor = self.cursor(database)
        cursor.execute(query, args)
        row = cursor.fetchone()
        return None if row is None else row[0]

    def run(self, statement: Any, args: tuple | None = None, database: str = "postgres") -> None:
        self.cursor(database).execute(statement, args)

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()


def ensure_roles(db: Cluster, roles: list[dict], check: bool, changes: list[str]) -> None:
    for role in roles:
        name = role["name"]
        ident = sql.Identifier(name)
        found = db.value(
            "SELECT row(rolcanlogin, rolreplication)::text FROM pg_roles WHERE rolname = %s",
            (name,),
        )
        login = bool(role.get("login", True))
        replication = bool(role.get("replication", False))
        attributes = sql.SQL(" ").join(
            sql.SQL(word)
            for word in (
                "LOGIN" if login else "NOLOGIN",
                "REPLICATION" if replication else "NOREPLICATION",
            )
        )
        if found is None:
            changes.append(f"create role {name}")
            if not check:
                db.run(sql.SQL("CREATE ROLE {} {}").format(ident, attributes))
        elif found != f"({'t' if login else 'f'},{'t' if replication else 'f'})":
            changes.append(f"alter role {name} attributes")
            if not check:
                db.run(sql.SQL("ALTER ROLE {} {}").format(ident, attributes))
        if role.get("password"):
            stored = db.value("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (name,))
            if not matches(stored, role["password"]):
                changes.append(f"set the password of role {name}")
                if not check:
                    db.run(
                        sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                            ident, sql.Literal(verifier(role["password"]))
                        )
                    )
        for group in role.get("member_of") or []:
            member = found is not None and db.value(
                "SELECT EXISTS (SELECT 1 FROM pg_auth_members m "
                "JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member "
                "WHERE r.rolname = %s AND u.rolname = %s)",
                (group, name),
            )
            if not member:
                changes.append(f"grant role {group} to {name}")
                if not check:
                    db.run(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), ident))


def ensure_databases(db: Cluster, databases: list[dict], check: bool, changes: list[str]) -> None:
    for database in databases:
        name, owner = database["name"], database.get("owner", "postgres")
        current = db.value(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)
        )
        if current is None:
            changes.append(f"create database {name} owned by {owner}")
            if not check:
                db.run(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(name), sql.Identifier(owner)
                    )
                )
        elif current != owner:
            changes.append(f"make {owner} the owner of database {name}")
            if not check:
                db.run(
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                        sql.Identifier(name), sql.Identifier(owner)
                    )
                )


def ensure_extensions(db: Cluster, extensions: list[dict], check: bool, changes: list) -> None:
    for extension in extensions:
        name, database = extension["name"], extension["database"]
        if not _database_exists(db, database):  # check mode: created above, not yet here
            changes.append(f"create extension {name} in {database}")
            continue
        if db.value("SELECT 1 FROM pg_extension WHERE extname = %s", (name,), database):
            continue
        changes.append(f"create extension {name} in {database}")
        if check:
            continue
        schema = extension.get("schema")
        if schema:
            db.run(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)),
                database=database,
            )
            db.run(
                sql.SQL("CREATE EXTENSION {} SCHEMA {}").format(
                    sql.Identifier(name), sql.Identifier(schema)
                ),
                database=database,
            )
        else:
            db.run(sql.SQL("CREATE EXTENSION {}").format(sql.Identifier(name)), database=database)


def ensure_grants(db: Cluster, grants: list[dict], check: bool, changes: list[str]) -> None:
    for grant in grants:
        database = grant["database"]
        if _database_exists(db, database) and db.value(grant["check"], database=database):
            continue
        changes.append(grant.get("label") or grant["sql"])
        if not check:
            db.run(grant["sql"], database=database)


def ensure_slots(db: Cluster, slots: list[str], check: bool, changes: list[str]) -> list[str]:
    """Create the missing physical slots; return the physical slots nobody asked for."""
    existing = db.value(
        "SELECT coalesce(array_agg(slot_name::text ORDER BY slot_name), '{}') "
        "FROM pg_replication_slots WHERE slot_type = 'physical'"
    )
    for slot in slots:
        if slot in existing:
            continue
        changes.append(f"create replication slot {slot}")
        if not check:
            db.run("SELECT pg_create_physical_replication_slot(%s)", (slot,))
    return [slot for slot in existing if slot not in slots]


def _database_exists(db: Cluster, name: str) -> bool:
    return bool(db.value("SELECT 1 FROM pg_database WHERE datname = %s", (name,)))


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "port": {"type": "int", "required": True},
            "socket_dir": {"type": "path", "default": "/var/run/postgresql"},
            "roles": {"type": "list", "elements": "dict", "default": [], "no_log": True},
            "databases": {"type": "list", "elements": "dict", "default": []},
            "extensions": {"type": "list", "elements": "dict", "default": []},
            "grants": {"type": "list", "elements": "dict", "default": []},
            "replication_slots": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    if PSYCOPG_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=PSYCOPG_IMPORT_ERROR)
    for role in module.params["roles"]:
        if role.get("password"):
            module.no_log_values.add(role["password"])
    params, check, changes = module.params, module.check_mode, []
    db = Cluster(params["socket_dir"], params["port"])
    try:
        ensure_roles(db, params["roles"], check, changes)
        ensure_databases(db, params["databases"], check, changes)
        ensure_extensions(db, params["extensions"], check, changes)
        ensure_grants(db, params["grants"], check, changes)
        for slot in ensure_slots(db, params["replication_slots"], check, changes):
            module.warn(
                f"physical replication slot {slot} on port {params['port']} serves no standby "
                "of the inventory and keeps WAL until it is dropped: if its standby is gone, "
                f"run SELECT pg_drop_replication_slot('{slot}') as postgres"
            )
    except psycopg2.Error as err:
        module.fail_json(
            msg=f"PostgreSQL on port {params['port']}: {str(err).strip()}", changes=changes
        )
    finally:
        db.close()
    module.exit_json(changed=bool(changes), changes=changes)


if __name__ == "__main__":
    main()
