// Live data over the proxy's WebSocket `/v1/ws` (docs/api.md, "Live
// data"), for the app's pages.
//
// Subscriptions go through the TypeScript SDK's `Live` (bundled from
// sdk/typescript/src, not a copy): one socket, authenticated by its first
// frame (`{"op":"auth","token"}` — never a token in the URL, which access
// logs and CloudFront record; docs/decisions/0045), sequenced
// subscriptions that resume after a reconnect from the last sequence + 1
// (the grid neither misses nor repeats a stored message), and a backoff
// reconnect that renews the token through the app's session.
//
// The log tail (`tail`, which the SDK does not offer) keeps its own small
// socket with the same first-frame authentication.
import { Live, LinkState as SdkState, type LiveMessage } from '../../sdk/typescript/src/live';
import { RefusedError } from '../../sdk/typescript/src/errors';
import type { TokenSource } from '../../sdk/typescript/src/auth';
import { refresh, token } from './session';

export type { LiveMessage };

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
let tailState: LinkState = LinkState.Closed;
const stateListeners = new Set<(s: LinkState) => void>();

/** The indicator's state: open when either socket is, else connecting when either is. */
function linkState(): LinkState {
  if (sdkState === LinkState.Open || tailState === LinkState.Open) return LinkState.Open;
  if (sdkState === LinkState.Connecting || tailState === LinkState.Connecting) return LinkState.Connecting;
  return LinkState.Closed;
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

/** Closes the sockets and forgets every subscription (logout). */
export function stop() {
  const l = live;
  live = null;
  l?.close();
  sdkState = LinkState.Closed;
  stopTail();
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

// ---- The log tail's socket -------------------------------------------------

interface Tail {
  /** The frame that starts it (sent again after a reconnect). */
  frame: Record<string, unknown>;
  onRecord: (record: Record<string, unknown>) => void;
  onError: (message: string) => void;
  onTailing: () => void;
}

let socket: WebSocket | null = null;
/** Whether `socket` has been answered `authenticated`. */
let authed = false;
let nextId = 1;
let retry: ReturnType<typeof setTimeout> | undefined;
const tails = new Map<string, Tail>();

function setTailState(s: LinkState) {
  tailState = s;
  changed();
}

function send(frame: Record<string, unknown>) {
  if (socket && authed && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
}

function connect() {
  const t = token();
  if (!t || tails.size === 0) return;
  const url = new URL('/v1/ws', location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = '';
  url.hash = '';
  setTailState(LinkState.Connecting);
  const ws = new WebSocket(url);
  socket = ws;
  authed = false;
  // The token of the moment the socket opens (it may have been refreshed
  // while connecting).
  ws.onopen = () => ws.send(JSON.stringify({ op: 'auth', token: token() ?? t }));
  ws.onmessage = (ev) => {
    let frame: Record<string, unknown>;
    try {
      frame = JSON.parse(String(ev.data));
    } catch {
      return;
    }
    if (!authed) {
      if (frame.op === 'authenticated') {
        authed = true;
        setTailState(LinkState.Open);
        for (const s of tails.values()) send(s.frame);
      } else {
        // Refused (expired, revoked): the server closes; reconnect with
        // the session's current token.
        ws.close();
      }
      return;
    }
    const tail = tails.get(String(frame.id ?? ''));
    switch (frame.op) {
      case 'tailing':
        tail?.onTailing();
        break;
      case 'log':
        tail?.onRecord((frame.record ?? {}) as Record<string, unknown>);
        break;
      case 'error':
        tail?.onError(String(frame.message ?? frame.error ?? 'error'));
        break;
    }
  };
  ws.onclose = () => {
    if (socket !== ws) return;
    socket = null;
    authed = false;
    setTailState(LinkState.Closed);
    if (tails.size > 0) retry = setTimeout(connect, 1000);
  };
}

function stopTail() {
  clearTimeout(retry);
  tails.clear();
  const ws = socket;
  socket = null;
  authed = false;
  ws?.close();
  tailState = LinkState.Closed;
}

/** What a live log tail matches (docs/api.md, the `tail` operation). */
export interface TailQuery {
  site: string;
  filter?: string;
  source?: string;
  level?: string;
}

/** Follows the log lines of `q` as they arrive; returns the stop function. */
export function tail(
  q: TailQuery,
  onRecord: (record: Record<string, unknown>) => void,
  onError: (message: string) => void,
  onTailing: () => void,
): () => void {
  const id = `t${nextId++}`;
  const frame: Record<string, unknown> = { op: 'tail', id, site: q.site };
  if (q.filter) frame.filter = q.filter;
  if (q.source) frame.source = q.source;
  if (q.level) frame.level = q.level;
  tails.set(id, { frame, onRecord, onError, onTailing });
  if (!socket) connect();
  else send(frame);
  return () => {
    tails.delete(id);
    send({ op: 'unsubscribe', id });
    if (tails.size === 0) {
      clearTimeout(retry);
      const ws = socket;
      socket = null;
      authed = false;
      ws?.close();
      setTailState(LinkState.Closed);
    }
  };
}
