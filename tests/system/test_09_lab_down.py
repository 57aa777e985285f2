"""lab-down leaves no machine, bridge, NAT rule or apt cache process behind."""

from __future__ import annotations

from conftest import INVENTORY, STATE, lab, run

from sluice_infra.lab.host import processes
from sluice_infra.lab.image import path as image_path
from sluice_infra.lab.lab import DEFAULT_CACHE_DIR


def test_lab_down_removes_everything_but_the_cached_image(lab_up):
    lab("--inventory", INVENTORY, "down")
    assert run("ip", "link", "show", "sluice0").returncode != 0, "bridge left behind"
    assert run("nft", "list", "table", "ip", "sluice_lab").returncode != 0, "NAT table left"
    assert not processes("systemd-nspawn"), "a machine still runs"
    assert not processes("apt-cacher-ng"), "the apt cache still runs"
    assert not (STATE / "machines" / "db").exists(), "machine disks left behind"
    assert image_path(DEFAULT_CACHE_DIR).is_dir(), "the cached base image must stay"
    # and down again is harmless
    lab("--inventory", INVENTORY, "down")
