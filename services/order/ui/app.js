// The saga explorer: sign-in, orders (search, counts, paging), one order
// (lines, steps live, actions), dead letters, catalogue and accounts.
// Views are chosen by the URL fragment (#/orders, #/orders/{id}, ...).

import { api, ApiError, claims, clearToken, follow, query, setToken, token } from './api.js';
import { duration, render as renderSteps } from './timeline.js';

const STATUSES = ['PENDING', 'COMPLETED', 'FAILED', 'CANCELLED'];
const REASONS = ['out_of_stock', 'unknown_sku', 'insufficient_funds', 'timeout'];
const QUEUES = ['order', 'payment', 'inventory'];

const main = document.getElementById('main');
let stopFollowing = null;
let config = { trace_url: null };

// ---------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, '');
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null && child !== false) node.append(child);
  }
  return node;
}

/** The nodes that are there (replaceChildren would show null as text). */
function present(...nodes) {
  return nodes.filter((n) => n !== null && n !== undefined && n !== false);
}

function money(cents) {
  if (cents === null || cents === undefined) return '—';
  return (cents / 100).toLocaleString('en', { style: 'currency', currency: 'EUR' });
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString('en-GB', { dateStyle: 'short', timeStyle: 'medium' }) : '';
}

function badge(status) {
  return el('span', { class: `badge ${status.toLowerCase()}` }, status);
}

function announce(text) {
  document.getElementById('status').textContent = text;
}

function showError(error) {
  const alert = document.getElementById('alert');
  if (!error) {
    alert.hidden = true;
    alert.textContent = '';
    return;
  }
  const problem = error instanceof ApiError ? error.problem : null;
  alert.textContent = problem?.detail
    ? `${problem.title ?? 'Error'} (${error.status}): ${problem.detail}`
    : String(error.message || error);
  alert.hidden = false;
}

/** Asks in a modal dialog; resolves true if confirmed. */
function confirmAction(title, text, confirmLabel) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-yes').textContent = confirmLabel;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.returnValue = '';
    dialog.showModal();
  });
}

function table(caption, headers, rows, { empty = 'Nothing to show.' } = {}) {
  if (!rows.length) return el('p', { class: 'empty' }, empty);
  return el('div', { class: 'scroll', role: 'region', 'aria-label': caption, tabindex: '0' },
    el('table', {},
      el('caption', {}, caption),
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, rows)));
}

function setView(title, ...content) {
  if (stopFollowing) {
    stopFollowing();
    stopFollowing = null;
  }
  document.title = `${title} · Saga explorer`;
  main.replaceChildren(...present(...content));
  for (const link of document.querySelectorAll('#nav a')) {
    const current = location.hash.startsWith(`#/${link.dataset.view}`);
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

function hashParams() {
  const hash = location.hash.slice(1);
  const at = hash.indexOf('?');
  return { path: at < 0 ? hash : hash.slice(0, at), params: new URLSearchParams(at < 0 ? '' : hash.slice(at + 1)) };
}

// ---------------------------------------------------------------- sign-in

function signInView(message) {
  document.getElementById('nav').hidden = true;
  document.getElementById('who').hidden = true;
  const field = el('textarea', {
    id: 'token', name: 'token', rows: '4', required: true, autocomplete: 'off', spellcheck: 'false',
    'aria-describedby': 'token-help',
  });
  const form = el('form', { class: 'card sign-in', 'aria-labelledby': 'sign-in-title' },
    el('h1', { id: 'sign-in-title' }, 'Sign in'),
    message ? el('p', { class: 'notice' }, message) : null,
    el('label', { for: 'token' }, 'Bearer token (JWT)'),
    field,
    el('p', { id: 'token-help', class: 'help' },
      'Paste a token, e.g. from ', el('code', {}, 'sagactl token --sub alice'),
      '. It stays in this tab only (session storage).'),
    el('button', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    setToken(field.value);
    if (!claims()) {
      clearToken();
      signInView('That is not a JWT (three base64url parts separated by dots).');
      return;
    }
    location.hash = '#/orders';
    route();
  });
  setView('Sign in', form);
  field.focus();
}

function signedIn() {
  const me = claims();
  document.getElementById('nav').hidden = false;
  document.getElementById('who').hidden = false;
  document.getElementById('who-name').textContent = `${me.sub}${me.admin ? ' (admin)' : ''}`;
  document.body.classList.toggle('admin', me.admin);
  return me;
}

// ---------------------------------------------------------------- orders

const cursorStack = [];

async function ordersView(params) {
  const me = claims();
  const filters = {
    status: params.get('status') || '',
    customer_id: me.admin ? params.get('customer_id') || '' : '',
    failure_reason: params.get('failure_reason') || '',
    created_after: params.get('created_after') || '',
    created_before: params.get('created_before') || '',
    correlation_id: params.get('correlation_id') || '',
    id_prefix: params.get('id_prefix') || '',
  };
  const cursor = params.get('cursor') || '';

  const field = (name, label, input) => el('div', { class: 'field' }, el('label', { for: `f-${name}` }, label), input);
  const select = (name, options, value) => el('select', { id: `f-${name}`, name },
    el('option', { value: '' }, 'any'),
    options.map((o) => el('option', { value: o, selected: o === value }, o)));
  const text = (name, value, extra = {}) => el('input', { id: `f-${name}`, name, value, ...extra });
  const local = (iso) => (iso ? new Date(iso).toISOString().slice(0, 16) : '');
  const form = el('form', { class: 'filters card', role: 'search', 'aria-label': 'Find orders' },
    field('status', 'Status', select('status', STATUSES, filters.status)),
    me.admin ? field('customer_id', 'Customer', text('customer_id', filters.customer_id, { autocomplete: 'off' })) : null,
    field('failure_reason', 'Failure reason', select('failure_reason', REASONS, filters.failure_reason)),
    field('created_after', 'Created from (UTC)', text('created_after', local(filters.created_after), { type: 'datetime-local' })),
    field('created_before', 'Created before (UTC)', text('created_before', local(filters.created_before), { type: 'datetime-local' })),
    field('correlation_id', 'Correlation id', text('correlation_id', filters.correlation_id, { autocomplete: 'off' })),
    field('id_prefix', 'Order id starts with', text('id_prefix', filters.id_prefix, { autocomplete: 'off', maxlength: '36' })),
    el('div', { class: 'field buttons' },
      el('button', { type: 'submit' }, 'Search'),
      el('button', { type: 'reset', class: 'secondary' }, 'Clear')));
  const go = (values) => {
    const next = {};
    for (const [k, v] of Object.entries(values)) if (v) next[k] = v;
    location.hash = `#/orders${query(next)}`;
  };
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    for (const name of ['created_after', 'created_before']) {
      if (data[name]) data[name] = new Date(`${data[name]}:00Z`).toISOString();
    }
    cursorStack.length = 0;
    go(data);
  });
  form.addEventListener('reset', (event) => {
    event.preventDefault();
    cursorStack.length = 0;
    go({});
  });

  const countsNode = el('div', { class: 'counts', 'aria-live': 'polite' });
  const listNode = el('div', {}, el('p', { class: 'empty' }, 'Loading…'));
  setView('Orders', el('h1', {}, 'Orders'), form, countsNode, listNode);

  const { status, ...countFilters } = filters;
  try {
    const [page, counts] = await Promise.all([
      api(`/api/v1/orders${query({ ...filters, cursor, limit: 20 })}`),
      api(`/api/v1/orders/counts${query(countFilters)}`),
    ]);
    countsNode.replaceChildren(el('ul', { class: 'count-list', 'aria-label': 'Orders by status' },
      el('li', {}, el('a', { href: `#/orders${query({ ...filters, status: '' })}`, 'aria-current': status ? null : 'true' },
        'All ', el('strong', { 'data-count': 'total' }, String(counts.total)))),
      STATUSES.map((s) => el('li', {}, el('a', {
        href: `#/orders${query({ ...filters, status: s })}`, class: `count ${s.toLowerCase()}`,
        'aria-current': status === s ? 'true' : null,
      }, `${s} `, el('strong', { 'data-count': s }, String(counts[s])))))));
    const rows = page.items.map((o) => el('tr', { 'data-order': o.id },
      el('td', {}, el('a', { href: `#/orders/${o.id}`, class: 'mono', 'aria-label': `Order ${o.id}` },
        el('span', { class: 'id-full' }, o.id), el('span', { class: 'id-short', 'aria-hidden': 'true' }, `${o.id.slice(0, 13)}…`))),
      el('td', {}, o.customer_id),
      el('td', {}, badge(o.status)),
      el('td', { class: 'num' }, money(o.total_cents)),
      el('td', {}, o.failure_reason || ''),
      el('td', {}, when(o.created_at))));
    const pager = el('nav', { class: 'pager', 'aria-label': 'Pages' },
      el('button', {
        type: 'button', class: 'secondary', disabled: !cursor,
        onclick: () => go({ ...filters, cursor: cursorStack.pop() || '' }),
      }, '← Newer'),
      el('button', {
        type: 'button', class: 'secondary', disabled: !page.next_cursor,
        onclick: () => { cursorStack.push(cursor); go({ ...filters, cursor: page.next_cursor }); },
      }, 'Older →'));
    listNode.replaceChildren(
      table('Orders, newest first', ['Order', 'Customer', 'Status', 'Total', 'Reason', 'Created'], rows,
        { empty: 'No order matches.' }),
      pager);
    announce(`${page.items.length} orders shown`);
  } catch (error) {
    listNode.replaceChildren();
    showError(error);
  }
}

// ---------------------------------------------------------------- one order

async function orderView(id) {
  const me = claims();
  const heading = el('h1', {}, 'Order ', el('span', { class: 'mono' }, id));
  const summary = el('div', { class: 'card summary' });
  const lines = el('div', {});
  const diagram = el('div', { class: 'card', id: 'steps' });
  const live = el('p', { class: 'live', id: 'live', 'aria-live': 'polite' }, 'Connecting…');
  const result = el('p', { class: 'result', id: 'action-result', role: 'status' });
  const actions = el('div', { class: 'actions order-actions' });
  const log = el('div', {});
  setView(`Order ${id.slice(0, 8)}`, el('p', {}, el('a', { href: '#/orders' }, '← All orders')), heading,
    summary, actions, result, live, diagram, lines, log);

  let order = null;
  let entries = [];
  const draw = () => {
    if (!order) return;
    const trace = order.trace_id && config.trace_url
      ? el('a', { href: config.trace_url.replace('{trace_id}', order.trace_id), rel: 'noreferrer' }, 'Open its trace')
      : null;
    summary.replaceChildren(el('dl', { class: 'facts' },
      el('dt', {}, 'Status'), el('dd', { id: 'order-status' }, badge(order.status)),
      el('dt', {}, 'Failure reason'), el('dd', {}, order.failure_reason || '—'),
      el('dt', {}, 'Customer'), el('dd', {}, order.customer_id),
      el('dt', {}, 'Total'), el('dd', {}, money(order.total_cents)),
      el('dt', {}, 'Created'), el('dd', {}, when(order.created_at)),
      el('dt', {}, 'Updated'), el('dd', {}, when(order.updated_at)),
      el('dt', {}, 'Took'), el('dd', {}, order.status === 'PENDING'
        ? `${duration(order.created_at, null)} so far` : duration(order.created_at, order.updated_at))),
    ...present(trace));
    lines.replaceChildren(table('Lines', ['SKU', 'Quantity', 'Unit price', 'Line total'], order.items.map((i) => el('tr', {},
      el('td', { class: 'mono' }, i.sku), el('td', { class: 'num' }, String(i.quantity)),
      el('td', { class: 'num' }, money(i.unit_price_cents)),
      el('td', { class: 'num' }, i.unit_price_cents === null ? '—' : money(i.unit_price_cents * i.quantity))))));
    diagram.replaceChildren(renderSteps(entries, order.status));
    const start = entries.length ? Date.parse(entries[0].at) : 0;
    log.replaceChildren(el('details', {},
      el('summary', {}, `Timeline (${entries.length} entries)`),
      table('Timeline, oldest first', ['At', '+', 'What', 'Detail'], entries.map((e) => el('tr', { 'data-kind': e.kind },
        el('td', {}, new Date(e.at).toLocaleTimeString('en-GB', { hour12: false, fractionalSecondDigits: 3 })),
        el('td', { class: 'num' }, `${Date.parse(e.at) - start} ms`),
        el('td', {}, e.kind),
        el('td', { class: 'mono small' }, JSON.stringify(e.detail)))))));
    drawActions();
  };
  const drawActions = () => {
    const pending = order.status === 'PENDING';
    const button = (label, verb, text, path, admin) => (admin && !me.admin ? null : el('button', {
      type: 'button', class: 'danger', 'data-action': verb,
      onclick: async () => {
        if (!await confirmAction(`${label}?`, text, label)) return;
        try {
          showError(null);
          const updated = await api(`/api/v1/orders/${id}/${path}`, { method: 'POST' });
          result.textContent = `${label}: accepted (order ${updated.status}).`;
          order = updated;
          draw();
          startFollowing();
        } catch (error) {
          result.textContent = '';
          showError(error);
        }
      },
    }, label));
    actions.replaceChildren(...present(
      order.status === 'CANCELLED' || order.status === 'FAILED' ? null : button('Cancel order', 'cancel',
        pending ? 'The saga stops and compensates what it did (release, refund); the order ends CANCELLED.'
          : 'The order is refunded and its stock returned; it ends CANCELLED.', 'cancel', false),
      pending ? button('Retry step', 'retry', 'The current step\'s command is sent again.', 'retry', true) : null,
      pending ? button('Force compensation', 'compensate',
        'The saga stops and compensates what it did; the order ends FAILED.', 'compensate', true) : null));
  };

  const startFollowing = () => {
    if (stopFollowing) stopFollowing();
    stopFollowing = follow(id, {
      reset: () => { entries = []; },
      order: (o) => { order = o; draw(); },
      timeline: (list) => { entries = entries.concat(list); draw(); },
      end: (status) => announce(`Order ${status}`),
      mode: (mode) => {
        live.dataset.mode = mode;
        live.textContent = mode === 'stream' ? '● Live: steps appear as they happen (server-sent events)'
          : mode === 'poll' ? '● Live: checking every 2 s (long poll; streaming unavailable)'
            : 'Final: the saga is over.';
      },
      error: (error) => {
        live.textContent = '';
        if (error instanceof ApiError && error.status === 404) {
          summary.replaceChildren(el('p', { class: 'notice', id: 'not-found' },
            'No such order, or it is not yours.'));
        }
        showError(error);
      },
    });
  };
  startFollowing();
}

// ---------------------------------------------------------------- dead letters

async function deadLettersView() {
  const body = el('div', {}, el('p', { class: 'empty' }, 'Loading…'));
  const result = el('p', { class: 'result', role: 'status', id: 'dlq-result' });
  setView('Dead letters', el('h1', {}, 'Dead letters'), el('p', { class: 'help' },
    'Messages that failed every attempt, or could not be read. Replay sends one back to its queue exactly once.'),
  result, body);
  const act = async (label, text, path, request, done) => {
    if (!await confirmAction(label, text, label)) return;
    try {
      showError(null);
      const answer = await api(path, { method: 'POST', body: request });
      result.textContent = done(answer);
      await load();
    } catch (error) {
      showError(error);
    }
  };
  const load = async () => {
    const { queues } = await api('/api/v1/dead-letters?limit=100');
    body.replaceChildren(...queues.map((q) => el('section', { class: 'card', 'data-queue': q.queue, 'aria-labelledby': `q-${q.queue}` },
      el('h2', { id: `q-${q.queue}` }, `${q.queue} `, el('span', { class: 'mono small' }, q.name), ` — ${q.depth} messages`),
      el('div', { class: 'actions' },
        el('button', {
          type: 'button', class: 'secondary', disabled: q.depth === 0,
          onclick: () => act(`Replay all ${q.depth}`, `Every message in ${q.name} goes back to the ${q.queue} service's queue.`,
            `/api/v1/dead-letters/${q.queue}/replay`, { all: true }, (a) => `${a.replayed.length} replayed from ${q.queue}.`),
        }, 'Replay all'),
        el('button', {
          type: 'button', class: 'danger', disabled: q.depth === 0,
          onclick: () => act(`Purge ${q.depth} messages`, `Every message in ${q.name} is deleted for good.`,
            `/api/v1/dead-letters/${q.queue}/purge`, undefined, (a) => `${a.purged} purged from ${q.queue}.`),
        }, 'Purge')),
      table(`Dead letters of ${q.queue}`, ['Message id', 'Type', 'Correlation id', 'Attempts', 'Dead-lettered', 'Reason', ''],
        q.messages.map((m) => el('tr', { 'data-message': m.message_id },
          el('td', { class: 'mono small' }, m.message_id || '(none)'),
          el('td', {}, m.type || '(none)'),
          el('td', { class: 'mono small' }, m.correlation_id),
          el('td', { class: 'num' }, m.attempts),
          el('td', {}, m.dead_lettered_at),
          el('td', { class: 'reason' }, m.reason),
          el('td', {}, m.message_id ? el('button', {
            type: 'button', class: 'secondary', 'aria-label': `Replay ${m.message_id}`,
            onclick: () => act('Replay this message', `Message ${m.message_id} goes back to the ${q.queue} service's queue.`,
              `/api/v1/dead-letters/${q.queue}/replay`, { message_ids: [m.message_id] },
              (a) => (a.replayed.length ? `Replayed ${a.replayed[0]}.` : `Not found: ${a.not_found.join(', ')}.`)),
          }, 'Replay') : ''))),
        { empty: 'Empty.' }))));
  };
  try {
    await load();
  } catch (error) {
    body.replaceChildren();
    showError(error);
  }
}

// ---------------------------------------------------------------- catalogue and accounts

async function catalogueView() {
  const body = el('div', {}, el('p', { class: 'empty' }, 'Loading…'));
  setView('Catalogue', el('h1', {}, 'Catalogue'), body);
  try {
    const { items } = await api('/api/v1/products');
    body.replaceChildren(table('Products with stock', ['SKU', 'Name', 'Unit price', 'On hand', 'Reserved'],
      items.map((p) => el('tr', { 'data-sku': p.sku },
        el('td', { class: 'mono' }, p.sku), el('td', {}, p.name), el('td', { class: 'num' }, money(p.unit_price_cents)),
        el('td', { class: 'num' }, String(p.on_hand)), el('td', { class: 'num' }, String(p.reserved))))));
  } catch (error) {
    body.replaceChildren();
    showError(error);
  }
}

async function accountsView(params) {
  const cursor = params.get('cursor') || '';
  const body = el('div', {}, el('p', { class: 'empty' }, 'Loading…'));
  setView('Accounts', el('h1', {}, 'Accounts'), body);
  try {
    const page = await api(`/api/v1/accounts${query({ cursor, limit: 50 })}`);
    body.replaceChildren(
      table('Accounts by customer', ['Customer', 'Balance', ''], page.items.map((a) => el('tr', { 'data-customer': a.customer_id },
        el('td', {}, a.customer_id), el('td', { class: 'num' }, money(a.balance_cents)),
        el('td', {}, el('a', { href: `#/accounts/${encodeURIComponent(a.customer_id)}` }, 'Payments'))))),
      el('nav', { class: 'pager', 'aria-label': 'Pages' },
        cursor ? el('a', { href: '#/accounts' }, '← First page') : null,
        page.next_cursor ? el('a', { href: `#/accounts${query({ cursor: page.next_cursor })}` }, 'Next →') : null));
  } catch (error) {
    body.replaceChildren();
    showError(error);
  }
}

async function paymentsView(customer, params) {
  const cursor = params.get('cursor') || '';
  const body = el('div', {}, el('p', { class: 'empty' }, 'Loading…'));
  setView(`Payments of ${customer}`, el('p', {}, el('a', { href: '#/accounts' }, '← All accounts')),
    el('h1', {}, `Payments of ${customer}`), body);
  try {
    const path = `/api/v1/accounts/${encodeURIComponent(customer)}`;
    const [account, page] = await Promise.all([api(path), api(`${path}/payments${query({ cursor, limit: 50 })}`)]);
    body.replaceChildren(
      el('p', { class: 'card' }, 'Balance: ', el('strong', { id: 'balance' }, money(account.balance_cents))),
      table('Payments, newest first', ['Order', 'Amount', 'Status', 'At'], page.items.map((p) => el('tr', {},
        el('td', {}, el('a', { href: `#/orders/${p.order_id}`, class: 'mono' }, p.order_id)),
        el('td', { class: 'num' }, money(p.amount_cents)), el('td', {}, badge(p.status)), el('td', {}, when(p.updated_at)))),
      { empty: 'No payments.' }),
      ...present(page.next_cursor ? el('nav', { class: 'pager', 'aria-label': 'Pages' },
        el('a', { href: `#/accounts/${encodeURIComponent(customer)}${query({ cursor: page.next_cursor })}` }, 'Next →')) : null));
  } catch (error) {
    body.replaceChildren();
    showError(error);
  }
}

// ---------------------------------------------------------------- routing

function route() {
  showError(null);
  if (!token() || !claims()) {
    signInView();
    return;
  }
  const me = signedIn();
  const { path, params } = hashParams();
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const adminOnly = (view) => (me.admin ? view() : setView('Not allowed', el('h1', {}, 'Admins only'),
    el('p', {}, 'This view needs a token with the admin role.')));
  if (parts[0] === 'orders' && parts[1]) orderView(parts[1]);
  else if (parts[0] === 'dead-letters') adminOnly(deadLettersView);
  else if (parts[0] === 'catalogue') adminOnly(catalogueView);
  else if (parts[0] === 'accounts' && parts[1]) adminOnly(() => paymentsView(parts[1], params));
  else if (parts[0] === 'accounts') adminOnly(() => accountsView(params));
  else ordersView(params);
  main.focus({ preventScroll: true });
}

/** A sign-in link, /ui/#token=<jwt>: read it, then take it out of the address bar and history. */
function takeTokenFromFragment() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.has('token')) {
    setToken(fragment.get('token'));
    history.replaceState(null, '', `${location.pathname}#/orders`);
  }
}

function start() {
  takeTokenFromFragment();
  // The fragment names views here, so the skip link moves the focus itself.
  document.querySelector('.skip').addEventListener('click', (event) => {
    event.preventDefault();
    main.focus();
  });
  document.getElementById('sign-out').addEventListener('click', () => {
    clearToken();
    history.replaceState(null, '', location.pathname);
    route();
  });
  window.addEventListener('hashchange', () => {
    takeTokenFromFragment();
    route();
  });
  fetch('config.json').then((r) => r.json()).then((c) => { config = c; }).catch(() => {});
  route();
}

start();
