"""The rules over a whole sample: unique ids per tenant, counts per rule, the data-quality score,
the worst examples and the fix per rule, as text or JSON. Pure: the events come in as
:class:`~sluice.quality.rules.Item` values from any source.

The score is the share of valid events, ``valid / total`` as a percentage, where an event is
valid when it breaks no rule of severity ``error`` (warnings are reported, not counted). A
sample passes when its score is at least the minimum; an empty sample never passes, since
nothing was measured.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from sluice.quality.rules import (
    DUPLICATE_ID,
    ERROR,
    RULES,
    Checked,
    Item,
    Policy,
    Rule,
    Violation,
    check_item,
)

#: The score below which ``sluice validate`` fails (exit status 1), in percent.
DEFAULT_MIN_SCORE: Final = 99.9
#: How many examples a report shows per rule.
DEFAULT_EXAMPLES: Final = 3


@dataclass(frozen=True)
class Example:
    """An event that breaks a rule: its id (None when it has none), tenant, where it was read
    and what is wrong."""

    event_id: str | None
    tenant: str | None
    where: str
    problem: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.event_id,
            "tenant": self.tenant,
            "where": self.where,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class RuleResult:
    """A rule the sample breaks: how many events break it, the worst of them, the fix."""

    rule: Rule
    severity: str
    events: int
    examples: tuple[Example, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule.name,
            "severity": self.severity,
            "events": self.events,
            "checks": self.rule.checks,
            "recommendation": self.rule.recommendation,
            "examples": [example.to_json() for example in self.examples],
        }


@dataclass(frozen=True)
class Report:
    """What ``sluice validate`` found in a sample: :meth:`text` for people, :meth:`to_json`
    for machines, :attr:`exit_code` for scripts."""

    source: str
    policy: Policy
    total: int
    valid: int
    min_score: float
    results: tuple[RuleResult, ...]
    notes: tuple[str, ...] = ()

    @property
    def score(self) -> float | None:
        """Valid events as a percentage of all; None for an empty sample."""
        return None if self.total == 0 else self.valid * 100 / self.total

    @property
    def passed(self) -> bool:
        score = self.score
        return score is not None and score >= self.min_score

    @property
    def exit_code(self) -> int:
        """0 when the sample passed, 1 when its score is below the minimum or it is empty."""
        return 0 if self.passed else 1

    @property
    def counts(self) -> dict[str, int]:
        """Events per rule broken (warnings included), in the rule table's order."""
        return {result.rule.name: result.events for result in self.results}

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "checked_at": _iso(self.policy.now),
            "events": self.total,
            "valid": self.valid,
            "score": self.score,
            "min_score": self.min_score,
            "passed": self.passed,
            "max_clock_skew_seconds": self.policy.max_clock_skew_seconds,
            "unknown_types": self.policy.unknown_types,
            "counts": self.counts,
            "rules": [result.to_json() for result in self.results],
            "notes": list(self.notes),
        }

    def text(self) -> str:
        lines = [f"sluice validate: {self.source}, checked at {_iso(self.policy.now)}"]
        lines += [f"note: {note}" for note in self.notes]
        score = self.score
        if score is None:
            lines.append(
                f"no events to check: the score is undefined, below the minimum of "
                f"{self.min_score:g} % (check the source, the range or the topic)"
            )
            return "\n".join(lines)
        verdict = "passed" if self.passed else "FAILED"
        lines.append(
            f"{_events(self.total)}, {self.valid} valid: data-quality score {_percent(score)} % "
            f"(minimum {self.min_score:g} %): {verdict}"
        )
        if not self.results:
            lines.append("every event passes every rule")
            return "\n".join(lines)
        width = max(len(result.rule.name) for result in self.results)
        lines.append("")
        lines.append(f"  {'rule':<{width}}  {'severity':<8}  events")
        for result in self.results:
            lines.append(f"  {result.rule.name:<{width}}  {result.severity:<8}  {result.events}")
        for result in self.results:
            counted = "" if result.severity == ERROR else ", not counted against the score"
            lines += [
                "",
                f"{result.rule.name}: {_events(result.events)} ({result.severity}{counted})",
                f"  checks: {result.rule.checks}",
            ]
            for example in result.examples:
                tenant = "" if example.tenant is None else f"tenant {example.tenant}, "
                event_id = "(no id)" if example.event_id is None else example.event_id
                lines.append(f"  - {event_id} ({tenant}{example.where}): {example.problem}")
            lines.append(f"  fix: {result.rule.recommendation}")
        return "\n".join(lines)


def validate(
    items: Iterable[Item],
    policy: Policy,
    *,
    source: str,
    min_score: float = DEFAULT_MIN_SCORE,
    examples: int = DEFAULT_EXAMPLES,
) -> Report:
    """The report on ``items``: each checked alone (:func:`~sluice.quality.rules.check_item`),
    then ids per tenant across the sample. Reads ``items`` once, keeping only the ids seen and
    the examples, so a sample of any size fits in memory."""
    if not 0 <= min_score <= 100:
        raise ValueError(f"the minimum score is a percentage from 0 to 100, got {min_score}")
    if examples < 0:
        raise ValueError(f"the examples per rule are a number >= 0, got {examples}")
    tally = _Tally(policy, examples)
    for item in items:
        tally.add(check_item(item, policy))
    return Report(
        source=source,
        policy=policy,
        total=tally.total,
        valid=tally.valid,
        min_score=min_score,
        results=tally.results(),
    )


@dataclass
class _Tally:
    policy: Policy
    examples: int
    total: int = 0
    valid: int = 0
    events: dict[str, int] = field(default_factory=dict)
    #: per rule, a min-heap of the worst examples: ((errors of the event, -position), position)
    worst: dict[str, list[tuple[tuple[int, int], int, Example]]] = field(default_factory=dict)
    #: (tenant, id) -> where it was first read and a digest of that event's JSON
    seen: dict[tuple[str | None, str], tuple[str, bytes]] = field(default_factory=dict)

    def add(self, checked: Checked) -> None:
        position = self.total
        self.total += 1
        violations = list(checked.violations)
        duplicate = self._duplicate(checked)
        if duplicate is not None:
            violations.append(duplicate)
        errors = sum(self.policy.severity(v.rule) == ERROR for v in violations)
        if errors == 0:
            self.valid += 1
        for violation in violations:
            self.events[violation.rule] = self.events.get(violation.rule, 0) + 1
            example = Example(
                checked.event_id, checked.item.tenant, checked.item.where, violation.message
            )
            self._keep(violation.rule, (errors, -position), position, example)

    def _duplicate(self, checked: Checked) -> Violation | None:
        if checked.event is None:
            return None
        key = (checked.item.tenant, checked.event.id)
        digest = hashlib.blake2b(checked.event.to_json_bytes(), digest_size=16).digest()
        first = self.seen.get(key)
        if first is None:
            self.seen[key] = (checked.item.where, digest)
            return None
        where, first_digest = first
        how = (
            "the same event again (a resend)"
            if digest == first_digest
            else "another event under the same id"
        )
        return Violation(DUPLICATE_ID, f"id first read at {where}; this is {how}")

    def _keep(self, rule: str, rank: tuple[int, int], position: int, example: Example) -> None:
        if self.examples == 0:
            return
        heap = self.worst.setdefault(rule, [])
        entry = (rank, position, example)
        if len(heap) < self.examples:
            heapq.heappush(heap, entry)
        elif rank > heap[0][0]:
            heapq.heapreplace(heap, entry)

    def results(self) -> tuple[RuleResult, ...]:
        found = []
        for name, rule in RULES.items():
            if name not in self.events:
                continue
            worst = sorted(self.worst.get(name, []), reverse=True)
            severity = self.policy.severity(name)
            assert severity is not None  # an ignored rule records no violation
            found.append(
                RuleResult(rule, severity, self.events[name], tuple(e for _, _, e in worst))
            )
        return tuple(found)


def render(report: Report, form: str) -> str:
    """``report`` as ``text`` or ``json`` (one line)."""
    if form == "json":
        return json.dumps(report.to_json(), ensure_ascii=False)
    if form == "text":
        return report.text()
    raise ValueError(f"a report is text or json, not {form!r}")


def _events(count: int) -> str:
    return "1 event" if count == 1 else f"{count} events"


def _percent(score: float) -> str:
    """Two decimals, rounded down: 99.996 % shows as 99.99, never as 100.00."""
    return f"{math.floor(round(score * 100, 6)) / 100:.2f}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
