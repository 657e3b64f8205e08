// The TypeScript SDK's live subscriber against a raw WebSocket client
// (Node's global WebSocket), in the same run (issue 17's speed item;
// figures in docs/performance.md, "The Rust and TypeScript SDKs' live
// subscribers").
//
// Started by sdk/rust/benches/live_rate.rs, which runs `plantd up`, stores
// the readings and passes the stack in $PLANTD_BENCH (JSON: url, site,
// mqtt, admin, token, sensor, replay {topic, first, count}, rounds,
// samples):
//
//   node --experimental-websocket benches/live_rate.mjs
//
// * Replay rate: per round, alternating, a raw client (first frame
//   {"op":"auth","token"}, then `subscribe` from_sequence = the first
//   stored; JSON.parse of every frame, counting `message`s) against the
//   SDK (`plantd.live.subscribe(site, topic, {fromSequence})`, counting
//   what `for await` yields), each with its socket open: messages per
//   second from the subscribe to the last message.
// * Added latency: both subscribed at once to a fresh topic; one reading at
//   a time from the sensor (one `mosquitto_pub -l` process, QoS 1, a line
//   per reading); the time from writing the line to each client's receipt;
//   the SDK's median minus the raw client's.
import { spawn } from 'node:child_process';
import { Plantd, LinkState } from '../dist/index.js';

const cfg = JSON.parse(process.env.PLANTD_BENCH ?? 'null');
if (!cfg) throw new Error('PLANTD_BENCH is not set: run through sdk/rust/benches/live_rate.rs');
const { url, site, replay } = cfg;
const wsUrl = `${url.replace(/^http/, 'ws')}/v1/ws`;

/** A raw socket, authenticated; `onFrame` gets every later frame, parsed. */
function rawSocket(onFrame) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl);
    let authed = false;
    ws.onopen = () => ws.send(JSON.stringify({ op: 'auth', token: cfg.token }));
    ws.onerror = (e) => reject(new Error(`raw socket: ${e.message ?? e}`));
    ws.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (!authed) {
        if (frame.op !== 'authenticated') return reject(new Error(`auth answered ${event.data}`));
        authed = true;
        return resolve(ws);
      }
      onFrame(frame);
    };
  });
}

/** The raw client's replay rate (messages per second). */
async function rawRound() {
  let done;
  const finished = new Promise((resolve, reject) => { done = { resolve, reject }; });
  let got = 0;
  const ws = await rawSocket((frame) => {
    if (frame.op === 'message') {
      got += 1;
      if (got === replay.count) done.resolve();
    } else if (frame.op === 'error') done.reject(new Error(JSON.stringify(frame)));
  });
  const t0 = performance.now();
  ws.send(JSON.stringify({ op: 'subscribe', id: 'raw', site, filter: replay.topic, from_sequence: replay.first }));
  await finished;
  const rate = replay.count / ((performance.now() - t0) / 1000);
  ws.close();
  return rate;
}

/** The SDK's replay rate (messages per second), its socket already open. */
async function sdkRound(plantd) {
  const t0 = performance.now();
  const sub = plantd.live.subscribe(site, replay.topic, { fromSequence: replay.first });
  let got = 0;
  for await (const m of sub) {
    if (m.sequence >= replay.first) got += 1;
    if (got === replay.count) break;
  }
  return replay.count / ((performance.now() - t0) / 1000);
}

const median = (xs) => {
  const v = [...xs].sort((a, b) => a - b);
  const n = v.length;
  return n % 2 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
};

/** Resolves once `key` is in `seen` (polled on the event loop), or after `ms`. */
function arrival(seen, key, ms = 10_000) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const poll = () => {
      if (seen.has(key)) return resolve(seen.get(key));
      if (performance.now() - t0 > ms) return resolve(undefined);
      setImmediate(poll);
    };
    poll();
  });
}

/** Median publish → receipt (ms) of [raw, SDK], both subscribed at once. */
async function latency(plantd) {
  const topic = 'bench/latency/ts';
  const rawAt = new Map();
  const sdkAt = new Map();
  const ws = await rawSocket((frame) => {
    if (frame.op === 'message') rawAt.set(frame.payload, performance.now());
  });
  ws.send(JSON.stringify({ op: 'subscribe', id: 'raw', site, filter: topic, sequenced: true }));
  const sub = plantd.live.subscribe(site, topic);
  const reading = (async () => {
    for await (const m of sub) sdkAt.set(m.payload, performance.now());
  })();
  const { sensor, mqtt } = cfg;
  const pub = spawn('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(mqtt), '-V', 'mqttv5', '-i', sensor.id, '-u', sensor.id, '-P', sensor.token, '-q', '1', '-t', topic, '-l'], { stdio: ['pipe', 'ignore', 'inherit'] });
  const send = (line) => {
    const at = performance.now();
    pub.stdin.write(`${line}\n`);
    return at;
  };
  let warm = false;
  for (let i = 0; i < 100 && !warm; i++) {
    send(`warm-${i}`);
    await new Promise((r) => setTimeout(r, 100));
    warm = rawAt.size > 0 && sdkAt.size > 0;
  }
  if (!warm) throw new Error('the latency subscriptions never warmed up');
  const raw = [];
  const sdk = [];
  for (let i = 0; i < cfg.samples; i++) {
    const key = `s-${i}`;
    const sent = send(key);
    const [r, s] = await Promise.all([arrival(rawAt, key), arrival(sdkAt, key)]);
    if (r !== undefined && s !== undefined) {
      raw.push(r - sent);
      sdk.push(s - sent);
    }
  }
  pub.stdin.end();
  sub.close();
  await reading;
  ws.close();
  if (!raw.length) throw new Error('no latency sample arrived at both clients');
  return [median(raw), median(sdk)];
}

const plantd = await Plantd.login(url, cfg.admin.email, cfg.admin.password);
// Keep the SDK's socket open across rounds (it opens on the first subscription).
const states = plantd.live.states();
const idle = plantd.live.subscribe(site, 'bench/idle');
for await (const s of states) if (s === LinkState.Connected) break;

console.log(`replay of ${replay.count} stored messages (messages/s)`);
const ratios = [];
for (let round = 1; round <= cfg.rounds; round++) {
  const raw = await rawRound();
  const sdk = await sdkRound(plantd);
  ratios.push(sdk / raw);
  console.log(`round ${round}: raw ${raw.toFixed(0)} msg/s, SDK ${sdk.toFixed(0)} msg/s -> SDK/raw ${((sdk / raw) * 100).toFixed(0)} %`);
}
console.log(`median SDK/raw: ${(median(ratios) * 100).toFixed(0)} %`);
const [rawLat, sdkLat] = await latency(plantd);
const added = sdkLat - rawLat;
console.log(`latency (median of ${cfg.samples}): raw ${rawLat.toFixed(2)} ms, SDK ${sdkLat.toFixed(2)} ms, added ${added >= 0 ? '+' : ''}${added.toFixed(2)} ms`);
idle.close();
plantd.live.close();
