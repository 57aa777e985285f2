"""The PostgreSQL/Citus inventory checks (citus, postgresql_standby, postgresql_settings,
postgresql_ports) through validate(), on the lab's layouts: every bad input of issue #5 is one
line naming the variable and the fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from seed_layout import ADDRESSES, valid_hostvars

from sluice_infra import postgresql_topology
from sluice_infra.inventory import validate, variables_read
from sluice_infra.settings import group_vars_all

REPO = Path(__file__).resolve().parents[2]
LAYOUTS = ["lab", "lab-spread"]


def lab_inventory(
    name: str, citus_enabled: bool = False, standbys: list[str] | None = None
) -> tuple[dict[str, list[str]], dict[str, dict]]:
    """``inventories/<name>`` as validate() gets it: groups and host variables from hosts.yml,
    the group_vars/all settings the checks read, a complete vault, and the given
    citus_enabled and postgresql_standby_hosts on every host (as group_vars sets them)."""
    root = REPO / "inventories" / name
    tree = yaml.safe_load((root / "hosts.yml").read_text())["all"]
    shared = group_vars_all(root)
    shared = {key: value for key, value in shared.items() if key in variables_read()}
    shared["citus_enabled"] = citus_enabled
    shared["postgresql_standby_hosts"] = list(standbys or [])

    groups = {"all": list(tree["hosts"]), "ungrouped": []}
    per_host = {
        host: copy.deepcopy(shared) | {"inventory_dir": str(root)} for host in tree["hosts"]
    }
    for host, settings in tree["hosts"].items():
        per_host[host].update(settings or {})
    for group, entry in tree["children"].items():
        groups[group] = list(entry["hosts"])
        for host, settings in entry["hosts"].items():
            per_host[host].update(settings or {})
    assert sorted(groups["all"]) == sorted(ADDRESSES)
    return groups, valid_hostvars(per_host)


def set_everywhere(hostvars: dict[str, dict], name: str, value: object) -> None:
    """A group_vars/all setting: the same value on every host."""
    for settings in hostvars.values():
        settings[name] = copy.deepcopy(value)


def only_problem(problems: list[str]) -> str:
    assert len(problems) == 1, problems
    return problems[0]


# --- the shipped layouts ------------------------------------------------------------------------


@pytest.mark.parametrize("citus", [True, False])
@pytest.mark.parametrize("name", LAYOUTS)
def test_the_lab_layouts_are_valid_with_and_without_citus(name, citus):
    assert validate(*lab_inventory(name, citus)) == []


@pytest.mark.parametrize("citus", [True, False])
def test_the_spread_layout_with_a_standby_is_valid(citus):
    groups, hostvars = lab_inventory("lab-spread", citus, standbys=["app"])

    assert validate(groups, hostvars) == []
    standby = [c for c in postgresql_topology.clusters(groups, hostvars, citus) if c.is_standby]
    assert [(c.host, c.primary) for c in standby] == [("app", "db:5432")]


def test_the_seed_with_two_workers_on_db_is_valid():
    groups, hostvars = lab_inventory("lab", True)
    hostvars["db"]["citus_workers_per_host"] = 2

    assert validate(groups, hostvars) == []
    assert [c.port for c in postgresql_topology.clusters(groups, hostvars, True)] == [
        5432,
        5433,
        5434,
    ]


def test_the_checks_read_the_postgresql_settings():
    assert {
        "citus_enabled",
        "citus_workers_per_host",
        "postgresql_port_base",
        "postgresql_standby_hosts",
        "postgresql_config_custom",
        "postgresql_memory_mb",
        "ansible_memtotal_mb",
    } <= variables_read()


# --- Citus ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("coordinators", [[], ["db", "app"]])
def test_zero_or_two_coordinators_are_one_problem(coordinators):
    groups, hostvars = lab_inventory("lab-spread", True)
    groups["citus_coordinator"] = coordinators

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith("group citus_coordinator has ")


def test_a_worker_without_citus_is_one_problem():
    groups, hostvars = lab_inventory("lab-spread", True)
    hostvars["stream"]["citus_enabled"] = False

    assert validate(groups, hostvars) == [
        "host stream in group citus_workers: citus_enabled is false while the coordinator db "
        "has it true: a worker without Citus cannot join the cluster; set citus_enabled once for "
        "every host in group_vars/all/main.yml and drop the host's own value"
    ]


def test_citus_enabled_differing_elsewhere_is_one_problem():
    groups, hostvars = lab_inventory("lab", True)
    hostvars["app"]["citus_enabled"] = False

    assert validate(groups, hostvars) == [
        "citus_enabled differs between hosts (true on db and stream, false on app): it is one "
        "setting for the whole inventory; set it once in group_vars/all/main.yml"
    ]


def test_citus_enabled_only_on_the_coordinator_is_one_problem_per_kind():
    groups, hostvars = lab_inventory("lab-spread", False)
    hostvars["db"]["citus_enabled"] = True

    problems = validate(groups, hostvars)

    assert len(problems) == 1, problems
    assert problems[0].startswith("hosts app and stream in group citus_workers: citus_enabled")


def test_an_unusable_citus_enabled_is_one_problem():
    groups, hostvars = lab_inventory("lab", False)
    set_everywhere(hostvars, "citus_enabled", "maybe")

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith("hosts app, db and stream: citus_enabled is 'maybe': set true")
    assert problem.endswith("once in group_vars/all/main.yml")


def test_citus_without_worker_hosts_is_one_problem():
    groups, hostvars = lab_inventory("lab", True)
    groups["citus_workers"] = []

    assert only_problem(validate(groups, hostvars)).startswith("group citus_workers has no hosts")


# --- standbys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("citus", [True, False])
def test_a_standby_pointing_at_itself_is_one_problem(citus):
    groups, hostvars = lab_inventory("lab-spread", citus, standbys=["db"])

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith("postgresql_standby_hosts names db, the host of the primary")
    assert "name another host" in problem


def test_a_standby_outside_the_inventory_is_one_problem():
    groups, hostvars = lab_inventory("lab", False, standbys=["app", "db2"])

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith("postgresql_standby_hosts names 'db2', which is not a host")
    assert "add it under all.hosts in hosts.yml" in problem


def test_a_standby_list_that_is_not_a_list_is_one_problem():
    groups, hostvars = lab_inventory("lab", False)
    set_everywhere(hostvars, "postgresql_standby_hosts", "app")

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith("postgresql_standby_hosts must be a list of inventory host names")


# --- host settings -------------------------------------------------------------------------------


def test_an_unusable_worker_count_is_one_problem():
    groups, hostvars = lab_inventory("lab", True)
    hostvars["db"]["citus_workers_per_host"] = 0

    assert validate(groups, hostvars) == [
        "host db: citus_workers_per_host is 0: set a whole number >= 1 (the Citus worker "
        "clusters this host runs; the seed layout: 2 on db) (in hosts.yml, host_vars/db.yml or "
        "group_vars)"
    ]


def test_a_port_base_without_room_is_one_problem():
    groups, hostvars = lab_inventory("lab", True)
    hostvars["db"]["postgresql_port_base"] = 65535

    problem = only_problem(validate(groups, hostvars))

    # the seed layout's db runs the coordinator and citus_workers_per_host 2 workers
    assert problem.startswith("host db: postgresql_port_base 65535 leaves no room for its 3")
    assert "set it to at most 65533" in problem


@pytest.mark.parametrize("memory", [{"postgresql_memory_mb": 8192}, {"ansible_memtotal_mb": 8192}])
def test_memory_settings_beyond_the_host_are_one_problem(memory):
    groups, hostvars = lab_inventory("lab", True)
    hostvars["db"].update(memory, citus_workers_per_host=2)
    hostvars["db"]["postgresql_config_custom"] = {"shared_buffers": "4GB"}

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith(
        "host db: postgresql_config_custom shared_buffers 4GB on each of its 3 clusters needs "
        "12288MB, more than the host's 8192MB: lower it"
    )


def test_memory_settings_are_judged_against_the_postgresql_memory_before_the_facts():
    groups, hostvars = lab_inventory("lab", False)
    hostvars["db"].update(postgresql_memory_mb=2048, ansible_memtotal_mb=65536)
    hostvars["db"]["postgresql_config_custom"] = {"work_mem": "64MB"}

    problem = only_problem(validate(groups, hostvars))

    assert "work_mem 64MB x max_connections 100 on its cluster may use 6400MB" in problem
    hostvars["db"]["postgresql_memory_mb"] = 8192
    assert validate(groups, hostvars) == []


def test_overrides_are_judged_even_without_the_hosts_memory():
    groups, hostvars = lab_inventory("lab", False)
    hostvars["db"]["postgresql_config_custom"] = {"port": 5440, "shared_buffers": "1GB"}

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith("host db: postgresql_config_custom sets port: ports come from")


def test_an_unusable_postgresql_memory_is_one_problem():
    groups, hostvars = lab_inventory("lab", False)
    hostvars["db"]["postgresql_memory_mb"] = "lots"

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith("host db: postgresql_memory_mb is 'lots': set the memory")


def test_settings_of_hosts_without_postgresql_are_not_judged():
    groups, hostvars = lab_inventory("lab", False)
    hostvars["stream"]["postgresql_config_custom"] = {"port": 1}
    hostvars["app"]["citus_workers_per_host"] = 0

    assert validate(groups, hostvars) == []


@pytest.mark.parametrize(
    "secret",
    [
        "vault_postgresql_postgres_password",
        "vault_postgresql_sluice_writer_password",
        "vault_postgresql_sluice_reader_password",
        "vault_postgresql_monitoring_password",
        "vault_postgresql_replication_password",
    ],
)
def test_a_missing_postgresql_password_is_one_problem(secret):
    groups, hostvars = lab_inventory("lab", True)
    for settings in hostvars.values():
        del settings[secret]

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith(f"hosts app, db and stream: vault secret {secret} is not defined")
    assert "make lab-vault" in problem


def test_a_client_known_only_by_dns_name_is_one_problem():
    groups, hostvars = lab_inventory("lab", False)
    hostvars["app"]["ansible_host"] = "app.lab.example"

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith("host app: ansible_host 'app.lab.example' is not an IP address")
    assert problem.endswith("set ansible_host to the host's IP address in hosts.yml")


def test_a_dns_name_on_a_host_pg_hba_does_not_name_is_fine():
    groups, hostvars = lab_inventory("lab", False)
    hostvars["stream"]["ansible_host"] = "stream.lab.example"

    assert validate(groups, hostvars) == []


# --- ports ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "settings", "port", "users"),
    [
        (
            "lab",
            {"common_node_exporter_port": 5433},
            5433,
            "postgresql cluster worker1 and node_exporter (common_node_exporter_port)",
        ),
        (
            "lab-spread",
            {"postgresql_port_base": 7001},
            7001,
            "postgresql cluster coordinator and redis instance 7001",
        ),
        (
            "lab-spread",
            {"postgresql_port_base": 9292},
            9292,
            "postgresql cluster coordinator and kafka node 1 controller listener",
        ),
        (
            "lab-spread",
            {"postgresql_port_base": 17000},
            17000,
            "postgresql cluster coordinator and the cluster bus of redis instance 7000",
        ),
    ],
)
def test_a_postgresql_port_used_by_another_service_is_one_problem(name, settings, port, users):
    groups, hostvars = lab_inventory(name, True)
    hostvars["db"].update(settings)

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith(f"host db: port {port} is used by {users}: move ")
    assert "postgresql_port_base for host db" in problem


def test_a_standbys_port_is_checked_too():
    groups, hostvars = lab_inventory("lab-spread", True, standbys=["app"])
    hostvars["app"]["common_node_exporter_port"] = 5433  # app: worker1 5432, standby 5433

    problem = only_problem(validate(groups, hostvars))

    assert problem.startswith("host app: port 5433 is used by postgresql cluster coordinator and")


def test_postgresql_ports_on_another_host_do_not_collide():
    groups, hostvars = lab_inventory("lab", False)
    hostvars["app"]["common_node_exporter_port"] = 5432  # app runs no cluster without Citus

    assert validate(groups, hostvars) == []
