"""A throwaway PostgreSQL 15 for the tests that run the service's SQL for real.

Debian bookworm's ``postgresql-15`` and ``postgresql-15-partman`` (pg_partman 4.7), the
packages the lab's nodes run, started from their binaries in a temporary directory: no TCP
(``listen_addresses = ''``), one unix socket in that directory, no fsync. initdb refuses to run
as root, so under root (CI) the server runs as the ``postgres`` system user (``nobody`` where
there is none), owning the directory. Nothing of the host's own PostgreSQL is used or touched.

A database is prepared as the lab prepares ``sluice`` (:meth:`PgServer.prepare`): the roles
``sluice_writer`` and ``sluice_reader``, the database owned by the writer, the extensions of
``postgresql_extensions`` and every grant of ``postgresql_grants`` read from the postgresql
role's own files, and the Citus helper functions exactly as the citus role installs them
without Citus (:func:`sluice_infra.citus_sql.helper_functions_sql`). ``sluice migrate`` then
runs on it as the writer, as it does on the nodes.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PARTMAN_CONTROL = Path("/usr/share/postgresql/15/extension/pg_partman.control")
HOST_DEPS = "run `make host-deps` (Debian packages postgresql-15 and postgresql-15-partman)"

REPO = Path(__file__).resolve().parents[3]
ROLE = REPO / "ansible" / "roles" / "postgresql"
#: The roles the postgresql role creates for the service (passwords aside: trust over the socket).
WRITER = "sluice_writer"
READER = "sluice_reader"
SUPERUSER = "postgres"
#: The only port number in use: it names the socket file in the server's own directory.
PORT = 5432
#: The settings of the test server: quick and local. shared_preload_libraries stays empty: the
#: migrations call create_parent and run_maintenance themselves; pg_partman's background worker
#: (preloaded on the nodes) only repeats run_maintenance hourly.
SERVER_SETTINGS = {
    "listen_addresses": "",
    "port": str(PORT),
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "60",
    "shared_buffers": "32MB",
    "timezone": "UTC",
    "log_min_messages": "warning",
}


def _server_user() -> pwd.struct_passwd | None:
    """The account the server runs as: None (this process's) unless running as root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.fail("running as root, and neither a postgres nor a nobody user exists to run initdb")


@dataclass
class PgServer:
    """A running server: its directory (socket inside) and the process."""

    base: Path
    proc: subprocess.Popen[bytes]

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    def conninfo(self, dbname: str = "postgres", user: str = SUPERUSER, **extra: Any) -> str:
        return make_conninfo(
            "", host=str(self.base), port=PORT, dbname=dbname, user=user, sslmode="disable", **extra
        )

    def connect(self, dbname: str = "postgres", user: str = SUPERUSER) -> psycopg.Connection[Any]:
        """An autocommit connection (the superuser's unless ``user``)."""
        return psycopg.connect(self.conninfo(dbname, user), autocommit=True)

    def prepare(self, name: str) -> str:
        """Database ``name`` as the postgresql and citus roles leave ``sluice`` before the first
        ``sluice migrate``; returns ``name``."""
        from sluice_infra.citus_sql import helper_functions_sql

        with self.connect() as admin:
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(WRITER)
                )
            )
        with self.connect(name) as db:
            for extension in role_extensions():
                if extension.get("schema"):
                    schema = sql.Identifier(extension["schema"])
                    db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
                    db.execute(
                        sql.SQL("CREATE EXTENSION {} SCHEMA {}").format(
                            sql.Identifier(extension["name"]), schema
                        )
                    )
                else:
                    db.execute(
                        sql.SQL("CREATE EXTENSION {}").format(sql.Identifier(extension["name"]))
                    )
            for grant in role_grants(name):
                if not db.execute(grant["check"]).fetchone()[0]:
                    db.execute(grant["sql"])
            db.execute(helper_functions_sql(False))
        return name

    def sluice_environment(self, database: str) -> dict[str, str]:
        """``SLUICE_*`` variables under which ``sluice migrate`` and ``sluice keys`` reach
        ``database`` (trust over the socket: the passwords are never checked; Kafka and Redis
        are required settings these commands never contact)."""
        return {
            "SLUICE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
            "SLUICE_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
            "SLUICE_REDIS_NODES": "127.0.0.1:9",
            "SLUICE_REDIS_PASSWORD": "unused",
            "SLUICE_POSTGRES_HOST": str(self.base),
            "SLUICE_POSTGRES_PORT": str(PORT),
            "SLUICE_POSTGRES_DB": database,
            "SLUICE_POSTGRES_SSLMODE": "disable",
            "SLUICE_POSTGRES_WRITER_PASSWORD": "unused",
            "SLUICE_POSTGRES_READER_PASSWORD": "unused",
        }

    def drop(self, name: str) -> None:
        with self.connect() as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


_names = itertools.count(1)


def database_name(prefix: str) -> str:
    """A database name not used before in this run."""
    return f"{prefix}_{os.getpid()}_{next(_names)}"


def _role_file(relative: str) -> Any:
    path = ROLE / relative
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: the PostgreSQL tests prepare the database with the postgresql "
            "role's extensions and grants; update app/tests/unit/pg_server.py if they moved"
        )
    return yaml.safe_load(path.read_text())


def _render(text: str, database: str) -> str:
    rendered = text.replace("{{ postgresql_database }}", database)
    if "{{" in rendered:
        pytest.fail(
            f"the postgresql role's grant {text!r} uses a variable app/tests/unit/pg_server.py "
            "does not render (it knows postgresql_database only): teach _render it"
        )
    return rendered


def role_extensions() -> list[dict[str, str]]:
    """``postgresql_extensions`` of the postgresql role's defaults."""
    return list(_role_file("defaults/main.yml")["postgresql_extensions"])


def role_grants(database: str) -> list[dict[str, str]]:
    """``postgresql_grants`` of the postgresql role, for ``database``."""
    return [
        {key: _render(str(value), database) for key, value in grant.items()}
        for grant in _role_file("vars/main.yml")["postgresql_grants"]
    ]


def role_partman_bgw_role() -> str:
    """The role pg_partman's background worker runs maintenance as on the nodes."""
    return str(_role_file("vars/main.yml")["postgresql_config_defaults"]["pg_partman_bgw.role"])


def _check_binaries() -> None:
    for binary in ("initdb", "postgres"):
        if not (PG_BIN / binary).is_file():
            pytest.fail(f"{PG_BIN / binary} is missing: {HOST_DEPS}")
    if not PARTMAN_CONTROL.is_file():
        pytest.fail(f"{PARTMAN_CONTROL} (pg_partman) is missing: {HOST_DEPS}")


def start() -> PgServer:
    """initdb and start a server in a new temporary directory; fails the test run (never skips)
    when the binaries are missing or the server does not come up."""
    _check_binaries()
    user = _server_user()
    # Not under pytest's basetemp: that is private to this user (0700), and the server may run
    # as another one.
    base = Path(tempfile.mkdtemp(prefix="sluice-pg-"))
    as_user: dict[str, Any] = {}
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(base)}
    data = base / "data"
    initdb_argv = [
        str(PG_BIN / "initdb"),
        "--pgdata", str(data),
        "--username", SUPERUSER,
        "--auth", "trust",
        "--encoding", "UTF8",
        "--locale", "C.UTF-8",
        "--no-sync",
        "--no-instructions",
    ]  # fmt: skip
    initdb = subprocess.run(
        initdb_argv,
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        **as_user,
    )
    if initdb.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"initdb failed ({initdb.returncode}):\n{initdb.stdout}\n{initdb.stderr}")
    settings = {**SERVER_SETTINGS, "unix_socket_directories": str(base)}
    argv = [str(PG_BIN / "postgres"), "-D", str(data)]
    for name, value in settings.items():
        argv += ["-c", f"{name}={value}"]
    with open(base / "postgres.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=base, env=env, stdout=log, stderr=log, **as_user)
    server = PgServer(base, proc)
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(server.conninfo(connect_timeout=2)) as conn:
                conn.execute("SELECT 1")
            break
        except psycopg.OperationalError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            text = server.log.read_text(errors="replace") if server.log.exists() else ""
            stop(server)
            pytest.fail(f"PostgreSQL in {base} did not start:\n{text[-3000:]}")
        time.sleep(0.05)
    with server.connect() as admin:
        for role in (WRITER, READER):
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    return server


def stop(server: PgServer) -> None:
    """Fast shutdown (SIGINT: disconnect everyone, no waiting), then remove the directory."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGINT)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    shutil.rmtree(server.base, ignore_errors=True)
