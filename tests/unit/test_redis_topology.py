"""Redis Cluster planning (sluice_infra.redis_topology), its filters and its inventory checks."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from seed_layout import ADDRESSES, GROUPS, the_problem, valid_hostvars

from sluice_infra.inventory import validate, variables_read
from sluice_infra.redis_topology import (
    HASH_SLOTS,
    Instance,
    PlanError,
    anti_affinity_possible,
    anti_affinity_violations,
    instances,
    plan,
    port_collisions,
)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COUNT = "redis_cluster_instances_per_host"
FILTER = REPO / "ansible" / "plugins" / "filter" / "sluice_redis.py"


def hostvars_for(counts: dict[str, int], **extra: dict) -> dict[str, dict]:
    """{host: {ansible_host, redis_cluster_instances_per_host}} for hosts h0, h1... or named."""
    return {
        host: {
            "ansible_host": ADDRESSES.get(host, f"10.0.0.{n + 20}"),
            "redis_cluster_instances_per_host": count,
            **extra.get(host, {}),
        }
        for n, (host, count) in enumerate(counts.items())
    }


def layout(counts: dict[str, int], replicas: int = 1) -> list[dict]:
    return plan(instances(list(counts), hostvars_for(counts), 2, 7000), replicas)


def masters_of(entries: list[dict]) -> list[dict]:
    return [e for e in entries if e["role"] == "master"]


def replicas_of(entries: list[dict], master: dict) -> list[dict]:
    return [e for e in entries if e["master"] == master["endpoint"]]


def assert_slots_cover_every_slot_once(entries: list[dict]) -> None:
    ranges = [tuple(m["slots"]) for m in masters_of(entries)]
    assert ranges[0][0] == 0 and ranges[-1][1] == HASH_SLOTS - 1
    for (_, last), (first, _) in itertools.pairwise(ranges):
        assert first == last + 1, ranges  # contiguous, in master order
    sizes = [last - first + 1 for first, last in ranges]
    assert sum(sizes) == HASH_SLOTS and max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True), "the first masters take the extra slots"


def assert_every_master_has(entries: list[dict], replicas: int) -> None:
    endpoints = {m["endpoint"] for m in masters_of(entries)}
    for entry in entries:
        if entry["role"] == "replica":
            assert entry["master"] in endpoints and entry["slots"] is None
    for master in masters_of(entries):
        assert master["master"] is None
        assert len(replicas_of(entries, master)) == replicas
    assert len(entries) == len({e["endpoint"] for e in entries})


# --- instances ---------------------------------------------------------------------------------


def test_an_instance_has_an_endpoint_and_a_bus_port():
    item = Instance("stream", "10.77.0.12", 7003)
    assert item.endpoint == "10.77.0.12:7003"
    assert item.bus_port == 17003
    assert Instance.from_mapping(item.as_dict()) == item


def test_instances_take_host_settings_else_the_defaults():
    hostvars = {
        "stream": {"ansible_host": "10.77.0.12", "redis_cluster_instances_per_host": 3},
        "db": {"redis_cluster_port_base": 8000},
    }

    items = instances(["stream", "db", "stream"], hostvars, 2, 7000)

    assert [(i.host, i.address, i.port) for i in items] == [
        ("stream", "10.77.0.12", 7000),
        ("stream", "10.77.0.12", 7001),
        ("stream", "10.77.0.12", 7002),
        ("db", "db", 8000),  # no ansible_host: the host name
        ("db", "db", 8001),
    ]


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"redis_cluster_instances_per_host": 0}, ["redis_cluster_instances_per_host is 0"]),
        ({"redis_cluster_instances_per_host": "six"}, ["redis_cluster_instances_per_host", "six"]),
        ({"redis_cluster_port_base": True}, ["redis_cluster_port_base is True"]),
        ({"redis_cluster_port_base": 55535, "redis_cluster_instances_per_host": 2}, ["65536"]),
    ],
)
def test_unusable_host_settings_are_named(settings, words):
    with pytest.raises(PlanError) as raised:
        instances(["stream"], {"stream": settings}, 2, 7000)
    assert str(raised.value).startswith("host stream: ")
    assert all(word in str(raised.value) for word in words), str(raised.value)


# --- plan --------------------------------------------------------------------------------------


def test_the_seed_layout_makes_three_masters_and_three_replicas_on_one_host():
    entries = layout({"stream": 6})

    assert [(e["port"], e["role"]) for e in entries] == [
        (7000, "master"),
        (7001, "master"),
        (7002, "master"),
        (7003, "replica"),
        (7004, "replica"),
        (7005, "replica"),
    ]
    assert [m["slots"] for m in masters_of(entries)] == [[0, 5461], [5462, 10922], [10923, 16383]]
    assert_slots_cover_every_slot_once(entries)
    assert_every_master_has(entries, 1)
    # One host: a replica beside its master cannot be avoided, and is allowed.
    assert not anti_affinity_possible(instances(["stream"], hostvars_for({"stream": 6})), 1)
    assert len(anti_affinity_violations(entries)) == 3


def test_the_spread_layout_keeps_every_replica_off_its_masters_host():
    entries = layout({"db": 2, "app": 2, "stream": 2})

    masters = masters_of(entries)
    assert sorted(m["host"] for m in masters) == ["app", "db", "stream"]
    assert_slots_cover_every_slot_once(entries)
    assert_every_master_has(entries, 1)
    for master in masters:
        (replica,) = replicas_of(entries, master)
        assert replica["host"] != master["host"]
    assert anti_affinity_violations(entries) == []
    assert all(e["endpoint"] == f"{ADDRESSES[e['host']]}:{e['port']}" for e in entries)


def test_four_hosts_with_two_instances_make_four_masters_on_four_hosts():
    entries = layout({"a": 2, "b": 2, "c": 2, "d": 2})

    assert sorted(m["host"] for m in masters_of(entries)) == ["a", "b", "c", "d"]
    assert_slots_cover_every_slot_once(entries)
    assert [m["slots"][1] - m["slots"][0] + 1 for m in masters_of(entries)] == [4096] * 4
    assert_every_master_has(entries, 1)
    assert anti_affinity_violations(entries) == []


def test_two_replicas_per_master_sit_on_the_two_other_hosts():
    entries = layout({"a": 3, "b": 3, "c": 3}, replicas=2)

    masters = masters_of(entries)
    assert sorted(m["host"] for m in masters) == ["a", "b", "c"]
    assert_every_master_has(entries, 2)
    for master in masters:
        hosts = sorted(r["host"] for r in replicas_of(entries, master))
        assert hosts == sorted({"a", "b", "c"} - {master["host"]})


def test_masters_are_spread_round_robin_over_hosts_sorted_by_name():
    entries = layout({"stream": 3, "app": 3}, replicas=1)

    assert [m["endpoint"] for m in masters_of(entries)] == [
        "10.77.0.11:7000",  # app
        "10.77.0.12:7000",  # stream
        "10.77.0.11:7001",  # app
    ]
    assert anti_affinity_violations(entries) == []


def test_the_plan_does_not_depend_on_the_order_of_the_instances():
    items = instances(["db", "app", "stream"], hostvars_for({"db": 3, "app": 3, "stream": 3}))

    assert plan(items, 2) == plan(list(reversed(items)), 2) == plan(sorted(items, key=str), 2)


def is_cluster(total: int, replicas: int) -> bool:
    return total % (replicas + 1) == 0 and total // (replicas + 1) >= 3


#: (hosts, instances per host, replicas) with as many masters on every host.
EVEN = [
    (hosts, count, replicas)
    for hosts in (2, 3, 4, 5)
    for count in (1, 2, 3, 4, 6)
    for replicas in (0, 1, 2, 3)
    if is_cluster(hosts * count, replicas) and (hosts * count // (replicas + 1)) % hosts == 0
]


@pytest.mark.parametrize(("hosts", "count", "replicas"), EVEN)
def test_even_hosts_keep_every_replica_off_its_masters_host(hosts, count, replicas):
    entries = layout({f"h{n}": count for n in range(hosts)}, replicas)

    assert_slots_cover_every_slot_once(entries)
    assert_every_master_has(entries, replicas)
    assert anti_affinity_violations(entries) == []
    if replicas < hosts:  # room for a master's replicas on distinct other hosts
        for master in masters_of(entries):
            replica_hosts = [r["host"] for r in replicas_of(entries, master)]
            assert len(set(replica_hosts)) == len(replica_hosts), entries


def fewest_violations(items: list[Instance], entries: list[dict], replicas: int) -> int:
    """The fewest replicas on their master's host any assignment of the same masters allows."""
    masters = [Instance(m["host"], m["address"], m["port"]) for m in masters_of(entries)]
    spares = [i for i in items if i not in masters]
    slots = [m.host for m in masters for _ in range(replicas)]
    return min(
        sum(spare.host == host for spare, host in zip(order, slots, strict=True))
        for order in itertools.permutations(spares)
    )


UNEVEN = [
    (counts, replicas)
    for counts in (
        {"a": 4, "b": 1, "c": 1},
        {"a": 3, "b": 2, "c": 1},
        {"a": 1, "b": 5},
        {"a": 2, "b": 4},
        {"a": 1, "b": 1, "c": 4, "d": 2},
        {"a": 5, "b": 2, "c": 2},
        {"a": 6, "b": 2, "c": 1},
        {"a": 2, "b": 2, "c": 2, "d": 3},
    )
    for replicas in (1, 2)
    if is_cluster(sum(counts.values()), replicas)
]


@pytest.mark.parametrize(("counts", "replicas"), UNEVEN)
def test_uneven_hosts_get_the_fewest_replicas_beside_their_master(counts, replicas):
    items = instances(list(counts), hostvars_for(counts))
    entries = plan(items, replicas)

    assert_every_master_has(entries, replicas)
    assert len(anti_affinity_violations(entries)) == fewest_violations(items, entries, replicas)


def test_four_instances_make_too_few_masters():
    with pytest.raises(PlanError, match="Redis Cluster needs at least 3 masters; have 2"):
        layout({"db": 2, "app": 2})


def test_five_instances_are_not_a_multiple_of_master_and_replica():
    with pytest.raises(PlanError) as raised:
        layout({"db": 2, "app": 2, "stream": 1})
    assert str(raised.value) == (
        "5 instances cannot be split into masters with 1 replicas each; "
        "use a multiple of 2 instances"
    )


@pytest.mark.parametrize("replicas", [-1, "one", None])
def test_a_bad_replica_count_is_refused(replicas):
    with pytest.raises(PlanError, match="redis_cluster_replicas is"):
        layout({"stream": 6}, replicas)


def test_without_replicas_every_instance_is_a_master():
    entries = layout({"stream": 3}, replicas=0)

    assert [e["role"] for e in entries] == ["master"] * 3
    assert_slots_cover_every_slot_once(entries)
    assert anti_affinity_possible([], 0)


# --- ports -------------------------------------------------------------------------------------


def test_an_instance_port_used_by_another_service_is_named():
    items = instances(["stream"], {"stream": {"redis_cluster_instances_per_host": 6}}, 2, 7000)

    assert port_collisions(items, {"stream": [7003], "db": [7000]}) == [
        "host stream: port 7003 is used by both redis instance 7003 and another service on "
        "port 7003"
    ]
    assert port_collisions(items, {"stream": {"node_exporter": 17005}}) == [
        "host stream: port 17005 is used by both the cluster bus of redis instance 7005 and "
        "node_exporter"
    ]
    assert port_collisions(items, {"stream": [9100]}) == []


def test_a_bus_port_colliding_with_a_second_port_base_is_named():
    first = instances(["stream"], {"stream": {"redis_cluster_port_base": 7000}}, 2, 7000)
    second = instances(["stream"], {"stream": {"redis_cluster_port_base": 17000}}, 2, 7000)
    elsewhere = instances(["db"], {"db": {"redis_cluster_port_base": 17000}}, 2, 7000)

    assert port_collisions(first + second) == [
        "host stream: port 17000 is used by both the cluster bus of redis instance 7000 and "
        "redis instance 17000",
        "host stream: port 17001 is used by both the cluster bus of redis instance 7001 and "
        "redis instance 17001",
    ]
    assert port_collisions(first + elsewhere) == []  # other host, other ports


# --- filters -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def filters() -> dict:
    spec = importlib.util.spec_from_file_location("sluice_redis_filters", FILTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()


def test_the_filters_return_what_the_module_does(filters):
    hostvars = hostvars_for({"db": 2, "app": 2, "stream": 2})
    hosts = ["db", "app", "stream"]

    listed = filters["sluice_redis_instances"](hosts, hostvars)
    planned = filters["sluice_redis_plan"](listed, 1)

    assert listed == [i.as_dict() for i in instances(hosts, hostvars, 2, 7000)]
    assert planned == plan(instances(hosts, hostvars, 2, 7000), 1)
    local = filters["sluice_redis_host_instances"](planned, "db")
    assert [(e["host"], e["port"]) for e in local] == [("db", 7000), ("db", 7001)]
    assert {e["role"] for e in local} == {"master", "replica"}


def test_the_filters_fail_the_task_with_the_plan_error(filters):
    listed = filters["sluice_redis_instances"](["stream"], {"stream": {}})
    with pytest.raises(AnsibleFilterError, match="needs at least 3 masters; have 1"):
        filters["sluice_redis_plan"](listed, 1)
    with pytest.raises(AnsibleFilterError, match="host stream: redis_cluster_port_base is 'x'"):
        filters["sluice_redis_instances"](["stream"], {"stream": {"redis_cluster_port_base": "x"}})


SPREAD_HOSTS = """\
all:
  hosts:
    db: {ansible_host: 10.77.0.10}
    app: {ansible_host: 10.77.0.11}
    stream: {ansible_host: 10.77.0.12, redis_cluster_port_base: 7100}
  children:
    redis_cluster:
      hosts: {db: , app: , stream: }
"""


@pytest.mark.ansible
def test_ansible_finds_the_filters_and_plans_from_hostvars(tmp_path):
    (tmp_path / "hosts.yml").write_text(SPREAD_HOSTS)
    expression = (
        "{{ groups['redis_cluster'] | sluice_redis_instances(hostvars) | sluice_redis_plan "
        "| sluice_redis_host_instances(inventory_hostname) }}"
    )
    env = {
        **{k: v for k, v in os.environ.items() if k != "ANSIBLE_VAULT_PASSWORD_FILE"},
        "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"),
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_NOCOLOR": "1",
    }
    command = [str(BIN / "ansible"), "stream", "-i", str(tmp_path / "hosts.yml")]
    result = subprocess.run(
        [*command, "-m", "debug", "-a", f"msg={expression}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    # "stream | SUCCESS => {...}": the debug task's result, run on the controller
    local = json.loads(result.stdout.split("=>", 1)[1])["msg"]
    items = instances(
        ["db", "app", "stream"],
        {
            "db": {"ansible_host": "10.77.0.10"},
            "app": {"ansible_host": "10.77.0.11"},
            "stream": {"ansible_host": "10.77.0.12", "redis_cluster_port_base": 7100},
        },
    )
    assert local == sorted(
        (e for e in plan(items, 1) if e["host"] == "stream"), key=lambda e: e["port"]
    )
    assert [e["endpoint"] for e in local] == ["10.77.0.12:7100", "10.77.0.12:7101"]


# --- inventory checks --------------------------------------------------------------------------


def inventory(redis_hosts: dict[str, dict] | None = None) -> tuple[dict, dict]:
    """The seed layout (tests/unit/seed_layout.py), complete and valid, its Redis hosts and
    their settings replaced by ``redis_hosts`` (default: the seed's stream running 6)."""
    if redis_hosts is None:
        redis_hosts = {"stream": {COUNT: 6}}
    groups = {name: list(hosts) for name, hosts in GROUPS.items()}
    groups["redis_cluster"] = list(redis_hosts)
    hostvars = valid_hostvars(redis_hosts)
    return groups, hostvars


SPREAD = {"db": {}, "app": {}, "stream": {}}


def test_the_seed_and_spread_layouts_are_valid():
    assert validate(*inventory()) == []
    assert validate(*inventory(SPREAD)) == []


def test_the_checks_read_the_redis_settings():
    assert {
        "redis_cluster_instances_per_host",
        "redis_cluster_port_base",
        "redis_cluster_replicas",
        "common_node_exporter_port",
        "common_ssh_port",
        "redis_cluster_exporter_port_base",
    } <= variables_read()


def test_a_single_host_at_the_default_count_has_too_few_masters():
    problems = validate(*inventory({"stream": {}}))

    assert problems == [
        "group redis_cluster: 2 instances (redis_cluster_instances_per_host per host: stream: 2) "
        "with redis_cluster_replicas 1 make 1 master(s); Redis Cluster needs at least 3 "
        "masters, i.e. 6 instances: raise redis_cluster_instances_per_host or add hosts to "
        "redis_cluster"
    ]


def test_an_instance_count_that_leaves_a_replica_without_master_is_named():
    problems = validate(*inventory({"db": {}, "app": {}, "stream": {COUNT: 3}}))

    problem = the_problem(problems, "replicas that cannot be placed")
    assert "7 instances" in problem and "app: 2, db: 2, stream: 3" in problem
    assert (
        "multiple of 2 (e.g. 6 or 8)" in problem and "redis_cluster_instances_per_host" in problem
    )
    assert len(problems) == 1  # 7 // 2 = 3 masters: enough


def test_too_few_masters_and_an_odd_count_are_both_reported():
    problems = validate(*inventory({"app": {}, "stream": {"redis_cluster_instances_per_host": 3}}))

    assert len(problems) == 2, problems
    the_problem(problems, "5 instances", "make 2 master(s)", "add hosts to redis_cluster")
    the_problem(problems, "5 instances", "1 would be replicas that cannot be placed")


@pytest.mark.parametrize(
    ("settings", "port", "user"),
    [
        ({"redis_cluster_port_base": 9095}, 9100, "node_exporter (common_node_exporter_port)"),
        ({"redis_cluster_port_base": 12, "redis_cluster_instances_per_host": 12}, 22, "ssh"),
        ({"common_node_exporter_port": 17002}, 17002, "the cluster bus of redis instance 7002"),
        (
            {"redis_cluster_port_base": 9120},
            9121,
            "the exporter of redis instance 9120 (redis_cluster_exporter_port_base)",
        ),
    ],
)
def test_a_port_collision_names_host_port_both_users_and_the_fix(settings, port, user):
    redis = {"redis_cluster_instances_per_host": 6, **settings}
    problem = the_problem(validate(*inventory({"stream": redis})), f"port {port} ")

    assert problem.startswith(f"host stream: port {port} is used by both ")
    assert user in problem
    assert "set redis_cluster_port_base for host stream" in problem


def test_replicas_beside_their_master_are_refused_when_hosts_allow_better():
    problems = validate(
        *inventory(
            {
                "db": {"redis_cluster_instances_per_host": 4},
                "app": {"redis_cluster_instances_per_host": 1},
                "stream": {"redis_cluster_instances_per_host": 1},
            }
        )
    )

    problem = the_problem(problems, "with its master")
    assert (
        "replica 10.77.0.10:" in problem and "on host db with its master 10.77.0.10:7000" in problem
    )
    assert "app: 1, db: 4, stream: 1" in problem and "redis_cluster_instances_per_host" in problem


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"stream": {"redis_cluster_instances_per_host": "many"}}, ["host stream:", "'many'"]),
        (
            {"stream": {"redis_cluster_replicas": -1}},
            ["host stream:", "redis_cluster_replicas is -1"],
        ),
    ],
)
def test_unusable_settings_are_named_once(settings, words):
    redis = {"stream": {"redis_cluster_instances_per_host": 6, **settings["stream"]}}
    problems = validate(*inventory(redis))

    assert len(problems) == 1, problems
    the_problem(problems, *words)


def test_replicas_must_be_the_same_on_every_host():
    problems = validate(*inventory({"db": {}, "app": {}, "stream": {"redis_cluster_replicas": 2}}))

    problem = the_problem(problems, "redis_cluster_replicas differs")
    assert "1 on app and db; 2 on stream" in problem and "group_vars/all/main.yml" in problem
    assert len(problems) == 1


def test_an_empty_redis_group_has_no_redis_problem():
    problems = validate(*inventory({}))

    assert problems == [
        "group redis_cluster has no hosts: add at least one host under "
        "all.children.redis_cluster.hosts in hosts.yml"
    ]
