#!/usr/bin/python
"""Create, check and operate a Redis Cluster from a plan (Sluice)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sluice_redis_cluster
short_description: Create a Redis Cluster from a plan, load a Functions library, drive failovers
description:
  - C(action=ensure) joins every planned instance into one cluster (CLUSTER MEET), gives the
    planned masters their slot ranges and attaches the planned replicas to their masters, but
    only for instances that have no role yet. Roles in a running cluster are runtime state
    (a failover swaps them) and are never changed back. Then it waits until every node reports
    C(cluster_state:ok) and all 16384 slots are covered, and loads the Functions library on
    every master whose copy differs.
  - C(action=handover) makes sure the instance at C(endpoint) serves no slots before a restart
    (C(CLUSTER FAILOVER) on one of its replicas, then waits for the switch).
  - C(action=wait_healthy) waits until the instance at C(endpoint) is back in the cluster, a
    replica has its replication link up and in sync, and the cluster state is ok.
  - Talks RESP directly; the password is sent only inside AUTH on the socket.
options:
  action:
    description: What to do.
    type: str
    choices: [ensure, handover, wait_healthy]
    default: ensure
  plan:
    description:
      - Instances from the sluice_redis_plan filter (host, address, port, role, master, slots).
    type: list
    elements: dict
    required: true
  endpoint:
    description: C(address:port) of the instance for C(handover) and C(wait_healthy).
    type: str
  user:
    description: ACL user with admin rights.
    type: str
    default: admin
  password:
    description: Password of C(user).
    type: str
    required: true
    no_log: true
  functions_code:
    description: Source of a Redis Functions library to load on every master (C(#!lua name=...)).
    type: str
  timeout:
    description: Seconds to wait for each step.
    type: int
    default: 60
author: Sluice
"""

EXAMPLES = r"""
- name: Create the cluster and load the Functions library
  sluice_redis_cluster:
    plan: "{{ redis_cluster_plan }}"
    password: "{{ vault_redis_admin_password }}"
    functions_code: "{{ lookup('ansible.builtin.file', 'sluice.lua') }}"
"""

RETURN = r"""
nodes:
  description: The cluster as seen from the first planned instance (endpoint, role, slots).
  type: list
  returned: always
actions:
  description: What was done (or would be done, in check mode).
  type: list
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.sluice_redis import (  # noqa: E402
    Connection,
    RedisError,
    cluster_nodes,
    info,
    wait_for,
)

SLOTS = 16384


class Cluster:
    def __init__(self, module: AnsibleModule):
        self.module = module
        self.plan = module.params["plan"]
        self.user = module.params["user"]
        self.password = module.params["password"]
        self.timeout = module.params["timeout"]
        self.actions: list[str] = []

    def connect(self, endpoint: str) -> Connection:
        host, port = endpoint.rsplit(":", 1)
        return Connection(host, int(port), self.user, self.password)

    def nodes_seen_by(self, endpoint: str) -> list[dict]:
        with self.connect(endpoint) as conn:
            return cluster_nodes(conn)

    def state_ok(self, endpoint: str) -> bool:
        with self.connect(endpoint) as conn:
            state = info(conn, "cluster-info")
        return state.get("cluster_state") == "ok" and int(state.get("cluster_slots_ok", 0)) == SLOTS

    def all_ok(self) -> bool:
        return all(self.state_ok(entry["endpoint"]) for entry in self.plan)

    # -- ensure ----------------------------------------------------------------------------

    def ensure(self) -> None:
        check = self.module.check_mode
        endpoints = [entry["endpoint"] for entry in self.plan]
        for endpoint in endpoints:  # every instance must answer before anything changes
            wait_for(
                lambda e=endpoint: self.nodes_seen_by(e), self.timeout, f"{endpoint} to answer"
            )
        first = endpoints[0]
        known = {node["endpoint"] for node in self.nodes_seen_by(first)}
        missing = [e for e in endpoints if e not in known]
        if missing:
            self.actions += [f"CLUSTER MEET {e}" for e in missing]
            if not check:
                with self.connect(first) as conn:
                    for endpoint in missing:
                        host, port = endpoint.rsplit(":", 1)
                        conn.call("CLUSTER", "MEET", host, port, int(port) + 10000)
                wait_for(self._everyone_knows_everyone, self.timeout, "all instances to meet")
        if check and missing:
            return  # the rest depends on the meeting
        self._assign_slots(check)
        self._attach_replicas(check)
        if not check and self.actions:
            wait_for(self.all_ok, self.timeout * 2, "cluster_state:ok with all slots covered")
        if not self.all_ok():
            raise RedisError(self._describe_unhealthy())

    def _everyone_knows_everyone(self) -> bool:
        wanted = {entry["endpoint"] for entry in self.plan}
        for endpoint in wanted:
            nodes = self.nodes_seen_by(endpoint)
            seen = {n["endpoint"] for n in nodes if not n["handshake"]}
            if not wanted <= seen:
                return False
        return True

    def _assign_slots(self, check: bool) -> None:
        nodes = self.nodes_seen_by(self.plan[0]["endpoint"])
        if any(node["slots"] for node in nodes):
            return  # an existing cluster: slots move only through the rebalance playbook
        for entry in self.plan:
            if entry["role"] != "master":
                continue
            first, last = entry["slots"]
            self.actions.append(f"ADDSLOTSRANGE {first} {last} on {entry['endpoint']}")
            if not check:
                with self.connect(entry["endpoint"]) as conn:
                    conn.call("CLUSTER", "ADDSLOTSRANGE", first, last)

    def _attach_replicas(self, check: bool) -> None:
        by_endpoint = {n["endpoint"]: n for n in self.nodes_seen_by(self.plan[0]["endpoint"])}
        for entry in self.plan:
            if entry["role"] != "replica":
                continue
            node = by_endpoint.get(entry["endpoint"])
            if node is None or node["role"] == "replica" or node["slots"]:
                continue  # already has a role: leave it
            master = by_endpoint.get(entry["master"])
            if master is None:
                raise RedisError(f"{entry['endpoint']}: its master {entry['master']} is unknown")
            self.actions.append(f"CLUSTER REPLICATE {entry['master']} on {entry['endpoint']}")
            if check:
                continue
            # the replica must know the master's slots before it may follow it
            wait_for(
                lambda e=entry: any(
                    n["endpoint"] == e["master"] and n["slots"]
                    for n in self.nodes_seen_by(e["endpoint"])
                ),
                self.timeout,
                f"{entry['endpoint']} to learn {entry['master']}'s slots",
            )
            with self.connect(entry["endpoint"]) as conn:
                conn.call("CLUSTER", "REPLICATE", master["id"])

    def _describe_unhealthy(self) -> str:
        lines = ["the Redis Cluster is not healthy:"]
        for entry in self.plan:
            try:
                with self.connect(entry["endpoint"]) as conn:
                    state = info(conn, "cluster-info")
                lines.append(
                    f"  {entry['endpoint']}: cluster_state={state.get('cluster_state')} "
                    f"slots_ok={state.get('cluster_slots_ok')} "
                    f"known={state.get('cluster_known_nodes')}"
                )
            except RedisError as exc:
                lines.append(f"  {exc}")
        return "\n".join(lines)

    # -- functions -------------------------------------------------------------------------

    def load_functions(self, code: str) -> None:
        name = _library_name(code)
        masters = [
            n
            for n in self.nodes_seen_by(self.plan[0]["endpoint"])
            if n["role"] == "master" and n["slots"] and not n["failed"]
        ]
        for master in masters:
            with self.connect(master["endpoint"]) as conn:
                current = conn.call("FUNCTION", "LIST", "LIBRARYNAME", name, "WITHCODE")
                loaded = next((lib for lib in current if _field(lib, "library_name") == name), None)
                if loaded is not None and _field(loaded, "library_code") == code:
                    continue
                self.actions.append(f"FUNCTION LOAD {name} on {master['endpoint']}")
                if not self.module.check_mode:
                    conn.call("FUNCTION", "LOAD", "REPLACE", code)

    # -- restarts --------------------------------------------------------------------------

    def handover(self, endpoint: str) -> None:
        """Before a restart: the instance must serve no slots. A master hands over to a
        replica with CLUSTER FAILOVER (coordinated, no write is lost)."""
        nodes = self.nodes_seen_by(endpoint)
        me = next(n for n in nodes if n["myself"])
        if me["role"] == "replica" or not me["slots"]:
            return
        replicas = [
            n for n in nodes if n["master_id"] == me["id"] and n["connected"] and not n["failed"]
        ]
        if not replicas:
            raise RedisError(
                f"{endpoint} is a master with no healthy replica: restarting it would leave "
                f"{me['slots']} slots unserved; fix its replica first"
            )
        target = replicas[0]["endpoint"]
        self.actions.append(f"CLUSTER FAILOVER on {target} (takes over from {endpoint})")
        if self.module.check_mode:
            return
        with self.connect(target) as conn:
            conn.call("CLUSTER", "FAILOVER")
        wait_for(
            lambda: info_role(self, target) == "master" and info_role(self, endpoint) == "slave",
            self.timeout,
            f"{target} to take over from {endpoint}",
        )

    def wait_healthy(self, endpoint: str) -> None:
        def healthy() -> bool:
            with self.connect(endpoint) as conn:
                replication = info(conn, "replication")
                if replication.get("role") == "slave":
                    if replication.get("master_link_status") != "up":
                        return False
                    if replication.get("master_sync_in_progress") == "1":
                        return False
            return self.all_ok()

        wait_for(healthy, self.timeout * 2, f"{endpoint} to rejoin with cluster_state:ok")


def info_role(cluster: Cluster, endpoint: str) -> str:
    with cluster.connect(endpoint) as conn:
        return info(conn, "replication").get("role", "")


def _field(entry: list, key: str):
    pairs = dict(zip(entry[::2], entry[1::2], strict=False))
    return pairs.get(key)


def _library_name(code: str) -> str:
    first = code.splitlines()[0] if code else ""
    for part in first.split():
        if part.startswith("name="):
            return part[len("name=") :]
    raise RedisError("the Functions library must start with '#!lua name=<library>'")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "action": {
                "type": "str",
                "choices": ["ensure", "handover", "wait_healthy"],
                "default": "ensure",
            },
            "plan": {"type": "list", "elements": "dict", "required": True},
            "endpoint": {"type": "str"},
            "user": {"type": "str", "default": "admin"},
            "password": {"type": "str", "required": True, "no_log": True},
            "functions_code": {"type": "str"},
            "timeout": {"type": "int", "default": 60},
        },
        required_if=[
            ("action", "handover", ["endpoint"]),
            ("action", "wait_healthy", ["endpoint"]),
        ],
        supports_check_mode=True,
    )
    cluster = Cluster(module)
    try:
        action = module.params["action"]
        if action == "ensure":
            cluster.ensure()
            if module.params["functions_code"]:
                cluster.load_functions(module.params["functions_code"])
        elif action == "handover":
            cluster.handover(module.params["endpoint"])
        else:
            cluster.wait_healthy(module.params["endpoint"])
        nodes = cluster.nodes_seen_by(cluster.plan[0]["endpoint"])
    except RedisError as exc:
        module.fail_json(msg=str(exc), actions=cluster.actions)
    module.exit_json(
        changed=bool(cluster.actions),
        actions=cluster.actions,
        nodes=[{k: n[k] for k in ("endpoint", "role", "slots", "failed")} for n in nodes],
    )


if __name__ == "__main__":
    main()
