"""A live subscription outlives its access token: every number exactly
once and in order while the token expires under it, again and again.

Driven by ``cli/tests/it/sdk_python.rs``
(``the_python_sdk_across_token_expiry``), which starts ``plantd up`` with
3-second access tokens and runs this file alone with
``$PLANTD_SDK_EXPIRY`` set: this side logs in (a password session),
subscribes, warms the subscription up and prints ``expiry: ready``; the
driver then stores 1..90 at 10 Hz on the topic (straight to JetStream,
the subject the edge uses), across about three token lifetimes. The
proxy closes the socket (``token expired``) each time the session's token
runs out; the session renews it (refresh rotation) and the subscription
resumes at the last sequence + 1. Without ``$PLANTD_SDK_EXPIRY`` the file
holds no test.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from plantd import Client, LinkState, LiveOptions, StateStream
from stack import Stack, numbers, warm_up, within

pytestmark = pytest.mark.anyio

#: The topic the driver counts on.
TOPIC = "sdk/expiry"
#: How many numbers the driver stores.
COUNT = 90


def say(event: str) -> None:
    """One line for the driver."""
    print(f"expiry: {event}", flush=True)


async def collect(states: StateStream, seen: list[LinkState]) -> None:
    """Keeps every state change."""
    async for state in states:
        seen.append(state)


if os.environ.get("PLANTD_SDK_EXPIRY"):

    async def test_a_token_that_expires_mid_stream_is_renewed_and_every_number_arrives_once(stack: Stack) -> None:
        options = LiveOptions(backoff=0.1, max_backoff=0.2)
        async with asyncio.timeout(120), await Client.login(stack.url, stack.email, stack.password, live=options) as client:
            seen: list[LinkState] = []
            collector = asyncio.create_task(collect(client.live.states(), seen))
            async with client.live.subscribe(stack.site, TOPIC) as sub:
                await warm_up(stack, TOPIC, sub)
                say("ready")
                got = await numbers(sub, [], COUNT, 20)
                assert got == list(range(1, COUNT + 1))
                # Nothing more: no repeat queued behind.
                with pytest.raises(AssertionError):
                    await within(0.5, "a repeat", sub)
            collector.cancel()
            # The socket really was closed and resumed, and never refused.
            assert LinkState.RECONNECTING in seen, seen
            assert LinkState.REFUSED not in seen, seen
            say("done")
