from sluice_infra.redis_ops import restart_order

NODES = [
    {"endpoint": "10.77.0.12:7000", "role": "master"},
    {"endpoint": "10.77.0.12:7001", "role": "replica"},
    {"endpoint": "10.77.0.12:7002", "role": "master"},
    {"endpoint": "10.77.0.12:7003", "role": "replica"},
]


def _entry(port: int) -> dict:
    return {"host": "stream", "endpoint": f"10.77.0.12:{port}", "port": port}


def test_replicas_restart_before_masters():
    order = restart_order([_entry(7000), _entry(7001), _entry(7002), _entry(7003)], NODES)
    assert [e["port"] for e in order] == [7001, 7003, 7000, 7002]


def test_current_roles_win_over_the_plan_after_a_failover():
    swapped = [dict(n, role="replica" if n["role"] == "master" else "master") for n in NODES]
    order = restart_order([_entry(7000), _entry(7001)], swapped)
    assert [e["port"] for e in order] == [7000, 7001]


def test_unknown_instances_go_last_and_duplicates_once():
    order = restart_order([_entry(7009), _entry(7001), _entry(7001)], NODES)
    assert [e["port"] for e in order] == [7001, 7009]


def test_nothing_pending_restarts_nothing():
    assert restart_order([], NODES) == []
