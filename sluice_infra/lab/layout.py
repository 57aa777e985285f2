"""Where the services run, read from an inventory the way Ansible reads it: the system tests,
the benchmarks and the demo ask this, never a literal address or port, so they run on any
layout (seed, spread, or an operator's own).

Host variables come from ``ansible-inventory --list`` (hosts.yml and every group_vars file,
merged by Ansible itself, vault included), over the roles' ``defaults/main.yml`` (what a play
would see for a variable the inventory leaves unset). Values are not templated: a layout key
that is a Jinja expression is an error naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from sluice_infra import REPO_ROOT, kafka_topology, redis_topology
from sluice_infra.settings import ROLES, role_defaults


class LayoutError(RuntimeError):
    """The inventory cannot answer a layout question; the message names the inventory and key."""


def all_role_defaults() -> dict[str, Any]:
    """Every role's defaults merged (role variables carry their role's prefix: no clashes)."""
    merged: dict[str, Any] = {}
    for path in sorted(ROLES.glob("*/defaults/main.yml")):
        merged.update(role_defaults(path.parent.parent.name))
    return merged


def inventory_data(inventory: Path) -> dict[str, Any]:
    """``ansible-inventory --list`` of ``inventory`` (needs the vault password when it has a
    vault, as ansible-playbook does)."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible" / "ansible.cfg")}
    beside = Path(sys.executable).parent / "ansible-inventory"  # the venv's, when run from it
    result = subprocess.run(
        [str(beside) if beside.exists() else "ansible-inventory", "-i", str(inventory), "--list"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise LayoutError(f"ansible-inventory -i {inventory} --list failed: {result.stderr}")
    return json.loads(result.stdout)


def _groups(data: Mapping[str, Any]) -> dict[str, list[str]]:
    """Group name -> its hosts, children's hosts included, in inventory order."""

    def members(group: str) -> list[str]:
        entry = data.get(group) or {}
        found = list(entry.get("hosts", []))
        for child in entry.get("children", []):
            found.extend(members(child))
        return list(dict.fromkeys(found))

    return {group: members(group) for group in data if group != "_meta"}


@dataclass(frozen=True)
class Layout:
    """The hosts, groups and per-host variables of one inventory, and what follows from them."""

    inventory: Path
    groups: dict[str, list[str]]
    hostvars: dict[str, dict[str, Any]]
    defaults: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, inventory: Path) -> Layout:
        data = inventory_data(inventory)
        hostvars = data.get("_meta", {}).get("hostvars", {})
        defaults = all_role_defaults()
        return cls(
            inventory=Path(inventory),
            groups=_groups(data),
            hostvars={host: {**defaults, **vars_} for host, vars_ in hostvars.items()},
            defaults=defaults,
        )

    def hosts(self, group: str) -> list[str]:
        """The hosts of ``group``; an error when it has none (the tests need it)."""
        found = self.groups.get(group, [])
        if not found:
            raise LayoutError(f"{self.inventory}: no host in group {group}")
        return found

    def var(self, host: str, name: str) -> Any:
        """``name`` as ``host`` sees it, untemplated; an error when unset or templated."""
        value = self.hostvars.get(host, self.defaults).get(name)
        if value is None:
            raise LayoutError(f"{self.inventory}: {name} is not set for host {host}")
        if isinstance(value, str) and "{{" in value:
            raise LayoutError(f"{self.inventory}: {name} of host {host} is templated: {value!r}")
        return value

    def address(self, host: str) -> str:
        return str(self.hostvars.get(host, {}).get("ansible_host") or host)

    @cached_property
    def kafka_nodes(self) -> list[kafka_topology.Node]:
        return kafka_topology.nodes(self.hosts("kafka"), self.hostvars)

    @property
    def kafka_bootstrap(self) -> str:
        """The brokers' client listeners (SASL_SSL), as the services' settings name them."""
        return kafka_topology.bootstrap_servers(self.kafka_nodes)

    @cached_property
    def redis_instances(self) -> list[redis_topology.Instance]:
        hosts = self.hosts("redis_cluster")
        return redis_topology.instances(
            hosts,
            self.hostvars,
            int(self.var(hosts[0], "redis_cluster_instances_per_host")),
            int(self.var(hosts[0], "redis_cluster_port_base")),
        )

    @property
    def api_host(self) -> str:
        """The first host running HAProxy and the API instances."""
        return self.hosts("sluice_api")[0]

    @property
    def api_url(self) -> str:
        """HAProxy on the first API host, as clients reach it."""
        host = self.api_host
        return f"http://{self.address(host)}:{int(self.var(host, 'sluice_http_port'))}"

    @property
    def processor_host(self) -> str:
        """The first host running processors (and the admin wrapper `sluice`)."""
        return self.hosts("sluice_processor")[0]

    @property
    def database_host(self) -> str:
        """The host of the coordinator (or the only) PostgreSQL cluster with the events."""
        return self.hosts("citus_coordinator")[0]
