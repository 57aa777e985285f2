"""Enrichment: where the customer id is read, what ``events.enriched`` carries, and how the
customer cache bounds both its size and the staleness of what it serves."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from datetime import date
from typing import Any

import pytest

from sluice.cloudevents import Event
from sluice.derived.enrich import MISSING, EnrichConfig, Enricher, TtlCache, customer_id


class ReferenceTable:
    """Customers by tenant, and a log of every lookup, as the PostgreSQL lookup would see."""

    def __init__(self, customers: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
        self.customers = customers
        self.calls: list[tuple[str, list[str]]] = []
        self.failing = False

    def __call__(self, tenant: str, ids: Collection[str]) -> Mapping[str, Mapping[str, Any]]:
        self.calls.append((tenant, sorted(ids)))
        if self.failing:
            raise ConnectionError("reference table unreachable")
        known = self.customers.get(tenant, {})
        return {identifier: known[identifier] for identifier in ids if identifier in known}


TABLE = {
    "acme": {"c-1": {"name": "Ada"}, "c-2": {"name": "Grace"}},
    "globex": {"c-1": {"name": "Hank"}},
}


def event(number: int = 1, **attributes: Any) -> Event:
    data = attributes.pop("data", None)
    return Event(
        id=f"e-{number}",
        source="/orders",
        type="order.created",
        data={} if data is None else data,
        extensions=attributes,
    )


def test_the_customer_id_is_read_from_the_extension_first_then_the_data() -> None:
    fields = EnrichConfig().id_fields

    assert customer_id(event(customerid="c-1", data={"customer_id": "c-9"}), fields) == "c-1"
    assert customer_id(event(data={"customer_id": "c-9"}), fields) == "c-9"
    assert customer_id(event(data={"customer_id": 42}), fields) == "42"
    assert customer_id(event(customerid=""), fields) is None
    assert customer_id(event(customerid=True), fields) is None
    assert customer_id(event(data={"customer_id": {"id": 1}}), fields) is None
    assert customer_id(event(data=[1, 2]), fields) is None
    assert customer_id(event(), fields) is None


def test_the_customer_id_fields_are_configurable() -> None:
    subject_event = Event(id="e", source="/s", type="t", subject="c-7", data={"a": {"b": "c-8"}})

    assert customer_id(subject_event, ("subject",)) == "c-7"
    assert customer_id(subject_event, ("data.a.b",)) == "c-8"
    assert customer_id(subject_event, ("data.a.missing", "subject")) == "c-7"


@pytest.mark.parametrize(
    "settings",
    [
        {"id_fields": ()},
        {"id_fields": ("customer.id",)},
        {"id_fields": ("data.",)},
        {"output_field": "data"},
        {"output_field": "id"},
        {"output_field": ""},
    ],
)
def test_invalid_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="EnrichConfig"):
        EnrichConfig(**settings)


def test_the_enriched_value_is_the_event_plus_its_customer() -> None:
    enricher = Enricher(ReferenceTable(TABLE))
    source = event(customerid="c-1", data={"total": 3})

    [value] = enricher.enrich([("acme", source)], now=0.0)

    assert json.loads(value) == json.loads(source.to_json_bytes()) | {"customer": {"name": "Ada"}}


def test_an_event_without_a_known_customer_gets_null() -> None:
    enricher = Enricher(ReferenceTable(TABLE))

    values = enricher.enrich([("acme", event(1)), ("acme", event(2, customerid="c-404"))], now=0.0)

    assert [json.loads(value)["customer"] for value in values] == [None, None]
    assert [json.loads(value)["id"] for value in values] == ["e-1", "e-2"]


def test_customers_belong_to_their_tenant() -> None:
    enricher = Enricher(ReferenceTable(TABLE))

    values = enricher.enrich(
        [("acme", event(1, customerid="c-1")), ("globex", event(2, customerid="c-1"))], now=0.0
    )

    assert [json.loads(value)["customer"]["name"] for value in values] == ["Ada", "Hank"]


def test_one_lookup_per_tenant_per_batch_then_the_cache_answers() -> None:
    table = ReferenceTable(TABLE)
    enricher = Enricher(table)
    batch = [
        ("acme", event(1, customerid="c-1")),
        ("acme", event(2, customerid="c-2")),
        ("acme", event(3, customerid="c-1")),
        ("globex", event(4, customerid="c-1")),
        ("acme", event(5, customerid="c-404")),
    ]

    first = enricher.enrich(batch, now=0.0)
    second = enricher.enrich(batch, now=10.0)

    assert table.calls == [("acme", ["c-1", "c-2", "c-404"]), ("globex", ["c-1"])]
    assert first == second


def test_after_the_ttl_the_customer_is_looked_up_again() -> None:
    table = ReferenceTable(TABLE)
    enricher = Enricher(table, EnrichConfig(cache_ttl_seconds=60))
    batch = [("acme", event(1, customerid="c-404"))]

    enricher.enrich(batch, now=0.0)
    enricher.enrich(batch, now=59.9)
    table.customers = {"acme": {"c-404": {"name": "Late"}}}
    [value] = enricher.enrich(batch, now=60.0)

    assert len(table.calls) == 2
    assert json.loads(value)["customer"] == {"name": "Late"}


def test_a_failed_lookup_propagates_and_caches_nothing() -> None:
    table = ReferenceTable(TABLE)
    enricher = Enricher(table)
    table.failing = True

    with pytest.raises(ConnectionError):
        enricher.enrich([("acme", event(1, customerid="c-1"))], now=0.0)
    table.failing = False
    [value] = enricher.enrich([("acme", event(1, customerid="c-1"))], now=1.0)

    assert json.loads(value)["customer"] == {"name": "Ada"}
    assert len(enricher.cache) == 1


def test_a_customer_attribute_of_the_event_is_replaced_in_the_enriched_copy() -> None:
    enricher = Enricher(ReferenceTable(TABLE))
    source = event(customerid="c-1", customer="client-set")

    [value] = enricher.enrich([("acme", source)], now=0.0)

    document = json.loads(value)
    assert document["customer"] == {"name": "Ada"}
    assert document["customerid"] == "c-1"
    assert source.extensions["customer"] == "client-set"


def test_the_output_member_can_be_renamed() -> None:
    enricher = Enricher(ReferenceTable(TABLE), EnrichConfig(output_field="crm"))

    [value] = enricher.enrich([("acme", event(customerid="c-2", customer="kept"))], now=0.0)

    document = json.loads(value)
    assert (document["crm"], document["customer"]) == ({"name": "Grace"}, "kept")


def test_reference_values_that_are_not_json_are_written_as_strings() -> None:
    table = ReferenceTable({"acme": {"c-1": {"since": date(2020, 1, 31)}}})

    [value] = Enricher(table).enrich([("acme", event(customerid="c-1"))], now=0.0)

    assert json.loads(value)["customer"] == {"since": "2020-01-31"}


def test_the_cache_serves_an_entry_until_its_ttl() -> None:
    cache: TtlCache[str, int | None] = TtlCache(max_entries=10, ttl_seconds=30)
    cache.put("a", 1, now=100.0)
    cache.put("none", None, now=100.0)

    assert cache.get("a", now=129.9) == 1
    assert cache.get("none", now=129.9) is None
    assert cache.get("a", now=130.0) is MISSING
    assert cache.get("never", now=100.0) is MISSING
    assert len(cache) == 1  # the expired entry was dropped when read


def test_reading_an_entry_does_not_extend_its_life() -> None:
    cache: TtlCache[str, int] = TtlCache(max_entries=10, ttl_seconds=30)
    cache.put("a", 1, now=0.0)

    for now in range(0, 30, 5):
        assert cache.get("a", now=float(now)) == 1
    assert cache.get("a", now=30.0) is MISSING


def test_the_cache_evicts_the_least_recently_used_beyond_its_size() -> None:
    cache: TtlCache[str, int] = TtlCache(max_entries=3, ttl_seconds=100)
    for number, key in enumerate("abc"):
        cache.put(key, number, now=0.0)

    assert cache.get("a", now=1.0) == 0  # "a" is now the most recently used
    cache.put("d", 3, now=2.0)

    assert len(cache) == 3
    assert cache.get("b", now=3.0) is MISSING
    assert [cache.get(key, now=3.0) for key in "acd"] == [0, 2, 3]


@pytest.mark.parametrize(("size", "ttl"), [(0, 1.0), (True, 1.0), (1, 0.0)])
def test_cache_bounds_must_be_positive(size: int, ttl: float) -> None:
    with pytest.raises(ValueError, match="cache"):
        TtlCache(max_entries=size, ttl_seconds=ttl)
