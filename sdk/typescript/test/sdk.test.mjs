// The TypeScript SDK against a real `plantd up` (started by
// cli/tests/it/sdk_typescript.rs, which passes its addresses and a device
// in $PLANTD_SDK_TEST) with real MQTT devices (mosquitto_pub/sub).
// Run: node --experimental-websocket --test test/ (Node 20; Node ≥ 22 has
// WebSocket without the flag).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Plantd, PlantdError, RefusedError, LinkState } from '../dist/index.js';
import { next, numbers, oneTo, publish, publishAs, sendUntilReceived, stack, until, warmUp } from './helpers.mjs';

if (!stack) throw new Error('PLANTD_SDK_TEST is not set: run through cli/tests/it/sdk_typescript.rs');
const { url, admin, valve, pump, site } = stack;

/** A WebSocket whose sockets the test can cut, as a network would. */
const sockets = [];
class Cuttable extends WebSocket {
  constructor(...args) {
    super(...args);
    sockets.push(this);
  }
}

test('a login, a state round trip and a conflict that names itself', { timeout: 40_000 }, async () => {
  const plantd = await Plantd.login(url, admin.email, admin.password);
  await plantd.rest.POST('/v1/state/scopes', { body: { scope: 'sdk' } });
  assert.equal(await plantd.getState('sdk', 'recipe'), null);
  const etag = await plantd.putState('sdk', 'recipe', { temp: 180 });
  const got = await plantd.getState('sdk', 'recipe');
  assert.deepEqual(got.value, { temp: 180 });
  assert.equal(got.etag, etag);
  await plantd.putState('sdk', 'recipe', { temp: 190 }, etag);
  await assert.rejects(plantd.putState('sdk', 'recipe', { temp: 200 }, etag), (e) => {
    assert.ok(e instanceof PlantdError);
    assert.equal(e.status, 409);
    assert.equal(e.code, 'conflict');
    return true;
  });
  assert.deepEqual((await plantd.getState('sdk', 'recipe')).value, { temp: 190 });
  // Secrets never show.
  assert.ok(!JSON.stringify({ auth: plantd.live }).includes(admin.password));
});

test('a device publishes over MQTT and the iterator yields it; a command reaches an MQTT subscriber', { timeout: 40_000 }, async () => {
  const plantd = await Plantd.login(url, admin.email, admin.password);
  const sub = plantd.live.subscribe(site, 'sdk/+/temp');
  const states = plantd.live.states();
  await until(states, LinkState.Connected);
  // The subscription is in place once the server answered; a first
  // publish may race it, so publish until one arrives.
  let m;
  for (let i = 0; !m && i < 15; i++) {
    await publish('sdk/oven/temp', `21.${i}`);
    m = await next(sub, 2_000).catch(() => undefined);
  }
  assert.ok(m, 'the subscription yields the device\'s publish');
  assert.equal(m.value.topic, 'sdk/oven/temp');
  assert.match(m.value.payload, /^21\./);
  assert.ok(m.value.sequence > 0);

  // Each a new command, until the valve has received one.
  const { code, out } = await sendUntilReceived(valve, 'sdk/valve/set', 20, async () => {
    const answer = await plantd.rest.POST('/v1/sites/{site}/commands', {
      params: { path: { site } },
      body: { topic: 'sdk/valve/set', payload: 'open', qos: 1, ttl_secs: 5 },
    });
    assert.ok(answer.data.sequence > 0);
  });
  assert.equal(code, 0, 'mosquitto_sub got the command');
  assert.equal(out.trim(), 'open');
  sub.close();
  plantd.live.close();
});

test('across a cut socket the subscriber gets every number exactly once, in order', { timeout: 40_000 }, async () => {
  const plantd = await Plantd.login(url, admin.email, admin.password, { live: { WebSocket: Cuttable, backoffMs: 50 } });
  const states = plantd.live.states();
  const sub = plantd.live.subscribe(site, 'sdk/count');
  await until(states, LinkState.Connected);
  // Wait for the subscription to be live: the first number arrives.
  await warmUp(sub, 'sdk/count');
  const got = [];
  for (let n = 1; n <= 5; n++) await publish('sdk/count', String(n));
  await numbers(sub, got, 5);
  // The network drops the socket; the device goes on publishing.
  sockets.at(-1).close();
  await until(states, LinkState.Reconnecting);
  for (let n = 6; n <= 12; n++) await publish('sdk/count', String(n));
  await until(states, LinkState.Connected);
  for (let n = 13; n <= 15; n++) await publish('sdk/count', String(n));
  await numbers(sub, got, 15);
  assert.deepEqual(got, oneTo(15));
  // Nothing more: no repeats queued behind.
  await assert.rejects(next(sub, 500));
  plantd.live.close();
});

test('a reader slower than its messages is paced, not ended, and loses none', { timeout: 60_000 }, async () => {
  // Three buffers' worth arrive while nobody reads: the subscription is held
  // on the server, not ended with slow_consumer, and resumed from where the
  // reader is once it has read half (decision 0059).
  const plantd = await Plantd.login(url, admin.email, admin.password, { live: { buffer: 4 } });
  const sub = plantd.live.subscribe(site, 'sdk/slow');
  await warmUp(sub, 'sdk/slow');
  for (let n = 1; n <= 12; n++) await publish('sdk/slow', String(n));
  const got = await numbers(sub, [], 12);
  assert.deepEqual(got, oneTo(12));
  await assert.rejects(next(sub, 500));
  plantd.live.close();
});

test('a revoked token ends the stream with a typed refusal, not a reconnect loop', { timeout: 40_000 }, async () => {
  const plantd = await Plantd.login(url, admin.email, admin.password);
  const sub = plantd.live.subscribe(site, 'sdk/#');
  const states = plantd.live.states();
  await until(states, LinkState.Connected);
  // Logging out revokes the access token and the refresh family: the
  // server closes the socket ("token revoked") and renewing is refused.
  await plantd.logout();
  await assert.rejects(next(sub, 10_000), (e) => {
    assert.ok(e instanceof RefusedError, `got ${e}`);
    return true;
  });
  await until(states, LinkState.Refused);
  await assert.rejects(plantd.rest.GET('/v1/state/scopes'), (e) => e instanceof PlantdError && e.status === 401);
});

test('the socket authenticates with its first frame (no token in its URL); a token that does not verify is a typed refusal', { timeout: 20_000 }, async () => {
  const plantd = Plantd.withToken(url, 'not-a-token', { live: { WebSocket: Cuttable, backoffMs: 50 } });
  const before = sockets.length;
  const sub = plantd.live.subscribe(site, 'sdk/#');
  const states = plantd.live.states();
  await assert.rejects(next(sub, 10_000), (e) => {
    assert.ok(e instanceof RefusedError, `got ${e}`);
    return true;
  });
  await until(states, LinkState.Refused);
  const opened = sockets.slice(before);
  assert.ok(opened.length > 0, 'a socket was opened');
  for (const s of opened) assert.ok(!s.url.includes('token'), `a token in the socket's URL: ${s.url}`);
});

test('a tail yields the site\'s log lines, parsed and filtered, and resumes across a cut socket without a gap or a repeat', { timeout: 60_000 }, async () => {
  const plantd = await Plantd.login(url, admin.email, admin.password, { live: { WebSocket: Cuttable, backoffMs: 50 } });
  const log = (line) => publishAs(pump, '$plantd/log/sdk-pump', line);
  let confirmed;
  const first = new Promise((resolve) => (confirmed = resolve));
  const tail = plantd.live.tail(site, { source: 'sdk-pump', level: 'warn', onSubscribed: () => confirmed() });
  await first;
  await log('INFO not shown');
  await log('WARN tail one');
  await log('{"level":"error","msg":"tail two","temp":95}');
  const one = (await next(tail)).value;
  const two = (await next(tail)).value;
  assert.deepEqual([one.message, one.level, one.source], ['tail one', 'warn', 'sdk-pump']);
  assert.deepEqual([two.message, two.fields.temp], ['tail two', 95]);
  assert.equal(one.stream, 'PLANTD_LOGS');
  assert.ok(two.sequence > one.sequence && one.sequence > 0);
  // The network drops the socket; the device goes on logging.
  const states = plantd.live.states();
  sockets.at(-1).close();
  await until(states, LinkState.Reconnecting);
  await log('ERROR tail three');
  await until(states, LinkState.Connected);
  await log('WARN tail four');
  const three = (await next(tail)).value;
  const four = (await next(tail)).value;
  assert.deepEqual([three.message, four.message], ['tail three', 'tail four']);
  assert.ok(three.sequence > two.sequence && four.sequence > three.sequence);
  tail.close();
  plantd.live.close();
});

test('service-account credentials: tokens renewed after a revocation, refused once deactivated', { timeout: 60_000 }, async () => {
  const root = await Plantd.login(url, admin.email, admin.password);
  const { data: account } = await root.identity.POST('/v1/service-accounts', { body: { name: 'sdkts-cc', roles: ['operator'] } });
  const plantd = Plantd.withClientCredentials(url, account.client_id, account.client_secret, { live: { backoffMs: 50 } });
  assert.ok(!JSON.stringify({ plantd: plantd.live }).includes(account.client_secret));
  const states = plantd.live.states();
  const sub = plantd.live.subscribe(site, 'sdk/tscc/#');
  await until(states, LinkState.Connected);
  await warmUp(sub, 'sdk/tscc/temp', 'the service account\'s subscription yields the device\'s publish');
  // Its tokens revoked, not the account: a new token, a new socket.
  await root.identity.POST('/v1/service-accounts/{id}/revoke', { params: { path: { id: account.client_id } } });
  await until(states, LinkState.Reconnecting);
  await until(states, LinkState.Connected);
  await publish('sdk/tscc/temp', 'after');
  for (;;) {
    const { value } = await next(sub);
    if (value.payload === 'after') break;
  }
  // Deactivated: no token any more, so the stream ends refused.
  await root.identity.PATCH('/v1/service-accounts/{id}', { params: { path: { id: account.client_id } }, body: { active: false } });
  await assert.rejects(
    (async () => {
      for (;;) await next(sub);
    })(),
    (e) => e instanceof RefusedError,
  );
  await until(states, LinkState.Refused);
});

test('history pages are one async iterator that follows the cursors', { timeout: 40_000 }, async () => {
  const plantd = await Plantd.login(url, admin.email, admin.password);
  const topic = `sdk/tshist/${Math.random().toString(16).slice(2, 8)}`;
  for (let i = 1; i <= 5; i++) await publish(topic, String(i));
  // Acknowledged by the edge; stored once its uplink has them.
  let got = [];
  for (let attempt = 0; got.length < 5 && attempt < 100; attempt++) {
    got = [];
    for await (const m of plantd.history(site, topic, { order: 'asc', limit: 2 })) got.push(m);
    if (got.length < 5) await new Promise((r) => setTimeout(r, 100));
  }
  assert.deepEqual(got.map((m) => String(m.value)), ['1', '2', '3', '4', '5'], 'three pages of at most 2, in order');
  assert.ok(got.every((m, i) => i === 0 || m.sequence > got[i - 1].sequence));
});

test('a command sent over the socket reaches an MQTT subscriber; a refused one rejects typed', { timeout: 40_000 }, async () => {
  const plantd = await Plantd.login(url, admin.email, admin.password);
  // No subscription: the first publish opens the socket itself.
  const { code, out } = await sendUntilReceived(valve, 'sdk/valve/socket', 20, async () => {
    const sent = await plantd.live.publish(site, 'sdk/valve/socket', 'shut', { ttlSecs: 2 });
    assert.equal(sent.stream, 'PLANTD_COMMANDS');
    assert.ok(sent.sequence > 0);
  });
  assert.equal(code, 0, 'mosquitto_sub got the command');
  assert.equal(out.trim(), 'shut');
  await assert.rejects(plantd.live.publish(site, 'sdk/#', 'bad topic'), (e) => e instanceof PlantdError && e.code === 'bad_request');
  plantd.live.close();
});

// --- The examples (examples/*.ts, built to build/examples by `npm run build`)

/** Runs example `name` with the administrator's login and `args`. */
function example(name, args) {
  const env = { ...process.env, PLANTD_URL: url, PLANTD_EMAIL: admin.email, PLANTD_PASSWORD: admin.password, PLANTD_SITE: site };
  const child = spawn(process.execPath, ['--experimental-websocket', `build/examples/${name}.js`, ...args], { env });
  let out = '';
  let err = '';
  const waiting = [];
  child.stdout.on('data', (d) => {
    out += d;
    for (const w of waiting.splice(0)) w();
  });
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  /** The next whole stdout line, or a failure after `ms`. */
  async function line(ms = 20_000) {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = out.indexOf('\n');
      if (i >= 0) {
        const l = out.slice(0, i);
        out = out.slice(i + 1);
        return l;
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no line from ${name} within ${ms} ms; stderr: ${err}`);
      await Promise.race([new Promise((r) => waiting.push(r)), exited, new Promise((r) => setTimeout(r, left))]);
    }
  }
  return { child, line, exited, stderr: () => err };
}

test('the dashboard feed example prints the site\'s health, then live values', { timeout: 60_000 }, async () => {
  const feed = example('dashboard_feed', ['--filter', 'sdk/tsfeed/#', '--count', '1']);
  try {
    const health = JSON.parse(await feed.line());
    assert.equal(health.site, site);
    assert.equal(typeof health.connected, 'boolean');
    let got;
    for (let i = 0; !got && i < 20; i++) {
      await publish('sdk/tsfeed/temp', String(40 + i));
      got = await feed.line(1_500).then(JSON.parse, () => undefined);
    }
    assert.ok(got, 'the feed printed the device\'s value');
    assert.equal(got.topic, 'sdk/tsfeed/temp');
    assert.ok(got.value >= 40 && got.sequence > 0, JSON.stringify(got));
    assert.equal(await feed.exited, 0, feed.stderr());
  } finally {
    feed.child.kill();
  }
});

test('the command sender example reaches an MQTT device', { timeout: 60_000 }, async () => {
  const ids = [];
  // Each a new command, dropped after 2 s, until the valve has received one.
  const { code, out } = await sendUntilReceived(valve, 'sdk/valve/example', 30, async () => {
    const sender = example('command_sender', ['--topic', 'sdk/valve/example', '--payload', 'shut', '--ttl', '2']);
    ids.push(JSON.parse(await sender.line()).id);
    assert.equal(await sender.exited, 0, sender.stderr());
  });
  assert.equal(code, 0, 'mosquitto_sub got a command');
  assert.equal(out.trim(), 'shut');
  assert.ok(ids.every((id, i) => id > 0 && (i === 0 || id > ids[i - 1])), `ids ${ids}`);
});

test('two copies of the state job example count every step despite conflicts', { timeout: 60_000 }, async () => {
  const scope = `sdktsjobs-${Math.random().toString(16).slice(2, 10)}`;
  const jobs = [0, 1].map(() => example('state_job', ['--scope', scope, '--key', 'batches', '--times', '8']));
  for (const job of jobs) {
    const said = JSON.parse(await job.line(40_000));
    assert.equal(said.added, 8);
    assert.equal(await job.exited, 0, job.stderr());
  }
  const plantd = await Plantd.login(url, admin.email, admin.password);
  const total = await plantd.getState(scope, 'batches');
  assert.deepEqual(total?.value, { n: 16 });
});
