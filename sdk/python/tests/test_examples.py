"""The examples (``sdk/python/examples``) run against a real ``plantd up``
with real MQTT devices (see conftest)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

import plantd
from plantd import Client, Reply
from plantd.models import LogLine, Message
from stack import Stack, eventually, example, line, mqtt_args, publish

pytestmark = pytest.mark.anyio


async def test_the_paho_device_publishes_logs_and_answers_a_service_call(stack: Stack) -> None:
    env_device = {
        "PLANTD_MQTT_HOST": "127.0.0.1",
        "PLANTD_MQTT_PORT": str(stack.mqtt),
        "PLANTD_DEVICE_ID": stack.pump.id,
        "PLANTD_DEVICE_TOKEN": stack.pump.token,
    }
    device = await example(stack, "device_paho.py", "--interval", "0.5", extra_env=env_device)
    try:
        async with asyncio.timeout(60), await Client.login(stack.url, stack.email, stack.password) as client:
            assert await line(device, 20, "the device's ready line") == "ready"

            # The edge's service subscription may still be on its way: 503
            # (no responder) until it is there.
            async def answer() -> Reply | None:
                try:
                    return await client.call(stack.site, "sdk/pump/svc/status", "status?", timeout_ms=5000)
                except plantd.UnavailableError:
                    return None

            reply = await eventually(20, "an answer from the MQTT 5 device", answer)
            assert reply.json() == {"running": True, "asked": "status?"}
            assert reply.content_type == "application/json"

            async def reading() -> Message | None:
                return await client.last(stack.site, "sdk/pump/temp")

            m = await eventually(20, "the device's reading", reading)
            assert float(m.value if isinstance(m.value, (int, float)) else str(m.value)) > 20

            async def logged() -> LogLine | None:
                async for record in client.logs(stack.site, source="sdk-pump"):
                    if record.message == "pump started":
                        return record
                return None

            record = await eventually(20, "the device's log line", logged)
            assert record.level == "info" and record.fields.get("service") == "sdk/pump/svc/status"
    finally:
        device.terminate()
        await device.wait()
    assert device.returncode == 0


async def test_the_dashboard_feed_prints_live_values(stack: Stack) -> None:
    feed = await example(stack, "dashboard_feed.py", "--filter", "sdk/feed/#", "--count", "1")
    try:
        async with asyncio.timeout(60):
            health = json.loads(await line(feed, 20, "the feed's health line"))
            assert health["site"] == stack.site and isinstance(health["connected"], bool)
            got = None
            for i in range(20):
                await publish(stack, "sdk/feed/temp", f"{40 + i}")
                try:
                    got = json.loads(await line(feed, 1.5, "a live value"))
                    break
                except AssertionError:
                    continue
            assert got is not None, "the feed printed the device's value"
            assert got["topic"] == "sdk/feed/temp" and got["value"] >= 40 and got["sequence"] > 0
            assert await feed.wait() == 0
    finally:
        if feed.returncode is None:
            feed.kill()
            await feed.wait()


async def test_the_command_sender_reaches_an_mqtt_device(stack: Stack) -> None:
    async with asyncio.timeout(60):
        valve = await asyncio.create_subprocess_exec(
            "mosquitto_sub", *mqtt_args(stack, stack.valve), "-q", "1", "-t", "sdk/valve/example", "-C", "1", "-W", "30",
            stdout=asyncio.subprocess.PIPE,
        )
        got = asyncio.ensure_future(valve.communicate())
        ids = []
        while not got.done():
            sender = await example(stack, "command_sender.py", "--topic", "sdk/valve/example", "--payload", "shut", "--ttl", "2")
            out, err = await sender.communicate()
            assert sender.returncode == 0, err.decode()
            ids.append(json.loads(out)["id"])
            await asyncio.wait([got], timeout=0.5)
        received, _ = await got
        assert received.decode().strip() == "shut"
        assert all(i > 0 for i in ids) and ids == sorted(set(ids))


async def test_two_state_jobs_count_every_step_despite_conflicts(stack: Stack) -> None:
    async with asyncio.timeout(60):
        scope = f"sdkpyjobs-{uuid.uuid4().hex[:8]}"
        jobs = [await example(stack, "state_job.py", "--scope", scope, "--key", "batches", "--times", "8") for _ in range(2)]
        outs = [await j.communicate() for j in jobs]
        for j, (_, err) in zip(jobs, outs):
            assert j.returncode == 0, err.decode()
        async with await Client.login(stack.url, stack.email, stack.password) as client:
            total = await client.get_state(scope, "batches")
        assert total is not None and total.value == {"n": 16}
