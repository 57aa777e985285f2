"""The study's event mix: realistic CloudEvents of about 500 bytes for a load generator, and the
events :mod:`sluice.quality.rules` must score 100 %.

:func:`make_event` builds one event of a type as the JSON a producer sends in structured mode
(``application/cloudevents+json``); :func:`pick_kind` draws a type with the weights of
:data:`MIX`. Both are pure: everything random comes from the ``rng`` passed in, so a seed gives
the same events. The field names, choices and currencies are those of the rule table
(:data:`~sluice.quality.rules.EVENT_TYPES`), so the generator and the validator cannot drift.
"""

from __future__ import annotations

import random
import string
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, TypeAlias

from sluice.cloudevents import SPECVERSION
from sluice.quality.rules import (
    BILLING_INTERVALS,
    CANCELLATION_REASONS,
    PAYMENT_METHODS,
)
from sluice.tenants import validate_tenant

#: The share of each type in the study's traffic.
MIX: Final[Mapping[str, float]] = {
    "customer.created": 0.10,
    "customer.updated": 0.20,
    "order.placed": 0.30,
    "order.cancelled": 0.05,
    "payment.processed": 0.20,
    "invoice.generated": 0.10,
    "subscription.activated": 0.05,
}

#: How far before ``now`` an event's time lies: producers send what just happened.
MAX_AGE_MS: Final = 5000

#: (country, currency, locale, cities): where the study's customers live.
_MARKETS: Final = (
    ("DE", "EUR", "de-DE", ("Berlin", "Hamburg", "München", "Köln", "Leipzig")),
    ("FR", "EUR", "fr-FR", ("Paris", "Lyon", "Marseille", "Toulouse", "Nantes")),
    ("NL", "EUR", "nl-NL", ("Amsterdam", "Rotterdam", "Utrecht", "Eindhoven")),
    ("ES", "EUR", "es-ES", ("Madrid", "Barcelona", "Valencia", "Sevilla")),
    ("IT", "EUR", "it-IT", ("Milano", "Roma", "Torino", "Bologna")),
    ("GB", "GBP", "en-GB", ("London", "Manchester", "Leeds", "Bristol")),
    ("US", "USD", "en-US", ("New York", "Chicago", "Austin", "Seattle")),
    ("CH", "CHF", "de-CH", ("Zürich", "Basel", "Bern", "Genève")),
    ("SE", "SEK", "sv-SE", ("Stockholm", "Göteborg", "Malmö")),
    ("PL", "PLN", "pl-PL", ("Warszawa", "Kraków", "Wrocław", "Gdańsk")),
)
_MARKET_WEIGHTS: Final = (24, 14, 8, 8, 8, 12, 12, 5, 4, 5)
_FIRST_NAMES: Final = (
    "Anna", "Ben", "Chloé", "David", "Elif", "Farid", "Greta", "Hugo", "Inês", "Jonas",
    "Kenji", "Lena", "Mateo", "Nora", "Olga", "Pavel", "Quinn", "Rosa", "Sven", "Tara",
)  # fmt: skip
_LAST_NAMES: Final = (
    "Müller", "Schmidt", "García", "Rossi", "Dubois", "Nowak", "Jensen", "Silva",
    "Kowalski", "Novák", "Fischer", "Martin", "Bianchi", "Andersson", "Costa", "Walsh",
)  # fmt: skip
_STREETS: Final = (
    "Hauptstraße", "Rue de la Paix", "Kerkstraat", "Calle Mayor", "Via Roma", "High Street",
    "Main Street", "Bahnhofstrasse", "Storgatan", "ulica Długa",
)  # fmt: skip
#: (sku, unit price in cents): the shop's catalogue.
_CATALOGUE: Final = (
    ("SKU-10017", 12995),
    ("SKU-10342", 6950),
    ("SKU-11008", 2490),
    ("SKU-12551", 18900),
    ("SKU-13020", 3999),
    ("SKU-14477", 1899),
    ("SKU-15103", 8450),
    ("SKU-16290", 7495),
)
_PLANS: Final = (("starter", 900), ("team", 2900), ("business", 9900))
_SEGMENTS: Final = ("consumer", "small_business", "enterprise")
_CHANNELS: Final = ("web", "ios", "android", "store")
_SHIPPING: Final = (("standard", 495), ("express", 1290), ("pickup", 0))
_CARD_BRANDS: Final = ("visa", "mastercard", "amex")
_ID_ALPHABET: Final = string.ascii_lowercase + string.digits

_Built: TypeAlias = tuple[str, str, dict[str, Any]]
"""What a type's builder returns: the producing service, the subject, the data."""


def pick_kind(rng: random.Random) -> str:
    """A type drawn with the weights of :data:`MIX`."""
    return rng.choices(_KINDS, weights=_WEIGHTS)[0]


def make_event(kind: str, tenant: str, rng: random.Random, now: datetime) -> dict[str, Any]:
    """One event of type ``kind`` for ``tenant`` as structured-mode JSON, its time up to
    :data:`MAX_AGE_MS` before ``now`` (timezone-aware). ValueError for a type outside
    :data:`MIX`, an invalid tenant name or a naive ``now``."""
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise ValueError(f"no generator for type {kind!r}: the study's mix is {', '.join(MIX)}")
    validate_tenant(tenant)
    if now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got naive {now}")
    service, subject, data = builder(rng, now.astimezone(UTC))
    time = now - timedelta(milliseconds=rng.randrange(MAX_AGE_MS))
    trace = f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01"
    return {
        "specversion": SPECVERSION,
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "source": f"/{tenant}/{service}",
        "type": kind,
        "subject": subject,
        "time": _rfc3339(time),
        "datacontenttype": "application/json",
        "traceparent": trace,
        "data": data,
    }


# --- one builder per type -----------------------------------------------------------------------


def _customer_created(rng: random.Random, now: datetime) -> _Built:
    customer_id = _customer_id(rng)
    country, _currency, locale, cities = _market(rng)
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    data = {
        "customer_id": customer_id,
        "email": _email(first, last, rng),
        "name": f"{first} {last}",
        "country": country,
        "locale": locale,
        "segment": rng.choice(_SEGMENTS),
        "marketing_opt_in": rng.random() < 0.4,
        "address": _address(rng, country, cities),
    }
    return "crm", f"customers/{customer_id}", data


def _customer_updated(rng: random.Random, now: datetime) -> _Built:
    customer_id = _customer_id(rng)
    country, _currency, _locale, cities = _market(rng)
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    values: dict[str, Any] = {
        "email": _email(first, last, rng),
        "address": _address(rng, country, cities),
        "phone": f"+{rng.randrange(30, 50)} {rng.randrange(100, 999)} {rng.randrange(10**7):07d}",
        "segment": rng.choice(_SEGMENTS),
        "marketing_opt_in": rng.random() < 0.5,
    }
    changed = sorted(rng.sample(list(values), rng.choice((1, 1, 2))))
    data = {
        "customer_id": customer_id,
        "changed_fields": changed,
        **{name: values[name] for name in changed},
        "updated_by": rng.choice(("customer", "support", "system")),
        "version": rng.randrange(2, 40),
    }
    return "crm", f"customers/{customer_id}", data


def _order_placed(rng: random.Random, now: datetime) -> _Built:
    order_id = _id("ord", rng)
    country, currency, _locale, _cities = _market(rng)
    items = []
    for sku, price in rng.sample(_CATALOGUE, rng.choice((1, 1, 2, 2, 3))):
        items.append({"sku": sku, "quantity": rng.choice((1, 1, 1, 2)), "unit_price": price})
    method, shipping = rng.choice(_SHIPPING)
    cents = sum(item["quantity"] * item["unit_price"] for item in items) + shipping
    for item in items:
        item["unit_price"] = _money(item["unit_price"])
    data = {
        "order_id": order_id,
        "customer_id": _customer_id(rng),
        "amount": _money(cents),
        "currency": currency,
        "items": items,
        "channel": rng.choice(_CHANNELS),
        "shipping": {"method": method, "country": country, "cost": _money(shipping)},
    }
    return "shop", f"orders/{order_id}", data


def _order_cancelled(rng: random.Random, now: datetime) -> _Built:
    order_id = _id("ord", rng)
    _country, currency, _locale, _cities = _market(rng)
    placed = now - timedelta(minutes=rng.randrange(5, 4 * 24 * 60))
    data = {
        "order_id": order_id,
        "customer_id": _customer_id(rng),
        "reason": rng.choice(CANCELLATION_REASONS),
        "cancelled_by": rng.choice(("customer", "merchant", "system")),
        "placed_at": _rfc3339(placed),
        "refund": {
            "amount": _money(rng.randrange(1500, 40000)),
            "currency": currency,
            "status": rng.choice(("pending", "issued")),
        },
        "note": rng.choice(("", "Customer ordered the wrong size", "Duplicate checkout")),
    }
    return "shop", f"orders/{order_id}", data


def _payment_processed(rng: random.Random, now: datetime) -> _Built:
    payment_id = _id("pay", rng)
    _country, currency, _locale, _cities = _market(rng)
    method = rng.choices(PAYMENT_METHODS, weights=(55, 15, 15, 5, 10))[0]
    cents = rng.randrange(990, 45000)
    data: dict[str, Any] = {
        "payment_id": payment_id,
        "order_id": _id("ord", rng),
        "amount": _money(cents),
        "currency": currency,
        "method": method,
        "status": "captured",
        "provider": rng.choice(("adyen", "stripe", "mollie")),
        "provider_reference": _token(rng, 24).upper(),
        "fee": _money(max(1, cents * 14 // 1000 + 25)),
    }
    if method == "card":
        data["card"] = {
            "brand": rng.choice(_CARD_BRANDS),
            "last4": f"{rng.randrange(10_000):04d}",
            "three_d_secure": rng.random() < 0.9,
        }
    return "payments", f"payments/{payment_id}", data


def _invoice_generated(rng: random.Random, now: datetime) -> _Built:
    invoice_id = _id("inv", rng)
    _country, currency, _locale, _cities = _market(rng)
    net = rng.randrange(1000, 60000)
    rate = rng.choice((7, 19, 20, 21))
    tax = net * rate // 100
    terms = rng.choice((14, 30))
    data = {
        "invoice_id": invoice_id,
        "number": f"INV-{now.year}-{rng.randrange(10**6):06d}",
        "order_id": _id("ord", rng),
        "customer_id": _customer_id(rng),
        "amount": _money(net + tax),
        "tax_amount": _money(tax),
        "tax_rate": rate,
        "currency": currency,
        "issue_date": _date(now.date()),
        "due_date": _date(now.date() + timedelta(days=terms)),
    }
    return "billing", f"invoices/{invoice_id}", data


def _subscription_activated(rng: random.Random, now: datetime) -> _Built:
    subscription_id = _id("sub", rng)
    _country, currency, _locale, _cities = _market(rng)
    plan, monthly = rng.choice(_PLANS)
    interval = rng.choices(BILLING_INTERVALS, weights=(70, 30))[0]
    seats = rng.choice((1, 1, 3, 5, 10))
    cents = monthly * seats * (10 if interval == "year" else 1)
    start = now.date()
    end = start + timedelta(days=365 if interval == "year" else 30)
    data = {
        "subscription_id": subscription_id,
        "customer_id": _customer_id(rng),
        "plan": plan,
        "amount": _money(cents),
        "currency": currency,
        "interval": interval,
        "seats": seats,
        "trial_days": rng.choice((0, 0, 14)),
        "current_period_end": _date(end),
    }
    return "billing", f"subscriptions/{subscription_id}", data


_BUILDERS: Final[Mapping[str, Callable[[random.Random, datetime], _Built]]] = {
    "customer.created": _customer_created,
    "customer.updated": _customer_updated,
    "order.placed": _order_placed,
    "order.cancelled": _order_cancelled,
    "payment.processed": _payment_processed,
    "invoice.generated": _invoice_generated,
    "subscription.activated": _subscription_activated,
}
_KINDS: Final = tuple(MIX)
_WEIGHTS: Final = tuple(MIX.values())


# --- values -------------------------------------------------------------------------------------


def _market(rng: random.Random) -> tuple[str, str, str, tuple[str, ...]]:
    return rng.choices(_MARKETS, weights=_MARKET_WEIGHTS)[0]


def _customer_id(rng: random.Random) -> str:
    """One of a million customers: ids recur across events, as a shop's customers do."""
    return f"cus_{rng.randrange(10**6):06d}"


def _id(prefix: str, rng: random.Random) -> str:
    return f"{prefix}_{_token(rng, 16)}"


def _token(rng: random.Random, length: int) -> str:
    return "".join(rng.choices(_ID_ALPHABET, k=length))


def _email(first: str, last: str, rng: random.Random) -> str:
    return f"{_ascii(first)}.{_ascii(last)}{rng.randrange(100)}@example.com"


def _ascii(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if c.isascii()).lower()


def _address(rng: random.Random, country: str, cities: tuple[str, ...]) -> dict[str, str]:
    return {
        "line1": f"{rng.choice(_STREETS)} {rng.randrange(1, 180)}",
        "city": rng.choice(cities),
        "postal_code": f"{rng.randrange(10_000, 99_999)}",
        "country": country,
    }


def _money(cents: int) -> float:
    """An amount in the currency's major unit (two decimals, as every currency of the mix)."""
    return cents / 100


def _date(day: date) -> str:
    return day.isoformat()


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
