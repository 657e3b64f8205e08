#!/usr/bin/env node
// Browser bench: the live value grid with 1,000 topics each updating 10
// times a second (10,000 messages a second over the proxy's WebSocket),
// in Debian's chromium against a real `plantd up`. Issue 15's target: the
// main thread's frame time p95 < 16 ms.
//
//   (cd .. && cargo build -p plantd-cli) && npm run build
//   node tests/bench-grid.mjs [topics] [hz] [seconds]
//
// Starts `target/debug/plantd up` on free ports with a fresh data
// directory, logs in as its admin, opens the site page, then publishes
// straight into NATS on `plantd.local.up.bench.tNNNN` — the subjects the
// edge publishes devices' messages on, which the proxy's live
// subscriptions read — at the given rate, in one batch per tick. The page
// records every animation frame's interval and the long tasks
// (PerformanceObserver), after a warm-up second.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
  const tick = setInterval(() => {
    let batch = '';
    for (let i = 0; i < topics; i++) {
      const payload = (20 + Math.random() * 5).toFixed(3);
      batch += `PUB plantd.local.up.bench.t${String(i).padStart(4, '0')} ${payload.length}\r\n${payload}\r\n`;
    }
    sock.write(batch);
    sent += topics;
  }, 1000 / hz);

  // Warm up one second (the grid fills), then measure.
  await page.waitForTimeout(1000);
  const m = await page.evaluate(async (ms) => {
    const frames = [];
    const long = [];
    const obs = new PerformanceObserver((l) => {
      for (const e of l.getEntries()) long.push(e.duration);
    });
    obs.observe({ type: 'longtask', buffered: false });
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
    obs.disconnect();
    return { frames, long, rows: document.querySelectorAll('tr[data-topic]').length };
  }, seconds * 1000);
  clearInterval(tick);

  const sorted = [...m.frames].sort((a, b) => a - b);
  const q = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
  const longSum = m.long.reduce((a, b) => a + b, 0);
  console.log(`${topics} topics × ${hz} Hz for ${seconds} s (${sent} messages published; ${m.rows} rows in the grid)`);
  console.log(`frames: ${m.frames.length} (${(m.frames.length / seconds).toFixed(1)} per second)`);
  console.log(`frame interval p50 ${q(0.5).toFixed(1)} ms, p95 ${q(0.95).toFixed(1)} ms, p99 ${q(0.99).toFixed(1)} ms, max ${sorted[sorted.length - 1].toFixed(1)} ms (target p95 < 16 ms)`);
  console.log(`long tasks (> 50 ms): ${m.long.length}, ${longSum.toFixed(0)} ms in all`);
  await browser.close();
  sock.end();
} finally {
  await stop();
}
