"""The role citus without Citus (it cannot be installed here): its filters (psql's rows in, the
SQL to run out), then the role itself, run by ansible-playbook (playbooks/citus.yml) on this
machine against a stand-in psql that keeps each cluster's catalog in a JSON file and refuses
what PostgreSQL/Citus would refuse (a database or extension that is not there yet, a worker
registered before it has Citus, psql arguments the filters cannot parse). The tests check the
statements the role issues, their order across hosts, that a second run changes nothing, upgrades
and check mode."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from sluice_infra.citus_sql import (
    DIST_NODE_QUERY,
    add_node,
    create_extension,
    extension_versions_query,
    finish_upgrade,
    helper_functions_sql,
    helpers_fingerprint,
    helpers_query,
    set_coordinator_host,
    update_extension,
)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FILTER = REPO / "ansible" / "plugins" / "filter" / "sluice_citus.py"
PLAYBOOK = REPO / "ansible" / "playbooks" / "citus.yml"

COORDINATOR = {"host": "db", "address": "10.77.0.10", "name": "coordinator", "port": 5432}
SEED_WORKERS = [
    {"host": "db", "address": "10.77.0.10", "name": "worker1", "port": 5433},
    {"host": "db", "address": "10.77.0.10", "name": "worker2", "port": 5434},
]
#: pg_dist_node of the seed layout once registered, as psql -At -F '|' prints it.
SEED_NODES = "10.77.0.10|5432|0|primary\n10.77.0.10|5433|1|primary\n10.77.0.10|5434|2|primary"


def script(*statements: str) -> str:
    return "".join(f"{s};\n" for s in statements)


# --- filters: rows in, SQL out -------------------------------------------------------------------


@pytest.fixture(scope="module")
def filters() -> dict:
    spec = importlib.util.spec_from_file_location("sluice_citus_filters", FILTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()


def test_the_reads_are_citus_sqls(filters):
    sql = filters["sluice_citus_sql"]("sluice")

    assert sql["nodes_query"] == DIST_NODE_QUERY
    assert sql["extension_query"] == extension_versions_query("citus")
    assert sql["helpers_query"] == helpers_query()
    assert sql["finish_upgrade"] == script(finish_upgrade())
    assert sql["database_query"].endswith("FROM pg_catalog.pg_database WHERE datname = 'sluice'")
    assert filters["sluice_citus_sql"]("it's")["database_query"].endswith("= 'it''s'")


def test_a_missing_database_is_created_and_an_existing_one_left(filters):
    create = filters["sluice_citus_create_database"]

    assert create("", "sluice") == "CREATE DATABASE sluice;\n"
    assert create("sluice", "sluice") == ""
    assert create("other", "sluice") == "CREATE DATABASE sluice;\n"
    assert create("", 'Sluice"x') == 'CREATE DATABASE "Sluice""x";\n'


def test_the_extension_is_created_only_when_missing(filters):
    assert filters["sluice_citus_create_extension"]("") == script(create_extension("citus"))
    assert filters["sluice_citus_create_extension"]("13.0-1|13.0-1") == ""
    assert filters["sluice_citus_create_extension"]("12.1-1|13.0-1") == ""


@pytest.mark.parametrize(
    ("stdout", "wanted"),
    [
        ("12.1-1|13.0-1", script(update_extension("citus"))),
        ("13.0-1|13.0-1", ""),
        ("", ""),  # not installed: created (at the package's version), not updated
    ],
)
def test_the_extension_is_updated_only_when_the_package_is_newer(filters, stdout, wanted):
    assert filters["sluice_citus_update_extension"](stdout) == wanted


def test_registration_adds_the_coordinator_and_only_the_missing_workers(filters):
    register = filters["sluice_citus_register_sql"]

    assert register("", COORDINATOR, SEED_WORKERS) == script(
        set_coordinator_host("10.77.0.10", 5432),
        add_node("10.77.0.10", 5433),
        add_node("10.77.0.10", 5434),
    )
    assert register(SEED_NODES, COORDINATOR, SEED_WORKERS) == ""
    partial = "10.77.0.10|5432|0|primary\n10.77.0.10|5434|2|primary"
    assert register(partial, COORDINATOR, SEED_WORKERS) == script(add_node("10.77.0.10", 5433))


def test_a_coordinator_registered_elsewhere_is_moved(filters):
    rows = "localhost|5432|0|primary\n10.77.0.10|5433|1|primary\n10.77.0.10|5434|2|primary"

    assert filters["sluice_citus_register_sql"](rows, COORDINATOR, SEED_WORKERS) == script(
        set_coordinator_host("10.77.0.10", 5432)
    )
    # the coordinator's old row is not a stray worker: set_coordinator_host moves it
    assert filters["sluice_citus_unexpected_nodes"](rows, COORDINATOR, SEED_WORKERS) == []


def test_nodes_the_inventory_does_not_list_are_reported_not_removed(filters):
    rows = SEED_NODES + "\n10.77.0.99|5432|3|primary"

    assert filters["sluice_citus_unexpected_nodes"](rows, COORDINATOR, SEED_WORKERS) == [
        "10.77.0.99:5432"
    ]
    assert filters["sluice_citus_register_sql"](rows, COORDINATOR, SEED_WORKERS) == ""


def test_inventory_values_cannot_change_the_statements_meaning(filters):
    worker = {"address": "10.0.0.1'); DROP TABLE events; --", "port": 5433}

    sql = filters["sluice_citus_register_sql"](SEED_NODES, COORDINATOR, [worker])

    assert sql == (
        "SELECT pg_catalog.citus_add_node('10.0.0.1''); DROP TABLE events; --', 5433);\n"
    )
    with pytest.raises(AnsibleFilterError, match="port '5433; DROP' is not a port number"):
        filters["sluice_citus_register_sql"]("", {**COORDINATOR, "port": "5433; DROP"}, [])


@pytest.mark.parametrize("enabled", [False, True])
def test_helpers_are_installed_unless_the_current_ones_are(filters, enabled):
    helpers = filters["sluice_citus_helpers_sql"]

    assert helpers("", enabled) == helper_functions_sql(enabled)
    assert helpers(helpers_fingerprint(enabled), enabled) == ""
    # the other mode's helpers (Citus turned on or off) are replaced
    assert helpers(helpers_fingerprint(not enabled), enabled) == helper_functions_sql(enabled)
    assert helpers("sluice helpers plain sha256:0000000000000000", enabled) != ""


def test_helpers_take_citus_enabled_as_the_inventory_writes_it(filters):
    assert filters["sluice_citus_helpers_sql"]("", "yes") == helper_functions_sql(True)
    with pytest.raises(AnsibleFilterError, match="citus_enabled is 'maybe'"):
        filters["sluice_citus_helpers_sql"]("", "maybe")


@pytest.mark.parametrize(
    ("name", "args", "stdout"),
    [
        ("sluice_citus_register_sql", (COORDINATOR, SEED_WORKERS), "10.77.0.10 5432 0 primary"),
        ("sluice_citus_update_extension", (), "13.0-1\t13.0-1"),
        ("sluice_citus_create_extension", (), "13.0-1|13.0-1|x"),
    ],
)
def test_output_that_is_not_the_reads_fails_instead_of_guessing(filters, name, args, stdout):
    with pytest.raises(AnsibleFilterError, match=r"psql printed .* read, which has the columns"):
        filters[name](stdout, *args)


# --- the role, against a stand-in psql -----------------------------------------------------------

#: The stand-in psql: one JSON file ($FAKE_PSQL_STATE) holds every cluster's catalog by port and
#: the log of what ran; it refuses what PostgreSQL/Citus would and psql arguments the role's
#: filters could not parse.
FAKE_PSQL = r"""#!PYTHON
import fcntl, json, os, re, sys

def fail(code, message, entry=None, state=None, handle=None):
    if entry is not None:  # logged (failed) like any other run
        state["log"].append({**entry, "failed": message})
        handle.seek(0)
        handle.truncate()
        json.dump(state, handle)
    print(message, file=sys.stderr)
    sys.exit(code)

args = sys.argv[1:]
for needed in (["-X"], ["-v", "ON_ERROR_STOP=1"], ["-At"], ["-F", "|"]):
    if not any(args[i:i + len(needed)] == needed for i in range(len(args))):
        fail(64, f"fake psql: missing {needed} in {args}")
port, db = args[args.index("-p") + 1], args[args.index("-d") + 1]
sql = sys.stdin.read()
with open(os.environ["FAKE_PSQL_STATE"], "r+") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    state = json.load(handle)
    clusters = state["clusters"]
    if port not in clusters:
        fail(2, f'psql: error: connection to server on socket port {port} failed')
    here = clusters[port]
    entry = {"port": int(port), "db": db, "sql": sql, "single": "--single-transaction" in args}
    refuse = fail

    def fail(code, message):
        refuse(code, message, entry, state, handle)

    if port in state.get("broken", []):
        fail(3, "ERROR:  the stand-in says this cluster is broken")
    if db not in here["databases"]:
        fail(2, f'psql: error: FATAL:  database "{db}" does not exist')
    ext = here["databases"][db]
    out = []

    def citus():
        if "citus" not in ext:
            fail(3, 'ERROR:  relation "pg_catalog.pg_dist_node" does not exist')

    if "FROM pg_catalog.pg_database" in sql:
        out += [name for name in here["databases"] if sql.rstrip().endswith(f"'{name}'")]
    elif "FROM pg_catalog.pg_extension e" in sql:
        if "citus" in ext:
            out.append(f"{ext['citus']}|{here['available']}")
    elif "FROM pg_catalog.pg_dist_node" in sql:
        citus()
        out += ["|".join(str(v) for v in row) for row in here["nodes"]]
    elif "obj_description" in sql:
        if "fingerprint" in ext:
            out.append(ext["fingerprint"] or "")
    else:
        entry["write"] = True
        for statement in [s.strip() for s in sql.split(";\n") if s.strip()]:
            if m := re.fullmatch(r"CREATE DATABASE (\w+)", statement):
                here["databases"].setdefault(m[1], {})
            elif statement == "CREATE EXTENSION IF NOT EXISTS citus":
                ext.setdefault("citus", here["available"])
            elif statement == "ALTER EXTENSION citus UPDATE":
                citus()
                ext["citus"] = here["available"]
            elif statement == "CALL pg_catalog.citus_finish_citus_upgrade()":
                citus()
                here["finished"] = ext["citus"]
            elif m := re.fullmatch(r"SELECT pg_catalog.citus_(\w+)\('(.*)', (\d+)\)", statement):
                citus()
                function, address, worker_port = m[1], m[2], int(m[3])
                if function == "set_coordinator_host":
                    here["nodes"] = [n for n in here["nodes"] if n[2] != 0]
                    here["nodes"].append([address, worker_port, 0, "primary"])
                    continue
                if function != "add_node":
                    fail(3, f"fake psql: unknown function {function}")
                worker = clusters.get(str(worker_port), {"databases": {}})
                if "citus" not in worker["databases"].get(db, {}):
                    fail(3, f"ERROR:  the worker {address}:{worker_port} has no citus in {db}")
                group = max([n[2] for n in here["nodes"]] + [0]) + 1
                here["nodes"].append([address, worker_port, group, "primary"])
            elif statement.startswith("CREATE SCHEMA IF NOT EXISTS sluice"):
                if not entry["single"]:
                    fail(3, "fake psql: the helpers script must run in one transaction")
                m = re.search(r"COMMENT ON SCHEMA sluice IS '([^']*)'", sql)
                ext["fingerprint"] = m[1]
                break
            else:
                fail(3, f"fake psql: unknown statement {statement!r}")
    state["log"].append(entry)
    handle.seek(0)
    handle.truncate()
    json.dump(state, handle)
print("\n".join(out))
"""


def cluster_state(*databases: str, available: str = "13.0-1") -> dict:
    """A cluster as pg_createcluster and the postgresql role leave it."""
    return {
        "databases": {db: {} for db in ("postgres", *databases)},
        "available": available,
        "nodes": [],
    }


def inventory(tmp_path: Path, spread: bool, citus: bool) -> Path:
    """The seed layout (everything on db) or the spread one (workers on app and stream, each
    host with its own port base: the stand-in tells clusters apart by port only)."""
    local = f"ansible_connection: local, ansible_python_interpreter: {sys.executable}"
    workers = "app: {}\n        stream: {}" if spread else "db: {citus_workers_per_host: 2}"
    text = f"""\
all:
  vars: {{citus_enabled: {str(citus).lower()}}}
  hosts:
    db: {{ansible_host: 10.77.0.10, {local}}}
    app: {{ansible_host: 10.77.0.11, postgresql_port_base: 6432, {local}}}
    stream: {{ansible_host: 10.77.0.12, postgresql_port_base: 7432, {local}}}
  children:
    citus_coordinator:
      hosts:
        db:
    citus_workers:
      hosts:
        {workers}
"""
    path = tmp_path / "hosts.yml"
    path.write_text(text)
    return path


class Lab:
    """The playbook and the stand-in psql's catalog, in tmp_path."""

    def __init__(self, tmp_path: Path, clusters: dict, *, spread: bool = False, citus: bool = True):
        self.hosts = inventory(tmp_path, spread, citus)
        self.state = tmp_path / "state.json"
        self.state.write_text(json.dumps({"clusters": clusters, "log": []}))
        fake = tmp_path / "bin" / "psql"
        fake.parent.mkdir()
        fake.write_text(FAKE_PSQL.replace("PYTHON", sys.executable, 1))
        fake.chmod(0o755)
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "ANSIBLE_VAULT_PASSWORD_FILE"},
            "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "1",
            "ANSIBLE_PIPELINING": "1",
            "FAKE_PSQL_STATE": str(self.state),
            "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
        }

    def play(self, *options: str, ok: bool = True) -> subprocess.CompletedProcess:
        """Run playbooks/citus.yml (as this user: become is a no-op here)."""
        result = subprocess.run(
            [
                *(str(BIN / "ansible-playbook"), "-i", str(self.hosts), str(PLAYBOOK)),
                *("-e", "ansible_become=false", *options),
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if ok:
            assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
        return result

    @property
    def catalog(self) -> dict:
        return json.loads(self.state.read_text())

    def writes(self) -> list[tuple[int, str, str]]:
        """(port, database, SQL) of every write tried so far (failed ones too), in order."""
        return [(e["port"], e["db"], e["sql"]) for e in self.catalog["log"] if e.get("write")]

    def failures(self) -> list[str]:
        return [e["failed"] for e in self.catalog["log"] if "failed" in e]

    def forget(self) -> None:
        """Clear the log (the catalog stays)."""
        state = self.catalog
        state["log"] = []
        self.state.write_text(json.dumps(state))


def changed(result: subprocess.CompletedProcess) -> dict[str, int]:
    """changed= per host from the PLAY RECAP."""
    return {
        host: int(count)
        for host, count in re.findall(r"^(\w+)\s+: ok=\d+\s+changed=(\d+)", result.stdout, re.M)
    }


def seed_clusters(available: str = "13.0-1") -> dict:
    return {
        "5432": cluster_state("sluice", available=available),  # the postgresql role's database
        "5433": cluster_state(available=available),
        "5434": cluster_state(available=available),
    }


def converged(clusters: dict, nodes: list, installed: str, enabled: bool = True) -> dict:
    """``clusters`` as the role leaves them with Citus at ``installed``."""
    for port, item in clusters.items():
        item["databases"]["sluice"] = {"citus": installed}
        item["nodes"] = nodes if port == "5432" else []
    clusters["5432"]["databases"]["sluice"]["fingerprint"] = helpers_fingerprint(enabled)
    return clusters


SEED_ROWS = [["10.77.0.10", 5432, 0, "primary"], ["10.77.0.10", 5433, 1, "primary"]]
SEED_ROWS += [["10.77.0.10", 5434, 2, "primary"]]
EXTENSION = script(create_extension("citus"))
DATABASE = "CREATE DATABASE sluice;\n"


def would_run(result: subprocess.CompletedProcess) -> list[str]:
    """The tasks check mode left out because they would have written (run with -v)."""
    names = []
    for block in result.stdout.split("TASK [citus : ")[1:]:
        if "msg: Command would have run if not in check mode" in block:
            names.append(block.split("]", 1)[0])
    return names


@pytest.mark.ansible
def test_without_citus_only_the_helpers_are_installed_as_no_ops_once(tmp_path):
    lab = Lab(tmp_path, {"5432": cluster_state("sluice")}, citus=False)

    check = lab.play("--check", "-v")
    assert lab.writes() == []
    assert would_run(check) == [
        "Install the helper functions (sluice.distribute_table, sluice.make_reference_table)"
    ]
    first = lab.play()

    assert lab.writes() == [(5432, "sluice", helper_functions_sql(False))]
    assert lab.catalog["log"][-1]["single"] is True
    assert changed(first) == {"db": 1}
    lab.forget()
    second = lab.play()
    assert lab.writes() == []
    assert changed(second) == {"db": 0}


@pytest.mark.ansible
def test_the_seed_layout_is_set_up_in_order_and_a_second_run_changes_nothing(tmp_path):
    lab = Lab(tmp_path, seed_clusters())

    # check mode first: the databases and extensions it would create cannot be read; no failure
    check = lab.play("--check", "-v")
    assert lab.writes() == []
    assert lab.failures() == []
    assert changed(check) == {"db": 0}
    assert would_run(check) == [
        "Create the citus extension on cluster coordinator",
        "Create the database on cluster worker1",
        "Create the citus extension on cluster worker1",
        "Create the database on cluster worker2",
        "Create the citus extension on cluster worker2",
        "Register the coordinator's address and the missing workers (citus_add_node)",
        "Install the helper functions (sluice.distribute_table, sluice.make_reference_table)",
    ]
    first = lab.play()

    assert lab.writes() == [
        (5432, "sluice", EXTENSION),
        (5433, "postgres", DATABASE),
        (5433, "sluice", EXTENSION),
        (5434, "postgres", DATABASE),
        (5434, "sluice", EXTENSION),
        (
            5432,
            "sluice",
            script(
                set_coordinator_host("10.77.0.10", 5432),
                add_node("10.77.0.10", 5433),
                add_node("10.77.0.10", 5434),
            ),
        ),
        (5432, "sluice", helper_functions_sql(True)),
    ]
    assert lab.catalog["clusters"]["5432"]["nodes"] == SEED_ROWS
    assert lab.failures() == []
    assert changed(first) == {"db": 7}
    lab.forget()
    assert changed(lab.play()) == {"db": 0}
    check = lab.play("--check", "-v")
    assert changed(check) == {"db": 0}
    assert would_run(check) == []
    assert lab.writes() == []


def spread_clusters() -> dict:
    return {"5432": cluster_state("sluice"), "6432": cluster_state(), "7432": cluster_state()}


@pytest.mark.ansible
def test_workers_on_other_hosts_have_citus_before_the_coordinator_registers_them(tmp_path):
    lab = Lab(tmp_path, spread_clusters(), spread=True)

    first = lab.play()

    writes = lab.writes()
    register = script(
        set_coordinator_host("10.77.0.10", 5432),
        add_node("10.77.0.11", 6432),
        add_node("10.77.0.12", 7432),
    )
    registration = writes.index((5432, "sluice", register))
    assert (6432, "sluice", EXTENSION) in writes[:registration]
    assert (7432, "sluice", EXTENSION) in writes[:registration]
    assert changed(first) == {"db": 3, "app": 2, "stream": 2}


@pytest.mark.ansible
def test_a_failing_worker_stops_the_coordinator_from_registering_anything(tmp_path):
    lab = Lab(tmp_path, spread_clusters(), spread=True)
    state = lab.catalog
    state["broken"] = ["7432"]
    lab.state.write_text(json.dumps(state))

    result = lab.play(ok=False)

    assert result.returncode != 0
    # stream's first read failed, and nothing ran on any host after it: no registration tried
    assert lab.failures() == ["ERROR:  the stand-in says this cluster is broken"]
    assert [w for w in lab.writes() if "citus_" in w[2]] == []
    assert lab.catalog["clusters"]["5432"]["nodes"] == []


@pytest.mark.ansible
def test_after_a_package_upgrade_every_node_is_updated_then_the_upgrade_finished(tmp_path):
    lab = Lab(tmp_path, converged(seed_clusters(available="13.1-1"), SEED_ROWS, "13.0-1"))

    first = lab.play()

    update = script(update_extension("citus"))
    assert lab.writes() == [
        (5432, "sluice", update),
        (5433, "sluice", update),
        (5434, "sluice", update),
        (5432, "sluice", script(finish_upgrade())),
    ]
    assert changed(first) == {"db": 4}
    assert lab.catalog["clusters"]["5432"]["finished"] == "13.1-1"
    lab.forget()
    assert changed(lab.play()) == {"db": 0}  # nothing updated: nothing to finish
    assert lab.writes() == []


@pytest.mark.ansible
def test_drift_is_repaired_and_strays_reported_not_removed(tmp_path):
    """The coordinator registered as localhost, worker2 missing, a node the inventory does not
    list, and the no-op helpers of a cluster that ran without Citus before."""
    nodes = [
        ["localhost", 5432, 0, "primary"],
        ["10.77.0.10", 5433, 1, "primary"],
        ["10.77.0.99", 5432, 2, "primary"],
    ]
    lab = Lab(tmp_path, converged(seed_clusters(), nodes, "13.0-1", enabled=False))

    result = lab.play()

    assert lab.writes() == [
        (
            5432,
            "sluice",
            script(set_coordinator_host("10.77.0.10", 5432), add_node("10.77.0.10", 5434)),
        ),
        (5432, "sluice", helper_functions_sql(True)),
    ]
    assert "pg_dist_node lists 10.77.0.99:5432, which the inventory does not" in result.stdout
    assert "localhost:5432" not in result.stdout
    assert ["10.77.0.99", 5432, 2, "primary"] in lab.catalog["clusters"]["5432"]["nodes"]
