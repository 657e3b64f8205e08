// What the SDK's test files (sdk.test.mjs, restart.mjs, expiry.mjs) share:
// the stack their driver (cli/tests/it/sdk_typescript.rs) started, a
// device's acknowledged MQTT publish, commands sent until a device
// receives one, and bounded waits on the SDK's async iterators. It holds no test: `node --test test/` runs it as a file that
// passes.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * The stack the driver started, from $PLANTD_SDK_TEST (its fields are
 * described in cli/tests/it/common/sdk.rs); null when the file runs
 * without a driver.
 */
export const stack = JSON.parse(process.env.PLANTD_SDK_TEST ?? 'null');

/** What `promise` resolves to, or a failure naming `what` after `ms`. */
export async function within(promise, ms, what) {
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
export const next = (iterator, ms = 10_000) => within(iterator.next(), ms, 'the next item');

/** Waits until the state stream reports `want`, each state within `ms`. */
export async function until(states, want, ms = 10_000) {
  for (;;) {
    const { value } = await next(states, ms);
    if (value === want) return;
  }
}

/**
 * One MQTT 5 publish by `device` (`{ id, token }` of the stack) of
 * `message` on `topic`, acknowledged (QoS 1), to the stack's edge.
 */
export async function publishAs(device, topic, message) {
  await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(stack.mqtt), '-V', 'mqttv5', '-i', device.id, '-u', device.id, '-P', device.token, '-q', '1', '-t', topic, '-m', message]);
}

/**
 * Calls `send` (e.g. one command for `topic`) again and again, 500 ms
 * apart, until `device` — subscribed to `topic` by mosquitto_sub, which
 * says nothing when its subscription is in place — has received one
 * message or `waitSecs` passed: mosquitto_sub's exit code (0 once it got
 * one) and what it printed.
 */
export async function sendUntilReceived(device, topic, waitSecs, send) {
  const received = spawn('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(stack.mqtt), '-V', 'mqttv5', '-i', device.id, '-u', device.id, '-P', device.token, '-q', '1', '-t', topic, '-C', '1', '-W', String(waitSecs)]);
  let out = '';
  received.stdout.on('data', (d) => (out += d));
  const done = new Promise((resolve) => received.on('exit', resolve));
  let exited = false;
  done.then(() => (exited = true));
  while (!exited) {
    await send();
    await Promise.race([done, new Promise((r) => setTimeout(r, 500))]);
  }
  return { code: await done, out };
}

/** [`publishAs`] by the stack's sensor device (it publishes on sdk/#). */
export const publish = (topic, message) => publishAs(stack.sensor, topic, message);

/**
 * Publishes `warmup-<i>` on `topic` until the live subscription `sub`
 * yields one (2 s each, 15 tries): the subscription is then in place.
 * Fails with `what` when none comes.
 */
export async function warmUp(sub, topic, what = 'the subscription yields the device\'s publish') {
  let first;
  for (let i = 0; !first && i < 15; i++) {
    await publish(topic, `warmup-${i}`);
    first = await next(sub, 2_000).catch(() => undefined);
  }
  assert.ok(first, what);
}

/**
 * Reads `sub` until `got` holds `count` numbers: the payloads other than
 * warm-ups, as numbers, each within `ms`.
 */
export async function numbers(sub, got, count, ms = 10_000) {
  while (got.length < count) {
    const { value } = await next(sub, ms);
    if (!value.payload.startsWith('warmup')) got.push(Number(value.payload));
  }
  return got;
}

/** `1..=count`, what [`numbers`] should have read. */
export const oneTo = (count) => Array.from({ length: count }, (_, i) => i + 1);

/** A line `<proof>: <event>` on standard output, for the driver. */
export const reporter = (proof) => (event) => process.stdout.write(`${proof}: ${event}\n`);
