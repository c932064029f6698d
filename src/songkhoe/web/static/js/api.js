// Calls to songkhoe's APIs. The session lives in HttpOnly cookies; every request that changes
// something carries the CSRF token (the sk_csrf cookie's value) in X-CSRF-Token.
export class ApiError extends Error {
  constructor(status, body) {
    super(messageOf(body) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function messageOf(body) {
  if (!body || typeof body !== 'object') return '';
  if (body.issue) return body.issue.map((i) => i.diagnostics).join('; ');
  return body.error_description || body.error || '';
}

export function csrf() {
  const m = document.cookie.match(/(?:^|;\s*)sk_csrf=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : '';
}

// Waits before sending again a request whose session refresh lost a race with another
// server process: that process's answer brings the new cookies (web/session.py).
const RACED_RETRIES = [200, 500, 1000];

async function call(method, url, body, type, attempt = 0) {
  const headers = { Accept: 'application/json, application/fhir+json' };
  if (method !== 'GET') headers['X-CSRF-Token'] = csrf();
  let payload;
  if (body instanceof URLSearchParams) payload = body;
  else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['Content-Type'] = type || 'application/json';
  }
  const r = await fetch(url, { method, headers, body: payload, credentials: 'same-origin' });
  if (r.status === 401 && r.headers.get('X-Session-Refreshing') && attempt < RACED_RETRIES.length) {
    await new Promise((done) => { setTimeout(done, RACED_RETRIES[attempt]); });
    return call(method, url, body, type, attempt + 1);
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (r.status === 401 && !url.startsWith('/app/')) {
    window.dispatchEvent(new CustomEvent('signedout'));
  }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

export const get = (url) => call('GET', url);
export const post = (url, body, type) => call('POST', url, body, type);

// FHIR search: the resources of a searchset Bundle.
export async function search(type, params) {
  const q = new URLSearchParams(params);
  const b = await get(`/fhir/${type}?${q}`);
  return (b.entry || []).map((e) => e.resource);
}
