"""CloudEvents 1.0 over HTTP: from a request to validated events, as pure functions.

:func:`parse_request` reads the three content modes of the CloudEvents HTTP protocol binding
and returns :class:`Event` values that are safe to produce to Kafka, or raises an
:class:`~sluice.errors.ApiError` (4xx) that names what was wrong. Bad input never reaches Kafka,
so the spec's rules for attributes (presence, types, names, values) are checked here, once,
before the API acknowledges anything. ``source`` (a URI-reference) and ``datacontenttype`` (a
media type) are only checked as non-empty Strings: Sluice does not interpret either, and
parsing them would refuse events that common producers send.

The modes:

- structured mode, ``application/cloudevents+json``: the body is one event in the JSON format;
- batch mode, ``application/cloudevents-batch+json``: a JSON array of such events, accepted or
  rejected as a whole (a client retrying a rejected batch must not duplicate half of it);
- binary mode, any other Content-Type with a ``ce-specversion`` header: attributes in ``ce-*``
  headers, the body is the data and the Content-Type its ``datacontenttype``.

Tenancy is not part of an event: the tenant comes from the request's credential. An event that
carries an extension attribute named ``tenant`` or ``tenantid`` keeps it as an ordinary,
untrusted extension; nothing in Sluice reads a tenant from it.
"""

from __future__ import annotations

import base64
import enum
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta, timezone
from functools import cached_property
from typing import Any, Final, NoReturn, TypeAlias
from urllib.parse import unquote_to_bytes

from sluice.errors import BadRequest, TooLarge, UnsupportedMediaType

SPECVERSION: Final = "1.0"
STRUCTURED_MEDIA_TYPE: Final = "application/cloudevents+json"
BATCH_MEDIA_TYPE: Final = "application/cloudevents-batch+json"

#: What a client is told to send instead when its request is in none of the three modes.
_ACCEPTED = (
    f"send {STRUCTURED_MEDIA_TYPE} (one event), {BATCH_MEDIA_TYPE} (a JSON array of events), "
    "or the event's data with ce-specversion, ce-id, ce-source and ce-type headers (binary mode)"
)

#: The spec's limit on extension attribute names ("SHOULD NOT exceed 20"); Sluice enforces it
#: so that every name it stores fits any protocol binding it may be forwarded through.
MAX_ATTRIBUTE_NAME_LENGTH: Final = 20
_ATTRIBUTE_NAME = re.compile(r"[a-z0-9]+")

_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1

#: Characters the CloudEvents type system forbids in a String: control characters, unpaired
#: surrogates (JSON's \udead) and Unicode noncharacters.
_FORBIDDEN_CHARACTERS = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
    + "".join(chr(plane | 0xFFFE) + chr(plane | 0xFFFF) for plane in range(0, 0x110000, 0x10000))
    + "]"
)

_RFC3339 = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})[Tt]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]+))?"
    r"(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
_TIME_EXAMPLE = "2024-05-01T12:00:00Z"

#: An absolute URI (RFC 3986 section 4.3): a scheme, a colon, then no whitespace.
_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S*")

ExtensionValue: TypeAlias = str | int | bool


class _Absent(enum.Enum):
    NO_DATA = "NO_DATA"


#: ``Event.data`` of an event without JSON data. It is not ``None``: ``None`` is an explicit
#: JSON ``null`` payload, which the JSON format keeps distinct from no payload at all.
NO_DATA: Final = _Absent.NO_DATA


@dataclass(frozen=True)
class Limits:
    """Size limits, checked before anything reaches Kafka.

    An event is measured as its canonical JSON (:meth:`Event.to_json_bytes`), which is what Kafka
    stores, so binary-mode data counts at its base64 size.
    """

    max_event_bytes: int = 256 * 1024
    max_request_bytes: int = 5 * 1024 * 1024
    max_batch_events: int = 1000
    #: How far in the future an event's ``time`` may lie (senders' clocks run ahead a little).
    #: Further is refused: the row would land beyond the time partitions made ahead.
    max_clock_skew_seconds: int = 3600

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{limit.name} must be a whole number >= 1, got {value!r}")


@dataclass(frozen=True)
class Event:
    """One validated CloudEvent, as Sluice produces it to Kafka.

    ``time`` is timezone-aware (parsing normalises it to UTC). ``data`` is the decoded JSON
    payload, or :data:`NO_DATA`; binary payloads travel base64-encoded in ``data_base64``.
    ``extensions`` holds every other attribute, including a client's ``tenant``/``tenantid``,
    which is never trusted (the tenant comes from the credential). Treat an event as immutable:
    its JSON is computed once and kept.
    """

    id: str
    source: str
    type: str
    specversion: str = SPECVERSION
    subject: str | None = None
    time: datetime | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    data: Any = NO_DATA
    data_base64: str | None = None
    extensions: dict[str, ExtensionValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.time is not None and self.time.utcoffset() is None:
            raise ValueError(f"Event.time must be timezone-aware, got naive {self.time}")
        if self.data is not NO_DATA and self.data_base64 is not None:
            raise ValueError("an Event carries data or data_base64, not both")

    def to_json_bytes(self) -> bytes:
        """The event in the structured-mode JSON format, canonical: UTF-8, keys sorted, no
        whitespace, ``time`` in UTC with a ``Z``. Equal events give equal bytes."""
        return self._json

    @property
    def size(self) -> int:
        """Bytes of :meth:`to_json_bytes`: the size limits' measure and the Kafka record size."""
        return len(self._json)

    @cached_property
    def _json(self) -> bytes:
        envelope: dict[str, Any] = {
            **self.extensions,
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        optional = {
            "subject": self.subject,
            "time": None if self.time is None else _format_time(self.time),
            "datacontenttype": self.datacontenttype,
            "dataschema": self.dataschema,
            "data_base64": self.data_base64,
        }
        envelope.update((name, value) for name, value in optional.items() if value is not None)
        if self.data is not NO_DATA:
            envelope["data"] = self.data
        text = json.dumps(
            envelope, ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
        )
        return text.encode("utf-8")


def parse_request(
    content_type: str | None, headers: Mapping[str, str], body: bytes, limits: Limits
) -> list[Event]:
    """The events of one ``POST /api/v1/events`` request, all valid, or an ApiError.

    ``content_type`` is the request's Content-Type header (None when absent); it alone picks the
    mode, as the HTTP binding says. ``headers`` are matched case-insensitively and only read in
    binary mode; a structured request's ``ce-*`` headers are ignored because its body must carry
    every attribute anyway.
    """
    if len(body) > limits.max_request_bytes:
        raise TooLarge(
            "request_too_large",
            f"the request body is {len(body)} bytes, over the limit of "
            f"{limits.max_request_bytes}; send fewer events per request",
        )
    media_type, parameters = _parse_media_type(content_type)
    if media_type == STRUCTURED_MEDIA_TYPE:
        _require_utf8(content_type, parameters)
        return [_structured_event(_decode_json(body, "the request body"), "", limits)]
    if media_type == BATCH_MEDIA_TYPE:
        _require_utf8(content_type, parameters)
        return _parse_batch(_decode_json(body, "the request body"), limits)
    if media_type.startswith("application/cloudevents"):
        raise UnsupportedMediaType(
            "unsupported_media_type",
            f"Content-Type {content_type!r} is an event format Sluice does not read: only the "
            f"JSON format is supported; send {STRUCTURED_MEDIA_TYPE} or {BATCH_MEDIA_TYPE}",
        )
    ce_headers = _cloudevents_headers(headers)
    if "specversion" in ce_headers:
        return [_binary_event(content_type, media_type, parameters, ce_headers, body, limits)]
    received = "has no Content-Type" if content_type is None else f"is {content_type!r}"
    raise UnsupportedMediaType(
        "unsupported_media_type",
        f"the request {received} and no ce-specversion header, so it is not a CloudEvent: "
        f"{_ACCEPTED}",
    )


def _parse_batch(document: Any, limits: Limits) -> list[Event]:
    if not isinstance(document, list):
        raise BadRequest(
            "invalid_batch",
            f"a {BATCH_MEDIA_TYPE} body must be a JSON array of events, got {json_type(document)}",
        )
    if not document:
        raise BadRequest("invalid_batch", "the batch is empty: send at least one event")
    if len(document) > limits.max_batch_events:
        raise TooLarge(
            "batch_too_large",
            f"the batch has {len(document)} events, over the limit of {limits.max_batch_events}; "
            "split it into smaller batches",
        )
    return [
        _structured_event(item, f"events[{index}]: ", limits) for index, item in enumerate(document)
    ]


def _structured_event(document: Any, where: str, limits: Limits) -> Event:
    """One event in the JSON format. ``where`` prefixes every error (``events[3]: ``)."""
    if not isinstance(document, dict):
        raise BadRequest(
            "invalid_event", f"{where}an event must be a JSON object, got {json_type(document)}"
        )
    # The JSON format treats a null attribute as absent; only `data` may be an explicit null.
    attributes = {
        name: value for name, value in document.items() if name != "data" and value is not None
    }
    data = document.get("data", NO_DATA)
    data_base64 = attributes.pop("data_base64", None)
    if data_base64 is not None:
        if data is not NO_DATA:
            _invalid(where, "data_base64", "cannot be sent together with 'data'; send one of them")
        _check_base64(data_base64, where)
    return _event(attributes, where, data, data_base64, limits)


def _binary_event(
    content_type: str | None,
    media_type: str,
    parameters: Mapping[str, str],
    ce_headers: Mapping[str, str],
    body: bytes,
    limits: Limits,
) -> Event:
    attributes: dict[str, Any] = {}
    for name, raw in ce_headers.items():
        if name == "datacontenttype":
            _invalid(
                "",
                name,
                "comes from the Content-Type header in binary mode; "
                "a ce-datacontenttype header must not be sent",
            )
        attributes[name] = _decode_header_value(name, raw)
    if content_type is not None and content_type.strip():
        attributes["datacontenttype"] = content_type.strip()
    data: Any = NO_DATA
    data_base64 = None
    if body and _is_json(media_type):
        _require_utf8(content_type, parameters)
        data = _decode_json(body, f"the body (Content-Type {content_type!r})")
    elif body:
        data_base64 = base64.b64encode(body).decode("ascii")
    return _event(attributes, "", data, data_base64, limits)


def _event(
    attributes: dict[str, Any], where: str, data: Any, data_base64: str | None, limits: Limits
) -> Event:
    """The checked event from its attributes (consumed) and data, within the size limit."""
    specversion = attributes.pop("specversion", None)
    if specversion is None:
        _invalid(where, "specversion", f"is required (send '{SPECVERSION}')")
    if specversion != SPECVERSION:
        _invalid(where, "specversion", f"must be '{SPECVERSION}', got {specversion!r}")
    event_id = _string(where, "id", attributes.pop("id", None))
    source = _string(where, "source", attributes.pop("source", None))
    event_type = _string(where, "type", attributes.pop("type", None))
    subject = _optional_string(where, "subject", attributes.pop("subject", None))
    raw_time = attributes.pop("time", None)
    time = None if raw_time is None else _timestamp(where, raw_time)
    if time is not None:
        _not_in_the_future(where, time, limits.max_clock_skew_seconds)
    datacontenttype = _optional_string(
        where, "datacontenttype", attributes.pop("datacontenttype", None)
    )
    dataschema = _optional_string(where, "dataschema", attributes.pop("dataschema", None))
    if dataschema is not None and not _ABSOLUTE_URI.fullmatch(dataschema):
        _invalid(
            where,
            "dataschema",
            f"must be an absolute URI such as https://example.com/schemas/order.json, "
            f"got {dataschema!r}",
        )
    if (
        data is not NO_DATA
        and datacontenttype is not None
        and not _is_json(_parse_media_type(datacontenttype)[0])
        and not isinstance(data, str)
    ):
        _invalid(
            where,
            "data",
            f"must be a string when datacontenttype {datacontenttype!r} is not JSON, got "
            f"{json_type(data)}; send binary content base64-encoded as 'data_base64'",
        )
    extensions = {name: _extension_value(where, name, value) for name, value in attributes.items()}
    event = Event(
        id=event_id,
        source=source,
        type=event_type,
        specversion=SPECVERSION,
        subject=subject,
        time=time,
        datacontenttype=datacontenttype,
        dataschema=dataschema,
        data=data,
        data_base64=data_base64,
        extensions=extensions,
    )
    _check_size(event, where, limits)
    return event


def _check_size(event: Event, where: str, limits: Limits) -> None:
    try:
        size = event.size
    except UnicodeEncodeError:
        _invalid(where, "data", "contains an unpaired UTF-16 surrogate escape such as \\ud800")
    except RecursionError:
        _invalid(where, "data", "nests arrays or objects too deeply")
    if size > limits.max_event_bytes:
        raise TooLarge(
            "event_too_large",
            f"{where}the event is {size} bytes as JSON, over the limit of "
            f"{limits.max_event_bytes}; keep large payloads elsewhere and send a reference",
        )


def _string(where: str, name: str, value: Any) -> str:
    """A required String attribute: present, non-empty, free of forbidden characters."""
    if value is None:
        _invalid(where, name, "is required")
    return _checked_string(where, name, value, empty_ok=False)


def _optional_string(where: str, name: str, value: Any) -> str | None:
    return None if value is None else _checked_string(where, name, value, empty_ok=False)


def _checked_string(where: str, name: str, value: Any, *, empty_ok: bool) -> str:
    if not isinstance(value, str):
        _invalid(where, name, f"must be a string, got {json_type(value)}")
    if not value and not empty_ok:
        _invalid(where, name, "must not be empty")
    forbidden = _FORBIDDEN_CHARACTERS.search(value)
    if forbidden is not None:
        _invalid(
            where,
            name,
            f"contains U+{ord(forbidden.group()):04X} at position {forbidden.start()}, "
            "which CloudEvents forbids (control characters, lone surrogates, noncharacters)",
        )
    return value


def _timestamp(where: str, value: Any) -> datetime:
    """An RFC 3339 timestamp with a UTC offset, as an aware datetime in UTC.

    Stricter than :meth:`datetime.fromisoformat`, which also takes ISO 8601 forms RFC 3339 does
    not (dates alone, week dates, no separators). Digits past microseconds are dropped.
    """
    text = _checked_string(where, "time", value, empty_ok=False)
    match = _RFC3339.fullmatch(text)
    if match is None:
        _invalid(
            where, "time", f"must be an RFC 3339 timestamp such as {_TIME_EXAMPLE}, got {text!r}"
        )
    if match["offset"] is None:
        _invalid(
            where, "time", f"has no UTC offset: {text!r}; append Z (UTC) or one such as +02:00"
        )
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    try:
        moment = datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            int(fraction),
            tzinfo=_utc_offset(match["offset"]),
        )
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as error:
        _invalid(where, "time", f"is not a valid date and time: {text!r} ({error})")


def _not_in_the_future(where: str, moment: datetime, skew_seconds: int) -> None:
    ahead = (moment - datetime.now(UTC)).total_seconds()
    if ahead > skew_seconds:
        _invalid(
            where,
            "time",
            f"lies {ahead:.0f} s in the future, more than the {skew_seconds} s of clock skew "
            "allowed: send the time the event occurred, from a synchronised clock",
        )


def _utc_offset(text: str) -> timezone:
    if text in ("Z", "z"):
        return UTC
    minutes = int(text[4:6])
    if minutes > 59:
        raise ValueError(f"the UTC offset {text} has more than 59 minutes")
    delta = timedelta(hours=int(text[1:3]), minutes=minutes)
    return timezone(-delta if text.startswith("-") else delta)


def _format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def _extension_value(where: str, name: str, value: Any) -> ExtensionValue:
    """An extension attribute: a valid name, and a String, Integer (int32) or Boolean value.

    JSON has no way to mark the spec's URI, Timestamp or Binary types, so those arrive (and are
    kept) as strings, as every binary-mode header value is.
    """
    if name == "data":
        _invalid(where, name, "is reserved for the event's payload and cannot be an attribute")
    if not _ATTRIBUTE_NAME.fullmatch(name):
        _invalid(
            where,
            name,
            "is not a valid extension attribute name: use lowercase letters a-z and digits 0-9",
        )
    if len(name) > MAX_ATTRIBUTE_NAME_LENGTH:
        _invalid(
            where,
            name,
            f"is {len(name)} characters long; extension attribute names have at most "
            f"{MAX_ATTRIBUTE_NAME_LENGTH}",
        )
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _INT32_MIN <= value <= _INT32_MAX:
            _invalid(
                where, name, f"is {value}, outside the 32-bit integer range CloudEvents allows"
            )
        return value
    if isinstance(value, str):
        return _checked_string(where, name, value, empty_ok=True)
    _invalid(where, name, f"must be a string, an integer or a boolean, got {json_type(value)}")


def _check_base64(value: Any, where: str) -> None:
    if not isinstance(value, str):
        _invalid(where, "data_base64", f"must be a base64 string, got {json_type(value)}")
    try:
        base64.b64decode(value, validate=True)
    except ValueError as error:  # binascii.Error is one; a non-ASCII string raises the base class
        _invalid(
            where,
            "data_base64",
            f"is not valid base64 (RFC 4648 alphabet, with padding): {error}",
        )


def _cloudevents_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The ``ce-*`` headers by attribute name; header names are case-insensitive, so two that
    differ only in case are the same attribute sent twice."""
    found: dict[str, str] = {}
    for header, value in headers.items():
        lowered = header.lower()
        if not lowered.startswith("ce-"):
            continue
        name = lowered.removeprefix("ce-")
        if name in found:
            _invalid("", name, f"is sent twice (header {header!r} again); send it once")
        found[name] = value
    return found


def _decode_header_value(name: str, raw: str) -> str:
    """A ``ce-*`` header value as the HTTP binding decodes it: quoted-strings unescaped (older
    senders use them), then one round of percent-decoding that must give valid UTF-8."""
    unquoted: list[str] = []
    quoted = False
    characters = iter(raw.strip())
    for character in characters:
        if character == '"':
            quoted = not quoted
        elif quoted and character == "\\":
            unquoted.append(next(characters, ""))
        else:
            unquoted.append(character)
    if quoted:
        _invalid("", name, f"(header ce-{name}) has an unterminated quoted string: {raw!r}")
    try:
        return unquote_to_bytes("".join(unquoted)).decode("utf-8")
    except UnicodeError:
        _invalid(
            "", name, f"(header ce-{name}) percent-decodes to bytes that are not UTF-8: {raw!r}"
        )


def _decode_json(body: bytes, what: str) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequest("malformed_json", f"{what} is not UTF-8: {error}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise BadRequest("malformed_json", f"{what} nests arrays or objects too deeply") from None
    except ValueError as error:  # JSONDecodeError, non-finite numbers, Python's int digit limit
        raise BadRequest("malformed_json", f"{what} is not valid JSON: {error}") from None


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is out of range")
    return value


def _parse_media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """The lowercased media type and the parameters of a Content-Type value."""
    if content_type is None:
        return "", {}
    media_type, *parameters = content_type.split(";")
    found: dict[str, str] = {}
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        found[key.strip().lower()] = value.strip().strip('"')
    return media_type.strip().lower(), found


def _is_json(media_type: str) -> bool:
    """Whether a media type declares JSON: subtype ``json`` or a ``+json`` suffix, the JSON
    format's rule (``application/json``, ``text/json``, ``application/ld+json``)."""
    subtype = media_type.partition("/")[2]
    return subtype == "json" or subtype.endswith("+json")


def _require_utf8(content_type: str | None, parameters: Mapping[str, str]) -> None:
    charset = parameters.get("charset")
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(
            "unsupported_media_type",
            f"Content-Type {content_type!r}: JSON is read as UTF-8 only; "
            "send charset=utf-8 or no charset",
        )


def json_type(value: Any) -> str:
    """How a problem message names the JSON type of ``value`` (\"a string\", \"null\", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _invalid(where: str, name: str, problem: str) -> NoReturn:
    raise BadRequest("invalid_event", f"{where}attribute {name!r} {problem}")
