"""The Python SDK's live subscriber against a raw ``websockets`` client, in
the same run (issue 17's speed item; figures in docs/performance.md).

    PLANTD_SDK_TEST="$(cat cfg.json)" python benches/live_rate.py [--messages 20000] [--rounds 3]

``$PLANTD_SDK_TEST`` is what ``cli/tests/it/common/sdk.rs`` gives the
suites (a running ``plantd up``, the admin's login, a sensor device).

* **Sustained delivery rate:** one subscriber (sequenced, as the SDK
  subscribes) on a fresh topic; once a warm-up reading reached it, a paho
  device publishes ``--messages`` readings (QoS 1, 20 in flight) as fast as
  the edge takes them: messages per second from the start of publishing to
  the last one received. Rounds alternate raw and SDK, one subscriber at a
  time. (A replay of stored messages is not measured: the proxy pushes a
  replay faster than a Python client reads it and closes the socket as a
  slow consumer after 256 frames — see docs/performance.md.)
* **Added latency:** one reading at a time, both clients subscribed at
  once; the time from the device's publish to each client receiving it;
  the SDK's median minus the raw client's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from websockets.asyncio.client import connect

import plantd


def config() -> dict[str, Any]:
    raw = os.environ.get("PLANTD_SDK_TEST")
    if not raw:
        raise SystemExit("PLANTD_SDK_TEST is not set (see the module's doc)")
    loaded: dict[str, Any] = json.loads(raw)
    return loaded


class Device:
    """The sensor over paho (MQTT 5), publishing QoS 1."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        sensor = cfg["sensor"]
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=sensor["id"], protocol=mqtt.MQTTv5)
        self._client.username_pw_set(sensor["id"], sensor["token"])
        self._client.max_inflight_messages_set(20)  # within the edge's Receive Maximum
        connected = threading.Event()
        self._client.on_connect = lambda *_: connected.set()
        self._client.connect("127.0.0.1", int(cfg["mqtt"]))
        self._client.loop_start()
        if not connected.wait(10):
            raise SystemExit("the sensor did not connect")

    def publish(self, topic: str, payload: str, wait: bool = True) -> mqtt.MQTTMessageInfo:
        info = self._client.publish(topic, payload, qos=1)
        if wait:
            info.wait_for_publish(10)
        return info

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


async def rate(device: Device, count: int, receive: Callable[[str], Awaitable[None]], topic: str) -> float:
    """Messages per second one subscriber receives while the device publishes
    ``count`` readings: from its first reading to its last."""
    publisher = asyncio.create_task(asyncio.to_thread(publish_all, device, topic, count))
    t0 = time.perf_counter()
    await receive(topic)
    elapsed = time.perf_counter() - t0
    await publisher
    return count / elapsed


def publish_all(device: Device, topic: str, count: int) -> None:
    infos = [device.publish(topic, f"n-{i}", wait=False) for i in range(count)]
    for info in infos:
        info.wait_for_publish(60)


async def warm_up(device: Device, topic: str, seen: Callable[[], bool]) -> None:
    """Publishes until the subscriber has a warm-up message: it is in place."""
    for i in range(100):
        await asyncio.to_thread(device.publish, topic, f"warm-{i}")
        await asyncio.sleep(0.1)
        if seen():
            return
    raise SystemExit("the subscription never received a warm-up")


async def raw_round(url: str, token: str, site: str, device: Device, count: int) -> float:
    """The raw websockets client's rate (sequenced, as the SDK subscribes)."""
    topic = f"sdk/bench/rate/{uuid.uuid4().hex[:8]}"
    ws_url = url.replace("http://", "ws://", 1) + "/v1/ws"
    async with connect(ws_url, additional_headers={"authorization": f"Bearer {token}"}, max_size=16 << 20) as ws:
        await ws.send(json.dumps({"op": "subscribe", "id": "raw", "site": site, "filter": topic, "sequenced": True}))
        warm = False

        async def reader() -> None:
            nonlocal warm
            async for frame in ws:
                if json.loads(frame).get("op") == "message":
                    warm = True
                    return

        task = asyncio.create_task(reader())
        await warm_up(device, topic, lambda: warm)
        await task

        async def receive(_: str) -> None:
            got = 0
            async for frame in ws:
                m = json.loads(frame)
                if m.get("op") == "message" and m["payload"].startswith("n-"):
                    got += 1
                    if got == count:
                        return

        return await rate(device, count, receive, topic)


async def sdk_round(client: plantd.Client, site: str, device: Device, count: int) -> float:
    """The SDK's rate."""
    topic = f"sdk/bench/rate/{uuid.uuid4().hex[:8]}"
    async with client.live.subscribe(site, topic) as sub:
        warm = False

        async def reader() -> None:
            nonlocal warm
            await sub.next()
            warm = True

        task = asyncio.create_task(reader())
        await warm_up(device, topic, lambda: warm)
        await task

        async def receive(_: str) -> None:
            got = 0
            async for m in sub:
                if m.payload.startswith(b"n-"):
                    got += 1
                    if got == count:
                        return

        return await rate(device, count, receive, topic)


async def latency(client: plantd.Client, device: Device, url: str, token: str, site: str, samples: int) -> tuple[float, float]:
    """Median ms from an acknowledged publish to (raw, SDK) receipt."""
    topic = f"sdk/bench/lat/{uuid.uuid4().hex[:8]}"
    ws_url = url.replace("http://", "ws://", 1) + "/v1/ws"
    raw_at: dict[str, float] = {}
    sdk_at: dict[str, float] = {}
    async with connect(ws_url, additional_headers={"authorization": f"Bearer {token}"}) as ws:
        await ws.send(json.dumps({"op": "subscribe", "id": "raw", "site": site, "filter": topic, "sequenced": True}))
        async with client.live.subscribe(site, topic) as sub:

            async def read_raw() -> None:
                async for frame in ws:
                    m = json.loads(frame)
                    if m.get("op") == "message":
                        raw_at[m["payload"]] = time.perf_counter()

            async def read_sdk() -> None:
                async for m in sub:
                    sdk_at[m.text()] = time.perf_counter()

            readers = [asyncio.create_task(read_raw()), asyncio.create_task(read_sdk())]
            # Both subscriptions in place: warm up until each has one.
            for i in range(50):
                await asyncio.to_thread(device.publish, topic, f"warm-{i}")
                await asyncio.sleep(0.1)
                if raw_at and sdk_at:
                    break
            raw_ms: list[float] = []
            sdk_ms: list[float] = []
            for i in range(samples):
                key = f"s-{i}"
                sent = time.perf_counter()
                await asyncio.to_thread(device.publish, topic, key)
                deadline = sent + 5
                while (key not in raw_at or key not in sdk_at) and time.perf_counter() < deadline:
                    await asyncio.sleep(0.0005)
                if key in raw_at and key in sdk_at:
                    raw_ms.append((raw_at[key] - sent) * 1000)
                    sdk_ms.append((sdk_at[key] - sent) * 1000)
            for r in readers:
                r.cancel()
    return statistics.median(raw_ms), statistics.median(sdk_ms)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--samples", type=int, default=200)
    args = p.parse_args()
    cfg = config()
    site = cfg["site"]
    device = Device(cfg)
    async with await plantd.Client.login(cfg["url"], cfg["admin"]["email"], cfg["admin"]["password"]) as client:
        token = await client.auth.token()
        for r in range(args.rounds):
            raw = await raw_round(cfg["url"], token, site, device, args.messages)
            sdk = await sdk_round(client, site, device, args.messages)
            print(f"round {r + 1}: raw {raw:,.0f} msg/s, SDK {sdk:,.0f} msg/s -> SDK/raw {sdk / raw:.0%}", flush=True)
        raw_lat, sdk_lat = await latency(client, device, cfg["url"], token, site, args.samples)
        print(f"latency (median of {args.samples}): raw {raw_lat:.2f} ms, SDK {sdk_lat:.2f} ms, added {sdk_lat - raw_lat:+.2f} ms")
    device.close()


if __name__ == "__main__":
    asyncio.run(main())
