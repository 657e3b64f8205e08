"""What the SDK does without a plantd server: errors, secrets, backoff,
time limits and the routes it calls being in the proxy's document."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

import plantd
from plantd import Client, LiveOptions, StaticToken
from plantd._http import documented
from plantd.errors import error_for_code, from_response
from plantd.live import Live
from stack import PKG

pytestmark = pytest.mark.anyio


def test_an_error_answer_becomes_its_typed_exception() -> None:
    body = b'{"error": "conflict", "message": "revision 3 is not the latest (5)"}'
    e = from_response(httpx.Response(409, content=body))
    assert isinstance(e, plantd.ConflictError)
    assert (e.status, e.error, e.message) == (409, "conflict", "revision 3 is not the latest (5)")
    assert str(e) == "409 conflict: revision 3 is not the latest (5)"
    throttled = from_response(httpx.Response(429, headers={"retry-after": "7"}, content=b'{"error":"too_many_requests","message":"wait"}'))
    assert isinstance(throttled, plantd.TooManyRequestsError) and throttled.retry_after == 7.0
    bare = from_response(httpx.Response(502, content=b"bad gateway"))
    assert (type(bare), bare.status, bare.error, bare.message) == (plantd.PlantdError, 502, "http_502", "bad gateway")
    assert isinstance(error_for_code("forbidden", "no grant"), plantd.ForbiddenError)
    assert isinstance(plantd.RequestTimeout("x"), TimeoutError)


def test_no_secret_in_repr() -> None:
    token = "eyJhbGciOiJFZERTQSJ9.secret.signature"
    client = Client.with_token("http://127.0.0.1:9", token)
    for shown in (repr(client), str(client), repr(client.auth), repr(client.live), repr(StaticToken(token))):
        assert "secret" not in shown and token not in shown, shown


def test_backoff_grows_with_jitter_up_to_its_cap() -> None:
    live = Live("http://127.0.0.1:9", StaticToken("t"), LiveOptions(backoff=0.25, max_backoff=4.0))
    for attempt, cap in [(0, 0.25), (1, 0.5), (3, 2.0), (4, 4.0), (50, 4.0)]:
        delays = [live._delay(attempt) for _ in range(200)]
        assert all(cap / 2 <= d <= cap for d in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 1, "jittered"


def test_every_route_the_client_calls_is_in_the_proxys_document() -> None:
    source = (PKG / "src/plantd/client.py").read_text(encoding="utf-8")
    calls = re.findall(r'route\("([A-Z]+)", "([^"]+)"', source)
    assert len(calls) > 20
    # Identity's routes: identity has no OpenAPI document yet.
    identity = {("GET", "/v1/sites"), ("GET", "/v1/sites/{id}"), ("GET", "/v1/audit")}
    missing = [c for c in calls if c not in identity and not documented(*c)]
    assert not missing, f"not in /openapi.json (regenerate: scripts/gen_api.py): {missing}"


async def test_a_silent_server_is_a_timeout_and_a_closed_port_a_network_error() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # never answers

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        client = Client.with_token(f"http://127.0.0.1:{port}", "t", timeout=0.3)
        with pytest.raises(plantd.RequestTimeout) as e:
            await client.scopes()
        assert e.value.status == 0 and e.value.error == "timeout"
        # A caller's own limit cancels the call.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.scopes(timeout=5)
        await client.aclose()
        for w in accepted:
            w.close()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    client = Client.with_token(f"http://127.0.0.1:{closed}", "t")
    with pytest.raises(plantd.NetworkError) as n:
        await client.scopes()
    assert n.value.status == 0 and n.value.error == "network"
    await client.aclose()
    with pytest.raises(plantd.ClosedError):
        await client.scopes()


async def test_a_live_connection_with_no_server_reconnects_until_closed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    client = Client.with_token(f"http://127.0.0.1:{closed}", "t", live=LiveOptions(backoff=0.01, max_backoff=0.05))
    states: AsyncIterator[plantd.LinkState] = client.live.states()
    sub = client.live.subscribe("plant-1", "#")
    seen = [await anext(states) for _ in range(3)]
    assert seen[:2] == [plantd.LinkState.CLOSED, plantd.LinkState.CONNECTING]
    assert seen[2] is plantd.LinkState.RECONNECTING
    await client.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(sub)
    assert [s async for s in states] == [plantd.LinkState.CLOSED]
