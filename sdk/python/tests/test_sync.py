"""The synchronous facade against a real ``plantd up`` (see conftest)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import plantd
from plantd.sync import Client
from stack import Stack, publish


def test_the_sync_facade(stack: Stack) -> None:
    with Client.login(stack.url, stack.email, stack.password) as client:
        scope = f"sdkpysync-{uuid.uuid4().hex[:8]}"
        client.create_scope(scope)
        etag = client.put_state(scope, "job", {"n": 1})
        got = client.get_state(scope, "job")
        assert got is not None and got.etag == etag and got.value == {"n": 1}
        with pytest.raises(plantd.ConflictError):
            client.put_state(scope, "job", {"n": 2}, create_only=True)
        with client.live.subscribe(stack.site, "sdk/sync") as sub:
            for i in range(15):
                asyncio.run(publish(stack, "sdk/sync", f"s{i}"))
                try:
                    m = sub.next(timeout=2)
                    break
                except plantd.RequestTimeout:
                    continue
            else:
                raise AssertionError("the sync subscription yields the device's publish")
            assert m.text().startswith("s")
        # Iterators of paged routes are plain iterators.
        topics = [h.topic for h in client.history(stack.site, "sdk/sync", page_size=1)]
        assert topics and set(topics) == {"sdk/sync"}
        # Errors are the async API's.
        with pytest.raises(plantd.NotFoundError):
            client.last("no-such-site", "sdk/sync")
