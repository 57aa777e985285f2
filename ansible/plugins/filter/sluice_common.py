"""Filters for the role `common`: thin wrappers over sluice_infra.firewall and .sysctl."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sluice_infra import firewall, sysctl
from sluice_infra.filter_errors import filter_errors

# The library's ValueError (FirewallError, the sysctl plan's) fails the task with its message.
_filter_errors = filter_errors(ValueError)


@_filter_errors
def sluice_firewall_rules(
    services: Sequence[Mapping[str, Any]],
    groups: Mapping[str, Sequence[str]],
    hostvars: Mapping[str, Mapping[str, Any]],
    this_host: str,
) -> list[firewall.Rule]:
    """services | sluice_firewall_rules(groups, hostvars, inventory_hostname)"""
    addresses = firewall.host_addresses(hostvars, groups.get(firewall.ALL_GROUP, []))
    return firewall.firewall_rules(services, groups, addresses, this_host)


@_filter_errors
def sluice_firewall_ssh_rule(sources: Sequence[str], port: int = 22) -> firewall.Rule:
    """common_firewall_ssh_sources | sluice_firewall_ssh_rule(common_ssh_port)"""
    return firewall.ssh_rule(list(sources), port)


class FilterModule:
    """Filters for the role `common`."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "sluice_firewall_rules": sluice_firewall_rules,
            "sluice_firewall_ssh_rule": sluice_firewall_ssh_rule,
            "sluice_firewall_problems": firewall.service_problems,
            "sluice_cidr_problems": firewall.cidr_problems,
            "sluice_is_container": sysctl.is_container_from_facts,
            "sluice_sysctl_parse": sysctl.parse_sysctl_output,
            "sluice_sysctl_proc_paths": sysctl.proc_paths,
            "sluice_sysctl_keys_from_paths": sysctl.keys_from_paths,
            "sluice_sysctl_plan": _filter_errors(sysctl.sysctl_plan),
            "sluice_sysctl_problems": sysctl.sysctl_problems,
            "sluice_sysctl_skipped_message": sysctl.skipped_message,
        }
