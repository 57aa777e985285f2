"""Where the settings live (sluice_infra.settings): every inventory's group_vars/all links the
shared settings (inventories/shared/all.yml) ahead of its own main.yml, and the Python tools
read group_vars/all and the roles' defaults as Ansible does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from sluice_infra import settings
from sluice_infra.settings import SettingsError, group_vars_all, role_default, vars_files

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SHARED = REPO / "inventories" / "shared" / "all.yml"
INVENTORIES = ["lab", "lab-spread", "proxmox"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# --- the shipped inventories -------------------------------------------------------------------


@pytest.mark.parametrize("name", INVENTORIES)
def test_every_inventory_reads_the_shared_settings_before_its_own(name):
    directory = REPO / "inventories" / name / "group_vars" / "all"
    link = directory / "00-shared.yml"
    # relative, so the link holds in any clone and through molecule's link to group_vars/
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == SHARED.resolve()
    order = [path.name for path in vars_files(directory)]
    assert order.index("00-shared.yml") < order.index("main.yml")  # later files win


@pytest.mark.parametrize("name", INVENTORIES)
def test_an_environment_sets_only_what_differs_from_the_shared_settings(name):
    shared = yaml.safe_load(SHARED.read_text())
    own = yaml.safe_load((REPO / "inventories" / name / "group_vars/all/main.yml").read_text())
    copies = sorted(set(own) & set(shared))
    assert copies == [], (
        f"inventories/{name}/group_vars/all/main.yml repeats shared settings {copies}: drop "
        f"them there, or change them in inventories/shared/all.yml for every environment"
    )


def test_the_environments_differ_where_they_should():
    lab, spread, production = (group_vars_all(REPO / "inventories" / n) for n in INVENTORIES)
    assert lab["citus_enabled"] is False and production["citus_enabled"] is True
    assert lab["postgresql_standby_hosts"] == [] and spread["postgresql_standby_hosts"] == ["app"]
    assert lab["common_firewall_ssh_sources"] == ["10.77.0.1/32"]
    assert production["common_firewall_ssh_sources"] == ["192.0.2.0/24"]  # the example
    # shared: the same value everywhere
    for key in yaml.safe_load(SHARED.read_text()):
        assert lab[key] == spread[key] == production[key], key


# --- group_vars/all, read as Ansible reads it ----------------------------------------------------


def ansible_group_vars_all(inventory: Path) -> dict:
    """``all``'s variables as ansible-inventory reads them (untemplated)."""
    environment = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg")}
    environment.pop("ANSIBLE_VAULT_PASSWORD_FILE", None)
    listing = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(inventory), "--list", "--export"],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(listing.stdout)["all"].get("vars", {})


@pytest.mark.ansible
def test_group_vars_all_merges_the_files_as_ansible_does(tmp_path):
    inventory = tmp_path / "env"
    write(inventory / "hosts.yml", "all:\n  hosts:\n    db:\n")
    folder = inventory / "group_vars" / "all"
    write(tmp_path / "shared" / "all.yml", "port: 1\nnames: [a, b]\nshared_only: x\n")
    folder.mkdir(parents=True)
    (folder / "00-shared.yml").symlink_to("../../../shared/all.yml")
    write(folder / "main.yml", "port: 2\nown: {k: v}\n")  # after 00-shared.yml: wins
    write(folder / "10-sub" / "a.yml", "names: [c]\nsub: 1\n")  # a folder is walked in place
    write(folder / "lab.json", '{"port": 3, "json": true}')  # .json is read; "lab" < "main"
    write(folder / "zz", "plain: no extension\n")  # no extension: read
    write(folder / "notes.txt", "port: 99\n")  # another extension: ignored
    write(folder / ".hidden.yml", "port: 98\n")  # hidden: ignored
    write(folder / "main.yml~", "port: 97\n")  # editor backup: ignored
    write(folder / "vault.yml", "$ANSIBLE_VAULT;1.1;AES256\n6162\n")  # secrets: left out

    ours = group_vars_all(inventory)

    assert ours == {
        "port": 2,
        "names": ["c"],  # replaced whole, not merged
        "shared_only": "x",
        "own": {"k": "v"},
        "sub": 1,
        "json": True,
        "plain": "no extension",
    }
    (folder / "vault.yml").unlink()  # ansible-inventory needs the password to read it
    assert ansible_group_vars_all(inventory) == ours


def test_a_group_vars_all_file_is_read_when_there_is_no_folder(tmp_path):
    write(tmp_path / "group_vars" / "all.yml", "port: 1\n")
    assert group_vars_all(tmp_path) == {"port": 1}
    write(tmp_path / "group_vars" / "all" / "main.yml", "other: 2\n")
    assert group_vars_all(tmp_path) == {"other": 2}  # Ansible reads the folder only
    assert group_vars_all(tmp_path / "nowhere") == {}


def test_ansible_tags_are_read_and_a_vaulted_value_stays_opaque(tmp_path):
    write(
        tmp_path / "group_vars" / "all" / "main.yml",
        """\
        password: !vault |
          $ANSIBLE_VAULT;1.1;AES256
          6162
        template: !unsafe "{{ not templated }}"
        """,
    )
    values = group_vars_all(tmp_path)
    assert isinstance(values["password"], settings.VaultedValue)
    assert values["template"] == "{{ not templated }}"


@pytest.mark.parametrize(
    ("text", "words"),
    [("port: [1\n", "is not valid YAML"), ("- a\n- b\n", "must hold a mapping of variables")],
)
def test_an_unreadable_settings_file_is_named(tmp_path, text, words):
    path = write(tmp_path / "group_vars" / "all" / "main.yml", text)
    with pytest.raises(SettingsError, match=words) as raised:
        group_vars_all(tmp_path)
    assert str(path) in str(raised.value)


# --- role defaults -----------------------------------------------------------------------------


def test_role_default_is_the_roles_value():
    defaults = yaml.safe_load((REPO / "ansible/roles/kafka/defaults/main.yml").read_text())
    assert role_default("kafka", "kafka_replication_factor") == defaults["kafka_replication_factor"]
    assert role_default("sluice", "sluice_http_port") == 8080


def test_a_missing_role_default_says_where_to_declare_it():
    with pytest.raises(SettingsError, match=r"kafka_nothing is not in .*kafka/defaults/main\.yml"):
        role_default("kafka", "kafka_nothing")
    with pytest.raises(SettingsError, match="is missing"):
        role_default("no_such_role", "x")
