import createClient, { type Client, type Middleware } from 'openapi-fetch';
import type { paths, components } from './schema.js';
import type { paths as IdentityPaths, components as IdentityComponents } from './identity.js';
import { ClientCredentials, PasswordSession, StaticToken, type TokenSource } from './auth.js';
import { PlantdError } from './errors.js';
import { Live, type LiveOptions } from './live.js';

/** The API's schemas (generated from the proxy's `/openapi.json`). */
export type Schemas = components['schemas'];
export type { paths };
/** Identity's schemas (generated from `/v1/identity/openapi.json`). */
export type IdentitySchemas = IdentityComponents['schemas'];
export type { IdentityPaths };

/** Options of {@link Plantd}. */
export interface PlantdOptions {
  /** The API's base URL, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** Where bearer tokens come from. */
  auth: TokenSource;
  /** A `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
  /** Default time limit of one REST call, ms (default 30 s). */
  timeoutMs?: number;
  /** Options of the live connection. */
  live?: Omit<LiveOptions, 'url' | 'auth'>;
}

/** A state value with the ETag to update it with (`If-Match`). */
export interface Versioned<T> {
  value: T;
  etag: string;
}

/**
 * The plantd client: `rest` is every route of the proxy's OpenAPI
 * document, typed (openapi-fetch: `await plantd.rest.GET('/v1/sites/{site}/last',
 * {params: {path: {site}}})`), with the bearer token on each request and
 * one retry with a renewed token when the server answers 401; `live` is
 * the WebSocket (subscriptions as async iterators). A few calls that need
 * more than a typed request (ETags, errors as exceptions) have methods
 * here.
 */
export class Plantd {
  readonly rest: Client<paths>;
  /**
   * Every route of identity's OpenAPI document, typed the same way
   * (`await plantd.identity.GET('/v1/users')`): users, roles, sites,
   * service accounts, devices, lockouts, keys, the audit trail. Same base
   * URL, token, retry and errors as {@link rest}.
   */
  readonly identity: Client<IdentityPaths>;
  readonly live: Live;
  readonly #auth: TokenSource;
  readonly #timeoutMs: number;

  constructor(options: PlantdOptions) {
    const base = options.url.replace(/\/+$/, '');
    const f = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#auth = options.auth;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    const auth = this.#auth;
    const timeoutMs = this.#timeoutMs;
    // Sends with the current token; on 401 renews once and sends again.
    const authed: typeof fetch = async (input, init) => {
      const request = new Request(input, init);
      const signal = request.signal.aborted
        ? request.signal
        : AbortSignal.any([request.signal, AbortSignal.timeout(timeoutMs)]);
      const send = async (token: string) => {
        const r = new Request(request.clone(), { signal });
        r.headers.set('authorization', `Bearer ${token}`);
        try {
          return await f(r);
        } catch (e) {
          if (signal.aborted && !request.signal.aborted) {
            throw new PlantdError(0, 'timeout', `${request.method} ${request.url}: no answer within ${timeoutMs} ms`);
          }
          throw e instanceof PlantdError ? e : new PlantdError(0, 'network', `${request.method} ${request.url}: ${String(e)}`);
        }
      };
      const first = await send(await auth.token(signal));
      if (first.status !== 401) return first;
      return send(await auth.refused(signal));
    };
    this.rest = createClient<paths>({ baseUrl: base, fetch: authed });
    const rejectErrors: Middleware = {
      async onResponse({ response }) {
        if (!response.ok) throw await PlantdError.fromResponse(response);
        return undefined;
      },
    };
    this.rest.use(rejectErrors);
    this.identity = createClient<IdentityPaths>({ baseUrl: base, fetch: authed });
    this.identity.use(rejectErrors);
    this.live = new Live({ ...options.live, url: base, auth });
  }

  /** Logs in with a password; the session rotates its refresh token itself. */
  static async login(url: string, email: string, password: string, options: Omit<PlantdOptions, 'url' | 'auth'> = {}): Promise<Plantd> {
    const session = await PasswordSession.login(url, email, password, { fetch: options.fetch });
    return new Plantd({ ...options, url, auth: session });
  }

  /**
   * As a service account or device, from its client id and secret: tokens
   * from `POST /v1/auth/token`, renewed before they expire
   * ({@link ClientCredentials}).
   */
  static withClientCredentials(
    url: string,
    clientId: string,
    clientSecret: string,
    options: Omit<PlantdOptions, 'url' | 'auth'> & { sites?: string[] } = {},
  ): Plantd {
    const { sites, ...rest } = options;
    return new Plantd({ ...rest, url, auth: new ClientCredentials(url, clientId, clientSecret, { fetch: rest.fetch, sites }) });
  }

  /** With a service-account or device token (never renewed). */
  static withToken(url: string, token: string, options: Omit<PlantdOptions, 'url' | 'auth'> = {}): Plantd {
    return new Plantd({ ...options, url, auth: new StaticToken(token) });
  }

  /**
   * Logs a password session out: revokes its access token (live sockets
   * using it close with {@link RefusedError}) and its refresh tokens. The
   * client is unusable after it.
   */
  async logout(): Promise<void> {
    if (!(this.#auth instanceof PasswordSession)) {
      throw new PlantdError(0, 'unsupported', 'only a password session logs out; revoke service-account and device tokens through the API');
    }
    await this.#auth.logout();
  }

  /** The caller's verified token claims (`GET /v1/auth/whoami`). */
  async whoami(): Promise<IdentitySchemas['Claims']> {
    const { data } = await this.identity.GET('/v1/auth/whoami');
    return data as IdentitySchemas['Claims'];
  }

  /** The sites of the caller's organisation (`GET /v1/sites`). */
  async sites(): Promise<IdentitySchemas['SiteRecord'][]> {
    const { data } = await this.identity.GET('/v1/sites');
    return data ?? [];
  }

  /** A state value and its ETag; `null` when the key does not exist. */
  async getState<T = unknown>(scope: string, key: string): Promise<Versioned<T> | null> {
    try {
      const { data, response } = await this.rest.GET('/v1/state/{scope}/{key}', {
        params: { path: { scope, key } },
      });
      return { value: data as T, etag: response.headers.get('etag') ?? '' };
    } catch (e) {
      if (e instanceof PlantdError && e.status === 404) return null;
      throw e;
    }
  }

  /**
   * Writes a state value. With `ifMatch` (an ETag from {@link getState})
   * the write happens only if nobody changed it since: otherwise a
   * {@link PlantdError} with status 409 (`conflict`). Returns the new ETag.
   */
  async putState(scope: string, key: string, value: unknown, ifMatch?: string): Promise<string> {
    const { response } = await this.rest.PUT('/v1/state/{scope}/{key}', {
      params: { path: { scope, key }, header: ifMatch ? { 'If-Match': ifMatch } : {} },
      body: value as never,
    });
    return response.headers.get('etag') ?? '';
  }

  /**
   * A site's stored messages on topics matching `filter`, page after page
   * (the server's cursors followed until there is no more): `for await
   * (const m of plantd.history('plant-1', 'line1/#', { order: 'asc' }))`.
   * `from`/`to` are RFC 3339 or ms since the epoch; `limit` is the page
   * size.
   */
  async *history(
    site: string,
    filter: string,
    query: Omit<NonNullable<paths['/v1/sites/{site}/history']['get']['parameters']['query']>, 'filter' | 'cursor'> = {},
  ): AsyncGenerator<Schemas['Message']> {
    let cursor: string | undefined;
    do {
      const { data } = await this.rest.GET('/v1/sites/{site}/history', {
        params: { path: { site }, query: { ...query, filter, cursor } },
      });
      if (!data) return;
      yield* data.messages;
      cursor = data.next_cursor ?? undefined;
    } while (cursor);
  }

  /**
   * Log lines (`GET /v1/logs`: site, source, level, time range, filter in
   * the log query language), page after page, newest first unless
   * `direction: 'forward'`.
   */
  async *logs(query: Omit<NonNullable<paths['/v1/logs']['get']['parameters']['query']>, 'cursor'> = {}): AsyncGenerator<Schemas['LogLine']> {
    let cursor: string | undefined;
    do {
      const { data } = await this.rest.GET('/v1/logs', { params: { query: { ...query, cursor } } });
      if (!data) return;
      yield* data.records;
      cursor = data.next_cursor ?? undefined;
    } while (cursor);
  }

  /** Analytics results of a site (`GET /v1/sites/{site}/aggregates`), page after page. */
  async *aggregates(
    site: string,
    query: Omit<NonNullable<paths['/v1/sites/{site}/aggregates']['get']['parameters']['query']>, 'cursor'> = {},
  ): AsyncGenerator<Schemas['Aggregate']> {
    let cursor: string | undefined;
    do {
      const { data } = await this.rest.GET('/v1/sites/{site}/aggregates', {
        params: { path: { site }, query: { ...query, cursor } },
      });
      if (!data) return;
      yield* data.aggregates;
      cursor = data.next_cursor ?? undefined;
    } while (cursor);
  }

  /**
   * Creates a state value only if the key does not exist yet
   * (`If-None-Match: *`): otherwise a {@link PlantdError} with status 409
   * (`conflict`) — two writers racing to create it cannot both win.
   * Returns its ETag.
   */
  async createState(scope: string, key: string, value: unknown): Promise<string> {
    const { response } = await this.rest.PUT('/v1/state/{scope}/{key}', {
      params: { path: { scope, key }, header: { 'If-None-Match': '*' } },
      body: value as never,
    });
    return response.headers.get('etag') ?? '';
  }
}
