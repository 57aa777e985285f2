"""Enrichment: events joined with their customer's reference data, for ``events.enriched``.

Each event names its customer in an attribute; :class:`Enricher` looks the customers of a batch
up in one call per tenant (the processor passes a lookup over PostgreSQL's customer reference
table), keeps the answers in a bounded :class:`TtlCache`, and answers each event's
``events.enriched`` value: the event's CloudEvents JSON with one more member, ``customer``, the
customer's record as an object, or ``null`` when the event names no customer or the reference
table does not know it. Every event gets a value, so ``events.enriched`` is the whole stream.

Where the customer id is read (:attr:`EnrichConfig.id_fields`, first match wins):

- a plain name reads that attribute: an extension attribute such as the default ``customerid``,
  or a context attribute (``subject``, ``source``...);
- ``data.<name>[.<name>...]`` reads a member of the event's JSON ``data``, as the default
  ``data.customer_id`` does.

A string or an integer is an id; anything else (absent, empty, an object) is no id.

The cache is keyed by (tenant, customer id): customers belong to a tenant, and two tenants may
use the same ids. It also remembers that an id was *not* found, so a stream of events naming an
unknown customer costs one lookup per TTL rather than one per batch. The TTL bounds how stale
an enriched record may be after the reference table changes. Time is passed in, never read.

The output member replaces an attribute of the same name in the enriched copy (the original
event is unchanged in ``events.raw`` and PostgreSQL); :attr:`EnrichConfig.output_field` picks
another name when clients use ``customer`` themselves.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeAlias, TypeVar

from sluice.cloudevents import NO_DATA, Event

#: Answers the customers of ``tenant`` among ``customer_ids``, by id; ids it does not know are
#: absent from the answer. Called once per tenant per batch, with only the ids not cached.
CustomerLookup: TypeAlias = Callable[[str, Collection[str]], Mapping[str, Mapping[str, Any]]]

_CONTEXT_ATTRIBUTES: Final = frozenset(
    {"id", "source", "type", "specversion", "subject", "time", "datacontenttype", "dataschema"}
)
_RESERVED_OUTPUT: Final = _CONTEXT_ATTRIBUTES | {"data", "data_base64"}

_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


class _Missing:
    """The type of :data:`MISSING`."""

    def __repr__(self) -> str:
        return "MISSING"


#: What :meth:`TtlCache.get` answers for a key it does not hold (or holds expired); distinct
#: from a cached ``None``, which is a remembered "not found".
MISSING: Final = _Missing()


class TtlCache(Generic[_Key, _Value]):
    """A least-recently-used cache of at most ``max_entries``, each entry valid for
    ``ttl_seconds`` after it was stored (reading it does not extend that). ``now`` is any
    monotonic clock in seconds, passed in by the caller."""

    def __init__(self, max_entries: int, ttl_seconds: float) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"cache max_entries must be a whole number >= 1, got {max_entries!r}")
        if not ttl_seconds > 0:
            raise ValueError(f"cache ttl_seconds must be > 0, got {ttl_seconds!r}")
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._entries: OrderedDict[_Key, tuple[float, _Value]] = OrderedDict()

    def __len__(self) -> int:
        """Entries held, expired ones included until they are read or pushed out."""
        return len(self._entries)

    def get(self, key: _Key, now: float) -> _Value | _Missing:
        """The value stored for ``key`` if it has not expired at ``now``, else :data:`MISSING`
        (and the expired entry is dropped). A hit makes the entry the most recently used."""
        entry = self._entries.get(key)
        if entry is None:
            return MISSING
        expires, value = entry
        if now >= expires:
            del self._entries[key]
            return MISSING
        self._entries.move_to_end(key)
        return value

    def put(self, key: _Key, value: _Value, now: float) -> None:
        """Store ``value`` for ``key`` until ``now + ttl_seconds``, evicting the least recently
        used entries beyond ``max_entries``."""
        self._entries[key] = (now + self.ttl_seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


@dataclass(frozen=True)
class EnrichConfig:
    """Where the customer id is read, what the output member is called, and the cache's
    bounds."""

    id_fields: tuple[str, ...] = ("customerid", "data.customer_id")
    output_field: str = "customer"
    cache_ttl_seconds: float = 300.0
    cache_max_entries: int = 100_000

    def __post_init__(self) -> None:
        if not self.id_fields:
            raise ValueError(
                "EnrichConfig.id_fields is empty: name at least one attribute or data.<path> "
                "that holds the customer id"
            )
        for name in self.id_fields:
            path = name.split(".")
            if not all(path) or (len(path) > 1 and path[0] != "data"):
                raise ValueError(
                    f"EnrichConfig.id_fields entry {name!r} is neither an attribute name "
                    "(customerid) nor a path into the data (data.customer_id)"
                )
        if not self.output_field or self.output_field in _RESERVED_OUTPUT:
            raise ValueError(
                f"EnrichConfig.output_field {self.output_field!r} would replace a CloudEvents "
                f"attribute or the data; pick a name outside {sorted(_RESERVED_OUTPUT)}"
            )


def customer_id(event: Event, id_fields: Sequence[str]) -> str | None:
    """The customer id ``event`` names in the first of ``id_fields`` that holds one."""
    for name in id_fields:
        value = _read(event, name)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str) and value:
            return value
    return None


def _read(event: Event, name: str) -> object:
    _, _, rest = name.partition(".")
    if not rest:
        if name in _CONTEXT_ATTRIBUTES:
            return getattr(event, name)
        return event.extensions.get(name)
    value: object = event.data
    if value is NO_DATA:
        return None
    for member in rest.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(member)
    return value


class Enricher:
    """Events to their ``events.enriched`` values, with customers cached across batches."""

    def __init__(self, lookup: CustomerLookup, config: EnrichConfig | None = None) -> None:
        self.config = config or EnrichConfig()
        self._lookup = lookup
        self.cache: TtlCache[tuple[str, str], Mapping[str, Any] | None] = TtlCache(
            self.config.cache_max_entries, self.config.cache_ttl_seconds
        )

    def enrich(self, events: Sequence[tuple[str, Event]], now: float) -> list[bytes]:
        """The ``events.enriched`` value of each (tenant, event), in order.

        Customers not in the cache are looked up, one call per tenant with all of that
        tenant's missing ids; a lookup that raises propagates (nothing is cached from it), so
        the caller may retry the batch.
        """
        ids = [customer_id(event, self.config.id_fields) for _, event in events]
        found: dict[tuple[str, str], Mapping[str, Any] | None] = {}
        missing: dict[str, set[str]] = {}
        for (tenant, _), identifier in zip(events, ids, strict=True):
            if identifier is None or (tenant, identifier) in found:
                continue
            cached = self.cache.get((tenant, identifier), now)
            if isinstance(cached, _Missing):
                missing.setdefault(tenant, set()).add(identifier)
            else:
                found[tenant, identifier] = cached
        for tenant, wanted in sorted(missing.items()):
            answer = self._lookup(tenant, sorted(wanted))
            for identifier in sorted(wanted):
                customer = answer.get(identifier)
                found[tenant, identifier] = customer
                self.cache.put((tenant, identifier), customer, now)
        return [
            self._document(event, None if identifier is None else found[tenant, identifier])
            for (tenant, event), identifier in zip(events, ids, strict=True)
        ]

    def _document(self, event: Event, customer: Mapping[str, Any] | None) -> bytes:
        field = self.config.output_field
        # Reference rows may hold dates or decimals: written as strings rather than failing.
        value = json.dumps(
            customer, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str
        ).encode("utf-8")
        event_json = event.to_json_bytes()
        if field not in event.extensions:
            # The event's JSON is an object without this member: splice it in before the final
            # brace rather than decoding and re-encoding the whole event.
            member = json.dumps(field, ensure_ascii=False).encode("utf-8")
            return event_json[:-1] + b"," + member + b":" + value + b"}"
        document = json.loads(event_json)
        document[field] = json.loads(value)
        return json.dumps(
            document, ensure_ascii=False, sort_keys=True, separators=(",", ":")
        ).encode("utf-8")
