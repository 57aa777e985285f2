"""A redis.conf change restarts the instances one at a time: replicas first, then each master
after handing its slots to a replica; the cluster stays ok and every instance runs the change.

What happened is read from the instances themselves (systemd's stop and start times, the
roles before and after), not from the playbook's output."""

from __future__ import annotations

import itertools
import json

from conftest import INVENTORY, REPO, STATE, downtime, playbook

from sluice_infra.lab.remote import Remote

REDIS = REPO / "ansible" / "playbooks" / "redis.yml"
REMOTE = Remote(STATE)


def _cli(instance, password: str, *args: str) -> str:
    return REMOTE.redis_cli(
        instance.host, "admin", password, instance.address, instance.port, *args
    )


def _role(instance, password: str) -> str:
    info = _cli(instance, password, "INFO", "replication")
    roles = [line.split(":", 1)[1] for line in info.splitlines() if line.startswith("role:")]
    return roles[0].strip()


def _window(instance) -> tuple[int, int]:
    return downtime(instance.host, f"redis-server@{instance.port}")


def _setting(instance, password: str) -> str:
    return _cli(instance, password, "CONFIG", "GET", "slowlog-max-len").split()[-1]


def test_a_config_change_restarts_replicas_first_and_masters_after_a_handover(converged, layout):
    password = REMOTE.vault(INVENTORY)["vault_redis_admin_password"]
    instances = layout.redis_instances
    roles = {i: _role(i, password) for i in instances}
    before = {i: _window(i) for i in instances}
    change = json.dumps({"redis_cluster_config_custom": {"slowlog-max-len": 200}})

    result = playbook(REDIS, "-e", change)
    assert result.returncode == 0, result.stdout[-5000:]
    after = {i: _window(i) for i in instances}
    assert all(after[i][1] > before[i][1] for i in instances), "every instance restarts"
    windows = sorted(after.values())
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(windows)), (
        f"two instances were down at once: {windows}"
    )
    masters = [i for i in instances if roles[i] == "master"]
    replicas = [i for i in instances if roles[i] == "slave"]
    assert masters and replicas, roles
    assert max(after[i][1] for i in replicas) < min(after[i][0] for i in masters), (
        "replicas restart before any master"
    )
    # each master handed its slots over before its restart, so it came back a replica
    assert all(_role(i, password) == "slave" for i in masters), [
        (i.endpoint, _role(i, password)) for i in masters
    ]
    assert all(_setting(i, password) == "200" for i in instances)
    assert "cluster_state:ok" in _cli(instances[0], password, "CLUSTER", "INFO")

    # back to the inventory's settings, the same careful way
    result = playbook(REDIS)
    assert result.returncode == 0, result.stdout[-5000:]
    assert all(_setting(i, password) == "128" for i in instances)
    assert "cluster_state:ok" in _cli(instances[0], password, "CLUSTER", "INFO")
