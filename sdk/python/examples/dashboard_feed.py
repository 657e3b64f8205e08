"""A dashboard feed: the site's health, then every live value under a topic
filter as one JSON line each, across reconnects, until ``--count`` values
(or forever).

    PLANTD_URL=http://127.0.0.1:8080 PLANTD_EMAIL=… PLANTD_PASSWORD=… \\
        python dashboard_feed.py --site local --filter 'line1/#'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import plantd
from _connect import client


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--site", default=os.environ.get("PLANTD_SITE", "local"))
    p.add_argument("--filter", default="#")
    p.add_argument("--count", type=int, default=0, help="stop after this many values (0: never)")
    args = p.parse_args()

    async with await client() as plantd_client:
        health = await plantd_client.health(args.site)
        print(json.dumps({"site": health.site, "connected": health.connected}), flush=True)
        live = plantd_client.live
        seen = 0
        async with live.subscribe(args.site, args.filter) as values:
            try:
                async for m in values:
                    try:
                        value = m.json()
                    except ValueError:
                        value = m.payload.decode("utf-8", "replace")
                    print(json.dumps({"topic": m.topic, "value": value, "sequence": m.sequence, "time": m.time}), flush=True)
                    seen += 1
                    if seen == args.count:
                        break
            except plantd.Refused as e:
                print(f"refused: {e.message}", file=sys.stderr)
                return 2
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
