"""The data-quality rules of ``sluice validate``: the rule table as data, and the checks of one
event as pure functions over its JSON.

An event is checked in two layers:

1. **envelope**: whether the service itself would take it. The CloudEvents 1.0 rules are those
   of :func:`sluice.cloudevents.parse_request`, run here unchanged on the event's structured
   JSON (no second parser), with the service's size limit; a Kafka record must be keyed by its
   tenant (:func:`sluice.processor.engine.record_parts`, checked by the Kafka source) and the
   type must be one Redis can count (:func:`sluice.derived.aggregates.check_event_type`). Only
   the clock-skew check is left out there: it reads the wall clock, and ``future_time`` below
   does the same against the check's own ``now``.
2. **business rules** of the study's event mix (:data:`EVENT_TYPES`): each type's required data
   fields and their kinds, amounts greater than 0, ISO 4217 currencies (:data:`CURRENCIES`),
   ``time`` no further in the future than the clock skew the API allows, and a type outside
   the mix reported as ``unknown_type`` (a warning unless :class:`Policy` says otherwise).

Unique ids per tenant is a rule over the whole sample: :mod:`sluice.quality.report`. A rule's
name, what it checks and what fixes it are in :data:`RULES`; every violation names its rule.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final

from sluice.cloudevents import (
    NO_DATA,
    STRUCTURED_MEDIA_TYPE,
    Event,
    Limits,
    json_type,
    parse_request,
)
from sluice.derived.aggregates import check_event_type
from sluice.errors import ApiError

# --- the rules ----------------------------------------------------------------------------------

ERROR: Final = "error"
WARNING: Final = "warning"
#: What ``unknown_type`` may be made (``--unknown-types``): counted against the score, reported
#: only, or not reported at all.
UNKNOWN_TYPE_SEVERITIES: Final = (ERROR, WARNING, "ignore")

ENVELOPE: Final = "envelope"
UNKNOWN_TYPE: Final = "unknown_type"
MISSING_FIELD: Final = "missing_field"
WRONG_TYPE: Final = "wrong_type"
NON_POSITIVE_AMOUNT: Final = "non_positive_amount"
INVALID_CURRENCY: Final = "invalid_currency"
INVALID_VALUE: Final = "invalid_value"
FUTURE_TIME: Final = "future_time"
DUPLICATE_ID: Final = "duplicate_id"


@dataclass(frozen=True)
class Rule:
    """A rule of the table: its name, default severity, what it checks and the fix a report
    recommends when events break it."""

    name: str
    severity: str
    checks: str
    recommendation: str


#: Every rule, in the order reports list them.
RULES: Final[Mapping[str, Rule]] = {
    rule.name: rule
    for rule in (
        Rule(
            ENVELOPE,
            ERROR,
            "an event the service accepts: CloudEvents 1.0 as sluice/cloudevents.py checks it "
            "(JSON, required attributes, RFC 3339 time, extension names, size), a Kafka record "
            "keyed by its tenant, a type Redis can count",
            "Fix the producer: the API refuses such an event with a 400 naming the attribute, "
            "so it came around the API (a tool producing to Kafka directly, a hand-made file) "
            "or is in events.dlq, whose sluice-error header gives the processor's reason. Send "
            "events through POST /api/v1/events.",
        ),
        Rule(
            UNKNOWN_TYPE,
            WARNING,
            "the type is one of the study's mix (EVENT_TYPES in sluice/quality/rules.py)",
            "Correct the producer's type name (a typo, a version suffix), or add the new type "
            "and its required fields to EVENT_TYPES in sluice/quality/rules.py.",
        ),
        Rule(
            MISSING_FIELD,
            ERROR,
            "the type's required data fields are present, not null and not empty",
            "Make the producer fill every required field of the type (EVENT_TYPES in "
            "sluice/quality/rules.py); a field that is really optional belongs out of the "
            "table, not sent empty.",
        ),
        Rule(
            WRONG_TYPE,
            ERROR,
            "data is a JSON object and each required field has its JSON type (ids and codes "
            "strings, amounts numbers, items an array)",
            "Serialise numbers as JSON numbers, not strings ('12.50' -> 12.5), ids and codes "
            "as strings, lists as arrays; check the producer's serialiser and schema version.",
        ),
        Rule(
            NON_POSITIVE_AMOUNT,
            ERROR,
            "amounts (amount, items[].unit_price) are greater than 0",
            "Never send a zero or negative order, payment, invoice or subscription amount: a 0 "
            "is usually a missing value the producer defaulted, a negative one a refund, which "
            "needs its own event type with a positive amount.",
        ),
        Rule(
            INVALID_CURRENCY,
            ERROR,
            "currency is the ISO 4217 code of a circulating currency, in upper case",
            "Send the three-letter ISO 4217 code in upper case ('EUR', not 'eur', '€' or "
            "'EURO'); CURRENCIES in sluice/quality/rules.py lists the codes accepted.",
        ),
        Rule(
            INVALID_VALUE,
            ERROR,
            "fields with a format hold one: e-mail addresses, dates (YYYY-MM-DD), listed "
            "choices (payment method, cancellation reason, interval), item quantities >= 1",
            "Map the producer's values onto the formats and choices of EVENT_TYPES in "
            "sluice/quality/rules.py; extend a choice there when the business added one.",
        ),
        Rule(
            FUTURE_TIME,
            ERROR,
            "time lies no further in the future than the clock skew the API allows "
            "(SLUICE_MAX_CLOCK_SKEW_SECONDS)",
            "Synchronise the producers' clocks (chrony or NTP) and send the time the event "
            "occurred with its real UTC offset: a local time sent with 'Z' lands hours ahead.",
        ),
        Rule(
            DUPLICATE_ID,
            ERROR,
            "event ids are unique per tenant among the events checked",
            "Give every event a new id (a UUID) when it is created, and reuse it only to resend "
            "that same event after a 503. Another event under a used id is lost when its time "
            "is the same (the store's key is tenant, time, id) and confuses every consumer that "
            "deduplicates by id.",
        ),
    )
}


# --- the study's event types --------------------------------------------------------------------


class Kind(enum.Enum):
    """What a data field must hold."""

    ID = "an identifier: a non-empty string"
    TEXT = "a non-empty string"
    EMAIL = "an e-mail address"
    AMOUNT = "a number > 0"
    CURRENCY = "an ISO 4217 currency code"
    DATE = "a date, YYYY-MM-DD"
    CHOICE = "one of the field's choices"
    COUNT = "a whole number >= 1"
    NAMES = "a non-empty array of field names"
    ITEMS = "a non-empty array of order lines (ITEM_FIELDS)"


@dataclass(frozen=True)
class Field:
    """A required field of an event's data: its name, its kind and, for a choice, the values
    allowed."""

    name: str
    kind: Kind
    choices: tuple[str, ...] = field(default=())


PAYMENT_METHODS: Final = ("card", "sepa_debit", "paypal", "bank_transfer", "apple_pay")
CANCELLATION_REASONS: Final = (
    "customer_request",
    "payment_failed",
    "out_of_stock",
    "fraud_suspected",
    "duplicate_order",
)
BILLING_INTERVALS: Final = ("month", "year")

#: An order line: every element of ``order.placed``'s ``items``.
ITEM_FIELDS: Final = (
    Field("sku", Kind.TEXT),
    Field("quantity", Kind.COUNT),
    Field("unit_price", Kind.AMOUNT),
)

#: The study's event types and the data fields each one requires. Other fields are allowed.
EVENT_TYPES: Final[Mapping[str, tuple[Field, ...]]] = {
    "customer.created": (
        Field("customer_id", Kind.ID),
        Field("email", Kind.EMAIL),
        Field("name", Kind.TEXT),
        Field("country", Kind.TEXT),
    ),
    "customer.updated": (
        Field("customer_id", Kind.ID),
        Field("changed_fields", Kind.NAMES),
    ),
    "order.placed": (
        Field("order_id", Kind.ID),
        Field("customer_id", Kind.ID),
        Field("amount", Kind.AMOUNT),
        Field("currency", Kind.CURRENCY),
        Field("items", Kind.ITEMS),
    ),
    "order.cancelled": (
        Field("order_id", Kind.ID),
        Field("customer_id", Kind.ID),
        Field("reason", Kind.CHOICE, CANCELLATION_REASONS),
    ),
    "payment.processed": (
        Field("payment_id", Kind.ID),
        Field("order_id", Kind.ID),
        Field("amount", Kind.AMOUNT),
        Field("currency", Kind.CURRENCY),
        Field("method", Kind.CHOICE, PAYMENT_METHODS),
    ),
    "invoice.generated": (
        Field("invoice_id", Kind.ID),
        Field("order_id", Kind.ID),
        Field("customer_id", Kind.ID),
        Field("amount", Kind.AMOUNT),
        Field("currency", Kind.CURRENCY),
        Field("due_date", Kind.DATE),
    ),
    "subscription.activated": (
        Field("subscription_id", Kind.ID),
        Field("customer_id", Kind.ID),
        Field("plan", Kind.TEXT),
        Field("amount", Kind.AMOUNT),
        Field("currency", Kind.CURRENCY),
        Field("interval", Kind.CHOICE, BILLING_INTERVALS),
    ),
}

#: ISO 4217 codes of the circulating currencies (list one, 2025). Fund codes (BOV, CHE, CHW,
#: CLF, COU, MXV, USN, UYI, UYW), precious metals and units (XAU, XAG, XPD, XPT, XBA..XBD,
#: XDR, XSU, XUA) and the testing and no-currency codes (XTS, XXX) are left out: nothing is
#: paid in them. Add a code here when ISO adds one.
CURRENCIES: Final = frozenset(
    (
        "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
        "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
        "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
        "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
        "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
        "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
        "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
        "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
        "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
        "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
        "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
        "VED", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW",
        "ZWG",
    )
)  # fmt: skip

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


# --- one event ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """How events are judged: the time ``now`` they are checked at, the clock skew and event
    size the service allows (its defaults unless given), and what ``unknown_type`` is."""

    now: datetime
    max_clock_skew_seconds: int = Limits().max_clock_skew_seconds
    max_event_bytes: int = Limits().max_event_bytes
    unknown_types: str = WARNING

    def __post_init__(self) -> None:
        if self.now.utcoffset() is None:
            raise ValueError(f"Policy.now must be timezone-aware, got naive {self.now}")
        if self.max_clock_skew_seconds < 0:
            raise ValueError(
                f"the clock skew allowed is a number of seconds >= 0, "
                f"got {self.max_clock_skew_seconds}"
            )
        if self.unknown_types not in UNKNOWN_TYPE_SEVERITIES:
            raise ValueError(
                f"unknown types can be {', '.join(UNKNOWN_TYPE_SEVERITIES)}, "
                f"not {self.unknown_types!r}"
            )
        # the envelope's limits: raises ValueError naming the limit when one is not >= 1
        self.limits()

    def severity(self, rule: str) -> str | None:
        """The severity of ``rule`` under this policy; None when it is not reported."""
        if rule == UNKNOWN_TYPE:
            return None if self.unknown_types == "ignore" else self.unknown_types
        return RULES[rule].severity

    def limits(self) -> Limits:
        """The limits the envelope is parsed with: the service's event size; the clock skew
        is ``future_time``'s (against ``now``), so the parser's own check never fires."""
        return Limits(
            max_event_bytes=self.max_event_bytes,
            max_request_bytes=1 << 40,
            max_batch_events=1,
            max_clock_skew_seconds=1 << 40,
        )


@dataclass(frozen=True)
class Item:
    """One event as a source read it: its structured-mode JSON (``raw``), where it was read
    (a file's line, a record's topic, partition and offset), the tenant it belongs to (None:
    not known, as in a file) and a problem the source found before the event (a Kafka record
    without a tenant key)."""

    raw: bytes | None
    where: str
    tenant: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Violation:
    """A rule an event breaks, and how."""

    rule: str
    message: str


@dataclass(frozen=True)
class Checked:
    """An item after the checks of one event: the event when its envelope is valid, its id
    (read from the JSON when the envelope is not), and its violations, one per rule."""

    item: Item
    event: Event | None
    event_id: str | None
    violations: tuple[Violation, ...]


def check_item(item: Item, policy: Policy) -> Checked:
    """Every check of one event: the envelope first; the business rules only for an event
    the service would take (the others never reach the store)."""
    event, problem = parse_envelope(item, policy)
    if event is None:
        assert problem is not None
        return Checked(item, None, _loose_id(item.raw), (Violation(ENVELOPE, problem),))
    found: list[Violation] = []
    if event.type in EVENT_TYPES:
        found += check_data(event.type, event.data)
    else:
        found.append(
            Violation(UNKNOWN_TYPE, f"type {event.type!r} is not one of the study's event types")
        )
    if event.time is not None:
        late = check_time(event.time, policy.now, policy.max_clock_skew_seconds)
        if late is not None:
            found.append(late)
    reported = [v for v in found if policy.severity(v.rule) is not None]
    return Checked(item, event, event.id, merge_by_rule(reported))


def parse_envelope(item: Item, policy: Policy) -> tuple[Event | None, str | None]:
    """The event of ``item`` as the service parses it, or None and why the service refuses
    it (the parser's own words)."""
    if item.problem is not None:
        return None, item.problem
    if item.raw is None:
        return None, "there is no event: the source read nothing"
    try:
        [event] = parse_request(STRUCTURED_MEDIA_TYPE, {}, item.raw, policy.limits())
    except ApiError as error:
        return None, error.detail
    reserved = check_event_type(event.type)
    if reserved is not None:
        return None, reserved
    return event, None


def check_data(event_type: str, data: Any) -> list[Violation]:
    """The violations of the data of an event of ``event_type`` (one of :data:`EVENT_TYPES`);
    ``data`` is the decoded JSON, or :data:`~sluice.cloudevents.NO_DATA`."""
    fields = EVENT_TYPES[event_type]
    if data is NO_DATA:
        return [
            Violation(
                MISSING_FIELD,
                f"the event has no data; {event_type} needs {_names(fields)}",
            )
        ]
    if not isinstance(data, dict):
        return [
            Violation(
                WRONG_TYPE,
                f"data must be a JSON object with {_names(fields)}, got {json_type(data)}",
            )
        ]
    return _check_fields(fields, data, "data")


def check_time(time: datetime, now: datetime, max_clock_skew_seconds: int) -> Violation | None:
    """``future_time`` when ``time`` lies more than the allowed skew after ``now``."""
    ahead = (time - now).total_seconds()
    if ahead <= max_clock_skew_seconds:
        return None
    return Violation(
        FUTURE_TIME,
        f"time {_iso(time)} lies {ahead:.0f} s after the check ({_iso(now)}), more than the "
        f"{max_clock_skew_seconds} s of clock skew allowed",
    )


def merge_by_rule(violations: list[Violation]) -> tuple[Violation, ...]:
    """One violation per rule (messages joined), in the order of :data:`RULES`: an event
    counts once under each rule it breaks."""
    messages: dict[str, list[str]] = {}
    for violation in violations:
        messages.setdefault(violation.rule, []).append(violation.message)
    return tuple(Violation(rule, "; ".join(messages[rule])) for rule in RULES if rule in messages)


def _check_fields(fields: tuple[Field, ...], data: dict[str, Any], path: str) -> list[Violation]:
    found: list[Violation] = []
    missing = [f.name for f in fields if data.get(f.name) in (None, "", [])]
    if missing:
        listed = ", ".join(repr(name) for name in missing)
        found.append(Violation(MISSING_FIELD, f"{path} lacks {listed} (absent, null or empty)"))
    for required in fields:
        value = data.get(required.name)
        if value not in (None, "", []):
            found += _check_value(required, value, f"{path}.{required.name}")
    return found


def _check_value(required: Field, value: Any, path: str) -> list[Violation]:
    kind = required.kind
    if kind is Kind.AMOUNT:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return [_wrong(path, "a number", value)]
        if not math.isfinite(value) or value <= 0:
            return [Violation(NON_POSITIVE_AMOUNT, f"{path} is {value}; amounts must be > 0")]
        return []
    if kind is Kind.COUNT:
        if isinstance(value, bool) or not isinstance(value, int):
            return [_wrong(path, "a whole number", value)]
        if value < 1:
            return [Violation(INVALID_VALUE, f"{path} is {value}; it must be >= 1")]
        return []
    if kind is Kind.NAMES:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            return [_wrong(path, "an array of field names (strings)", value)]
        return []
    if kind is Kind.ITEMS:
        return _check_items(value, path)
    if not isinstance(value, str):
        return [_wrong(path, "a string", value)]
    if kind is Kind.CURRENCY and value not in CURRENCIES:
        hint = f" (did you mean {value.upper()!r}?)" if value.upper() in CURRENCIES else ""
        return [
            Violation(INVALID_CURRENCY, f"{path} {value!r} is not an ISO 4217 currency code{hint}")
        ]
    if kind is Kind.EMAIL and not _EMAIL.fullmatch(value):
        return [Violation(INVALID_VALUE, f"{path} {value!r} is not an e-mail address")]
    if kind is Kind.DATE and not _is_date(value):
        return [Violation(INVALID_VALUE, f"{path} {value!r} is not a date YYYY-MM-DD")]
    if kind is Kind.CHOICE and value not in required.choices:
        return [
            Violation(
                INVALID_VALUE,
                f"{path} {value!r} is not one of {', '.join(required.choices)}",
            )
        ]
    return []


def _check_items(value: Any, path: str) -> list[Violation]:
    if not isinstance(value, list):
        return [_wrong(path, "an array of items", value)]
    found: list[Violation] = []
    for index, line in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(line, dict):
            found.append(_wrong(where, "an object (sku, quantity, unit_price)", line))
        else:
            found += _check_fields(ITEM_FIELDS, line, where)
    return found


def _wrong(path: str, expected: str, value: Any) -> Violation:
    shown = ""
    if isinstance(value, str | int | float):
        text = repr(value)
        shown = f" ({text if len(text) <= 40 else text[:37] + '...'})"
    return Violation(WRONG_TYPE, f"{path} must be {expected}, got {json_type(value)}{shown}")


def _is_date(value: str) -> bool:
    if not _DATE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _loose_id(raw: bytes | None) -> str | None:
    """The ``id`` of an event the service refuses, when its JSON still has one (for the
    report's examples; nothing else is read from it)."""
    if raw is None:
        return None
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    event_id = document.get("id") if isinstance(document, dict) else None
    return event_id if isinstance(event_id, str) and event_id else None


def _names(fields: tuple[Field, ...]) -> str:
    return ", ".join(f.name for f in fields)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
