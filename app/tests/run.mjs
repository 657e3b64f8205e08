#!/usr/bin/env node
// The app in a real browser: Debian's chromium driven by playwright-core
// against a running `plantd up`. Started by cli/tests/it/app.rs, which starts
// `plantd up` on free ports, creates the users, device credentials and the
// state key, and passes them in $PLANTD_APP_TEST (JSON):
//
//   {"base": "http://127.0.0.1:PORT", "mqtt_port": N, "admin": {"email", "password"},
//    "viewer": {"email", "password"}, "device": {"id", "token"}, "receiver": {"id", "token"},
//    "site": "local", "state": {"scope", "key"}, "screenshots": "DIR",
//    "service": {"topic", "silent"}}
//
// `service.topic` is answered by an MQTT 5 device the Rust test runs
// (rumqttc v5: it answers on the request's response topic with its
// correlation data); `service.silent` has a subscriber that never answers.
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

// Asks `probe` again every 250 ms until it returns something truthy, and
// returns that; fails naming `what` after `ms`. The one polling helper
// (plantd_testkit's `eventually` for the browser test), for conditions
// that have no event to await.
async function eventually(what, ms, probe) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

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
/** Every WebSocket URL a page opened (the token must never be in one). */
const socketUrls = [];
async function newPage(viewport = { width: 1920, height: 1080 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on('websocket', (ws) => socketUrls.push(ws.url()));
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
  // The history has arrived (the range it covers is set).
  await admin.locator('[data-testid=trend-range][data-from]').waitFor();
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

await scenario('the trend shows several topics, zooms and pans by fetching the range again, and exports it as CSV', async () => {
  const range = admin.getByTestId('trend-range');
  const attr = async (name) => Number(await range.getAttribute(name));
  // Several topics in one chart.
  await admin.getByLabel('Add topic').fill('line2/flow');
  await admin.getByRole('button', { name: 'Add', exact: true }).click();
  await admin.locator('.trend .u-legend', { hasText: 'line2/flow' }).waitFor();
  await admin.locator('.trend .u-legend', { hasText: 'line1/temp' }).waitFor();
  // History beyond the last hour: the range is asked of the server.
  await admin.getByRole('button', { name: '24 h' }).click();
  await admin.waitForFunction(() => {
    const el = document.querySelector('[data-testid=trend-range]');
    return el && Date.now() - Number(el.getAttribute('data-from')) > 23 * 3600_000;
  });
  // Zoom by dragging across the middle of the chart: a fixed, narrower range, fetched again.
  const over = admin.locator('.trend .u-over');
  const box = await over.boundingBox();
  await admin.mouse.move(box.x + box.width * 0.4, box.y + box.height / 2);
  await admin.mouse.down();
  await admin.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2, { steps: 5 });
  await admin.mouse.up();
  await admin.locator('[data-testid=trend-range][data-follow=no]').waitFor();
  await admin.waitForFunction(() => {
    const el = document.querySelector('[data-testid=trend-range]');
    const span = Number(el.getAttribute('data-to')) - Number(el.getAttribute('data-from'));
    return span > 3 * 3600_000 && span < 6 * 3600_000;
  });
  const zoomedTo = await attr('data-to');
  // Pan earlier with the keyboard: the range moves back and is fetched again.
  await admin.getByTestId('trend').focus();
  await admin.keyboard.press('ArrowLeft');
  await admin.waitForFunction((t) => Number(document.querySelector('[data-testid=trend-range]').getAttribute('data-to')) < t, zoomedTo);
  await shot(admin, 'trend-zoomed');
  // Home: back to the live last hour.
  await admin.keyboard.press('Home');
  await admin.locator('[data-testid=trend-range][data-follow=yes]').waitFor();
  await admin.waitForFunction(() => Number(document.querySelector('[data-testid=trend-points]')?.textContent) >= 2);
  // The range as CSV: both topics, the live point of each.
  const [download] = await Promise.all([admin.waitForEvent('download'), admin.getByRole('button', { name: 'Export CSV' }).click()]);
  const path = join(cfg.screenshots, 'trend.csv');
  await download.saveAs(path);
  const csv = readFileSync(path, 'utf8');
  assert(csv.startsWith('time,line1/temp,line2/flow\n'), csv);
  const rows = csv.trim().split('\n').slice(1).map((l) => l.split(','));
  assert(rows.some((r) => Number(r[1]) === Number(`22.${tag}`) && r[2] === ''), `the live point of line1/temp is missing:\n${csv}`);
  assert(rows.some((r) => r[1] === '' && Number(r[2]) === 3.5), `line2/flow's point is missing:\n${csv}`);
  assert(rows.every((r) => !Number.isNaN(Date.parse(r[0]))), `a time is not ISO 8601:\n${csv}`);
  await shot(admin, 'trend');
});

await scenario('a service call answered by an MQTT 5 device shows its answer; unserved and silent ones say why', async () => {
  const form = admin.getByTestId('service-form');
  const outcome = admin.getByTestId('service-outcome');
  await form.getByLabel('Service topic').fill(cfg.service.topic);
  await form.getByLabel('Request body').fill(`{"ask": "status-${tag}"}`);
  // The edge's service subscription may still be on its way: a 503 first is retried.
  const deadline = Date.now() + 10_000;
  for (;;) {
    await form.getByRole('button', { name: 'Call', exact: true }).click();
    await admin.locator('[data-testid=service-outcome][data-outcome]').waitFor();
    const kind = await outcome.getAttribute('data-outcome');
    if (kind === 'answer') break;
    assert(kind === 'no_device' && Date.now() < deadline, `the call ended ${kind}: ${await outcome.textContent()}`);
    await admin.waitForTimeout(200);
  }
  const answer = await admin.getByTestId('service-answer').textContent();
  assert(answer.includes('"running": true') && answer.includes(`status-${tag}`), answer);
  await shot(admin, 'service-call');
  await form.getByLabel('Service topic').fill('nobody/home');
  await form.getByRole('button', { name: 'Call', exact: true }).click();
  await admin.locator('[data-testid=service-outcome][data-outcome=no_device]').getByText('No device serves this').waitFor();
  await form.getByLabel('Service topic').fill(cfg.service.silent);
  await form.getByLabel('Timeout (ms)').fill('1000');
  await form.getByRole('button', { name: 'Call', exact: true }).click();
  await admin.locator('[data-testid=service-outcome][data-outcome=timeout]').getByText('Timed out').waitFor({ timeout: 5000 });
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
  // The engine evaluates on readings, and one sent before it loaded the
  // rule is not evaluated: the device keeps reporting, as a real one does,
  // until the list (which is not live) shows the alert firing.
  await admin.getByRole('link', { name: 'Alarms' }).click();
  const row = admin.locator(`tr[data-alert]`, { hasText: rule.id }).filter({ hasText: 'firing' });
  await eventually('the alert to fire', 20_000, async () => {
    await publish('line1/temp', '95');
    await admin.getByLabel('State').selectOption('firing');
    await admin.getByLabel('State').selectOption('');
    return (await row.count()) > 0;
  });
  await row.getByRole('button', { name: 'Acknowledge…' }).click();
  const dialog = admin.getByRole('dialog', { name: 'Acknowledge alert' });
  await dialog.getByLabel('Note').fill('on it');
  await dialog.getByRole('button', { name: 'Acknowledge', exact: true }).click();
  await admin.locator('tr[data-alert]', { hasText: rule.id }).getByText('acked by').waitFor();
  await shot(admin, 'alarms');
});

await scenario('an alert\'s transitions are listed from its records', async () => {
  const row = admin.locator('tr[data-alert]', { hasText: `hot-${tag}` });
  await row.getByRole('button', { name: /^Transitions/ }).click();
  const dialog = admin.getByRole('dialog', { name: 'Alert transitions' });
  await dialog.locator('[data-testid=transitions] li[data-to=firing]').first().waitFor();
  await dialog.locator('[data-testid=transitions] li[data-kind=ack]', { hasText: 'on it' }).waitFor();
  await shot(admin, 'alert-transitions');
  await dialog.getByRole('button', { name: 'Close' }).click();
});

await scenario('a silence made in the page suppresses an alert, and expiring it ends it', async () => {
  const call = await apiAs(cfg.admin);
  const rule = { id: `cold-${tag}`, severity: 'warning', for: '0s', condition: { kind: 'threshold', topic: 'line1/temp', op: '<', value: -50 } };
  const r = await call('/v1/alert-rules', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(rule) });
  assert(r.status === 201, `rule: ${r.status} ${await r.text()}`);
  await admin.getByRole('button', { name: 'New silence…' }).click();
  const dialog = admin.getByRole('dialog', { name: 'New silence' });
  await dialog.getByLabel('Label').fill('rule');
  await dialog.getByLabel('Value').fill(rule.id);
  await dialog.getByLabel('For').selectOption('60');
  await dialog.getByLabel('Comment').fill('maintenance');
  await shot(admin, 'silence-new');
  await dialog.getByRole('button', { name: 'Create silence' }).click();
  const silenceRow = admin.locator('tr[data-silence]', { hasText: rule.id });
  await silenceRow.getByText('active').waitFor();
  // The alert fires while silenced: its row and its firing record say so.
  const row = admin.locator('tr[data-alert]', { hasText: rule.id }).filter({ hasText: 'firing' });
  const deadline = Date.now() + 20_000;
  while (!(await row.count())) {
    assert(Date.now() < deadline, 'the silenced alert did not fire within 20 s');
    await publish('line1/temp', '-60');
    await admin.waitForTimeout(500);
    await admin.getByLabel('State').selectOption('firing');
    await admin.getByLabel('State').selectOption('');
  }
  assert((await row.getAttribute('data-silenced')) === 'yes', 'the firing alert is not shown silenced');
  await row.getByText('silenced until').waitFor();
  await row.getByRole('button', { name: /^Transitions/ }).click();
  const history = admin.getByRole('dialog', { name: 'Alert transitions' });
  const firing = history.locator('li[data-to=firing]').first();
  await firing.waitFor();
  assert((await firing.getAttribute('data-silenced')) === 'yes', `the firing record is not silenced: ${await firing.textContent()}`);
  await firing.getByText('silenced — not notified').waitFor();
  await shot(admin, 'alarms-silenced');
  await history.getByRole('button', { name: 'Close' }).click();
  await silenceRow.getByRole('button', { name: 'Expire now' }).click();
  await silenceRow.waitFor({ state: 'detached' });
  await admin.locator(`tr[data-alert][data-silenced=no]`, { hasText: rule.id }).waitFor();
  await publish('line1/temp', '20');
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

/** Opens an admin tab from the nav. */
async function adminTab(page, name) {
  await page.getByRole('navigation', { name: 'main' }).getByRole('link', { name: 'Admin' }).click();
  await page.getByRole('navigation', { name: 'admin' }).getByRole('link', { name }).click();
}

const newUser = { email: `operator-${tag}@plantd.local`, password: `operator-password-${tag}` };

await scenario('a role is created and edited; a built-in name is refused with why', async () => {
  await adminTab(admin, 'Roles');
  const name = `line-reader-${tag}`;
  const form = admin.getByRole('form', { name: 'new role' });
  await form.getByLabel('Name').fill(name);
  await form.getByLabel('Description').fill('reads line 1');
  await form.getByLabel('Permissions (one a line)').fill('telemetry:*:read');
  await form.getByLabel('MQTT subscribe filters').fill('line1/#');
  await form.getByRole('button', { name: 'Create role' }).click();
  const row = admin.locator(`tr[data-role="${name}"]`);
  await row.getByText('telemetry:*:read').waitFor();
  await row.getByRole('button', { name: 'Edit' }).click();
  const edit = admin.getByRole('form', { name: `edit role ${name}` });
  await edit.getByLabel('Permissions (one a line)').fill('telemetry:*:read\nalerts:read');
  await edit.getByRole('button', { name: 'Save role' }).click();
  await row.getByText('alerts:read').waitFor();
  // A built-in name is refused, saying why.
  await form.getByLabel('Name').fill('viewer');
  await form.getByRole('button', { name: 'Create role' }).click();
  await admin.getByRole('alert').filter({ hasText: 'viewer is a built-in role' }).waitFor();
  // A role that may only read and create roles (for the next scenario).
  await form.getByLabel('Name').fill(`role-maker-${tag}`);
  await form.getByLabel('Permissions (one a line)').fill('identity:role:read\nidentity:role:create');
  await form.getByLabel('MQTT subscribe filters').fill('');
  await form.getByRole('button', { name: 'Create role' }).click();
  await admin.locator(`tr[data-role="role-maker-${tag}"]`).waitFor();
  await shot(admin, 'admin-roles');
});

await scenario('an admin creates a user with roles, who then logs in and is refused what their roles lack; log out everywhere ends their session; their roles change; deactivated they cannot log in', async () => {
  await adminTab(admin, 'Users');
  const form = admin.getByRole('form', { name: 'new user' });
  await form.getByLabel('Email').fill(newUser.email);
  await form.getByLabel('Initial password').fill(newUser.password);
  await form.getByLabel('viewer').uncheck();
  await form.getByLabel('operator').check();
  await form.getByLabel(`role-maker-${tag}`).check();
  await form.getByRole('button', { name: 'Create user' }).click();
  const row = admin.locator(`tr[data-user="${newUser.email}"]`);
  await row.getByRole('cell', { name: `operator, role-maker-${tag}` }).waitFor();
  await shot(admin, 'admin-users');
  const them = await newPage();
  await login(them, newUser);
  await them.getByTestId('whoami').getByText('operator').waitFor();
  // They see the admin tabs their roles allow, and a refused action says why.
  await adminTab(them, 'Roles');
  assert((await them.getByRole('navigation', { name: 'admin' }).getByRole('link').count()) === 1, 'more tabs than Roles');
  const theirs = them.getByRole('form', { name: 'new role' });
  await theirs.getByLabel('Name').fill(`escalate-${tag}`);
  await theirs.getByLabel('Permissions (one a line)').fill('identity:user:create');
  await theirs.getByRole('button', { name: 'Create role' }).click();
  await them.getByRole('alert').filter({ hasText: 'Not allowed: missing permission identity:user:create' }).waitFor();
  await shot(them, 'admin-refused');
  // Log out everywhere: their next request is refused and the page asks them to log in.
  await row.getByRole('button', { name: 'Log out everywhere…' }).click();
  await admin.getByRole('dialog', { name: 'Log out everywhere?' }).getByRole('button', { name: 'Log out everywhere' }).click();
  await admin.getByTestId('admin-note').getByText('logged out everywhere').waitFor();
  await them.getByRole('link', { name: 'State' }).click();
  await them.getByRole('button', { name: 'Log in' }).waitFor();
  // Their roles change: only viewer now.
  await row.getByRole('button', { name: 'Roles…' }).click();
  const roles = admin.getByRole('dialog', { name: 'Change roles' });
  await roles.getByLabel('operator').uncheck();
  await roles.getByLabel(`role-maker-${tag}`).uncheck();
  await roles.getByLabel('viewer').check();
  await roles.getByRole('button', { name: 'Save roles' }).click();
  await row.getByRole('cell', { name: 'viewer', exact: true }).waitFor();
  // Deactivated: login refused.
  await row.getByRole('button', { name: 'Deactivate…' }).click();
  await admin.getByRole('dialog', { name: 'Deactivate user?' }).getByRole('button', { name: 'Deactivate' }).click();
  await row.getByText('deactivated').waitFor();
  await them.getByLabel('Email').fill(newUser.email);
  await them.getByLabel('Password').fill(newUser.password);
  await them.getByRole('button', { name: 'Log in' }).click();
  await them.getByRole('alert').waitFor();
  await them.context().close();
});

await scenario('a device registered in the page gets a token shown once, and a real MQTT client connects with it', async () => {
  await adminTab(admin, 'Devices');
  const form = admin.getByRole('form', { name: 'register a device' });
  await form.getByLabel('Name').fill(`page-dev-${tag}`);
  await form.getByLabel('Site').selectOption(site);
  await form.getByLabel('May publish to').fill(`page/${tag}/#`);
  await form.getByRole('button', { name: 'Register and issue a token' }).click();
  const issued = admin.getByTestId('device-issued');
  await issued.getByTestId('device-token').waitFor();
  const id = (await issued.getByTestId('device-client-id').textContent()).trim();
  const token = (await issued.getByTestId('device-token').textContent()).trim();
  assert(id.startsWith('dev-') && token.split('.').length === 3, `id ${id}, token ${token.slice(0, 20)}…`);
  await issued.getByRole('button', { name: 'Copy token' }).click();
  await issued.getByText('Copied ✓').waitFor();
  await shot(admin, 'admin-device-issued');
  const r = await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(cfg.mqtt_port), '-i', id, '-u', id, '-P', token, '-q', '1', '-t', `page/${tag}/hello`, '-m', 'hi']);
  assert(r.code === 0, `mosquitto_pub with the page's token exited ${r.code}: ${r.stderr}`);
  const bad = await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(cfg.mqtt_port), '-i', id, '-u', id, '-P', 'not-a-token', '-q', '1', '-t', `page/${tag}/hello`, '-m', 'hi']);
  assert(bad.code !== 0, 'a wrong token connects too');
  await issued.getByRole('button', { name: 'Done — forget them' }).click();
  assert((await admin.getByTestId('device-token').count()) === 0, 'the token is still shown');
  await admin.locator(`tr[data-device="page-dev-${tag}"]`).waitFor();
});

await scenario('a site is registered and listed', async () => {
  await adminTab(admin, 'Sites');
  const form = admin.getByRole('form', { name: 'register a site' });
  await form.getByLabel('Id').fill(`plant-${tag}`);
  await form.getByLabel('Name').fill('Plant in the test');
  await form.getByLabel('Labels (key=value, …)').fill('region=eu, tier=1');
  await form.getByRole('button', { name: 'Register site' }).click();
  await admin.locator(`tr[data-site-id="plant-${tag}"]`).getByText('region=eu tier=1').waitFor();
  await shot(admin, 'admin-sites');
  await admin.getByRole('link', { name: 'Sites', exact: true }).first().click();
  await admin.locator(`[data-site="plant-${tag}"]`).waitFor();
});

await scenario('the audit trail filters by action and time and pages', async () => {
  await adminTab(admin, 'Audit trail');
  const form = admin.getByRole('form', { name: 'audit filters' });
  await form.getByLabel('Action').fill('user.*');
  await form.getByRole('button', { name: 'Search' }).click();
  const rows = admin.getByTestId('audit').locator('tr[data-action]');
  await admin.locator('tr[data-action="user.create"]').first().waitFor();
  // The filtered page replaces the unfiltered one: wait for it, not just for a matching row.
  await admin.waitForFunction(() => {
    const trs = [...document.querySelectorAll('[data-testid="audit"] tr[data-action]')];
    return trs.length > 0 && trs.every((tr) => (tr.getAttribute('data-action') ?? '').startsWith('user.'));
  }, null, { timeout: 10_000 }).catch(() => {});
  for (const a of await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-action')))) assert(a.startsWith('user.'), `action ${a} under user.*`);
  await shot(admin, 'admin-audit');
  // Since a minute in the future: nothing.
  const later = new Date(Date.now() + 3600_000 - new Date().getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
  await form.getByLabel('Since').fill(later);
  await form.getByRole('button', { name: 'Search' }).click();
  await admin.getByTestId('audit-count').getByText(/^0 records/).waitFor();
  // Paged: 25 a page, the next page differs, previous comes back.
  await form.getByLabel('Action').fill('');
  await form.getByLabel('Since').fill('');
  await form.getByLabel('Per page').selectOption('25');
  await form.getByRole('button', { name: 'Search' }).click();
  await admin.getByTestId('audit-count').getByText(/^25 records.*page 1/).waitFor();
  const first = await rows.first().textContent();
  await admin.getByRole('button', { name: 'Next page →' }).click();
  await admin.getByTestId('audit-count').getByText(/page 2/).waitFor();
  assert((await rows.first().textContent()) !== first, 'page 2 shows page 1');
  await admin.getByRole('button', { name: '← Previous page' }).click();
  await admin.getByTestId('audit-count').getByText(/page 1/).waitFor();
});

await scenario('a viewer sees the values but no command or acknowledge controls', async () => {
  const viewer = await newPage();
  await login(viewer, cfg.viewer);
  await viewer.getByRole('link', { name: new RegExp(site) }).first().click();
  await viewer.locator('tr[data-topic="line1/temp"]').waitFor();
  assert((await viewer.getByTestId('command-form').count()) === 0, 'a viewer sees the command form');
  assert((await viewer.getByRole('heading', { name: 'Send a command' }).count()) === 0, 'a viewer sees the command panel');
  await viewer.getByTestId('no-commands').getByText('cannot send commands').waitFor();
  await viewer.getByTestId('no-services').getByText('services:').waitFor();
  await shot(viewer, 'viewer-site');
  await viewer.getByRole('link', { name: 'Alarms' }).click();
  await viewer.locator('tr[data-alert]').first().waitFor();
  assert((await viewer.getByRole('button', { name: 'Acknowledge…' }).count()) === 0, 'a viewer sees acknowledge buttons');
  assert((await viewer.getByRole('button', { name: /Silence/ }).count()) === 0, 'a viewer sees silence buttons');
  assert((await viewer.getByRole('link', { name: 'Admin' }).count()) === 0, 'a viewer sees the admin nav');
  // Straight to the admin page's address: told why there is nothing.
  await viewer.evaluate(() => {
    history.pushState(null, '', '/admin/users');
    dispatchEvent(new PopStateEvent('popstate'));
  });
  await viewer.getByTestId('lacks').getByText('identity:user:read').waitFor();
  await shot(viewer, 'viewer-admin');
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
  for (const [path, name] of [['/admin/users', 'users'], ['/admin/devices', 'devices'], ['/admin/audit', 'audit'], ['/alarms', 'alarms']]) {
    await phone.evaluate((p) => {
      history.pushState(null, '', p);
      dispatchEvent(new PopStateEvent('popstate'));
    }, path);
    await phone.locator('table.grid').first().waitFor();
    const wide = await phone.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert(wide <= 0, `${path} is ${wide} px wider than the screen`);
    await shot(phone, `${name}-phone`);
  }
  await phone.context().close();
});

await scenario('logging out returns to the login form and ends the token', async () => {
  await admin.getByRole('button', { name: 'Log out' }).click();
  await admin.getByRole('button', { name: 'Log in' }).waitFor();
  await admin.goto(cfg.base + '/sites/' + site);
  await admin.getByRole('button', { name: 'Log in' }).waitFor();
});

await scenario('live sockets authenticate by their first frame: no token in any WebSocket URL', async () => {
  assert(socketUrls.length > 0, 'no WebSocket was opened');
  const leaking = socketUrls.filter((u) => /token/i.test(new URL(u).search));
  assert(leaking.length === 0, `tokens in URLs: ${leaking.join(', ')}`);
  assert(socketUrls.every((u) => new URL(u).pathname === '/v1/ws'), socketUrls.join(', '));
});

await scenario('no script errors in any page', async () => {
  // The browser logs the refused login (401) and the state conflict (409)
  // as failed resources: both are scenarios above.
  // So are a refused role (403), service calls nobody serves or answers
  // (503, 504) and the revoked user's request (401).
  const expected = /Failed to load resource: the server responded with a status of (401|403|409|503|504)/;
  const real = consoleErrors.filter((e) => !expected.test(e));
  assert(real.length === 0, real.join('\n'));
});

await browser.close();
const failed = results.filter(([, e]) => e).length;
console.log(`${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
