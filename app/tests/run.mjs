#!/usr/bin/env node
// The app in a real browser: Debian's chromium driven by playwright-core
// against a running `plantd up`. Started by cli/tests/it/app.rs, which starts
// `plantd up` on free ports, creates the users, device credentials and the
// state key, and passes them in $PLANTD_APP_TEST (JSON):
//
//   {"base": "http://127.0.0.1:PORT", "mqtt_port": N, "admin": {"email", "password"},
//    "viewer": {"email", "password"}, "device": {"id", "token"}, "receiver": {"id", "token"},
//    "site": "local", "state": {"scope", "key"}, "screenshots": "DIR"}
//
// Devices publish and receive over MQTT with Debian's mosquitto_pub and
// mosquitto_sub (installed by scripts/setup). Every scenario prints
// `ok - NAME` or `not ok - NAME: why`; the last line is `N passed, N failed`,
// and the exit code is 1 when anything failed. Screenshots of each page go
// to the screenshots directory (under target/, never committed).
import { spawn } from 'node:child_process';
import { mkdirSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const cfg = JSON.parse(process.env.PLANTD_APP_TEST ?? 'null');
if (!cfg) {
  console.error('PLANTD_APP_TEST is not set: run this through `cargo nextest run -p plantd-cli -E test(app_in_a_browser)`');
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

/** Runs a program to completion: {code, stdout, stderr}. */
function run(cmd, args, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A device publishing one message (QoS 1: returns once the edge acknowledged it). */
async function publish(topic, message) {
  const { id, token } = cfg.device;
  const r = await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(cfg.mqtt_port), '-i', id, '-u', id, '-P', token, '-q', '1', '-t', topic, '-m', message]);
  assert(r.code === 0, `mosquitto_pub exited ${r.code}: ${r.stderr}`);
}

/**
 * A device subscribed to `topic` (resolves once the broker granted the
 * subscription); `.next(payload)` waits for that payload.
 */
function subscriber(topic) {
  const { id, token } = cfg.receiver;
  // stdbuf: mosquitto_sub's stdout is block-buffered into a pipe.
  const p = spawn('stdbuf', ['-oL', 'mosquitto_sub', '-h', '127.0.0.1', '-p', String(cfg.mqtt_port), '-i', id, '-u', id, '-P', token, '-q', '1', '-t', topic, '-d'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const waiters = [];
  p.stdout.on('data', (d) => {
    out += d;
    for (const w of waiters) w();
  });
  p.stderr.on('data', (d) => (out += d));
  const until = (pred, ms, what) =>
    new Promise((resolve, reject) => {
      const check = () => {
        if (pred(out)) {
          clearTimeout(t);
          resolve();
          return true;
        }
        return false;
      };
      const t = setTimeout(() => reject(new Error(`${what} within ${ms} ms; mosquitto_sub said:\n${out}`)), ms);
      if (!check()) waiters.push(check);
    });
  return {
    ready: until((o) => o.includes('SUBACK'), 5000, 'no SUBACK'),
    next: (payload, ms = 5000) => until((o) => o.split('\n').some((l) => l.trim() === payload), ms, `no message ${payload}`),
    stop: () => p.kill(),
  };
}

/** Calls the API as `who` (email/password) outside the browser. */
async function apiAs(who) {
  const r = await fetch(`${cfg.base}/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: who.email, password: who.password }),
  });
  assert(r.ok, `API login ${r.status}`);
  const { access_token } = await r.json();
  return (path, init = {}) => fetch(`${cfg.base}${path}`, { ...init, headers: { authorization: `Bearer ${access_token}`, ...(init.headers ?? {}) } });
}

async function login(page, who) {
  await page.goto(cfg.base + '/');
  await page.getByLabel('Email').fill(who.email);
  await page.getByLabel('Password').fill(who.password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: 'Sites' }).waitFor();
}

const shot = (page, name) => page.screenshot({ path: join(cfg.screenshots, `${name}.png`), fullPage: true });

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
const consoleErrors = [];
async function newPage(viewport = { width: 1920, height: 1080 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
  page.setDefaultTimeout(10_000);
  return page;
}

const admin = await newPage();
const site = cfg.site;
const tag = String(Date.now() % 100000);

await scenario('a wrong password is refused with a message', async () => {
  await admin.goto(cfg.base + '/');
  await admin.getByLabel('Email').fill(cfg.admin.email);
  await admin.getByLabel('Password').fill('not-the-password');
  await admin.getByRole('button', { name: 'Log in' }).click();
  await admin.getByRole('alert').filter({ hasText: 'Wrong email or password' }).waitFor();
  await shot(admin, 'login-refused');
});

await scenario('the admin logs in and sees the sites', async () => {
  await login(admin, cfg.admin);
  await admin.locator(`[data-site="${site}"]`).waitFor();
  await shot(admin, 'sites');
});

await scenario('a value a device publishes shows in the grid within a second, and the trend gains it', async () => {
  await admin.getByRole('link', { name: new RegExp(site) }).first().click();
  await admin.locator('[data-testid=grid][data-live=subscribed]').waitFor();
  await admin.getByText('● live').waitFor();
  const first = `21.${tag}`;
  await publish('line1/temp', first);
  const published = Date.now();
  await admin.locator('tr[data-topic="line1/temp"] td.value', { hasText: first }).waitFor({ timeout: 1000 });
  const ms = Date.now() - published;
  assert(ms < 1000, `shown after ${ms} ms`);
  console.log(`# grid showed the value ${ms} ms after the publish was acknowledged`);
  await admin.locator('tr[data-topic="line1/temp"]').getByRole('button').click();
  await admin.locator('[data-testid=trend] canvas').waitFor();
  const before = Number(await admin.getByTestId('trend-points').textContent());
  assert(before >= 1, `trend starts with ${before} points; the stored reading should be there`);
  await publish('line1/temp', `22.${tag}`);
  await admin.locator('tr[data-topic="line1/temp"] td.value', { hasText: `22.${tag}` }).waitFor({ timeout: 1000 });
  await admin.waitForFunction((n) => Number(document.querySelector('[data-testid=trend-points]')?.textContent) > n, before, { timeout: 1000 });
  await shot(admin, 'site');
});

await scenario('the topic tree and the search narrow the grid', async () => {
  await publish('line2/flow', '3.5');
  const rows = admin.locator('tr[data-topic]');
  await admin.locator('tr[data-topic="line2/flow"]').waitFor({ timeout: 1000 });
  const tree = admin.getByRole('navigation', { name: 'topic tree' });
  await tree.getByRole('button', { name: /^line1/ }).click();
  await admin.locator('tr[data-topic="line2/flow"]').waitFor({ state: 'detached' });
  assert((await rows.count()) === 1, `line1 shows ${await rows.count()} rows`);
  await tree.getByRole('button', { name: /^All/ }).click();
  await admin.getByLabel('Search').fill('flow');
  await admin.locator('tr[data-topic="line1/temp"]').waitFor({ state: 'detached' });
  assert((await rows.count()) === 1 && (await rows.first().getAttribute('data-topic')) === 'line2/flow', 'search shows only line2/flow');
  await admin.getByLabel('Search').fill('');
});

await scenario('a command sent from the page, after confirmation, reaches a device subscribed over MQTT', async () => {
  const sub = subscriber('line1/valve/set');
  try {
    await sub.ready;
    const form = admin.getByTestId('command-form');
    await form.getByLabel('Topic').fill('line1/valve/set');
    await form.getByLabel('Payload').fill(`open-${tag}`);
    await form.getByRole('button', { name: 'Send…' }).click();
    const dialog = admin.getByRole('dialog', { name: 'Send this command?' });
    await dialog.waitFor();
    await shot(admin, 'command-confirm');
    await dialog.getByRole('button', { name: 'Send command' }).click();
    await admin.getByTestId('command-result').waitFor();
    await sub.next(`open-${tag}`);
    await admin.locator('[data-testid=command-delivery][data-state=delivered]').waitFor();
  } finally {
    sub.stop();
  }
});

await scenario('a command nobody subscribes to is shown held, and cancelling it says so', async () => {
  const form = admin.getByTestId('command-form');
  await form.getByLabel('Topic').fill(`line1/nobody-${tag}/set`);
  await form.getByLabel('Payload').fill('stop');
  await form.getByRole('button', { name: 'Send…' }).click();
  await admin.getByRole('dialog', { name: 'Send this command?' }).getByRole('button', { name: 'Send command' }).click();
  const delivery = admin.getByTestId('command-delivery');
  await delivery.getByText('no device subscribes').waitFor();
  await shot(admin, 'command-held');
  await delivery.getByRole('button', { name: 'Cancel it' }).click();
  await admin.locator('[data-testid=command-delivery][data-state=cancelled]').waitFor();
});

await scenario('the trend exports its points as CSV', async () => {
  const [download] = await Promise.all([admin.waitForEvent('download'), admin.getByRole('button', { name: 'Export CSV' }).click()]);
  const path = join(cfg.screenshots, 'trend.csv');
  await download.saveAs(path);
  const csv = readFileSync(path, 'utf8');
  assert(csv.startsWith('time,value\n'), csv);
  assert(csv.includes(`,22.${tag}`), `the live point is missing:\n${csv}`);
});

await scenario('an alert fires and is acknowledged with a note', async () => {
  const call = await apiAs(cfg.admin);
  const rule = {
    id: `hot-${tag}`,
    severity: 'critical',
    for: '0s',
    condition: { kind: 'threshold', topic: 'line1/temp', op: '>', value: 80 },
  };
  const r = await call('/v1/alert-rules', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(rule) });
  assert(r.status === 201, `rule: ${r.status} ${await r.text()}`);
  // The engine evaluates on readings: publish until the alert fires (a
  // reading before the rule was loaded is not evaluated).
  const deadline = Date.now() + 20_000;
  await admin.getByRole('link', { name: 'Alarms' }).click();
  const row = admin.locator(`tr[data-alert]`, { hasText: rule.id }).filter({ hasText: 'firing' });
  while (!(await row.count())) {
    assert(Date.now() < deadline, 'the alert did not fire within 20 s');
    await publish('line1/temp', '95');
    await admin.waitForTimeout(500);
    await admin.getByLabel('State').selectOption('firing');
    await admin.getByLabel('State').selectOption('');
  }
  await row.getByRole('button', { name: 'Acknowledge…' }).click();
  const dialog = admin.getByRole('dialog', { name: 'Acknowledge alert' });
  await dialog.getByLabel('Note').fill('on it');
  await dialog.getByRole('button', { name: 'Acknowledge', exact: true }).click();
  await admin.locator('tr[data-alert]', { hasText: rule.id }).getByText('acked by').waitFor();
  await shot(admin, 'alarms');
});

await scenario('a state edit over someone else\'s change shows the conflict, and overwrite saves', async () => {
  const { scope, key } = cfg.state;
  await admin.getByRole('link', { name: 'State' }).click();
  await admin.getByTestId('scope').selectOption(scope);
  await admin.getByRole('button', { name: new RegExp(`^${key}`) }).click();
  const editor = admin.getByTestId('state-value');
  await editor.waitFor();
  // Someone else changes the value after the page loaded it.
  const call = await apiAs(cfg.admin);
  const r = await call(`/v1/state/${scope}/${key}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{"speed": 99}' });
  assert(r.ok, `the other change: ${r.status}`);
  await editor.fill('{"speed": 5}');
  await admin.getByRole('button', { name: 'Save' }).click();
  await admin.getByTestId('conflict').getByText('Changed by someone else').waitFor();
  await shot(admin, 'state-conflict');
  await admin.getByRole('button', { name: 'Overwrite with mine' }).click();
  await admin.getByRole('status').filter({ hasText: 'Saved' }).waitFor();
  const now = await (await call(`/v1/state/${scope}/${key}`)).json();
  assert(now.speed === 5, `stored ${JSON.stringify(now)}`);
});

await scenario('the logs page follows a device\'s log lines live and queries them', async () => {
  await admin.getByRole('link', { name: 'Logs' }).click();
  await admin.getByRole('button', { name: 'Follow live' }).click();
  await admin.getByTestId('tailing').waitFor();
  // A text line with its level first: stored as level error, message the rest.
  const line = `pump ${tag} overheated`;
  await publish('$plantd/log/pump1', `ERROR ${line}`);
  const row = admin.getByTestId('logs').locator('tr', { hasText: line });
  await row.waitFor({ timeout: 5000 });
  assert((await row.textContent()).includes('error'), `level not parsed: ${await row.textContent()}`);
  await shot(admin, 'logs-live');
  await admin.getByRole('button', { name: 'Stop following' }).click();
  await admin.getByLabel('Filter').fill(`|= "${tag}"`);
  await admin.getByRole('button', { name: 'Query' }).click();
  await admin.getByTestId('logs').locator('tr', { hasText: line }).waitFor({ timeout: 5000 });
  await shot(admin, 'logs');
});

await scenario('a viewer sees the values but no command or acknowledge controls', async () => {
  const viewer = await newPage();
  await login(viewer, cfg.viewer);
  await viewer.getByRole('link', { name: new RegExp(site) }).first().click();
  await viewer.locator('tr[data-topic="line1/temp"]').waitFor();
  assert((await viewer.getByTestId('command-form').count()) === 0, 'a viewer sees the command form');
  assert((await viewer.getByRole('heading', { name: 'Send a command' }).count()) === 0, 'a viewer sees the command panel');
  await viewer.getByTestId('no-commands').getByText('cannot send commands').waitFor();
  await shot(viewer, 'viewer-site');
  await viewer.getByRole('link', { name: 'Alarms' }).click();
  await viewer.locator('tr[data-alert]').first().waitFor();
  assert((await viewer.getByRole('button', { name: 'Acknowledge…' }).count()) === 0, 'a viewer sees acknowledge buttons');
  await viewer.context().close();
});

await scenario('at phone width the site page fits and is keyboard navigable', async () => {
  const phone = await newPage({ width: 390, height: 844 });
  await login(phone, cfg.admin);
  // Keyboard only: tab to the site's link and follow it.
  let found = false;
  for (let i = 0; i < 30 && !found; i++) {
    await phone.keyboard.press('Tab');
    found = await phone.evaluate((s) => document.activeElement?.getAttribute('href') === `/sites/${s}`, site);
  }
  assert(found, 'the site link is not reachable with Tab');
  await phone.keyboard.press('Enter');
  await phone.locator('tr[data-topic="line1/temp"]').waitFor();
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert(overflow <= 0, `the page is ${overflow} px wider than the screen`);
  await shot(phone, 'site-phone');
  await phone.context().close();
});

await scenario('logging out returns to the login form and ends the token', async () => {
  await admin.getByRole('button', { name: 'Log out' }).click();
  await admin.getByRole('button', { name: 'Log in' }).waitFor();
  await admin.goto(cfg.base + '/sites/' + site);
  await admin.getByRole('button', { name: 'Log in' }).waitFor();
});

await scenario('no script errors in any page', async () => {
  // The browser logs the refused login (401) and the state conflict (409)
  // as failed resources: both are scenarios above.
  const expected = /Failed to load resource: the server responded with a status of (401|409)/;
  const real = consoleErrors.filter((e) => !expected.test(e));
  assert(real.length === 0, real.join('\n'));
});

await browser.close();
const failed = results.filter(([, e]) => e).length;
console.log(`${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
