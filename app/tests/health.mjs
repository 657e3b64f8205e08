#!/usr/bin/env node
// The Sites page's health in a real browser: Debian's chromium driven by
// playwright-core against a running `plantd up`. Started by
// cli/tests/it/app.rs (`sites_health_in_a_browser`), which starts
// `plantd up`, registers a site no edge serves, creates a publishing
// device and an alert rule, and passes them in $PLANTD_APP_TEST (JSON):
//
//   {"base": "http://127.0.0.1:PORT", "mqtt_port": N, "admin": {"email", "password"},
//    "site": "local", "offline": "SITE", "device": {"id", "token"},
//    "alert": {"topic", "value"}, "screenshots": "DIR"}
//
// Prints `ok - NAME` / `not ok - NAME: why` per scenario and `N passed, N
// failed` last; exits 1 when anything failed.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const cfg = JSON.parse(process.env.PLANTD_APP_TEST ?? 'null');
if (!cfg) {
  console.error('PLANTD_APP_TEST is not set: run this through `cargo nextest run -p plantd-cli -E test(sites_health_in_a_browser)`');
  process.exit(2);
}
const CHROMIUM = process.env.PLANTD_CHROMIUM ?? '/usr/bin/chromium';
if (!existsSync(CHROMIUM)) {
  console.error(`${CHROMIUM} is missing: scripts/setup installs Debian's chromium (as root), or set PLANTD_CHROMIUM`);
  process.exit(2);
}
mkdirSync(cfg.screenshots, { recursive: true });

const results = [];
async function scenario(name, f) {
  const started = Date.now();
  try {
    await f();
    results.push([name, null]);
    console.log(`ok - ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    results.push([name, e]);
    console.log(`not ok - ${name}: ${e?.stack ?? e}`);
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

/** A device publishing one QoS 1 message with mosquitto_pub. */
function publish(topic, message) {
  const { id, token } = cfg.device;
  return new Promise((resolve, reject) => {
    const p = spawn('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(cfg.mqtt_port), '-i', id, '-u', id, '-P', token, '-q', '1', '-t', topic, '-m', message], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`mosquitto_pub exited ${code}: ${err}`))));
  });
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const errors = [];
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
page.on('pageerror', (e) => errors.push(String(e)));
page.setDefaultTimeout(20_000);

try {
  await scenario('log in: the sites page lists the sites with their health', async () => {
    await page.goto(cfg.base + '/');
    await page.getByLabel('Email').fill(cfg.admin.email);
    await page.getByLabel('Password').fill(cfg.admin.password);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.locator(`[data-site="${cfg.site}"]`).waitFor();
    await page.locator(`[data-site="${cfg.offline}"]`).waitFor();
  });

  const local = page.locator(`[data-site="${cfg.site}"]`);
  await scenario("the site's edge shows connected, its uplink starting or up and no backlog", async () => {
    // plantd up's edge puts a status every 5 s; the page asks every 5 s.
    await local.locator('[data-testid=edge][data-connected=yes]').waitFor();
    await local.getByText('● connected').waitFor();
    await local.locator('[data-testid=uplink]', { hasText: /^(starting|up) since/ }).waitFor();
    await local.locator('[data-testid=backlog]', { hasText: '0 messages' }).waitFor();
    await local.locator('[data-testid=lag]', { hasText: 'none' }).waitFor();
  });

  await scenario('a site no edge serves shows not connected, never heard from', async () => {
    const off = page.locator(`[data-site="${cfg.offline}"]`);
    await off.locator('[data-testid=edge][data-connected=no]').waitFor();
    await off.getByText('never heard from').waitFor();
    await off.locator('[data-testid=firing]', { hasText: '0' }).waitFor();
  });

  await scenario("a device's message and a firing alert show without a reload", async () => {
    const before = await local.locator('[data-testid=last-message]').textContent();
    await publish(cfg.alert.topic, String(cfg.alert.value));
    // The next status and the next fetch (each every 5 s) bring it.
    await local.locator('[data-testid=last-message]', { hasText: /^\d+(\.\d)? s ago$/ }).waitFor({ timeout: 20_000 });
    const after = await local.locator('[data-testid=last-message]').textContent();
    assert(before !== after || /^\d\.\d s ago$/.test(after ?? ''), `the last message did not move: ${before} → ${after}`);
    await local.locator('[data-testid=uplink]', { hasText: /^up since/ }).waitFor();
    await local.locator('[data-testid=firing]', { hasText: '1 (1 critical)' }).waitFor({ timeout: 30_000 });
    await local.locator('[data-testid=clients]').waitFor();
  });

  await scenario('ages advance between fetches', async () => {
    const text = async () => (await local.locator('[data-testid=last-message]').textContent()) ?? '';
    const first = await text();
    await page.waitForFunction(
      ([sel, was]) => document.querySelector(sel)?.textContent !== was,
      [`[data-site="${cfg.site}"] [data-testid=last-message]`, first],
      { timeout: 5_000 },
    );
    await page.screenshot({ path: join(cfg.screenshots, 'sites-health.png'), fullPage: true });
  });

  await scenario('no script errors', async () => {
    assert(errors.length === 0, errors.join('\n'));
  });
} finally {
  await browser.close();
}

const failed = results.filter(([, e]) => e).length;
console.log(`${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
