"""Role postgresql: the clusters run, the sluice database has its roles and extensions, and
authentication is what pg_hba.conf promises (scram-sha-256 only, nothing from elsewhere).

Runs on the host of the coordinator/main cluster. Passwords reach the machine through Ansible's
copy module (the module payload, not argv) into root-only files that the shell reads into
PGPASSWORD: never on a command line.
"""

from __future__ import annotations

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
