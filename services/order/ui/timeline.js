// The saga's timeline drawn as its steps: reserve → charge → confirm, and the
// compensations (release, refund) apart, each with when it started, how long
// it took and how it ended.

/** Command type → [step key, label, compensation?]. */
const COMMANDS = {
  'inventory.reserve': ['reserve', 'Reserve stock', false],
  'payment.charge': ['charge', 'Charge payment', false],
  'inventory.confirm': ['confirm', 'Confirm reservation', false],
  'inventory.release': ['release', 'Release stock', true],
  'payment.refund': ['refund', 'Refund payment', true],
};

/** Reply type → [step key, outcome]. */
const REPLIES = {
  'inventory.reserved': ['reserve', 'done'],
  'inventory.rejected': ['reserve', 'failed'],
  'payment.captured': ['charge', 'done'],
  'payment.declined': ['charge', 'failed'],
  'inventory.confirmed': ['confirm', 'done'],
  'inventory.released': ['release', 'done'],
  'payment.refunded': ['refund', 'done'],
};

const FORWARD = ['reserve', 'charge', 'confirm'];

/** Entries the step boxes already show; every other kind is an intervention. */
const ROUTINE = new Set(['order.placed', 'command.sent', 'compensation.sent', 'reply.received', 'state.changed']);

/**
 * The steps the entries show: [{key, label, compensation, state ('pending' |
 * 'running' | 'done' | 'failed' | 'skipped'), sent, finished, attempts}],
 * the forward steps first, then compensations in the order they began; and
 * the markers (cancel requested, timeouts, actions).
 */
export function steps(entries, orderStatus) {
  const byKey = new Map();
  const markers = [];
  for (const entry of entries) {
    const type = entry.detail?.type;
    if ((entry.kind === 'command.sent' || entry.kind === 'compensation.sent') && COMMANDS[type]) {
      const [key, label, compensation] = COMMANDS[type];
      const step = byKey.get(key) || { key, label, compensation, state: 'running', sent: entry.at, attempts: 0 };
      step.attempts += 1;
      if (step.state !== 'running') step.state = 'running';
      byKey.set(key, step);
    } else if (entry.kind === 'reply.received' && REPLIES[type]) {
      const [key, outcome] = REPLIES[type];
      const step = byKey.get(key);
      if (step && step.state === 'running') {
        step.state = outcome;
        step.finished = entry.at;
      }
    } else if (!ROUTINE.has(entry.kind)) {
      markers.push(entry); // timeouts, cancel, and any operator action
    }
  }
  const forward = FORWARD.map((key) => byKey.get(key) || {
    key, label: COMMANDS[Object.keys(COMMANDS).find((c) => COMMANDS[c][0] === key)][1],
    compensation: false, state: orderStatus === 'PENDING' ? 'pending' : 'skipped', attempts: 0,
  });
  const compensations = [...byKey.values()].filter((s) => s.compensation)
    .sort((a, b) => Date.parse(a.sent) - Date.parse(b.sent));
  return { forward, compensations, markers };
}

export function duration(from, to) {
  if (!from) return '';
  const ms = Math.max(0, Date.parse(to ?? new Date().toISOString()) - Date.parse(from));
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

const STATE_TEXT = {
  pending: 'not started', running: 'running', done: 'done', failed: 'failed', skipped: 'not run',
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'class') node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function stepItem(step) {
  const running = step.state === 'running';
  const took = step.sent ? duration(step.sent, step.finished) : '';
  const li = el('li', {
    class: `step ${step.state}${step.compensation ? ' compensation' : ''}`,
    'data-step': step.key,
    'data-state': step.state,
  },
  el('span', { class: 'step-name' }, step.label),
  el('span', { class: 'step-state' }, STATE_TEXT[step.state] + (step.attempts > 1 ? ` (${step.attempts} sends)` : '')),
  el('span', { class: 'step-time' }, took ? (running ? `${took} so far` : took) : ''));
  return li;
}

/** The step diagram as a DOM node. */
export function render(entries, orderStatus) {
  const { forward, compensations, markers } = steps(entries, orderStatus);
  const wrap = el('div', { class: 'diagram' });
  wrap.append(el('h3', {}, 'Saga steps'));
  wrap.append(el('ol', { class: 'steps forward', 'aria-label': 'Forward steps' }, ...forward.map(stepItem)));
  if (compensations.length) {
    wrap.append(el('h3', {}, 'Compensations'));
    wrap.append(el('ol', { class: 'steps compensations', 'aria-label': 'Compensations' },
      ...compensations.map(stepItem)));
  }
  if (markers.length) {
    const list = el('ul', { class: 'markers' });
    for (const m of markers) {
      const actor = m.detail?.by ?? m.detail?.actor;
      const by = actor ? ` by ${actor}` : '';
      list.append(el('li', { 'data-kind': m.kind }, `${new Date(m.at).toLocaleTimeString()} ${m.kind}${by}`));
    }
    wrap.append(el('h3', {}, 'Interventions'), list);
  }
  return wrap;
}
