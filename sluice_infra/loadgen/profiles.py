"""Rate profiles for the load generator: events per second over time, as the driver's phases
(``{"seconds", "rate_start", "rate_end"}``, linear within a phase).

The study's four shapes: steady (its target for a while), ramp (up to a rate), spike (a base
rate, a burst at a multiple of it, back to the base) and soak (steady for hours)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

PROFILES = ("steady", "ramp", "spike", "soak")


class ProfileError(ValueError):
    """A profile's numbers cannot make a load; the message names the option and the fix."""


@dataclass(frozen=True)
class Phase:
    seconds: float
    rate_start: float
    rate_end: float

    def as_plan(self) -> dict[str, float]:
        return {"seconds": self.seconds, "rate_start": self.rate_start, "rate_end": self.rate_end}

    @property
    def events(self) -> float:
        return self.seconds * (self.rate_start + self.rate_end) / 2


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ProfileError(f"{name} must be above 0, got {value}")
    return float(value)


def steady(rate: float, seconds: float) -> list[Phase]:
    rate, seconds = _positive("--rate", rate), _positive("--seconds", seconds)
    return [Phase(seconds, rate, rate)]


def ramp(rate: float, seconds: float, start: float | None = None) -> list[Phase]:
    """From ``start`` (a tenth of ``rate`` unless given) to ``rate`` over ``seconds``."""
    rate, seconds = _positive("--rate", rate), _positive("--seconds", seconds)
    first = rate / 10 if start is None else _positive("--start-rate", start)
    return [Phase(seconds, first, rate)]


def spike(
    rate: float, seconds: float, factor: float = 2.0, spike_seconds: float = 60.0
) -> list[Phase]:
    """``rate`` for ``seconds``, ``factor`` times it for ``spike_seconds``, ``rate`` for
    ``seconds`` again: the burst and the recovery after it."""
    rate, seconds = _positive("--rate", rate), _positive("--seconds", seconds)
    peak = rate * _positive("--spike-factor", factor)
    burst = _positive("--spike-seconds", spike_seconds)
    return [Phase(seconds, rate, rate), Phase(burst, peak, peak), Phase(seconds, rate, rate)]


def soak(rate: float, hours: float) -> list[Phase]:
    return steady(rate, _positive("--hours", hours) * 3600)


BUILDERS: dict[str, Callable[..., list[Phase]]] = {
    "steady": steady,
    "ramp": ramp,
    "spike": spike,
    "soak": soak,
}


def peak_rate(phases: list[Phase]) -> float:
    return max(max(p.rate_start, p.rate_end) for p in phases)


def duration(phases: list[Phase]) -> float:
    return sum(p.seconds for p in phases)
