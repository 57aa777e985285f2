"""Role redis_cluster: a healthy, ACL-protected Redis Cluster with the Sluice Functions loaded.

Runs on every host; cluster-wide checks run from the first host of group redis_cluster. Passwords
go to the machine through Ansible's copy module (the module payload, not argv) into a root-only
file that the shell reads into REDISCLI_AUTH: never on a command line.
"""

from __future__ import annotations

import shlex
import uuid

import pytest

pytestmark = pytest.mark.system


def _vars(host) -> dict:
    return host.ansible.get_variables()


def _plan(host) -> list[dict]:
    """This host's instances: ports from the inventory, as the role computes them."""
    hostvars = _vars(host)
    count = int(hostvars.get("redis_cluster_instances_per_host", 2))
    base = int(hostvars.get("redis_cluster_port_base", 7000))
    return [{"port": base + i, "exporter": 9121 + i} for i in range(count)]


@pytest.fixture
def redis_host(host):
    hostvars = _vars(host)
    if host.backend.get_hostname() not in hostvars["groups"].get("redis_cluster", []):
        pytest.skip("no Redis instance on this host")
    return host


@pytest.fixture
def first_redis_host(redis_host):
    if _vars(redis_host)["groups"]["redis_cluster"][0] != redis_host.backend.get_hostname():
        pytest.skip("cluster-wide checks run from the first Redis host")
    return redis_host


class RedisCli:
    """redis-cli on a machine as one ACL user, its password kept off every command line."""

    def __init__(self, host, user: str | None):
        self.host = host
        self.user = user
        self.secret = f"/root/.sluice-test-{uuid.uuid4().hex}"
        vars_ = _vars(host)
        self.address = vars_["ansible_host"]
        if user:
            password = vars_[f"vault_redis_{user}_password"]
            host.ansible(
                "copy",
                f"content={password} dest={self.secret} mode=0600",
                become=True,
                check=False,
            )

    def __call__(self, *args: str, port: int = 7000, cluster: bool = False, feed: str = ""):
        """Run one command, or with ``feed`` (a shell command printing commands) many."""
        auth = f"REDISCLI_AUTH=$(cat {self.secret}) " if self.user else ""
        user = f"--user {self.user} " if self.user else ""
        command = (
            f"{auth}redis-cli --no-auth-warning {user}{'-c ' if cluster else ''}"
            f"-h {self.address} -p {port} " + " ".join(shlex.quote(a) for a in args)
        )
        if feed:
            command = f"{feed} | {{ {command}; }}"
        return self.host.run("sudo -n sh -c " + shlex.quote(command))

    @staticmethod
    def replies(result) -> list[str]:
        """Reply lines, without redis-cli's notes on cluster redirections."""
        return [line for line in result.stdout.splitlines() if not line.startswith("-> ")]

    def close(self) -> None:
        self.host.run(f"sudo -n rm -f {self.secret}")


@pytest.fixture
def cli(redis_host):
    made = []

    def make(user: str | None) -> RedisCli:
        made.append(RedisCli(redis_host, user))
        return made[-1]

    yield make
    for one in made:
        one.close()


def test_every_instance_and_its_exporter_runs(redis_host):
    for instance in _plan(redis_host):
        assert redis_host.service(f"redis-server@{instance['port']}").is_running
        assert redis_host.service(f"redis-server@{instance['port']}").is_enabled
        exporter = redis_host.service(f"prometheus-redis-exporter@{instance['port']}")
        assert exporter.is_running
        metrics = redis_host.run(f"curl -sf http://127.0.0.1:{instance['exporter']}/metrics")
        assert "redis_up 1" in metrics.stdout, f"exporter of {instance['port']} cannot log in"


def test_cluster_is_ok_with_all_slots_and_three_masters_with_a_replica_each(first_redis_host, cli):
    admin = cli("admin")
    info = admin("CLUSTER", "INFO").stdout
    assert "cluster_state:ok" in info
    assert "cluster_slots_ok:16384" in info
    nodes = [line.split() for line in admin("CLUSTER", "NODES").stdout.splitlines()]
    masters = [n for n in nodes if "master" in n[2] and len(n) > 8]
    replicas = [n for n in nodes if "slave" in n[2]]
    assert len(masters) == 3 and len(replicas) == 3
    assert {n[3] for n in replicas} == {n[0] for n in masters}, "each master has one replica"
    hosts = {n[1].split(":")[0] for n in nodes}
    if len(hosts) > 1:  # the hosts allow anti-affinity: a replica never sits with its master
        address = {n[0]: n[1].split(":")[0] for n in nodes}
        for replica in replicas:
            assert address[replica[0]] != address[replica[3]], f"{replica[1]} beside its master"


def test_the_default_user_and_a_wrong_password_are_refused(redis_host, cli):
    anonymous = cli(None)
    assert "NOAUTH" in anonymous("PING").stdout
    wrong = redis_host.run(
        "redis-cli --no-auth-warning -h "
        f"{_vars(redis_host)['ansible_host']} -p 7000 AUTH sluice not-the-password"
    )
    assert "WRONGPASS" in wrong.stdout + wrong.stderr


def test_the_application_user_cannot_run_what_it_does_not_need(redis_host, cli):
    sluice = cli("sluice")
    assert sluice("PING").stdout.strip() == "PONG"
    for command in (
        ["FLUSHALL"],
        ["CONFIG", "GET", "maxmemory"],
        ["KEYS", "*"],
        ["ACL", "LIST"],
    ):
        assert "NOPERM" in sluice(*command).stdout, f"sluice may run {command[0]}"
    assert "NOPERM" in sluice("GET", "other:key", cluster=True).stdout, "key pattern not enforced"
    assert "NOPERM" in sluice("SET", "sluice:x", "1", cluster=True).stdout, "sluice may SET"


def test_fcall_aggregation_counts_exactly(first_redis_host, cli):
    sluice = cli("sluice")
    key = f"sluice:{{verify-{uuid.uuid4().hex[:8]}}}:agg:202611270000"
    calls = (
        "for i in $(seq 250); do "
        f"echo 'FCALL sluice_aggregate 1 {key} order.created 3 120'; "
        f"echo 'FCALL sluice_aggregate 1 {key} order.paid 1 120'; done"
    )
    sluice(cluster=True, feed=calls)
    counts = sluice.replies(sluice("FCALL_RO", "sluice_aggregates_read", "1", key, cluster=True))
    got = dict(zip(counts[::2], counts[1::2], strict=True))
    assert got == {"order.created": "750", "order.paid": "250", "_total": "1000"}
    ttl = int(sluice.replies(sluice("TTL", key, cluster=True))[0])
    assert 0 < ttl <= 120


def test_the_rate_limiter_denies_request_10001_in_a_minute(first_redis_host, cli):
    sluice = cli("sluice")
    tenant = f"verify-{uuid.uuid4().hex[:8]}"
    now = 1_800_000_000_000
    keys = f"sluice:{{{tenant}}}:rl sluice:{{{tenant}}}:rl:seq"
    call = f"FCALL sluice_rate_limit 2 {keys} 10000 60000 {now}"
    out = sluice.replies(sluice(cluster=True, feed=f"yes '{call}' | head -n 10001"))
    # each reply is three integers: allowed, remaining, retry_after_ms
    replies = [out[i : i + 3] for i in range(0, len(out), 3)]
    assert len(replies) == 10_001
    assert all(r[0] == "1" for r in replies[:10_000])
    assert replies[10_000][0] == "0" and 0 < int(replies[10_000][2]) <= 60_000
