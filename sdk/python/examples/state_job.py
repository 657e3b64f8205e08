"""A state-backed job: adds ``--times`` to a counter kept in plantd's state,
one step at a time, safely alongside other copies of itself — each write
says which revision it read (``If-Match``), and a conflict means someone
else wrote first: read again and retry.

    python state_job.py --scope jobs --key batches --times 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import plantd
from _connect import client


async def add_one(c: plantd.Client, scope: str, key: str) -> int:
    """Adds one to the counter; returns how many conflicts it met."""
    conflicts = 0
    while True:
        current = await c.get_state(scope, key)
        n = current.value["n"] if current is not None else 0
        try:
            if current is None:
                await c.put_state(scope, key, {"n": n + 1}, create_only=True)
            else:
                await c.put_state(scope, key, {"n": n + 1}, if_match=current.etag)
            return conflicts
        except plantd.ConflictError:
            conflicts += 1


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scope", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--times", type=int, default=1)
    args = p.parse_args()

    async with await client() as c:
        try:
            await c.create_scope(args.scope)
        except plantd.ConflictError:
            pass  # another copy made it
        conflicts = 0
        for _ in range(args.times):
            conflicts += await add_one(c, args.scope, args.key)
        print(json.dumps({"added": args.times, "conflicts": conflicts}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
