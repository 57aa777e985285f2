"""The error classes the API renders: status, machine code, detail and Retry-After (the body
a client reads is checked through the API, in test_api.py)."""

from __future__ import annotations

import pytest

from sluice.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    RateLimited,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BadRequest("invalid_event", "attribute 'id' is required"), 400),
        (Unauthorized("invalid_credentials", "the API key is malformed"), 401),
        (Forbidden("forbidden", "this key may not read tenant b"), 403),
        (TooLarge("request_too_large", "over 5242880 bytes"), 413),
        (UnsupportedMediaType("unsupported_media_type", "send application/cloudevents+json"), 415),
        (RateLimited("rate_limited", "10000 requests a minute", retry_after=7), 429),
        (Unavailable("kafka_unavailable", "Kafka did not acknowledge", retry_after=2), 503),
        (ApiError("internal_error", "a bug"), 500),
    ],
)
def test_each_error_has_its_status_code_and_detail(error: ApiError, status: int) -> None:
    assert isinstance(error, ApiError)
    assert error.status == status
    assert str(error) == f"{status} {error.code}: {error.detail}"


def test_a_rate_limit_carries_its_retry_after() -> None:
    error = RateLimited("rate_limited", "slow down", retry_after=30)

    assert error.retry_after == 30


def test_client_errors_have_no_retry_after_by_default() -> None:
    assert BadRequest("invalid_event", "x").retry_after is None


def test_a_negative_retry_after_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="retry_after is a number of seconds >= 0, got -1"):
        Unavailable("kafka_unavailable", "down", retry_after=-1)


def test_api_errors_are_exceptions_callers_can_catch_by_class() -> None:
    with pytest.raises(TooLarge) as caught:
        raise TooLarge("event_too_large", "events[2]: too big")

    assert caught.value.code == "event_too_large"
