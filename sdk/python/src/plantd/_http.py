"""One authenticated REST call: the bearer token on the request, one retry
with a renewed token when the server answers 401, httpx's failures and
non-2xx answers turned into :mod:`plantd.errors` exceptions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from ._identity_routes import IDENTITY_ROUTES
from ._routes import ROUTES
from .auth import TokenSource
from .errors import NetworkError, Refused, RequestTimeout, from_response

#: Query values the API takes: ``None`` leaves the parameter out.
Params = Mapping[str, str | int | float | bool | None]

#: The SDK's user agent.
USER_AGENT = "plantd-python/0.1.0"


def route(method: str, template: str, **segments: str) -> tuple[str, str, str]:
    """``(method, template, path)`` for a route of the proxy's or identity's document.

    Each ``{name}`` of ``template`` is replaced by ``segments[name]``,
    percent-encoded (``topic`` keeps its ``/``: it is the API's catch-all).
    """
    path = template
    for name, value in segments.items():
        path = path.replace("{" + name + "}", quote(value, safe="/" if name == "topic" else ""))
    return method, template, path


def documented(method: str, template: str) -> bool:
    """Whether the proxy's or identity's OpenAPI document has this route."""
    return (method, template) in ROUTES or (method, template) in IDENTITY_ROUTES


class Transport:
    """Authenticated requests on one ``httpx.AsyncClient`` (connection pool)."""

    def __init__(self, http: httpx.AsyncClient, auth: TokenSource, timeout: float) -> None:
        #: The pool, with the base URL.
        self.http = http
        #: Where tokens come from.
        self.auth = auth
        #: Default time limit of one call, seconds.
        self.timeout = timeout

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Sends the request with a bearer token; on 401 renews the token once
        and sends again. Returns 2xx answers and those in ``ok_statuses``;
        raises :class:`~plantd.errors.PlantdError` (a subclass per status)
        for the others, :class:`~plantd.errors.RequestTimeout` when no answer
        came within ``timeout`` (default: the client's) and
        :class:`~plantd.errors.NetworkError` when the connection failed.
        Cancelling the caller cancels the request.
        """
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        limit = self.timeout if timeout is None else timeout

        async def attempt(token: str) -> httpx.Response:
            all_headers = {"authorization": f"Bearer {token}", **(headers or {})}
            try:
                return await self.http.request(
                    method,
                    path,
                    params=query,
                    json=json,
                    content=content,
                    headers=all_headers,
                    timeout=limit,
                )
            except httpx.TimeoutException as e:
                raise RequestTimeout(f"{method} {path}: no answer within {limit} s") from e
            except httpx.TransportError as e:
                raise NetworkError(f"{method} {path}: {e!r}") from e

        token = await self.auth.token()
        response = await attempt(token)
        if response.status_code == 401:
            try:
                renewed = await self.auth.refused(token)
            except Refused as e:
                # Say what the server said, and that renewing did not help.
                raise Refused(f"{from_response(response).message} ({e.message})") from e
            response = await attempt(renewed)
        if response.is_success or response.status_code in ok_statuses:
            return response
        raise from_response(response)


def _param(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
