/**
 * A dashboard feed: the site's health, then every live value under a topic
 * filter as one JSON line each, across reconnects (resumed at the last
 * sequence seen: nothing missed, nothing twice), until `--count` values (or
 * forever).
 *
 *     PLANTD_URL=http://127.0.0.1:8080 PLANTD_EMAIL=… PLANTD_PASSWORD=… \
 *       node --experimental-websocket build/examples/dashboard_feed.js --site local --filter 'line1/#'
 */
import { RefusedError } from '@plantd/client';
import { arg, connect } from './connect.js';

const site = arg('site', process.env.PLANTD_SITE ?? 'local');
const filter = arg('filter', '#');
const count = Number(arg('count', '0'));

const plantd = await connect();
const { data: health } = await plantd.rest.GET('/v1/sites/{site}/health', { params: { path: { site } } });
console.log(JSON.stringify({ site: health?.site, connected: health?.connected }));
let seen = 0;
try {
  for await (const m of plantd.live.subscribe(site, filter)) {
    let value: unknown = m.payload ?? m.payloadBase64;
    try {
      value = JSON.parse(m.payload ?? '');
    } catch {
      // not JSON: the text as it is
    }
    console.log(JSON.stringify({ topic: m.topic, value, sequence: m.sequence, time: m.time }));
    seen += 1;
    if (seen === count) break;
  }
} catch (e) {
  if (e instanceof RefusedError) {
    console.error(`refused: ${e.message}`);
    process.exit(2);
  }
  throw e;
} finally {
  plantd.live.close();
}
