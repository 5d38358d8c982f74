// The saga explorer in a real browser: Debian's headless Chromium driven by
// playwright-core (no browser download), against a running platform that
// tests/tests/explorer_browser.rs starts and prepares. It passes, in the
// environment: BASE_URL (the order service, forwarding the other APIs),
// ADMIN_TOKEN, ALICE_TOKEN, BOB_ORDER (an order of bob's, FAILED
// insufficient_funds), ALICE_ORDERS (comma-separated), PAYMENT_PID (to
// freeze payment with SIGSTOP and resume it), DLQ_REPLAY_ID (a dead letter
// of the inventory queue to replay), SHOTS (where screenshots go).
// Exits non-zero on the first failed check, naming it.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const BASE = env('BASE_URL');
const ADMIN = env('ADMIN_TOKEN');
const ALICE = env('ALICE_TOKEN');
const BOB_ORDER = env('BOB_ORDER');
const ALICE_ORDERS = env('ALICE_ORDERS').split(',');
const PAYMENT_PID = Number(env('PAYMENT_PID'));
const DLQ_REPLAY_ID = env('DLQ_REPLAY_ID');
const SHOTS = env('SHOTS');
const TIMEOUT = 30_000;
mkdirSync(SHOTS, { recursive: true });

const step = (name) => console.log(`--- ${name}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 }, timezoneId: 'UTC', locale: 'en-GB' });
desktop.setDefaultTimeout(TIMEOUT);
const page = await desktop.newPage();
const consoleErrors = [];
page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
page.on('pageerror', (e) => consoleErrors.push(String(e)));
// Nothing may be loaded from anywhere but the platform.
const origins = new Set();
page.on('request', (r) => origins.add(new URL(r.url()).origin));

/** Checks what a person sees, then saves the screenshot. */
async function shot(name, target = page) {
  const text = await target.locator('body').innerText();
  assert.ok(!/\b(null|undefined|NaN)\b/.test(text), `${name}: a missing value shows as text:\n${text}`);
  await target.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

async function api(path, token, init = {}) {
  const response = await fetch(`${BASE}${path}`, {
    ...init,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', ...(init.headers || {}) },
  });
  const body = await response.json();
  assert.ok(response.ok, `${path}: ${response.status} ${JSON.stringify(body)}`);
  return body;
}

function rows(target = page) {
  return target.locator('tbody tr[data-order]');
}

async function orderIds(target = page) {
  return rows(target).evaluateAll((trs) => trs.map((tr) => tr.dataset.order));
}

/** Every text and control of the view has at least 4.5:1 contrast (WCAG AA). */
async function checkContrast(target = page) {
  const failures = await target.evaluate(() => {
    const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
      const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (node) => {
      for (let n = node; n; n = n.parentElement) {
        const c = rgb(getComputedStyle(n).backgroundColor);
        if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
      }
      return [255, 255, 255];
    };
    const bad = [];
    for (const node of document.querySelectorAll('body *')) {
      if (!node.offsetParent && getComputedStyle(node).position !== 'fixed') continue;
      const own = [...node.childNodes].some((c) => c.nodeType === 3 && c.textContent.trim());
      if (!own || node.closest('[disabled], .step.pending, .step.skipped')) continue;
      const style = getComputedStyle(node);
      const [a, b] = [lum(rgb(style.color).slice(0, 3)), lum(background(node))];
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      if (ratio < 4.5) bad.push(`${node.tagName}.${node.className} "${node.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
    }
    return bad;
  });
  assert.deepEqual(failures, [], 'text below 4.5:1 contrast');
}

/** Every form control has a label. */
async function checkLabels(target = page) {
  const unlabelled = await target.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
    .filter((c) => c.type !== 'hidden' && !c.labels?.length && !c.getAttribute('aria-label'))
    .map((c) => c.name || c.id));
  assert.deepEqual(unlabelled, [], 'controls without a label');
}

try {
  // ------------------------------------------------------------ sign-in (customer, by the field)
  step('a customer signs in with the token field, using the keyboard');
  await page.goto(`${BASE}/ui/`);
  await page.getByLabel('Bearer token (JWT)').waitFor();
  await checkLabels();
  await shot('sign-in');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'token', 'the token field has the focus');
  // Backwards from the field: the header's links, the first of them the skip link.
  const visited = [];
  for (let i = 0; i < 4 && visited.at(-1) !== 'skip'; i += 1) {
    await page.keyboard.press('Shift+Tab');
    visited.push(await page.evaluate(() => document.activeElement.className || document.activeElement.tagName));
  }
  assert.equal(visited.at(-1), 'skip', `the skip link comes first: ${visited}`);
  assert.ok(visited.length <= 3, `few stops before the field: ${visited}`);
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(outline, 'none', 'focus is visible');
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'main', 'the skip link moves to the content');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'token');
  await page.keyboard.type(ALICE);
  await page.keyboard.press('Tab');
  await page.keyboard.press('Enter');
  await page.locator('#who-name', { hasText: 'alice' }).waitFor();
  await rows().first().waitFor();
  const own = await orderIds();
  assert.deepEqual(new Set(own), new Set(ALICE_ORDERS), 'alice sees exactly her orders');
  assert.equal(await page.locator('.admin-only').first().isVisible(), false, 'no admin views for a customer');
  assert.equal(await page.getByLabel('Customer').count(), 0, 'no customer filter for a customer');

  step('the customer is denied another customer\'s order');
  await page.goto(`${BASE}/ui/#/orders/${BOB_ORDER}`);
  await page.locator('#not-found').waitFor();
  const alert = await page.locator('#alert').textContent();
  assert.match(alert, /404/, alert);
  assert.equal(await page.locator('#order-status').count(), 0, 'nothing of the order is shown');
  await shot('denied');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('Bearer token (JWT)').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'signing out forgets the token');

  // ------------------------------------------------------------ sign-in (admin, by link)
  step('an admin signs in with a link; the token leaves the address bar');
  await page.goto(`${BASE}/ui/#token=${ADMIN}`);
  await page.locator('#who-name', { hasText: '(admin)' }).waitFor();
  assert.ok(!page.url().includes(ADMIN) && !page.url().includes('token='), `token left in ${page.url()}`);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('saga-explorer.token')), ADMIN);

  // ------------------------------------------------------------ orders: find by filter
  step('the admin finds an order by filter');
  await rows().first().waitFor();
  const total = Number(await page.locator('[data-count="total"]').textContent());
  assert.equal(total, ALICE_ORDERS.length + 1, 'counts cover every order');
  await page.getByLabel('Failure reason').selectOption('insufficient_funds');
  await page.getByRole('button', { name: 'Search' }).click();
  await page.waitForFunction((id) => {
    const r = [...document.querySelectorAll('tbody tr[data-order]')];
    return r.length === 1 && r[0].dataset.order === id;
  }, BOB_ORDER);
  assert.equal(await page.locator('[data-count="FAILED"]').textContent(), '1');
  assert.match(page.url(), /failure_reason=insufficient_funds/, 'the search is in the address (shareable)');
  await checkLabels();
  await checkContrast();
  await shot('orders-filtered');
  await page.getByRole('button', { name: 'Clear' }).click();
  await page.waitForFunction((n) => document.querySelectorAll('tbody tr[data-order]').length === n, total);
  await page.getByLabel('Order id starts with').fill(ALICE_ORDERS[0].slice(0, 13));
  await page.getByLabel('Order id starts with').press('Enter');
  await page.waitForFunction((id) => [...document.querySelectorAll('tbody tr[data-order]')]
    .every((r) => r.dataset.order.startsWith(id.slice(0, 13))) && document.querySelector(`tr[data-order="${id}"]`),
  ALICE_ORDERS[0]);
  await page.getByRole('button', { name: 'Clear' }).click();
  await page.getByLabel('Customer').fill('bob');
  await page.getByRole('button', { name: 'Search' }).click();
  await page.waitForFunction((id) => [...document.querySelectorAll('tbody tr[data-order]')]
    .map((r) => r.dataset.order).join() === id, BOB_ORDER);
  await page.getByRole('button', { name: 'Clear' }).click();
  await page.waitForFunction((n) => document.querySelectorAll('tbody tr[data-order]').length === n, total);
  await shot('orders');

  step('the admin opens it: lines, steps, compensation');
  await page.goto(`${BASE}/ui/#/orders?failure_reason=insufficient_funds`);
  await page.locator(`tr[data-order="${BOB_ORDER}"] a`).click();
  await page.locator('#order-status', { hasText: 'FAILED' }).waitFor();
  await page.locator('[data-step="release"][data-state="done"]').waitFor();
  assert.equal(await page.locator('[data-step="reserve"]').getAttribute('data-state'), 'done');
  assert.equal(await page.locator('[data-step="charge"]').getAttribute('data-state'), 'failed');
  assert.equal(await page.locator('[data-step="confirm"]').getAttribute('data-state'), 'skipped');
  assert.ok(await page.locator('.compensations [data-step="release"]').count(), 'release is drawn as a compensation');
  const summary = await page.locator('.facts').textContent();
  assert.match(summary, /insufficient_funds/);
  await checkContrast();
  await shot('order-failed');

  // ------------------------------------------------------------ live
  step('a running saga\'s steps arrive live (payment frozen with SIGSTOP, then resumed)');
  process.kill(PAYMENT_PID, 'SIGSTOP');
  let live;
  try {
    live = await api('/api/v1/orders', ALICE, { method: 'POST', body: JSON.stringify({ items: [{ sku: 'SKU-1', quantity: 2 }] }) });
    await page.goto(`${BASE}/ui/#/orders/${live.id}`);
    await page.evaluate(() => { window.sameDocument = true; });
    await page.locator('#live[data-mode="stream"]').waitFor();
    await page.locator('[data-step="reserve"][data-state="done"]').waitFor();
    await page.locator('[data-step="charge"][data-state="running"]').waitFor();
    assert.equal(await page.locator('[data-step="confirm"]').getAttribute('data-state'), 'pending');
    assert.equal(await page.locator('#order-status').textContent(), 'PENDING');
    await shot('order-live');
  } finally {
    process.kill(PAYMENT_PID, 'SIGCONT');
  }
  await page.locator('[data-step="confirm"][data-state="done"]').waitFor();
  await page.locator('#order-status', { hasText: 'COMPLETED' }).waitFor();
  await page.locator('#live[data-mode="final"]').waitFor();
  assert.equal(await page.evaluate(() => window.sameDocument), true, 'no reload: the steps came over the stream');

  // ------------------------------------------------------------ actions
  step('retry and force compensation ask first and call their routes');
  for (const label of ['Retry step', 'Force compensation']) {
    assert.equal(await page.getByRole('button', { name: label }).count(), 0, `${label} offered on a final order`);
  }
  process.kill(PAYMENT_PID, 'SIGSTOP');
  let stuck;
  try {
    stuck = await api('/api/v1/orders', ALICE, { method: 'POST', body: JSON.stringify({ items: [{ sku: 'SKU-1', quantity: 1 }] }) });
    await page.goto(`${BASE}/ui/#/orders/${stuck.id}`);
    await page.locator('[data-step="charge"][data-state="running"]').waitFor();
    const posted = [];
    // Retry goes to the service (re-sending the charge is harmless); forcing
    // compensation is stopped here, so the cancel below still applies.
    await page.route('**/retry', (route) => { posted.push(route.request()); route.continue(); });
    await page.route('**/compensate', (route) => { posted.push(route.request()); route.abort(); });
    // Each action waits for its own outcome (the retry's result line, the
    // aborted compensation's alert): the retry's line is still on the page
    // when the compensation is confirmed, so "any result" would not wait.
    const outcomes = [
      ['Retry step', () => document.getElementById('action-result').textContent.startsWith('Retry step: accepted')],
      ['Force compensation', () => !document.getElementById('alert').hidden],
    ];
    for (const [label, outcome] of outcomes) {
      await page.getByRole('button', { name: label }).click();
      await page.locator('#confirm[open]').waitFor();
      await page.getByRole('button', { name: 'Keep as is' }).click();
      await page.locator('#confirm:not([open])').waitFor({ state: 'attached' });
      await page.getByRole('button', { name: label }).click();
      await page.locator('#confirm-yes').click();
      await page.waitForFunction(outcome);
    }
    assert.deepEqual(posted.map((r) => `${r.method()} ${new URL(r.url()).pathname}`),
      [`POST /api/v1/orders/${stuck.id}/retry`, `POST /api/v1/orders/${stuck.id}/compensate`],
      'declining sends nothing; confirming sends exactly the route');
    await page.unroute('**/retry');
    await page.unroute('**/compensate');
    step('cancel a running saga from the page');
    await page.getByRole('button', { name: 'Cancel order' }).click();
    await page.locator('#confirm[open]').waitFor();
    await shot('cancel-confirm');
    await page.locator('#confirm-yes').click();
    await page.locator('#action-result', { hasText: 'Cancel order: accepted' }).waitFor();
    await page.locator('.markers [data-kind="cancel.requested"]').waitFor();
  } finally {
    process.kill(PAYMENT_PID, 'SIGCONT');
  }
  await page.locator('#order-status', { hasText: 'CANCELLED' }).waitFor();
  await page.locator('.compensations [data-step="release"][data-state="done"]').waitFor();
  const cancelled = await api(`/api/v1/orders/${stuck.id}`, ADMIN);
  assert.equal(cancelled.status, 'CANCELLED');
  await shot('order-cancelled');

  // ------------------------------------------------------------ long-poll fallback
  step('without the stream the page falls back to the long poll');
  await page.route('**/stream', (route) => route.abort());
  const polls = [];
  page.on('request', (r) => { if (r.url().includes('?wait=')) polls.push(r.url()); });
  await page.goto(`${BASE}/ui/#/orders/${live.id}`);
  await page.locator('#order-status', { hasText: 'COMPLETED' }).waitFor();
  await page.locator('[data-step="confirm"][data-state="done"]').waitFor();
  assert.ok(polls.length >= 1, 'the long poll was used');
  await page.unroute('**/stream');

  // ------------------------------------------------------------ dead letters
  step('the admin replays a dead letter and purges the rest');
  await page.getByRole('link', { name: 'Dead letters' }).click();
  const inventory = page.locator('section[data-queue="inventory"]');
  await inventory.locator(`tr[data-message="${DLQ_REPLAY_ID}"]`).waitFor();
  const before = await inventory.locator('tbody tr').count();
  assert.ok(before >= 2, 'the replayable message and the poison');
  const replayRow = await inventory.locator(`tr[data-message="${DLQ_REPLAY_ID}"]`).textContent();
  assert.match(replayRow, /inventory\.confirm/);
  assert.match(replayRow, /injected by the test/);
  assert.match(await inventory.textContent(), /malformed/);
  await checkContrast();
  await shot('dead-letters');
  await page.getByRole('button', { name: `Replay ${DLQ_REPLAY_ID}` }).click();
  await page.locator('#confirm-yes').click();
  await page.locator('#dlq-result', { hasText: `Replayed ${DLQ_REPLAY_ID}` }).waitFor();
  await inventory.locator(`tr[data-message="${DLQ_REPLAY_ID}"]`).waitFor({ state: 'detached' });
  await inventory.getByRole('button', { name: 'Purge' }).click();
  await page.locator('#confirm-yes').click();
  await page.locator('#dlq-result', { hasText: 'purged from inventory' }).waitFor();
  await inventory.locator('p.empty').waitFor();

  // ------------------------------------------------------------ catalogue and accounts
  step('catalogue and accounts, through the one origin');
  await page.getByRole('link', { name: 'Catalogue' }).click();
  await page.locator('tr[data-sku="SKU-1"]').waitFor();
  const product = await api('/api/v1/products/SKU-1', ADMIN);
  const cells = await page.locator('tr[data-sku="SKU-1"] td').allTextContents();
  assert.deepEqual(cells.slice(3), [String(product.on_hand), String(product.reserved)]);
  await checkContrast();
  await shot('catalogue');
  await page.getByRole('link', { name: 'Accounts' }).click();
  await page.locator('tr[data-customer="alice"]').waitFor();
  await shot('accounts');
  await page.locator('tr[data-customer="alice"]').getByRole('link', { name: 'Payments' }).click();
  await page.locator('#balance').waitFor();
  await page.locator('tbody tr').first().waitFor();
  assert.match(await page.locator('tbody').textContent(), /CAPTURED/);
  await shot('payments');

  // ------------------------------------------------------------ phone width
  step('phone width (390 px)');
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, timezoneId: 'UTC', locale: 'en-GB', isMobile: true, hasTouch: true });
  phone.setDefaultTimeout(TIMEOUT);
  const small = await phone.newPage();
  await small.goto(`${BASE}/ui/#token=${ADMIN}`);
  await rows(small).first().waitFor();
  const overflow = await small.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(overflow <= 390, `the page is ${overflow} px wide at 390 px`);
  await shot('orders-phone', small);
  // Ids are shortened to fit; the link (named by the whole id) still opens the order.
  await small.getByRole('link', { name: `Order ${live.id}` }).click();
  await small.locator('[data-step="confirm"][data-state="done"]').waitFor();
  assert.ok(await small.evaluate(() => document.documentElement.scrollWidth) <= 390, 'order view fits');
  await shot('order-phone', small);
  await phone.close();

  assert.deepEqual([...origins].filter((o) => o !== new URL(BASE).origin), [], 'requests to other origins');
  assert.deepEqual(consoleErrors.filter((e) => !/status of 4\d\d|Failed to load resource|net::ERR_FAILED/.test(e)), [],
    'console errors');
  console.log('explorer: every check passed');
} catch (error) {
  await page.screenshot({ path: `${process.env.FAILURE_SHOT || '/tmp/explorer-failure.png'}`, fullPage: true })
    .catch(() => {});
  console.error(`FAILED: ${error.stack || error}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
