"""PostgreSQL (+ Citus) layout (sluice_infra.postgresql_topology): clusters, tuning, pg_hba."""

from __future__ import annotations

import re

import pytest

from sluice_infra.postgresql_topology import (
    Cluster,
    PlanError,
    citus_flag,
    cluster_settings,
    clusters,
    conf_lines,
    conf_value,
    config_problems,
    format_size,
    hba_address,
    hba_lines,
    hba_rules,
    memory_problems,
    memory_settings,
    on_host,
    port_problems,
    preload_libraries,
    primary_cluster,
    size_kb,
    slot_name,
    standby_minimums,
    standbys_of,
    workers,
)

ADDRESSES = {"db": "10.77.0.10", "app": "10.77.0.11", "stream": "10.77.0.12"}
CLIENTS = {"sluice_api": ["app"], "sluice_processor": ["app"], "monitoring": ["app"]}
#: inventories/lab: coordinator and workers on db.
SEED_GROUPS = {
    "all": ["db", "app", "stream"],
    "citus_coordinator": ["db"],
    "citus_workers": ["db"],
    **CLIENTS,
}
#: inventories/lab-spread: coordinator on db, workers on app and stream.
SPREAD_GROUPS = {**SEED_GROUPS, "citus_workers": ["app", "stream"]}


def hostvars(**per_host: dict) -> dict[str, dict]:
    """Every host with its address, plus ``per_host`` settings."""
    return {host: {"ansible_host": a, **per_host.get(host, {})} for host, a in ADDRESSES.items()}


def seed_hostvars(**extra: object) -> dict[str, dict]:
    """The study's seed: 2 workers on db (beside the coordinator)."""
    return hostvars(db={"citus_workers_per_host": 2, **extra})


def placement(items: list[Cluster]) -> list[tuple[str, str, str, int]]:
    return [(c.host, c.name, c.kind, c.port) for c in items]


def only_error(excinfo: pytest.ExceptionInfo[PlanError]) -> str:
    assert len(excinfo.value.problems) == 1, excinfo.value.problems
    return excinfo.value.problems[0]


# --- clusters ----------------------------------------------------------------------------------


def test_the_seed_with_citus_runs_a_coordinator_and_two_workers_on_db():
    items = clusters(SEED_GROUPS, seed_hostvars(), True)

    assert placement(items) == [
        ("db", "coordinator", "coordinator", 5432),
        ("db", "worker1", "worker", 5433),
        ("db", "worker2", "worker", 5434),
    ]
    assert [c.index for c in items] == [0, 1, 2]
    assert {c.address for c in items} == {"10.77.0.10"}
    assert all(c.primary is None and c.slot is None for c in items)


def test_the_seed_without_citus_runs_one_main_cluster_on_the_coordinator_host():
    items = clusters(SEED_GROUPS, seed_hostvars(), False)

    assert placement(items) == [("db", "main", "standalone", 5432)]


def test_the_spread_layout_puts_one_worker_on_each_worker_host():
    items = clusters(SPREAD_GROUPS, hostvars(), True)

    assert placement(items) == [
        ("db", "coordinator", "coordinator", 5432),
        ("app", "worker1", "worker", 5432),
        ("stream", "worker1", "worker", 5432),
    ]
    assert [w.address for w in workers(items)] == ["10.77.0.11", "10.77.0.12"]


def test_without_citus_the_worker_hosts_run_nothing():
    items = clusters(SPREAD_GROUPS, hostvars(), False)

    assert placement(items) == [("db", "main", "standalone", 5432)]


@pytest.mark.parametrize(("enabled", "name"), [(True, "coordinator"), (False, "main")])
def test_a_standby_replicates_the_primary_through_its_own_slot_after_the_hosts_workers(
    enabled, name
):
    settings = hostvars(db={"postgresql_standby_hosts": ["app"]})

    items = clusters(SPREAD_GROUPS, settings, enabled)

    standby = next(c for c in items if c.is_standby)
    primary = primary_cluster(items)
    assert (standby.host, standby.name, standby.kind) == ("app", name, "standby")
    assert standby.port == (5433 if enabled else 5432)  # after app's worker when Citus is on
    assert standby.primary == f"db:{primary.port}" == "db:5432"
    assert (standby.primary_address, standby.primary_port) == ("10.77.0.10", 5432)
    assert standby.slot == "standby_app"
    assert standbys_of(items, primary) == [standby]


def test_ports_follow_each_hosts_port_base():
    settings = seed_hostvars(postgresql_port_base=6432)

    assert [c.port for c in clusters(SEED_GROUPS, settings, True)] == [6432, 6433, 6434]


def test_a_host_without_ansible_host_is_reached_by_its_name():
    settings = seed_hostvars()
    del settings["db"]["ansible_host"]

    assert {c.address for c in clusters(SEED_GROUPS, settings, True)} == {"db"}


def test_clusters_on_a_host_are_in_port_order():
    items = clusters(SEED_GROUPS, seed_hostvars(), True)

    assert [c.name for c in on_host(reversed(items), "db")] == ["coordinator", "worker1", "worker2"]
    assert on_host(items, "app") == []


def test_a_cluster_round_trips_through_plain_data():
    items = clusters(SPREAD_GROUPS, hostvars(db={"postgresql_standby_hosts": ["stream"]}), True)

    data = [c.as_dict() for c in items]

    assert [Cluster.from_mapping(d) for d in data] == items
    assert data[-1]["primary_host"] == "db" and data[-1]["is_standby"] is True
    assert data[0]["primary_port"] is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("true", True), ("False", False), ("yes", True), ("off", False)],
)
def test_citus_enabled_reads_booleans_and_their_templated_text(value, expected):
    assert citus_flag(value) is expected


def test_an_unusable_citus_enabled_is_refused_with_the_fix():
    with pytest.raises(PlanError, match=r"citus_enabled is 'maybe': set true .* or false"):
        clusters(SEED_GROUPS, seed_hostvars(), "maybe")


# --- unusable layouts ---------------------------------------------------------------------------


@pytest.mark.parametrize(("coordinators", "found"), [([], "no host"), (["db", "app"], "2 hosts")])
def test_anything_but_one_coordinator_is_refused(coordinators, found):
    groups = {**SEED_GROUPS, "citus_coordinator": coordinators}

    with pytest.raises(PlanError) as excinfo:
        clusters(groups, seed_hostvars(), False)

    problem = only_error(excinfo)
    assert problem.startswith(f"group citus_coordinator has {found}")
    assert "exactly one host" in problem


def test_citus_without_worker_hosts_is_refused():
    groups = {**SEED_GROUPS, "citus_workers": []}

    with pytest.raises(PlanError, match="citus_enabled is true but group citus_workers has no"):
        clusters(groups, seed_hostvars(), True)

    assert placement(clusters(groups, seed_hostvars(), False)) == [
        ("db", "main", "standalone", 5432)
    ]


@pytest.mark.parametrize("value", [0, -1, "two", True, None])
def test_an_unusable_worker_count_names_the_host_and_the_variable(value):
    settings = hostvars(db={"citus_workers_per_host": value})

    with pytest.raises(PlanError) as excinfo:
        clusters(SEED_GROUPS, settings, True)

    assert only_error(excinfo).startswith(
        f"host db: citus_workers_per_host is {value!r}: set a whole number >= 1"
    )


def test_the_worker_count_is_read_only_where_workers_run():
    settings = hostvars(db={"citus_workers_per_host": 0})

    assert len(clusters(SEED_GROUPS, settings, False)) == 1


def test_a_port_base_without_room_for_the_hosts_clusters_is_refused():
    settings = seed_hostvars(postgresql_port_base=65534)

    with pytest.raises(PlanError) as excinfo:
        clusters(SEED_GROUPS, settings, True)

    problem = only_error(excinfo)
    assert problem.startswith("host db: postgresql_port_base 65534 leaves no room for its 3")
    assert problem.endswith("set it to at most 65533")
    assert len(clusters(SEED_GROUPS, settings, False)) == 1  # one cluster fits


def test_every_host_problem_is_reported_at_once():
    settings = hostvars(app={"citus_workers_per_host": 0}, stream={"postgresql_port_base": "x"})

    with pytest.raises(PlanError) as excinfo:
        clusters(SPREAD_GROUPS, settings, True)

    assert [p.split(":")[0] for p in excinfo.value.problems] == ["host app", "host stream"]


def test_a_standby_on_the_primarys_host_is_refused():
    settings = hostvars(db={"postgresql_standby_hosts": ["db"]})

    with pytest.raises(PlanError) as excinfo:
        clusters(SPREAD_GROUPS, settings, True)

    problem = only_error(excinfo)
    assert problem.startswith("postgresql_standby_hosts names db, the host of the primary cluster")
    assert "point at itself" in problem and "name another host" in problem


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (["db2"], "names 'db2', which is not a host of the inventory: add it under all.hosts"),
        ("app", "must be a list of inventory host names, not 'app'"),
        ([["app"]], "names ['app'], which is not a host of the inventory"),
    ],
)
def test_unusable_standby_hosts_are_refused(value, words):
    settings = hostvars(db={"postgresql_standby_hosts": value})

    with pytest.raises(PlanError) as excinfo:
        clusters(SPREAD_GROUPS, settings, False)

    assert words in only_error(excinfo)


def test_a_standby_named_twice_is_one_standby():
    settings = hostvars(db={"postgresql_standby_hosts": ["app", "app"]})

    assert [c.host for c in clusters(SPREAD_GROUPS, settings, False) if c.is_standby] == ["app"]


def test_slot_names_are_valid_and_unique_per_host():
    assert slot_name("db-2.Example") == "standby_db_2_example"
    assert len(slot_name("h" * 100)) == 63
    groups = {**SEED_GROUPS, "all": [*SEED_GROUPS["all"], "app-1", "app_1"]}
    settings = {
        **hostvars(db={"postgresql_standby_hosts": ["app-1", "app_1"]}),
        "app-1": {"ansible_host": "10.77.0.21"},
        "app_1": {"ansible_host": "10.77.0.22"},
    }

    with pytest.raises(
        PlanError, match="app-1, app_1 would share the replication slot standby_app_1"
    ):
        clusters(groups, settings, False)


# --- postgresql.conf ---------------------------------------------------------------------------


def test_the_study_db_vm_splits_its_memory_across_its_three_clusters():
    settings = memory_settings(32768, 8, 3, "worker")

    assert settings["shared_buffers"] == "2730MB"  # 25% of 32 GB / 3
    assert settings["effective_cache_size"] == "8191MB"  # 75% of 32 GB / 3
    assert settings["work_mem"] == "27MB"
    assert settings["maintenance_work_mem"] == "682MB"
    assert settings["max_parallel_workers"] == "2"
    assert int(settings["max_worker_processes"]) >= int(settings["max_parallel_workers"]) + 2


def test_a_single_cluster_gets_the_studys_shares_of_the_whole_host():
    settings = memory_settings(16384, 6, 1)

    assert settings["shared_buffers"] == "4GB"
    assert settings["effective_cache_size"] == "12GB"
    assert settings["max_parallel_workers"] == "6"
    assert settings["max_parallel_workers_per_gather"] == "3"
    assert settings["max_parallel_maintenance_workers"] == "3"


def test_the_studys_fixed_settings_are_there():
    settings = memory_settings(32768, 8, 3, "coordinator")

    assert {
        key: settings[key]
        for key in (
            "min_wal_size",
            "max_wal_size",
            "checkpoint_timeout",
            "checkpoint_completion_target",
            "log_min_duration_statement",
            "jit",
            "password_encryption",
        )
    } == {
        "min_wal_size": "1GB",
        "max_wal_size": "4GB",
        "checkpoint_timeout": "15min",
        "checkpoint_completion_target": "0.9",
        "log_min_duration_statement": "100ms",
        "jit": "on",
        "password_encryption": "scram-sha-256",
    }
    assert list(settings) == sorted(settings)  # stable output
    assert "hot_standby" not in settings


@pytest.mark.parametrize(
    ("memory", "vcpus", "count"), [(32768, 8, 3), (24576, 12, 2), (2048, 2, 3)]
)
def test_the_clusters_of_a_host_never_claim_more_than_its_memory(memory, vcpus, count):
    settings = memory_settings(memory, vcpus, count)

    shared = size_kb("shared_buffers", settings["shared_buffers"]) / 1024
    work = size_kb("work_mem", settings["work_mem"]) / 1024
    assert shared * count <= memory * 0.25
    assert (shared + work * int(settings["max_connections"])) * count <= memory
    assert memory_problems(memory, count, settings) == []


def test_a_tiny_lab_machine_gets_working_floors_and_smaller_wal():
    settings = memory_settings(256, 1, 3)

    assert settings["shared_buffers"] == "32MB"
    assert settings["effective_cache_size"] == "128MB"
    assert settings["work_mem"] == "4MB"
    assert settings["maintenance_work_mem"] == "64MB"
    assert settings["max_parallel_workers"] == "2"
    assert (settings["min_wal_size"], settings["max_wal_size"]) == ("256MB", "1GB")
    assert memory_settings(6144, 1, 3)["max_wal_size"] == "2GB"


def test_a_standby_is_a_hot_standby_that_keeps_up_with_its_primary():
    primary = memory_settings(32768, 8, 1, "coordinator")
    own = memory_settings(24576, 12, 2, "standby")

    settings = standby_minimums(own, {**primary, "max_connections": "300"})

    assert own["hot_standby"] == "on" and own["hot_standby_feedback"] == "on"
    assert settings["max_connections"] == "300"
    assert settings["max_worker_processes"] == primary["max_worker_processes"] == "16"
    assert standby_minimums({"max_worker_processes": "20"}, primary)["max_worker_processes"] == "20"


def test_a_primary_running_the_defaults_adds_nothing_to_its_standby():
    """The running primary reports every setting; those at PostgreSQL's default must not
    appear in the standby's file (the second run would change it)."""
    running = {"max_prepared_transactions": "0", "max_locks_per_transaction": "64"}
    assert standby_minimums({"max_connections": "100"}, running) == {"max_connections": "100"}
    raised = standby_minimums({}, {"max_locks_per_transaction": "128"})
    assert raised == {"max_locks_per_transaction": "128"}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((0, 8, 3), "memory (MB) is 0"),
        ((32768, "eight", 3), "vCPUs is 'eight'"),
        ((32768, 8, 0), "clusters on the host is 0"),
    ],
)
def test_unusable_host_facts_are_refused(args, words):
    with pytest.raises(PlanError, match=re.escape(words)):
        memory_settings(*args)


def test_an_unknown_kind_is_refused():
    with pytest.raises(PlanError, match="kind 'replica' is not one of standalone, coordinator"):
        memory_settings(32768, 8, 3, "replica")


@pytest.mark.parametrize(
    ("key", "value", "kb"),
    [
        ("shared_buffers", "4GB", 4 * 1024 * 1024),
        ("shared_buffers", "512 MB", 512 * 1024),
        ("work_mem", "64kB", 64),
        ("work_mem", "1.5GB", 1.5 * 1024 * 1024),
        ("shared_buffers", 131072, 1024 * 1024),  # bare: 8kB pages
        ("work_mem", "4096", 4096),  # bare: kB
        ("work_mem", "4gb", None),  # PostgreSQL's units are case-sensitive
        ("work_mem", "lots", None),
        ("work_mem", True, None),
    ],
)
def test_sizes_are_read_as_postgresql_reads_them(key, value, kb):
    assert size_kb(key, value) == kb


def test_sizes_are_written_in_whole_units():
    assert [format_size(mb) for mb in (4096, 2730, 1024, 64)] == ["4GB", "2730MB", "1GB", "64MB"]


# --- overrides that cannot work -----------------------------------------------------------------


def test_overrides_within_the_hosts_memory_pass():
    custom = {"shared_buffers": "8GB", "effective_cache_size": "8GB", "work_mem": "32MB"}

    assert memory_problems(32768, 3, custom, host="db") == []


def test_shared_buffers_beyond_the_host_name_the_key_and_the_fix():
    problems = memory_problems(32768, 3, {"shared_buffers": "16GB"}, host="db")

    assert problems == [
        "host db: postgresql_config_custom shared_buffers 16GB on each of its 3 clusters needs "
        "49152MB, more than the host's 32768MB: lower it (the default is 2730MB: 25% of the "
        "host's memory split across its clusters) (in host_vars/db.yml or group_vars)"
    ]


def test_effective_cache_size_beyond_the_host_is_refused():
    (problem,) = memory_problems(16384, 1, {"effective_cache_size": "20GB"}, host="stream")

    assert problem.startswith("host stream: postgresql_config_custom effective_cache_size 20GB ")
    assert "on its cluster needs 20480MB, more than the host's 16384MB" in problem


@pytest.mark.parametrize(
    "custom", [{"work_mem": "256MB"}, {"max_connections": 2000}, {"max_connections": "2000"}]
)
def test_work_mem_times_connections_beyond_the_host_is_refused(custom):
    (problem,) = memory_problems(32768, 3, custom, host="db")

    assert "postgresql_config_custom work_mem" in problem and "x max_connections" in problem
    assert "lower work_mem or max_connections" in problem


def test_a_bare_number_counts_in_the_settings_own_unit():
    pages_8gb = 8 * 1024 * 1024 // 8

    assert memory_problems(32768, 3, {"shared_buffers": pages_8gb}) == []
    assert len(memory_problems(32768, 5, {"shared_buffers": pages_8gb})) == 1


@pytest.mark.parametrize(
    ("custom", "words"),
    [
        ({"shared_buffers": "16gb"}, "shared_buffers is '16gb': not a PostgreSQL memory size"),
        ({"max_connections": "many"}, "max_connections is 'many': set a whole number >= 1"),
        ({"port": 5440}, "sets port: ports come from postgresql_port_base; take it out"),
        ({"shared_preload_libraries": "citus"}, "sets shared_preload_libraries: it is built"),
        ({"password_encryption": "md5"}, "sets password_encryption: the study's authentication"),
        (["shared_buffers=1GB"], "must be a mapping of postgresql.conf settings"),
    ],
)
def test_overrides_that_cannot_be_rendered_are_refused(custom, words):
    for problems in (memory_problems(32768, 3, custom, host="db"), config_problems(custom)):
        assert len(problems) == 1 and words in problems[0], problems


def test_the_studys_password_encryption_may_be_repeated():
    assert config_problems({"password_encryption": "scram-sha-256"}) == []


# --- shared_preload_libraries and rendering -----------------------------------------------------


def test_citus_is_the_first_preload_library_when_enabled():
    assert preload_libraries(True) == ["citus", "pg_stat_statements", "pg_partman_bgw"]
    assert preload_libraries(False) == ["pg_stat_statements", "pg_partman_bgw"]
    assert preload_libraries("true", ["auto_explain", "citus", "auto_explain"]) == [
        "citus",
        "pg_stat_statements",
        "pg_partman_bgw",
        "auto_explain",
    ]


def test_citus_as_an_extra_library_without_citus_enabled_is_refused():
    with pytest.raises(PlanError, match="set citus_enabled: true instead"):
        preload_libraries(False, ["citus"])


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "on"),
        (False, "off"),
        (100, "100"),
        ("2730MB", "2730MB"),
        ("0.9", "0.9"),
        ("scram-sha-256", "'scram-sha-256'"),
        ("%m [%p] ", "'%m [%p] '"),
        ("it's", "'it''s'"),
        (["citus", "pg_stat_statements"], "'citus,pg_stat_statements'"),
        ("", "''"),
    ],
)
def test_conf_values_are_quoted_when_they_must_be(value, text):
    assert conf_value(value) == text


def test_conf_lines_are_sorted():
    assert conf_lines({"work_mem": "4MB", "jit": True}) == ["jit = on", "work_mem = 4MB"]


# --- pg_hba.conf --------------------------------------------------------------------------------


def rules_of(groups, settings, enabled, name, host="db"):
    items = clusters(groups, settings, enabled)
    cluster = next(c for c in items if c.name == name and c.host == host)
    return hba_rules(cluster, groups, settings, enabled)


def rule(kind, database, user, address, method="scram-sha-256"):
    return {"type": kind, "database": database, "user": user, "address": address, "method": method}


def test_the_lab_main_cluster_lets_in_exactly_the_apps_users_by_password():
    rules = rules_of(SEED_GROUPS, seed_hostvars(), False, "main")

    assert rules == [
        rule("local", "all", "postgres", "", "peer"),
        rule("local", "all", "all", ""),
        rule("host", "sluice", "sluice_writer", "10.77.0.11/32"),
        rule("host", "sluice", "sluice_reader", "10.77.0.11/32"),
        rule("host", "all", "monitoring", "10.77.0.11/32"),
    ]


def test_the_coordinator_also_lets_in_the_citus_nodes():
    groups = {**SPREAD_GROUPS, "sluice_processor": ["stream"]}
    rules = rules_of(groups, hostvars(), True, "coordinator")

    internode = {(r["user"], r["address"]) for r in rules if r["database"] == "sluice"}
    assert ("postgres", "10.77.0.11/32") in internode  # coordinator -> workers and back
    assert ("postgres", "10.77.0.12/32") in internode
    assert rule("host", "sluice", "sluice_writer", "10.77.0.12/32") in rules
    assert rule("host", "sluice", "sluice_reader", "10.77.0.11/32") in rules


def test_a_worker_lets_in_the_citus_nodes_but_not_the_apps_hosts():
    rules = rules_of(SEED_GROUPS, seed_hostvars(), True, "worker2")

    addresses = {r["address"] for r in rules if r["type"] == "host" and r["user"] != "monitoring"}
    assert addresses == {"10.77.0.10/32"}  # db: coordinator and workers, nobody else
    assert {r["user"] for r in rules if r["address"] == "10.77.0.10/32"} == {
        "postgres",
        "sluice_writer",
        "sluice_reader",
        "monitoring",
    }


def test_replication_is_allowed_from_the_standby_host_on_the_primary_only():
    settings = hostvars(db={"postgresql_standby_hosts": ["stream"]})
    replication = rule("host", "replication", "replication", "10.77.0.12/32")

    assert replication in rules_of(SPREAD_GROUPS, settings, False, "main")
    assert replication in rules_of(SPREAD_GROUPS, settings, True, "coordinator")
    assert replication not in rules_of(SPREAD_GROUPS, settings, True, "worker1", "app")
    standby = rules_of(SPREAD_GROUPS, settings, True, "coordinator", "stream")
    assert all(r["database"] != "replication" for r in standby)
    assert rule("host", "sluice", "sluice_writer", "10.77.0.11/32") in standby  # for promotion
    assert all(
        r["database"] != "replication" for r in rules_of(SEED_GROUPS, hostvars(), False, "main")
    )


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("standby", [[], ["app"]])
def test_no_rule_ever_trusts_and_every_network_is_one_address(enabled, standby):
    settings = hostvars(db={"postgresql_standby_hosts": standby})
    for cluster in clusters(SPREAD_GROUPS, settings, enabled):
        for entry in hba_rules(cluster, SPREAD_GROUPS, settings, enabled):
            assert entry["method"] in ("peer", "scram-sha-256")
            assert entry["method"] == "scram-sha-256" or entry["user"] == "postgres"
            assert entry["type"] == "local" or entry["address"].endswith("/32")


def test_ipv6_hosts_are_allowed_as_one_address():
    settings = hostvars(app={"ansible_host": "2001:DB8::0:11"})

    rules = rules_of(SEED_GROUPS, settings, False, "main")

    assert rule("host", "sluice", "sluice_writer", "2001:db8::11/128") in rules


def test_a_dns_name_is_refused_naming_the_host():
    settings = hostvars(app={"ansible_host": "app.example.org"})

    with pytest.raises(PlanError) as excinfo:
        rules_of(SEED_GROUPS, settings, False, "main")

    problem = only_error(excinfo)
    assert problem.startswith("host app: ansible_host 'app.example.org' is not an IP address")
    assert problem.endswith("set ansible_host to the host's IP address in hosts.yml")


def test_hba_rules_accept_a_cluster_as_plain_data():
    settings = seed_hostvars()
    cluster = clusters(SEED_GROUPS, settings, True)[0]

    assert hba_rules(cluster.as_dict(), SEED_GROUPS, settings, True) == hba_rules(
        cluster, SEED_GROUPS, settings, True
    )


def test_hba_lines_align_columns_and_refuse_trust():
    lines = hba_lines(
        [rule("local", "all", "postgres", "", "peer"), rule("host", "sluice", "x", "10.0.0.1/32")]
    )

    assert lines[0].split() == ["local", "all", "postgres", "peer"]
    assert lines[1].split() == ["host", "sluice", "x", "10.0.0.1/32", "scram-sha-256"]
    assert lines[0].index("peer") == lines[1].index("scram-sha-256")
    with pytest.raises(PlanError, match="never trusts"):
        hba_lines([rule("host", "all", "all", "0.0.0.0/0", "trust")])


def test_hba_address_gives_the_single_address_network():
    assert hba_address("db", {"ansible_host": "10.77.0.10"}) == "10.77.0.10/32"


# --- ports --------------------------------------------------------------------------------------


def test_a_port_shared_with_another_service_names_both_and_the_fix():
    items = clusters(SEED_GROUPS, seed_hostvars(), True)

    problems = port_problems(items, {"db": {"node_exporter (common_node_exporter_port)": 5433}})

    assert problems == [
        "host db: port 5433 is used by postgresql cluster worker1 and node_exporter "
        "(common_node_exporter_port): move postgresql_port_base for host db (now 5432) clear of "
        "it, or move the other service's port"
    ]


def test_other_services_collisions_are_theirs_to_report():
    items = clusters(SEED_GROUPS, seed_hostvars(), True)

    assert port_problems(items, {"db": {"a": 9000, "b": 9000}, "app": {"c": 5432}}) == []


def _seed_with_standby() -> tuple[Cluster, Cluster]:
    items = clusters(SEED_GROUPS, hostvars(db={"postgresql_standby_hosts": ["app"]}), False)
    return primary_cluster(items), next(c for c in items if c.is_standby)


def test_a_primary_archives_to_its_stanza_and_the_operator_wins():
    primary, _ = _seed_with_standby()
    settings = cluster_settings(
        primary,
        {"shared_buffers": "1GB", "max_connections": "200"},
        {"wal_level": "replica", "max_connections": "300"},
        {"max_connections": "400"},
        conf_dir="/etc/postgresql/15",
        stanza_prefix="db-",
    )
    assert settings == {
        "shared_buffers": "1GB",
        "wal_level": "replica",
        "max_connections": "400",  # sizing < defaults < custom
        "archive_mode": "on",
        "archive_command": "pgbackrest --stanza=db-main archive-push %p",
    }


def test_a_standby_streams_through_its_slot_with_a_passfile_and_keeps_up_with_its_primary():
    _, standby = _seed_with_standby()
    settings = cluster_settings(
        standby,
        {"max_connections": "100"},
        {},
        {},
        conf_dir="/etc/postgresql/15",
        stanza_prefix="app-",
        primary_planned={"max_connections": "150"},
        primary_running={"max_connections": "300", "max_worker_processes": "4"},
    )
    assert settings["primary_conninfo"] == (
        "host=10.77.0.10 port=5432 user=replication "
        "passfile=/etc/postgresql/15/main/replication.pgpass sslmode=require "
        "application_name=standby_app"
    )
    assert "password" not in settings["primary_conninfo"]
    assert settings["primary_slot_name"] == "standby_app"
    assert "archive_command" not in settings
    # raised to the higher of the primary's planned and running values, never lowered
    assert settings["max_connections"] == "300"
    assert "max_worker_processes" not in settings  # 4 is below PostgreSQL's default (8)
