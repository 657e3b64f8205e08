#!/usr/bin/env node
// Browser bench: the live value grid with 1,000 topics each updating 10
// times a second (10,000 messages a second over the proxy's WebSocket),
// in Debian's chromium against a real `plantd up`. Issue 15's target: the
// main thread's frame time p95 < 16 ms.
//
//   (cd .. && cargo build -p plantd-cli) && npm run build
//   node tests/bench-grid.mjs [topics] [hz] [seconds] [rounds]
//
// Starts `target/debug/plantd up` on free ports with a fresh data
// directory, logs in as its admin, opens the site page, then publishes
// straight into NATS on `plantd.local.up.bench.tNNNN` — the subjects the
// edge publishes devices' messages on, which the proxy's live
// subscriptions read — at the given rate, in one batch per tick.
//
// Each round records a Chromium performance trace (CDP, through
// playwright-core) for `seconds` after a warm-up second. The main
// thread's frame time is its busy time (top-level tasks) between two
// consecutive animation frames; also printed: the frame interval, frames
// a second, and where the main thread's time went (trace event totals).
// Round 0 is the reference: the same page, nothing published — the floor
// of this machine under its load at that moment. Traces are written to
// target/bench-grid/round-N.json (open them in chrome://tracing or the
// DevTools Performance panel).
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '../..');
const topics = Number(process.argv[2] ?? 1000);
const hz = Number(process.argv[3] ?? 10);
const seconds = Number(process.argv[4] ?? 10);
const rounds = Number(process.argv[5] ?? 3);
const traces = join(repo, 'target/bench-grid');
mkdirSync(traces, { recursive: true });

// --- plantd up ---------------------------------------------------------------
const data = mkdtempSync(join(tmpdir(), 'plantd-bench-grid-'));
const up = spawn(
  join(repo, 'target/debug/plantd'),
  ['up', '--data-dir', data, '--nats-port', '0', '--http-listen', '127.0.0.1:0', '--mqtt-listen', '127.0.0.1:0', '--edge-http-listen', '127.0.0.1:0', '--app-dir', process.env.PLANTD_APP_DIST ?? join(here, '../dist')],
  { stdio: ['ignore', 'pipe', 'ignore'] },
);
const { natsUrl, base } = await new Promise((resolve, reject) => {
  let out = '';
  const t = setTimeout(() => reject(new Error(`plantd up not ready in 60 s:\n${out}`)), 60_000);
  up.stdout.on('data', (d) => {
    out += d;
    if (out.includes('plantd is up')) {
      clearTimeout(t);
      const word = (prefix, line) => line.split(/\s+/).find((w) => w.startsWith(prefix));
      const lines = out.split('\n');
      resolve({
        natsUrl: word('nats://', lines.find((l) => l.trim().startsWith('nats '))),
        base: word('http://', lines.find((l) => l.trim().startsWith('functions '))),
      });
    }
  });
  up.on('exit', (c) => reject(new Error(`plantd up exited ${c}:\n${out}`)));
});
const stop = async () => {
  const exited = new Promise((r) => up.once('exit', r));
  up.kill('SIGTERM');
  await exited;
  rmSync(data, { recursive: true, force: true });
};

try {
  // --- NATS publisher (the text protocol: CONNECT, PUB) ----------------------
  const { hostname, port } = new URL(natsUrl.replace('nats://', 'http://'));
  const sock = net.connect(Number(port), hostname);
  await new Promise((resolve) => {
    sock.once('data', () => {
      sock.write('CONNECT {"verbose":false,"pedantic":false,"name":"bench-grid"}\r\nPING\r\n');
      sock.on('data', (d) => String(d).includes('PONG') && resolve());
    });
  });

  // --- the browser -------------------------------------------------------------
  const browser = await chromium.launch({
    executablePath: process.env.PLANTD_CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1920, height: 1080 } });
  await page.goto(base + '/');
  await page.getByLabel('Email').fill('admin@plantd.local');
  await page.getByLabel('Password').fill(readFileSync(join(data, 'admin-password'), 'utf8').trim());
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('link', { name: /local/ }).first().click();
  await page.locator('[data-testid=grid][data-live=subscribed]').waitFor();

  let sent = 0;
  let tick;
  const publishing = (on) => {
    clearInterval(tick);
    if (!on) return;
    tick = setInterval(() => {
      let batch = '';
      for (let i = 0; i < topics; i++) {
        const payload = (20 + Math.random() * 5).toFixed(3);
        batch += `PUB plantd.local.up.bench.t${String(i).padStart(4, '0')} ${payload.length}\r\n${payload}\r\n`;
      }
      sock.write(batch);
      sent += topics;
    }, 1000 / hz);
  };

  const results = [];
  for (let round = 0; round <= rounds; round++) {
    const reference = round === 0;
    publishing(!reference);
    // Warm up: every topic in the grid (its rows are added once), then a
    // second more, then measure.
    // (aria-rowcount counts every topic of a virtual grid; an older grid
    // had a row element per topic.)
    if (!reference) {
      await page.waitForFunction(
        (n) => Number(document.querySelector('table.grid')?.getAttribute('aria-rowcount')) === n + 1 || document.querySelectorAll('tr[data-topic]').length >= n,
        topics,
        { timeout: 30_000 },
      );
    }
    await page.waitForTimeout(1000);
    const firstValue = reference ? null : await page.locator('tr[data-topic] td.value').first().textContent();
    await browser.startTracing(page, {
      categories: ['toplevel', 'devtools.timeline', 'disabled-by-default-devtools.timeline', 'v8', 'blink.user_timing'],
    });
    const m = await page.evaluate(async (ms) => {
      const frames = [];
      let last = performance.now();
      const end = last + ms;
      await new Promise((resolve) => {
        const f = (t) => {
          frames.push(t - last);
          last = t;
          if (t < end) requestAnimationFrame(f);
          else resolve();
        };
        requestAnimationFrame(f);
      });
      return { frames, rows: document.querySelectorAll('tr[data-topic]').length, total: Number(document.querySelector('table.grid')?.getAttribute('aria-rowcount') ?? document.querySelectorAll('tr[data-topic]').length + 1) - 1 };
    }, seconds * 1000);
    const trace = await browser.stopTracing();
    writeFileSync(join(traces, `round-${round}.json`), trace);
    const lastValue = reference ? null : await page.locator('tr[data-topic] td.value').first().textContent();
    const t = mainThread(JSON.parse(String(trace)));
    const sorted = [...m.frames].sort((a, b) => a - b);
    const q = (xs, p) => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))];
    const r = {
      round,
      reference,
      busyP50: q(t.busy, 0.5),
      busyP95: q(t.busy, 0.95),
      busyP99: q(t.busy, 0.99),
      busyMax: t.busy[t.busy.length - 1],
      intervalP95: q(sorted, 0.95),
      fps: m.frames.length / seconds,
      rows: m.rows,
      total: m.total,
      moving: reference ? null : firstValue !== lastValue,
      top: t.top,
    };
    results.push(r);
    console.log(
      `round ${round}${reference ? ' (reference: nothing published)' : ''}: main-thread frame time p50 ${r.busyP50.toFixed(1)} ms, p95 ${r.busyP95.toFixed(1)} ms, p99 ${r.busyP99.toFixed(1)} ms, max ${r.busyMax.toFixed(1)} ms over ${t.busy.length} frames; ` +
        `frame interval p95 ${r.intervalP95.toFixed(1)} ms, ${r.fps.toFixed(1)} frames/s; ${r.rows} of ${r.total} topics in the document${reference ? '' : `, values moving: ${r.moving ? 'yes' : 'NO'}`}`,
    );
    console.log(`  main thread: ${r.top.map(([n, ms]) => `${n} ${ms.toFixed(0)} ms`).join(', ')}`);
  }
  publishing(false);
  const measured = results.filter((r) => !r.reference);
  const p95s = measured.map((r) => r.busyP95).sort((a, b) => a - b);
  console.log(`${topics} topics × ${hz} Hz, ${rounds} rounds of ${seconds} s (${sent} messages published)`);
  console.log(`main-thread frame time p95 per round: ${measured.map((r) => r.busyP95.toFixed(1)).join(', ')} ms; median ${p95s[Math.floor(p95s.length / 2)].toFixed(1)} ms (target < 16 ms); reference (idle page) p95 ${results[0].busyP95.toFixed(1)} ms`);
  await browser.close();
  sock.end();
} finally {
  await stop();
}

/**
 * The renderer main thread's busy time per frame from a Chromium trace:
 * frames are cut at each animation frame callback (`FireAnimationFrame`),
 * busy time is the top-level tasks' time inside each frame. Also the
 * largest trace event totals on that thread (inclusive, so they overlap).
 */
function mainThread(trace) {
  const events = trace.traceEvents ?? trace;
  const names = new Map();
  for (const e of events) if (e.ph === 'M' && e.name === 'thread_name' && e.args?.name === 'CrRendererMain') names.set(`${e.pid}:${e.tid}`, true);
  // The renderer whose main thread ran the most animation frames is the page's.
  const frames = new Map();
  for (const e of events) {
    const k = `${e.pid}:${e.tid}`;
    if (names.has(k) && e.name === 'FireAnimationFrame') frames.set(k, (frames.get(k) ?? 0) + 1);
  }
  const main = [...frames.entries()].sort((a, b) => b[1] - a[1])[0]?.[0];
  const on = events.filter((e) => `${e.pid}:${e.tid}` === main && e.ph === 'X' && typeof e.dur === 'number');
  const cuts = on.filter((e) => e.name === 'FireAnimationFrame').map((e) => e.ts).sort((a, b) => a - b);
  const tasks = on
    .filter((e) => e.cat.includes('toplevel'))
    .sort((a, b) => a.ts - b.ts)
    .filter((e, i, all) => i === 0 || e.ts >= all[i - 1].ts + all[i - 1].dur); // outermost only
  const busy = [];
  let k = 0;
  for (let f = 0; f + 1 < cuts.length; f++) {
    const [from, to] = [cuts[f], cuts[f + 1]];
    let sum = 0;
    while (k < tasks.length && tasks[k].ts + tasks[k].dur <= from) k++;
    for (let j = k; j < tasks.length && tasks[j].ts < to; j++) {
      sum += Math.min(to, tasks[j].ts + tasks[j].dur) - Math.max(from, tasks[j].ts);
    }
    busy.push(sum / 1000);
  }
  busy.sort((a, b) => a - b);
  const totals = new Map();
  for (const e of on) {
    if (e.cat.includes('toplevel')) continue;
    totals.set(e.name, (totals.get(e.name) ?? 0) + e.dur / 1000);
  }
  const top = [...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8);
  return { busy: busy.length ? busy : [0], top };
}
