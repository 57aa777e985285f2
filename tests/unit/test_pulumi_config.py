"""The stack config (pulumi/config*.py): the study's defaults and minimums, and refusals that name
the key, the value and the fix, all reported at once, before any resource exists."""

from __future__ import annotations

import contextlib
import json
import re

import pytest
from test_pulumi_helpers import (
    ADDRESSES,
    KEY,
    REMOVE,
    REPO,
    TOKEN,
    config,
    config_fields,
    example_values,
    values,
)

import pulumi


def problems_of(raw: dict, **kwargs) -> list[str]:
    with pytest.raises(config.ConfigError) as info:
        config.load(raw, **kwargs)
    return info.value.problems


def the_problem(problems: list[str], *words: str) -> str:
    matching = [p for p in problems if all(w in p for w in words)]
    assert len(matching) == 1, f"expected one problem with {words}, got {problems}"
    return matching[0]


# -- defaults ----------------------------------------------------------------------------------


def test_a_minimal_config_gets_the_study_sizes_and_protects_the_seed_layouts_data_vms():
    stack = config.load(values())
    sizes = {vm.role: (vm.vcpu, vm.memory_gb) for vm in stack.vms}
    assert sizes == {"db": (8, 32), "app": (12, 24), "stream": (6, 16)}
    assert {vm.role: vm.protect for vm in stack.vms} == {"db": True, "app": False, "stream": True}
    assert {vm.role: str(vm.address) for vm in stack.vms} == ADDRESSES
    assert [vm.role for vm in sorted(stack.vms, key=lambda vm: vm.startup_order)] == [
        "db",
        "stream",
        "app",
    ]


def test_the_spread_layout_protects_every_vm():
    stack = config.load(values(("layout", "spread")))
    assert all(vm.protect and vm.stateful for vm in stack.vms)


def test_the_token_never_shows_in_the_config_repr():
    assert TOKEN.split("=")[1] not in repr(config.load(values()))


def test_derived_macs_are_stable_locally_administered_unicast_and_distinct():
    macs = {vm_id: config.derived_mac(vm_id) for vm_id in (100, 4101, 4102, 999_999_999)}
    assert macs[4101] == config.derived_mac(4101)
    assert len(set(macs.values())) == len(macs)
    for mac in macs.values():
        assert re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", mac)
        first = int(mac[:2], 16)
        assert first & 0b10 and not first & 0b01  # locally administered, unicast


# -- Pulumi.example.yaml -----------------------------------------------------------------------


def test_the_example_is_a_valid_config():
    stack = config.load(example_values())
    assert stack.vm("db").hostname == "sluice-db"
    assert stack.network.vlan == 120


def _keys_read(raw: dict, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    read: set[str] = set()
    original = config_fields.Section.raw

    def recording(section, name):
        read.add(section.key(name))
        return original(section, name)

    monkeypatch.setattr(config_fields.Section, "raw", recording)
    with contextlib.suppress(config.ConfigError):
        config.load(raw)
    monkeypatch.undo()
    return read


def test_the_example_documents_every_key_the_program_reads(monkeypatch):
    variants = [
        example_values(),
        values(
            ("source", {"template": {"vmId": 9000}}),
            ("network", {"mode": "sdn", "sdn": {"zone": "sluice", "vnet": "vnsluice"}}),
            base=example_values(),
        ),
        values(("network.createBridge", True), ("network.bridgePorts", ["eno2"])),
    ]
    read = set().union(*(_keys_read(raw, monkeypatch) for raw in variants))
    text = (REPO / "Pulumi.example.yaml").read_text()
    undocumented = sorted(
        key
        for key in read
        if not re.search(rf"^\s*#?\s*(sluice:)?{re.escape(re.split('[.:]', key)[-1])}:", text, re.M)
    )
    assert undocumented == []
    assert len(read) > 40  # the recording saw the readers at work


# -- refusals that name the key ----------------------------------------------------------------


def test_a_missing_endpoint_names_the_key_and_the_command():
    problem = the_problem(problems_of(values(("proxmox", {}))), "sluice:proxmox.endpoint")
    assert "is not set" in problem
    assert "pulumi config set --path sluice:proxmox.endpoint https://" in problem


def test_a_missing_token_names_the_key_and_how_to_set_it_as_a_secret():
    problem = the_problem(problems_of(values(("proxmoxApiToken", REMOVE))), "proxmoxApiToken")
    assert "pulumi config set --secret sluice:proxmoxApiToken" in problem


def test_a_malformed_token_is_refused_without_echoing_it():
    secret = "not-a-token-but-a-secret-0123456789"
    problem = the_problem(problems_of(values(("proxmoxApiToken", secret))), "proxmoxApiToken")
    assert "user@realm!tokenid=secret" in problem
    assert secret not in problem


def test_a_token_stored_in_plain_text_is_refused():
    problem = the_problem(problems_of(values(), token_is_secret=False), "plain text")
    assert "pulumi config set --secret sluice:proxmoxApiToken" in problem
    assert TOKEN not in problem


def test_an_address_outside_the_subnet_names_key_value_subnet_and_fix():
    problem = the_problem(
        problems_of(values(("vms.db.address", "10.30.0.10"))), "sluice:vms.db.address"
    )
    assert "10.30.0.10 is outside sluice:network.subnet 10.20.0.0/24" in problem
    assert "give the VM an address inside it" in problem


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("10.20.0.0", "network or broadcast"),
        ("10.20.0.255", "network or broadcast"),
        ("10.20.0.1", "is sluice:network.gateway"),
        ("10.20.0.300", "is not an IPv4 address"),
    ],
)
def test_unusable_addresses_are_named(address, words):
    the_problem(problems_of(values(("vms.app.address", address))), "sluice:vms.app.address", words)


def test_duplicate_addresses_name_both_vms():
    problem = the_problem(
        problems_of(values(("vms.app.address", ADDRESSES["db"]))), "are both 10.20.0.10"
    )
    assert "sluice:vms.db.address and sluice:vms.app.address" in problem
    assert "give each VM its own address" in problem


def test_duplicate_vm_ids_name_both_vms():
    problem = the_problem(problems_of(values(("vms.stream.vmId", 4101))), "are both 4101")
    assert "sluice:vms.db.vmId and sluice:vms.stream.vmId" in problem


def test_a_vm_id_equal_to_the_template_is_refused():
    raw = values(("source", {"template": {"vmId": 4102}}))
    the_problem(problems_of(raw), "sluice:vms.app.vmId 4102 is the template's id")


@pytest.mark.parametrize(
    ("role", "key", "value", "minimum"),
    [
        ("db", "vcpu", 4, 8),
        ("db", "memoryGb", 16, 32),
        ("app", "vcpu", 8, 12),
        ("app", "memoryGb", 12, 24),
        ("stream", "vcpu", 2, 6),
        ("stream", "memoryGb", 8, 16),
    ],
)
def test_sizes_below_the_study_minimum_name_key_value_minimum_and_why(role, key, value, minimum):
    problem = the_problem(
        problems_of(values((f"vms.{role}.{key}", value))), f"sluice:vms.{role}.{key}"
    )
    assert f"is {value}, below the minimum {minimum}" in problem
    assert "400,000 events/min" in problem
    assert f"set {minimum} or more" in problem


def test_sizes_above_the_study_are_accepted():
    stack = config.load(values(("vms.stream.vcpu", 16), ("vms.stream.memoryGb", 64)))
    assert (stack.vm("stream").vcpu, stack.vm("stream").memory_gb) == (16, 64)


def test_tiny_disks_are_refused():
    the_problem(problems_of(values(("vms.db.dataDiskGb", 5))), "sluice:vms.db.dataDiskGb", "20")


def test_sockets_must_divide_the_vcpus():
    the_problem(
        problems_of(values(("vms.app.sockets", 5))), "sluice:vms.app.sockets", "divide vcpu 12"
    )


def test_a_misspelt_key_is_named_not_ignored():
    problem = the_problem(problems_of(values(("vms.db.cpus", 16))), "sluice:vms.db.cpus")
    assert "is not a setting" in problem
    the_problem(problems_of(values(("netwrok", {}))), "sluice:netwrok", "is not a setting")


def test_an_unknown_vm_and_a_missing_one_are_named():
    raw = values(("vms.cache", {"vmId": 4200, "address": "10.20.0.20"}), ("vms.app", REMOVE))
    problems = problems_of(raw)
    the_problem(problems, "sluice:vms.cache is not one of the study's VMs")
    the_problem(problems, "sluice:vms.app is not set", "vmId", "address")


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ({}, "exactly one of template"),
        ({"image": {"url": "https://x.example/d.qcow2"}, "template": {"vmId": 9000}}, "both"),
        ({"image": {"url": "https://x.example/debian.iso"}}, "sluice:source.image.fileName"),
        ({"image": {"url": "https://x.example/d.qcow2", "checksum": "abc"}}, "sha512 digest"),
        ({"template": {}}, "sluice:source.template.vmId is not set"),
    ],
)
def test_the_source_must_be_one_usable_template_or_image(source, words):
    the_problem(problems_of(values(("source", source))), words)


def test_an_sdn_simple_zone_refuses_vms_on_several_nodes_and_a_vlan():
    raw = values(
        ("network.mode", "sdn"),
        ("network.sdn", {"zone": "sluice", "vnet": "vnsluice"}),
        ("vms.app.node", "pve2"),
    )
    problems = problems_of(raw)
    the_problem(problems, "sluice:network.mode sdn", "pve1, pve2", "one node")
    the_problem(problems, "sluice:network.vlan", "mode bridge only")


def test_create_bridge_needs_ports():
    the_problem(
        problems_of(values(("network.createBridge", True))), "sluice:network.bridgePorts", "eno2"
    )


def test_bad_ssh_keys_and_admin_user_use_the_labs_rules_and_name_the_key():
    raw = values(("sshAuthorizedKeys", [KEY, "ssh-rsa"]), ("adminUser", "root"))
    problems = problems_of(raw)
    the_problem(problems, "sluice:sshAuthorizedKeys[1]", "OpenSSH public key")
    the_problem(problems, "sluice:adminUser", "not root")


def test_a_gateway_outside_the_subnet_is_named():
    the_problem(
        problems_of(values(("network.gateway", "10.21.0.1"))), "sluice:network.gateway", "outside"
    )


def test_every_problem_is_reported_at_once():
    raw = values(
        ("proxmox", {}),
        ("vms.db.vcpu", 2),
        ("vms.app.address", "192.168.1.5"),
        ("vms.stream.vmId", 4102),
    )
    with pytest.raises(config.ConfigError) as info:
        config.load(raw)
    message = str(info.value)
    for key in (
        "sluice:proxmox.endpoint",
        "sluice:vms.db.vcpu",
        "sluice:vms.app.address",
        "sluice:vms.stream.vmId",
    ):
        assert key in message
    assert message.startswith("the stack config has 4 problem(s)")


# -- reading the running stack's config --------------------------------------------------------


@pytest.fixture
def stack_config():
    """Set the engine's config the way `pulumi up` passes it: JSON text for objects."""

    def apply(raw: dict, secret_keys: tuple[str, ...] = ("sluice:proxmoxApiToken",)) -> None:
        encoded = {
            f"sluice:{key}": value if isinstance(value, str) else json.dumps(value)
            for key, value in raw.items()
        }
        pulumi.runtime.set_all_config(encoded, list(secret_keys))

    yield apply
    pulumi.runtime.set_all_config({}, [])


def test_from_pulumi_reads_the_stacks_keys(stack_config):
    stack_config(values(("layout", "spread")))
    stack = config.from_pulumi()
    assert stack.layout == "spread"
    assert stack.vm("db").vm_id == 4101


def test_from_pulumi_refuses_a_plain_text_token_and_text_for_an_object(stack_config):
    stack_config(values(("network", "10.20.0.0/24")), secret_keys=())
    with pytest.raises(config.ConfigError) as info:
        config.from_pulumi()
    the_problem(info.value.problems, "sluice:network must be an object")
    the_problem(info.value.problems, "sluice:proxmoxApiToken", "plain text")


def test_from_pulumi_knows_secret_keys_from_the_clis_environment(stack_config, monkeypatch):
    stack_config(values(), secret_keys=())
    monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", json.dumps(["sluice:proxmoxApiToken"]))
    assert config.from_pulumi().proxmox.api_token == TOKEN
