"""The Sluice service's install artifact: a wheelhouse built once on the Ansible controller.

The hosts install offline (``pip install --no-index``) from a folder holding every wheel the
service needs for *their* Python and architecture, which may differ from the controller's:

- the dependency tree pinned in ``app/requirements.lock``, downloaded as binary wheels for the
  hosts' interpreter (``pip download --only-binary=:all: --python-version ... --platform ...``);
- the service itself, ``pip wheel ./app``, with ``SOURCE_DATE_EPOCH`` fixed so the same source
  gives the same bytes;
- ``requirements.txt``, the lock plus ``sluice==<version>``: what the role installs.

A wheelhouse is named ``<version>-<digest>``: the version from ``app/src/sluice/__init__.py`` and
12 hex digits of a SHA-256 over the service's source, its lock and the target. That name is the
*release*: the role installs it into ``/opt/sluice/releases/<release>`` and points ``current`` at
it, so any change of code or pins makes a new release beside the old one (a rollback is a link),
and an unchanged source never reinstalls. A wheelhouse with its ``.complete`` mark is whole; it
is built in a temporary folder and renamed into place, under a lock, so concurrent runs and
interrupted ones leave nothing half-built.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

#: Fixed wheel timestamps (2000-01-01T00:00:00Z): the same source gives the same wheel bytes.
SOURCE_DATE_EPOCH = "946684800"
#: glibc baselines pip may pick for the hosts (Debian 12 has glibc 2.36), newest first.
MANYLINUX_TAGS = ("manylinux_2_28", "manylinux_2_17", "manylinux2014")
COMPLETE_MARK = ".complete"
_VERSION = re.compile(r'^__version__\s*=\s*"([^"]+)"', re.MULTILINE)
_PYTHON = re.compile(r"^3\.\d+$")
_ARCH = re.compile(r"^[a-z0-9_]+$")
_SKIPPED_PARTS = frozenset({"__pycache__", "build"})

#: ``run(argv, env)`` runs a command and raises WheelhouseError if it fails.
Runner = Callable[[Sequence[str], dict[str, str]], None]


class WheelhouseError(RuntimeError):
    """The wheelhouse cannot be built; the message says what failed and what to do."""


@dataclass(frozen=True)
class Wheelhouse:
    """A complete wheelhouse in the controller's cache: what the role copies to its hosts."""

    path: Path
    release: str
    version: str
    changed: bool

    def as_dict(self) -> dict[str, str | bool]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def app_version(app_dir: Path) -> str:
    """The service's version, as ``sluice.__version__`` declares it."""
    init = app_dir / "src" / "sluice" / "__init__.py"
    try:
        match = _VERSION.search(init.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WheelhouseError(f"cannot read the service's version from {init}: {exc}") from exc
    if match is None:
        raise WheelhouseError(f'{init} has no line `__version__ = "<version>"`')
    return match.group(1)


def source_files(app_dir: Path) -> list[Path]:
    """The files a release is made of: pyproject, lock and the package source, sorted."""
    files = [app_dir / "pyproject.toml", app_dir / "requirements.lock"]
    package = app_dir / "src"
    files += sorted(
        path
        for path in package.rglob("*")
        if path.is_file()
        and path.suffix != ".pyc"
        and not _SKIPPED_PARTS.intersection(path.relative_to(package).parts)
        and not any(part.endswith(".egg-info") for part in path.relative_to(package).parts)
    )
    missing = [str(path) for path in files[:2] if not path.is_file()]
    if missing:
        raise WheelhouseError(f"{', '.join(missing)} missing: is {app_dir} the service's app/?")
    return files


def source_digest(app_dir: Path, python_version: str, arch: str) -> str:
    """SHA-256 over every source file (path and bytes) and the target interpreter."""
    digest = hashlib.sha256(f"python {python_version} {arch}\n".encode())
    for path in source_files(app_dir):
        digest.update(str(path.relative_to(app_dir)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def platform_tags(arch: str) -> list[str]:
    """pip ``--platform`` values for a host architecture (``x86_64``, ``aarch64``)."""
    return [f"{tag}_{arch}" for tag in MANYLINUX_TAGS]


def download_argv(python: str, lock: Path, dest: Path, python_version: str, arch: str) -> list[str]:
    """pip download of every pinned wheel for the target interpreter, none built here."""
    abi = "cp" + python_version.replace(".", "")
    argv = [python, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    argv += ["--python-version", python_version, "--implementation", "cp", "--abi", abi]
    for tag in platform_tags(arch):
        argv += ["--platform", tag]
    return [*argv, "--dest", str(dest), "--requirement", str(lock)]


def wheel_argv(python: str, app_dir: Path, dest: Path) -> list[str]:
    """pip wheel of the service alone (its dependencies come from the lock)."""
    return [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest),
            str(app_dir)]  # fmt: skip


def _run(argv: Sequence[str], env: dict[str, str]) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()[-2000:]
        raise WheelhouseError(
            f"{' '.join(argv[2:4])} failed (exit {result.returncode}): {output}\n"
            "Check that the controller reaches the package index (or PIP_INDEX_URL names a "
            "mirror) and that app/requirements.lock pins versions published as wheels for the "
            "hosts' Python and architecture."
        )


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_wheelhouse(
    app_dir: Path,
    cache_dir: Path,
    python_version: str,
    arch: str,
    *,
    python: str = sys.executable,
    run: Runner = _run,
) -> Wheelhouse:
    """Build the wheelhouse for this source and target unless the cache holds it complete."""
    if not _PYTHON.match(python_version):
        raise WheelhouseError(f"python version {python_version!r} is not of the form 3.N")
    if not _ARCH.match(arch):
        raise WheelhouseError(f"architecture {arch!r} is not a machine name such as x86_64")
    app_dir = app_dir.resolve()
    version = app_version(app_dir)
    release = f"{version}-{source_digest(app_dir, python_version, arch)[:12]}"
    folder = cache_dir / "sluice-wheelhouse"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / release
    with _locked(folder):
        if (path / COMPLETE_MARK).is_file():
            return Wheelhouse(path=path, release=release, version=version, changed=False)
        shutil.rmtree(path, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=f".{release}.") as tmp:
            building = Path(tmp) / release
            building.mkdir()
            env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
            lock = app_dir / "requirements.lock"
            run(download_argv(python, lock, building, python_version, arch), env)
            run(wheel_argv(python, app_dir, building), env)
            pins = [line for line in lock.read_text().splitlines() if line and line[0] != "#"]
            requirements = "\n".join([*pins, f"sluice=={version}", ""])
            (building / "requirements.txt").write_text(requirements)
            (building / COMPLETE_MARK).write_text(release + "\n")
            building.rename(path)
    return Wheelhouse(path=path, release=release, version=version, changed=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sluice_infra.wheelhouse",
        description="Build the Sluice wheelhouse for the hosts once, cached; print it as JSON.",
    )
    parser.add_argument("--app-dir", type=Path, required=True, help="the service's app/ folder")
    parser.add_argument("--cache-dir", type=Path, required=True, help="e.g. /var/cache/sluice")
    parser.add_argument("--python-version", required=True, help="the hosts' Python, e.g. 3.11")
    parser.add_argument("--arch", required=True, help="the hosts' architecture, e.g. x86_64")
    args = parser.parse_args(argv)
    try:
        wheelhouse = ensure_wheelhouse(
            args.app_dir, args.cache_dir.expanduser(), args.python_version, args.arch
        )
    except WheelhouseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(wheelhouse.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
