"""CloudEvents over HTTP: what Sluice accepts, in which form it produces it, and how it says no.

Most checks run in all three content modes, because a client picks the mode and must get the
same verdict in each: structured (one JSON event), batch (the event at index 1 of a JSON array,
so the error must name ``events[1]``) and binary (attributes as percent-encoded ``ce-*``
headers, for the cases a header can express).
"""

from __future__ import annotations

import base64
import json
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from sluice.cloudevents import (
    BATCH_MEDIA_TYPE,
    NO_DATA,
    STRUCTURED_MEDIA_TYPE,
    Event,
    Limits,
    parse_request,
)
from sluice.errors import ApiError

LIMITS = Limits()
MODES = ("structured", "batch", "binary")
JSON_MODES = ("structured", "batch")


def minimal(**attributes: Any) -> dict[str, Any]:
    """A valid event's attributes, with ``attributes`` added or replaced."""
    return {"specversion": "1.0", "id": "e-1", "source": "/orders", "type": "order.created"} | (
        attributes
    )


def without(name: str) -> dict[str, Any]:
    event = minimal()
    del event[name]
    return event


def percent_encode(value: str) -> str:
    """The HTTP binding's header encoding: space, '"', '%' and all but printable ASCII."""
    return "".join(
        character
        if "!" <= character <= "~" and character not in '"%'
        else "".join(f"%{byte:02X}" for byte in character.encode("utf-8"))
        for character in value
    )


def as_headers(attributes: dict[str, Any]) -> dict[str, str]:
    return {f"ce-{name}": percent_encode(str(value)) for name, value in attributes.items()}


def send(
    mode: str,
    attributes: dict[str, Any],
    *,
    body: bytes = b"",
    content_type: str | None = None,
    limits: Limits = LIMITS,
) -> Event:
    """The event ``attributes`` describe, sent in ``mode``; for batch, as the second of two."""
    if mode == "structured":
        return only(parse_request(STRUCTURED_MEDIA_TYPE, {}, encode(attributes), limits))
    if mode == "batch":
        events = parse_request(BATCH_MEDIA_TYPE, {}, encode([minimal(), attributes]), limits)
        assert len(events) == 2
        return events[1]
    return only(parse_request(content_type, as_headers(attributes), body, limits))


def rejected(mode: str, attributes: dict[str, Any], *, status: int = 400, **kwargs: Any) -> str:
    """The detail of the error ``attributes`` get in ``mode``, without the batch index."""
    with pytest.raises(ApiError) as caught:
        send(mode, attributes, **kwargs)
    error = caught.value
    assert error.status == status
    if status == 400:
        assert error.code == "invalid_event"
    if mode == "batch":
        assert error.detail.startswith("events[1]: ")
        return error.detail.removeprefix("events[1]: ")
    return error.detail


def only(events: list[Event]) -> Event:
    assert len(events) == 1
    return events[0]


def encode(document: Any) -> bytes:
    return json.dumps(document).encode("utf-8")


def error_of(
    content_type: str | None,
    body: bytes,
    headers: dict[str, str] | None = None,
    limits: Limits = LIMITS,
) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_request(content_type, headers or {}, body, limits)
    return caught.value


# --- good events -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_minimal_event_is_accepted_in_every_mode(mode: str) -> None:
    event = send(mode, minimal())

    assert (event.specversion, event.id, event.source, event.type) == (
        "1.0",
        "e-1",
        "/orders",
        "order.created",
    )
    assert event.subject is None
    assert event.time is None
    assert event.datacontenttype is None
    assert event.dataschema is None
    assert event.data is NO_DATA
    assert event.data_base64 is None
    assert event.extensions == {}


@pytest.mark.parametrize("mode", MODES)
def test_every_optional_attribute_and_an_extension_are_kept(mode: str) -> None:
    event = send(
        mode,
        minimal(
            subject="order/42",
            time="2024-05-01T12:00:00Z",
            dataschema="https://example.com/schemas/order.json",
            comexampleregion="eu-west",
        ),
    )

    assert event.subject == "order/42"
    assert event.time == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert event.dataschema == "https://example.com/schemas/order.json"
    assert event.extensions == {"comexampleregion": "eu-west"}


def test_structured_data_and_content_type_are_kept() -> None:
    event = send("structured", minimal(datacontenttype="application/json", data={"total": 12.5}))

    assert event.datacontenttype == "application/json"
    assert event.data == {"total": 12.5}


@pytest.mark.parametrize(
    "content_type",
    [
        "application/cloudevents+json",
        "application/cloudevents+json; charset=utf-8",
        "Application/CloudEvents+JSON;charset=UTF-8",
        'application/cloudevents+json; charset="utf-8"',
        "application/cloudevents+json; charset=utf8",
    ],
)
def test_structured_content_type_is_matched_case_insensitively_with_utf8_charset(
    content_type: str,
) -> None:
    assert only(parse_request(content_type, {}, encode(minimal()), LIMITS)).id == "e-1"


@pytest.mark.parametrize("content_type", [STRUCTURED_MEDIA_TYPE, BATCH_MEDIA_TYPE])
def test_a_charset_other_than_utf8_is_unsupported(content_type: str) -> None:
    error = error_of(f"{content_type}; charset=iso-8859-1", encode(minimal()))

    assert (error.status, error.code) == (415, "unsupported_media_type")
    assert "UTF-8" in error.detail


def test_explicit_null_data_is_kept_apart_from_no_data() -> None:
    with_null = send("structured", minimal(data=None))
    without_data = send("structured", minimal())

    assert with_null.data is None
    assert b'"data":null' in with_null.to_json_bytes()
    assert b'"data"' not in without_data.to_json_bytes()


@pytest.mark.parametrize("mode", JSON_MODES)
def test_null_attributes_count_as_absent(mode: str) -> None:
    event = send(mode, minimal(subject=None, time=None, comexampleflag=None, data_base64=None))

    assert event.subject is None
    assert event.time is None
    assert event.extensions == {}
    assert event.data_base64 is None


@pytest.mark.parametrize("mode", JSON_MODES)
@pytest.mark.parametrize("name", ["tenant", "tenantid"])
def test_a_tenant_attribute_is_an_ordinary_extension(mode: str, name: str) -> None:
    event = send(mode, minimal(**{name: "someone-else"}))

    assert event.extensions == {name: "someone-else"}


# --- required attributes -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["id", "source", "type"])
def test_a_missing_required_attribute_is_named(mode: str, name: str) -> None:
    assert rejected(mode, without(name)) == f"attribute '{name}' is required"


@pytest.mark.parametrize("mode", JSON_MODES)
def test_a_missing_specversion_is_named(mode: str) -> None:
    detail = rejected(mode, without("specversion"))

    assert detail == "attribute 'specversion' is required (send '1.0')"


def test_binary_mode_needs_ce_specversion() -> None:
    error = error_of("application/json", b"{}", as_headers(without("specversion")))

    assert (error.status, error.code) == (415, "unsupported_media_type")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["id", "source", "type"])
def test_an_empty_required_attribute_is_named(mode: str, name: str) -> None:
    assert rejected(mode, minimal(**{name: ""})) == f"attribute '{name}' must not be empty"


@pytest.mark.parametrize("mode", JSON_MODES)
@pytest.mark.parametrize("name", ["id", "source", "type"])
@pytest.mark.parametrize(
    ("value", "kind"),
    [(42, "a number"), (True, "a boolean"), (["x"], "an array"), ({}, "an object")],
)
def test_a_required_attribute_of_the_wrong_type_is_named(
    mode: str, name: str, value: Any, kind: str
) -> None:
    assert (
        rejected(mode, minimal(**{name: value}))
        == f"attribute '{name}' must be a string, got {kind}"
    )


@pytest.mark.parametrize("mode", JSON_MODES)
def test_a_null_required_attribute_is_missing(mode: str) -> None:
    assert rejected(mode, minimal(id=None)) == "attribute 'id' is required"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("version", ["0.3", "1", "1.0.2", "", " 1.0"])
def test_a_specversion_other_than_1_0_is_rejected(mode: str, version: str) -> None:
    detail = rejected(mode, minimal(specversion=version))

    assert detail.startswith("attribute 'specversion' must be '1.0'")


@pytest.mark.parametrize("mode", JSON_MODES)
def test_a_numeric_specversion_is_rejected(mode: str) -> None:
    assert rejected(mode, minimal(specversion=1.0)).startswith("attribute 'specversion'")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("id", "a\nb"),
        ("source", "\x00"),
        ("subject", "bell\x07"),
        ("type", "x\x85"),
        ("id", "\ufffe"),
        ("subject", "\U0010ffff"),
    ],
)
def test_strings_with_forbidden_characters_are_rejected(mode: str, name: str, value: str) -> None:
    detail = rejected(mode, minimal(**{name: value}))

    assert detail.startswith(f"attribute '{name}' contains U+")


@pytest.mark.parametrize("mode", JSON_MODES)
def test_an_unpaired_surrogate_in_an_attribute_is_rejected(mode: str) -> None:
    assert rejected(mode, minimal(id="\ud800")).startswith("attribute 'id' contains U+D800")


def test_non_ascii_attributes_are_valid() -> None:
    assert send("structured", minimal(subject="zamówienie € 😀")).subject == "zamówienie € 😀"


# --- optional attributes -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["subject", "dataschema"])
def test_an_empty_optional_attribute_is_rejected(mode: str, name: str) -> None:
    assert rejected(mode, minimal(**{name: ""})) == f"attribute '{name}' must not be empty"


def test_an_empty_datacontenttype_is_rejected() -> None:
    assert rejected("structured", minimal(datacontenttype="")) == (
        "attribute 'datacontenttype' must not be empty"
    )


@pytest.mark.parametrize("mode", JSON_MODES)
@pytest.mark.parametrize("name", ["subject", "time", "datacontenttype", "dataschema"])
def test_an_optional_attribute_of_the_wrong_type_is_named(mode: str, name: str) -> None:
    assert (
        rejected(mode, minimal(**{name: 7})) == f"attribute '{name}' must be a string, got a number"
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "uri", ["https://example.com/schemas/order.json", "urn:example:order:v1", "tag:a.b,2024:x"]
)
def test_dataschema_accepts_absolute_uris(mode: str, uri: str) -> None:
    assert send(mode, minimal(dataschema=uri)).dataschema == uri


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "uri", ["/schemas/order.json", "order.json", "https://ex ample.com", "1a:x"]
)
def test_dataschema_rejects_what_is_not_an_absolute_uri(mode: str, uri: str) -> None:
    assert rejected(mode, minimal(dataschema=uri)).startswith(
        "attribute 'dataschema' must be an absolute URI"
    )


# --- time --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01t12:00:00z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T06:30:00-05:30", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00-00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00.5Z", datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=UTC)),
        ("2024-05-01T12:00:00.123456789Z", datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2024-02-29T23:59:59+23:59", datetime(2024, 2, 29, 0, 0, 59, tzinfo=UTC)),
    ],
)
def test_rfc3339_times_with_z_or_an_offset_become_utc(
    mode: str, text: str, expected: datetime
) -> None:
    time = send(mode, minimal(time=text)).time

    assert time == expected
    assert time is not None
    assert time.utcoffset() == timedelta(0)


@pytest.mark.parametrize("mode", MODES)
def test_a_time_without_offset_is_rejected_with_the_fix(mode: str) -> None:
    detail = rejected(mode, minimal(time="2024-05-01T12:00:00"))

    assert detail == (
        "attribute 'time' has no UTC offset: '2024-05-01T12:00:00'; "
        "append Z (UTC) or one such as +02:00"
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01",
        "2024-05-01 12:00:00Z",
        "20240501T120000Z",
        "2024-05-01T12:00Z",
        "2024-W18-3T12:00:00Z",
        "2024-05-01T12:00:00+0200",
        "2024-05-01T12:00:00.Z",
        "tomorrow",
        "٢٠٢٤-05-01T12:00:00Z",
    ],
)
def test_what_is_not_rfc3339_is_rejected(mode: str, text: str) -> None:
    detail = rejected(mode, minimal(time=text))

    assert detail == (
        f"attribute 'time' must be an RFC 3339 timestamp such as 2024-05-01T12:00:00Z, got {text!r}"
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "text",
    [
        "2024-13-01T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2024-05-01T24:00:00Z",
        "2024-05-01T12:60:00Z",
        "2024-05-01T12:00:60Z",
        "2024-05-01T12:00:00+24:00",
        "2024-05-01T12:00:00+01:60",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
    ],
)
def test_impossible_dates_and_offsets_are_rejected(mode: str, text: str) -> None:
    detail = rejected(mode, minimal(time=text))

    assert detail.startswith(f"attribute 'time' is not a valid date and time: {text!r} (")


@pytest.mark.parametrize("mode", JSON_MODES)
def test_a_numeric_time_is_rejected(mode: str) -> None:
    assert (
        rejected(mode, minimal(time=1714564800))
        == "attribute 'time' must be a string, got a number"
    )


# --- extensions --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["a", "x1", "1abc", "comexampleextension", "abcdefghij0123456789"])
def test_valid_extension_names_are_kept(mode: str, name: str) -> None:
    assert send(mode, minimal(**{name: "v"})).extensions == {name: "v"}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["with_underscore", "with-dash", "ünicode", "a.b", ""])
def test_extension_names_outside_a_z_0_9_are_rejected(mode: str, name: str) -> None:
    detail = rejected(mode, minimal(**{name: "v"}))

    assert detail == (
        f"attribute {name!r} is not a valid extension attribute name: "
        "use lowercase letters a-z and digits 0-9"
    )


@pytest.mark.parametrize("mode", JSON_MODES)
def test_uppercase_extension_names_are_rejected(mode: str) -> None:
    assert rejected(mode, minimal(Region="eu")).startswith(
        "attribute 'Region' is not a valid extension attribute name"
    )


@pytest.mark.parametrize("mode", MODES)
def test_extension_names_over_20_characters_are_rejected(mode: str) -> None:
    name = "a" * 21

    assert rejected(mode, minimal(**{name: "v"})) == (
        f"attribute '{name}' is 21 characters long; extension attribute names have at most 20"
    )


@pytest.mark.parametrize("mode", JSON_MODES)
@pytest.mark.parametrize("value", ["text", "", 0, -(2**31), 2**31 - 1, True, False])
def test_string_int32_and_boolean_extension_values_are_kept(mode: str, value: Any) -> None:
    event = send(mode, minimal(ext=value))

    assert event.extensions == {"ext": value}
    assert type(event.extensions["ext"]) is type(value)
    assert json.loads(event.to_json_bytes())["ext"] == value


@pytest.mark.parametrize("mode", JSON_MODES)
@pytest.mark.parametrize("value", [2**31, -(2**31) - 1])
def test_extension_integers_outside_int32_are_rejected(mode: str, value: int) -> None:
    assert rejected(mode, minimal(ext=value)) == (
        f"attribute 'ext' is {value}, outside the 32-bit integer range CloudEvents allows"
    )


@pytest.mark.parametrize("mode", JSON_MODES)
@pytest.mark.parametrize(
    ("value", "kind"), [(1.5, "a number"), (1.0, "a number"), ([1], "an array"), ({}, "an object")]
)
def test_extension_values_of_other_types_are_rejected(mode: str, value: Any, kind: str) -> None:
    assert rejected(mode, minimal(ext=value)) == (
        f"attribute 'ext' must be a string, an integer or a boolean, got {kind}"
    )


def test_binary_extension_values_stay_strings() -> None:
    assert send("binary", minimal(count="5", flag="true")).extensions == {
        "count": "5",
        "flag": "true",
    }


# --- data and data_base64 ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", JSON_MODES)
def test_data_base64_is_kept(mode: str) -> None:
    event = send(mode, minimal(datacontenttype="image/png", data_base64="iVBORw0KGgo="))

    assert event.data_base64 == "iVBORw0KGgo="
    assert event.data is NO_DATA


@pytest.mark.parametrize("mode", JSON_MODES)
@pytest.mark.parametrize("data", [{"a": 1}, None, "text"])
def test_data_and_data_base64_are_mutually_exclusive(mode: str, data: Any) -> None:
    detail = rejected(mode, minimal(data=data, data_base64="aGk="))

    assert detail == "attribute 'data_base64' cannot be sent together with 'data'; send one of them"


@pytest.mark.parametrize("mode", JSON_MODES)
@pytest.mark.parametrize(
    "value", ["not base64!", "aGk", "aG=k", "aGk=\n", "aGk\u00e9", "\ud800aGk="]
)
def test_invalid_base64_is_rejected(mode: str, value: str) -> None:
    assert rejected(mode, minimal(data_base64=value)).startswith(
        "attribute 'data_base64' is not valid base64"
    )


@pytest.mark.parametrize("mode", JSON_MODES)
def test_non_string_data_base64_is_rejected(mode: str) -> None:
    assert rejected(mode, minimal(data_base64=5)) == (
        "attribute 'data_base64' must be a base64 string, got a number"
    )


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "text/json", "application/vnd.order+json; v=2"]
)
def test_any_json_value_is_data_when_the_content_type_is_json(content_type: str | None) -> None:
    event = send("structured", minimal(datacontenttype=content_type, data=[1, {"a": None}]))

    assert event.data == [1, {"a": None}]


def test_string_data_with_a_non_json_content_type_is_kept() -> None:
    assert send("structured", minimal(datacontenttype="text/plain", data="hi")).data == "hi"


@pytest.mark.parametrize("mode", JSON_MODES)
def test_structured_data_with_a_non_json_content_type_must_be_a_string(mode: str) -> None:
    detail = rejected(mode, minimal(datacontenttype="application/xml", data={"a": 1}))

    assert detail.startswith(
        "attribute 'data' must be a string when datacontenttype 'application/xml' is not JSON"
    )


@pytest.mark.parametrize("mode", JSON_MODES)
def test_an_unpaired_surrogate_in_data_is_rejected(mode: str) -> None:
    detail = rejected(mode, minimal(data={"note": "\udc00"}))

    assert detail.startswith("attribute 'data' contains an unpaired UTF-16 surrogate")


# --- binary mode -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("Euro%20%E2%82%AC%20%F0%9F%98%80", "Euro € 😀"),
        ("euro%e2%82%ac", "euro€"),
        ("100%25", "100%"),
        ("%41%42", "AB"),
        ("50%off", "50%off"),
        ('"hello world"', "hello world"),
        ('"say \\"hi\\""', 'say "hi"'),
        ('  "a b"  ', "a b"),
    ],
)
def test_binary_header_values_are_unquoted_then_percent_decoded(raw: str, decoded: str) -> None:
    headers = as_headers(minimal()) | {"ce-subject": raw}

    assert only(parse_request(None, headers, b"", LIMITS)).subject == decoded


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("%C0%A0", "percent-decodes to bytes that are not UTF-8"),
        ("%FF", "percent-decodes to bytes that are not UTF-8"),
        ('"open', "has an unterminated quoted string"),
        ('"ends in escape\\"', "has an unterminated quoted string"),
    ],
)
def test_undecodable_binary_header_values_are_named(raw: str, problem: str) -> None:
    headers = as_headers(minimal()) | {"ce-subject": raw}

    error = error_of(None, b"", headers)

    assert (error.status, error.code) == (400, "invalid_event")
    assert error.detail.startswith(f"attribute 'subject' (header ce-subject) {problem}")


def test_binary_header_names_are_case_insensitive() -> None:
    headers = {"CE-SpecVersion": "1.0", "Ce-Id": "e-1", "CE-SOURCE": "/s", "ce-Type": "t"}

    event = only(parse_request(None, headers | {"CE-ComExampleX": "1"}, b"", LIMITS))

    assert (event.id, event.source, event.type) == ("e-1", "/s", "t")
    assert event.extensions == {"comexamplex": "1"}


def test_an_attribute_sent_in_two_header_spellings_is_rejected() -> None:
    error = error_of(None, b"", as_headers(minimal()) | {"CE-ID": "other"})

    assert error.code == "invalid_event"
    assert error.detail.startswith("attribute 'id' is sent twice")


def test_headers_other_than_ce_are_not_attributes() -> None:
    headers = as_headers(minimal()) | {"Authorization": "Bearer x", "X-Tenant": "acme"}

    assert only(parse_request(None, headers, b"", LIMITS)).extensions == {}


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "text/json", "application/ld+json"],
)
def test_binary_json_data_is_decoded(content_type: str) -> None:
    event = send("binary", minimal(), body=b'{"total": 12.5}', content_type=content_type)

    assert event.data == {"total": 12.5}
    assert event.data_base64 is None
    assert event.datacontenttype == content_type


def test_binary_json_data_must_be_valid_json() -> None:
    error = error_of("application/json", b"{not json", as_headers(minimal()))

    assert (error.status, error.code) == (400, "malformed_json")
    assert error.detail.startswith("the body (Content-Type 'application/json') is not valid JSON")


def test_binary_json_data_in_another_charset_is_unsupported() -> None:
    error = error_of("application/json; charset=utf-16", b"{}", as_headers(minimal()))

    assert (error.status, error.code) == (415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b"hello"),
        ("application/octet-stream", bytes(range(256))),
        ("application/xml", b"<order/>"),
        (None, b"\xff\x00raw"),
    ],
)
def test_binary_non_json_data_is_kept_as_base64(content_type: str | None, body: bytes) -> None:
    event = send("binary", minimal(), body=body, content_type=content_type)

    assert event.data is NO_DATA
    assert event.data_base64 is not None
    assert base64.b64decode(event.data_base64) == body
    assert event.datacontenttype == content_type


def test_binary_empty_body_is_no_data() -> None:
    event = send("binary", minimal(), content_type="application/json")

    assert event.data is NO_DATA
    assert event.data_base64 is None
    assert event.datacontenttype == "application/json"


def test_binary_datacontenttype_must_come_from_content_type() -> None:
    headers = as_headers(minimal(datacontenttype="application/json"))

    error = error_of("application/json", b"{}", headers)

    assert error.code == "invalid_event"
    assert error.detail.startswith("attribute 'datacontenttype' comes from the Content-Type header")


def test_binary_ce_data_header_is_reserved() -> None:
    error = error_of(None, b"", as_headers(minimal(data="x")))

    assert error.detail == (
        "attribute 'data' is reserved for the event's payload and cannot be an attribute"
    )


def test_structured_mode_ignores_ce_headers() -> None:
    headers = {"ce-subject": "from-header", "ce-specversion": "0.3"}

    event = only(parse_request(STRUCTURED_MEDIA_TYPE, headers, encode(minimal()), LIMITS))

    assert event.subject is None


# --- batch -------------------------------------------------------------------------------------


def test_a_batch_gives_its_events_in_order() -> None:
    documents = [minimal(id=f"e-{index}") for index in range(3)]

    events = parse_request(BATCH_MEDIA_TYPE, {}, encode(documents), LIMITS)

    assert [event.id for event in events] == ["e-0", "e-1", "e-2"]


def test_an_empty_batch_is_rejected() -> None:
    error = error_of(BATCH_MEDIA_TYPE, b"[]")

    assert (error.status, error.code) == (400, "invalid_batch")
    assert error.detail == "the batch is empty: send at least one event"


@pytest.mark.parametrize(("body", "kind"), [(b"{}", "an object"), (b'"x"', "a string")])
def test_a_batch_must_be_an_array(body: bytes, kind: str) -> None:
    error = error_of(BATCH_MEDIA_TYPE, body)

    assert (error.status, error.code) == (400, "invalid_batch")
    assert error.detail.endswith(f"must be a JSON array of events, got {kind}")


def test_one_bad_event_rejects_the_whole_batch_naming_its_index() -> None:
    documents = [minimal(id=f"e-{index}") for index in range(5)]
    documents[3]["time"] = "yesterday"

    error = error_of(BATCH_MEDIA_TYPE, encode(documents))

    assert (error.status, error.code) == (400, "invalid_event")
    assert error.detail.startswith("events[3]: attribute 'time' must be an RFC 3339 timestamp")


def test_a_batch_item_that_is_not_an_object_is_named() -> None:
    error = error_of(BATCH_MEDIA_TYPE, encode([minimal(), 5]))

    assert error.detail == "events[1]: an event must be a JSON object, got a number"


def test_a_batch_over_max_batch_events_is_too_large() -> None:
    limits = Limits(max_batch_events=2)

    assert len(parse_request(BATCH_MEDIA_TYPE, {}, encode([minimal()] * 2), limits)) == 2
    error = error_of(BATCH_MEDIA_TYPE, encode([minimal()] * 3), limits=limits)
    assert (error.status, error.code) == (413, "batch_too_large")
    assert "3 events, over the limit of 2" in error.detail


# --- size limits -------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [STRUCTURED_MEDIA_TYPE, "text/plain", None])
def test_a_request_over_max_request_bytes_is_too_large(content_type: str | None) -> None:
    body = encode(minimal())
    at_limit = Limits(max_request_bytes=len(body))

    assert only(parse_request(STRUCTURED_MEDIA_TYPE, {}, body, at_limit)).id == "e-1"
    error = error_of(content_type, body + b" ", limits=at_limit)
    assert (error.status, error.code) == (413, "request_too_large")
    assert f"is {len(body) + 1} bytes, over the limit of {len(body)}" in error.detail


@pytest.mark.parametrize("mode", MODES)
def test_an_event_over_max_event_bytes_is_too_large(mode: str) -> None:
    size = send(mode, minimal(subject="s" * 100)).size

    assert send(mode, minimal(subject="s" * 100), limits=Limits(max_event_bytes=size)).size == size
    detail = rejected(
        mode, minimal(subject="s" * 100), status=413, limits=Limits(max_event_bytes=size - 1)
    )
    assert detail.startswith(f"the event is {size} bytes as JSON, over the limit of {size - 1}")


def test_an_oversized_event_in_a_batch_is_named_by_index() -> None:
    documents = [minimal(), minimal(), minimal(data="x" * 500)]

    error = error_of(BATCH_MEDIA_TYPE, encode(documents), limits=Limits(max_event_bytes=300))

    assert (error.status, error.code) == (413, "event_too_large")
    assert error.detail.startswith("events[2]: the event is ")


def test_binary_data_counts_at_its_base64_size() -> None:
    body = bytes(300)
    headers = as_headers(minimal())

    error = error_of("application/octet-stream", body, headers, Limits(max_event_bytes=400))

    assert (error.status, error.code) == (413, "event_too_large")


@pytest.mark.parametrize(
    "limits",
    [
        {"max_event_bytes": 0},
        {"max_request_bytes": -1},
        {"max_batch_events": True},
        {"max_event_bytes": 1.5},
    ],
)
def test_limits_must_be_positive_whole_numbers(limits: dict[str, Any]) -> None:
    name = next(iter(limits))

    with pytest.raises(ValueError, match=rf"Limits\.{name} must be a whole number >= 1"):
        Limits(**limits)


# --- modes the API does not read ---------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/json", "application/x-www-form-urlencoded"],
)
def test_a_request_in_no_mode_is_unsupported_and_told_what_to_send(
    content_type: str | None,
) -> None:
    error = error_of(content_type, encode(minimal()), {"ce-id": "e-1"})

    assert (error.status, error.code) == (415, "unsupported_media_type")
    assert STRUCTURED_MEDIA_TYPE in error.detail
    assert BATCH_MEDIA_TYPE in error.detail
    assert "ce-specversion" in error.detail


@pytest.mark.parametrize(
    "content_type",
    [
        "application/cloudevents+xml",
        "application/cloudevents",
        "application/cloudevents-batch+avro",
    ],
)
def test_cloudevents_formats_other_than_json_are_unsupported(content_type: str) -> None:
    error = error_of(content_type, b"<event/>", as_headers(minimal()))

    assert (error.status, error.code) == (415, "unsupported_media_type")
    assert "only the JSON format is supported" in error.detail


# --- malformed JSON ----------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [STRUCTURED_MEDIA_TYPE, BATCH_MEDIA_TYPE])
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "is not valid JSON"),
        (b"{", "is not valid JSON"),
        (b"{'id': 1}", "is not valid JSON"),
        (b'{"a": NaN}', "is not valid JSON: NaN is not a JSON value"),
        (b'{"a": Infinity}', "is not valid JSON: Infinity is not a JSON value"),
        (b'{"a": 1e999}', "is not valid JSON: the number 1e999 is out of range"),
        (b'{"a": ' + b"1" * 5000 + b"}", "is not valid JSON"),
        (b"\xef\xbb\xbf{}", "is not valid JSON"),
        (b'{"id": "\xff"}', "is not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nests arrays or objects too deeply"),
    ],
)
def test_malformed_json_is_a_400(content_type: str, body: bytes, problem: str) -> None:
    error = error_of(content_type, body)

    assert (error.status, error.code) == (400, "malformed_json")
    assert error.detail.startswith(f"the request body {problem}")


def test_deep_nesting_is_a_400_at_every_depth() -> None:
    """Decoding and encoding nest at different stack depths, so near the recursion limit some
    data decodes and then fails to encode: that must still be the client's 400."""
    verdicts = set()
    for depth in range(sys.getrecursionlimit() - 300, sys.getrecursionlimit() + 1):
        body = encode(minimal()).replace(b"}", b',"data":' + b"[" * depth + b"]" * depth + b"}")
        try:
            parse_request(STRUCTURED_MEDIA_TYPE, {}, body, LIMITS)
            verdicts.add("accepted")
        except ApiError as error:
            assert error.status == 400
            verdicts.add(error.detail)

    assert verdicts == {
        "accepted",
        "the request body nests arrays or objects too deeply",
        "attribute 'data' nests arrays or objects too deeply",
    }


@pytest.mark.parametrize(
    ("body", "kind"),
    [(b"[]", "an array"), (b'"event"', "a string"), (b"5", "a number"), (b"null", "null")],
)
def test_structured_json_that_is_not_an_object_is_a_400(body: bytes, kind: str) -> None:
    error = error_of(STRUCTURED_MEDIA_TYPE, body)

    assert (error.status, error.code) == (400, "invalid_event")
    assert error.detail == f"an event must be a JSON object, got {kind}"


# --- the event Sluice produces -----------------------------------------------------------------


def test_to_json_bytes_is_canonical() -> None:
    event = send(
        "structured",
        minimal(time="2024-05-01T14:00:00.250+02:00", zext=1, subject="é", data={"b": 1, "a": 2}),
    )

    assert (
        event.to_json_bytes()
        == (
            '{"data":{"a":2,"b":1},"id":"e-1","source":"/orders","specversion":"1.0",'
            '"subject":"é","time":"2024-05-01T12:00:00.250000Z","type":"order.created","zext":1}'
        ).encode()
    )
    assert event.size == len(event.to_json_bytes())


@pytest.mark.parametrize(
    ("document", "headers", "content_type", "body"),
    [
        (
            minimal(
                subject="order/42",
                time="2024-05-01T12:00:00.123456Z",
                datacontenttype="application/json",
                dataschema="https://example.com/s.json",
                comexampleint=-5,
                comexampleflag=False,
                tenant="not-trusted",
                data={"items": [1, 2.5, None, "€"]},
            ),
            None,
            None,
            b"",
        ),
        (minimal(data_base64="AAEC", datacontenttype="application/octet-stream"), None, None, b""),
        (minimal(data=None), None, None, b""),
        (None, as_headers(minimal(subject="a b")), "application/json", b'{"k": [true]}'),
        (None, as_headers(minimal()), "image/png", b"\x89PNG"),
    ],
)
def test_the_produced_json_parses_back_to_the_same_event(
    document: dict[str, Any] | None,
    headers: dict[str, str] | None,
    content_type: str | None,
    body: bytes,
) -> None:
    if document is not None:
        original = only(parse_request(STRUCTURED_MEDIA_TYPE, {}, encode(document), LIMITS))
    else:
        assert headers is not None
        original = only(parse_request(content_type, headers, body, LIMITS))

    again = only(parse_request(STRUCTURED_MEDIA_TYPE, {}, original.to_json_bytes(), LIMITS))

    assert again == original
    assert again.to_json_bytes() == original.to_json_bytes()


def test_an_event_built_in_code_renders_time_in_utc() -> None:
    event = Event(
        id="1",
        source="/s",
        type="t",
        time=datetime(2024, 5, 1, 14, tzinfo=timezone(timedelta(hours=2))),
    )

    assert json.loads(event.to_json_bytes())["time"] == "2024-05-01T12:00:00Z"


def test_an_event_with_a_naive_time_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Event(id="1", source="/s", type="t", time=datetime(2024, 5, 1, 12))


def test_an_event_with_data_and_data_base64_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="data or data_base64, not both"):
        Event(id="1", source="/s", type="t", data={}, data_base64="")


@pytest.mark.parametrize("mode", MODES)
def test_a_time_beyond_the_allowed_clock_skew_is_rejected(mode: str) -> None:
    from datetime import UTC, datetime, timedelta

    def stamp(delta: timedelta) -> str:
        return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")

    limits = Limits(max_clock_skew_seconds=600)
    assert send(mode, minimal(time=stamp(timedelta(minutes=5))), limits=limits).time is not None
    detail = rejected(mode, minimal(time=stamp(timedelta(hours=2))), limits=limits)
    assert detail.startswith("attribute 'time' lies ") and "600 s of clock skew" in detail
