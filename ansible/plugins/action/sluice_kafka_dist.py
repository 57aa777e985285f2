"""Action ``sluice_kafka_dist``: resolve the Kafka tarball once, on the controller, into its
cache. A thin wrapper: the work is :mod:`sluice_infra.kafka_dist`, tested there.

It runs in check mode too: it writes only the controller's cache (a tarball and its sidecar,
Maven's local repository), never a managed host, and the tasks after it need the tarball's path
to report what they would copy. Being an action, it runs on the controller whatever
``delegate_to`` says; the role still calls it with ``run_once: true, delegate_to: localhost``.
"""

from __future__ import annotations

from ansible.errors import AnsibleError

from ansible.plugins.action import ActionBase

try:
    from sluice_infra import kafka_dist
except ImportError as exc:  # ansible-playbook run from outside the project's venv
    raise AnsibleError(
        "sluice_kafka_dist needs the sluice_infra package: run Ansible from the project's .venv "
        "(pip install -e . in the repository root)"
    ) from exc

ARGUMENT_SPEC = {
    "method": {"type": "str", "choices": list(kafka_dist.METHODS), "default": "maven"},
    "version": {"type": "str", "required": True},
    "cache_dir": {"type": "path", "required": True},
    "repository_url": {"type": "str", "default": kafka_dist.DEFAULT_REPOSITORY_URL},
    "archive_url_template": {"type": "str", "default": kafka_dist.DEFAULT_ARCHIVE_URL_TEMPLATE},
    "archive_sha512_url": {"type": "str", "default": None},
}


class ActionModule(ActionBase):
    _requires_connection = False
    _supports_check_mode = True
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            dist = kafka_dist.ensure_dist(
                args["method"],
                args["version"],
                args["cache_dir"],
                repository_url=args["repository_url"],
                archive_url_template=args["archive_url_template"],
                archive_sha512_url=args["archive_sha512_url"],
            )
        except kafka_dist.KafkaDistError as exc:
            return {**result, "failed": True, "changed": False, "msg": str(exc)}
        return {
            **result,
            **dist.as_dict(),
            "msg": f"{dist.path} ({'resolved' if dist.changed else 'cached'})",
        }
