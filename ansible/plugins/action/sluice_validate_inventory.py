"""Action ``sluice_validate_inventory``: check the whole inventory on the controller before any
host is touched. A thin wrapper: the checks are :mod:`sluice_infra.inventory`, tested there.

It reads ``groups`` and ``hostvars``, templates in each host's own context only the variables
the checks read, and fails with every problem, one per line. It never connects to a host and
never returns a variable's value (the vault secrets pass through it).
"""

from __future__ import annotations

from ansible.errors import AnsibleError

from ansible.plugins.action import ActionBase

try:
    from sluice_infra import inventory
except ImportError as exc:  # ansible-playbook run from outside the project's venv
    raise AnsibleError(
        "sluice_validate_inventory needs the sluice_infra package: run Ansible from the "
        "project's .venv (pip install -e . in the repository root)"
    ) from exc


class ActionModule(ActionBase):
    _requires_connection = False
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        _, args = self.validate_argument_spec(
            argument_spec={"skip": {"type": "list", "elements": "str", "default": []}}
        )
        groups = {name: list(hosts) for name, hosts in task_vars["groups"].items()}
        hostvars, problems = self._templated_hostvars(task_vars["hostvars"], groups)
        try:
            problems += inventory.validate(groups, hostvars, skip=args["skip"])
        except ValueError as exc:
            return {**result, "failed": True, "msg": f"skip: {exc}"}

        result["changed"] = False
        if problems:
            result["failed"] = True
            result["msg"] = (
                f"the inventory has {len(problems)} problem(s); fix them before site.yml "
                "touches any host:\n" + "\n".join(problems)
            )
        else:
            result["msg"] = f"inventory valid: {len(hostvars)} hosts, every check passed"
        return result

    def _templated_hostvars(self, hostvars, groups):
        """{host: {variable: value}} for the variables the checks read, each templated in its
        host's context; a variable that does not template is a problem of its own, and the
        checks see its raw text."""
        names = inventory.variables_read()
        hosts = sorted({host for members in groups.values() for host in members})
        values, problems = {}, []
        for host in hosts:
            raw = hostvars.raw_get(host)
            templar = self._templar.copy_with_new_env(available_variables=raw)
            values[host] = {}
            for name in sorted(names & set(raw)):
                try:
                    values[host][name] = templar.template(raw[name])
                except AnsibleError as exc:
                    problems.append(f"host {host}: {name} does not template: {exc.message}")
                    values[host][name] = raw[name]  # so checks judge it, not call it unset
        return values, problems
