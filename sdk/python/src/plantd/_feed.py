"""A queue that one async iterator drains and that ends, optionally with an error."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Feed(Generic[T]):
    """Items pushed by the connection, taken by ``await feed.next()``.

    Never blocks the pusher (the connection decides what to do when a
    reader is behind, from :meth:`__len__`). After :meth:`end` the reader
    gets what is left, then ``StopAsyncIteration`` — or the error given to
    :meth:`end`, once.
    """

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._error: BaseException | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def ended(self) -> bool:
        """Whether :meth:`end` was called."""
        return self._ended

    def push(self, item: T) -> None:
        """Adds an item (ignored once ended)."""
        if self._ended:
            return
        self._items.append(item)
        self._wake()

    def end(self, error: BaseException | None = None) -> None:
        """No more items; the reader gets ``error`` after what is queued."""
        if self._ended:
            return
        self._ended = True
        self._error = error
        self._wake()

    def clear(self) -> None:
        """Drops what is queued."""
        self._items.clear()

    async def next(self) -> T:
        """The next item; ``StopAsyncIteration`` (or the end's error) at the end."""
        while True:
            if self._items:
                return self._items.popleft()
            if self._ended:
                error, self._error = self._error, None
                if error is not None:
                    raise error
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
