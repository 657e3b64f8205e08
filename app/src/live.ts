// Live data over the proxy's WebSocket `/v1/ws` (docs/api.md, "Live
// data"): one socket per session, subscriptions by id, commands answered
// with `sent`. The socket is opened on the app's own origin — `plantd up`
// serves it, and in the cloud the dashboard's CloudFront distribution
// routes `/v1/ws` to the WebSocket API (docs/decisions/0045) — without a
// token in the URL (URLs end up in access logs): the first frame is
// `{"op":"auth","token"}`, and subscriptions are sent once the server has
// answered `authenticated`. When the socket closes (token expired,
// network) it reconnects with the current token and subscribes again.
import { token } from './session';

/** A live message: `{"op":"message",…}`. */
export interface LiveMessage {
  id: string;
  site: string;
  topic: string;
  payload?: string;
  payload_base64?: string;
  headers?: Record<string, string>;
}

/** The connection's state, for the status indicator. */
export enum LinkState {
  Connecting = 'connecting',
  Open = 'open',
  Closed = 'closed',
}

interface Subscription {
  /** The frame that starts it (sent again after a reconnect). */
  frame: Record<string, unknown>;
  onMessage: (m: LiveMessage) => void;
  onLog: (record: Record<string, unknown>) => void;
  onError: (message: string) => void;
  onSubscribed: () => void;
}

interface Pending {
  resolve: (v: Record<string, unknown>) => void;
  reject: (e: Error) => void;
}

let socket: WebSocket | null = null;
/** Whether `socket` has been answered `authenticated`. */
let authed = false;
let state: LinkState = LinkState.Closed;
let nextId = 1;
let retry: ReturnType<typeof setTimeout> | undefined;
let wanted = false;
const subs = new Map<string, Subscription>();
const pending = new Map<string, Pending>();
const stateListeners = new Set<(s: LinkState) => void>();

function setState(s: LinkState) {
  state = s;
  for (const l of stateListeners) l(s);
}

/** Calls `f` with the link state now and on every change. */
export function onLinkState(f: (s: LinkState) => void): () => void {
  stateListeners.add(f);
  f(state);
  return () => stateListeners.delete(f);
}

function send(frame: Record<string, unknown>) {
  if (socket && authed && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
}

function connect() {
  const t = token();
  if (!t || !wanted) return;
  const url = new URL('/v1/ws', location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = '';
  url.hash = '';
  setState(LinkState.Connecting);
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
    const id = String(frame.id ?? '');
    if (!authed) {
      if (frame.op === 'authenticated') {
        authed = true;
        setState(LinkState.Open);
        for (const s of subs.values()) send(s.frame);
      } else {
        // Refused (expired, revoked): the server closes; reconnect with
        // the session's current token.
        ws.close();
      }
      return;
    }
    switch (frame.op) {
      case 'message':
        subs.get(id)?.onMessage(frame as unknown as LiveMessage);
        break;
      case 'subscribed':
      case 'tailing':
        subs.get(id)?.onSubscribed();
        break;
      case 'log':
        subs.get(id)?.onLog((frame.record ?? {}) as Record<string, unknown>);
        break;
      case 'sent': {
        const p = pending.get(id);
        pending.delete(id);
        p?.resolve(frame);
        break;
      }
      case 'error': {
        const message = String(frame.message ?? frame.error ?? 'error');
        const p = pending.get(id);
        if (p) {
          pending.delete(id);
          p.reject(new Error(message));
        } else subs.get(id)?.onError(message);
        break;
      }
    }
  };
  ws.onclose = () => {
    if (socket !== ws) return;
    socket = null;
    authed = false;
    setState(LinkState.Closed);
    for (const p of pending.values()) p.reject(new Error('connection closed'));
    pending.clear();
    if (wanted) retry = setTimeout(connect, 1000);
  };
}

/** Opens the socket (idempotent). */
export function start() {
  wanted = true;
  if (!socket) connect();
}

/** Closes the socket and forgets every subscription (logout). */
export function stop() {
  wanted = false;
  clearTimeout(retry);
  subs.clear();
  const ws = socket;
  socket = null;
  authed = false;
  ws?.close();
  setState(LinkState.Closed);
}

/** Subscribes to `filter` on `site`; returns the unsubscribe function. */
export function subscribe(
  site: string,
  filter: string,
  onMessage: (m: LiveMessage) => void,
  onError: (message: string) => void = () => undefined,
  onSubscribed: () => void = () => undefined,
): () => void {
  const id = `s${nextId++}`;
  const frame = { op: 'subscribe', id, site, filter };
  return open(id, { frame, onMessage, onLog: () => undefined, onError, onSubscribed });
}

function open(id: string, sub: Subscription): () => void {
  subs.set(id, sub);
  start();
  send(sub.frame);
  return () => {
    subs.delete(id);
    send({ op: 'unsubscribe', id });
  };
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
  return open(id, { frame, onMessage: () => undefined, onLog: onRecord, onError, onSubscribed: onTailing });
}

/** The body of a live message as text (base64 payloads decoded when they are UTF-8). */
export function payloadText(m: LiveMessage): string {
  if (m.payload !== undefined) return m.payload;
  if (m.payload_base64 !== undefined) return `(binary, ${atob(m.payload_base64).length} bytes)`;
  return '';
}
