"""Input firewall rules for one host, derived from the inventory.

The role `common` renders /etc/nftables.conf from what these functions return. A service
entry says which inventory group (or, with `hosts`, which inventory hosts) runs it, on which
ports, and which groups, hosts and CIDRs may reach it:

    {"name": "node_exporter", "group": "all", "ports": [9100], "proto": "tcp",
     "sources": ["monitoring"], "source_cidrs": []}

`sources` defaults to every host in the inventory (`all`) unless `source_hosts` is given.
`hosts` and `source_hosts` serve placements a variable makes rather than a group (a
PostgreSQL standby: `postgresql_standby_hosts`). Output is sorted, so the rendered ruleset
only changes when the inventory does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

ALL_GROUP = "all"
PROTOCOLS = ("tcp", "udp")
SERVICE_KEYS = frozenset(
    {"name", "group", "hosts", "ports", "proto", "sources", "source_hosts", "source_cidrs"}
)
PORT_MIN = 1
PORT_MAX = 65535

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FirewallError(ValueError):
    """The firewall data cannot produce a ruleset; the message names the entry and the fix."""


class Rule(TypedDict):
    """One accept rule: these sources may reach these ports."""

    name: str
    proto: str
    ports: list[str]
    sources: list[str]
    sources_ipv4: list[str]
    sources_ipv6: list[str]


def parse_port_spec(spec: Any) -> tuple[int, int]:
    """Parse 9100, "9100" or "9092-9094" into an inclusive (low, high) range."""
    if isinstance(spec, bool):
        raise ValueError(f"{spec!r} is not a port")
    if isinstance(spec, int):
        low = high = spec
    elif isinstance(spec, str) and spec.strip().isdigit():
        low = high = int(spec)
    elif isinstance(spec, str) and spec.count("-") == 1:
        first, last = (part.strip() for part in spec.split("-"))
        if not (first.isdigit() and last.isdigit()):
            raise ValueError(f"{spec!r} is not a port or a 'low-high' range")
        low, high = int(first), int(last)
    else:
        raise ValueError(f"{spec!r} is not a port or a 'low-high' range")
    if not PORT_MIN <= low <= high <= PORT_MAX:
        raise ValueError(f"{spec!r} is outside {PORT_MIN}-{PORT_MAX} (or low > high)")
    return low, high


def merge_port_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort and merge overlapping or adjacent ranges (nft rejects overlapping set elements)."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def format_port_range(port_range: tuple[int, int]) -> str:
    """nft syntax: "9100" for one port, "9092-9094" for a range."""
    low, high = port_range
    return str(low) if low == high else f"{low}-{high}"


def parse_network(value: Any) -> Network:
    """An address or a CIDR; host bits set in a CIDR are an error (10.0.0.5/24 is a typo)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not an address or CIDR")
    return ipaddress.ip_network(value.strip(), strict=True)


def format_network(network: Network) -> str:
    """A single address prints without its /32 or /128."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _drop_covered(networks: Iterable[Network]) -> list[Network]:
    """Sorted, without duplicates or networks inside another one (nft rejects overlapping set
    elements). Adjacent hosts stay separate, so the ruleset still names each address."""
    kept: list[Network] = []
    for network in sorted(set(networks), key=lambda n: (n.network_address, n.prefixlen)):
        if not any(network.subnet_of(outer) for outer in kept):
            kept.append(network)
    return kept


def collapse(networks: Iterable[Network]) -> tuple[list[str], list[str]]:
    """Deduplicated sources per family: (ipv4, ipv6), each in address order."""
    networks = list(networks)
    return (
        [format_network(n) for n in _drop_covered(n for n in networks if n.version == 4)],
        [format_network(n) for n in _drop_covered(n for n in networks if n.version == 6)],
    )


def cidr_problems(cidrs: Any, variable: str, *, required: bool = True) -> list[str]:
    """Problems with a list of addresses/CIDRs, each naming `variable` and the fix."""
    if not isinstance(cidrs, list | tuple):
        return [f"{variable} must be a list of addresses or CIDRs, got {cidrs!r}"]
    if required and not cidrs:
        return [
            f"{variable} is empty: list the networks allowed in (e.g. the controller's "
            "address as 10.0.0.1/32), or the host is unreachable once the firewall loads"
        ]
    problems = []
    for value in cidrs:
        try:
            parse_network(value)
        except ValueError as err:
            problems.append(f"{variable}: {value!r} is not a valid address or CIDR ({err})")
    return problems


def service_problems(services: Any, variable: str = "common_firewall_services") -> list[str]:
    """Problems with the service list's shape and values, each naming the entry and the fix."""
    if not isinstance(services, list | tuple):
        return [f"{variable} must be a list of service entries, got {services!r}"]
    problems: list[str] = []
    seen: set[str] = set()
    for index, service in enumerate(services):
        where = f"{variable}[{index}]"
        if not isinstance(service, Mapping):
            problems.append(f"{where} must be a mapping with name, group and ports")
            continue
        name = service.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{where} needs a non-empty 'name'")
        else:
            where = f"{variable} entry {name!r}"
            if name in seen:
                problems.append(f"{where} appears twice; service names must be unique")
            seen.add(name)
        unknown = sorted(set(service) - SERVICE_KEYS)
        if unknown:
            problems.append(f"{where} has unknown keys {unknown}; allowed: {sorted(SERVICE_KEYS)}")
        if ("group" in service) == ("hosts" in service):
            problems.append(
                f"{where} needs exactly one of 'group' (the inventory group whose hosts run it) "
                "and 'hosts' (a list of inventory hosts)"
            )
        elif "group" in service and (not isinstance(service["group"], str) or not service["group"]):
            problems.append(f"{where} needs 'group': the inventory group whose hosts run it")
        for key in ("hosts", "source_hosts"):
            if key in service and not _names(service[key]):
                problems.append(f"{where}: '{key}' must be a list of inventory host names")
        ports = service.get("ports")
        if not isinstance(ports, list | tuple) or not ports:
            problems.append(f"{where} needs 'ports': a non-empty list of ports or 'low-high'")
        else:
            for port in ports:
                try:
                    parse_port_spec(port)
                except ValueError as err:
                    problems.append(f"{where}: port {err}")
        proto = service.get("proto", "tcp")
        if proto not in PROTOCOLS:
            problems.append(f"{where}: proto {proto!r} must be one of {list(PROTOCOLS)}")
        sources = service.get("sources", _default_sources(service))
        if not isinstance(sources, list | tuple) or not all(
            isinstance(group, str) and group for group in sources
        ):
            problems.append(f"{where}: 'sources' must be a list of inventory group names")
        problems.extend(
            cidr_problems(service.get("source_cidrs", []), f"{where} source_cidrs", required=False)
        )
    return problems


def _names(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) and v for v in value)


def _default_sources(service: Mapping[str, Any]) -> list[str]:
    """`all`, unless the entry names its source hosts instead of groups."""
    return [] if "source_hosts" in service else [ALL_GROUP]


def _service_hosts(
    groups: Mapping[str, Sequence[str]], service: Mapping[str, Any], name: str
) -> list[str]:
    if "hosts" in service:
        return list(service["hosts"])
    return _group_hosts(groups, service["group"], name, "service")


def host_addresses(
    hostvars: Mapping[str, Mapping[str, Any]], hosts: Iterable[str]
) -> dict[str, str]:
    """Each host's ansible_host (its inventory name when unset), as a plain dict."""
    return {host: str(hostvars[host].get("ansible_host", host)) for host in hosts}


def _group_hosts(
    groups: Mapping[str, Sequence[str]], group: str, service: str, role: str
) -> list[str]:
    if group not in groups:
        raise FirewallError(
            f"firewall service {service!r}: {role} group {group!r} is not in the inventory; "
            f"add the group to the inventory or fix the name (groups: {sorted(groups)})"
        )
    return list(groups[group])


def _address(addresses: Mapping[str, str], host: str, service: str) -> Network:
    if host not in addresses:
        raise FirewallError(f"firewall service {service!r}: no address known for host {host!r}")
    try:
        return ipaddress.ip_network(addresses[host])
    except ValueError:
        raise FirewallError(
            f"firewall service {service!r}: host {host!r} has ansible_host "
            f"{addresses[host]!r}, which is not an IP address; the firewall needs addresses"
        ) from None


def make_rule(name: str, proto: str, ports: Iterable[Any], sources: Iterable[Network]) -> Rule:
    """A rule with merged ports and collapsed, family-split sources."""
    ipv4, ipv6 = collapse(list(sources))
    return Rule(
        name=name,
        proto=proto,
        ports=[format_port_range(r) for r in merge_port_ranges(parse_port_spec(p) for p in ports)],
        sources=ipv4 + ipv6,
        sources_ipv4=ipv4,
        sources_ipv6=ipv6,
    )


def ssh_rule(sources: Sequence[str], port: int = 22) -> Rule:
    """The rule that keeps the controller's SSH open; empty sources are an error."""
    problems = cidr_problems(list(sources), "common_firewall_ssh_sources")
    problems += [f"common_ssh_port: {err}" for err in _port_errors(port)]
    if problems:
        raise FirewallError("; ".join(problems))
    return make_rule("ssh", "tcp", [port], (parse_network(s) for s in sources))


def _port_errors(port: Any) -> list[str]:
    try:
        parse_port_spec(port)
    except ValueError as err:
        return [str(err)]
    return []


def firewall_rules(
    services: Sequence[Mapping[str, Any]],
    groups: Mapping[str, Sequence[str]],
    hostvars_addresses: Mapping[str, str],
    this_host: str,
) -> list[Rule]:
    """Accept rules for `this_host`: one per service it runs that has any allowed source.

    Groups in `sources` resolve to their hosts' addresses; `source_cidrs` are added as given.
    Rules are sorted by first port, protocol and name; sources are collapsed and sorted.
    """
    problems = service_problems(list(services))
    if problems:
        raise FirewallError("; ".join(problems))
    rules: list[Rule] = []
    for service in services:
        name = service["name"]
        if this_host not in _service_hosts(groups, service, name):
            continue
        networks: list[Network] = [parse_network(c) for c in service.get("source_cidrs", [])]
        source_hosts = list(service.get("source_hosts", []))
        for group in service.get("sources", _default_sources(service)):
            source_hosts += _group_hosts(groups, group, name, "source")
        networks += [_address(hostvars_addresses, host, name) for host in source_hosts]
        if not networks:
            continue
        rules.append(make_rule(name, service.get("proto", "tcp"), service["ports"], networks))
    return sorted(rules, key=lambda r: (int(r["ports"][0].split("-")[0]), r["proto"], r["name"]))
