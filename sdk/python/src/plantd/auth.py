"""Where the SDK gets bearer tokens.

* :class:`StaticToken` — a service-account or device token (or one from
  ``plantd token``): used as it is, never renewed; when the server refuses
  it, calls fail with :class:`~plantd.errors.Refused`.
* :class:`ClientCredentials` — a service account's or device's client id
  and secret: a token from ``POST /v1/auth/token``, renewed the same way.
* :class:`PasswordSession` — a user's login: ``POST /v1/auth/login`` once,
  then ``POST /v1/auth/refresh`` shortly before the access token expires or
  when the server refuses it. Identity rotates refresh tokens (each is good
  for one use, and reusing one revokes the whole login), so refreshes are
  serialised by an :class:`asyncio.Lock` and a caller that waited for a
  refresh another made uses its result instead of refreshing again.

Neither shows a token or password in ``repr`` or ``str``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import httpx
from pydantic import ValidationError

from .errors import NetworkError, PlantdError, Refused, RequestTimeout, from_response
from .identity_models import TokenResponse

#: Renew this many seconds before the access token's expiry.
RENEW_EARLY_SECS = 30.0


class TokenSource(Protocol):
    """Gives a currently valid access token, and a new one when the server refused one."""

    async def token(self) -> str:
        """A currently valid access token."""
        ...

    async def refused(self, stale: str) -> str:
        """The server refused ``stale``: a renewed token, or raise :class:`~plantd.errors.Refused`."""
        ...


class StaticToken:
    """A token given by the caller: used as is, never renewed."""

    __slots__ = ("_token",)

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("an empty token")
        self._token = token

    async def token(self) -> str:
        return self._token

    async def refused(self, stale: str) -> str:
        raise Refused("the token was refused and a static token cannot be renewed")

    def __repr__(self) -> str:
        return "StaticToken(…)"


class ClientCredentials:
    """A service account's or device's credentials (OAuth client credentials):
    ``POST /v1/auth/token`` for an access token, again shortly before it
    expires or when the server refuses it. The secret is kept (it is how
    tokens are renewed) and never shown. A deactivated or deleted account
    gets no new token: :class:`~plantd.errors.Refused`."""

    def __init__(self, http: httpx.AsyncClient, client_id: str, client_secret: str) -> None:
        self._http = http
        self._id = client_id
        self._secret = client_secret
        self._access = ""
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def client_id(self) -> str:
        """The account's client id."""
        return self._id

    async def token(self) -> str:
        if self._access and time.monotonic() < self._expires_at - RENEW_EARLY_SECS:
            return self._access
        return await self._renew(self._access)

    async def refused(self, stale: str) -> str:
        return await self._renew(stale)

    def __repr__(self) -> str:
        return f"ClientCredentials(client_id={self._id!r})"

    async def _renew(self, stale: str) -> str:
        async with self._lock:
            if self._access and self._access != stale and time.monotonic() < self._expires_at - RENEW_EARLY_SECS:
                return self._access
            grant = {"grant_type": "client_credentials", "client_id": self._id, "client_secret": self._secret}
            try:
                response = await self._http.post("/v1/auth/token", json=grant)
            except httpx.TimeoutException as e:
                raise RequestTimeout(f"POST /v1/auth/token: {e}") from e
            except httpx.TransportError as e:
                raise NetworkError(f"POST /v1/auth/token: {e}") from e
            if response.status_code in (400, 401, 403):
                raise Refused(f"no token for {self._id}: {from_response(response).message}")
            if response.is_error:
                raise from_response(response)
            self._access, self._expires_at = _tokens(response, "/v1/auth/token")[:2]
            return self._access


class PasswordSession:
    """A user's session, with refresh-token rotation (see the module's doc).

    Build one with :meth:`login`; :meth:`logout` ends it on the server.
    """

    def __init__(self, http: httpx.AsyncClient, email: str) -> None:
        """A session not logged in yet; :meth:`login` is the usual way to get one."""
        self._http = http
        self._email = email
        self._access = ""
        self._refresh = ""
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        # The refresh under way: it runs to its end even if the caller that
        # started it is cancelled (its answer holds the only valid refresh
        # token), and whoever takes the lock next waits for it.
        self._inflight: asyncio.Task[str] | None = None
        self._ended = False

    @classmethod
    async def login(cls, http: httpx.AsyncClient, email: str, password: str) -> PasswordSession:
        """Logs in on ``http``'s base URL. The password is not kept.

        Raises :class:`~plantd.errors.UnauthorizedError` for bad credentials
        and :class:`~plantd.errors.TooManyRequestsError` while throttled.
        """
        session = cls(http, email)
        await session._exchange("/v1/auth/login", {"email": email, "password": password})
        return session

    @property
    def email(self) -> str:
        """Who is logged in."""
        return self._email

    async def token(self) -> str:
        if self._ended:
            raise Refused("the session was logged out")
        if self._access and time.monotonic() < self._expires_at - RENEW_EARLY_SECS:
            return self._access
        return await self._renew(self._access)

    async def refused(self, stale: str) -> str:
        if self._ended:
            raise Refused("the session was logged out")
        return await self._renew(stale)

    async def logout(self) -> None:
        """Ends the login on the server: its access token is revoked (live
        sockets using it close) and its refresh tokens stop working."""
        async with self._lock:
            if self._ended:
                return
            try:
                response = await self._http.post(
                    "/v1/auth/logout",
                    json={"refresh_token": self._refresh},
                    headers={"authorization": f"Bearer {self._access}"},
                )
            except httpx.TimeoutException as e:
                raise RequestTimeout(f"POST /v1/auth/logout: {e}") from e
            except httpx.TransportError as e:
                raise NetworkError(f"POST /v1/auth/logout: {e}") from e
            if response.is_error:
                raise from_response(response)
            self._ended = True
            self._access = ""
            self._refresh = ""

    def __repr__(self) -> str:
        state = "logged out" if self._ended else "active"
        return f"PasswordSession(email={self._email!r}, {state})"

    async def _renew(self, stale: str) -> str:
        # One refresh at a time: a second with the same refresh token would be
        # a reuse, which identity answers by revoking the whole login.
        async with self._lock:
            if self._ended:
                raise Refused("the session was logged out")
            fresh = self._access and self._access != stale
            if fresh and time.monotonic() < self._expires_at - RENEW_EARLY_SECS:
                return self._access  # renewed by whoever held the lock before us
            if self._inflight is None or self._inflight.done():
                if not self._refresh:
                    raise Refused("the session has no refresh token")
                self._inflight = asyncio.create_task(self._exchange("/v1/auth/refresh", {"refresh_token": self._refresh}))
                # Its failure is raised to the awaiting caller; if that caller
                # was cancelled, retrieving it here keeps asyncio quiet.
                self._inflight.add_done_callback(_retrieve)
            try:
                return await asyncio.shield(self._inflight)
            except PlantdError as e:
                if e.status in (400, 401, 403):
                    raise Refused(f"the session cannot be renewed: {e.message}") from e
                raise

    async def _exchange(self, path: str, body: dict[str, str]) -> str:
        try:
            response = await self._http.post(path, json=body)
        except httpx.TimeoutException as e:
            raise RequestTimeout(f"POST {path}: {e}") from e
        except httpx.TransportError as e:
            raise NetworkError(f"POST {path}: {e}") from e
        if response.is_error:
            raise from_response(response)
        self._access, self._expires_at, self._refresh = _tokens(response, path)
        return self._access


def _tokens(response: httpx.Response, path: str) -> tuple[str, float, str]:
    """(access token, when to consider it expired on the monotonic clock,
    refresh token or "") from identity's answer (its document's
    ``TokenResponse``)."""
    try:
        tokens = TokenResponse.model_validate_json(response.content)
    except ValidationError as e:
        raise PlantdError(response.status_code, "bad_response", f"POST {path}: not a token answer: {e}") from e
    if not tokens.access_token:
        raise PlantdError(response.status_code, "bad_response", f"POST {path}: no access_token in the answer")
    return tokens.access_token, time.monotonic() + float(tokens.expires_in), tokens.refresh_token or ""


def _retrieve(task: asyncio.Task[str]) -> None:
    if not task.cancelled():
        task.exception()
