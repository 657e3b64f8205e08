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
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Plantd, LinkState } from '../dist/index.js';

const run = promisify(execFile);
/** The topic the driver counts on. */
const TOPIC = 'sdk/expiry';
/** How many numbers the driver stores. */
const COUNT = 90;

/** One line for the driver. */
function say(event) {
  process.stdout.write(`expiry: ${event}\n`);
}

/** What `promise` resolves to, or a failure naming `what` after `ms`. */
async function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The next item of an async iterator, or a failure after `ms`. */
const next = (iterator, ms = 20_000) => within(iterator.next(), ms, 'the next item');

if (process.env.PLANTD_SDK_EXPIRY) {
  const { url, admin, mqtt, sensor, site } = JSON.parse(process.env.PLANTD_SDK_TEST);

  /** One MQTT publish by the sensor device, acknowledged (QoS 1). */
  const publish = (topic, message) =>
    run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(mqtt), '-V', 'mqttv5', '-i', sensor.id, '-u', sensor.id, '-P', sensor.token, '-q', '1', '-t', topic, '-m', message]);

  test('a token that expires mid-stream is renewed and every number arrives once, in order', { timeout: 120_000 }, async () => {
    const plantd = await Plantd.login(url, admin.email, admin.password, { live: { backoffMs: 100, maxBackoffMs: 200 } });
    const seen = [];
    const states = plantd.live.states();
    (async () => {
      for await (const state of states) seen.push(state);
    })();
    const sub = plantd.live.subscribe(site, TOPIC);
    // The subscription is in place once a publish comes through.
    let first;
    for (let i = 0; !first && i < 15; i++) {
      await publish(TOPIC, `warmup-${i}`);
      first = await next(sub, 2_000).catch(() => undefined);
    }
    assert.ok(first, 'the subscription yields the device\'s publish');
    say('ready');
    const got = [];
    while (got.length < COUNT) {
      const { value } = await next(sub);
      if (!value.payload.startsWith('warmup')) got.push(Number(value.payload));
    }
    assert.deepEqual(got, Array.from({ length: COUNT }, (_, i) => i + 1));
    // Nothing more: no repeats queued behind.
    await assert.rejects(next(sub, 500));
    // The socket really was closed and resumed, and never refused.
    assert.ok(seen.includes(LinkState.Reconnecting), `${seen}`);
    assert.ok(!seen.includes(LinkState.Refused), `${seen}`);
    plantd.live.close();
    say('done');
  });
}
