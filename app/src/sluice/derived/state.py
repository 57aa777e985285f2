"""Event sourcing: a subject's state as of a time, folded from its history.

A subject's history is its events in (time, id) order
(:meth:`sluice.storage.store.EventStore.subject_history`); its state as of a time is
:func:`fold_subject_state` over that history, which counts an event at exactly ``as_of`` (the
state *at* that instant includes what happened at it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sluice.cloudevents import NO_DATA
from sluice.storage.reads import StoredEvent


@dataclass(frozen=True)
class SubjectState:
    """A subject's state as of a time: the folded state, how many events were folded (0: the
    subject had no events by then), and the id and time of the last of them."""

    state: Any
    events: int
    last_event_id: str | None
    updated: datetime | None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: ``patch`` applied to ``target``, neither modified.

    An object patch sets its members recursively and removes those it sets to null; any other
    patch (array, string, number, true/false, null) replaces the target whole. Iterative,
    so a deeply nested payload cannot exhaust Python's recursion limit. Parts of the result
    that no patch touched are shared with the inputs: treat it as read-only.
    """
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    pending = [(result, patch)]
    while pending:
        node, changes = pending.pop()
        for name, value in changes.items():
            if value is None:
                node.pop(name, None)
            elif isinstance(value, dict):
                child = node.get(name)
                node[name] = child = dict(child) if isinstance(child, dict) else {}
                pending.append((child, value))
            else:
                node[name] = value
    return result


def fold_subject_state(
    events: Iterable[StoredEvent], as_of: datetime | None, state: Any = None
) -> Any:
    """The state of a subject as of ``as_of`` (time travel): ``state`` (None: nothing yet)
    merge-patched (RFC 7386, :func:`merge_patch`) with each event's JSON ``data`` in (time, id)
    order, up to and including ``as_of`` (None: all of them).

    Events are patches, so an event carries only what changed: ``{"status": "shipped"}``
    updates one member, ``{"coupon": null}`` removes one, a non-object payload replaces the
    state whole (``null`` clears it). Events without JSON data (none, or a binary
    ``data_base64`` payload) change nothing. Events at the same instant apply in id order, so a
    producer that needs an order within one instant gives them distinct times. ``events``
    must be in ascending (time, id) order, as
    :meth:`~sluice.storage.store.EventStore.subject_history` returns them; later ones than
    ``as_of`` are skipped. Passing the result back as ``state`` with the next page of events
    folds a long history page by page.
    """
    if as_of is not None and as_of.utcoffset() is None:
        raise ValueError(f"as_of must be timezone-aware, got naive {as_of}")
    previous: tuple[datetime, str] | None = None
    for stored in events:
        position = stored.position
        if previous is not None and position < previous:
            raise ValueError(
                f"events must be in ascending (time, id) order: {position} came after {previous}"
            )
        previous = position
        if (as_of is not None and position[0] > as_of) or stored.event.data is NO_DATA:
            continue
        state = merge_patch(state, stored.event.data)
    return state
