"""The same API for code without an event loop (scripts, notebooks, Flask).

::

    from plantd.sync import Client

    with Client.login("http://127.0.0.1:8080", "me@example.com", password) as plantd:
        print(plantd.last("plant-1", "line1/oven/temp"))
        with plantd.live.subscribe("plant-1", "line1/#") as sub:
            for m in sub:
                print(m.topic, m.text())

A thin facade: each client owns one event loop in a daemon thread and runs
the async :class:`plantd.Client`'s calls there, so behaviour (reconnects,
token renewal, errors) is the async API's. Iterators pull one item at a
time from the async ones. An interrupt (Ctrl-C) while waiting cancels the
call on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar

from . import client as aio
from .errors import RequestTimeout
from .live import LinkState, LiveMessage, LiveOptions, StateStream, Subscription
from .models import LogLine, Sent

P = ParamSpec("P")
T = TypeVar("T")


class _Loop:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="plantd-sync", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as e:
            future.cancel()
            raise RequestTimeout(f"no result within {timeout} s") from e
        except BaseException:
            future.cancel()  # an interrupt: stop the call on the loop too
            raise

    def iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self.run(_anext(items))
                except StopAsyncIteration:
                    return
        finally:
            close = getattr(items, "aclose", None)
            if close is not None and self._loop.is_running():
                self.run(close())

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()


async def _anext(items: AsyncIterator[T]) -> T:
    return await items.__anext__()


async def _call(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Runs a plain function on the loop (what needs a running loop)."""
    return fn(*args, **kwargs)


def _wrap(method: Callable[Concatenate[aio.Client, P], Coroutine[Any, Any, T]]) -> Callable[Concatenate[Client, P], T]:
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._loop.run(method(self._client, *args, **kwargs))

    call.__doc__ = method.__doc__
    call.__name__ = method.__name__
    return call


def _wrap_iter(method: Callable[Concatenate[aio.Client, P], AsyncIterator[T]]) -> Callable[Concatenate[Client, P], Iterator[T]]:
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        return self._loop.iterate(method(self._client, *args, **kwargs))

    call.__doc__ = method.__doc__
    call.__name__ = method.__name__
    return call


class SyncSubscription(Generic[T]):
    """A live subscription (or tail): ``for m in sub``; :meth:`next` with a time limit; :meth:`close`."""

    def __init__(self, loop: _Loop, sub: Subscription[T]) -> None:
        self._loop = loop
        self._sub = sub

    @property
    def resume_from(self) -> int:
        """Where delivery resumes after a reconnect (last sequence + 1)."""
        return self._sub.resume_from

    def next(self, timeout: float | None = None) -> T:
        """The next message; :class:`~plantd.errors.RequestTimeout` after
        ``timeout`` seconds; ``StopIteration`` once closed."""
        try:
            return self._loop.run(self._sub.next(), timeout)
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        """Ends the subscription."""
        self._loop.run(self._sub.aclose())

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> T:
        return self.next()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class SyncLive:
    """The live connection of a :class:`Client` (see :class:`plantd.Live`)."""

    def __init__(self, loop: _Loop, client: aio.Client) -> None:
        self._loop = loop
        self._live = client.live

    @property
    def state(self) -> LinkState:
        """The state now."""
        return self._live.state

    def subscribe(self, site: str, filter: str, *, from_sequence: int | None = None) -> SyncSubscription[LiveMessage]:
        """Messages of ``site`` on ``filter`` across reconnects (see :meth:`plantd.Live.subscribe`)."""
        sub = self._loop.run(_call(self._live.subscribe, site, filter, from_sequence=from_sequence))
        return SyncSubscription(self._loop, sub)

    def tail(
        self,
        site: str,
        *,
        filter: str | None = None,
        source: str | None = None,
        level: str | None = None,
        from_sequence: int | None = None,
    ) -> SyncSubscription[LogLine]:
        """Log lines of ``site`` across reconnects (see :meth:`plantd.Live.tail`)."""
        sub = self._loop.run(
            _call(self._live.tail, site, filter=filter, source=source, level=level, from_sequence=from_sequence)
        )
        return SyncSubscription(self._loop, sub)

    def states(self) -> Iterator[LinkState]:
        """The state now and every change after it, until the client is closed."""
        stream: StateStream = self._loop.run(_call(self._live.states))
        return self._loop.iterate(stream)

    def publish(
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
        """Sends a command over the socket (see :meth:`plantd.Live.publish`)."""
        return self._loop.run(
            self._live.publish(site, topic, payload, qos=qos, retain=retain, ttl_secs=ttl_secs, content_type=content_type, timeout=timeout)
        )


class Client:
    """The plantd client, synchronous. Every method is the async
    :class:`plantd.Client`'s, run to completion."""

    def __init__(self, loop: _Loop, client: aio.Client) -> None:
        """Use :meth:`login` or :meth:`with_token`."""
        self._loop = loop
        self._client = client
        #: The live connection.
        self.live = SyncLive(loop, client)

    @classmethod
    def login(cls, url: str, email: str, password: str, *, timeout: float = 30.0, live: LiveOptions | None = None) -> Client:
        """Logs in with a password (see :meth:`plantd.Client.login`)."""
        loop = _Loop()
        try:
            client = loop.run(aio.Client.login(url, email, password, timeout=timeout, live=live))
        except BaseException:
            loop.stop()
            raise
        return cls(loop, client)

    @classmethod
    def with_token(cls, url: str, token: str, *, timeout: float = 30.0, live: LiveOptions | None = None) -> Client:
        """With a service-account or device token (never renewed)."""
        loop = _Loop()
        client = loop.run(_call(aio.Client.with_token, url, token, timeout=timeout, live=live))
        return cls(loop, client)

    @classmethod
    def with_client_credentials(
        cls, url: str, client_id: str, client_secret: str, *, timeout: float = 30.0, live: LiveOptions | None = None
    ) -> Client:
        """With a service account's or device's client id and secret (see
        :meth:`plantd.Client.with_client_credentials`)."""
        loop = _Loop()
        client = loop.run(_call(aio.Client.with_client_credentials, url, client_id, client_secret, timeout=timeout, live=live))
        return cls(loop, client)

    def close(self) -> None:
        """Closes the live connection, the HTTP pool and the loop's thread."""
        try:
            self._loop.run(self._client.aclose())
        finally:
            self._loop.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"sync.{self._client!r}"

    logout = _wrap(aio.Client.logout)
    request = _wrap(aio.Client.request)
    whoami = _wrap(aio.Client.whoami)
    sites = _wrap(aio.Client.sites)
    site = _wrap(aio.Client.site)
    health = _wrap(aio.Client.health)
    scopes = _wrap(aio.Client.scopes)
    create_scope = _wrap(aio.Client.create_scope)
    delete_scope = _wrap(aio.Client.delete_scope)
    state_keys = _wrap(aio.Client.state_keys)
    get_state = _wrap(aio.Client.get_state)
    put_state = _wrap(aio.Client.put_state)
    delete_state = _wrap(aio.Client.delete_state)
    state_history = _wrap(aio.Client.state_history)
    last = _wrap(aio.Client.last)
    history = _wrap_iter(aio.Client.history)
    series = _wrap(aio.Client.series)
    send_command = _wrap(aio.Client.send_command)
    pending_commands = _wrap(aio.Client.pending_commands)
    cancel_command = _wrap(aio.Client.cancel_command)
    call = _wrap(aio.Client.call)
    logs = _wrap_iter(aio.Client.logs)
    alerts = _wrap(aio.Client.alerts)
    ack_alert = _wrap(aio.Client.ack_alert)
    aggregates = _wrap_iter(aio.Client.aggregates)
    audit = _wrap_iter(aio.Client.audit)
