"""The lab's base image: Debian 12 from debootstrap, turned into a cloud image (cloud-init,
sshd, systemd-networkd) and cached by its recipe. It is rebuilt only when the recipe (this
module's RECIPE or image-customize.sh) changes; machines get copies, never the image itself."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sluice_infra.lab import LabError
from sluice_infra.lab.host import run

CUSTOMIZE = Path(__file__).with_name("image-customize.sh")

RECIPE = {
    "suite": "bookworm",
    "mirror": os.environ.get("SLUICE_DEBIAN_MIRROR", "http://deb.debian.org/debian"),
    # debootstrap does not resolve virtual packages, so it gets only the boot essentials;
    # apt installs the rest inside the image with proper dependency resolution.
    "bootstrap": ["systemd-sysv", "dbus", "ca-certificates"],
    "packages": [
        "cloud-init",
        "openssh-server",
        "sudo",
        "python3",
        "python3-apt",
        "iproute2",
        "netbase",
        "procps",
        "locales",
        "curl",
        "less",
    ],
}

_NSPAWN = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--pipe"]


def recipe_key() -> str:
    """Names the image: changes whenever anything that shapes the image changes."""
    digest = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode())
    digest.update(CUSTOMIZE.read_bytes())
    return f"debian-{RECIPE['suite']}-{digest.hexdigest()[:12]}"


def path(cache_dir: Path) -> Path:
    return cache_dir / "images" / recipe_key() / "rootfs"


@contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    (cache_dir / "images").mkdir(parents=True, exist_ok=True)
    with open(cache_dir / "images" / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure(cache_dir: Path, log) -> Path:
    """Return the image for the current recipe, building it first if needed."""
    with _locked(cache_dir):
        rootfs = path(cache_dir)
        if (rootfs.parent / "complete").exists():
            return rootfs
        build = rootfs.parent.with_suffix(".build")
        shutil.rmtree(build, ignore_errors=True)
        build.mkdir(parents=True)
        target = build / "rootfs"
        log(f"building base image {recipe_key()} (debootstrap, a few minutes, once)")
        run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=" + ",".join(RECIPE["bootstrap"]),
                RECIPE["suite"],
                str(target),
                RECIPE["mirror"],
            ],
            timeout=1800,
        )
        _in_image(target, "apt-get", "update", "-q")
        _in_image(
            target,
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            *RECIPE["packages"],
        )
        shutil.copy(CUSTOMIZE, target / "root" / CUSTOMIZE.name)
        _in_image(target, "sh", f"/root/{CUSTOMIZE.name}", RECIPE["mirror"], RECIPE["suite"])
        (target / "root" / CUSTOMIZE.name).unlink()
        broken = run(["chroot", str(target), "dpkg", "--audit"]).stdout.strip()
        if broken:
            raise LabError(f"the image build left packages unconfigured:\n{broken}")
        shutil.rmtree(rootfs.parent, ignore_errors=True)
        build.rename(rootfs.parent)
        (rootfs.parent / "recipe.json").write_text(json.dumps(RECIPE, indent=2) + "\n")
        (rootfs.parent / "complete").touch()
        _prune(cache_dir, keep=rootfs.parent.name, log=log)
        log(f"base image ready: {rootfs}")
        return rootfs


def _in_image(rootfs: Path, *command: str) -> None:
    run([*_NSPAWN, f"--directory={rootfs}", *command], timeout=1800)


def _prune(cache_dir: Path, keep: str, log) -> None:
    for old in (cache_dir / "images").iterdir():
        if old.is_dir() and old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
            log(f"removed old base image {old.name}")
