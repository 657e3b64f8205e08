#!/usr/bin/env node
// Browser bench: how long the trend chart (uPlot, the library and options
// the app's trend uses) takes to draw a 1,000,000-point history in Debian's
// chromium, at 1920 px wide. Issue 15's target: < 300 ms.
//
//   node tests/bench-trend.mjs [points] [runs]
//
// Each run builds a fresh chart in a fresh page (no warm canvas) and times
// `new uPlot(…)` through its first synchronous draw, plus the next animation
// frame (what a person waits for). Prints each run and the median/max.
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const points = Number(process.argv[2] ?? 1_000_000);
const runs = Number(process.argv[3] ?? 5);
const browser = await chromium.launch({
  executablePath: process.env.PLANTD_CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const times = [];
for (let r = 0; r < runs; r++) {
  const page = await browser.newPage({ viewport: { width: 1920, height: 1080 } });
  await page.setContent('<div id="c" style="width:1880px"></div>');
  await page.addStyleTag({ path: join(here, '../node_modules/uplot/dist/uPlot.min.css') });
  await page.addScriptTag({ path: join(here, '../node_modules/uplot/dist/uPlot.iife.min.js') });
  const ms = await page.evaluate(async (n) => {
    // A year-long 1 Hz-like series: a slow wave, noise and a few spikes.
    const xs = new Float64Array(n);
    const ys = new Float64Array(n);
    const t0 = 1_700_000_000;
    for (let i = 0; i < n; i++) {
      xs[i] = t0 + i * 30;
      ys[i] = 20 + 5 * Math.sin(i / 5000) + Math.random() - 0.5 + (i % 99991 === 0 ? 15 : 0);
    }
    const el = document.getElementById('c');
    const start = performance.now();
    // The options of app/src/trend.tsx.
    new uPlot(
      {
        width: 1880,
        height: 260,
        series: [{}, { label: 'line1/temp', stroke: '#1f77b4', width: 1.5, points: { show: false } }],
        axes: [{}, { size: 60 }],
        cursor: { drag: { x: true, y: false } },
      },
      [xs, ys],
      el,
    );
    await new Promise((r) => requestAnimationFrame(() => r()));
    return performance.now() - start;
  }, points);
  times.push(ms);
  console.log(`run ${r + 1}: ${points} points drawn in ${ms.toFixed(1)} ms`);
  await page.close();
}
await browser.close();
times.sort((a, b) => a - b);
console.log(`median ${times[Math.floor(times.length / 2)].toFixed(1)} ms, max ${times[times.length - 1].toFixed(1)} ms over ${runs} runs (target < 300 ms)`);
