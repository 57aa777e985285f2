"""cloud-init seed rendering: what the lab writes as a NoCloud seed and Pulumi uploads to
Proxmox. A bad setting must fail here, naming host and setting, not on a booting machine."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from sluice_infra.cloudinit import CloudInitError, HostBootstrap, render

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh0ZXN0a2V5dGVzdGtleXRlc3RrZXl0ZXN0a2V5 ops@test"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG90aGVyb3RoZXJvdGhlcm90aGVyb3RoZXJvdGhl x@y"


def host(**changes) -> HostBootstrap:
    base = HostBootstrap(
        hostname="db",
        address="10.77.0.10/24",
        gateway="10.77.0.1",
        nameservers=("192.0.2.53", "192.0.2.54"),
        admin_user="ops",
        ssh_authorized_keys=(KEY,),
    )
    return dataclasses.replace(base, **changes)


def user_data(h: HostBootstrap) -> dict:
    return yaml.safe_load(render(h).user_data)


def network(h: HostBootstrap) -> dict:
    return yaml.safe_load(render(h).network_config)


def meta(h: HostBootstrap) -> dict:
    return yaml.safe_load(render(h).meta_data)


# -- user-data ---------------------------------------------------------------------------------


def test_user_data_is_cloud_config_with_admin_user_key_and_passwordless_sudo():
    text = render(host()).user_data
    assert text.startswith("#cloud-config\n")
    data = yaml.safe_load(text)
    assert data["hostname"] == "db"
    [user] = data["users"]
    assert user["name"] == "ops"
    assert user["ssh_authorized_keys"] == [KEY]
    assert user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert user["lock_passwd"] is True
    assert data["disable_root"] is True
    assert data["ssh_pwauth"] is False


def test_user_data_carries_every_key():
    [user] = user_data(host(ssh_authorized_keys=(KEY, OTHER_KEY)))["users"]
    assert user["ssh_authorized_keys"] == [KEY, OTHER_KEY]


def test_fqdn_uses_domain_when_given():
    assert user_data(host())["fqdn"] == "db"
    assert user_data(host(domain="sluice.example"))["fqdn"] == "db.sluice.example"


def test_apt_proxy_only_when_given():
    assert "apt" not in user_data(host())
    data = user_data(host(apt_proxy="http://10.77.0.1:3142"))
    assert data["apt"]["http_proxy"] == "http://10.77.0.1:3142"


# -- network-config ----------------------------------------------------------------------------


def test_network_config_v2_keyed_by_interface_name():
    data = network(host(interface_name="host0"))
    assert data["version"] == 2
    assert list(data["ethernets"]) == ["host0"]
    eth = data["ethernets"]["host0"]
    assert eth["addresses"] == ["10.77.0.10/24"]
    assert eth["nameservers"]["addresses"] == ["192.0.2.53", "192.0.2.54"]
    assert "search" not in eth["nameservers"]


def test_default_route_is_spelled_as_a_network_never_to_default():
    config = render(host()).network_config
    routes = yaml.safe_load(config)["ethernets"]["eth0"]["routes"]
    assert routes == [{"to": "0.0.0.0/0", "via": "10.77.0.1"}]
    # cloud-init 22.4 (Debian 12) rejects `to: default`; the comment may name it, no key may
    assert not any(
        line.split("#", 1)[0].strip().endswith("default")
        for line in config.splitlines()
        if line.split("#", 1)[0].strip()
    )


def test_no_mac_match_without_mac():
    eth = network(host())["ethernets"]["eth0"]
    assert "match" not in eth
    assert "set-name" not in eth


def test_mac_match_and_set_name_with_mac():
    eth = network(host(interface_mac="52:54:00:12:34:56"))["ethernets"]["eth0"]
    assert eth["match"] == {"macaddress": "52:54:00:12:34:56"}
    assert eth["set-name"] == "eth0"


def test_search_domains_when_given():
    eth = network(host(search_domains=("sluice.example",)))["ethernets"]["eth0"]
    assert eth["nameservers"]["search"] == ["sluice.example"]


# -- meta-data ---------------------------------------------------------------------------------


def test_meta_data_names_host():
    data = meta(host())
    assert data["local-hostname"] == "db"
    assert data["instance-id"].startswith("sluice-db-")


def test_instance_id_stable_for_same_settings():
    assert meta(host())["instance-id"] == meta(host())["instance-id"]
    assert render(host()) == render(host())


@pytest.mark.parametrize(
    "change",
    [
        {"address": "10.77.0.20/24"},
        {"ssh_authorized_keys": (OTHER_KEY,)},
        {"ssh_authorized_keys": (KEY, OTHER_KEY)},
        {"gateway": "10.77.0.254"},
        {"apt_proxy": "http://10.77.0.1:3142"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_instance_id_changes_with_settings(change):
    assert meta(host(**change))["instance-id"] != meta(host())["instance-id"]


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"hostname": "DB"}, "hostname"),
        ({"hostname": "db_1"}, "hostname"),
        ({"hostname": "-db"}, "hostname"),
        ({"hostname": "db.example"}, "hostname"),
        ({"hostname": ""}, "hostname"),
        ({"address": "10.77.0.10"}, "address"),
        ({"address": "10.77.0.10/32"}, "address"),
        ({"address": "not-an-address/24"}, "address"),
        ({"gateway": "10.78.0.1"}, "gateway"),
        ({"gateway": "gw"}, "gateway"),
        ({"gateway": "10.77.0.10"}, "gateway"),
        ({"nameservers": ()}, "nameserver"),
        ({"nameservers": ("dns.example",)}, "nameserver"),
        ({"admin_user": "root"}, "admin user"),
        ({"admin_user": "Ops"}, "admin user"),
        ({"admin_user": ""}, "admin user"),
        ({"ssh_authorized_keys": ()}, "SSH public key"),
        (
            {"ssh_authorized_keys": ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n",)},
            "OpenSSH public key",
        ),
        ({"ssh_authorized_keys": ("not a key at all",)}, "OpenSSH public key"),
        ({"ssh_authorized_keys": (KEY + "\n" + OTHER_KEY,)}, "OpenSSH public key"),
        ({"interface_mac": "52:54:00:12:34"}, "MAC"),
        ({"interface_mac": "52-54-00-12-34-56"}, "MAC"),
        ({"interface_mac": "52:54:00:12:34:ZZ"}, "MAC"),
    ],
)
def test_invalid_setting_raises_naming_host_and_setting(change, setting):
    bad = host(**change)
    with pytest.raises(CloudInitError) as info:
        render(bad)
    message = str(info.value)
    assert f"host {bad.hostname!r}" in message
    assert setting in message


def test_gateway_equal_to_address_says_so():
    with pytest.raises(CloudInitError, match="host's own address"):
        render(host(gateway="10.77.0.10"))


def test_gateway_outside_subnet_names_subnet():
    with pytest.raises(CloudInitError, match=r"outside the host's subnet 10\.77\.0\.0/24"):
        render(host(gateway="10.78.0.1"))


def test_private_key_is_not_echoed_whole():
    private = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "A" * 200 + "\n-----END"
    with pytest.raises(CloudInitError) as info:
        render(host(ssh_authorized_keys=(private,)))
    assert "A" * 40 not in str(info.value)


def test_hostname_with_trailing_newline_is_refused():
    with pytest.raises(CloudInitError, match="hostname"):
        render(host(hostname="db\n"))


def test_mac_with_trailing_newline_is_refused():
    with pytest.raises(CloudInitError, match="MAC"):
        render(host(interface_mac="52:54:00:12:34:56\n"))


def test_key_without_key_data_is_refused():
    with pytest.raises(CloudInitError, match="OpenSSH public key"):
        render(host(ssh_authorized_keys=("ssh-ed25519",)))


def test_network_address_as_host_address_is_refused():
    with pytest.raises(CloudInitError, match="address"):
        render(host(address="10.77.0.0/24"))
