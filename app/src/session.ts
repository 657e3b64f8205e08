// The login session: tokens live in memory only (a reload asks to log in
// again), the access token is refreshed before it expires, and the
// caller's permissions come from identity's /v1/auth/whoami.

/** The claims of the access token, as `/v1/auth/whoami` answers them. */
export interface Claims {
  sub: string;
  org: string;
  kind?: string;
  roles: string[];
  perms: string[];
  exp: number;
}

interface TokenResponse {
  access_token: string;
  expires_in: number;
  refresh_token?: string;
}

/** An error an API answered with: its status and `{error, message}`. */
export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

let access: string | null = null;
let refreshToken: string | null = null;
let claims: Claims | null = null;
let timer: ReturnType<typeof setTimeout> | undefined;
const listeners = new Set<() => void>();

function changed() {
  for (const l of listeners) l();
}

/** Calls `f` whenever the session starts, refreshes or ends. */
export function onSession(f: () => void): () => void {
  listeners.add(f);
  return () => listeners.delete(f);
}

/** The current access token, or null when logged out. */
export function token(): string | null {
  return access;
}

/** The logged-in principal's claims, or null. */
export function current(): Claims | null {
  return claims;
}

/** Reads an error body (`{error, message}`) into an [`ApiError`]. */
export async function apiError(r: Response): Promise<ApiError> {
  let code = 'http_' + r.status;
  let message = r.statusText || `HTTP ${r.status}`;
  try {
    const body = await r.json();
    if (body && typeof body === 'object') {
      code = body.error ?? code;
      message = body.message ?? message;
    }
  } catch {
    /* not JSON: keep the status text */
  }
  return new ApiError(r.status, code, message);
}

async function postJson(path: string, body: unknown, bearer?: string): Promise<Response> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  return fetch(path, { method: 'POST', headers, body: JSON.stringify(body) });
}

async function adopt(t: TokenResponse) {
  access = t.access_token;
  refreshToken = t.refresh_token ?? null;
  const who = await fetch('/v1/auth/whoami', { headers: { authorization: `Bearer ${access}` } });
  if (!who.ok) throw await apiError(who);
  claims = (await who.json()) as Claims;
  clearTimeout(timer);
  // Refresh at 80% of the lifetime (at least 5 s from now).
  const ms = Math.max(5000, t.expires_in * 800);
  timer = setTimeout(() => {
    refresh().catch(() => end());
  }, ms);
  changed();
}

/** Logs in with email and password. */
export async function login(email: string, password: string): Promise<void> {
  const r = await postJson('/v1/auth/login', { email, password });
  if (!r.ok) throw await apiError(r);
  await adopt((await r.json()) as TokenResponse);
}

/** The refresh under way, shared by every caller that asks meanwhile. */
let refreshing: Promise<void> | null = null;

/**
 * Exchanges the refresh token for new tokens now. Never two at once: a
 * refresh token is good for one exchange (identity revokes the whole
 * login when one is used twice), so a caller arriving while a refresh is
 * under way — the timer, a 401, the live socket's renewal — waits for
 * that one.
 */
export function refresh(): Promise<void> {
  if (!refreshing) {
    refreshing = exchange().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

async function exchange(): Promise<void> {
  if (!refreshToken) throw new ApiError(401, 'unauthorized', 'no refresh token');
  const r = await postJson('/v1/auth/refresh', { refresh_token: refreshToken });
  if (!r.ok) throw await apiError(r);
  await adopt((await r.json()) as TokenResponse);
}

function end() {
  clearTimeout(timer);
  access = null;
  refreshToken = null;
  claims = null;
  changed();
}

/** Logs out: revokes the access token and the refresh token's family. */
export async function logout(): Promise<void> {
  const bearer = access;
  const rt = refreshToken;
  end();
  if (bearer) {
    await postJson('/v1/auth/logout', { refresh_token: rt }, bearer).catch(() => undefined);
  }
}

/**
 * Whether the session holds permission `required` (`commands:local:send`):
 * the identity service's rule — `*` allows everything, a `*` segment any
 * value, and a last segment `admin` covers read, write and delete.
 */
export function allows(required: string): boolean {
  return claims !== null && permits(claims.perms, required);
}

/** [`allows`] over a list of grants (exported for tests). */
export function permits(grants: string[], required: string): boolean {
  const req = required.split(':');
  return grants.some((g) => {
    if (g === '*') return true;
    const grant = g.split(':');
    if (grant.length !== req.length) return false;
    const last = req.length - 1;
    return grant.every(
      (s, i) => s === '*' || s === req[i] || (i === last && s === 'admin' && ['read', 'write', 'delete'].includes(req[i])),
    );
  });
}

/** `fetch` with the bearer token; a 401 refreshes once and retries. */
export async function authFetch(path: string, init: RequestInit = {}): Promise<Response> {
  const go = () => {
    const headers = new Headers(init.headers);
    if (access) headers.set('authorization', `Bearer ${access}`);
    return fetch(path, { ...init, headers });
  };
  let r = await go();
  if (r.status === 401 && refreshToken) {
    try {
      await refresh();
      r = await go();
    } catch {
      end();
    }
  }
  return r;
}

/** GET `path` as JSON, throwing an [`ApiError`] on a non-2xx answer. */
export async function getJson<T>(path: string): Promise<T> {
  const r = await authFetch(path);
  if (!r.ok) throw await apiError(r);
  return (await r.json()) as T;
}
