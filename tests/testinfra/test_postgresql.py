"""Role postgresql: the clusters run, the sluice database has its roles and extensions, and
authentication is what pg_hba.conf promises (scram-sha-256 only, nothing from elsewhere).

Runs on the host of the coordinator/main cluster. Passwords reach the machine through Ansible's
copy module (the module payload, not argv) into root-only files that the shell reads into
PGPASSWORD: never on a command line.
"""

from __future__ import annotations

import json
import shlex
import uuid

import pytest

pytestmark = pytest.mark.system

VERSION_DEFAULT = 15


def _vars(host) -> dict:
    return host.ansible.get_variables()


@pytest.fixture
def pg_host(host):
    hostvars = _vars(host)
    if host.backend.get_hostname() not in hostvars["groups"].get("citus_coordinator", []):
        pytest.skip("no coordinator/main cluster on this host")
    return host


class Psql:
    """psql on the machine as one role, its password kept off every command line."""

    def __init__(self, host, role: str, password: str | None = None):
        self.host, self.role = host, role
        hostvars = _vars(host)
        self.port = int(hostvars.get("postgresql_port_base", 5432))
        self.secret = f"/root/.sluice-test-{uuid.uuid4().hex}"
        secret = hostvars[f"vault_postgresql_{role}_password"] if password is None else password
        host.ansible(
            "copy", f"content={secret} dest={self.secret} mode=0600", become=True, check=False
        )

    def __call__(self, statement: str, address: str = "/var/run/postgresql", db: str = "sluice"):
        command = (
            f"PGPASSWORD=$(cat {self.secret}) psql -X -At -v ON_ERROR_STOP=1 -h {address} "
            f"-p {self.port} -U {self.role} -d {db} -c {shlex.quote(statement)}"
        )
        return self.host.run("sudo -n sh -c " + shlex.quote(command))

    def close(self) -> None:
        self.host.run(f"sudo -n rm -f {self.secret}")


@pytest.fixture
def psql(pg_host):
    opened: list[Psql] = []

    def open_as(role: str, password: str | None = None) -> Psql:
        opened.append(Psql(pg_host, role, password))
        return opened[-1]

    yield open_as
    for client in opened:
        client.close()


def test_postgresql_cluster_runs_on_its_port(pg_host):
    hostvars = _vars(pg_host)
    version = hostvars.get("postgresql_version", VERSION_DEFAULT)
    port = int(hostvars.get("postgresql_port_base", 5432))
    assert pg_host.service(f"postgresql@{version}-main").is_running
    assert pg_host.service(f"postgresql@{version}-main").is_enabled
    ready = pg_host.run(f"pg_isready -h /var/run/postgresql -p {port}")
    assert ready.rc == 0, ready.stdout
    listening = pg_host.check_output("ss -Hltn | awk '{print $4}'").split()
    assert f"{hostvars['ansible_host']}:{port}" in listening, listening


def test_postgresql_roles_log_in_with_their_vault_passwords(psql):
    for role in ("sluice_writer", "sluice_reader", "monitoring"):
        result = psql(role)("SELECT current_user")
        assert result.rc == 0 and result.stdout.strip() == role, result.stderr


def test_postgresql_refuses_a_wrong_password(psql):
    result = psql("sluice_reader", password="not-the-password")("SELECT 1")
    assert result.rc != 0
    assert "password authentication failed" in result.stderr, result.stderr


def test_postgresql_refuses_a_host_pg_hba_does_not_name(pg_host, psql):
    """The database host itself is not a client of the sluice database: refused over TCP."""
    result = psql("sluice_reader")("SELECT 1", address=_vars(pg_host)["ansible_host"])
    assert result.rc != 0
    assert "no pg_hba.conf entry" in result.stderr, result.stderr


def test_postgresql_reader_reads_what_the_writer_writes_and_cannot_write(psql):
    table = f"sluice_test_{uuid.uuid4().hex[:8]}"
    writer, reader = psql("sluice_writer"), psql("sluice_reader")
    made = writer(f"CREATE TABLE {table} (id int); INSERT INTO {table} VALUES (1), (2)")
    assert made.rc == 0, made.stderr
    try:
        assert reader(f"SELECT count(*) FROM {table}").stdout.strip() == "2"
        refused = reader(f"INSERT INTO {table} VALUES (3)")
        assert refused.rc != 0 and "permission denied" in refused.stderr, refused.stderr
        refused = reader("CREATE TABLE sluice_reader_may_not (id int)")
        assert refused.rc != 0 and "permission denied" in refused.stderr, refused.stderr
    finally:
        writer(f"DROP TABLE IF EXISTS {table}")


def test_postgresql_extensions_and_monitoring(psql):
    monitoring = psql("monitoring")
    names = monitoring("SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension")
    assert {"pg_partman", "pg_stat_statements"} <= set(names.stdout.strip().split(","))
    stats = monitoring("SELECT count(*) >= 0 FROM pg_stat_statements")
    assert stats.stdout.strip() == "t", stats.stderr  # pg_monitor may read every statement
    settings = monitoring(
        "SELECT string_agg(name || '=' || setting, ',') FROM pg_settings "
        "WHERE name IN ('password_encryption', 'log_min_duration_statement')"
    ).stdout.strip()
    assert "password_encryption=scram-sha-256" in settings
    assert "log_min_duration_statement=100" in settings


def test_postgresql_exporter_serves_metrics(pg_host):
    port = int(_vars(pg_host).get("postgresql_exporter_port_base", 9187))
    fetch = (
        "import urllib.request; print(urllib.request.urlopen("
        f"'http://127.0.0.1:{port}/metrics', timeout=10).read().decode())"
    )
    metrics = pg_host.check_output(f"python3 -c {shlex.quote(fetch)}")
    assert "pg_up 1" in metrics


def test_postgresql_partman_creates_partitions_ahead(psql):
    """pg_partman, as the writer: a daily-partitioned table gets its partitions made ahead."""
    table = f"sluice_test_{uuid.uuid4().hex[:8]}"
    writer = psql("sluice_writer")
    version = writer("SELECT extversion FROM pg_extension WHERE extname = 'pg_partman'")
    # pg_partman 4 (bookworm) still takes p_type; 5 (PGDG) only makes native partitions
    native = ", p_type => 'native'" if version.stdout.strip().startswith("4.") else ""
    made = writer(
        f"CREATE TABLE public.{table} (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at);"
        f"SELECT partman.create_parent(p_parent_table => 'public.{table}', p_control => 'at'"
        f"{native}, p_interval => '1 day', p_premake => 3);"
        f"SELECT partman.run_maintenance('public.{table}');"
    )
    try:
        assert made.rc == 0, made.stderr
        ahead = writer(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            f"WHERE i.inhparent = 'public.{table}'::regclass "
            "AND pg_get_expr(c.relpartbound, c.oid) LIKE '%FROM (''' || "
            "to_char(now()::date + 3, 'YYYY-MM-DD') || '%'"
        )
        assert ahead.stdout.strip() == "1", (ahead.stdout, ahead.stderr)
        stored = writer(f"INSERT INTO public.{table} VALUES (1, now() + interval '2 days')")
        assert stored.rc == 0, stored.stderr
    finally:
        writer(f"DELETE FROM partman.part_config WHERE parent_table = 'public.{table}'")
        writer(f"DROP TABLE IF EXISTS public.{table}, partman.template_public_{table}")


def _standby_host(pg_host):
    """The first host of postgresql_standby_hosts as a testinfra host, or skip."""
    import testinfra

    standbys = _vars(pg_host).get("postgresql_standby_hosts") or []
    if not standbys:
        pytest.skip("no standby in this inventory (postgresql_standby_hosts)")
    backend = pg_host.backend
    return testinfra.get_host(
        f"ansible://{standbys[0]}",
        ansible_inventory=backend.ansible_inventory,
        ssh_config=backend.ssh_config,
    )


def test_postgresql_standby_streams_what_the_primary_commits_and_is_read_only(pg_host, psql):
    standby = _standby_host(pg_host)
    port = int(_vars(pg_host).get("postgresql_port_base", 5432))

    def on_standby(statement: str):
        quoted = shlex.quote(statement)
        return standby.run(
            f"cd / && sudo -n -u postgres psql -X -At -p {port} -d sluice -c {quoted}"
        )

    assert on_standby("SELECT status FROM pg_stat_wal_receiver").stdout.strip() == "streaming"
    table = f"sluice_test_{uuid.uuid4().hex[:8]}"
    writer = psql("sluice_writer")
    made = writer(
        f"CREATE TABLE {table} (id int); INSERT INTO {table} SELECT generate_series(1, 500)"
    )
    assert made.rc == 0, made.stderr
    try:
        lsn = psql("monitoring")("SELECT pg_current_wal_lsn()").stdout.strip()
        caught_up = on_standby(
            f"DO $$ BEGIN FOR i IN 1..100 LOOP EXIT WHEN pg_last_wal_replay_lsn() >= '{lsn}'; "
            "PERFORM pg_sleep(0.1); END LOOP; END $$; "
            f"SELECT pg_is_in_recovery(), (SELECT count(*) FROM {table})"
        )
        assert caught_up.stdout.strip().splitlines()[-1] == "t|500", caught_up.stderr
        refused = on_standby(f"INSERT INTO {table} VALUES (501)")
        assert refused.rc != 0 and "read-only transaction" in refused.stderr, refused.stderr
        slots = psql("monitoring")(
            "SELECT string_agg(slot_name || ':' || active, ',') FROM pg_replication_slots"
        ).stdout.strip()
        assert f"standby_{standby.backend.get_hostname()}:true" in slots.split(","), slots
    finally:
        writer(f"DROP TABLE IF EXISTS {table}")


def test_postgresql_backup_restores_into_a_scratch_cluster_with_the_same_rows(pg_host, psql):
    """WAL reaches the repository, and the newest backup restores: the restore drill takes an
    incremental backup, restores it into a scratch cluster and compares every table's rows."""
    hostvars = _vars(pg_host)
    version = hostvars.get("postgresql_version", VERSION_DEFAULT)
    port = int(hostvars.get("postgresql_port_base", 5432))
    stanza = f"{pg_host.backend.get_hostname()}-main"
    as_postgres = "cd / && sudo -n -u postgres "
    archived = pg_host.run(as_postgres + f"pgbackrest --stanza={stanza} check")
    assert archived.rc == 0, archived.stderr
    table = f"sluice_test_{uuid.uuid4().hex[:8]}"
    writer = psql("sluice_writer")
    made = writer(
        f"CREATE TABLE {table} (id int); INSERT INTO {table} SELECT generate_series(1, 4321)"
    )
    assert made.rc == 0, made.stderr
    try:
        drill = pg_host.run(
            as_postgres + f"sluice-pg-restore-drill --stanza={stanza} --port={port} "
            f"--bin-dir=/usr/lib/postgresql/{version}/bin"
        )
        report = json.loads(drill.stdout)
        assert drill.rc == 0 and report["ok"], drill.stdout + drill.stderr
        assert report["tables"][f"public.{table}"] == {"live": 4321, "restored": 4321}
    finally:
        writer(f"DROP TABLE IF EXISTS {table}")
    timers = pg_host.check_output(
        "systemctl is-enabled "
        + " ".join(f"pgbackrest-{kind}@{stanza}.timer" for kind in ("full", "diff"))
    )
    assert timers.split() == ["enabled", "enabled"]
