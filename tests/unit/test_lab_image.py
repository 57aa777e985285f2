"""The base image is named by its recipe: the same recipe reuses the cached image, any change
to RECIPE or to the customize script builds a new one."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice_infra.lab import image


@pytest.fixture
def customize(tmp_path, monkeypatch) -> Path:
    script = tmp_path / "image-customize.sh"
    script.write_bytes(image.CUSTOMIZE.read_bytes())
    monkeypatch.setattr(image, "CUSTOMIZE", script)
    return script


def test_shipped_customize_script_exists():
    assert image.CUSTOMIZE.is_file()


def test_recipe_key_is_stable():
    key = image.recipe_key()
    assert image.recipe_key() == key
    assert key.startswith("debian-bookworm-")
    assert len(key.rsplit("-", 1)[1]) == 12


def test_recipe_key_depends_on_script_bytes_not_its_path(tmp_path, monkeypatch):
    key = image.recipe_key()
    copy = tmp_path / "elsewhere.sh"
    copy.write_bytes(image.CUSTOMIZE.read_bytes())
    monkeypatch.setattr(image, "CUSTOMIZE", copy)
    assert image.recipe_key() == key


def test_recipe_key_changes_with_customize_script(customize):
    before = image.recipe_key()
    customize.write_bytes(customize.read_bytes() + b"\necho one more step\n")
    after = image.recipe_key()
    assert after != before
    assert after.startswith("debian-bookworm-")


def test_recipe_key_changes_with_a_single_byte(customize):
    before = image.recipe_key()
    data = bytearray(customize.read_bytes() or b"#")
    data[-1] ^= 1
    customize.write_bytes(bytes(data))
    assert image.recipe_key() != before


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("packages", [*image.RECIPE["packages"], "vim-tiny"]),
        ("bootstrap", ["systemd-sysv", "dbus"]),
        ("mirror", "http://mirror.example/debian"),
    ],
)
def test_recipe_key_changes_with_recipe(monkeypatch, key, value):
    before = image.recipe_key()
    monkeypatch.setitem(image.RECIPE, key, value)
    assert image.recipe_key() != before


def test_recipe_key_names_suite(monkeypatch):
    monkeypatch.setitem(image.RECIPE, "suite", "trixie")
    assert image.recipe_key().startswith("debian-trixie-")


def test_recipe_key_ignores_dict_order(monkeypatch):
    before = image.recipe_key()
    reordered = dict(reversed(list(image.RECIPE.items())))
    monkeypatch.setattr(image, "RECIPE", reordered)
    assert image.recipe_key() == before


def test_path_is_under_cache_dir(tmp_path):
    assert image.path(tmp_path) == tmp_path / "images" / image.recipe_key() / "rootfs"


def test_path_follows_recipe(tmp_path, monkeypatch):
    before = image.path(tmp_path)
    monkeypatch.setitem(image.RECIPE, "packages", ["cloud-init"])
    after = image.path(tmp_path)
    assert after != before
    assert after.parent.parent == tmp_path / "images"
