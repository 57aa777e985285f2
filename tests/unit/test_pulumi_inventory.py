"""The hand-off from Pulumi to Ansible: inventories/proxmox/hosts.yml rendered from the stack's
outputs (sluice_infra.pulumi_inventory), with the lab's groups, accepted by site.yml's own
inventory validation together with inventories/proxmox/group_vars."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_pulumi_helpers import ADDRESSES, REPO, config, run_stack, values
from yamllint import linter
from yamllint.config import YamlLintConfig

from sluice_infra import pulumi_inventory
from sluice_infra.pulumi_inventory import InventoryError, parse_outputs, render
from sluice_infra.settings import group_vars_all

BIN = Path(sys.executable).parent
PROXMOX = REPO / "inventories" / "proxmox"
LAB_SOURCES = {"seed": "lab", "spread": "lab-spread"}


def stack_output_json(layout: str = "seed") -> str:
    """What `pulumi stack output --json` prints for the mocked stack of ``layout``."""
    return json.dumps(run_stack(config.load(values(("layout", layout)))).outputs, indent=2)


@pytest.fixture(scope="module", params=["seed", "spread"])
def rendered(request) -> tuple[str, str]:
    layout = request.param
    outputs = parse_outputs(json.loads(stack_output_json(layout)))
    return layout, render(outputs, stack="test")


def lab_children(layout: str) -> dict:
    hosts = REPO / "inventories" / LAB_SOURCES[layout] / "hosts.yml"
    return yaml.safe_load(hosts.read_text())["all"]["children"]


def test_the_inventory_has_the_lab_layouts_groups_hosts_and_group_host_vars(rendered):
    layout, text = rendered
    top = yaml.safe_load(text)["all"]
    assert top["children"] == lab_children(layout)  # groups, members and their host vars
    assert {host: v["ansible_host"] for host, v in top["hosts"].items()} == ADDRESSES
    assert top["vars"] == {"ansible_user": "ops"}


def test_the_rendered_inventory_passes_the_repositorys_yamllint(rendered):
    _, text = rendered
    rules = YamlLintConfig(file=str(REPO / ".yamllint"))
    assert [str(problem) for problem in linter.run(text, rules)] == []


def test_the_header_names_the_stack_and_the_layouts_source(rendered):
    layout, text = rendered
    assert "# Stack: test\n" in text
    assert f"inventories/{LAB_SOURCES[layout]}/hosts.yml" in text


def test_layouts_know_which_hosts_keep_data():
    seed = pulumi_inventory.layout("seed")
    assert pulumi_inventory.stateful_hosts(seed) == {"db", "stream"}
    spread = pulumi_inventory.layout("spread")
    assert pulumi_inventory.stateful_hosts(spread) == {"db", "app", "stream"}
    assert "kafka" in seed.groups_of("stream") and "kafka" not in seed.groups_of("db")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda o: o.update(layout="mesh"), "output layout is 'mesh'"),
        (lambda o: o["hosts"].pop("app"), "output hosts has db, stream"),
        (lambda o: o["hosts"]["db"].update(address="10.20.0.300"), "hosts.db.address"),
        (lambda o: o["hosts"]["db"].update(vcpu="8"), "hosts.db.vcpu"),
        (lambda o: o["hosts"]["app"].update(address=ADDRESSES["db"]), "share address 10.20.0.10"),
        (lambda o: o["hosts"]["stream"].update(role="db"), "hosts.stream.role"),
        (lambda o: o.pop("adminUser"), "output adminUser"),
    ],
)
def test_bad_outputs_are_refused_naming_the_output_key(change, words):
    outputs = json.loads(stack_output_json())
    change(outputs)
    with pytest.raises(InventoryError) as info:
        parse_outputs(outputs)
    assert words in str(info.value)
    assert "pulumi up" in str(info.value)


def test_an_unknown_layout_is_named():
    with pytest.raises(InventoryError, match="layout 'mesh' is unknown: use one of seed, spread"):
        pulumi_inventory.layout("mesh")


# -- the command line --------------------------------------------------------------------------


def test_the_cli_renders_from_stdin_then_reports_up_to_date(tmp_path, capsys):
    out = tmp_path / "proxmox" / "hosts.yml"
    argv = ["--from-json", "-", "--out", str(out)]
    assert pulumi_inventory.main(argv, stdin=io.StringIO(stack_output_json())) == 0
    assert f"{out}: written (seed layout: db 10.20.0.10" in capsys.readouterr().out
    first = out.read_text()
    assert pulumi_inventory.main(argv, stdin=io.StringIO(stack_output_json())) == 0
    assert "up to date" in capsys.readouterr().out
    assert out.read_text() == first


def test_the_cli_reads_a_file_and_refuses_empty_or_non_json_input(tmp_path, capsys):
    source = tmp_path / "outputs.json"
    source.write_text(stack_output_json())
    out = tmp_path / "hosts.yml"
    assert pulumi_inventory.main(["--from-json", str(source), "--out", str(out)]) == 0
    for text, words in [("", "is empty"), ("[secret]", "is not JSON"), ("{}", "output layout")]:
        source.write_text(text)
        assert pulumi_inventory.main(["--from-json", str(source), "--out", str(out)]) == 1
        assert words in capsys.readouterr().err


def test_the_cli_warns_while_the_ssh_sources_are_still_the_example(tmp_path, capsys):
    inventory = tmp_path / "proxmox"
    shutil.copytree(PROXMOX / "group_vars", inventory / "group_vars")
    argv = ["--from-json", "-", "--out", str(inventory / "hosts.yml")]
    assert pulumi_inventory.main(argv, stdin=io.StringIO(stack_output_json())) == 0
    warnings = capsys.readouterr().err
    assert "common_firewall_ssh_sources in" in warnings and "shuts SSH out" in warnings
    assert "sluice_http_client_cidrs in" in warnings and "away from HAProxy" in warnings
    assert warnings.count("still the example 192.0.2.0/24") == 2
    main_yml = inventory / "group_vars" / "all" / "main.yml"
    main_yml.write_text(main_yml.read_text().replace("192.0.2.0/24", "10.99.0.0/24"))
    inventory.joinpath("hosts.yml").unlink()
    assert pulumi_inventory.main(argv, stdin=io.StringIO(stack_output_json())) == 0
    assert "warning" not in capsys.readouterr().err


# -- inventories/proxmox/group_vars ------------------------------------------------------------


def test_production_settings_add_the_package_sources_and_leave_the_admin_user_to_the_stack():
    # the lab's other settings reach production through the shared file (tests/unit/test_settings)
    production = group_vars_all(PROXMOX)
    assert "ansible_user" not in production  # group_vars would override the stack's admin user
    assert production["postgresql_apt_source"] == "pgdg"
    assert production["postgresql_version"] == 18
    assert production["citus_enabled"] is True


def test_the_cli_warns_when_the_shared_settings_would_not_load(tmp_path, capsys):
    inventory = tmp_path / "proxmox"
    shutil.copytree(PROXMOX / "group_vars", inventory / "group_vars")  # copies the link's target
    argv = ["--from-json", "-", "--out", str(inventory / "hosts.yml")]
    assert pulumi_inventory.main(argv, stdin=io.StringIO(stack_output_json())) == 0
    assert "00-shared.yml is missing" not in capsys.readouterr().err
    link = inventory / "group_vars" / "all" / "00-shared.yml"
    link.unlink()
    link.symlink_to("../../../shared/all.yml")  # the repository's link, dangling outside it
    assert pulumi_inventory.main(argv, stdin=io.StringIO(stack_output_json())) == 0
    warning = capsys.readouterr().err
    assert f"{link} is missing or a broken link" in warning
    assert "`ln -sf " in warning and "/inventories/shared/all.yml " in warning


def test_the_vault_example_is_the_labs():
    lab = REPO / "inventories/lab/group_vars/all/vault.yml.example"
    assert (PROXMOX / "group_vars/all/vault.yml.example").read_text() == lab.read_text()


# -- site.yml's inventory validation on the rendered inventory ---------------------------------


def proxmox_inventory(tmp_path: Path, layout: str) -> tuple[Path, Path]:
    """A rendered inventory with a copy of inventories/proxmox/group_vars and a fresh vault."""
    inventory = tmp_path / "proxmox"
    shutil.copytree(PROXMOX / "group_vars", inventory / "group_vars")
    outputs = parse_outputs(json.loads(stack_output_json(layout)))
    (inventory / "hosts.yml").write_text(render(outputs))
    password_file = tmp_path / "pass"
    ensure = ["ensure", "--inventory", str(inventory), "--password-file", str(password_file)]
    subprocess.run(
        [sys.executable, "-m", "sluice_infra.secrets", *ensure],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return inventory, password_file


def validate(inventory: Path, password_file: Path) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"),
        "ANSIBLE_VAULT_PASSWORD_FILE": str(password_file),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_TIMEOUT": "5",
    }
    playbook = REPO / "ansible" / "playbooks" / "validate.yml"
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)],
        env=environment,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


@pytest.mark.ansible
@pytest.mark.parametrize("layout", ["seed", "spread"])
def test_site_yml_validation_accepts_the_rendered_inventory(tmp_path, layout):
    result = validate(*proxmox_inventory(tmp_path, layout))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: [db -> localhost]" in result.stdout  # the check ran, on the controller
    assert "unreachable=0" in result.stdout and "failed=0" in result.stdout


@pytest.mark.ansible
def test_site_yml_validation_refuses_a_broken_rendered_inventory(tmp_path):
    inventory, password_file = proxmox_inventory(tmp_path, "seed")
    hosts = inventory / "hosts.yml"
    document = yaml.safe_load(hosts.read_text())
    del document["all"]["children"]["monitoring"]
    document["all"]["hosts"]["app"]["ansible_host"] = ADDRESSES["db"]
    hosts.write_text(yaml.safe_dump(document))

    result = validate(inventory, password_file)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "group monitoring is missing" in output
    assert "hosts app and db share ansible_host 10.20.0.10" in output
