"""Inventory validation: every problem at once, naming host, variable and fix (STYLE.md 7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from seed_layout import GROUPS, the_problem, valid_hostvars

from sluice_infra.inventory import CHECKS, REQUIRED_GROUPS, validate, variables_read
from sluice_infra.secrets import PLACEHOLDER, required_secrets, sync_lab_vault

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The tests pass the lab's vault password explicitly where they need it; a password file
# exported by the Makefile for the lab (and maybe not created yet) must not leak in.
ANSIBLE_ENV = {
    **{k: v for k, v in os.environ.items() if k != "ANSIBLE_VAULT_PASSWORD_FILE"},
    "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"),
}
LAB_PASSWORD_FILE = REPO / ".lab" / "vault-pass"
VALIDATE_PLAYBOOK = REPO / "ansible" / "playbooks" / "validate.yml"


def seed_layout() -> tuple[dict[str, list[str]], dict[str, dict]]:
    """The lab's seed layout with a complete vault: valid."""
    groups = {name: list(hosts) for name, hosts in GROUPS.items()}
    hostvars = valid_hostvars(ssh_sources=["10.77.0.1/32", "2001:db8::/64"])
    return groups, hostvars


def test_a_good_inventory_has_no_problem():
    assert validate(*seed_layout()) == []


def test_every_check_declares_distinct_names_and_what_it_reads():
    assert len({c.name for c in CHECKS}) == len(CHECKS)
    assert {"ansible_host", "common_firewall_ssh_sources", *required_secrets()} <= variables_read()


@pytest.mark.parametrize("group", REQUIRED_GROUPS)
def test_a_missing_group_is_named_with_its_fix(group):
    groups, hostvars = seed_layout()
    del groups[group]

    problem = the_problem(validate(groups, hostvars), f"group {group} ")
    assert "missing" in problem and "hosts.yml" in problem


def test_an_empty_group_is_named_with_its_fix():
    groups, hostvars = seed_layout()
    groups["monitoring"] = []

    problem = the_problem(validate(groups, hostvars), "group monitoring")
    assert "no hosts" in problem and "all.children.monitoring.hosts" in problem


def test_two_hosts_sharing_an_address_are_both_named():
    groups, hostvars = seed_layout()
    hostvars["app"]["ansible_host"] = "10.77.0.10"

    assert validate(groups, hostvars) == [
        "hosts app and db share ansible_host 10.77.0.10: "
        "give each host its own address in hosts.yml"
    ]


def test_addresses_compare_in_canonical_form():
    groups, hostvars = seed_layout()
    hostvars["db"]["ansible_host"] = "2001:db8::a"
    hostvars["app"]["ansible_host"] = "2001:DB8:0:0::A"
    hostvars["stream"]["ansible_host"] = "stream.example.org."

    the_problem(validate(groups, hostvars), "hosts app and db share ansible_host 2001:db8::a")


@pytest.mark.parametrize(
    "address", ["db.example.org", "stream-1.internal.", "fd00::12", "10.0.0.7"]
)
def test_addresses_and_dns_names_are_accepted(address):
    groups, hostvars = seed_layout()
    hostvars["stream"]["ansible_host"] = address

    assert validate(groups, hostvars) == []


@pytest.mark.parametrize("address", ["10.77.0.300", "db_1.example", "-db.example", "two words", 42])
def test_a_bad_address_is_named(address):
    groups, hostvars = seed_layout()
    hostvars["stream"]["ansible_host"] = address

    problem = the_problem(validate(groups, hostvars), "host stream", "ansible_host")
    assert repr(address) in problem and "neither an IPv4/IPv6 address nor a DNS name" in problem


def test_a_host_listed_only_in_a_group_is_named_with_its_groups():
    groups, hostvars = seed_layout()
    groups["kafka"].append("stream2")
    groups["redis_cluster"].append("stream2")

    problems = validate(groups, hostvars)

    assert the_problem(problems, "host stream2 is in kafka and redis_cluster but not in all")
    problem = the_problem(problems, "host stream2 (in kafka and redis_cluster)")
    assert "ansible_host is not set" in problem and "all.hosts.stream2" in problem


def test_two_citus_coordinators_are_refused():
    groups, hostvars = seed_layout()
    groups["citus_coordinator"] = ["db", "app"]

    problem = the_problem(validate(groups, hostvars), "citus_coordinator")
    assert "2 hosts (app and db)" in problem and "exactly one" in problem
    assert "citus_workers" in problem


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("10.77.0.0/33", "is not a CIDR"),
        ("controller", "is not a CIDR"),
        ("10.77.0.1/24", "host bits set: write 10.77.0.0/24 for the network or 10.77.0.1/32"),
    ],
)
def test_a_bad_ssh_source_is_named_with_the_hosts(value, reason):
    groups, hostvars = seed_layout()
    for host in hostvars:
        hostvars[host]["common_firewall_ssh_sources"] = ["10.77.0.1/32", value]

    problem = the_problem(validate(groups, hostvars), "common_firewall_ssh_sources")
    assert problem.startswith("hosts app, db and stream: ")
    assert repr(value) in problem and reason in problem
    assert "group_vars/all/main.yml" in problem


@pytest.mark.parametrize(
    ("value", "words"), [(None, "not set"), ([], "empty"), ("10.0.0.1/32", "list")]
)
def test_ssh_sources_must_be_a_non_empty_list(value, words):
    groups, hostvars = seed_layout()
    if value is None:
        del hostvars["db"]["common_firewall_ssh_sources"]
    else:
        hostvars["db"]["common_firewall_ssh_sources"] = value

    problem = the_problem(validate(groups, hostvars), "host db", "common_firewall_ssh_sources")
    assert words in problem


def test_a_missing_secret_is_named_with_the_lab_fix():
    groups, hostvars = seed_layout()
    for host in hostvars:
        del hostvars[host]["vault_redis_replication_password"]

    problem = the_problem(validate(groups, hostvars), "vault_redis_replication_password")
    assert problem.startswith("hosts app, db and stream: vault secret")
    assert "make lab-vault" in problem and "--inventory inventories/lab " in problem


def test_a_missing_secret_in_production_says_how_to_edit_the_vault():
    groups, hostvars = seed_layout()
    for host in hostvars:
        del hostvars[host]["lab_subnet"]
        hostvars[host]["inventory_dir"] = "/srv/sluice/inventories/proxmox"
    del hostvars["app"]["vault_postgresql_sluice_writer_password"]

    problem = the_problem(validate(groups, hostvars), "vault_postgresql_sluice_writer_password")
    assert problem.startswith("host app: ")
    assert "ansible-vault edit /srv/sluice/inventories/proxmox/group_vars/all/vault.yml" in problem


def test_a_missing_vault_is_one_problem_not_thirteen():
    groups, hostvars = seed_layout()
    for host in hostvars:
        for key in required_secrets():
            del hostvars[host][key]

    problems = validate(groups, hostvars)

    assert len(problems) == 1
    assert "none of the 13 vault secrets" in problems[0] and "make lab-vault" in problems[0]


def test_the_example_placeholder_is_refused():
    groups, hostvars = seed_layout()
    hostvars["db"]["vault_kafka_admin_password"] = PLACEHOLDER

    problem = the_problem(validate(groups, hostvars), "host db", "vault_kafka_admin_password")
    assert PLACEHOLDER in problem and "ansible-vault edit" in problem


def test_problems_never_quote_a_secret():
    groups, hostvars = seed_layout()
    del hostvars["db"]["vault_kafka_admin_password"]
    hostvars["app"]["ansible_host"] = "10.77.0.10"

    text = "\n".join(validate(groups, hostvars))

    assert "secret" in text
    assert not [v for k, v in hostvars["app"].items() if k.startswith("vault_") and v in text]


def test_several_problems_are_all_reported_at_once():
    groups, hostvars = seed_layout()
    del groups["monitoring"]
    groups["citus_coordinator"] = ["db", "stream"]
    hostvars["app"]["ansible_host"] = "10.77.0.12"
    hostvars["db"]["common_firewall_ssh_sources"] = ["10.77.0.1/40"]
    del hostvars["stream"]["vault_kafka_monitoring_password"]

    problems = validate(groups, hostvars)

    assert len(problems) == 5, problems
    the_problem(problems, "group monitoring is missing")
    the_problem(problems, "citus_coordinator has 2 hosts (db and stream)")
    the_problem(problems, "hosts app and stream share ansible_host 10.77.0.12")
    the_problem(problems, "host db:", "'10.77.0.1/40'")
    the_problem(problems, "host stream:", "vault_kafka_monitoring_password")


def test_skip_leaves_out_a_check_and_refuses_unknown_names():
    groups, hostvars = seed_layout()
    del hostvars["db"]["vault_kafka_admin_password"]

    assert validate(groups, hostvars, skip=["vault_secrets"]) == []
    with pytest.raises(ValueError, match="unknown inventory checks to skip: vault"):
        validate(groups, hostvars, skip=["vault"])


# --- the real inventories, through Ansible -----------------------------------------------------


def groups_from_list(listing: dict) -> dict[str, list[str]]:
    """`groups` as a play sees it, from `ansible-inventory --list`: children's hosts included."""

    def hosts_of(group: str) -> list[str]:
        entry = listing.get(group, {})
        hosts = list(entry.get("hosts", []))
        for child in entry.get("children", []):
            hosts += hosts_of(child)
        return list(dict.fromkeys(hosts))

    names = [name for name in listing if name != "_meta"]
    groups = {name: hosts_of(name) for name in names}
    groups["all"] = sorted(listing["_meta"]["hostvars"])
    return groups


@pytest.mark.ansible
@pytest.mark.parametrize("name", ["lab", "lab-spread"])
def test_the_lab_inventories_are_valid(name):
    inventory = REPO / "inventories" / name
    command = [str(BIN / "ansible-inventory"), "-i", str(inventory), "--list"]
    skip = []
    if (inventory / "group_vars" / "all" / "vault.yml").exists():
        assert LAB_PASSWORD_FILE.exists(), f"{inventory}'s vault exists without {LAB_PASSWORD_FILE}"
        command += ["--vault-password-file", str(LAB_PASSWORD_FILE)]
    else:
        skip = ["vault_secrets"]  # no vault yet in this clone: `make lab-vault` creates it
    listing = json.loads(
        subprocess.run(command, env=ANSIBLE_ENV, capture_output=True, text=True, check=True).stdout
    )

    groups = groups_from_list(listing)
    assert validate(groups, listing["_meta"]["hostvars"], skip=skip) == []
    assert groups["citus_coordinator"] == ["db"]


def run_validate_playbook(
    inventory: Path, *extra: str, playbook: Path = VALIDATE_PLAYBOOK
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), *extra, str(playbook)],
        env={**ANSIBLE_ENV, "ANSIBLE_TIMEOUT": "5", "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


BAD_HOSTS = """\
    ---
    all:
      hosts:
        db:
          ansible_host: 192.0.2.10
        app:
          ansible_host: 192.0.2.10
        stream:
          ansible_host: 192.0.2.12
        cache:
          ansible_host: "{{ cache_address_nowhere_defined }}"
      children:
        citus_coordinator:
          hosts:
            db:
            app:
        citus_workers:
          hosts:
            db:
        kafka:
          hosts:
            stream:
            stream2:
        redis_cluster:
          hosts:
            stream:
        sluice_api:
          hosts:
            app:
        sluice_processor:
          hosts:
            app:
    """

BAD_MAIN = """\
    ---
    ansible_user: ops
    common_firewall_ssh_sources:
      - 192.0.2.1/33
    """


@pytest.fixture
def bad_inventory(tmp_path: Path) -> Path:
    inventory = tmp_path / "bad"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(textwrap.dedent(BAD_HOSTS))
    (inventory / "group_vars" / "all" / "main.yml").write_text(textwrap.dedent(BAD_MAIN))
    return inventory


@pytest.mark.ansible
def test_the_playbook_fails_listing_every_problem_without_touching_a_host(bad_inventory):
    inventory = bad_inventory
    result = run_validate_playbook(inventory)
    output = result.stdout + result.stderr

    assert result.returncode != 0, output
    for expected in [
        "group monitoring is missing",
        "group citus_coordinator has 2 hosts (app and db)",
        "hosts app and db share ansible_host 192.0.2.10",
        "host stream2 (in kafka): ansible_host is not set",
        "host cache: ansible_host does not template: 'cache_address_nowhere_defined' is undefined",
        "common_firewall_ssh_sources value '192.0.2.1/33' is not a CIDR",
        "none of the 13 vault secrets",
        f"ansible-vault create {inventory}/group_vars/all/vault.yml",
    ]:
        assert expected in output, f"{expected!r} missing from:\n{output}"
    # Failed in validation, on the controller: no facts gathered, no host contacted.
    assert "Gathering Facts" not in output
    assert "UNREACHABLE" not in output
    assert "unreachable=0" in output and "unreachable=1" not in output


@pytest.mark.ansible
def test_the_playbook_passes_on_a_lab_inventory_with_its_vault(tmp_path):
    inventory = tmp_path / "lab"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    settings = [f"group_vars/all/{name}" for name in ("00-shared.yml", "main.yml", "lab.yml")]
    for name in ["hosts.yml", *settings]:
        (inventory / name).write_text((REPO / "inventories" / "lab" / name).read_text())
    password_file = tmp_path / "vault-pass"
    sync_lab_vault(inventory, password_file)

    result = run_validate_playbook(inventory, "--vault-password-file", str(password_file))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: [db -> localhost]" in result.stdout


@pytest.mark.ansible
def test_site_stops_at_validation(bad_inventory):
    """site.yml imports validate.yml first; a bad inventory ends the run there, even when the
    run is limited by tags."""
    result = run_validate_playbook(
        bad_inventory, "--tags", "common", playbook=REPO / "ansible" / "site.yml"
    )
    output = result.stdout + result.stderr

    assert result.returncode != 0, output
    assert "group citus_coordinator has 2 hosts (app and db)" in output
    plays = [line for line in output.splitlines() if line.startswith("PLAY [")]
    assert plays == [line for line in plays if "Validate the inventory" in line], plays
    assert "UNREACHABLE" not in output


def test_an_inventory_whose_shared_settings_did_not_load_is_one_problem():
    """Ansible skips a group_vars link that does not resolve without a word."""
    groups, hostvars = seed_layout()
    for values in hostvars.values():
        del values["kafka_topics"]
    problem = the_problem(validate(groups, hostvars), "shared settings did not load")
    assert problem.startswith("hosts app, db and stream:")
    assert "00-shared.yml must be a link to inventories/shared/all.yml" in problem
