"""The lab vault: generated once per clone, completed when the spec grows, never leaked."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sluice_infra import secrets
from sluice_infra.secrets import (
    PLACEHOLDER,
    SECRET_LENGTH,
    VaultError,
    ensure_lab_vault,
    main,
    required_secrets,
)

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_VAULT = str(Path(sys.executable).parent / "ansible-vault")


@pytest.fixture(autouse=True)
def no_ambient_vault(monkeypatch):
    """The tests pass their password files explicitly; a vault password file exported by the
    Makefile (or left by a running lab) would make ansible-vault see two default ids."""
    for name in secrets._VAULT_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    directory = tmp_path / "inventories" / "lab"
    (directory / "group_vars" / "all").mkdir(parents=True)
    return directory


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    return tmp_path / ".lab" / "vault-pass"


def vault_of(inventory: Path) -> Path:
    return inventory / "group_vars" / "all" / "vault.yml"


def decrypt(path: Path, password_file: Path) -> str:
    return subprocess.run(
        [ANSIBLE_VAULT, "view", "--vault-password-file", str(password_file), str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def encrypt(plaintext: str, path: Path, password_file: Path) -> None:
    password = ["--vault-password-file", str(password_file)]
    subprocess.run(
        [ANSIBLE_VAULT, "encrypt", *password, "--output", str(path), "-"],
        input=plaintext,
        capture_output=True,
        text=True,
        check=True,
    )


def cli_args(inventory: Path, password_file: Path) -> list[str]:
    return ["ensure", "--inventory", str(inventory), "--password-file", str(password_file)]


def every_byte_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_spec_names_every_service_account():
    keys = required_secrets()
    assert len(keys) == len(set(keys)) == 13
    assert "vault_kafka_sluice_producer_password" in keys
    assert "vault_redis_replication_password" in keys
    assert "vault_postgresql_sluice_reader_password" in keys
    assert all(k.startswith("vault_") and k.endswith("_password") for k in keys)


@pytest.mark.ansible
def test_creates_a_private_password_file_and_an_encrypted_complete_vault(inventory, password_file):
    assert ensure_lab_vault(inventory, password_file) is True

    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(password_file.parent.stat().st_mode) == 0o700
    assert len(password_file.read_bytes().strip()) >= 43  # 32 random bytes, base64
    vault = vault_of(inventory)
    assert vault.read_bytes().startswith(b"$ANSIBLE_VAULT;1.1;AES256")
    assert stat.S_IMODE(vault.stat().st_mode) & 0o077 == 0

    values = yaml.safe_load(decrypt(vault, password_file))
    assert list(values) == list(required_secrets())
    assert len(set(values.values())) == len(values)
    assert all(
        isinstance(v, str) and len(v) >= SECRET_LENGTH and v.isalnum() for v in values.values()
    )


@pytest.mark.ansible
def test_plaintext_is_never_written_anywhere(inventory, password_file, tmp_path):
    ensure_lab_vault(inventory, password_file)
    values = yaml.safe_load(decrypt(vault_of(inventory), password_file))

    written = every_byte_under(tmp_path)
    assert not [key for key, value in values.items() if value.encode() in written]
    assert b"vault_kafka_admin_password" not in written
    # No temporary file left beside the vault.
    assert sorted(p.name for p in vault_of(inventory).parent.iterdir()) == ["vault.yml"]


@pytest.mark.ansible
def test_secrets_never_reach_a_command_line(inventory, password_file, monkeypatch):
    commands: list[list[str]] = []
    real_run = subprocess.run

    def recording_run(command, *args, **kwargs):
        commands.append(list(command))
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(secrets.subprocess, "run", recording_run)
    ensure_lab_vault(inventory, password_file)
    monkeypatch.setattr(secrets.subprocess, "run", real_run)
    values = yaml.safe_load(decrypt(vault_of(inventory), password_file)).values()

    assert commands, "ansible-vault was not called"
    arguments = " ".join(" ".join(c) for c in commands)
    assert not [v for v in values if v in arguments]
    assert password_file.read_text().strip() not in arguments


@pytest.mark.ansible
def test_second_call_changes_nothing(inventory, password_file):
    ensure_lab_vault(inventory, password_file)
    vault_bytes = vault_of(inventory).read_bytes()
    password_bytes = password_file.read_bytes()

    assert ensure_lab_vault(inventory, password_file) is False

    assert vault_of(inventory).read_bytes() == vault_bytes
    assert password_file.read_bytes() == password_bytes


@pytest.mark.ansible
def test_missing_keys_are_added_and_existing_values_kept(inventory, password_file):
    ensure_lab_vault(inventory, password_file)
    keys = required_secrets()
    old = (
        "---\n# operator's note, kept\n"
        + "".join(f"{key}: old-{key}\n" for key in keys[1:])
        + "extra_setting: not-in-the-spec\n"
    )
    encrypt(old, vault_of(inventory), password_file)

    assert ensure_lab_vault(inventory, password_file) is True

    plaintext = decrypt(vault_of(inventory), password_file)
    assert plaintext.startswith(old)  # existing text, values and comments untouched
    values = yaml.safe_load(plaintext)
    assert {k: values[k] for k in keys[1:]} == {k: f"old-{k}" for k in keys[1:]}
    assert values["extra_setting"] == "not-in-the-spec"
    assert len(values[keys[0]]) >= SECRET_LENGTH
    assert ensure_lab_vault(inventory, password_file) is False


@pytest.mark.ansible
def test_existing_password_file_is_kept(inventory, password_file):
    password_file.parent.mkdir(mode=0o700)
    password_file.write_text("operator-chosen-password\n")

    ensure_lab_vault(inventory, password_file)

    assert password_file.read_text() == "operator-chosen-password\n"
    assert yaml.safe_load(decrypt(vault_of(inventory), password_file))


@pytest.mark.ansible
def test_a_vault_of_another_password_is_refused_and_left_alone(inventory, password_file, tmp_path):
    other = tmp_path / "other-pass"
    other.write_text("another password\n")
    encrypt("---\nvault_kafka_admin_password: x\n", vault_of(inventory), other)
    before = vault_of(inventory).read_bytes()

    with pytest.raises(VaultError, match=r"does not decrypt with .*vault-pass.*delete"):
        ensure_lab_vault(inventory, password_file)

    assert vault_of(inventory).read_bytes() == before


def test_not_an_inventory_is_refused(tmp_path, password_file):
    with pytest.raises(VaultError, match="does not exist"):
        ensure_lab_vault(tmp_path / "nowhere", password_file)


@pytest.mark.ansible
def test_cli_prints_one_line_and_no_secret(inventory, password_file, capsys):
    assert main(cli_args(inventory, password_file)) == 0
    created = capsys.readouterr().out
    assert main(cli_args(inventory, password_file)) == 0
    again = capsys.readouterr().out

    assert created.splitlines() == [
        f"vault {vault_of(inventory)}: created (new vault password file)"
    ]
    assert again.splitlines() == [f"vault {vault_of(inventory)}: up to date"]
    values = yaml.safe_load(decrypt(vault_of(inventory), password_file)).values()
    assert not [v for v in values if v in created + again]


@pytest.mark.ansible
def test_cli_reports_added_keys(inventory, password_file, capsys):
    ensure_lab_vault(inventory, password_file)
    keys = required_secrets()
    encrypt("".join(f"{k}: old-{k}\n" for k in keys[2:]), vault_of(inventory), password_file)

    assert main(cli_args(inventory, password_file)) == 0

    line = capsys.readouterr().out.strip()
    assert line.startswith(f"vault {vault_of(inventory)}: added 2 keys")
    assert keys[0] in line and keys[1] in line


def test_module_runs_as_documented(inventory, password_file):
    result = subprocess.run(
        [sys.executable, "-m", "sluice_infra.secrets", *cli_args(inventory, password_file)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"vault {vault_of(inventory)}: created (new vault password file)\n"


@pytest.mark.parametrize("name", ["lab", "lab-spread"])
def test_example_vault_documents_exactly_the_spec(name):
    example = REPO / "inventories" / name / "group_vars" / "all" / "vault.yml.example"
    values = yaml.safe_load(example.read_text())
    assert list(values) == list(required_secrets())
    assert set(values.values()) == {PLACEHOLDER}
