"""The lab network and apt cache on the host, as pure decisions: what is refused, what is
adopted, what the NAT table and the cache's config say. Nothing here touches the host."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from sluice_infra.lab import LabError, aptcache
from sluice_infra.lab.network import BRIDGE_ALIAS, NFT_TABLE, Link, conflicts, nft_ruleset
from sluice_infra.lab.spec import load

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec():
    return load(REPO / "inventories" / "lab")


def link(name, kind="", alias="", master="", addresses=()) -> Link:
    return Link(
        name=name,
        kind=kind,
        alias=alias,
        master=master,
        addresses=tuple(ipaddress.IPv4Interface(a) for a in addresses),
    )


def current(*found: Link) -> dict[str, Link]:
    return {item.name: item for item in found}


LO = link("lo", addresses=["127.0.0.1/8"])
ETH = link("eth0", addresses=["192.168.1.20/24"])
OWN_BRIDGE = link("sluice0", kind="bridge", alias=BRIDGE_ALIAS, addresses=["10.77.0.1/24"])
HOST_ROUTES = [
    {"dst": "default", "gateway": "192.168.1.1", "dev": "eth0"},
    {"dst": "192.168.1.0/24", "dev": "eth0"},
    {"dst": "127.0.0.0/8", "dev": "lo", "table": "local"},
]


# -- conflicts ---------------------------------------------------------------------------------


def test_clean_host_has_no_conflicts(spec):
    assert conflicts(spec, current(LO, ETH), HOST_ROUTES) == []


def test_own_bridge_with_alias_is_adopted(spec):
    routes = [
        *HOST_ROUTES,
        {"dst": "10.77.0.0/24", "dev": "sluice0"},
        {"dst": "10.77.0.1", "dev": "sluice0", "table": "local", "type": "local"},
    ]
    port = link("vb-db", kind="veth", master="sluice0")
    assert conflicts(spec, current(LO, ETH, OWN_BRIDGE, port), routes) == []


@pytest.mark.parametrize(
    ("kind", "alias", "described"),
    [
        ("dummy", BRIDGE_ALIAS, "kind dummy"),
        ("", "", "kind ?"),
        ("bridge", "", "alias none"),
        ("bridge", "docker", "alias docker"),
    ],
)
def test_foreign_device_named_like_bridge_is_refused(spec, kind, alias, described):
    foreign = link("sluice0", kind=kind, alias=alias)
    [problem] = conflicts(spec, current(LO, ETH, foreign), HOST_ROUTES)
    assert "device sluice0 exists and is not the lab's bridge" in problem
    assert described in problem
    assert "lab_bridge" in problem
    assert f"{spec.inventory}/group_vars/all/lab.yml" in problem


def test_lab_subnet_address_on_another_device_is_refused(spec):
    vpn = link("wg0", kind="wireguard", addresses=["10.77.0.5/24"])
    problems = conflicts(spec, current(LO, ETH, vpn), HOST_ROUTES)
    assert len(problems) == 1
    assert "device wg0 has 10.77.0.5/24, inside the lab subnet 10.77.0.0/24" in problems[0]
    assert "lab_subnet" in problems[0]


def test_wider_network_on_another_device_is_refused(spec):
    corp = link("eth1", addresses=["10.0.0.5/8"])
    [problem] = conflicts(spec, current(LO, ETH, corp), HOST_ROUTES)
    assert "device eth1" in problem


def test_lab_address_on_own_bridge_is_not_a_conflict(spec):
    # the bridge's own addresses are the lab's; stale ones are replaced by network.up
    bridge = link("sluice0", kind="bridge", alias=BRIDGE_ALIAS, addresses=["10.77.0.7/24"])
    assert conflicts(spec, current(LO, ETH, bridge), HOST_ROUTES) == []


@pytest.mark.parametrize("dst", ["10.77.0.0/24", "10.77.0.128/25", "10.0.0.0/8", "10.77.0.9"])
def test_overlapping_route_via_another_device_is_refused(spec, dst):
    routes = [*HOST_ROUTES, {"dst": dst, "gateway": "192.168.1.254", "dev": "eth0"}]
    [problem] = conflicts(spec, current(LO, ETH), routes)
    assert f"route {dst} via eth0 overlaps the lab subnet 10.77.0.0/24" in problem
    assert "lab_subnet" in problem


@pytest.mark.parametrize(
    "route",
    [
        {"dst": "default", "gateway": "10.77.0.1", "dev": "eth0"},
        {"dst": "0.0.0.0/0", "dev": "eth0"},
        {"dst": "10.78.0.0/24", "dev": "eth0"},
        {"dst": "10.77.0.0/24", "dev": "sluice0"},
        {"dst": "fd00::/8", "dev": "eth0"},
        {"dst": "unreachable-garbage", "dev": "eth0"},
    ],
)
def test_routes_that_do_not_conflict(spec, route):
    assert conflicts(spec, current(LO, ETH), [*HOST_ROUTES, route]) == []


def test_several_conflicts_reported_together(spec):
    foreign = link("sluice0", kind="veth")
    vpn = link("wg0", addresses=["10.77.0.5/24"])
    routes = [*HOST_ROUTES, {"dst": "10.77.0.0/16", "dev": "tun0"}]
    problems = conflicts(spec, current(LO, ETH, foreign, vpn), routes)
    assert len(problems) == 3
    assert any("device sluice0" in p for p in problems)
    assert any("device wg0" in p for p in problems)
    assert any("route 10.77.0.0/16 via tun0" in p for p in problems)


# -- nft ruleset -------------------------------------------------------------------------------


def test_nft_ruleset_masquerades_exactly_the_lab_subnet(spec):
    rules = nft_ruleset(spec)
    assert rules.startswith(f"table ip {NFT_TABLE} {{")
    masquerade = [line.strip() for line in rules.splitlines() if "masquerade" in line]
    assert masquerade == ["ip saddr 10.77.0.0/24 ip daddr != 10.77.0.0/24 masquerade"]


def test_nft_ruleset_forwards_for_the_bridge(spec):
    rules = nft_ruleset(spec)
    assert 'iifname "sluice0" accept' in rules
    assert 'oifname "sluice0" ct state established,related accept' in rules
    assert rules.count("{") == rules.count("}")


def test_nft_ruleset_follows_spec(spec):
    from dataclasses import replace

    other = replace(spec, subnet=ipaddress.IPv4Network("192.168.77.0/24"), bridge="labbr")
    rules = nft_ruleset(other)
    assert "ip saddr 192.168.77.0/24 ip daddr != 192.168.77.0/24 masquerade" in rules
    assert 'iifname "labbr"' in rules
    assert "10.77.0" not in rules
    assert "sluice0" not in rules


# -- apt cache ---------------------------------------------------------------------------------


def config_lines(spec, root: Path) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in aptcache._config(spec, root).splitlines() if line)


def test_apt_cache_binds_gateway_and_port(spec, tmp_path):
    config = config_lines(spec, tmp_path)
    assert config["BindAddress"] == "10.77.0.1"
    assert config["Port"] == "3142"
    assert config["CacheDir"] == str(tmp_path / "cache")
    assert config["ForeGround"] == "1"


def test_apt_cache_has_no_remap_rules(spec, tmp_path):
    assert not any(key.startswith("Remap") for key in config_lines(spec, tmp_path))
    assert "Remap" not in aptcache._config(spec, tmp_path)


def test_apt_cache_url(spec):
    assert aptcache.url(spec) == "http://10.77.0.1:3142"


def test_check_refuses_foreign_listener_on_all_addresses(spec, tmp_path, monkeypatch):
    monkeypatch.setattr(aptcache, "_listeners", lambda port: {"0.0.0.0", "127.0.0.1"})
    monkeypatch.setattr(aptcache, "_running", lambda root: [])
    with pytest.raises(LabError) as info:
        aptcache.check(spec, tmp_path)
    message = str(info.value)
    assert "port 3142" in message
    assert "0.0.0.0" in message
    assert "127.0.0.1" not in message


def test_check_refuses_foreign_listener_on_gateway(spec, tmp_path, monkeypatch):
    monkeypatch.setattr(aptcache, "_listeners", lambda port: {"10.77.0.1"})
    monkeypatch.setattr(aptcache, "_running", lambda root: [])
    with pytest.raises(LabError, match=r"port 3142 is taken on 10\.77\.0\.1"):
        aptcache.check(spec, tmp_path)


def test_check_accepts_the_labs_own_cache(spec, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(aptcache, "_listeners", lambda port: {"10.77.0.1"})
    monkeypatch.setattr(aptcache, "_running", lambda root: seen.append(root) or [4242])
    aptcache.check(spec, tmp_path)
    assert seen == [tmp_path / "apt-cacher-ng"]


def test_check_ignores_listeners_on_other_addresses(spec, tmp_path, monkeypatch):
    monkeypatch.setattr(aptcache, "_listeners", lambda port: {"127.0.0.1", "192.168.1.20"})
    monkeypatch.setattr(aptcache, "_running", lambda root: [])
    aptcache.check(spec, tmp_path)


def test_listeners_parses_proc_net_tcp(tmp_path, monkeypatch):
    proc_net_tcp = tmp_path / "tcp"
    proc_net_tcp.write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue\n"
        # 0.0.0.0:3142 listening
        "   0: 00000000:0C46 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n"
        # 10.77.0.1:3142 listening
        "   1: 01004D0A:0C46 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n"
        # 127.0.0.1:22 listening (other port)
        "   2: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n"
        # 192.168.1.20:3142 established, not listening
        "   3: 1401A8C0:0C46 0101A8C0:D431 01 00000000:00000000 00:00000000 00000000\n"
    )
    real_path = Path
    monkeypatch.setattr(
        aptcache,
        "Path",
        lambda p: proc_net_tcp if p == "/proc/net/tcp" else real_path(p),
    )
    assert aptcache._listeners(3142) == {"0.0.0.0", "10.77.0.1"}
    assert aptcache._listeners(22) == {"127.0.0.1"}
