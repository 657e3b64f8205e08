"""The async client: every call typed, errors as exceptions, one live connection.

::

    async with await Client.login("http://127.0.0.1:8080", "me@example.com", password) as plantd:
        recipe = await plantd.get_state("plant", "recipe")
        async for m in plantd.history("plant-1", "line1/#"):
            ...

Every method raises :class:`~plantd.errors.PlantdError` (a subclass per
kind) on failure; ``timeout`` (seconds) limits one call, and cancelling the
calling task cancels the request. Paged routes (history, logs, analytics
results, audit) are async iterators that follow the API's cursors.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from ._http import USER_AGENT, Params, Transport, route
from .auth import ClientCredentials, PasswordSession, StaticToken, TokenSource
from .errors import ClosedError, PlantdError, from_response
from .live import Live, LiveOptions
from .models import (
    Aggregate,
    AggregatesPage,
    AlertList,
    AlertRecord,
    Cancelled,
    Command,
    HistoryEntry,
    HistoryPage,
    KeyHistory,
    KeyList,
    LogLine,
    LogsPage,
    Message,
    Order,
    PendingList,
    ScopeList,
    Sent,
    Series,
    SiteHealth,
)
from .identity_models import Claims
from .records import Alert, AuditRecord, Site

#: A time the API takes: RFC 3339 text, or ms since the epoch.
TimeArg = str | int

#: A page of a cursor-paged route.
_Page = TypeVar("_Page", HistoryPage, LogsPage, AggregatesPage)


@dataclass(frozen=True)
class Versioned:
    """A state value and the ETag to update it with (``if_match``)."""

    #: The value: parsed JSON when it was stored as JSON, ``str`` for
    #: ``text/*``, else the bytes.
    value: Any
    #: Its ETag (``"<revision>"``).
    etag: str
    #: The content type it was stored with.
    content_type: str
    #: The bytes as stored.
    raw: bytes = field(repr=False)


@dataclass(frozen=True)
class Reply:
    """A device's answer to a service call."""

    #: The answer's bytes.
    content: bytes
    #: Its content type, when the device gave one.
    content_type: str | None

    def text(self) -> str:
        """The answer as UTF-8 text."""
        return self.content.decode("utf-8")

    def json(self) -> Any:
        """The answer parsed as JSON."""
        return json.loads(self.content)


def payload_fields(payload: str | bytes) -> dict[str, str]:
    """``payload`` (text) or ``payload_base64`` (bytes), as the API takes them."""
    if isinstance(payload, bytes):
        return {"payload_base64": base64.b64encode(payload).decode("ascii")}
    return {"payload": payload}


class Client:
    """The plantd client (async). Build it with :meth:`login` or
    :meth:`with_token`; close it with :meth:`aclose` or ``async with``.

    ``live`` is the WebSocket: subscriptions as async iterators that resume
    across reconnects, and publishing commands.
    """

    def __init__(
        self,
        url: str,
        auth: TokenSource,
        *,
        timeout: float = 30.0,
        http: httpx.AsyncClient | None = None,
        live: LiveOptions | None = None,
    ) -> None:
        """A client of the API at ``url`` (``http://127.0.0.1:8080``) with
        tokens from ``auth``. ``http`` shares a connection pool (its base URL
        must be ``url``); ``timeout`` is the default limit of one call."""
        self._url = url.rstrip("/")
        self._own_http = http is None
        self._http = http or _new_http(self._url, timeout)
        self._auth = auth
        self._transport = Transport(self._http, auth, timeout)
        self._live = Live(self._url, auth, live or LiveOptions())
        self._closed = False

    @classmethod
    async def login(cls, url: str, email: str, password: str, *, timeout: float = 30.0, live: LiveOptions | None = None) -> Client:
        """Logs in with a password; the session renews (and rotates) its
        refresh token by itself. The password is not kept."""
        http = _new_http(url.rstrip("/"), timeout)
        try:
            session = await PasswordSession.login(http, email, password)
        except BaseException:
            await http.aclose()
            raise
        client = cls(url, session, timeout=timeout, http=http, live=live)
        client._own_http = True
        return client

    @classmethod
    def with_token(cls, url: str, token: str, *, timeout: float = 30.0, live: LiveOptions | None = None) -> Client:
        """With a service-account or device token (never renewed)."""
        return cls(url, StaticToken(token), timeout=timeout, live=live)

    @classmethod
    def with_client_credentials(
        cls, url: str, client_id: str, client_secret: str, *, timeout: float = 30.0, live: LiveOptions | None = None
    ) -> Client:
        """With a service account's or device's client id and secret: tokens
        from ``POST /v1/auth/token``, renewed before they expire."""
        http = _new_http(url.rstrip("/"), timeout)
        client = cls(url, ClientCredentials(http, client_id, client_secret), timeout=timeout, http=http, live=live)
        client._own_http = True
        return client

    @property
    def url(self) -> str:
        """The API's base URL."""
        return self._url

    @property
    def auth(self) -> TokenSource:
        """Where the client's tokens come from."""
        return self._auth

    @property
    def live(self) -> Live:
        """The live connection (opened by the first subscription or publish)."""
        return self._live

    async def aclose(self) -> None:
        """Closes the live connection and the HTTP pool."""
        if self._closed:
            return
        self._closed = True
        await self._live.aclose()
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"Client(url={self._url!r}, auth={self._auth!r})"

    async def logout(self) -> None:
        """Logs a password session out: its access token is revoked (live
        subscriptions end with :class:`~plantd.errors.Refused`) and its
        refresh tokens stop working."""
        if not isinstance(self._auth, PasswordSession):
            raise PlantdError(0, "unsupported", "only a password session logs out; revoke service-account and device tokens through the API")
        await self._auth.logout()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Any route, authenticated, with errors raised as for the typed calls."""
        self._check_open()
        return await self._transport.send(method, path, params=params, json=json, content=content, headers=headers, timeout=timeout)

    # --- identity ---------------------------------------------------------

    async def whoami(self, *, timeout: float | None = None) -> Claims:
        """The caller's verified token claims: who, which organisation, roles, permissions."""
        return Claims.model_validate(await self._json(route("GET", "/v1/auth/whoami"), timeout=timeout))

    # --- sites (identity) -------------------------------------------------

    async def sites(self, *, org: str | None = None, timeout: float | None = None) -> list[Site]:
        """Your organisation's sites (the superadmin: every one, or ``org``'s)."""
        body = await self._json(route("GET", "/v1/sites"), params={"org": org}, timeout=timeout)
        items = body.get("sites", body) if isinstance(body, dict) else body
        return [Site.model_validate(s) for s in items]

    async def site(self, site: str, *, timeout: float | None = None) -> Site:
        """One site's record."""
        return Site.model_validate(await self._json(route("GET", "/v1/sites/{id}", id=site), timeout=timeout))

    async def health(self, site: str, *, timeout: float | None = None) -> SiteHealth:
        """Whether the site's edge is connected, its backlog and uplink, its firing alerts."""
        return SiteHealth.model_validate(await self._json(route("GET", "/v1/sites/{site}/health", site=site), timeout=timeout))

    # --- state -------------------------------------------------------------

    async def scopes(self, *, timeout: float | None = None) -> list[str]:
        """The state scopes you may read."""
        body = await self._json(route("GET", "/v1/state/scopes"), timeout=timeout)
        return ScopeList.model_validate(body).scopes

    async def create_scope(self, scope: str, *, timeout: float | None = None) -> None:
        """Creates a scope (:class:`~plantd.errors.ConflictError` when it exists)."""
        await self._send(route("POST", "/v1/state/scopes"), json={"scope": scope}, timeout=timeout)

    async def delete_scope(self, scope: str, *, timeout: float | None = None) -> None:
        """Deletes a scope, its keys and their history."""
        await self._send(route("DELETE", "/v1/state/scopes/{scope}", scope=scope), timeout=timeout)

    async def state_keys(self, scope: str, *, timeout: float | None = None) -> dict[str, int]:
        """The scope's keys and their revisions."""
        body = await self._json(route("GET", "/v1/state/{scope}", scope=scope), timeout=timeout)
        return {k.key: k.revision for k in KeyList.model_validate(body).keys}

    async def get_state(self, scope: str, key: str, *, timeout: float | None = None) -> Versioned | None:
        """A state value and its ETag; ``None`` when the key does not exist
        (in a scope that does not exist either: the API answers both alike)."""
        response = await self._send(route("GET", "/v1/state/{scope}/{key}", scope=scope, key=key), timeout=timeout, ok_statuses=(404,))
        if _absent(response, "key "):
            return None
        content_type = response.headers.get("content-type", "application/octet-stream")
        raw = response.content
        value: Any = raw
        if _is_json(content_type):
            value = json.loads(raw)
        elif content_type.lower().startswith("text/"):
            value = raw.decode("utf-8", "replace")
        return Versioned(value=value, etag=response.headers.get("etag", ""), content_type=content_type, raw=raw)

    async def put_state(
        self,
        scope: str,
        key: str,
        value: Any,
        *,
        if_match: str | None = None,
        create_only: bool = False,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> str:
        """Writes a state value and returns its new ETag.

        ``value`` is sent as JSON unless it is ``bytes`` (sent as they are,
        ``application/octet-stream`` or ``content_type``). With ``if_match``
        (an ETag from :meth:`get_state`) the write happens only if nobody
        changed the value since — else :class:`~plantd.errors.ConflictError`;
        ``create_only`` writes only if the key does not exist.
        """
        headers: dict[str, str] = {}
        if if_match is not None:
            headers["if-match"] = if_match
        if create_only:
            headers["if-none-match"] = "*"
        if isinstance(value, bytes):
            body = value
            headers["content-type"] = content_type or "application/octet-stream"
        else:
            body = json.dumps(value).encode("utf-8")
            headers["content-type"] = content_type or "application/json"
        response = await self._send(route("PUT", "/v1/state/{scope}/{key}", scope=scope, key=key), content=body, headers=headers, timeout=timeout)
        return str(response.headers.get("etag", ""))

    async def delete_state(self, scope: str, key: str, *, if_match: str | None = None, timeout: float | None = None) -> None:
        """Deletes a key (with ``if_match``: only if unchanged)."""
        headers = {"if-match": if_match} if if_match is not None else {}
        await self._send(route("DELETE", "/v1/state/{scope}/{key}", scope=scope, key=key), headers=headers, timeout=timeout)

    async def state_history(self, scope: str, key: str, *, timeout: float | None = None) -> list[HistoryEntry]:
        """The key's revisions, oldest first (``revision``, ``operation``, ``time``, …)."""
        body = await self._json(route("GET", "/v1/state/{scope}/{key}/history", scope=scope, key=key), timeout=timeout)
        return KeyHistory.model_validate(body).history

    # --- telemetry ----------------------------------------------------------

    async def last(self, site: str, topic: str, *, timeout: float | None = None) -> Message | None:
        """The last message on ``topic``; ``None`` when there is none
        (:class:`~plantd.errors.NotFoundError` for an unknown site)."""
        response = await self._send(route("GET", "/v1/sites/{site}/last", site=site), params={"topic": topic}, timeout=timeout, ok_statuses=(404,))
        if _absent(response, "telemetry for "):
            return None
        return Message.model_validate_json(response.content)

    async def history(
        self,
        site: str,
        filter: str = "#",
        *,
        since: TimeArg | None = None,
        until: TimeArg | None = None,
        order: Order = Order.desc,
        page_size: int = 100,
        timeout: float | None = None,
    ) -> AsyncIterator[Message]:
        """Stored messages of ``site`` on topics matching ``filter``, newest
        first (``order=Order.asc``: oldest first), page by page."""
        params: dict[str, str | int | None] = {
            "filter": filter,
            "from": since,
            "to": until,
            "order": order.value,
            "limit": page_size,
        }
        async for page in self._pages(route("GET", "/v1/sites/{site}/history", site=site), params, HistoryPage, timeout):
            for m in page.messages:
                yield m

    async def series(
        self,
        site: str,
        topic: str,
        *,
        since: TimeArg | None = None,
        until: TimeArg | None = None,
        buckets: int | None = None,
        agg: str | None = None,
        field: str | None = None,
        timeout: float | None = None,
    ) -> Series:
        """One topic's readings folded into at most ``buckets`` values, for a chart."""
        params = {"topic": topic, "from": since, "to": until, "buckets": buckets, "agg": agg, "field": field}
        return Series.model_validate(await self._json(route("GET", "/v1/sites/{site}/series", site=site), params=params, timeout=timeout))

    # --- commands and services ----------------------------------------------

    async def send_command(
        self,
        site: str,
        topic: str,
        payload: str | bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        ttl_secs: int | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> Sent:
        """Sends a command to the site's devices on ``topic``; the answer's
        ``sequence`` is its id (:meth:`cancel_command`)."""
        command = Command(topic=topic, qos=qos, retain=retain, ttl_secs=ttl_secs, content_type=content_type, **payload_fields(payload))
        body = command.model_dump(exclude_none=True)
        return Sent.model_validate(await self._json(route("POST", "/v1/sites/{site}/commands", site=site), json=body, timeout=timeout))

    async def pending_commands(self, site: str, *, limit: int = 100, timeout: float | None = None) -> PendingList:
        """Commands not delivered yet (queued, held, cancel requested), oldest first."""
        params: dict[str, str | int] = {"state": "pending", "limit": limit}
        return PendingList.model_validate(await self._json(route("GET", "/v1/sites/{site}/commands", site=site), params=params, timeout=timeout))

    async def cancel_command(self, site: str, id: int, *, timeout: float | None = None) -> Cancelled:
        """Cancels a pending command (``state``: ``cancelled``, or ``cancel_requested`` while the edge is offline)."""
        r = route("DELETE", "/v1/sites/{site}/commands/{id}", site=site, id=str(id))
        return Cancelled.model_validate(await self._json(r, timeout=timeout))

    async def call(
        self,
        site: str,
        topic: str,
        body: str | bytes = b"",
        *,
        content_type: str | None = None,
        timeout_ms: int = 10_000,
        timeout: float | None = None,
    ) -> Reply:
        """Calls a service a device serves on ``topic`` (MQTT 5 request and
        response) and returns its answer. :class:`~plantd.errors.UnavailableError`
        when no device serves it, :class:`~plantd.errors.GatewayTimeoutError`
        when none answers within ``timeout_ms``."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        kind = content_type or ("text/plain; charset=utf-8" if isinstance(body, str) else "application/octet-stream")
        limit = timeout if timeout is not None else max(self._transport.timeout, timeout_ms / 1000 + 5)
        response = await self._send(
            route("POST", "/v1/sites/{site}/call/{topic}", site=site, topic=topic),
            params={"timeout_ms": timeout_ms},
            content=data,
            headers={"content-type": kind},
            timeout=limit,
        )
        return Reply(content=response.content, content_type=response.headers.get("content-type"))

    # --- logs, alerts, analytics, audit ----------------------------------------

    async def logs(
        self,
        site: str | None = None,
        *,
        source: str | None = None,
        level: str | None = None,
        filter: str | None = None,
        since: TimeArg | None = None,
        until: TimeArg | None = None,
        forward: bool = False,
        page_size: int = 100,
        timeout: float | None = None,
    ) -> AsyncIterator[LogLine]:
        """Log lines (newest first; ``forward``: oldest first), page by page.
        ``filter`` is the API's filter language (``|= "overheat"``)."""
        params: dict[str, str | int | None] = {
            "site": site,
            "source": source,
            "level": level,
            "filter": filter,
            "from": since,
            "to": until,
            "direction": "forward" if forward else "backward",
            "limit": page_size,
        }
        async for page in self._pages(route("GET", "/v1/logs"), params, LogsPage, timeout):
            for line in page.records:
                yield line

    async def alerts(
        self,
        *,
        state: str | None = None,
        site: str | None = None,
        severity: str | None = None,
        rule: str | None = None,
        timeout: float | None = None,
    ) -> list[Alert]:
        """Alert instances of your organisation (``state``: ``firing``, …)."""
        params = {"state": state, "site": site, "severity": severity, "rule": rule}
        body = await self._json(route("GET", "/v1/alerts"), params=params, timeout=timeout)
        return AlertList.model_validate(body).alerts

    async def ack_alert(self, id: str, note: str | None = None, *, timeout: float | None = None) -> AlertRecord:
        """Acknowledges a firing alert; returns the ``ack`` record."""
        body = {"note": note} if note is not None else {}
        answer = await self._json(route("POST", "/v1/alerts/{id}/ack", id=id), json=body, timeout=timeout)
        return AlertRecord.model_validate(answer)

    async def aggregates(
        self,
        site: str,
        *,
        rule: str | None = None,
        key: str | None = None,
        since: TimeArg | None = None,
        until: TimeArg | None = None,
        page_size: int = 100,
        timeout: float | None = None,
    ) -> AsyncIterator[Aggregate]:
        """Analytics results of the site (the latest revision of each window), page by page."""
        params: dict[str, str | int | None] = {"rule": rule, "key": key, "from": since, "to": until, "limit": page_size}
        async for page in self._pages(route("GET", "/v1/sites/{site}/aggregates", site=site), params, AggregatesPage, timeout):
            for a in page.aggregates:
                yield a

    async def audit(
        self,
        *,
        org: str | None = None,
        actor: str | None = None,
        target: str | None = None,
        action: str | None = None,
        since: str | None = None,
        until: str | None = None,
        page_size: int = 100,
        timeout: float | None = None,
    ) -> AsyncIterator[AuditRecord]:
        """The organisation's audit trail, oldest first, page by page."""
        params: dict[str, str | int | None] = {
            "org": org,
            "actor": actor,
            "target": target,
            "action": action,
            "since": since,
            "until": until,
            "limit": page_size,
        }
        cursor: str | None = None
        while True:
            body = await self._json(route("GET", "/v1/audit"), params={**params, "cursor": cursor}, timeout=timeout)
            for record in body["records"]:
                yield AuditRecord.model_validate(record)
            cursor = body.get("next_cursor")
            if not cursor:
                return

    # --- plumbing ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the client was closed")

    async def _send(
        self,
        r: tuple[str, str, str],
        *,
        params: Params | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> httpx.Response:
        self._check_open()
        method, _template, path = r
        return await self._transport.send(
            method, path, params=params, json=json, content=content, headers=headers, timeout=timeout, ok_statuses=ok_statuses
        )

    async def _json(self, r: tuple[str, str, str], *, params: Params | None = None, json: Any = None, timeout: float | None = None) -> Any:
        response = await self._send(r, params=params, json=json, timeout=timeout)
        try:
            return response.json()
        except ValueError as e:
            raise PlantdError(response.status_code, "bad_response", f"{r[0]} {r[2]}: the answer is not JSON") from e

    async def _pages(
        self, r: tuple[str, str, str], params: Mapping[str, str | int | None], page: type[_Page], timeout: float | None
    ) -> AsyncIterator[_Page]:
        cursor: str | None = None
        while True:
            body = await self._json(r, params={**params, "cursor": cursor}, timeout=timeout)
            answer = page.model_validate(body)
            yield answer
            cursor = answer.next_cursor
            if not cursor:
                return


def _new_http(url: str, timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=timeout, headers={"user-agent": USER_AGENT})


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _absent(response: httpx.Response, what: str) -> bool:
    """Whether a 404 says the thing asked for is absent (its message starts
    with ``what``), not its container (an unknown site or scope: raised)."""
    if response.status_code != 404:
        return False
    error = from_response(response)
    if error.message.startswith(what):
        return True
    raise error
