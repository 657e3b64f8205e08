"""The live connection: ``/v1/ws`` subscriptions as async iterators, and
publishing commands, with one reconnect state machine.

::

    async with client.live.subscribe("plant-1", "line1/+/temp") as sub:
        async for m in sub:
            print(m.sequence, m.topic, m.text())

One WebSocket carries every subscription. It opens with the first
subscription (or publish). After any loss — network, server restart,
expired token — the connection waits a backoff (exponential, with
jitter), renews the token when the server refused it, opens a new socket
and subscribes every subscription again from its last sequence + 1
(sequenced subscriptions, ``docs/api.md``): a subscriber neither misses
nor repeats a message the server stored. A token refused for good
(revoked, or a static token the server no longer takes) ends every
subscription with :class:`~plantd.errors.Refused` and the state
``refused`` instead of retrying forever. :meth:`Live.states` reports
every change.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ._feed import Feed
from ._http import USER_AGENT
from .auth import TokenSource
from .errors import ClosedError, NetworkError, PlantdError, Refused, RequestTimeout, SlowConsumer, error_for_code
from .models import LogLine, Sent

#: What a subscription yields: :class:`LiveMessage` or, for a tail, :class:`~plantd.models.LogLine`.
T = TypeVar("T")

#: Opens a WebSocket: ``websockets.asyncio.client.connect`` or a wrapper of
#: it (a test's that can cut the socket, a proxy's).
Connector = Callable[..., Awaitable[ClientConnection]]

#: The close code and reasons the proxy uses for tokens (docs/api.md).
POLICY_VIOLATION = 1008
REASON_REVOKED = "token revoked"
REASON_EXPIRED = "token expired"


class LinkState(StrEnum):
    """The live connection's state (also a stream: :meth:`Live.states`)."""

    CONNECTING = "connecting"
    """Opening the first socket."""
    CONNECTED = "connected"
    """Open; every subscription is (re)subscribed."""
    RECONNECTING = "reconnecting"
    """Lost; trying again after a backoff."""
    REFUSED = "refused"
    """The server refused the token for good (revoked, or not renewable)."""
    CLOSED = "closed"
    """No socket: closed by :meth:`Live.aclose`, or lost with nothing to
    resume (the next subscription opens one)."""


@dataclass(frozen=True)
class LiveMessage:
    """One message of a subscription."""

    #: The site.
    site: str
    #: The MQTT topic it was published on.
    topic: str
    #: The payload's bytes.
    payload: bytes
    #: The headers the edge set (``Plantd-Qos``, …).
    headers: Mapping[str, str]
    #: Its sequence in the stream ``PLANTD_TELEMETRY``.
    sequence: int
    #: When it was stored (RFC 3339).
    time: str

    def text(self) -> str:
        """The payload as UTF-8 text."""
        return self.payload.decode("utf-8")

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)


@dataclass
class LiveOptions:
    """Options of the live connection."""

    #: First reconnect delay, seconds; doubles up to ``max_backoff``, with jitter.
    backoff: float = 0.25
    #: Longest reconnect delay, seconds.
    max_backoff: float = 15.0
    #: Messages a subscription holds for a reader that is behind. When they
    #: are all unread the subscription is held: unsubscribed on the server,
    #: and subscribed again from where the reader is once it has read half
    #: of them — the rest waits in the server's stream, nothing is lost
    #: (decision 0059).
    buffer: int = 10_000
    #: Time limit of opening a socket (TCP, TLS and the HTTP upgrade), seconds.
    open_timeout: float = 10.0
    #: Default time limit of :meth:`Live.publish`, seconds.
    publish_timeout: float = 10.0
    #: How sockets are opened (default ``websockets``' ``connect``).
    connect: Connector | None = field(default=None, repr=False)


class _Flow(Enum):
    """Where a subscription is in its flow control."""

    #: Asked for on this socket: its items count once the server confirms
    #: it (anything before that is a held consumer's leftover).
    AWAITING = "awaiting"
    #: Confirmed: its items are delivered.
    FLOWING = "flowing"
    #: Its reader let ``buffer`` items pile up: unsubscribed on the server
    #: until the reader has read half of them.
    HELD = "held"


class Subscription(Generic[T]):
    """A live subscription: ``async for m in sub`` (or ``await sub.next()``);
    a :meth:`Live.tail` is one too, of log lines.

    It ends when :meth:`close` is called (also by ``async with``), and with
    an error when the server refuses it (:class:`~plantd.errors.ForbiddenError`,
    …) or the token (:class:`~plantd.errors.Refused`). A ``break`` out of
    ``async for`` does not end it: use ``async with`` or :meth:`close`.
    """

    def __init__(
        self,
        live: Live,
        id: str,
        site: str,
        filter: str,
        from_sequence: int,
        request: dict[str, Any] | None = None,
    ) -> None:
        self._live = live
        self._id = id
        #: The site.
        self.site = site
        #: The MQTT topic filter (a tail: its log filter, maybe empty).
        self.filter = filter
        #: The operation's own fields (``op`` …), before ``id`` and the position.
        self._request: dict[str, Any] = request or {"op": "subscribe", "site": site, "filter": filter}
        #: Where delivery resumes after a reconnect: the last delivered
        #: sequence + 1 (0: not known yet).
        self.resume_from = from_sequence
        #: The server said retention had dropped messages it should have
        #: resumed from (``missed: true``): delivery went on from the oldest kept.
        self.missed = False
        self._feed: Feed[T] = Feed()
        self._flow = _Flow.AWAITING

    async def next(self) -> T:
        """The next message (``StopAsyncIteration`` once closed)."""
        item = await self._feed.next()
        self._live._drained(self._id, self)
        return item

    def close(self) -> None:
        """Ends the subscription; the iterator ends after what it holds."""
        self._feed.end()
        self._live._unsubscribe(self._id)

    async def aclose(self) -> None:
        """:meth:`close`, as a coroutine."""
        self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        return await self.next()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Subscription(site={self.site!r}, filter={self.filter!r}, resume_from={self.resume_from})"


class StateStream:
    """The live connection's state now and each change after it, until the
    connection is closed (or :meth:`close`)."""

    def __init__(self, live: Live) -> None:
        self._live = live
        self._feed: Feed[LinkState] = Feed()

    def close(self) -> None:
        """Stops following the state."""
        self._feed.end()
        self._live._listeners.discard(self)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> LinkState:
        return await self._feed.next()


class Live:
    """The live connection (see the module's doc). ``Client.live`` is one."""

    def __init__(self, url: str, auth: TokenSource, options: LiveOptions | None = None) -> None:
        base = url.rstrip("/")
        if base.startswith("https://"):
            self._ws_url = "wss://" + base[len("https://") :] + "/v1/ws"
        elif base.startswith("http://"):
            self._ws_url = "ws://" + base[len("http://") :] + "/v1/ws"
        else:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._auth = auth
        self._options = options or LiveOptions()
        self._connect: Connector = self._options.connect or connect
        self._subs: dict[str, Subscription[Any]] = {}
        self._listeners: set[StateStream] = set()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._ids = itertools.count(1)
        self._state = LinkState.CLOSED
        self._task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self._outbox: asyncio.Queue[str] | None = None
        self._publishers = 0
        self._closed = False

    @property
    def state(self) -> LinkState:
        """The state now."""
        return self._state

    def states(self) -> StateStream:
        """The state now and every change after it, until :meth:`aclose`."""
        stream = StateStream(self)
        stream._feed.push(self._state)
        if self._closed:
            stream._feed.end()
        else:
            self._listeners.add(stream)
        return stream

    def subscribe(self, site: str, filter: str, *, from_sequence: int | None = None) -> Subscription[LiveMessage]:
        """Messages of ``site`` on topics matching the MQTT ``filter``, from
        the next one stored (or from ``from_sequence``), across reconnects.
        Call it from a running event loop."""
        if self._closed:
            raise ClosedError("the live connection was closed")
        if from_sequence is not None and from_sequence < 1:
            raise ValueError("from_sequence starts at 1")
        id = f"s{next(self._ids)}"
        sub: Subscription[LiveMessage] = Subscription(self, id, site, filter, from_sequence or 0)
        self._subs[id] = sub
        self._post(self._subscribe_frame(id, sub))
        self._ensure_running()
        return sub

    def tail(
        self,
        site: str,
        *,
        filter: str | None = None,
        source: str | None = None,
        level: str | None = None,
        from_sequence: int | None = None,
    ) -> Subscription[LogLine]:
        """The log lines of ``site`` that pass ``filter`` (the log query
        language, ``'|= "overheat" | temp > 80'``), ``source`` (exact or a
        glob) and ``level`` (this and above), parsed, from the next one
        stored (or ``from_sequence`` of ``PLANTD_LOGS``), resumed at the last
        sequence + 1 across reconnects like a subscription. Call it from a
        running event loop."""
        if self._closed:
            raise ClosedError("the live connection was closed")
        if from_sequence is not None and from_sequence < 1:
            raise ValueError("from_sequence starts at 1")
        request: dict[str, Any] = {"op": "tail", "site": site}
        for name, value in (("filter", filter), ("source", source), ("level", level)):
            if value:
                request[name] = value
        id = f"t{next(self._ids)}"
        sub: Subscription[LogLine] = Subscription(self, id, site, filter or "", from_sequence or 0, request)
        self._subs[id] = sub
        self._post(self._subscribe_frame(id, sub))
        self._ensure_running()
        return sub

    async def publish(
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
        """Sends a command over the socket (as ``POST …/commands`` does) and
        returns where it was stored. If the socket is lost before the server
        confirms, :class:`~plantd.errors.NetworkError` says it may or may not
        have been sent: it is not sent again (a command is not idempotent)."""
        if self._closed:
            raise ClosedError("the live connection was closed")
        frame: dict[str, Any] = {"op": "command", "site": site, "topic": topic, "qos": qos, "retain": retain}
        if isinstance(payload, bytes):
            frame["payload_base64"] = base64.b64encode(payload).decode("ascii")
        else:
            frame["payload"] = payload
        if ttl_secs is not None:
            frame["ttl_secs"] = ttl_secs
        if content_type is not None:
            frame["content_type"] = content_type
        limit = self._options.publish_timeout if timeout is None else timeout
        id = f"c{next(self._ids)}"
        self._publishers += 1
        try:
            async with asyncio.timeout(limit):
                self._ensure_running()
                while self._state is not LinkState.CONNECTED:
                    if self._state is LinkState.REFUSED:
                        raise Refused("the live connection was refused")
                    if self._closed:
                        raise ClosedError("the live connection was closed")
                    await self._changed()
                answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                self._pending[id] = answer
                frame["id"] = id
                self._post(json.dumps(frame))
                return Sent.model_validate(await answer)
        except TimeoutError as e:
            raise RequestTimeout(f"publish on {topic}: no confirmation within {limit} s") from e
        finally:
            self._publishers -= 1
            self._pending.pop(id, None)

    async def aclose(self) -> None:
        """Closes the socket and ends every subscription and state stream."""
        if self._closed:
            return
        self._closed = True
        ws, self._ws = self._ws, None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if ws is not None:
            await ws.close(1000, "closed by the client")
        for sub in self._subs.values():
            sub._feed.end()
        self._subs.clear()
        self._fail_pending(ClosedError("the live connection was closed"))
        self._set_state(LinkState.CLOSED)
        for listener in list(self._listeners):
            listener._feed.end()
        self._listeners.clear()

    def __repr__(self) -> str:
        return f"Live(url={self._ws_url!r}, state={self._state.value}, subscriptions={len(self._subs)})"

    # --- the state machine ----------------------------------------------------

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="plantd-live")
            # Said at once, so that a caller waiting for a change does not
            # read a previous run's `refused` or `closed` as this run's.
            self._set_state(LinkState.CONNECTING)

    async def _run(self) -> None:
        try:
            await self._reconnect_loop()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug, not a network event: say so to every reader
            error = PlantdError(0, "internal", f"the live connection failed: {e!r}")
            for sub in self._subs.values():
                sub._feed.end(error)
            self._subs.clear()
            self._fail_pending(error)
            self._set_state(LinkState.CLOSED)

    async def _reconnect_loop(self) -> None:
        attempt = 0
        first = True
        refused_token: str | None = None  # the token the server refused, to renew
        while not self._closed:
            if not self._subs and self._publishers == 0:
                self._set_state(LinkState.CLOSED)  # nothing to resume
                return
            self._set_state(LinkState.CONNECTING if first else LinkState.RECONNECTING)
            if not first:
                await asyncio.sleep(self._delay(attempt))
                attempt += 1
            first = False
            renewed = refused_token is not None
            try:
                token = await (self._auth.refused(refused_token) if refused_token is not None else self._auth.token())
            except Refused as e:
                self._refuse(e)
                return
            except PlantdError:
                continue  # identity unreachable: try again after a backoff
            refused_token = None
            try:
                ws = await self._connect(
                    self._ws_url,
                    additional_headers={"authorization": f"Bearer {token}"},
                    user_agent_header=USER_AGENT,
                    open_timeout=self._options.open_timeout,
                    max_size=16 * 1024 * 1024,
                )
            except InvalidStatus as e:
                if e.response.status_code == 401:
                    if renewed:
                        # A token renewed just now is refused too: renewing
                        # again would loop (a token for another audience, an
                        # account without API access).
                        self._refuse(Refused(f"the server refused a renewed token: {_reason(e.response.body)}"))
                        return
                    refused_token = token  # expired or revoked: renew (a static token cannot)
                continue
            except InvalidURI as e:
                self._refuse(PlantdError(0, "bad_url", str(e)))
                return
            except (OSError, TimeoutError, InvalidHandshake):
                continue
            attempt = 0
            code, reason = await self._serve(ws)
            self._fail_pending(NetworkError("the socket was lost before the server confirmed the command; it may or may not have been sent"))
            if self._closed:
                return
            if code == POLICY_VIOLATION and reason in (REASON_REVOKED, REASON_EXPIRED):
                # Renew before the next socket. A revoked token is refused for
                # good unless its session can renew it: a logout or an
                # administrator's "log out everywhere" revokes the refresh
                # tokens too (Refused), a role taken away does not.
                refused_token = token

    async def _serve(self, ws: ClientConnection) -> tuple[int | None, str | None]:
        """Runs one socket until it closes: (close code, reason)."""
        outbox: asyncio.Queue[str] = asyncio.Queue()
        # With no await between these lines, a subscribe() racing the
        # connect is either in _subs (sent here) or posted to this outbox.
        for id, sub in self._subs.items():
            # A held subscription waits for its reader (_drained).
            if sub._flow is not _Flow.HELD:
                sub._flow = _Flow.AWAITING
                outbox.put_nowait(self._subscribe_frame(id, sub))
        self._outbox = outbox
        self._ws = ws
        self._set_state(LinkState.CONNECTED)
        writer = asyncio.get_running_loop().create_task(self._write(ws, outbox))
        try:
            async for raw in ws:
                if isinstance(raw, str):
                    self._frame(raw)
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self._outbox = None
            self._ws = None
        return ws.close_code, ws.close_reason

    @staticmethod
    async def _write(ws: ClientConnection, outbox: asyncio.Queue[str]) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.send(await outbox.get())

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with jitter: between half and all of the cap."""
        cap: float = min(self._options.max_backoff, self._options.backoff * (2 ** min(attempt, 30)))
        return cap / 2 + random.random() * cap / 2

    def _refuse(self, error: PlantdError) -> None:
        for sub in self._subs.values():
            sub._feed.end(error)
        self._subs.clear()
        self._fail_pending(error)
        self._set_state(LinkState.REFUSED)

    def _set_state(self, state: LinkState) -> None:
        if self._state is state:
            return
        self._state = state
        for listener in self._listeners:
            listener._feed.push(state)
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def _changed(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    def _fail_pending(self, error: PlantdError) -> None:
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(error)
        self._pending.clear()

    # --- frames -------------------------------------------------------------------

    def _post(self, frame: str) -> None:
        """Sends a frame on the open socket; dropped when there is none (a
        reconnect subscribes every subscription again)."""
        if self._outbox is not None:
            self._outbox.put_nowait(frame)

    @staticmethod
    def _subscribe_frame(id: str, sub: Subscription[Any]) -> str:
        frame: dict[str, Any] = {**sub._request, "id": id}
        if sub.resume_from > 0:
            frame["from_sequence"] = sub.resume_from
        else:
            frame["sequenced"] = True
        return json.dumps(frame)

    def _unsubscribe(self, id: str) -> None:
        if self._subs.pop(id, None) is not None:
            self._post(json.dumps({"op": "unsubscribe", "id": id}))

    def _frame(self, raw: str) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            return
        if not isinstance(frame, dict):
            return
        id = frame.get("id")
        op = frame.get("op")
        if not isinstance(id, str):
            return
        if id in self._pending:
            answer = self._pending[id]
            if answer.done():
                return
            if op == "sent":
                answer.set_result(frame)
            elif op == "error":
                answer.set_exception(error_for_code(str(frame.get("error")), str(frame.get("message"))))
            return
        sub = self._subs.get(id)
        if sub is None:
            return
        if op in ("subscribed", "tailing"):
            if sub._flow is _Flow.AWAITING:
                sub._flow = _Flow.FLOWING
            start = frame.get("from_sequence")
            if isinstance(start, int) and sub.resume_from == 0:
                sub.resume_from = start
            if frame.get("missed") is True:
                sub.missed = True
        elif op == "message":
            self._deliver(id, sub, frame)
        elif op == "log":
            self._deliver_log(id, sub, frame)
        elif op == "error":
            if sub._flow is _Flow.HELD:
                return  # the held consumer's last words: it is gone
            if frame.get("error") == "unavailable":
                # The server's consumer failed: subscribe again from resume_from.
                asyncio.get_running_loop().call_later(self._options.backoff, self._resubscribe, id, sub)
                return
            self._subs.pop(id, None)
            sub._feed.end(error_for_code(str(frame.get("error")), str(frame.get("message"))))

    def _resubscribe(self, id: str, sub: Subscription[Any]) -> None:
        if self._subs.get(id) is sub and sub._flow is not _Flow.HELD:
            sub._flow = _Flow.AWAITING
            self._post(self._subscribe_frame(id, sub))

    def _hold(self, id: str, sub: Subscription[Any]) -> None:
        """The reader of ``sub`` let ``buffer`` items pile up: unsubscribe it
        on the server until the reader has read half (:meth:`_drained`).
        What it has not yielded is in the server's stream, from ``resume_from``."""
        sub._flow = _Flow.HELD
        self._post(json.dumps({"op": "unsubscribe", "id": id}))

    def _drained(self, id: str, sub: Subscription[Any]) -> None:
        """The reader took an item: a held subscription whose reader is down
        to half its buffer is subscribed again from ``resume_from`` (with no
        socket, the next one subscribes it)."""
        if sub._flow is _Flow.HELD and len(sub._feed) <= self._options.buffer // 2 and self._subs.get(id) is sub:
            sub._flow = _Flow.AWAITING
            self._post(self._subscribe_frame(id, sub))

    def _deliver_log(self, id: str, sub: Subscription[Any], frame: dict[str, Any]) -> None:
        record = frame.get("record")
        if not isinstance(record, dict):
            return
        try:
            line = LogLine.model_validate(record)
        except ValueError:
            return
        sequence = line.sequence
        if sub._flow is not _Flow.FLOWING or (sequence and sequence < sub.resume_from):
            return
        if len(sub._feed) >= self._options.buffer and sequence:
            self._hold(id, sub)
            return
        if len(sub._feed) >= self._options.buffer:
            sub._feed.end(SlowConsumer(f"tail of {sub.site}: more than {self._options.buffer} lines unread"))
            self._unsubscribe(id)
            return
        if sequence:
            sub.resume_from = sequence + 1
        sub._feed.push(line)

    def _deliver(self, id: str, sub: Subscription[Any], frame: dict[str, Any]) -> None:
        sequence = frame.get("sequence")
        sequence = sequence if isinstance(sequence, int) else 0
        # Never twice: a resume starts at resume_from, but be strict anyway.
        if sub._flow is not _Flow.FLOWING or (sequence and sequence < sub.resume_from):
            return
        if len(sub._feed) >= self._options.buffer and sequence:
            self._hold(id, sub)
            return
        if len(sub._feed) >= self._options.buffer:
            sub._feed.end(SlowConsumer(f"subscription {sub.filter}: more than {self._options.buffer} messages unread"))
            self._unsubscribe(id)
            return
        if sequence:
            sub.resume_from = sequence + 1
        payload = frame.get("payload")
        encoded = frame.get("payload_base64")
        if isinstance(payload, str):
            data = payload.encode("utf-8")
        elif isinstance(encoded, str):
            data = base64.b64decode(encoded)
        else:
            data = b""
        headers = frame.get("headers")
        sub._feed.push(
            LiveMessage(
                site=str(frame.get("site", sub.site)),
                topic=str(frame.get("topic", "")),
                payload=data,
                headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {},
                sequence=sequence,
                time=str(frame.get("time", "")),
            )
        )


def _reason(body: bytes | bytearray | None) -> str:
    """The ``message`` of an error body, or the body."""
    text = bytes(body or b"").decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        return text or "401"
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        return str(parsed["message"])
    return text
