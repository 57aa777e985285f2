"""The time report of `make test`: phases timed with their exit codes, Ansible's slowest tasks
read from its junit callback's files."""

from __future__ import annotations

import sys

from sluice_infra import phases

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="site" tests="4">
<testcase classname="site.yml" name="[db] Common base: Install packages" time="30.5"/>
<testcase classname="site.yml" name="[app] Common base: Install packages" time="41.0"/>
<testcase classname="site.yml" name="[db] Kafka: Wait until healthy" time="12.0"/>
<testcase classname="site.yml" name="[db] Common base: Gather facts" time="2.0"/>
</testsuite></testsuites>
"""


def test_a_phase_passes_its_exit_code_through_and_is_recorded(tmp_path):
    record = tmp_path / "phases.tsv"
    ok = phases.main(["--record", str(record), "run", "lint", "--", sys.executable, "-c", ""])
    bad = phases.main(
        ["--record", str(record), "run", "units", "--", sys.executable, "-c", "raise SystemExit(3)"]
    )
    assert (ok, bad) == (0, 3)
    recorded = phases.read_phases(record)
    assert [(p.name, p.status) for p in recorded] == [("lint", 0), ("units", 3)]
    assert all(p.seconds >= 0 for p in recorded)


def test_tasks_take_the_longest_host_and_sum_over_runs(tmp_path):
    (tmp_path / "site-1700000000.xml").write_text(JUNIT)
    (tmp_path / "site-1700000100.xml").write_text(JUNIT)
    (tmp_path / "broken-1700000200.xml").write_text("<testsuites><testsuite")
    tasks = phases.read_tasks(tmp_path)
    install = [t for t in tasks if t.name == "Common base: Install packages"]
    assert [t.seconds for t in install] == [41.0, 41.0]
    assert {t.playbook for t in tasks} == {"site"}

    report = phases.render([phases.Phase("seed layout", 125.0, 1)], tasks, top=2)
    assert "2:05.0  seed layout  FAILED (exit 1)" in report
    slowest = report.split("slowest tasks")[1].splitlines()[1:]
    assert slowest == ["   1:22.0    2x  site: Common base: Install packages",
                       "   0:24.0    2x  site: Kafka: Wait until healthy"]  # fmt: skip


def test_report_without_a_run_says_so_plainly(tmp_path, capsys):
    assert phases.main(["--record", str(tmp_path / "none.tsv"), "report"]) == 0
    assert "0:00.0  total" in capsys.readouterr().out
