"""The SDK against a real ``plantd up`` with real MQTT devices (see conftest)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

import plantd
from plantd import (
    Client,
    ConflictError,
    LinkState,
    LiveOptions,
    NotFoundError,
    Order,
    PlantdError,
    Refused,
    StateStream,
)
from stack import Stack, eventually, mqtt_args, numbers, publish, warm_up, within

pytestmark = pytest.mark.anyio


async def until(states: StateStream, want: LinkState, seconds: float = 15.0) -> None:
    """Waits until the state stream reports ``want``."""
    while await within(seconds, f"state {want}", states) is not want:
        pass


async def test_login_state_round_trip_and_a_conflict_that_names_itself(stack: Stack) -> None:
    async with asyncio.timeout(40):
        async with await Client.login(stack.url, stack.email, stack.password) as client:
            scope = f"sdkpy-{uuid.uuid4().hex[:8]}"
            await client.create_scope(scope)
            assert scope in await client.scopes()
            assert await client.get_state(scope, "recipe") is None
            etag = await client.put_state(scope, "recipe", {"temp": 180})
            got = await client.get_state(scope, "recipe")
            assert got is not None
            assert (got.value, got.etag) == ({"temp": 180}, etag)
            await client.put_state(scope, "recipe", {"temp": 190}, if_match=etag)
            with pytest.raises(ConflictError) as stale:
                await client.put_state(scope, "recipe", {"temp": 200}, if_match=etag)
            assert (stale.value.status, stale.value.error) == (409, "conflict")
            assert stale.value.message
            with pytest.raises(ConflictError):
                await client.put_state(scope, "recipe", {"temp": 0}, create_only=True)
            now = await client.get_state(scope, "recipe")
            assert now is not None and now.value == {"temp": 190}
            # Bytes stay bytes.
            await client.put_state(scope, "blob", b"\x00\xff")
            blob = await client.get_state(scope, "blob")
            assert blob is not None and blob.value == b"\x00\xff"
            keys = await client.state_keys(scope)
            assert set(keys) == {"recipe", "blob"}
            # The typed answers (decision 0050): revisions and the history's
            # entries are values, not dicts.
            assert f'"{keys["recipe"]}"' == now.etag
            history = await client.state_history(scope, "recipe")
            assert [h.revision for h in history] == sorted(h.revision for h in history)
            assert (history[-1].revision, history[-1].operation) == (keys["recipe"], "put")
            # Secrets never show.
            for shown in (repr(client), repr(client.auth), repr(client.live), str(client.auth)):
                assert stack.password not in shown
                assert "ey" not in shown  # no JWT


async def test_a_device_publish_reaches_async_for_last_and_history(stack: Stack) -> None:
    async with asyncio.timeout(60), await Client.login(stack.url, stack.email, stack.password) as client:
        states = client.live.states()
        async with client.live.subscribe(stack.site, "sdk/+/temp") as sub:
            await until(states, LinkState.CONNECTED)
            # The subscription is in place once the server answered; a
            # first publish may race it, so publish until one arrives.
            m = None
            for i in range(15):
                await publish(stack, "sdk/oven/temp", f"21.{i}")
                try:
                    m = await within(2, "the device's publish", sub)
                    break
                except AssertionError:
                    continue
            assert m is not None, "the subscription yields the device's publish"
            assert m.topic == "sdk/oven/temp" and m.text().startswith("21.")
            assert m.sequence > 0 and m.site == stack.site
        last = await client.last(stack.site, "sdk/oven/temp")
        assert last is not None and last.sequence >= m.sequence
        assert await client.last(stack.site, "sdk/never/published") is None
        with pytest.raises(NotFoundError):
            await client.last("no-such-site", "sdk/oven/temp")
        # History pages through cursors (two a page).
        for n in range(3):
            await publish(stack, "sdk/oven/temp", f"30.{n}")
        seen = [
            h.sequence
            async for h in client.history(stack.site, "sdk/oven/temp", order=Order.asc, page_size=2)
        ]
        assert len(seen) >= 4 and seen == sorted(seen) and len(set(seen)) == len(seen)
        states.close()


async def test_a_command_reaches_an_mqtt_subscriber_over_rest_and_over_the_socket(stack: Stack) -> None:
    async with asyncio.timeout(60), await Client.login(stack.url, stack.email, stack.password) as client:
        for how, want in (("rest", "open"), ("socket", "close")):
            # A topic per way: a command of the first still queued (its TTL
            # not over) would reach the second subscriber.
            topic = f"sdk/valve/{how}"
            valve = await asyncio.create_subprocess_exec(
                "mosquitto_sub", *mqtt_args(stack, stack.valve), "-q", "1", "-t", topic, "-C", "1", "-W", "20",
                stdout=asyncio.subprocess.PIPE,
            )
            # mosquitto_sub says nothing once its subscription is in place:
            # send (each a new command, short-lived) until it received one.
            got = asyncio.ensure_future(valve.communicate())
            while not got.done():
                if how == "rest":
                    sent = await client.send_command(stack.site, topic, want, ttl_secs=2)
                else:
                    sent = await client.live.publish(stack.site, topic, want, ttl_secs=2)
                assert sent.sequence > 0 and sent.stream == "PLANTD_COMMANDS"
                await asyncio.wait([got], timeout=0.5)
            out, _ = await got
            assert valve.returncode == 0, f"mosquitto_sub got the {how} command"
            assert out.decode().strip() == want


async def test_across_a_cut_socket_every_number_arrives_once_in_order(stack: Stack) -> None:
    sockets: list[ClientConnection] = []

    async def cuttable(*args: Any, **kwargs: Any) -> ClientConnection:
        ws = await connect(*args, **kwargs)
        sockets.append(ws)
        return ws

    options = LiveOptions(backoff=0.05, connect=cuttable)
    async with asyncio.timeout(60), await Client.login(stack.url, stack.email, stack.password, live=options) as client:
        states = client.live.states()
        async with client.live.subscribe(stack.site, "sdk/count") as sub:
            await until(states, LinkState.CONNECTED)
            await warm_up(stack, "sdk/count", sub)
            got: list[int] = []
            for n in range(1, 6):
                await publish(stack, "sdk/count", str(n))
            await numbers(sub, got, 5)
            # The network drops the socket (no close handshake); the device
            # goes on publishing while the SDK reconnects.
            transport = sockets[-1].transport
            transport.abort()
            await until(states, LinkState.RECONNECTING)
            for n in range(6, 13):
                await publish(stack, "sdk/count", str(n))
            await until(states, LinkState.CONNECTED)
            for n in range(13, 16):
                await publish(stack, "sdk/count", str(n))
            await numbers(sub, got, 15)
            assert got == list(range(1, 16))
            assert len(sockets) >= 2, "a second socket was opened"
            # Nothing more: no repeat queued behind.
            with pytest.raises(AssertionError):
                await within(0.5, "a repeat", sub)


async def test_a_reader_slower_than_its_messages_is_paced_and_loses_none(stack: Stack) -> None:
    # Three buffers' worth arrive while nobody reads: the subscription is
    # held on the server, not ended with SlowConsumer, and resumed from
    # where the reader is once it has read half (decision 0059).
    options = LiveOptions(buffer=4)
    async with asyncio.timeout(60), await Client.login(stack.url, stack.email, stack.password, live=options) as client:
        async with client.live.subscribe(stack.site, "sdk/slow") as sub:
            await warm_up(stack, "sdk/slow", sub)
            for n in range(1, 13):
                await publish(stack, "sdk/slow", str(n))
            got = await numbers(sub, [], 12)
            assert got == list(range(1, 13))
            with pytest.raises(AssertionError):
                await within(0.5, "a repeat", sub)


async def test_a_revoked_token_ends_the_stream_with_refused_not_a_reconnect_loop(stack: Stack) -> None:
    async with asyncio.timeout(40), await Client.login(stack.url, stack.email, stack.password) as client:
        states = client.live.states()
        sub = client.live.subscribe(stack.site, "sdk/#")
        await until(states, LinkState.CONNECTED)
        # Logging out revokes the access token and the refresh family: the
        # server closes the socket ("token revoked") and renewal is refused.
        await client.logout()
        with pytest.raises(Refused) as refused:
            await within(10, "the refusal", sub)
        assert refused.value.status == 401 and refused.value.error == "refused"
        await until(states, LinkState.REFUSED)
        with pytest.raises(PlantdError) as e:
            await client.scopes()
        assert e.value.status == 401
        # And it stays refused: no new socket is tried.
        with pytest.raises(AssertionError):
            await within(1, "another state", states)


async def service_account(admin: Client, name: str) -> tuple[str, str]:
    """A new service account with the operator role: (client id, secret)."""
    answer = await admin.request("POST", "/v1/service-accounts", json={"name": name, "roles": ["operator"]})
    creds = answer.json()
    return creds["client_id"], creds["client_secret"]


async def test_a_revoked_static_token_is_refused_at_the_handshake(stack: Stack) -> None:
    async with asyncio.timeout(40), await Client.login(stack.url, stack.email, stack.password) as admin:
        client_id, secret = await service_account(admin, "sdkpy-static")
        async with httpx.AsyncClient(base_url=stack.url) as http:
            grant = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
            token = (await http.post("/v1/auth/token", json=grant)).json()["access_token"]
        async with Client.with_token(stack.url, token) as client:
            assert await client.scopes() is not None  # the token works
            await admin.request("POST", f"/v1/service-accounts/{client_id}/revoke")

            async def refused() -> bool | None:
                try:
                    await client.scopes()
                    return None
                except Refused:
                    return True

            await eventually(10, "the API refusing the revoked token", refused)
            states = client.live.states()
            sub = client.live.subscribe(stack.site, "sdk/#")
            with pytest.raises(Refused):
                await within(10, "the refusal", sub)
            await until(states, LinkState.REFUSED)


async def test_concurrent_renewals_refresh_once(stack: Stack) -> None:
    """Identity revokes a whole login when a refresh token is used twice:
    ten callers renewing at once must cause one refresh, and the session
    must still work after it."""
    async with asyncio.timeout(40), await Client.login(stack.url, stack.email, stack.password) as client:
        session = client.auth
        assert isinstance(session, plantd.PasswordSession)
        stale = await session.token()
        renewed = await asyncio.gather(*(session.refused(stale) for _ in range(10)))
        assert len(set(renewed)) == 1 and renewed[0] != stale
        await client.scopes()  # the login was not revoked: the new token works
        again = await session.refused(renewed[0])
        assert again not in (stale, renewed[0])
        await client.scopes()


async def test_the_rest_of_the_api_answers_typed(stack: Stack) -> None:
    async with asyncio.timeout(40), await Client.login(stack.url, stack.email, stack.password) as client:
        assert stack.site in [s.id for s in await client.sites()]
        health = await client.health(stack.site)
        assert health.site == stack.site
        assert isinstance(await client.alerts(), list)
        assert isinstance([a async for a in client.aggregates(stack.site, rule="sdkpy")], list)
        with pytest.raises(NotFoundError):
            [a async for a in client.aggregates("no-such-site")]
        actions = [r.action async for r in client.audit(action="auth.*", page_size=5)]
        assert "auth.login" in actions
        pending = await client.pending_commands(stack.site)
        assert isinstance(pending.commands, list)
        with pytest.raises(plantd.UnavailableError):
            await client.call(stack.site, "sdk/nobody/home", "hello?", timeout_ms=1000)


async def test_service_account_credentials_survive_a_revocation_and_are_refused_once_deactivated(stack: Stack) -> None:
    async with asyncio.timeout(60), await Client.login(stack.url, stack.email, stack.password) as admin:
        client_id, secret = await service_account(admin, "sdkpy-cc")
        options = LiveOptions(backoff=0.05)
        async with Client.with_client_credentials(stack.url, client_id, secret, live=options) as account:
            assert secret not in repr(account.auth) and secret not in repr(account)
            states = account.live.states()
            async with account.live.subscribe(stack.site, "sdk/cc/#") as sub:
                await until(states, LinkState.CONNECTED)
                await warm_up(stack, "sdk/cc/temp", sub, "the service account's subscription yields the device's publish")
                # Its tokens revoked, not the account: a new token, a new socket.
                await admin.request("POST", f"/v1/service-accounts/{client_id}/revoke")
                await until(states, LinkState.RECONNECTING)
                await until(states, LinkState.CONNECTED)
                await publish(stack, "sdk/cc/temp", "after")
                while (await within(10, "the message after the revocation", sub)).text() != "after":
                    pass
                # Deactivated: no token any more, so the stream ends refused.
                await admin.request("PATCH", f"/v1/service-accounts/{client_id}", json={"active": False})
                with pytest.raises(Refused):
                    while True:
                        await within(10, "the refusal", sub)
                await until(states, LinkState.REFUSED)


async def log(stack: Stack, line: str) -> None:
    """One log line published by the pump device (``$plantd/log/sdk-pump``), acknowledged."""
    proc = await asyncio.create_subprocess_exec(
        "mosquitto_pub", *mqtt_args(stack, stack.pump), "-q", "1", "-t", "$plantd/log/sdk-pump", "-m", line,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()


async def test_a_tail_yields_parsed_log_lines_and_resumes_across_a_cut_socket(stack: Stack) -> None:
    sockets: list[ClientConnection] = []

    async def cuttable(*args: Any, **kwargs: Any) -> ClientConnection:
        ws = await connect(*args, **kwargs)
        sockets.append(ws)
        return ws

    options = LiveOptions(backoff=0.05, connect=cuttable)
    async with asyncio.timeout(60), await Client.login(stack.url, stack.email, stack.password, live=options) as client:
        states = client.live.states()
        async with client.live.tail(stack.site, source="sdk-pump", level="warn") as tail:
            await until(states, LinkState.CONNECTED)
            warm = None
            for i in range(15):
                await log(stack, f"WARN warmup {i}")
                try:
                    warm = await within(2, "a warm-up line", tail)
                    break
                except AssertionError:
                    continue
            assert warm is not None, "the tail yields the device's log line"
            await log(stack, "INFO not shown")
            await log(stack, '{"level":"error","msg":"tail one","temp":95}')
            one = await within(10, "line one", tail)
            while one.message.startswith("warmup"):
                one = await within(10, "line one", tail)
            assert (one.message, one.level, one.source, one.fields["temp"]) == ("tail one", "error", "sdk-pump", 95)
            assert one.stream == "PLANTD_LOGS" and one.sequence > warm.sequence
            # The network drops the socket; the device goes on logging.
            sockets[-1].transport.abort()
            await until(states, LinkState.RECONNECTING)
            await log(stack, "ERROR tail two")
            await until(states, LinkState.CONNECTED)
            await log(stack, "WARN tail three")
            two = await within(10, "line two", tail)
            three = await within(10, "line three", tail)
            assert (two.message, three.message) == ("tail two", "tail three")
            assert three.sequence > two.sequence > one.sequence
            with pytest.raises(AssertionError):
                await within(0.5, "a repeat", tail)
