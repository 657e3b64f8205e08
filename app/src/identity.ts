// The identity service's admin calls (users, roles, devices, sites, the
// audit trail), typed by hand: identity serves no OpenAPI document yet, so
// these shapes follow functions/identity/src/routes and docs/api.md. Every
// call throws an ApiError with the server's message on a non-2xx answer
// (a 403 names the missing permission).
import { apiError, authFetch } from './session';

/** A user as `GET /v1/users` lists it. */
export interface User {
  id: string;
  org: string;
  email: string;
  active: boolean;
  roles: string[];
  attributes: Record<string, string>;
}

/** MQTT filters a role or device may publish to and subscribe within. */
export interface MqttGrant {
  publish: string[];
  subscribe: string[];
}

/** A role: built-in or the organisation's own. */
export interface Role {
  name: string;
  description: string;
  perms: string[];
  mqtt: Record<string, MqttGrant>;
  builtin: boolean;
}

/** A device as listed (no secret). */
export interface Device {
  client_id: string;
  name: string;
  site: string;
  publish: string[];
  subscribe: string[];
  active: boolean;
}

/** Client credentials: the secret is shown once. */
export interface Credentials {
  client_id: string;
  client_secret: string;
}

/** An access token from `POST /v1/auth/token`. */
export interface IssuedToken {
  access_token: string;
  expires_in: number;
}

/** A registered site. */
export interface SiteRecord {
  id: string;
  org: string;
  name: string;
  description?: string;
  labels?: Record<string, string>;
  created_ms?: number;
}

/** One audit record (docs/api.md, "Audit trail"). */
export interface AuditRecord {
  seq: number;
  hash: string;
  id: string;
  n: number;
  time: string;
  org: string;
  actor: string;
  actor_kind: string;
  actor_org?: string;
  action: string;
  target: string;
  outcome: string;
  source?: string;
  request_id?: string;
  detail?: unknown;
}

/** One page of the audit trail. */
export interface AuditPage {
  org: string;
  records: AuditRecord[];
  next_cursor?: string;
}

/** The audit filters `GET /v1/audit` takes (empty ones are left out). */
export interface AuditQuery {
  actor?: string;
  target?: string;
  action?: string;
  since?: string;
  until?: string;
  limit?: number;
  cursor?: string;
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const init: RequestInit = { method };
  if (body !== undefined) {
    init.headers = { 'content-type': 'application/json' };
    init.body = JSON.stringify(body);
  }
  const r = await authFetch(path, init);
  if (!r.ok) throw await apiError(r);
  if (r.status === 204) return undefined as T;
  const text = await r.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

const seg = encodeURIComponent;

export const users = {
  list: () => call<User[]>('GET', '/v1/users'),
  create: (email: string, password: string, roles: string[]) => call<User>('POST', '/v1/users', { email, password, roles }),
  setActive: (id: string, active: boolean) => call<User>('PATCH', `/v1/users/${seg(id)}`, { active }),
  setRoles: (id: string, roles: string[]) => call<User>('PUT', `/v1/users/${seg(id)}/roles`, { roles }),
  /** Logs the user out everywhere: `{revoked}` live tokens. */
  revoke: (id: string) => call<{ revoked: number }>('POST', `/v1/users/${seg(id)}/revoke`),
};

export const roles = {
  list: () => call<Role[]>('GET', '/v1/roles'),
  create: (r: Omit<Role, 'builtin'>) => call<Role>('POST', '/v1/roles', r),
  replace: (r: Omit<Role, 'builtin'>) =>
    call<Role>('PUT', `/v1/roles/${seg(r.name)}`, { description: r.description, perms: r.perms, mqtt: r.mqtt }),
  remove: (name: string) => call<void>('DELETE', `/v1/roles/${seg(name)}`),
};

export const devices = {
  list: () => call<Device[]>('GET', '/v1/devices'),
  create: (d: { name: string; site: string; publish: string[]; subscribe: string[] }) => call<Credentials>('POST', '/v1/devices', d),
  setActive: (id: string, active: boolean) => call<unknown>('PATCH', `/v1/devices/${seg(id)}`, { active }),
  revoke: (id: string) => call<{ revoked: number }>('POST', `/v1/devices/${seg(id)}/revoke`),
  /**
   * A device token for `creds` (the client-credentials grant a device
   * uses itself; no bearer needed). Its MQTT password.
   */
  token: async (creds: Credentials): Promise<IssuedToken> => {
    const r = await fetch('/v1/auth/token', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ grant_type: 'client_credentials', ...creds }),
    });
    if (!r.ok) throw await apiError(r);
    return (await r.json()) as IssuedToken;
  },
};

export const sites = {
  list: () => call<SiteRecord[]>('GET', '/v1/sites'),
  create: (s: { id: string; name: string; description: string; labels: Record<string, string> }) =>
    call<SiteRecord>('POST', '/v1/sites', s),
};

export const audit = {
  page: (q: AuditQuery) => {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== '') p.set(k, String(v));
    const qs = p.toString();
    return call<AuditPage>('GET', `/v1/audit${qs ? `?${qs}` : ''}`);
  },
};

/** Splits a comma/space/newline separated list, dropping empties. */
export function list(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}
