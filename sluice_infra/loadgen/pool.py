"""The events the driver cycles through: the study's mix, built by the service's own generator
(:mod:`sluice.quality.generator`, the one ``sluice validate`` scores 100 %), in the exact
proportions of its weights and shuffled, so any stretch of requests carries the mix.

The driver replaces each event's ``id`` and ``time`` per request; the line number of an event
in the pool is part of the id it sends (``<run>-<tenant>-<line>-<seq>``), so the type of any
acknowledged id is known without storing it."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

from sluice.quality.generator import MIX, make_event

#: Events in the pool: enough to vary payloads, small enough to build in a second.
POOL_SIZE = 2000
#: The tenant named in the events' ``source``; the tenant that counts is the API key's.
SOURCE_TENANT = "loadgen"


def mix_counts(size: int) -> dict[str, int]:
    """How many events of each type a pool of ``size`` holds: the weights, rounded, with the
    rounding error given to the most common type so the counts add up to ``size``."""
    counts = {kind: round(weight * size) for kind, weight in MIX.items()}
    counts[max(MIX, key=MIX.__getitem__)] += size - sum(counts.values())
    return counts


def build(size: int = POOL_SIZE, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    kinds = [kind for kind, count in mix_counts(size).items() for _ in range(count)]
    rng.shuffle(kinds)
    return [make_event(kind, SOURCE_TENANT, rng, now) for kind in kinds]


def write(path: Path, events: list[dict]) -> list[str]:
    """The pool as JSON Lines at ``path``; returns each line's type (index = line number)."""
    path.write_text("".join(json.dumps(event, separators=(",", ":")) + "\n" for event in events))
    return [event["type"] for event in events]
