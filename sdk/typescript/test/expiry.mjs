// A live subscription outlives its access token: every number exactly once
// and in order while the token expires under it, again and again.
//
// Driven by cli/tests/it/sdk_typescript.rs
// (the_typescript_sdk_across_token_expiry), which starts `plantd up` with
// 3-second access tokens and runs this file alone
// (`node --experimental-websocket test/expiry.mjs`) with $PLANTD_SDK_EXPIRY
// set: this side logs in (a password session), subscribes, warms the
// subscription up and prints `expiry: ready`; the driver then stores 1..90
// at 10 Hz on the topic (straight to JetStream, the subject the edge
// uses), across about three token lifetimes. The proxy closes the socket
// (`token expired`) each time the session's token runs out; the session
// renews it (refresh rotation) and the subscription resumes at the last
// sequence + 1. Without $PLANTD_SDK_EXPIRY (the suite's ordinary run) the
// file holds no test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Plantd, LinkState } from '../dist/index.js';
import { next, numbers, oneTo, reporter, stack, warmUp } from './helpers.mjs';

/** The topic the driver counts on. */
const TOPIC = 'sdk/expiry';
/** How many numbers the driver stores. */
const COUNT = 90;
/** One line for the driver. */
const say = reporter('expiry');

if (process.env.PLANTD_SDK_EXPIRY) {
  const { url, admin, site } = stack;

  test('a token that expires mid-stream is renewed and every number arrives once, in order', { timeout: 120_000 }, async () => {
    const plantd = await Plantd.login(url, admin.email, admin.password, { live: { backoffMs: 100, maxBackoffMs: 200 } });
    const seen = [];
    const states = plantd.live.states();
    (async () => {
      for await (const state of states) seen.push(state);
    })();
    const sub = plantd.live.subscribe(site, TOPIC);
    await warmUp(sub, TOPIC);
    say('ready');
    const got = await numbers(sub, [], COUNT, 20_000);
    assert.deepEqual(got, oneTo(COUNT));
    // Nothing more: no repeats queued behind.
    await assert.rejects(next(sub, 500));
    // The socket really was closed and resumed, and never refused.
    assert.ok(seen.includes(LinkState.Reconnecting), `${seen}`);
    assert.ok(!seen.includes(LinkState.Refused), `${seen}`);
    plantd.live.close();
    say('done');
  });
}
