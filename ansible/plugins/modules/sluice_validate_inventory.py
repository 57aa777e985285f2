# The work is done on the controller by the action plugin of the same name
# (ansible/plugins/action/sluice_validate_inventory.py over sluice_infra/inventory.py); this
# file documents its arguments for ansible-doc and ansible-lint.

DOCUMENTATION = r"""
---
module: sluice_validate_inventory
short_description: Check the Sluice inventory before any host is touched
description:
  - Runs every check of C(sluice_infra.inventory) on the inventory's C(groups) and C(hostvars)
    and fails listing every problem at once, one per line, each naming the host or group,
    the variable and the fix.
  - "Checks: C(required_groups) (citus_coordinator, citus_workers, kafka, redis_cluster,
    sluice_api, sluice_processor and monitoring exist and have hosts); C(citus_coordinator)
    (exactly one); C(service_hosts_in_all); C(host_addresses) (every host has an
    C(ansible_host) that is an IPv4/IPv6 address or a DNS name, no two hosts share one);
    C(ssh_sources) (C(common_firewall_ssh_sources) are CIDRs); C(vault_secrets) (every
    C(vault_<service>_<user>_password) is defined and not the example value)."
  - Runs on the controller only and never connects to a host. Use it with C(run_once).
  - Returns no variable's value, so vault secrets never reach the output.
options:
  skip:
    description:
      - Names of checks not to run, e.g. C(vault_secrets) for an inventory without a vault.
    type: list
    elements: str
    default: []
author:
  - Sluice maintainers
"""

EXAMPLES = r"""
- name: Validate the inventory before touching any host
  sluice_validate_inventory:
  run_once: true
  delegate_to: localhost

- name: Validate an inventory that has no vault yet
  sluice_validate_inventory:
    skip:
      - vault_secrets
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
msg:
  description:
    - On failure, how many problems and then every problem, one per line; on success, how many
      hosts were checked.
  returned: always
  type: str
  sample: |-
    the inventory has 1 problem(s); fix them before site.yml touches any host:
    group citus_coordinator has 2 hosts (app and db): exactly one host is the Citus coordinator; ...
"""
