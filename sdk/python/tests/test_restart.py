"""Across a restart of the server itself, the subscriber gets every number
exactly once and in order.

Driven by ``cli/tests/it/sdk_python.rs``
(``the_python_sdk_across_a_server_restart``), which runs this file alone
with ``$PLANTD_SDK_RESTART`` set and plays the device and the operator:
this side subscribes, warms the subscription up and prints
``restart: ready``; the driver's MQTT device publishes 1..5, the driver
restarts ``plantd up`` (SIGTERM, same data directory and ports), its
device publishes 6..10 at once — this side is typically still
reconnecting, so they come from the stream's history — and 11..15 once
this side printed ``restart: state connected`` again. Each state change
is printed as ``restart: state <state>``. Without ``$PLANTD_SDK_RESTART`` the file holds
no test (the suite's ordinary run has no restart to drive).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from plantd import Client, LinkState, LiveOptions, StateStream
from stack import Stack, numbers, warm_up, within

pytestmark = pytest.mark.anyio

#: The topic the driver's device counts on.
TOPIC = "sdk/restart"
#: How long one number may take: a restart of the whole stack on a loaded machine.
NUMBER_WAIT = 90.0


def say(event: str) -> None:
    """One line for the driver."""
    print(f"restart: {event}", flush=True)


async def report(states: StateStream) -> None:
    """Prints every state change for the driver."""
    async for state in states:
        say(f"state {state}")


async def until(states: StateStream, want: LinkState) -> None:
    while await within(30, f"state {want}", states) is not want:
        pass


if os.environ.get("PLANTD_SDK_RESTART"):

    async def test_across_a_server_restart_every_number_arrives_once_in_order(stack: Stack) -> None:
        options = LiveOptions(backoff=0.25, max_backoff=1.0)
        async with asyncio.timeout(240), await Client.login(stack.url, stack.email, stack.password, live=options) as client:
            states = client.live.states()
            async with client.live.subscribe(stack.site, TOPIC) as sub:
                await until(states, LinkState.CONNECTED)
                # The socket is open; the subscription is in place once a
                # publish comes through.
                await warm_up(stack, TOPIC, sub)
                reporter = asyncio.create_task(report(client.live.states()))
                say("ready")
                got = await numbers(sub, [], 15, NUMBER_WAIT)
                assert got == list(range(1, 16))
                # Nothing more: no repeat queued behind.
                with pytest.raises(AssertionError):
                    await within(0.5, "a repeat", sub)
                assert client.live.state is LinkState.CONNECTED, "no reconnect loop"
                reporter.cancel()
                say("done")
