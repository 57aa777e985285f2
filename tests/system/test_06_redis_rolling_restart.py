"""A redis.conf change restarts the instances one at a time: replicas first, then each master
after handing its slots to a replica; the cluster stays ok and every instance runs the change."""

from __future__ import annotations

import json
import re

from conftest import REPO, STATE, playbook

from sluice_infra.lab.remote import Remote

REDIS = REPO / "ansible" / "playbooks" / "redis.yml"
PORTS = range(7000, 7006)
_STEP = re.compile(
    r"TASK \[redis_cluster : (Hand over slots before the restart of|Restart) (\S+)\][^\n]*\n"
    r"(ok|changed): "
)


def _config(remote: Remote, password: str, port: int) -> str:
    out = remote.redis_cli(
        "stream", "admin", password, "10.77.0.12", port, "CONFIG", "GET", "slowlog-max-len"
    )
    return out.split()[-1]


def test_a_config_change_restarts_replicas_first_and_masters_after_a_handover(lab_up):
    remote = Remote(STATE)
    password = remote.vault(REPO / "inventories" / "lab")["vault_redis_admin_password"]
    change = json.dumps({"redis_cluster_config_custom": {"slowlog-max-len": 200}})

    result = playbook(REDIS, "-e", change)
    assert result.returncode == 0, result.stdout[-5000:]
    steps = _STEP.findall(result.stdout)
    handovers = [(endpoint, outcome) for kind, endpoint, outcome in steps if kind != "Restart"]
    restarts = [endpoint for kind, endpoint, _ in steps if kind == "Restart"]
    assert sorted(restarts) == [f"10.77.0.12:{port}" for port in PORTS], "each instance once"
    # replicas need no handover and come first; each master hands over, then restarts
    assert [outcome for _, outcome in handovers] == ["ok"] * 3 + ["changed"] * 3, handovers
    assert all(_config(remote, password, port) == "200" for port in PORTS)
    info = remote.redis_cli("stream", "admin", password, "10.77.0.12", 7000, "CLUSTER", "INFO")
    assert "cluster_state:ok" in info

    # back to the inventory's settings, the same careful way
    result = playbook(REDIS)
    assert result.returncode == 0, result.stdout[-5000:]
    assert all(_config(remote, password, port) == "128" for port in PORTS)
