"""sluice_infra.lab.demo (the end of `make lab`): where it sends and counts, and that it fails
when what landed differs from what was sent, revoking its key either way."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sluice_infra.lab import demo

REPO = Path(__file__).resolve().parents[2]


def test_placement_of_the_seed_and_spread_layouts():
    seed = demo.placement(REPO / "inventories" / "lab")
    assert seed == demo.Placement("10.77.0.11", 8080, "app", "db")
    spread = demo.placement(REPO / "inventories" / "lab-spread")
    assert spread.api_address == "10.77.0.11" and spread.key_host == "db"


def test_events_are_valid_distinct_and_cycle_through_the_types():
    sent = demo.events(7, datetime(2026, 11, 27, tzinfo=UTC))
    assert len({e["id"] for e in sent}) == 7
    assert Counter(e["type"] for e in sent) == {"order.created": 3, "order.paid": 2,
                                                "order.shipped": 2}  # fmt: skip
    assert all(e["specversion"] == "1.0" and e["time"] == "2026-11-27T00:00:00Z" for e in sent)


class FakeRemote:
    def __init__(self, rows: str) -> None:
        self.rows = rows
        self.commands: list[str] = []

    def run(self, host: str, command: str) -> str:
        self.commands.append(f"{host}: {command}")
        if "keys new" in command:
            return "key id 0a1b for tenant t (shown once):\nsk_secret\n"
        if "psql" in command:
            return self.rows
        return ""


@pytest.fixture
def http(monkeypatch):
    posted: list[list[dict]] = []

    def request(url: str, key: str, body: bytes | None = None):
        assert key == "sk_secret"
        if body is not None:
            posted.append(json.loads(body))
            return 202, {"status": "accepted"}
        totals = Counter(e["type"] for batch in posted for e in batch)
        return 200, {"total": sum(totals.values()), "totals": dict(totals)}

    monkeypatch.setattr(demo, "_request", request)
    return posted


def test_a_full_run_reports_and_revokes_the_key(http):
    remote, out = FakeRemote("order.created 4\norder.paid 3\norder.shipped 3\n"), io.StringIO()
    demo.run(REPO / "inventories" / "lab", 10, remote, out=out)
    assert "every event landed once" in out.getvalue()
    assert remote.commands[-1] == "app: sudo -n /usr/local/sbin/sluice keys revoke 0a1b"


def test_a_duplicate_row_fails_the_demo(http):
    remote = FakeRemote("order.created 5\norder.paid 3\norder.shipped 3\n")
    with pytest.raises(demo.DemoError, match="differ"):
        demo.run(REPO / "inventories" / "lab", 10, remote, out=io.StringIO())
    assert remote.commands[-1].endswith("keys revoke 0a1b")
