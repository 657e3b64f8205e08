import { PlantdError, RefusedError } from './errors.js';
import type { components } from './identity.js';

type IdentitySchemas = components['schemas'];

/**
 * What identity answers to a login or a refresh (`TokenResponse` of its
 * OpenAPI document: `access_token`, `token_type`, `expires_in` in seconds,
 * and `refresh_token` for password logins).
 */
export type Tokens = IdentitySchemas['TokenResponse'];

/**
 * Where the SDK gets a bearer token. A static token (service account,
 * device, or one pasted from `plantd token`) never renews; a
 * {@link PasswordSession} logs in once and rotates its refresh token
 * before the access token expires.
 */
export interface TokenSource {
  /** A currently valid access token. */
  token(signal?: AbortSignal): Promise<string>;
  /** The server refused the last token: renew if possible, else throw {@link RefusedError}. */
  refused(signal?: AbortSignal): Promise<string>;
}

/** A token given by the caller: used as is, never renewed. */
export class StaticToken implements TokenSource {
  readonly #token: string;
  constructor(token: string) {
    this.#token = token;
  }
  async token(): Promise<string> {
    return this.#token;
  }
  async refused(): Promise<string> {
    throw new RefusedError('the token was refused and a static token cannot be renewed');
  }
  /** Never shows the token. */
  toString(): string {
    return 'StaticToken(…)';
  }
  toJSON(): string {
    return this.toString();
  }
}

/** Renew this long before the access token's expiry. */
const RENEW_EARLY_MS = 30_000;

/**
 * A service account's or device's credentials: `POST /v1/auth/token`
 * (OAuth 2 client credentials) for an access token, asked again shortly
 * before it expires or when the server refuses it — never two requests at
 * once. A secret the server no longer accepts (deactivated, rotated) is a
 * {@link RefusedError}. The secret never shows in `toString`/JSON.
 */
export class ClientCredentials implements TokenSource {
  readonly #base: string;
  readonly #fetch: typeof fetch;
  readonly #request: IdentitySchemas['TokenRequest'];
  #access = '';
  #expiresAt = 0;
  #renewing: Promise<string> | null = null;

  /** Credentials of `clientId`; `sites`: the sites a service account's token should also be valid for. */
  constructor(base: string, clientId: string, clientSecret: string, options: { fetch?: typeof fetch; sites?: string[] } = {}) {
    this.#base = base.replace(/\/+$/, '');
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#request = { grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret };
    if (options.sites) this.#request.sites = options.sites;
  }

  async token(signal?: AbortSignal): Promise<string> {
    if (this.#access && Date.now() < this.#expiresAt - RENEW_EARLY_MS) return this.#access;
    return this.#renew(signal);
  }

  async refused(signal?: AbortSignal): Promise<string> {
    return this.#renew(signal);
  }

  toString(): string {
    return `ClientCredentials(${this.#request.client_id}, …)`;
  }
  toJSON(): string {
    return this.toString();
  }

  #renew(signal?: AbortSignal): Promise<string> {
    this.#renewing ??= this.#ask(signal).finally(() => {
      this.#renewing = null;
    });
    return this.#renewing;
  }

  async #ask(signal?: AbortSignal): Promise<string> {
    let response: Response;
    try {
      response = await this.#fetch(`${this.#base}/v1/auth/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(this.#request),
        signal,
      });
    } catch (e) {
      throw new PlantdError(0, 'network', `/v1/auth/token: ${String(e)}`);
    }
    if ([400, 401, 403].includes(response.status)) {
      const e = await PlantdError.fromResponse(response);
      throw new RefusedError(`no token for ${this.#request.client_id}: ${e.message}`);
    }
    if (!response.ok) throw await PlantdError.fromResponse(response);
    const t = (await response.json()) as Tokens;
    this.#access = t.access_token;
    this.#expiresAt = Date.now() + (t.expires_in ?? 300) * 1000;
    return this.#access;
  }
}

/**
 * A user's session: `POST /v1/auth/login` once, then `POST
 * /v1/auth/refresh` (rotation: each refresh token is used once) shortly
 * before the access token expires, or when the server refuses it. Refresh
 * calls are never run twice at once (a second would be a reuse, which
 * identity answers by revoking the whole login).
 */
export class PasswordSession implements TokenSource {
  readonly #base: string;
  readonly #fetch: typeof fetch;
  #access = '';
  #refresh = '';
  #expiresAt = 0;
  #renewing: Promise<string> | null = null;

  private constructor(base: string, f: typeof fetch) {
    this.#base = base.replace(/\/+$/, '');
    this.#fetch = f;
  }

  /** Logs in with an email and password. */
  static async login(
    base: string,
    email: string,
    password: string,
    options: { fetch?: typeof fetch; signal?: AbortSignal } = {},
  ): Promise<PasswordSession> {
    const s = new PasswordSession(base, options.fetch ?? globalThis.fetch.bind(globalThis));
    await s.#exchange('/v1/auth/login', { email, password } satisfies IdentitySchemas['LoginRequest'], options.signal);
    return s;
  }

  async token(signal?: AbortSignal): Promise<string> {
    if (this.#access && Date.now() < this.#expiresAt - RENEW_EARLY_MS) return this.#access;
    return this.#renew(signal);
  }

  async refused(signal?: AbortSignal): Promise<string> {
    return this.#renew(signal);
  }

  /** Ends the login on the server (its refresh tokens stop working). */
  async logout(signal?: AbortSignal): Promise<void> {
    const response = await this.#fetch(`${this.#base}/v1/auth/logout`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${this.#access}` },
      body: JSON.stringify({ refresh_token: this.#refresh } satisfies IdentitySchemas['LogoutRequest']),
      signal,
    });
    if (!response.ok) throw await PlantdError.fromResponse(response);
    this.#access = '';
    this.#refresh = '';
  }

  toString(): string {
    return 'PasswordSession(…)';
  }
  toJSON(): string {
    return this.toString();
  }

  #renew(signal?: AbortSignal): Promise<string> {
    if (!this.#renewing) {
      const body: IdentitySchemas['RefreshRequest'] = { refresh_token: this.#refresh };
      this.#renewing = this.#exchange('/v1/auth/refresh', body, signal)
        .catch((e: unknown) => {
          if (e instanceof PlantdError && e.status === 401) throw new RefusedError(e.message);
          throw e;
        })
        .finally(() => {
          this.#renewing = null;
        });
    }
    return this.#renewing;
  }

  async #exchange(
    path: '/v1/auth/login' | '/v1/auth/refresh',
    body: IdentitySchemas['LoginRequest'] | IdentitySchemas['RefreshRequest'],
    signal?: AbortSignal,
  ): Promise<string> {
    let response: Response;
    try {
      response = await this.#fetch(`${this.#base}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal,
      });
    } catch (e) {
      throw new PlantdError(0, 'network', `${path}: ${String(e)}`);
    }
    if (!response.ok) throw await PlantdError.fromResponse(response);
    const t = (await response.json()) as Tokens;
    this.#access = t.access_token;
    this.#refresh = t.refresh_token ?? '';
    this.#expiresAt = Date.now() + (t.expires_in ?? 300) * 1000;
    return this.#access;
  }
}
