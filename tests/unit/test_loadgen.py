"""sluice_infra.loadgen: profiles, the event pool, tenants and connections for a rate, the
accounting's SQL against what it reads back, and the run's keys revoked whatever happens."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sluice import cli as sluice_cli
from sluice.quality.generator import MIX

from sluice_infra.loadgen import accounting, cpu, pool, profiles, run
from sluice_infra.loadgen.target import Key, Target

REPO = Path(__file__).resolve().parents[2]


# --- profiles -----------------------------------------------------------------------------------


def test_profiles_give_the_study_shapes():
    assert profiles.steady(6667, 60) == [profiles.Phase(60, 6667, 6667)]
    assert profiles.ramp(1000, 30) == [profiles.Phase(30, 100, 1000)]
    spike = profiles.spike(500, 20, factor=2, spike_seconds=60)
    assert [(p.seconds, p.rate_start) for p in spike] == [(20, 500), (60, 1000), (20, 500)]
    assert profiles.peak_rate(spike) == 1000 and profiles.duration(spike) == 100
    assert profiles.soak(100, 2) == [profiles.Phase(7200, 100, 100)]
    assert profiles.Phase(10, 0, 100).events == 500


@pytest.mark.parametrize(
    "build, name", [(lambda: profiles.steady(0, 60), "--rate"),
                    (lambda: profiles.steady(10, -1), "--seconds"),
                    (lambda: profiles.spike(10, 10, factor=0), "--spike-factor"),
                    (lambda: profiles.soak(10, 0), "--hours")],
)  # fmt: skip
def test_a_profile_that_cannot_make_a_load_names_the_option(build, name):
    with pytest.raises(profiles.ProfileError, match=name):
        build()


# --- the pool -----------------------------------------------------------------------------------


def test_the_pool_has_the_study_mix_exactly_and_every_event_scores_100_percent(tmp_path, capsys):
    events = pool.build(size=1000)
    assert Counter(e["type"] for e in events) == {k: round(w * 1000) for k, w in MIX.items()}
    types = pool.write(tmp_path / "pool.jsonl", events)
    lines = (tmp_path / "pool.jsonl").read_text().splitlines()
    assert [json.loads(line)["type"] for line in lines] == types
    assert 300 < sum(map(len, lines)) / len(lines) < 800  # about 500 bytes each
    assert len({e["id"] for e in events}) == 1000
    capsys.readouterr()
    validate = ["validate", "file", str(tmp_path / "pool.jsonl"), "--format", "json"]
    assert sluice_cli.main(validate) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["events"], report["valid"], report["score"]) == (1000, 1000, 100.0), report


def test_mix_counts_add_up_whatever_the_rounding():
    for size in (1, 7, 99, 2000):
        assert sum(pool.mix_counts(size).values()) == size


# --- tenants and connections --------------------------------------------------------------------


def test_tenants_keep_each_below_half_its_limit():
    # 400,000 single events a minute at 10,000 requests a minute per tenant
    assert run.tenants_needed(6667, (10_000, 60)) == 81
    assert run.tenants_needed(13_334, (10_000, 60)) == 161
    assert run.tenants_needed(1, (10_000, 60)) == 1
    assert run.connections_needed(6_667) == 1667
    assert run.connections_needed(10) == 16 and run.connections_needed(10**6) == 2000


def test_the_limit_is_what_the_api_instances_run_with():
    class Layout:
        api_host = "app"

        def __init__(self, settings: dict) -> None:
            self.hostvars = {"app": settings}

    limited = Layout({"sluice_api_settings": {"RATE_LIMIT_REQUESTS": "600"}})
    assert run.tenant_limit(limited) == (600, 60)
    assert run.tenant_limit(Layout({})) == run.DEFAULT_LIMIT


# --- accounting ---------------------------------------------------------------------------------

NOW = datetime(2026, 12, 3, 12, 30, 20, tzinfo=UTC)
KEYS = [Key("lg1-000", "0a0a0a0a0a0a", "sk_a"), Key("lg1-001", "0b0b0b0b0b0b", "sk_b")]


class FakeTarget:
    """Answers as the lab would: the figures PostgreSQL computed, the API's counters."""

    def __init__(self, figures: dict, counters: dict[str, dict], lags=None) -> None:
        self.figures, self.counters = figures, counters
        self.lags = list(lags or [{0: 0, 1: 0}])
        self.scripts: list[str] = []
        self.revoked: list[Key] = []

    def consumer_lag(self):
        return self.lags.pop(0) if len(self.lags) > 1 else self.lags[0]

    def sql_json(self, script: str):
        self.scripts.append(script)
        return self.figures

    def aggregates(self, key: Key, minutes: int) -> dict:
        assert 1 <= minutes <= accounting.AGGREGATE_MINUTES_MAX
        return self.counters[key.tenant]


def _figures(**changes) -> dict:
    base = {
        "acknowledged": 3,
        "stored": 3,
        "missing": 0,
        "examples_missing": [],
        "duplicated": 0,
        "stored_unacknowledged": 0,
        "last_ingested": "2026-12-03T12:30:02.500000+00:00",
        "per_minute": [
            {"tenant": "lg1-000", "type": "order.placed", "minute": "2026-12-03T12:29:00Z", "n": 2},
            {"tenant": "lg1-001", "type": "customer.created", "minute": "2026-12-03T12:30:00Z",
             "n": 1},
        ],
    }  # fmt: skip
    return {**base, **changes}


def _counters(a: int = 2, b: int = 1) -> dict[str, dict]:
    return {
        "lg1-000": {"minutes": [{"minute": "2026-12-03T12:29:00Z", "counts": {"order.placed": a}},
                                {"minute": "2026-12-03T12:30:00Z", "counts": {}}]},
        "lg1-001": {"minutes": [{"minute": "2026-12-03T12:29:00Z", "counts": {}},
                                {"minute": "2026-12-03T12:30:00Z",
                                 "counts": {"customer.created": b}}]},
    }  # fmt: skip


def test_the_accounting_holds_when_everything_acknowledged_is_stored_and_counted(tmp_path):
    acks = tmp_path / "acks.txt"
    acks.write_text("lg1-0-1-0\nlg1-0-1-1\nlg1-1-4-2")  # no final newline: added
    target = FakeTarget(_figures(), _counters())
    last_ack = datetime(2026, 12, 3, 12, 30, 1, tzinfo=UTC)
    result = accounting.account(target, KEYS, acks, NOW - timedelta(minutes=2), last_ack)
    assert result.ok, result
    assert (result.acknowledged, result.stored, result.counters_compared) == (3, 3, 2)
    assert result.drain_seconds == 1.5
    script = target.scripts[0]
    # the ids follow the COPY, the end-of-data mark follows the ids
    assert "COPY acked FROM STDIN;\nlg1-0-1-0\nlg1-0-1-1\nlg1-1-4-2\n\\.\nSELECT" in script
    assert "tenant_id IN ('lg1-000', 'lg1-001')" in script


@pytest.mark.parametrize(
    "figures, counters, why",
    [(_figures(missing=1, examples_missing=["lg1-0-1-1"]), _counters(), "missing"),
     (_figures(duplicated=1), _counters(), "duplicated"),
     (_figures(), _counters(a=1), "a counter short"),
     (_figures(), _counters(b=2), "a counter over")],
)  # fmt: skip
def test_the_accounting_fails_on_any_difference(tmp_path, figures, counters, why):
    result = accounting.account(
        FakeTarget(figures, counters), KEYS, tmp_path / "none.txt", NOW, None
    )
    assert not result.ok, why
    assert result.drain_seconds is None


def test_counters_of_a_type_postgresql_has_not_are_a_difference():
    counters = _counters()
    counters["lg1-001"]["minutes"][0]["counts"] = {"invoice.generated": 4}
    compared, differences, skipped = accounting.compare_counters(
        FakeTarget(_figures(), counters), KEYS, _figures()["per_minute"], NOW
    )
    assert (compared, skipped) == (2, 0)
    assert differences == [
        {
            "tenant": "lg1-001",
            "type": "invoice.generated",
            "minute": "2026-12-03T12:29:00+00:00",
            "postgresql": 0,
            "redis": 4,
        }
    ]


def test_the_accounting_waits_for_the_consumer_lag_and_gives_up_naming_it(monkeypatch):
    target = FakeTarget(_figures(), _counters(), lags=[{}, {0: 5, 1: 0}, {0: 0, 1: 0}])
    assert accounting.wait_for_lag_zero(target, timeout=60, sleep=lambda _: None) >= 0
    stuck = FakeTarget(_figures(), _counters(), lags=[{0: 5}])
    with pytest.raises(accounting.AccountingError, match="lag not 0"):
        accounting.wait_for_lag_zero(stuck, timeout=0, sleep=lambda _: None)


def test_consumer_lag_is_read_from_kafka_consumer_groups():
    out = (
        "\nGROUP            TOPIC       PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  ...\n"
        "sluice-processor events.raw  0          10              12              2    c1\n"
        "sluice-processor events.raw  1          -               3               -    -\n"
        "sluice-processor events.dlq  0          1               1               0    c1\n"
    )

    class Remote:
        def run(self, host, command, **_):
            assert "--describe --group sluice-processor" in command
            return out

    class Node:
        host = "stream"

        def endpoint(self, name):
            return "10.77.0.12:9192"

    class Layout:
        def __init__(self) -> None:
            self.kafka_nodes = [Node()]

    assert Target(Layout(), Remote()).consumer_lag() == {0: 2, 1: 3}


# --- a run --------------------------------------------------------------------------------------


class RunTarget(FakeTarget):
    """A deployment whose rows and counters are those of any run (none per minute)."""

    def __init__(self) -> None:
        super().__init__(_figures(acknowledged=2, stored=2, per_minute=[]), {})
        self.made: list[str] = []
        self.layout = SimpleNamespace(
            api_url="http://10.77.0.11:8080", api_host="app", hostvars={"app": {}}
        )
        self.events_url = f"{self.layout.api_url}/api/v1/events"

    def aggregates(self, key: Key, minutes: int) -> dict:
        return {"minutes": []}

    def make_keys(self, tenants):
        self.made = tenants
        return [Key(t, f"{i:012x}", f"sk_{i:012x}_secret") for i, t in enumerate(tenants)]

    def revoke_keys(self, keys):
        self.revoked = list(keys)


def _driver(tmp_path: Path, body: str) -> Path:
    """A stand-in for the Go driver: reads the plan, does ``body`` (shell)."""
    script = tmp_path / "sluice-loadgen-driver"
    script.write_text(f"#!/bin/sh\nplan=$2\n{body}\n")
    script.chmod(0o755)
    return script


def test_a_run_plans_makes_keys_drives_accounts_and_revokes(tmp_path, monkeypatch):
    seen = tmp_path / "seen"
    summary = {"acked_events": 2, "last_ack": "2026-12-03T12:30:01.000Z", "errors": {}}
    body = (
        f'cp $plan {seen}.plan; cp "$(sed -n \'s/.*"keys": "\\(.*\\)".*/\\1/p\' $plan)" '
        f'{seen}.keys; stat -c %a "$(dirname $plan)/keys.txt" > {seen}.mode\n'
        f"echo '{json.dumps(summary)}'"
    )
    monkeypatch.setattr(run, "find_driver", lambda: _driver(tmp_path, body))
    target = RunTarget()
    options = run.Options(phases=profiles.steady(300, 10), mode="binary")
    report = run.run(options, target, tmp_path / "runs")

    plan = json.loads(Path(f"{seen}.plan").read_text())
    assert plan["mode"] == "binary" and plan["batch_size"] == 1
    assert plan["profile"] == [{"seconds": 10.0, "rate_start": 300.0, "rate_end": 300.0}]
    assert plan["target"] == "http://10.77.0.11:8080" and plan["connections"] == 75
    assert Path(f"{seen}.mode").read_text().strip() == "600"
    # 300 requests/s need 4 tenants to keep each within half of 10,000 a minute
    assert target.made == [f"{report.run}-{i:03d}" for i in range(4)]
    assert Path(f"{seen}.keys").read_text().split() == [f"sk_{i:012x}_secret" for i in range(4)]
    assert target.revoked and not Path(plan["keys"]).exists()
    assert report.accounting.ok
    saved = json.loads((Path(report.folder) / "report.json").read_text())
    assert saved["driver"] == summary and saved["accounting"]["ok"] is True


def test_the_keys_are_revoked_when_the_driver_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "find_driver", lambda: _driver(tmp_path, "exit 1"))
    target = RunTarget()
    with pytest.raises(run.LoadgenError, match="exited 1"):
        run.run(run.Options(phases=profiles.steady(10, 1)), target, tmp_path / "runs")
    assert [k.tenant for k in target.revoked] == target.made
    assert not list((tmp_path / "runs").glob("*/keys.txt"))


def test_an_unknown_mode_is_refused_before_anything_is_made(tmp_path):
    target = RunTarget()
    with pytest.raises(run.LoadgenError, match="--mode 'pipelined'"):
        run.run(run.Options(phases=profiles.steady(10, 1), mode="pipelined"), target, tmp_path)
    assert target.made == []


# --- CPU per component --------------------------------------------------------------------------


def test_cpu_is_read_per_unit_and_added_up_per_component():
    listing = (
        "kafka@1.service 2000000\nkafka@2.service 1000000\nsluice-api@8101.service 500000\n"
        "ssh.service 99\nhaproxy.service 250000\nredis-server@7000.service \n"
    )
    before = cpu.parse("stream", listing)
    assert before == {
        "stream/kafka@1.service": 2_000_000,
        "stream/kafka@2.service": 1_000_000,
        "stream/sluice-api@8101.service": 500_000,
        "stream/haproxy.service": 250_000,
    }
    after = {**before, "stream/kafka@1.service": 3_500_000, "stream/kafka@2.service": 400_000}
    used = cpu.delta(before, after)
    # kafka@2 restarted (its counter went down): it counts from 0
    assert used["stream/kafka@1.service"] == 1.5 and used["stream/kafka@2.service"] == 0.4
    assert cpu.by_component(used) == {"kafka": 1.9, "api": 0.0, "haproxy": 0.0}


# --- the pipeline bench's judgement and summary -------------------------------------------------


def _bench():
    import sys

    sys.path.insert(0, str(REPO / "tests" / "load"))
    import bench_pipeline

    return bench_pipeline


def _step(name, mode, offered, achieved, p99=40.0, errors=0.0, drain=2.0, ok=True) -> dict:
    return {
        "name": name, "mode": mode, "offered_rate": offered, "achieved_rate": achieved,
        "error_share": errors, "p50_ms": 5.0, "p95_ms": 20.0, "p99_ms": p99, "dropped": 0,
        "drain_seconds": drain, "accounting_ok": ok, "missing": 0, "duplicated": 0,
        "cpu_us_per_event": {"api": 700.0, "kafka": 1600.0}, "seconds": 30, "series": [],
        "lag": [],
    }  # fmt: skip


@pytest.mark.parametrize(
    "changes, sustained",
    [({}, True), ({"achieved": 980.0}, False), ({"p99": 600.0}, False),
     ({"errors": 0.002}, False), ({"drain": 30.0}, False), ({"ok": False}, False)],
)  # fmt: skip
def test_a_step_is_sustained_only_when_every_criterion_holds(changes, sustained):
    values = {"achieved": 995.0, **changes}
    entry = _step("s", "single", 1000.0, values.pop("achieved"), **values)
    assert _bench().sustained(entry) is sustained


def test_the_summary_says_for_each_target_met_or_not_and_by_how_much():
    bench = _bench()
    entries = [
        {**_step("single 600/s", "single", 600, 600), "sustained": True},
        {**_step("single 800/s", "single", 800, 700, p99=900.0), "sustained": False},
        {**_step("batch 8,000/s", "batch", 8000, 8000, p99=150.0), "sustained": True},
        {**_step("spike 2x 600/s", "single", 800, 800), "sustained": True},
    ]
    text = bench.summary(entries, {"rate": 40_000.0, "p99": 90.0}, "lab")
    single = "| 400,000 events/min (6,667/s), single events |"
    assert f"{single} not met (600.0 vs 6,666.67: 0.09x) |" in text
    assert "| 400,000 events/min in batches of 100 | met (8,000.0 vs 6,666.67: 1.20x) |" in text
    assert "| P99 < 500 ms | met (40.0 vs 500: 0.08x) |" in text
    assert "no data loss (missing 0, duplicated 0)" in text
    assert "40,000 records/s" in text and "cores" in text
    assert "| single 800/s | 1,600 | 700 |" not in text  # CPU rows are per step, in µs
    assert "| single 800/s | 700 | 1,600 |" in text
