"""The errors the Sluice API answers with: one class per HTTP status.

Every error a client can cause is an :class:`ApiError` with a 4xx status, a stable snake_case
``code`` that programs branch on, and a ``detail`` for the person reading it that says what was
wrong and what to send instead. The API renders it as ``{"error": code, "detail": detail}`` and,
where ``retry_after`` is set, a ``Retry-After`` header. A 5xx (:class:`Unavailable`) is kept for
Sluice's own dependencies failing, never for anything a client sent.

Codes raised by this package so far: ``invalid_event``, ``invalid_batch``, ``malformed_json``
(400); ``invalid_credentials`` (401); ``request_too_large``, ``event_too_large``,
``batch_too_large`` (413); ``unsupported_media_type`` (415).
"""

from __future__ import annotations

from typing import ClassVar


class ApiError(Exception):
    """An error answered to the client; subclasses fix the HTTP status.

    Raised as the base class it is a 500: something Sluice itself got wrong.
    """

    status: ClassVar[int] = 500

    def __init__(self, code: str, detail: str, *, retry_after: int | None = None) -> None:
        if retry_after is not None and retry_after < 0:
            raise ValueError(f"retry_after is a number of seconds >= 0, got {retry_after}")
        super().__init__(f"{self.status} {code}: {detail}")
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


class BadRequest(ApiError):
    """400: the request is well-addressed but its content is wrong (invalid event, bad JSON)."""

    status = 400


class Unauthorized(ApiError):
    """401: no usable credential; the client must authenticate (again)."""

    status = 401


class Forbidden(ApiError):
    """403: the credential is valid but does not allow this request."""

    status = 403


class TooLarge(ApiError):
    """413: the request, one of its events or its batch exceeds a configured limit."""

    status = 413


class UnsupportedMediaType(ApiError):
    """415: the Content-Type is not one Sluice reads."""

    status = 415


class RateLimited(ApiError):
    """429: the tenant's request budget is spent; ``retry_after`` says when it refills."""

    status = 429

    def __init__(self, code: str, detail: str, *, retry_after: int) -> None:
        super().__init__(code, detail, retry_after=retry_after)


class Unavailable(ApiError):
    """503: a dependency (Kafka, Redis, PostgreSQL) cannot take the request now; nothing was
    accepted, so the client may resend after ``retry_after`` seconds."""

    status = 503

    def __init__(self, code: str, detail: str, *, retry_after: int) -> None:
        super().__init__(code, detail, retry_after=retry_after)
