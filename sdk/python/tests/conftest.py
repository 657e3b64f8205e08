"""Fixtures of the SDK's suite.

The cases against a server read ``$PLANTD_SDK_TEST``, which
``cli/tests/it/sdk_python.rs`` sets after starting ``plantd up`` with its
devices (``cli/tests/it/common/sdk.rs`` says what is in it). Without it
they are skipped, and that Rust test fails on any skip, so CI never
passes without them.
"""

from __future__ import annotations

import json
import os

import pytest

from stack import Device, Stack


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def stack() -> Stack:
    raw = os.environ.get("PLANTD_SDK_TEST")
    if not raw:
        pytest.skip("PLANTD_SDK_TEST is not set: run through cli/tests/it/sdk_python.rs")
    c = json.loads(raw)

    def device(name: str) -> Device:
        return Device(id=c[name]["id"], token=c[name]["token"])

    return Stack(
        url=c["url"],
        email=c["admin"]["email"],
        password=c["admin"]["password"],
        mqtt=int(c["mqtt"]),
        site=c["site"],
        sensor=device("sensor"),
        valve=device("valve"),
        pump=device("pump"),
    )
