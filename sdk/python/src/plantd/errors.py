"""Every failure the SDK reports is a :class:`PlantdError`.

It carries the HTTP ``status`` (0 when no answer came), the API's ``error``
code (``not_found``, ``forbidden``, ``conflict``, … or ``network`` /
``timeout`` / ``refused`` / ``closed`` / ``slow_consumer`` from the SDK
itself) and its human ``message``. A subclass per kind lets callers catch
what they handle::

    try:
        await client.put_state("plant", "recipe", value, if_match=etag)
    except ConflictError:
        ...  # someone changed it since we read it: read again, retry
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import httpx


class PlantdError(Exception):
    """A call failed: ``status`` (0 without an answer), ``error`` (code), ``message``."""

    #: The code of this kind when the server gives none.
    default_error: ClassVar[str] = "error"

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        #: HTTP status, or 0 when the server never answered.
        self.status = status
        #: The API's ``error`` field, or the SDK's own code.
        self.error = error
        #: The human-readable message.
        self.message = message

    def __str__(self) -> str:
        where = f"{self.status} " if self.status else ""
        return f"{where}{self.error}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, error={self.error!r}, message={self.message!r})"


class BadRequestError(PlantdError):
    """400: the request is malformed; the message names what."""


class UnauthorizedError(PlantdError):
    """401: the token is missing, invalid, expired or revoked (after one renewal, if possible)."""


class ForbiddenError(PlantdError):
    """403: the token lacks a permission (named in the message), or the site is another organisation's."""


class NotFoundError(PlantdError):
    """404: no such thing (or not in your organisation)."""


class ConflictError(PlantdError):
    """409: the ETag given with ``If-Match`` is stale, or the thing exists already."""


class TooLargeError(PlantdError):
    """413: the body is over the API's limit (512 KiB)."""


class TooManyRequestsError(PlantdError):
    """429: throttled (a login); ``retry_after`` seconds, when the server said."""

    def __init__(self, status: int, error: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(status, error, message)
        #: Seconds to wait before trying again, from ``Retry-After``.
        self.retry_after = retry_after


class UnavailableError(PlantdError):
    """503: a dependency is down, or (service calls) no device serves the topic."""


class GatewayTimeoutError(PlantdError):
    """504: the server gave up waiting (a service call nobody answered in time)."""


class NetworkError(PlantdError):
    """No answer: the connection failed or was lost (status 0, ``network``)."""

    default_error = "network"

    def __init__(self, message: str) -> None:
        super().__init__(0, "network", message)


class RequestTimeout(PlantdError, TimeoutError):
    """No answer within the call's time limit (status 0, ``timeout``). Also a :class:`TimeoutError`."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "timeout", message)


class Refused(UnauthorizedError):
    """The token was refused for good: revoked, or expired with no way to renew it.

    A live subscription ends with this instead of reconnecting forever, and
    the link's state becomes ``refused``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(401, "refused", message)


class ClosedError(PlantdError):
    """The client or live connection was closed."""

    def __init__(self, message: str = "the connection was closed") -> None:
        super().__init__(0, "closed", message)


class SlowConsumer(PlantdError):
    """A subscription's reader fell too far behind; the subscription ended."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "slow_consumer", message)


# Aliases with the TypeScript SDK's names.
RefusedError = Refused

_BY_STATUS: dict[int, type[PlantdError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: TooLargeError,
    429: TooManyRequestsError,
    503: UnavailableError,
    504: GatewayTimeoutError,
}

# The status a WebSocket error code stands for (the socket has no status).
_STATUS_OF_CODE: dict[str, int] = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "too_large": 413,
    "unavailable": 503,
    "no_responder": 503,
    "timeout": 504,
}


def error_for(status: int, error: str, message: str) -> PlantdError:
    """The exception of the kind ``status`` stands for."""
    kind = _BY_STATUS.get(status, PlantdError)
    if kind is TooManyRequestsError:
        return TooManyRequestsError(status, error, message)
    return kind(status, error, message)


def error_for_code(error: str, message: str) -> PlantdError:
    """The exception for an ``{"op": "error"}`` frame of the live socket."""
    return error_for(_STATUS_OF_CODE.get(error, 0), error, message)


def from_response(response: httpx.Response) -> PlantdError:
    """The exception for a failed response: its ``{error, message}`` body when it has one."""
    status = response.status_code
    error = f"http_{status}"
    message = response.reason_phrase or f"HTTP {status}"
    try:
        body: Any = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        if isinstance(body.get("error"), str):
            error = body["error"]
        if isinstance(body.get("message"), str):
            message = body["message"]
    elif response.content and len(response.content) < 512:
        message = response.content.decode("utf-8", "replace").strip() or message
    e = error_for(status, error, message)
    if isinstance(e, TooManyRequestsError):
        try:
            e.retry_after = float(response.headers.get("retry-after", ""))
        except ValueError:
            e.retry_after = None
    return e
