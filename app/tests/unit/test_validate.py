"""``sluice validate``: the study's event mix scores 100 %, each broken rule is caught under its
name with the right event, the report's forms and exit statuses, and the three sources: files
in every form, a Kafka sample over a fake librdkafka consumer (no group joined, nothing
committed), PostgreSQL over in-memory pages and, once, over the real throwaway server."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import re
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from sluice.adapters.kafka import KafkaSampler
from sluice.cli import main
from sluice.cloudevents import STRUCTURED_MEDIA_TYPE, Limits, parse_request
from sluice.config import KafkaSettings
from sluice.processor.types import ConsumedRecord
from sluice.quality.generator import MIX, make_event, pick_kind
from sluice.quality.report import Report, render, validate
from sluice.quality.rules import (
    CURRENCIES,
    DUPLICATE_ID,
    ENVELOPE,
    EVENT_TYPES,
    FUTURE_TIME,
    INVALID_CURRENCY,
    INVALID_VALUE,
    MISSING_FIELD,
    NON_POSITIVE_AMOUNT,
    RULES,
    UNKNOWN_TYPE,
    WRONG_TYPE,
    Item,
    Policy,
)
from sluice.quality.sources import (
    FileSource,
    KafkaSource,
    PostgresSource,
    file_items,
    record_item,
    run,
)
from sluice.storage.reads import StoredEvent

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TENANTS = ("acme", "globex", "initech")


def generated(count: int, seed: int, now: datetime = NOW) -> list[tuple[str, dict[str, Any]]]:
    """``count`` events of the study's mix, (tenant, event), from a seeded rng."""
    rng = random.Random(seed)
    return [
        (tenant, make_event(pick_kind(rng), tenant, rng, now))
        for tenant in (rng.choice(TENANTS) for _ in range(count))
    ]


def items(events: Sequence[tuple[str, dict[str, Any]]]) -> list[Item]:
    return [
        Item(json.dumps(event).encode(), f"sample:{index}", tenant)
        for index, (tenant, event) in enumerate(events)
    ]


def check(events: Sequence[tuple[str, dict[str, Any]]], **policy: Any) -> Report:
    return validate(items(events), Policy(now=NOW, **policy), source="sample")


def replace_with(
    events: list[tuple[str, dict[str, Any]]],
    position: int,
    kind: str,
    change: Callable[[dict[str, Any]], None],
    now: datetime = NOW,
) -> dict[str, Any]:
    """Put a new event of ``kind`` (the tenant kept) at ``position``, changed by ``change``."""
    tenant = events[position][0]
    event = make_event(kind, tenant, random.Random(position), now)
    change(event)
    events[position] = (tenant, event)
    return event


def compact(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- the generator ------------------------------------------------------------------------------


def test_the_generators_events_score_100_percent() -> None:
    events = generated(5000, seed=14)

    report = check(events)

    assert (report.total, report.valid, report.score, report.passed) == (5000, 5000, 100.0, True)
    assert report.results == ()
    assert report.exit_code == 0


def test_the_generator_draws_the_studys_mix_and_only_types_with_rules() -> None:
    events = generated(10_000, seed=3)

    counts = Counter(event["type"] for _, event in events)

    assert set(MIX) == set(EVENT_TYPES) == set(counts)
    assert sum(MIX.values()) == pytest.approx(1.0)
    for kind, share in MIX.items():
        assert counts[kind] / len(events) == pytest.approx(share, abs=0.015), kind


def test_generated_events_are_about_500_bytes_and_within_the_services_limit() -> None:
    sizes = [len(compact(event)) for _, event in generated(5000, seed=5)]

    assert 400 <= statistics.mean(sizes) <= 650
    assert max(sizes) < Limits().max_event_bytes
    # what Kafka stores: the service's canonical JSON (times to the microsecond)
    stored = [
        parse_request(STRUCTURED_MEDIA_TYPE, {}, compact(event), Limits())[0].size
        for _, event in generated(1000, seed=5)
    ]
    assert 400 <= statistics.mean(stored) <= 650


def test_a_seed_gives_the_same_events_and_times_lie_just_before_now() -> None:
    assert generated(50, seed=9) == generated(50, seed=9)
    assert generated(50, seed=9) != generated(50, seed=10)
    for _tenant, event in generated(200, seed=9):
        time = datetime.fromisoformat(event["time"])
        assert NOW - timedelta(seconds=5) <= time <= NOW
        assert event["source"].startswith(f"/{_tenant}/")


@pytest.mark.parametrize(
    ("kind", "tenant", "now", "message"),
    [
        ("order.shipped", "acme", NOW, "no generator for type 'order.shipped'"),
        ("order.placed", "Acme Corp", NOW, "invalid tenant name"),
        ("order.placed", "acme", NOW.replace(tzinfo=None), "timezone-aware"),
    ],
)
def test_the_generator_refuses_what_it_cannot_make(
    kind: str, tenant: str, now: datetime, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_event(kind, tenant, random.Random(1), now)


# --- the rules, one corruption each -------------------------------------------------------------


def _remove(field: str) -> Callable[[dict[str, Any]], None]:
    def corrupt(event: dict[str, Any]) -> None:
        del event[field]

    return corrupt


def _data(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def corrupt(event: dict[str, Any]) -> None:
        event["data"][field] = value

    return corrupt


def _attribute(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def corrupt(event: dict[str, Any]) -> None:
        event[name] = value

    return corrupt


#: rule -> (the type of the event corrupted, the corruption, what the example must say)
CORRUPTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], None], str]] = {
    ENVELOPE: ("order.placed", _remove("source"), "attribute 'source' is required"),
    UNKNOWN_TYPE: (
        "order.placed",
        _attribute("type", "order.shipped"),
        "type 'order.shipped' is not one of the study's event types",
    ),
    MISSING_FIELD: (
        "order.placed",
        _data("customer_id", None),
        "data lacks 'customer_id' (absent, null or empty)",
    ),
    WRONG_TYPE: (
        "payment.processed",
        _data("amount", "12.50"),
        "data.amount must be a number, got a string ('12.50')",
    ),
    NON_POSITIVE_AMOUNT: (
        "invoice.generated",
        _data("amount", 0),
        "data.amount is 0; amounts must be > 0",
    ),
    INVALID_CURRENCY: (
        "subscription.activated",
        _data("currency", "EURO"),
        "data.currency 'EURO' is not an ISO 4217 currency code",
    ),
    INVALID_VALUE: (
        "payment.processed",
        _data("method", "cash"),
        "data.method 'cash' is not one of card, sepa_debit",
    ),
    FUTURE_TIME: (
        "customer.created",
        _attribute("time", "2026-11-27T13:00:01Z"),
        "time 2026-11-27T13:00:01Z lies 3601 s after the check",
    ),
}


def corrupt_sample() -> tuple[list[tuple[str, dict[str, Any]]], dict[str, tuple[int, str]]]:
    """2,000 generated events with one corruption per rule, each in its own event at a seeded
    position; rule -> (position, event id)."""
    events = generated(2000, seed=11)
    positions = random.Random(2026).sample(range(1, len(events)), len(RULES))
    expected = {}
    for rule, position in zip(CORRUPTIONS, positions, strict=False):
        kind, corrupt, _ = CORRUPTIONS[rule]
        expected[rule] = (position, replace_with(events, position, kind, corrupt)["id"])
    # the first event's id again, later, in the same tenant
    tenant, first = events[0]
    position = positions[-1]
    events[position] = (tenant, events[position][1] | {"id": first["id"]})
    expected[DUPLICATE_ID] = (position, first["id"])
    return events, expected


def test_a_corrupt_sample_is_caught_rule_by_rule_naming_each_event() -> None:
    events, expected = corrupt_sample()

    report = check(events)

    assert report.counts == dict.fromkeys(RULES, 1)
    by_rule = {result.rule.name: result for result in report.results}
    for rule, (position, event_id) in expected.items():
        [example] = by_rule[rule].examples
        assert (example.event_id, example.where) == (event_id, f"sample:{position}"), rule
        assert example.tenant == events[position][0]
        if rule in CORRUPTIONS:
            assert CORRUPTIONS[rule][2] in example.problem, rule
    assert by_rule[DUPLICATE_ID].examples[0].problem == (
        "id first read at sample:0; this is another event under the same id"
    )
    # the unknown type is a warning: eight events are invalid, not nine
    assert by_rule[UNKNOWN_TYPE].severity == "warning"
    assert report.valid == report.total - 8
    assert report.score == pytest.approx(99.6)
    assert report.exit_code == 1


def test_unknown_types_are_a_warning_an_error_or_ignored_as_configured() -> None:
    events = generated(99, seed=1)
    events[5][1]["type"] = "order.shipped"

    warned = check(events)
    assert (warned.valid, warned.counts) == (99, {UNKNOWN_TYPE: 1})
    errored = check(events, unknown_types="error")
    assert (errored.valid, errored.counts) == (98, {UNKNOWN_TYPE: 1})
    ignored = check(events, unknown_types="ignore")
    assert (ignored.valid, ignored.counts) == (99, {})
    with pytest.raises(ValueError, match="unknown types can be error, warning, ignore"):
        Policy(now=NOW, unknown_types="fatal")


@pytest.mark.parametrize(
    ("change", "rule", "problem"),
    [
        (_data("items", []), MISSING_FIELD, "data lacks 'items'"),
        (_data("items", [{"sku": "S", "quantity": 0, "unit_price": 1}]), INVALID_VALUE,
         "data.items[0].quantity is 0; it must be >= 1"),
        (_data("items", [{"sku": "S", "quantity": 1, "unit_price": -2.5}]), NON_POSITIVE_AMOUNT,
         "data.items[0].unit_price is -2.5"),
        (_data("items", ["SKU-1"]), WRONG_TYPE, "data.items[0] must be an object"),
        (_data("currency", "eur"), INVALID_CURRENCY, "(did you mean 'EUR'?)"),
        (_data("currency", "XTS"), INVALID_CURRENCY, "'XTS' is not an ISO 4217 currency code"),
        (_data("amount", True), WRONG_TYPE, "data.amount must be a number, got a boolean"),
        (_attribute("data", "order"), WRONG_TYPE, "data must be a JSON object"),
        (_remove("data"), MISSING_FIELD, "the event has no data; order.placed needs order_id"),
        (_attribute("type", "_total"), ENVELOPE, "'_total' is reserved"),
        (_attribute("time", "2026-11-27 11:00"), ENVELOPE, "must be an RFC 3339 timestamp"),
        (_attribute("specversion", "0.3"), ENVELOPE, "must be '1.0'"),
    ],
)  # fmt: skip
def test_each_check_names_what_is_wrong(
    change: Callable[[dict[str, Any]], None], rule: str, problem: str
) -> None:
    event = make_event("order.placed", "acme", random.Random(4), NOW)
    change(event)

    report = check([("acme", event)])

    assert report.counts == {rule: 1}
    assert problem in report.results[0].examples[0].problem


def test_other_fields_kinds_are_checked_too() -> None:
    rng = random.Random(8)
    customer = make_event("customer.created", "acme", rng, NOW)
    customer["data"]["email"] = "not-an-address"
    invoice = make_event("invoice.generated", "acme", rng, NOW)
    invoice["data"]["due_date"] = "2026-02-30"
    updated = make_event("customer.updated", "acme", rng, NOW)
    updated["data"]["changed_fields"] = "email"

    report = check([("acme", customer), ("acme", invoice), ("acme", updated)])

    assert report.counts == {INVALID_VALUE: 2, WRONG_TYPE: 1}
    problems = {e.event_id: e.problem for r in report.results for e in r.examples}
    assert problems[customer["id"]] == "data.email 'not-an-address' is not an e-mail address"
    assert problems[invoice["id"]] == "data.due_date '2026-02-30' is not a date YYYY-MM-DD"
    assert "data.changed_fields must be an array of field names" in problems[updated["id"]]


def test_a_time_within_the_allowed_skew_passes_and_the_skew_is_configurable() -> None:
    event = make_event("order.placed", "acme", random.Random(2), NOW)
    event["time"] = "2026-11-27T12:59:00Z"  # 59 minutes ahead

    assert check([("acme", event)]).counts == {}
    assert check([("acme", event)], max_clock_skew_seconds=60).counts == {FUTURE_TIME: 1}


def test_ids_are_unique_per_tenant_and_a_resend_is_told_from_a_reuse() -> None:
    rng = random.Random(6)
    first = make_event("order.placed", "acme", rng, NOW)
    other = make_event("payment.processed", "acme", rng, NOW) | {"id": first["id"]}
    sample = [("acme", first), ("globex", dict(first)), ("acme", dict(first)), ("acme", other)]

    report = check(sample)

    assert report.counts == {DUPLICATE_ID: 2}
    problems = sorted((e.where, e.problem) for e in report.results[0].examples)
    assert problems == [
        ("sample:2", "id first read at sample:0; this is the same event again (a resend)"),
        ("sample:3", "id first read at sample:0; this is another event under the same id"),
    ]


def test_the_worst_examples_are_the_events_that_break_most_rules() -> None:
    events = generated(40, seed=21)
    for position in (3, 10, 17, 30):
        replace_with(events, position, "order.placed", _data("customer_id", ""))
    events[30][1]["data"]["amount"] = -1  # breaks two rules: the worst

    report = validate(items(events), Policy(now=NOW), source="sample", examples=2)

    assert report.counts == {MISSING_FIELD: 4, NON_POSITIVE_AMOUNT: 1}
    missing = report.results[0]
    # the worst first, then the first read of those as bad
    assert [example.where for example in missing.examples] == ["sample:30", "sample:3"]


# --- the report ---------------------------------------------------------------------------------


def test_the_json_report_holds_counts_score_examples_and_fixes() -> None:
    events, expected = corrupt_sample()

    document = json.loads(render(check(events), "json"))

    assert document["events"] == 2000 and document["valid"] == 1992
    assert document["score"] == pytest.approx(99.6)
    assert (document["min_score"], document["passed"]) == (99.9, False)
    assert document["counts"] == dict.fromkeys(RULES, 1)
    assert document["max_clock_skew_seconds"] == 3600
    assert document["checked_at"] == "2026-11-27T12:00:00Z"
    assert [rule["rule"] for rule in document["rules"]] == list(RULES)
    for rule in document["rules"]:
        assert rule["recommendation"] == RULES[rule["rule"]].recommendation
        assert rule["examples"][0]["id"] == expected[rule["rule"]][1]


def test_the_text_report_lists_rules_examples_and_fixes() -> None:
    events, expected = corrupt_sample()

    text = render(check(events), "text")

    assert "2000 events, 1992 valid: data-quality score 99.60 % (minimum 99.9 %): FAILED" in text
    assert "  missing_field        error     1" in text
    assert "unknown_type: 1 event (warning, not counted against the score)" in text
    position, event_id = expected[NON_POSITIVE_AMOUNT]
    assert f"  - {event_id} (tenant " in text and f"sample:{position}): data.amount is 0" in text
    assert f"  fix: {RULES[NON_POSITIVE_AMOUNT].recommendation}" in text


def test_a_clean_sample_says_so_and_an_empty_one_fails() -> None:
    clean = render(check(generated(10, seed=1)), "text")
    assert "10 events, 10 valid: data-quality score 100.00 % (minimum 99.9 %): passed" in clean
    assert clean.endswith("every event passes every rule")

    empty = check([])
    assert (empty.score, empty.passed, empty.exit_code) == (None, False, 1)
    assert "no events to check" in render(empty, "text")


def test_the_score_is_never_shown_rounded_up_to_the_minimum() -> None:
    policy = Policy(now=NOW)
    almost = Report("sample", policy, total=20_000, valid=19_999, min_score=100.0, results=())
    exact = Report("sample", policy, total=10_000, valid=9_999, min_score=99.99, results=())

    assert almost.score == pytest.approx(99.995) and not almost.passed
    assert "score 99.99 % (minimum 100 %): FAILED" in almost.text()
    assert "score 99.99 % (minimum 99.99 %): passed" in exact.text()


# --- the command line: exit statuses ------------------------------------------------------------


def clear_sluice_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SLUICE_"):
            monkeypatch.delenv(name)


def write_lines(path: Path, events: Sequence[tuple[str, dict[str, Any]]]) -> Path:
    """A file of ``events`` (one tenant's: a file has no tenants), one a line."""
    path.write_text("".join(json.dumps(event) + "\n" for _, event in events))
    return path


def test_the_exit_status_follows_the_minimum_score(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    events = generated(1000, seed=7, now=now)
    replace_with(events, 10, "order.placed", _data("currency", None), now)
    one_bad = write_lines(tmp_path / "one.jsonl", events)
    events[21][1]["id"] = events[20][1]["id"]
    two_bad = write_lines(tmp_path / "two.jsonl", events)

    assert main(["validate", "file", str(one_bad)]) == 0  # 99.9 % meets the default minimum
    assert "score 99.90 % (minimum 99.9 %): passed" in capsys.readouterr().out
    assert main(["validate", "file", str(one_bad), "--min-score", "99.95"]) == 1
    assert main(["validate", "file", str(two_bad)]) == 1
    assert "score 99.80 %" in capsys.readouterr().out
    assert main(["validate", "file", str(two_bad), "--min-score", "99"]) == 0
    capsys.readouterr()
    assert main(["validate", "file", str(two_bad), "--format", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["valid"] == 998


def test_an_empty_file_fails_as_there_is_nothing_to_measure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")

    assert main(["validate", "file", str(tmp_path / "empty.jsonl"), "--format", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert (document["events"], document["score"], document["passed"]) == (0, None, False)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--min-score", "101"], "'101' is not a percentage from 0 to 100"),
        (["--min-score", "high"], "'high' is not a percentage from 0 to 100"),
        (["--examples", "-1"], "'-1' is not a whole number >= 0"),
        (["--max-clock-skew-seconds", "0"], "'0' is not a whole number >= 1"),
        (["--unknown-types", "fatal"], "invalid choice: 'fatal'"),
        (["--format", "yaml"], "invalid choice: 'yaml'"),
    ],
)
def test_bad_options_are_usage_errors(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["validate", "file", str(tmp_path / "x.jsonl"), *argv])

    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_file_that_cannot_be_read_is_a_usage_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "file", str(tmp_path / "missing.jsonl")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"sluice validate: cannot read {tmp_path / 'missing.jsonl'}")
    assert "No such file or directory" in error

    (tmp_path / "broken.json").write_text('[{"id": "e1"},\n')
    assert main(["validate", "file", str(tmp_path / "broken.json")]) == 2
    assert "broken.json starts as a JSON array but is not one" in capsys.readouterr().err

    assert main(["validate", "file", str(tmp_path / "missing.jsonl"), "--tenant", "Acme"]) == 2
    assert "invalid tenant name 'Acme'" in capsys.readouterr().err


@pytest.mark.parametrize("source", [["kafka"], ["postgres", "--since", "2026-11-27T00:00:00Z"]])
def test_kafka_and_postgres_name_the_missing_settings(
    source: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clear_sluice_environment(monkeypatch)

    assert main(["validate", *source]) == 2

    error = capsys.readouterr().err
    assert error.startswith("sluice validate: Sluice cannot start")
    assert "SLUICE_KAFKA_BOOTSTRAP_SERVERS is not set but is required" in error


def test_the_command_is_documented(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["validate", "kafka", "--help"])

    text = capsys.readouterr().out
    for option in ("--topic", "--max-records", "--last N", "--min-score", "--format"):
        assert option in text


# --- the file source ----------------------------------------------------------------------------


def test_json_lines_are_read_line_by_line_and_a_bad_line_is_reported_alone(
    tmp_path: Path,
) -> None:
    events = generated(5, seed=1)
    lines = [json.dumps(event) for _, event in events]
    lines[2:2] = ["", "{not json"]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    report = run(FileSource(str(path), tenant="acme"), Policy(now=NOW))

    assert (report.total, report.valid) == (6, 5)
    [example] = report.results[0].examples
    assert (report.results[0].rule.name, example.where) == (ENVELOPE, "events.jsonl:4")
    assert "not valid JSON" in example.problem and example.tenant == "acme"
    assert report.notes == ("events.jsonl: JSON lines",)
    assert report.source == f"file {path} (tenant acme)"


def test_a_json_array_is_a_batch_of_events_located_by_index(tmp_path: Path) -> None:
    sample = generated(4, seed=2)
    replace_with(sample, 1, "order.placed", _data("amount", -5))
    path = tmp_path / "batch.json"
    path.write_text(json.dumps([event for _, event in sample], indent=2))

    report = run(FileSource(str(path)), Policy(now=NOW))

    assert (report.total, report.counts) == (4, {NON_POSITIVE_AMOUNT: 1})
    assert report.results[0].examples[0].where == "batch.json[1]"
    assert report.notes == ("batch.json: a JSON array of 4 events",)


def test_a_query_api_page_and_a_single_event_are_read_too(tmp_path: Path) -> None:
    events = [event for _, event in generated(3, seed=3)]
    (tmp_path / "page.json").write_text(json.dumps({"events": events, "next_cursor": None}))
    (tmp_path / "one.json").write_text(json.dumps(events[0], indent=2))

    page = run(FileSource(str(tmp_path / "page.json")), Policy(now=NOW))
    one = run(FileSource(str(tmp_path / "one.json")), Policy(now=NOW))

    assert (page.total, page.valid, page.notes) == (
        3,
        3,
        ("page.json: a query API page of 3 events",),
    )
    assert (one.total, one.valid, one.notes) == (1, 1, ("one.json: one event",))


def test_every_element_of_an_array_meets_the_services_parser() -> None:
    document = [
        {"specversion": "1.0", "id": "e1", "source": "/s", "type": "order.placed", "x": 1.5e999},
        "not an event",
        {"specversion": "1.0", "id": "e3", "source": "/s", "type": "x", "data": "\ud800"},
    ]
    content = json.dumps(document).encode()  # Python writes 1.5e999 as Infinity

    report = validate(
        file_items(content, "odd.json", None, []), Policy(now=NOW), source="odd", examples=5
    )

    problems = [example.problem for example in report.results[0].examples]
    assert report.counts == {ENVELOPE: 3}
    assert any("Infinity is not a JSON value" in problem for problem in problems)
    assert any("an event must be a JSON object, got a string" in p for p in problems)
    assert any("unpaired UTF-16 surrogate" in p for p in problems)


def test_standard_input_is_read_with_a_dash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    events = generated(20, seed=4, now=datetime.now(UTC))
    text = "".join(json.dumps(event) + "\n" for _, event in events)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))

    assert main(["validate", "file", "-", "--format", "json"]) == 0

    document = json.loads(capsys.readouterr().out)
    assert (document["source"], document["events"]) == ("standard input", 20)


# --- the Kafka source ---------------------------------------------------------------------------


class FakeMessage:
    """A confluent-kafka ``Message``: methods, not attributes."""

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        error: KafkaError | None = None,
    ) -> None:
        self._fields = (topic, partition, offset, key, value, headers, error)

    def topic(self) -> str:
        return self._fields[0]

    def partition(self) -> int:
        return self._fields[1]

    def offset(self) -> int:
        return self._fields[2]

    def key(self) -> bytes | None:
        return self._fields[3]

    def value(self) -> bytes | None:
        return self._fields[4]

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._fields[5]

    def error(self) -> KafkaError | None:
        return self._fields[6]

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_796_000_000_000 + self.offset())


class FakeKafka:
    """Topics in memory: topic -> partition -> its log of (key, value, headers); records
    below ``low`` are gone (retention). Every consumer made is kept for the asserts."""

    def __init__(self) -> None:
        self.logs: dict[str, dict[int, list[tuple[bytes | None, bytes | None, list[Any]]]]] = {}
        self.low: dict[tuple[str, int], int] = {}
        self.denied: set[str] = set()
        self.consumers: list[FakeConsumer] = []
        #: appended to the log once partitions are assigned: written during the sample
        self.late: list[tuple[str, int, bytes, bytes]] = []

    def produce(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        self.logs.setdefault(topic, {}).setdefault(partition, []).append((key, value, []))

    def consumer(self, config: dict[str, Any]) -> FakeConsumer:
        made = FakeConsumer(self, config)
        self.consumers.append(made)
        return made


class FakeConsumer:
    def __init__(self, kafka: FakeKafka, config: dict[str, Any]) -> None:
        self.kafka, self.config = kafka, config
        self.positions: dict[int, int] = {}
        self.at_end: set[int] = set()
        self.assigned: list[tuple[str, int, int]] = []
        self.topic = ""
        self.closed = False

    def list_topics(self, topic: str, timeout: float) -> Any:
        error = None
        if topic in self.kafka.denied:
            error = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
        elif topic not in self.kafka.logs:
            error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
        partitions = dict.fromkeys(self.kafka.logs.get(topic, {}))
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions=partitions, error=error)})

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float) -> tuple[int, int]:
        log = self.kafka.logs[partition.topic][partition.partition]
        return self.kafka.low.get((partition.topic, partition.partition), 0), len(log)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = [(tp.topic, tp.partition, tp.offset) for tp in partitions]
        self.topic = partitions[0].topic
        self.positions = {tp.partition: tp.offset for tp in partitions}
        for topic, partition, key, value in self.kafka.late:
            self.kafka.produce(topic, partition, key, value)

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        messages: list[FakeMessage] = []
        for partition, position in sorted(self.positions.items()):
            log = self.kafka.logs[self.topic][partition]
            while position < len(log) and len(messages) < num_messages:
                key, value, headers = log[position]
                messages.append(FakeMessage(self.topic, partition, position, key, value, headers))
                position += 1
            self.positions[partition] = position
            if position == len(log) and partition not in self.at_end:
                self.at_end.add(partition)
                eof = KafkaError(KafkaError._PARTITION_EOF)
                messages.append(FakeMessage(self.topic, partition, position, error=eof))
        return messages

    def subscribe(self, topics: list[str]) -> None:
        raise AssertionError("a sample must not join a consumer group")

    def commit(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a sample must never commit offsets")

    def close(self) -> None:
        self.closed = True


#: The service's settings for the command; Redis and PostgreSQL are required, never reached.
KAFKA_ENVIRONMENT = {
    "SLUICE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "SLUICE_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
    "SLUICE_REDIS_NODES": "127.0.0.1:9",
    "SLUICE_REDIS_PASSWORD": "unused",
    "SLUICE_POSTGRES_HOST": "127.0.0.1",
    "SLUICE_POSTGRES_READER_PASSWORD": "unused",
    "SLUICE_MAX_CLOCK_SKEW_SECONDS": "600",
}


def kafka_with(events: Sequence[tuple[str, dict[str, Any]]], partitions: int = 3) -> FakeKafka:
    """``events`` in events.raw, each on its tenant's partition, keyed by its tenant."""
    kafka = FakeKafka()
    for partition in range(partitions):
        kafka.logs.setdefault("events.raw", {})[partition] = []
    for tenant, event in events:
        partition = TENANTS.index(tenant) % partitions
        kafka.produce("events.raw", partition, tenant.encode(), compact(event))
    return kafka


def sampler(kafka: FakeKafka) -> KafkaSampler:
    settings = KafkaSettings(bootstrap_servers=("10.77.0.12:9092",), sasl_username="sluice-ops")
    return KafkaSampler(settings, consumer_factory=kafka.consumer)


def test_a_kafka_sample_reads_every_partition_and_commits_in_no_group() -> None:
    events = generated(300, seed=12)
    kafka = kafka_with(events)

    report = run(KafkaSource(sampler(kafka), "events.raw", max_records=1000), Policy(now=NOW))

    assert (report.total, report.valid, report.notes) == (300, 300, ())
    [consumer] = kafka.consumers
    assert consumer.closed
    assert consumer.config["group.id"].startswith("sluice-validate-")
    assert consumer.config["enable.auto.commit"] is False
    assert consumer.config["enable.auto.offset.store"] is False
    assert consumer.config["bootstrap.servers"] == "10.77.0.12:9092"
    assert sorted(consumer.assigned) == [("events.raw", p, 0) for p in range(3)]


def test_the_last_records_of_each_partition_the_retained_ones_and_the_record_bound() -> None:
    kafka = kafka_with(generated(300, seed=12))
    kafka.low[("events.raw", 1)] = 5  # older records of partition 1 are gone
    sizes = {p: len(log) for p, log in kafka.logs["events.raw"].items()}

    last = sampler(kafka).sample("events.raw", max_records=1000, last=10)
    assert last.complete
    assert last.partitions == {p: (n - 10, n) for p, n in sizes.items()}
    assert Counter(r.partition for r in last.records) == dict.fromkeys(sizes, 10)
    assert kafka.consumers[-1].assigned == [("events.raw", p, n - 10) for p, n in sizes.items()]

    retained = sampler(kafka).sample("events.raw", max_records=1000)
    assert retained.partitions == {0: (0, sizes[0]), 1: (5, sizes[1]), 2: (0, sizes[2])}
    assert len(retained.records) == sum(sizes.values()) - 5

    bounded = sampler(kafka).sample("events.raw", max_records=25)
    assert (len(bounded.records), bounded.complete) == (25, False)
    source = KafkaSource(sampler(kafka), "events.raw", max_records=25)
    report = run(source, Policy(now=NOW))
    assert report.total == 25
    assert "stopped (--max-records 25" in report.notes[0]


def test_records_written_after_the_sample_started_are_left_out() -> None:
    kafka = kafka_with(generated(30, seed=13))
    late = compact(make_event("order.placed", "acme", random.Random(1), NOW))
    kafka.late = [("events.raw", 0, b"acme", late)]

    sample = sampler(kafka).sample("events.raw", max_records=1000)

    assert late not in [record.value for record in sample.records]
    assert (len(sample.records), sample.complete) == (30, True)


def test_dlq_records_are_judged_with_their_tenant_key_as_the_processor_reads_it() -> None:
    kafka = FakeKafka()
    good = compact(make_event("order.placed", "acme", random.Random(1), NOW))
    kafka.produce("events.dlq", 0, b"acme", good)
    kafka.produce("events.dlq", 0, None, good)
    kafka.produce("events.dlq", 1, b"Not A Tenant", good)
    kafka.produce("events.dlq", 1, b"acme", None)
    kafka.produce("events.dlq", 1, b"globex", b"\x00not json")

    source = KafkaSource(sampler(kafka), "events.dlq", max_records=100, last=50)
    report = run(source, Policy(now=NOW), examples=5)

    assert (report.total, report.valid, report.counts) == (5, 1, {ENVELOPE: 4})
    problems = {e.where: e.problem for e in report.results[0].examples}
    assert (
        problems["events.dlq[0]@1"] == "the record has no key; the API keys every event by tenant"
    )
    assert problems["events.dlq[1]@0"].startswith("the record key is not a tenant")
    assert problems["events.dlq[1]@1"] == "the record has no value (a tombstone), not an event"
    assert "not valid JSON" in problems["events.dlq[1]@2"]
    assert source.description == (
        "Kafka topic events.dlq, the last 50 records of each partition, at most 100 records"
    )


def test_a_record_item_keeps_the_event_id_of_a_keyless_record() -> None:
    event = make_event("order.placed", "acme", random.Random(1), NOW)
    record = ConsumedRecord("events.raw", 2, 7, None, compact(event), 0)

    item = record_item(record)
    report = validate([item], Policy(now=NOW), source="one")

    assert (item.tenant, item.where) == (None, "events.raw[2]@7")
    assert report.results[0].examples[0].event_id == event["id"]


@pytest.mark.parametrize(
    ("denied", "topic", "message"),
    [
        (False, "events.typo", "has no topic 'events.typo': pass --topic with one of"),
        (True, "events.dlq", "Kafka refused sluice-ops (SLUICE_KAFKA_SASL_USERNAME) to read topic"),
    ],
)
def test_a_topic_that_cannot_be_read_is_named_with_the_fix(
    denied: bool, topic: str, message: str
) -> None:
    kafka = kafka_with(generated(3, seed=1))
    kafka.logs["events.dlq"] = {0: []}
    if denied:
        kafka.denied.add("events.dlq")

    with pytest.raises(RuntimeError, match=re.escape(message)) as raised:
        sampler(kafka).sample(topic, max_records=10)

    assert kafka.consumers[-1].closed
    if denied:
        assert "kafka_acls (inventories/shared/all.yml)" in str(raised.value)


def test_kafka_out_of_reach_names_the_bootstrap_servers_setting() -> None:
    def unreachable(config: dict[str, Any]) -> Any:
        consumer = FakeConsumer(FakeKafka(), config)

        def list_topics(topic: str, timeout: float) -> Any:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))

        consumer.list_topics = list_topics  # type: ignore[method-assign]
        return consumer

    settings = KafkaSettings(bootstrap_servers=("10.77.0.12:9092",))
    with pytest.raises(RuntimeError) as raised:
        KafkaSampler(settings, unreachable).sample("events.raw", max_records=1)

    assert str(raised.value).startswith(
        "Kafka at 10.77.0.12:9092 (SLUICE_KAFKA_BOOTSTRAP_SERVERS, SLUICE_KAFKA_*) could not be "
        "read (_TRANSPORT"
    )


def test_sluice_validate_kafka_samples_the_topic_with_the_services_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sluice.adapters.kafka

    events = generated(60, seed=17, now=datetime.now(UTC))
    kafka = kafka_with(events)
    kafka.logs["events.dlq"] = {0: []}
    kafka.produce("events.dlq", 0, b"acme", b"{}")
    kafka.produce("events.dlq", 0, b"acme", compact(events[0][1]))
    monkeypatch.setattr(sluice.adapters.kafka, "RdConsumer", kafka.consumer)
    clear_sluice_environment(monkeypatch)
    for name, value in KAFKA_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)

    assert main(["validate", "kafka", "--format", "json"]) == 0
    raw = json.loads(capsys.readouterr().out)
    assert (raw["events"], raw["valid"], raw["max_clock_skew_seconds"]) == (60, 60, 600)
    assert raw["source"].startswith("Kafka topic events.raw, from the start of each partition")

    assert main(["validate", "kafka", "--topic", "events.dlq", "--last", "5"]) == 1
    text = capsys.readouterr().out
    assert "2 events, 1 valid: data-quality score 50.00 %" in text
    assert "(tenant acme, events.dlq[0]@0): attribute 'specversion' is required" in text
    assert {consumer.config["bootstrap.servers"] for consumer in kafka.consumers} == {
        "127.0.0.1:9092"
    }


def test_an_empty_topic_is_an_empty_sample_and_fails() -> None:
    kafka = FakeKafka()
    kafka.logs["events.dlq"] = {0: [], 1: []}

    report = run(KafkaSource(sampler(kafka), "events.dlq", max_records=10), Policy(now=NOW))

    assert (report.total, report.exit_code) == (0, 1)
    assert report.notes == ("every partition of events.dlq was empty in the range asked",)


# --- the PostgreSQL source ----------------------------------------------------------------------


def stored(tenant: str, event: dict[str, Any]) -> tuple[str, StoredEvent]:
    [parsed] = parse_request(STRUCTURED_MEDIA_TYPE, {}, compact(event), Limits())
    return tenant, StoredEvent(parsed, ingested_at=NOW)


class FakePages:
    """The store's range read over rows in memory, in key order; records every call."""

    def __init__(self, rows: Sequence[tuple[str, StoredEvent]]) -> None:
        self.rows = sorted(rows, key=lambda row: (row[0], row[1].position))
        self.calls: list[tuple[str | None, Any, int]] = []

    def __call__(
        self,
        since: datetime,
        until: datetime,
        tenant: str | None,
        after: tuple[str, datetime, str] | None,
        limit: int,
    ) -> list[tuple[str, StoredEvent]]:
        self.calls.append((tenant, after, limit))
        found = []
        for row_tenant, row in self.rows:
            key = (row_tenant, *row.position)
            assert row.event.time is not None
            if tenant not in (None, row_tenant) or not since <= row.event.time < until:
                continue
            if after is not None and key <= after:
                continue
            found.append((row_tenant, row))
        return found[:limit]


def postgres_rows() -> list[tuple[str, StoredEvent]]:
    events = generated(50, seed=31)
    replace_with(events, 7, "order.placed", _data("currency", "ECU"))
    old = make_event("order.placed", "acme", random.Random(2), NOW - timedelta(days=2))
    return [stored(tenant, event) for tenant, event in events] + [stored("acme", old)]


def test_postgres_events_of_a_range_are_read_page_by_page_in_key_order() -> None:
    pages = FakePages(postgres_rows())
    source = PostgresSource(pages, since=NOW - timedelta(hours=1), until=NOW, page_events=7)

    report = run(source, Policy(now=NOW))

    assert (report.total, report.valid, report.counts) == (50, 49, {INVALID_CURRENCY: 1})
    example = report.results[0].examples[0]
    assert example.tenant is not None and example.where.startswith("public.events at 2026-11-27")
    assert len(pages.calls) == 8  # 7 full pages and the short last one
    assert [call[2] for call in pages.calls] == [7] * 8
    in_range = [(t, row) for t, row in pages.rows if row.event.time >= NOW - timedelta(hours=1)]
    seventh_tenant, seventh = in_range[6]
    assert pages.calls[1][1] == (seventh_tenant, *seventh.position)


def test_postgres_one_tenant_and_the_record_bound() -> None:
    pages = FakePages(postgres_rows())
    since, until = NOW - timedelta(hours=1), NOW

    acme = run(PostgresSource(pages, since=since, until=until, tenant="acme"), Policy(now=NOW))
    assert acme.total == sum(1 for t, row in pages.rows if t == "acme" and row.event.time >= since)
    assert acme.source.startswith("PostgreSQL events of tenant acme from 2026-11-27T11:00:00Z")

    bounded = PostgresSource(pages, since=since, until=until, max_records=12, page_events=5)
    report = run(bounded, Policy(now=NOW))
    assert report.total == 12
    assert report.notes[0].startswith("stopped at --max-records 12: the range holds more")
    exact = run(PostgresSource(pages, since=since, until=until, max_records=50), Policy(now=NOW))
    assert (exact.total, exact.notes) == (50, ())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"until": NOW - timedelta(hours=2)}, "the time range is empty"),
        ({"since": NOW.replace(tzinfo=None)}, "has no UTC offset"),
        ({"tenant": "ACME"}, "invalid tenant name"),
        ({"max_records": 0}, "--max-records must be >= 1"),
    ],
)
def test_postgres_ranges_are_checked_before_reading(changes: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"since": NOW - timedelta(hours=1), "until": NOW} | changes
    pages = FakePages([])

    with pytest.raises(ValueError, match=message):
        PostgresSource(pages, **arguments)
    assert pages.calls == []


@pytest.mark.postgres
def test_sluice_validate_postgres_reads_what_the_store_wrote(
    pg_server: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pg_server import WRITER, database_name

    from sluice.storage import migrate, store
    from sluice.storage.rows import event_row

    now = datetime.now(UTC)
    events = generated(300, seed=41, now=now)
    replace_with(events, 9, "order.placed", _data("amount", -12.5), now)
    bad_amount = events[9]
    tenant = events[200][0]
    reused = make_event("payment.processed", tenant, random.Random(3), now - timedelta(seconds=30))
    reused["id"] = events[200][1]["id"]  # another time: the store keeps both rows
    events.append((tenant, reused))
    old = make_event("order.placed", "acme", random.Random(4), now - timedelta(days=3))
    events.append(("acme", old))  # outside the range checked
    rows = []
    for event_tenant, event in events:
        [parsed] = parse_request(STRUCTURED_MEDIA_TYPE, {}, compact(event), Limits())
        rows.append(event_row(event_tenant, parsed, record_time=now))

    name = pg_server.prepare(database_name("sluice_validate"))
    try:
        migrate.run(pg_server.conninfo(name, WRITER))

        async def write() -> None:
            pool = await store.open_pool(pg_server.conninfo(name, WRITER))
            try:
                await store.EventStore(pool).insert_event_keys(rows)
            finally:
                await pool.close()

        asyncio.run(write())
        for variable, value in pg_server.sluice_environment(name).items():
            monkeypatch.setenv(variable, value)
        since = (now - timedelta(hours=1)).isoformat()

        assert main(["validate", "postgres", "--since", since, "--format", "json"]) == 1
        document = json.loads(capsys.readouterr().out)
        assert (document["events"], document["valid"]) == (301, 299)
        assert document["counts"] == {NON_POSITIVE_AMOUNT: 1, DUPLICATE_ID: 1}
        examples = {rule["rule"]: rule["examples"][0] for rule in document["rules"]}
        assert (examples[NON_POSITIVE_AMOUNT]["id"], examples[NON_POSITIVE_AMOUNT]["tenant"]) == (
            bad_amount[1]["id"],
            bad_amount[0],
        )
        assert examples[DUPLICATE_ID]["id"] == reused["id"]
        assert "another event under the same id" in examples[DUPLICATE_ID]["problem"]

        one = bad_amount[0]
        assert main(["validate", "postgres", "--since", since, "--tenant", one]) == 1
        text = capsys.readouterr().out
        expected = sum(1 for t, _ in events[:-1] if t == one)
        assert f"PostgreSQL events of tenant {one} from" in text
        assert f"{expected} events, {expected - 1 - (one == tenant)} valid" in text
    finally:
        pg_server.drop(name)


def test_currencies_are_iso_codes() -> None:
    assert {"EUR", "USD", "GBP", "CHF", "JPY", "XOF"} <= CURRENCIES
    assert not {"XXX", "XTS", "XAU", "EURO", "eur"} & CURRENCIES
    assert all(len(code) == 3 and code.isupper() for code in CURRENCIES)
    # every currency the generator uses is one
    assert {event["data"].get("currency") for _, event in generated(500, seed=1)} - {
        None
    } <= CURRENCIES
