"""The stack the suite runs against, and what its MQTT devices do
(``mosquitto_pub`` / ``mosquitto_sub``, real clients)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from plantd import LiveMessage

T = TypeVar("T")

#: sdk/python
PKG = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Device:
    """A registered device: its client id and access token (the MQTT password)."""

    id: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class Stack:
    """``plantd up``'s addresses, the admin's login and the devices."""

    url: str
    email: str
    password: str = field(repr=False)
    mqtt: int = 0
    site: str = "local"
    sensor: Device = Device("", "")
    valve: Device = Device("", "")
    pump: Device = Device("", "")

    def env(self) -> dict[str, str]:
        """The environment the examples read."""
        return {
            **os.environ,
            "PLANTD_URL": self.url,
            "PLANTD_EMAIL": self.email,
            "PLANTD_PASSWORD": self.password,
            "PLANTD_SITE": self.site,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }


def mqtt_args(stack: Stack, device: Device) -> list[str]:
    """mosquitto client arguments to connect as ``device`` (MQTT 5)."""
    return ["-h", "127.0.0.1", "-p", str(stack.mqtt), "-V", "mqttv5", "-i", device.id, "-u", device.id, "-P", device.token]


async def publish(stack: Stack, topic: str, message: str) -> None:
    """One QoS 1 publish by the sensor device, acknowledged by the edge."""
    proc = await asyncio.create_subprocess_exec(
        "mosquitto_pub", *mqtt_args(stack, stack.sensor), "-q", "1", "-t", topic, "-m", message,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()


async def within(seconds: float, what: str, items: AsyncIterator[T]) -> T:
    """The next item of ``items``, or a failure naming ``what`` after ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            return await anext(items)
    except TimeoutError:
        raise AssertionError(f"{what}: nothing within {seconds} s") from None


async def warm_up(stack: Stack, topic: str, sub: AsyncIterator[object], what: str = "the subscription yields the device's publish") -> None:
    """Publishes ``warmup-<i>`` on ``topic`` by the sensor device until
    ``sub`` yields one (2 s each, 15 tries): the subscription is then in
    place. Fails with ``what`` when none comes."""
    for i in range(15):
        await publish(stack, topic, f"warmup-{i}")
        try:
            await within(2, "a warm-up message", sub)
            return
        except AssertionError:
            continue
    raise AssertionError(what)


async def numbers(sub: AsyncIterator[LiveMessage], got: list[int], count: int, seconds: float = 10) -> list[int]:
    """Reads ``sub`` until ``got`` holds ``count`` numbers: the payloads
    other than warm-ups, as numbers, each within ``seconds``."""
    while len(got) < count:
        m = await within(seconds, f"number {len(got) + 1}", sub)
        if not m.text().startswith("warmup"):
            got.append(int(m.text()))
    return got


async def example(stack: Stack, name: str, *args: str, extra_env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    """Starts ``examples/<name>`` with the stack's environment."""
    return await asyncio.create_subprocess_exec(
        sys.executable, str(PKG / "examples" / name), *args,
        env={**stack.env(), **(extra_env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def eventually(seconds: float, what: str, probe: Callable[[], Awaitable[T | None]]) -> T:
    """Polls ``probe`` until it returns something, or fails naming ``what``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        got = await probe()
        if got is not None:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        await asyncio.sleep(0.2)


async def line(proc: asyncio.subprocess.Process, seconds: float, what: str) -> str:
    """The next line a process prints, or a failure naming ``what``."""
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(seconds):
            raw = await proc.stdout.readline()
    except TimeoutError:
        raise AssertionError(f"{what}: no line within {seconds} s") from None
    if not raw:
        err = await proc.stderr.read() if proc.stderr is not None else b""
        raise AssertionError(f"{what}: the process ended ({err.decode()})")
    return raw.decode().strip()
