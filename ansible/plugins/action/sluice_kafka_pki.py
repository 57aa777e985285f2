"""Action ``sluice_kafka_pki``: keep Kafka's CA and broker certificates current, on the
controller. A thin wrapper: the work is :mod:`sluice_infra.kafka_pki`, tested there.

The role calls it once (``run_once``, ``delegate_to: localhost``) with every broker. It
generates the CA when the directory holds none, validates the operator's CA when it does,
issues each broker a key and certificate chain only when the current ones no longer fit, and
validates the certificates an operator supplies instead. In check mode it reports what it would
change and writes nothing. It returns paths, never key material.
"""

from __future__ import annotations

import os
from collections import Counter

from ansible.errors import AnsibleError

from ansible.plugins.action import ActionBase

try:
    from sluice_infra import kafka_pki
except ImportError as exc:  # ansible-playbook run from outside the project's venv
    raise AnsibleError(
        "sluice_kafka_pki needs the sluice_infra package and cryptography: run Ansible from "
        "the project's .venv (pip install -r requirements.txt -e . in the repository root)"
    ) from exc

_HOST_OPTIONS = {
    "name": {"type": "str", "required": True},
    "dns_names": {"type": "list", "elements": "str", "default": []},
    "ip_addresses": {"type": "list", "elements": "str", "default": []},
    "cert": {"type": "path"},
    "key": {"type": "path"},
}

ARGUMENT_SPEC = {
    "directory": {"type": "path", "required": True},
    "hosts": {"type": "list", "elements": "dict", "required": True, "options": _HOST_OPTIONS},
    "days": {"type": "int", "default": 825},
    "renew_days": {"type": "int", "default": 30},
    "ca_days": {"type": "int", "default": 3650},
    "key_type": {"type": "str", "choices": list(kafka_pki.KEY_TYPES), "default": "ec"},
}


class ActionModule(ActionBase):
    _requires_connection = False
    _supports_check_mode = True
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        check = bool(self._task.check_mode or self._play_context.check_mode)
        try:
            # A dry run first: every problem (a bad CA, a bad name, an unusable certificate)
            # fails the task before anything is written.
            outcome = self._ensure(args, check=True)
            if not check and not outcome.get("failed"):
                outcome = self._ensure(args, check=False)
        except kafka_pki.PkiError as exc:
            return {**result, "failed": True, "changed": False, "msg": str(exc)}
        return {**result, **outcome}

    def _ensure(self, args, check):
        directory, hosts = args["directory"], args["hosts"]
        problems = self._argument_problems(directory, hosts)
        if problems:
            return self._failure(problems)
        ca_cert = kafka_pki.ca_files(directory).cert
        supplied = [h for h in hosts if h["cert"]]
        generated = [h for h in hosts if not h["cert"]]

        # The operator's certificates first: nothing is written when one of them is unusable.
        if supplied and not ca_cert.exists():
            names = ", ".join(h["name"] for h in supplied)
            return self._failure(
                [f"{names} supply their own certificate: put the CA that signed them at {ca_cert}"]
            )
        for host in supplied:
            problems += [
                f"host {host['name']}: {problem}"
                for problem in kafka_pki.validate_host_cert(
                    host["cert"],
                    host["key"],
                    ca_cert,
                    host["dns_names"],
                    host["ip_addresses"],
                    host=host["name"],
                )
            ]
        if problems:
            return self._failure(problems)

        if generated:
            ca_created = kafka_pki.ensure_ca(
                directory, days=args["ca_days"], key_type=args["key_type"], check=check
            )
        else:  # every broker brings its certificate: the CA's key is not needed
            kafka_pki.load_ca_certificate(directory)
            ca_created = False

        issued, reasons = [], {}
        for host in generated:
            names = {"dns_names": host["dns_names"], "ip_addresses": host["ip_addresses"]}
            why = kafka_pki.host_cert_reasons(
                directory,
                host["name"],
                **names,
                renew_days=args["renew_days"],
                key_type=args["key_type"],
            )
            if why:
                kafka_pki.ensure_host_cert(
                    directory,
                    host["name"],
                    **names,
                    days=args["days"],
                    renew_days=args["renew_days"],
                    key_type=args["key_type"],
                    check=check,
                )
                issued.append(host["name"])
                reasons[host["name"]] = why

        certs = {}
        for host in hosts:
            if host["cert"]:
                certs[host["name"]] = {"cert": host["cert"], "key": host["key"]}
            else:
                files = kafka_pki.host_files(directory, host["name"])
                certs[host["name"]] = {"cert": str(files.cert), "key": str(files.key)}
        return {
            "changed": ca_created or bool(issued),
            "ca_created": ca_created,
            "issued": issued,
            "reasons": reasons,
            "ca_cert": str(ca_cert),
            "certs": certs,
            "msg": self._summary(ca_created, issued, check),
        }

    @staticmethod
    def _argument_problems(directory, hosts):
        problems = []
        if not os.path.isabs(directory):
            problems.append(
                f"directory {directory!r} is relative: give an absolute controller path, "
                "e.g. '{{ inventory_dir }}/pki/kafka'"
            )
        for name, count in Counter(h["name"] for h in hosts).items():
            if count > 1:
                problems.append(f"host {name} is listed {count} times in hosts: list it once")
        for host in hosts:
            if bool(host["cert"]) != bool(host["key"]):
                problems.append(
                    f"host {host['name']}: cert and key go together; give both (your own "
                    "certificate) or neither (one issued by the CA)"
                )
        return problems

    @staticmethod
    def _summary(ca_created, issued, check):
        would = "would be " if check else ""
        parts = [f"CA {would}created"] if ca_created else []
        if issued:
            parts.append(f"certificate {would}issued for {', '.join(issued)}")
        return "; ".join(parts) or "CA and every certificate current"

    @staticmethod
    def _failure(problems):
        return {
            "failed": True,
            "changed": False,
            "msg": f"{len(problems)} TLS problem(s), nothing written:\n" + "\n".join(problems),
        }
