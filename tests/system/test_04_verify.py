"""testinfra across the hosts, after the deploy: what `make verify` runs.

`make test` runs every testinfra check on the spread layout (molecule sluice's verify step) and
leaves this seed-layout repeat out (``layout_repeat``); `make test-system` runs it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import INVENTORY, REPO, run


@pytest.mark.layout_repeat
def test_testinfra_passes_on_every_host(converged):
    result = run(
        Path(sys.executable).parent / "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--durations=15",
        REPO / "tests" / "testinfra",
        "--hosts=ansible://all",
        f"--ansible-inventory={INVENTORY}",
    )
    print(result.stdout[-4000:])
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
