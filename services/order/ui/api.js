// The explorer's access to the APIs: the bearer token (kept in
// sessionStorage, never in a URL query), JSON requests with problem+json
// errors, and following one order live (server-sent events read with fetch,
// so the Authorization header is sent; the long poll when that fails).

const TOKEN_KEY = 'saga-explorer.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value.trim());
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** The token's claims, for display only (the services verify it). */
export function claims() {
  const value = token();
  if (!value) return null;
  try {
    const part = value.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(
      atob(part).split('').map((c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join(''));
    const parsed = JSON.parse(json);
    return { sub: String(parsed.sub ?? ''), admin: parsed.role === 'admin', exp: parsed.exp };
  } catch {
    return null;
  }
}

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${token()}`, Accept: 'application/json', ...extra };
}

/** A JSON request; throws ApiError with the problem details on a 4xx/5xx. */
export async function api(path, { method = 'GET', body, signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const type = response.headers.get('content-type') || '';
  const data = type.includes('json') ? await response.json().catch(() => null) : null;
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** Query string of the non-empty entries of `params`. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

/**
 * Follows an order until it is final. Handlers: reset() before a full
 * timeline, order(order), timeline(entries), end(status), mode('stream' |
 * 'poll' | 'final'), error(e). Returns a function that stops following.
 */
export function follow(id, on) {
  const controller = new AbortController();
  const run = async () => {
    try {
      await stream(id, on, controller.signal);
    } catch (error) {
      if (controller.signal.aborted) return;
      if (error instanceof ApiError && error.status !== 429 && error.status < 500) {
        on.error(error);
        return;
      }
      on.mode('poll');
      await poll(id, on, controller.signal).catch((e) => controller.signal.aborted || on.error(e));
    }
  };
  run();
  return () => controller.abort();
}

async function stream(id, on, signal) {
  for (;;) {
    const response = await fetch(`/api/v1/orders/${encodeURIComponent(id)}/stream`, {
      headers: headers({ Accept: 'text/event-stream' }),
      signal,
    });
    if (!response.ok) {
      const problem = await response.json().catch(() => null);
      throw new ApiError(response.status, problem);
    }
    if (!response.body) throw new Error('no stream body');
    on.mode('stream');
    on.reset();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let ended = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, '\n');
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) event = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (!data.length) continue; // a keep-alive comment
        const payload = JSON.parse(data.join('\n'));
        if (event === 'order') on.order(payload);
        else if (event === 'timeline') on.timeline(payload);
        else if (event === 'end') {
          ended = true;
          on.end(payload.status);
        }
      }
    }
    if (ended) {
      on.mode('final');
      return;
    }
    // Closed before the end (the server's time limit, or it restarted): go on.
  }
}

async function poll(id, on, signal) {
  for (;;) {
    const order = await api(`/api/v1/orders/${encodeURIComponent(id)}?wait=2`, { signal });
    const entries = await api(`/api/v1/orders/${encodeURIComponent(id)}/events`, { signal });
    on.order(order);
    on.reset();
    on.timeline(entries);
    if (order.status !== 'PENDING') {
      on.end(order.status);
      on.mode('final');
      return;
    }
  }
}
