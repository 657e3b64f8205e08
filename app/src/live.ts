// Live data over the proxy's WebSocket `/v1/ws` (docs/api.md, "Live
// data"), for the app's pages.
//
// Subscriptions go through the TypeScript SDK's `Live` (bundled from
// sdk/typescript/src, not a copy): one socket, authenticated by its first
// frame (`{"op":"auth","token"}` — never a token in the URL, which access
// logs and CloudFront record; docs/decisions/0045), sequenced
// subscriptions that resume after a reconnect from the last sequence + 1
// (the grid neither misses nor repeats a stored message), and a backoff
// reconnect that renews the token through the app's session. The log
// tail is the SDK's too (`Live.tail`, sequenced: no line missed or
// repeated across a reconnect), on the same socket.
import { Live, LinkState as SdkState, type LiveMessage, type LogLine } from '../../sdk/typescript/src/live';
import { RefusedError } from '../../sdk/typescript/src/errors';
import type { TokenSource } from '../../sdk/typescript/src/auth';
import { refresh, token } from './session';

export type { LiveMessage, LogLine };

/** The connection's state, for the status indicator. */
export enum LinkState {
  Connecting = 'connecting',
  Open = 'open',
  Closed = 'closed',
}

/**
 * The session's token for the SDK. A refused token is renewed once by a
 * refresh — unless the session has refreshed on its own since (then its
 * new token is the answer); logged out, or a refused refresh, is a
 * {@link RefusedError} (subscriptions end instead of retrying).
 */
class SessionTokens implements TokenSource {
  #given: string | null = null;
  #renewing: Promise<string> | null = null;

  async token(): Promise<string> {
    const t = token();
    if (!t) throw new RefusedError('logged out');
    this.#given = t;
    return t;
  }

  refused(): Promise<string> {
    const now = token();
    if (now && now !== this.#given) return this.token();
    this.#renewing ??= refresh()
      .then(() => this.token())
      .catch((e: unknown) => {
        throw e instanceof RefusedError ? e : new RefusedError(e instanceof Error ? e.message : String(e));
      })
      .finally(() => {
        this.#renewing = null;
      });
    return this.#renewing;
  }
}

let live: Live | null = null;
let sdkState: LinkState = LinkState.Closed;
const stateListeners = new Set<(s: LinkState) => void>();

/** The indicator's state. */
function linkState(): LinkState {
  return sdkState;
}

function changed() {
  const s = linkState();
  for (const l of stateListeners) l(s);
}

/** Calls `f` with the link state now and on every change. */
export function onLinkState(f: (s: LinkState) => void): () => void {
  stateListeners.add(f);
  f(linkState());
  return () => stateListeners.delete(f);
}

/** The SDK's connection, created on first use (and again after {@link stop}). */
function connection(): Live {
  if (live) return live;
  const l = new Live({ url: location.origin, auth: new SessionTokens() });
  live = l;
  void (async () => {
    for await (const s of l.states()) {
      if (live !== l) return;
      sdkState =
        s === SdkState.Connected
          ? LinkState.Open
          : s === SdkState.Connecting || s === SdkState.Reconnecting
            ? LinkState.Connecting
            : LinkState.Closed;
      changed();
    }
  })();
  return l;
}

/** Closes the socket and forgets every subscription and tail (logout). */
export function stop() {
  const l = live;
  live = null;
  l?.close();
  sdkState = LinkState.Closed;
  changed();
}

/**
 * Subscribes to `filter` on `site` (sequenced: resumed without gaps after a
 * reconnect); returns the unsubscribe function. `onSubscribed` runs each
 * time the server confirms it (again after every reconnect).
 */
export function subscribe(
  site: string,
  filter: string,
  onMessage: (m: LiveMessage) => void,
  onError: (message: string) => void = () => undefined,
  onSubscribed: () => void = () => undefined,
): () => void {
  const sub = connection().subscribe(site, filter, { onSubscribed });
  void (async () => {
    try {
      for await (const m of sub) onMessage(m);
    } catch (e) {
      onError(e instanceof Error ? e.message : String(e));
    }
  })();
  return () => sub.close();
}

/** The body of a live message as text (base64 payloads decoded when they are UTF-8). */
export function payloadText(m: LiveMessage): string {
  if (m.payload !== undefined) return m.payload;
  if (m.payloadBase64 !== undefined) return `(binary, ${atob(m.payloadBase64).length} bytes)`;
  return '';
}

/** What a live log tail matches (docs/api.md, the `tail` operation). */
export interface TailQuery {
  site: string;
  filter?: string;
  source?: string;
  level?: string;
}

/**
 * Follows the log lines of `q` as they arrive (from the next one stored,
 * resumed without a gap after a reconnect); returns the stop function.
 * `onTailing` runs each time the server confirms the tail.
 */
export function tail(
  q: TailQuery,
  onRecord: (record: LogLine) => void,
  onError: (message: string) => void,
  onTailing: () => void,
): () => void {
  const sub = connection().tail(q.site, {
    filter: q.filter || undefined,
    source: q.source || undefined,
    level: q.level || undefined,
    onSubscribed: onTailing,
  });
  void (async () => {
    try {
      for await (const r of sub) onRecord(r);
    } catch (e) {
      onError(e instanceof Error ? e.message : String(e));
    }
  })();
  return () => sub.close();
}
