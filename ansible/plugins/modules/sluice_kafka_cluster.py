#!/usr/bin/python
"""Ansible module: reconcile a Kafka cluster's SCRAM users, topics and ACLs, or wait until it
is healthy. Runs on a Kafka host with kafka-python (the role's admin venv), as the brokers'
own principal over the internal mutual-TLS listener."""

from __future__ import annotations

DOCUMENTATION = r"""
module: sluice_kafka_cluster
short_description: Reconcile SCRAM users, topics and ACLs of a Kafka cluster; health gates
description:
  - C(reconcile) creates missing topics, raises partition counts, sets declared topic configs,
    creates missing ACLs and sets SCRAM-SHA-512 credentials whose password does not log in yet.
    Nothing is deleted unless asked. Check mode reports what would change.
  - C(wait_healthy) waits until every expected broker is registered, the KRaft quorum has a
    leader with every voter caught up, and no partition is offline, under-replicated or under
    min.insync.replicas; it fails after I(timeout) seconds naming what is still wrong.
  - C(status) reads the same without waiting or failing.
  - Connects with kafka-python over SSL with the host's certificate (internal listener); SCRAM
    passwords are checked by logging in on the client listener. Passwords are never returned.
options:
  action: {type: str, required: true, choices: [reconcile, wait_healthy, status]}
  bootstrap_servers: {type: str, required: true, description: internal listener endpoints}
  client_bootstrap_servers: {type: str, description: client (SASL_SSL) listener endpoints}
  ssl_cafile: {type: path, required: true}
  ssl_certfile: {type: path, required: true}
  ssl_keyfile: {type: path, required: true}
  users: {type: list, elements: dict, default: [], description: "[{name, password}]"}
  scram_iterations: {type: int, default: 8192}
  topics: {type: list, elements: dict, default: [], description: normalised kafka_topics}
  acls: {type: list, elements: dict, default: [], description: kafka_acls entries}
  delete_undeclared_topics: {type: bool, default: false}
  delete_undeclared_acls: {type: bool, default: false}
  brokers: {type: list, elements: int, default: [], description: broker ids expected}
  voters: {type: list, elements: int, default: [], description: controller ids expected}
  min_insync_replicas: {type: int, default: 2}
  max_lag: {type: int, default: 100}
  timeout: {type: int, default: 300}
  node: {type: str, default: "", description: the node just restarted, for messages}
requirements: [kafka-python >= 3.0]
author: Sluice
"""

EXAMPLES = r"""
- name: Wait for the cluster after restarting node 2
  sluice_kafka_cluster:
    action: wait_healthy
    bootstrap_servers: 10.77.0.12:9192
    ssl_cafile: /etc/kafka/tls/ca.crt
    ssl_certfile: /etc/kafka/tls/node.pem
    ssl_keyfile: /etc/kafka/tls/node.pem
    brokers: [1, 2, 3]
    voters: [1, 2, 3]
    node: kafka node 2 on stream
"""

RETURN = r"""
created_topics: {type: list, returned: reconcile}
raised_partitions: {type: dict, returned: reconcile}
altered_configs: {type: dict, returned: reconcile}
deleted_topics: {type: list, returned: reconcile}
created_acls: {type: list, returned: reconcile}
deleted_acls: {type: list, returned: reconcile}
updated_users: {type: list, returned: reconcile, description: names only}
leader: {type: int, returned: wait_healthy and status, description: KRaft quorum leader id}
problems: {type: list, returned: wait_healthy and status}
"""

import logging  # noqa: E402
import time  # noqa: E402  (Ansible modules put their documentation first)
import traceback  # noqa: E402
from typing import Any  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible.module_utils.sluice_kafka import (  # noqa: E402
    AclEntry,
    SpecError,
    acl_actions,
    broker_problems,
    expand_acls,
    partition_problems,
    quorum_leader,
    quorum_problems,
    topic_actions,
)

KAFKA_IMPORT_ERROR = None
try:
    from kafka import KafkaAdminClient
    from kafka.admin import (
        ACL,
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ConfigResource,
        ConfigResourceType,
        ResourcePattern,
        ResourcePatternFilter,
        ResourceType,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )
    from kafka.errors import KafkaError
except ImportError:
    KAFKA_IMPORT_ERROR = traceback.format_exc()

INTERNAL_TOPIC_PREFIX = "__"
POLL_SECONDS = 3
LOGIN_TIMEOUT_MS = 8000


def _admin(params: dict[str, Any]) -> Any:
    return KafkaAdminClient(
        bootstrap_servers=params["bootstrap_servers"].split(","),
        client_id="sluice-ansible",
        security_protocol="SSL",
        ssl_cafile=params["ssl_cafile"],
        ssl_certfile=params["ssl_certfile"],
        ssl_keyfile=params["ssl_keyfile"],
        ssl_check_hostname=True,
        request_timeout_ms=30000,
    )


# --- reading ----------------------------------------------------------------------------------


def _current_topics(admin: Any) -> dict[str, dict[str, Any]]:
    topics = {}
    for topic in admin.describe_topics():
        name = topic.get("topic") or topic.get("name")
        if topic.get("is_internal") or name.startswith(INTERNAL_TOPIC_PREFIX):
            continue
        partitions = topic.get("partitions") or []
        replicas = [len(p.get("replicas", p.get("replica_nodes")) or []) for p in partitions]
        topics[name] = {
            "partitions": len(partitions),
            "replication_factor": max(replicas) if replicas else 0,
            "configs": {},
        }
    if topics:
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics]
        for name, values in _config_entries(admin.describe_configs(resources)).items():
            if name in topics:
                topics[name]["configs"] = values
    return topics


def _config_entries(response: Any) -> dict[str, dict[str, str]]:
    """Topic-level overrides per topic from describe_configs (its shape varies by version)."""
    result: dict[str, dict[str, str]] = {}
    if isinstance(response, dict):
        for by_name in response.values():
            for name, entries in (by_name or {}).items():
                result[name] = {
                    key: (data.get("value") if isinstance(data, dict) else data)
                    for key, data in (entries or {}).items()
                    if not isinstance(data, dict)
                    or str(data.get("config_source", data.get("source", ""))).upper()
                    in ("1", "DYNAMIC_TOPIC_CONFIG")
                }
    return result


def _current_acls(admin: Any, principals: set[str]) -> list[AclEntry]:
    found = []
    for principal in sorted(principals):
        acl_filter = ACLFilter(
            principal=principal,
            host=None,
            operation=ACLOperation.ANY,
            permission_type=ACLPermissionType.ANY,
            resource_pattern=ResourcePatternFilter(
                ResourceType.ANY, None, ACLResourcePatternType.ANY
            ),
        )
        acls, error = admin.describe_acls(acl_filter)
        if error is not None and getattr(error, "errno", 0):
            raise RuntimeError(f"describe_acls for {principal} failed: {error}")
        for acl in acls:
            pattern = acl.resource_pattern
            found.append(
                AclEntry(
                    acl.principal,
                    acl.host,
                    acl.operation.name.lower(),
                    acl.permission_type.name.lower(),
                    pattern.resource_type.name.lower(),
                    pattern.resource_name,
                    pattern.pattern_type.name.lower(),
                )
            )
    return found


def _to_acl(entry: AclEntry) -> Any:
    return ACL(
        principal=entry.principal,
        host=entry.host,
        operation=ACLOperation[entry.operation.upper()],
        permission_type=ACLPermissionType[entry.permission.upper()],
        resource_pattern=ResourcePattern(
            ResourceType[entry.resource_type.upper()],
            entry.resource_name,
            ACLResourcePatternType[entry.pattern_type.upper()],
        ),
    )


class _AuthFailures(logging.Handler):
    """Collects kafka-python's log lines about failed SASL logins: its bootstrap only times out,
    so they are how a wrong password tells itself apart from an unreachable broker."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen = False

    def emit(self, record: logging.LogRecord) -> None:
        if "SaslAuthenticationFailed" in record.getMessage():
            self.seen = True


def _password_works(params: dict[str, Any], name: str, password: str) -> bool:
    """Whether ``name`` logs in with ``password`` on the client listener (SCRAM-SHA-512).
    An unreachable listener is an error, not a wrong password."""
    bootstrap = params["client_bootstrap_servers"].split(",")[0]
    watcher = _AuthFailures()
    logger = logging.getLogger("kafka")
    logger.addHandler(watcher)
    try:
        client = KafkaAdminClient(
            bootstrap_servers=[bootstrap],
            client_id="sluice-ansible-login-check",
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_plain_username=name,
            sasl_plain_password=password,
            ssl_cafile=params["ssl_cafile"],
            ssl_check_hostname=True,
            bootstrap_timeout_ms=LOGIN_TIMEOUT_MS,
        )
    except KafkaError:
        if watcher.seen:
            return False
        raise
    finally:
        logger.removeHandler(watcher)
    client.close()
    return True


# --- actions ----------------------------------------------------------------------------------


def reconcile(module: AnsibleModule) -> dict[str, Any]:
    params = module.params
    check = module.check_mode
    try:
        acls = expand_acls(params["acls"])
    except SpecError as err:
        module.fail_json(msg=str(err))
    result: dict[str, Any] = {"changed": False}
    admin = _admin(params)
    try:
        # Users first: the ACLs below name them.
        described = admin.describe_user_scram_credentials([u["name"] for u in params["users"]])
        stale = [
            u["name"]
            for u in params["users"]
            if not _has_credentials(described.get(u["name"])) or not _user_ok(params, u)
        ]
        if stale and not check:
            alterations = [
                UserScramCredentialUpsertion(
                    u["name"],
                    ScramMechanism.SCRAM_SHA_512,
                    u["password"],
                    iterations=params["scram_iterations"],
                )
                for u in params["users"]
                if u["name"] in stale
            ]
            errors = {
                user: error
                for user, error in admin.alter_user_scram_credentials(alterations).items()
                if error
            }
            if errors:
                module.fail_json(msg=f"setting SCRAM credentials failed: {errors}")
        result["updated_users"] = stale

        plan = topic_actions(
            params["topics"],
            _current_topics(admin),
            delete_undeclared=params["delete_undeclared_topics"],
        )
        if plan.problems:
            module.fail_json(msg="; ".join(plan.problems))
        if not check:
            if plan.create:
                admin.create_topics(
                    {
                        spec["name"]: {
                            "num_partitions": spec["partitions"],
                            "replication_factor": spec["replication_factor"],
                            "configs": spec["configs"],
                        }
                        for spec in plan.create
                    },
                    wait_for_metadata=True,
                )
            if plan.partitions:
                admin.create_partitions(plan.partitions)
            if plan.configs:
                admin.alter_configs(
                    [
                        ConfigResource(ConfigResourceType.TOPIC, name, configs=values)
                        for name, values in plan.configs.items()
                    ],
                    incremental=True,
                )
            if plan.delete:
                admin.delete_topics(plan.delete)
        result["created_topics"] = [spec["name"] for spec in plan.create]
        result["raised_partitions"] = plan.partitions
        result["altered_configs"] = plan.configs
        result["deleted_topics"] = plan.delete

        principals = {entry.principal for entry in acls}
        create, delete = acl_actions(
            acls, _current_acls(admin, principals), params["delete_undeclared_acls"]
        )
        if not check:
            if create:
                response = admin.create_acls([_to_acl(e) for e in create])
                failed = response.get("failed") if isinstance(response, dict) else None
                if failed:
                    module.fail_json(msg=f"creating ACLs failed: {failed}")
            if delete:
                admin.delete_acls([_to_acl(e) for e in delete])
        result["created_acls"] = [e.describe() for e in create]
        result["deleted_acls"] = [e.describe() for e in delete]
    finally:
        admin.close()
    result["changed"] = any(
        result[key]
        for key in (
            "updated_users",
            "created_topics",
            "raised_partitions",
            "altered_configs",
            "deleted_topics",
            "created_acls",
            "deleted_acls",
        )
    )
    return result


def _has_credentials(description: Any) -> bool:
    """Whether describe_user_scram_credentials found a SCRAM-SHA-512 credential."""
    if not description or description.get("error"):
        return False
    return any(
        "512" in str(getattr(info.get("mechanism"), "name", info.get("mechanism")))
        for info in description.get("credential_infos") or []
    )


def _user_ok(params: dict[str, Any], user: dict[str, Any]) -> bool:
    if not params["client_bootstrap_servers"]:
        raise ValueError("client_bootstrap_servers is needed to check SCRAM users")
    return _password_works(params, user["name"], user["password"])


def health(params: dict[str, Any]) -> tuple[int, list[str]]:
    """(quorum leader, problems) as read now; unreachable counts as a problem."""
    try:
        admin = _admin(params)
    except KafkaError as err:
        return -1, [f"no broker answers on {params['bootstrap_servers']}: {err}"]
    try:
        problems = broker_problems(admin.describe_cluster(), params["brokers"])
        quorum = admin.describe_metadata_quorum()
        problems += quorum_problems(quorum, params["voters"], params["max_lag"])
        topics = admin.describe_topics()
        problems += partition_problems(topics, {}, params["min_insync_replicas"])
        return quorum_leader(quorum), problems
    except KafkaError as err:
        return -1, [f"the cluster does not answer: {err}"]
    finally:
        admin.close()


def wait_healthy(module: AnsibleModule) -> dict[str, Any]:
    params = module.params
    deadline = time.monotonic() + params["timeout"]
    while True:
        leader, problems = health(params)
        if not problems:
            return {"changed": False, "leader": leader, "problems": []}
        if time.monotonic() >= deadline:
            node = f" after the restart of {params['node']}" if params["node"] else ""
            module.fail_json(
                msg=(
                    f"the Kafka cluster is not healthy{node} within {params['timeout']} s: "
                    + "; ".join(problems)
                ),
                leader=leader,
                problems=problems,
            )
        time.sleep(POLL_SECONDS)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "action": {
                "type": "str",
                "required": True,
                "choices": ["reconcile", "wait_healthy", "status"],
            },
            "bootstrap_servers": {"type": "str", "required": True},
            "client_bootstrap_servers": {"type": "str", "default": ""},
            "ssl_cafile": {"type": "path", "required": True},
            "ssl_certfile": {"type": "path", "required": True},
            "ssl_keyfile": {"type": "path", "required": True},
            "users": {"type": "list", "elements": "dict", "default": [], "no_log": True},
            "scram_iterations": {"type": "int", "default": 8192},
            "topics": {"type": "list", "elements": "dict", "default": []},
            "acls": {"type": "list", "elements": "dict", "default": []},
            "delete_undeclared_topics": {"type": "bool", "default": False},
            "delete_undeclared_acls": {"type": "bool", "default": False},
            "brokers": {"type": "list", "elements": "int", "default": []},
            "voters": {"type": "list", "elements": "int", "default": []},
            "min_insync_replicas": {"type": "int", "default": 2},
            "max_lag": {"type": "int", "default": 100},
            "timeout": {"type": "int", "default": 300},
            "node": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    if KAFKA_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("kafka-python"), exception=KAFKA_IMPORT_ERROR)
    action = module.params["action"]
    try:
        if action == "reconcile":
            module.exit_json(**reconcile(module))
        if action == "wait_healthy":
            module.exit_json(**wait_healthy(module))
        leader, problems = health(module.params)
        module.exit_json(changed=False, leader=leader, problems=problems)
    except KafkaError as err:
        module.fail_json(msg=f"Kafka {action} failed: {err}", exception=traceback.format_exc())


if __name__ == "__main__":
    main()
