// Across a restart of the server itself, the subscriber gets every number
// exactly once and in order.
//
// Driven by cli/tests/it/sdk_typescript.rs
// (the_typescript_sdk_across_a_server_restart), which runs this file alone
// (`node --experimental-websocket test/restart.mjs`) with
// $PLANTD_SDK_RESTART set and plays the device and the operator: this side
// subscribes, warms the subscription up and prints `restart: ready`; the
// driver's MQTT device publishes 1..5, the driver restarts `plantd up`
// (SIGTERM, same data directory and ports), its device publishes 6..10 at
// once — this side is typically still reconnecting, so they come from
// the stream's history — and 11..15 once this side printed
// `restart: state connected` again. Each state change is printed as
// `restart: state <state>`.
// Without $PLANTD_SDK_RESTART (`node --test test/`, the suite's ordinary
// run, which has no restart to drive) it holds what needs no stack: a
// server that is starting or stopping — one that drops the handshake, one
// that accepts and never answers — is tried again after the backoff, never
// waited on forever.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Plantd, LinkState } from '../dist/index.js';
import { next, numbers, oneTo, reporter, stack, until, warmUp, within } from './helpers.mjs';

/** The topic the driver's device counts on. */
const TOPIC = 'sdk/restart';
/** How long one number may take: a restart of the whole stack on a loaded machine. */
const NUMBER_WAIT = 90_000;
// What the sockets did, on standard error (shown when the driver fails).
const t0 = Date.now();
const log = (...a) => process.stderr.write(`[${Date.now() - t0}] ${a.join(' ')}\n`);
/** The real WebSocket, its events logged. */
class Traced extends WebSocket {
  constructor(...args) {
    super(...args);
    log('new socket');
    this.addEventListener('open', () => log('open'));
    this.addEventListener('error', (e) => log('error', e.message ?? e.error ?? ''));
    this.addEventListener('close', (e) => log('close', e.code, e.reason));
    this.addEventListener('message', (e) => log('msg', String(e.data).slice(0, 80)));
  }
}

/** One line for the driver. */
const say = reporter('restart');

if (process.env.PLANTD_SDK_RESTART) {
  const { url, admin, site } = stack;

  test('across a server restart the subscriber gets every number exactly once, in order', { timeout: 240_000 }, async () => {
    const plantd = await Plantd.login(url, admin.email, admin.password, { live: { WebSocket: Traced, backoffMs: 250, maxBackoffMs: 1_000 } });
    const states = plantd.live.states();
    const sub = plantd.live.subscribe(site, TOPIC);
    await until(states, LinkState.Connected, 30_000);
    // The socket is open; the subscription is in place once a publish
    // comes through.
    await warmUp(sub, TOPIC);
    // Every later state change, for the driver.
    (async () => {
      for await (const state of states) say(`state ${state}`);
    })();
    say('ready');
    const got = await numbers(sub, [], 15, NUMBER_WAIT);
    assert.deepEqual(got, oneTo(15));
    // Nothing more: no repeats queued behind.
    await assert.rejects(next(sub, 500));
    assert.equal(plantd.live.state, LinkState.Connected, 'no reconnect loop');
    plantd.live.close();
    say('done');
  });
}

if (!process.env.PLANTD_SDK_RESTART) {
  /** Counts connections to a loopback TCP server that treats each as `behave` says. */
  async function tcpServer(behave) {
    const held = [];
    let wanted = 0;
    let reached;
    const server = net.createServer((c) => {
      held.push(c);
      behave(c);
      if (held.length === wanted) reached();
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
      url: `http://127.0.0.1:${server.address().port}`,
      /** Resolves once `n` connections came. */
      connections(n) {
        wanted = n;
        return new Promise((resolve) => {
          reached = resolve;
          if (held.length >= n) resolve();
        });
      },
      close() {
        for (const c of held) c.destroy();
        server.close();
      },
    };
  }

  for (const [what, behave] of [
    ['drops the handshake', (c) => c.destroy()],
    ['accepts and never answers', () => {}],
  ]) {
    test(`a server that ${what} is tried again after the backoff, not waited on forever`, { timeout: 20_000 }, async () => {
      const server = await tcpServer(behave);
      const plantd = Plantd.withToken(server.url, 'a-token', { live: { backoffMs: 50, maxBackoffMs: 100, openTimeoutMs: 300 } });
      const states = plantd.live.states();
      plantd.live.subscribe('local', 'sdk/#');
      try {
        await within(server.connections(3), 15_000, `three attempts (state ${plantd.live.state})`);
        await until(states, LinkState.Reconnecting, 30_000);
      } finally {
        plantd.live.close();
        server.close();
      }
    });
  }
}
