"""sluice-loadgen on the deployed lab: a short run in each mode (a few thousand events of the
study's mix, tenants and keys of its own, the compiled open-model driver through HAProxy), then
the accounting: the consumer lag back to 0, every acknowledged event a row in PostgreSQL
exactly once, the Redis counters equal to PostgreSQL's count per tenant, type and minute.

Never a timing: `make bench` measures rates and latencies and writes them down."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import INVENTORY, STATE, run

from sluice_infra.lab.remote import Remote
from sluice_infra.loadgen.profiles import steady
from sluice_infra.loadgen.run import Options
from sluice_infra.loadgen.run import run as loadgen
from sluice_infra.loadgen.target import Target

SLUICE_LOADGEN = Path(sys.executable).parent / "sluice-loadgen"


def _sent_and_accounted(report: dict) -> None:
    driver, accounting = report["driver"], report["accounting"]
    assert driver["events_sent"] > 0 and driver["dropped"] == 0, driver
    assert driver["acked_events"] == driver["events_sent"], driver["errors"]
    assert accounting["acknowledged"] == driver["acked_events"], accounting
    assert accounting["missing"] == 0 and accounting["duplicated"] == 0, accounting
    assert accounting["stored"] == accounting["acknowledged"], accounting
    assert accounting["counters_compared"] > 0 and not accounting["counter_differences"], accounting
    assert accounting["ok"], accounting


@pytest.mark.parametrize(
    "mode, rate, seconds", [("structured", 150, 10), ("binary", 100, 10)]
)  # fmt: skip
def test_single_events_acknowledged_are_stored_once_and_counted(converged, layout, mode, rate,
                                                                seconds):  # fmt: skip
    options = Options(phases=steady(rate, seconds), mode=mode, progress="none")
    report = loadgen(options, Target(layout, Remote(STATE)), STATE / "loadgen", lag_timeout=300)
    print("\n".join(report.lines()))
    _sent_and_accounted(report.as_dict())
    assert report.tenants >= 1 and report.driver["events_offered"] == rate * seconds


def test_the_cli_runs_batches_and_exits_0_when_the_accounting_holds(converged, layout):
    result = run(
        SLUICE_LOADGEN, "-i", INVENTORY, "--state-dir", STATE, "--mode", "batch",
        "--batch-size", "50", "--rate", "400", "--seconds", "10", "--progress", "none", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["mode"] == "batch" and report["batch_size"] == 50
    _sent_and_accounted(report)
    # the run's keys are revoked and their file is gone
    assert not (Path(report["folder"]) / "keys.txt").exists()
    keys = Target(layout, Remote(STATE)).sql_json(
        "SELECT json_build_object('all', count(*), 'active', count(*) FILTER "
        f"(WHERE revoked_at IS NULL)) FROM public.api_keys WHERE tenant LIKE '{report['run']}-%';"
    )
    assert keys["all"] == report["tenants"] and keys["active"] == 0, keys
