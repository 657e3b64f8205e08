"""A command sender: sends one command to a site's devices and prints where
it was stored (its id); ``--wait`` then waits until it is no longer pending
(delivered, or dropped after its TTL).

    python command_sender.py --site local --topic line1/valve/set --payload open --ttl 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from _connect import client


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--site", default=os.environ.get("PLANTD_SITE", "local"))
    p.add_argument("--topic", required=True)
    p.add_argument("--payload", required=True)
    p.add_argument("--ttl", type=int, default=60, help="drop it if not delivered within this many seconds")
    p.add_argument("--socket", action="store_true", help="send over the live WebSocket instead of REST")
    p.add_argument("--wait", action="store_true", help="wait until it is not pending any more")
    args = p.parse_args()

    async with await client() as plantd:
        if args.socket:
            sent = await plantd.live.publish(args.site, args.topic, args.payload, ttl_secs=args.ttl)
        else:
            sent = await plantd.send_command(args.site, args.topic, args.payload, ttl_secs=args.ttl)
        print(json.dumps({"id": sent.sequence, "stream": sent.stream}), flush=True)
        while args.wait:
            pending = await plantd.pending_commands(args.site)
            if all(c.id != sent.sequence for c in pending.commands):
                break
            await asyncio.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
