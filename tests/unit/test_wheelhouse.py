"""sluice_infra.wheelhouse: the release name follows the source, a complete wheelhouse is reused,
a failed build leaves nothing behind, and pip is asked for the hosts' interpreter."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice_infra import wheelhouse as wh


def _app(root: Path, version: str = "1.2.3") -> Path:
    app = root / "app"
    (app / "src" / "sluice" / "__pycache__").mkdir(parents=True)
    (app / "pyproject.toml").write_text("[project]\nname = 'sluice'\n")
    (app / "requirements.lock").write_text("# pins\nredis==8.1.0\nuvicorn==0.54.0\n")
    (app / "src" / "sluice" / "__init__.py").write_text(f'"""doc"""\n\n__version__ = "{version}"\n')
    (app / "src" / "sluice" / "api.py").write_text("x = 1\n")
    (app / "src" / "sluice" / "__pycache__" / "api.cpython-311.pyc").write_bytes(b"\0")
    return app


class FakePip:
    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, argv, env) -> None:
        self.calls.append(list(argv))
        assert env["SOURCE_DATE_EPOCH"] == wh.SOURCE_DATE_EPOCH
        if self.fail and self.fail in argv:
            raise wh.WheelhouseError(f"{self.fail} failed")
        dest = Path(argv[argv.index("--dest" if "download" in argv else "--wheel-dir") + 1])
        (dest / ("deps.whl" if "download" in argv else "sluice-1.2.3-py3-none-any.whl")).write_text(
            "w"
        )


def test_builds_once_then_reuses(tmp_path):
    app, pip = _app(tmp_path), FakePip()
    first = wh.ensure_wheelhouse(app, tmp_path / "cache", "3.11", "x86_64", python="py", run=pip)
    again = wh.ensure_wheelhouse(app, tmp_path / "cache", "3.11", "x86_64", python="py", run=pip)
    assert first.changed and not again.changed
    assert first.path == again.path and first.release.startswith("1.2.3-")
    assert len(pip.calls) == 2
    requirements = (first.path / "requirements.txt").read_text().splitlines()
    assert requirements == ["redis==8.1.0", "uvicorn==0.54.0", "sluice==1.2.3"]
    assert sorted(p.name for p in first.path.iterdir()) == [
        ".complete", "deps.whl", "requirements.txt", "sluice-1.2.3-py3-none-any.whl"
    ]  # fmt: skip


def test_download_targets_the_hosts_interpreter(tmp_path):
    app, pip = _app(tmp_path), FakePip()
    wh.ensure_wheelhouse(app, tmp_path / "cache", "3.11", "aarch64", python="py", run=pip)
    download = pip.calls[0]
    assert download[:4] == ["py", "-m", "pip", "download"]
    assert "--only-binary=:all:" in download and "--no-deps" in download
    assert download[download.index("--python-version") + 1] == "3.11"
    assert download[download.index("--abi") + 1] == "cp311"
    platforms = [download[i + 1] for i, arg in enumerate(download) if arg == "--platform"]
    assert platforms == [
        "manylinux_2_28_aarch64",
        "manylinux_2_17_aarch64",
        "manylinux2014_aarch64",
    ]
    assert pip.calls[1][:4] == ["py", "-m", "pip", "wheel"] and "--no-deps" in pip.calls[1]


def test_release_changes_with_source_lock_and_target_not_with_bytecode(tmp_path):
    app = _app(tmp_path)
    base = wh.source_digest(app, "3.11", "x86_64")
    (app / "src" / "sluice" / "__pycache__" / "other.pyc").write_bytes(b"1")
    assert wh.source_digest(app, "3.11", "x86_64") == base
    assert wh.source_digest(app, "3.12", "x86_64") != base
    assert wh.source_digest(app, "3.11", "aarch64") != base
    (app / "requirements.lock").write_text("redis==8.1.1\n")
    locked = wh.source_digest(app, "3.11", "x86_64")
    assert locked != base
    (app / "src" / "sluice" / "api.py").write_text("x = 2\n")
    assert wh.source_digest(app, "3.11", "x86_64") not in {base, locked}


def test_a_failed_build_leaves_nothing_and_the_next_run_builds(tmp_path):
    app = _app(tmp_path)
    with pytest.raises(wh.WheelhouseError, match="wheel failed"):
        wh.ensure_wheelhouse(app, tmp_path / "c", "3.11", "x86_64", run=FakePip(fail="wheel"))
    assert [p.name for p in (tmp_path / "c" / "sluice-wheelhouse").iterdir()] == [".lock"]
    built = wh.ensure_wheelhouse(app, tmp_path / "c", "3.11", "x86_64", run=FakePip())
    assert built.changed and (built.path / wh.COMPLETE_MARK).is_file()


@pytest.mark.parametrize(
    ("python_version", "arch", "message"),
    [("3", "x86_64", "3.N"), ("3.11; rm", "x86_64", "3.N"), ("3.11", "x86 64", "machine name")],
)
def test_bad_targets_are_named(tmp_path, python_version, arch, message):
    with pytest.raises(wh.WheelhouseError, match=message):
        wh.ensure_wheelhouse(_app(tmp_path), tmp_path / "c", python_version, arch, run=FakePip())


def test_a_folder_that_is_not_app_is_named(tmp_path):
    with pytest.raises(wh.WheelhouseError, match=r"has no line|cannot read"):
        wh.app_version(tmp_path)
    (tmp_path / "src" / "sluice").mkdir(parents=True)
    (tmp_path / "src" / "sluice" / "__init__.py").write_text('__version__ = "1.0"\n')
    with pytest.raises(wh.WheelhouseError, match="missing"):
        wh.source_digest(tmp_path, "3.11", "x86_64")


def test_cli_prints_json_and_names_errors(tmp_path, capsys):
    assert wh.main(["--app-dir", str(tmp_path), "--cache-dir", str(tmp_path / "c"),
                    "--python-version", "3.11", "--arch", "x86_64"]) == 1  # fmt: skip
    assert "error:" in capsys.readouterr().err
