import type { TokenSource } from './auth.js';
import type { components } from './schema.js';
import { PlantdError, RefusedError } from './errors.js';

/** The live connection's state, also offered as a stream ({@link Live.states}). */
export enum LinkState {
  /** Opening the first socket. */
  Connecting = 'connecting',
  /** Open; every subscription is (re)subscribed. */
  Connected = 'connected',
  /** Lost; trying again after a backoff. */
  Reconnecting = 'reconnecting',
  /** The server refused the token for good (revoked, or not renewable). */
  Refused = 'refused',
  /** No socket: closed by {@link Live.close}, or lost with no subscription to resume (the next one opens a socket). */
  Closed = 'closed',
}

/** One message of a subscription. */
export interface LiveMessage {
  /** The site. */
  site: string;
  /** The MQTT topic it was published on. */
  topic: string;
  /** The payload as text (when it was UTF-8). */
  payload?: string;
  /** The payload, base64 (when it was not UTF-8). */
  payloadBase64?: string;
  /** The headers the edge set (`Plantd-Qos`, …). */
  headers: Record<string, string>;
  /** Its sequence in the stream `PLANTD_TELEMETRY`. */
  sequence: number;
  /** When it was stored (RFC 3339). */
  time: string;
}

/** Options of {@link Live}. */
export interface LiveOptions {
  /** The API's base URL (`http(s)://…`; the socket is `ws(s)://…/v1/ws`). */
  url: string;
  /** Where tokens come from. */
  auth: TokenSource;
  /** A WebSocket constructor (default: the global one; Node 20 needs `--experimental-websocket`). */
  WebSocket?: typeof WebSocket;
  /** First reconnect delay, ms (default 250); doubles up to {@link maxBackoffMs}, with jitter. */
  backoffMs?: number;
  /** Longest reconnect delay, ms (default 15 s). */
  maxBackoffMs?: number;
  /** Messages a subscription holds for a reader that is behind (default 10,000). When they are all unread the subscription is held on the server and resumed from where the reader is once it has read half: nothing is lost (decision 0059). */
  buffer?: number;
  /**
   * Time limit of opening a socket, ms (default 10 s): from the handshake
   * to the server's `authenticated`. Past it the socket is dropped and the
   * next attempt follows the backoff — a server that accepts the
   * connection but never answers (starting, stopping) cannot stall it.
   */
  openTimeoutMs?: number;
}

/** Options of {@link Live.subscribe}. */
export interface SubscribeOptions {
  /** Start at this stream sequence (default: the next message stored). */
  fromSequence?: number;
  /** Ends the subscription. */
  signal?: AbortSignal;
  /** Called each time the server confirms the subscription (the first time and after every reconnect). */
  onSubscribed?: () => void;
}

/** One log line of a {@link Live.tail}, parsed as `GET /v1/logs` shows it (with its `stream` and `sequence`). */
export type LogLine = components['schemas']['LogLine'];

/** Options of {@link Live.tail}. */
export interface TailOptions {
  /** A filter in the log query language (`|= "overheat" | temp > 80`). */
  filter?: string;
  /** Only this source (exact, or a glob with `*` and `?`). */
  source?: string;
  /** Only this level and above (`warn`). */
  level?: string;
  /** Start at this sequence of `PLANTD_LOGS` (default: the next line stored). */
  fromSequence?: number;
  /** Ends the tail. */
  signal?: AbortSignal;
  /** Called each time the server confirms the tail (the first time and after every reconnect). */
  onSubscribed?: () => void;
}

type Frame = Record<string, unknown>;

/** Options of {@link Live.publish}. */
export interface PublishOptions {
  /** MQTT QoS to deliver with (default 1). */
  qos?: number;
  /** Deliver as a retained message. */
  retain?: boolean;
  /** Drop the command if not delivered within this many seconds. */
  ttlSecs?: number;
  /** MQTT 5 content type to deliver with. */
  contentType?: string;
  /** How long to wait for the server's answer, ms (default 10 s). */
  timeoutMs?: number;
}

/** Where a command was stored (`PLANTD_COMMANDS` and its sequence). */
export interface Sent {
  stream: string;
  sequence: number;
}

interface Pending {
  frame: Frame;
  sent: boolean;
  resolve: (s: Sent) => void;
  reject: (e: unknown) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** The first frame's op: `{"op":"auth","token":…}`. */
const AUTH_OP = 'auth';
/** The server's answer to a verified first frame. */
const AUTHENTICATED_OP = 'authenticated';

/** A queue that an async iterator drains; ends with an optional error. */
class Queue<T> implements AsyncIterableIterator<T> {
  readonly #items: T[] = [];
  #waiter: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | null = null;
  #ended = false;
  #error: unknown = null;
  readonly #onReturn: () => void;

  constructor(onReturn: () => void) {
    this.#onReturn = onReturn;
  }

  get length(): number {
    return this.#items.length;
  }

  push(item: T): void {
    if (this.#ended) return;
    if (this.#waiter) {
      this.#waiter.resolve({ value: item, done: false });
      this.#waiter = null;
    } else {
      this.#items.push(item);
    }
  }

  end(error: unknown = null): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    if (this.#waiter) {
      if (error) this.#waiter.reject(error);
      else this.#waiter.resolve({ value: undefined, done: true });
      this.#waiter = null;
    }
  }

  next(): Promise<IteratorResult<T>> {
    const item = this.#items.shift();
    if (item !== undefined) return Promise.resolve({ value: item, done: false });
    if (this.#ended) {
      if (this.#error) {
        const e = this.#error;
        this.#error = null;
        return Promise.reject(e);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.#items.length = 0;
    this.end();
    this.#onReturn();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}

/**
 * A live subscription: `for await (const m of sub)` (or `await sub.next()`);
 * `close()` ends it. It ends with an error when the server refuses it
 * (`forbidden`, …) or the token ({@link RefusedError}).
 */
export class Subscription<T = LiveMessage> implements AsyncIterableIterator<T> {
  readonly site: string;
  /** The MQTT topic filter (a subscription) or the log filter (a tail; may be empty). */
  readonly filter: string;
  /** The sequence to resume from: the last delivered + 1 (0: not known yet). */
  resumeFrom = 0;
  readonly queue: Queue<T>;
  /** {@link SubscribeOptions.onSubscribed}. */
  readonly onSubscribed: () => void;
  /** The operation's own fields (`op`, and for a tail its `source`/`level`), before `id` and the position. */
  readonly request: Frame;
  /**
   * Flow control (decision 0059): `awaiting` — asked for on this socket, its
   * items count once the server confirms it; `flowing`; `held` — its reader
   * let `buffer` items pile up, so it is unsubscribed on the server until the
   * reader has read half of them. @internal
   */
  flow: 'awaiting' | 'flowing' | 'held' = 'awaiting';
  /** Called after the reader took an item (resumes a held subscription). @internal */
  onTaken: () => void = () => undefined;
  readonly #close: () => void;

  constructor(site: string, filter: string, fromSequence: number, close: () => void, onSubscribed: () => void = () => undefined, request: Frame = { op: 'subscribe', site, filter }) {
    this.site = site;
    this.onSubscribed = onSubscribed;
    this.filter = filter;
    this.resumeFrom = fromSequence;
    this.request = request;
    this.#close = close;
    this.queue = new Queue(close);
  }

  /** Stops the subscription; the iterator ends. */
  close(): void {
    this.queue.end();
    this.#close();
  }

  /** The next message. */
  next(): Promise<IteratorResult<T>> {
    return this.queue.next().then((r) => {
      this.onTaken();
      return r;
    });
  }

  /** Ends the subscription (what `break` in `for await` calls). */
  return(): Promise<IteratorResult<T>> {
    return this.queue.return();
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}

/**
 * The live connection: one WebSocket to `/v1/ws`, opened on the first
 * subscription and authenticated by its first frame (`{"op":"auth",
 * "token"}` — never a token in the URL, which access logs and CDNs
 * record), with one reconnect state machine. After any loss (network,
 * server restart, expired token) it renews the token if needed, opens a new
 * socket after a backoff and subscribes every subscription again from its
 * last sequence + 1 — so a subscriber neither misses nor repeats a message
 * the server stored. A refused token (revoked, or a static token the
 * server no longer accepts) ends every subscription with
 * {@link RefusedError} instead of retrying forever.
 */
export class Live {
  readonly #options: Required<Omit<LiveOptions, 'WebSocket'>> & { WebSocket: typeof WebSocket };
  // Subscriptions and tails, by id (their items differ; the frames say which).
  readonly #subs = new Map<string, Subscription<LiveMessage | LogLine>>();
  readonly #listeners = new Set<Queue<LinkState>>();
  // Commands sent (or waiting for the socket) and not yet answered, by id.
  readonly #pending = new Map<string, Pending>();
  #socket: WebSocket | null = null;
  #state: LinkState = LinkState.Closed;
  #nextId = 1;
  #attempt = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  #renew = false;
  /** Whether the current socket has been answered `authenticated`. */
  #authenticated = false;

  constructor(options: LiveOptions) {
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: typeof WebSocket }).WebSocket;
    if (!WS) throw new PlantdError(0, 'unsupported', 'no WebSocket: pass options.WebSocket (Node 20: run with --experimental-websocket)');
    this.#options = {
      url: options.url.replace(/\/+$/, ''),
      auth: options.auth,
      WebSocket: WS,
      backoffMs: options.backoffMs ?? 250,
      maxBackoffMs: options.maxBackoffMs ?? 15_000,
      buffer: options.buffer ?? 10_000,
      openTimeoutMs: options.openTimeoutMs ?? 10_000,
    };
  }

  /** The state now. */
  get state(): LinkState {
    return this.#state;
  }

  /** The state now and every change after it, until {@link close}. */
  states(): AsyncIterableIterator<LinkState> {
    const q: Queue<LinkState> = new Queue(() => this.#listeners.delete(q));
    q.push(this.#state);
    this.#listeners.add(q);
    return q;
  }

  /**
   * Messages of `site` on topics matching the MQTT `filter`, from the next
   * one stored (or `fromSequence`), across reconnects.
   */
  subscribe(site: string, filter: string, options: SubscribeOptions = {}): Subscription {
    if (this.#closed) throw new PlantdError(0, 'closed', 'the live connection was closed');
    const id = `s${this.#nextId++}`;
    const sub = new Subscription<LiveMessage>(site, filter, options.fromSequence ?? 0, () => this.#unsubscribe(id), options.onSubscribed);
    this.#add(id, sub as Subscription<LiveMessage | LogLine>, options.signal);
    return sub;
  }

  /**
   * The log lines of `site` that pass `options` (filter, source, level), from
   * the next one stored (or `fromSequence`), parsed, across reconnects —
   * resumed at the last sequence + 1 like a subscription, so no line the
   * stream holds is missed or repeated.
   */
  tail(site: string, options: TailOptions = {}): Subscription<LogLine> {
    if (this.#closed) throw new PlantdError(0, 'closed', 'the live connection was closed');
    const id = `t${this.#nextId++}`;
    const request: Frame = { op: 'tail', site };
    if (options.filter) request.filter = options.filter;
    if (options.source) request.source = options.source;
    if (options.level) request.level = options.level;
    const sub = new Subscription<LogLine>(site, options.filter ?? '', options.fromSequence ?? 0, () => this.#unsubscribe(id), options.onSubscribed, request);
    this.#add(id, sub as Subscription<LiveMessage | LogLine>, options.signal);
    return sub;
  }

  /**
   * Sends a command to `site`'s devices over the socket (the body of
   * `POST /v1/sites/{site}/commands`); resolves with where it was stored.
   * Sent at most once: if the socket is lost before the server answered,
   * it rejects with a `network` {@link PlantdError} (the command may or may
   * not be stored — check the pending commands before sending again).
   */
  publish(site: string, topic: string, payload: string, options: PublishOptions = {}): Promise<Sent> {
    if (this.#closed) return Promise.reject(new PlantdError(0, 'closed', 'the live connection was closed'));
    const id = `c${this.#nextId++}`;
    const frame: Frame = { op: 'command', id, site, topic, payload, qos: options.qos ?? 1, retain: options.retain ?? false };
    if (options.ttlSecs !== undefined) frame.ttl_secs = options.ttlSecs;
    if (options.contentType !== undefined) frame.content_type = options.contentType;
    return new Promise<Sent>((resolve, reject) => {
      const timeoutMs = options.timeoutMs ?? 10_000;
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new PlantdError(0, 'timeout', `command to ${topic}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      const pending: Pending = { frame, sent: false, resolve, reject, timer };
      this.#pending.set(id, pending);
      if (this.#authenticated && this.#socket?.readyState === 1) {
        pending.sent = true;
        this.#socket.send(JSON.stringify(frame));
      } else if (!this.#socket && this.#timer === undefined) {
        void this.#open();
      }
    });
  }

  /** Ends every command waiting for an answer with `error`. */
  #failPending(error: unknown, onlySent: boolean): void {
    for (const [id, p] of this.#pending) {
      if (onlySent && !p.sent) continue;
      clearTimeout(p.timer);
      this.#pending.delete(id);
      p.reject(error);
    }
  }

  #add(id: string, sub: Subscription<LiveMessage | LogLine>, signal?: AbortSignal): void {
    this.#subs.set(id, sub);
    sub.onTaken = () => this.#drained(id, sub);
    signal?.addEventListener('abort', () => sub.close(), { once: true });
    if (this.#socket?.readyState === 1) this.#sendSubscribe(id, sub);
    else if (!this.#socket && this.#timer === undefined) void this.#open();
  }

  /** Closes the socket and ends every subscription and state stream. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#failPending(new PlantdError(0, 'closed', 'the live connection was closed'), false);
    for (const sub of this.#subs.values()) sub.queue.end();
    this.#subs.clear();
    this.#setState(LinkState.Closed);
    for (const l of this.#listeners) l.end();
    this.#socket?.close(1000, 'closed by the client');
    this.#socket = null;
  }

  #setState(s: LinkState): void {
    if (this.#state === s) return;
    this.#state = s;
    for (const l of this.#listeners) l.push(s);
  }

  #unsubscribe(id: string): void {
    if (!this.#subs.delete(id)) return;
    if (this.#socket?.readyState === 1) this.#socket.send(JSON.stringify({ op: 'unsubscribe', id }));
  }

  /**
   * The reader of `sub` let `buffer` items pile up: unsubscribe it on the
   * server until the reader has read half (`#drained`). What it
   * has not yielded waits in the server's stream, from `resumeFrom`.
   */
  #hold(id: string, sub: Subscription<LiveMessage | LogLine>): void {
    sub.flow = 'held';
    if (this.#socket?.readyState === 1) this.#socket.send(JSON.stringify({ op: 'unsubscribe', id }));
  }

  /** The reader took an item: a held subscription down to half its buffer is subscribed again (with no socket, the next one does it). */
  #drained(id: string, sub: Subscription<LiveMessage | LogLine>): void {
    if (sub.flow !== 'held' || sub.queue.length > Math.floor(this.#options.buffer / 2) || this.#subs.get(id) !== sub) return;
    sub.flow = 'awaiting';
    if (this.#authenticated && this.#socket?.readyState === 1) this.#sendSubscribe(id, sub);
  }

  #sendSubscribe(id: string, sub: Subscription<LiveMessage | LogLine>): void {
    sub.flow = 'awaiting';
    const frame: Frame = { ...sub.request, id };
    if (sub.resumeFrom > 0) frame.from_sequence = sub.resumeFrom;
    else frame.sequenced = true;
    this.#socket?.send(JSON.stringify(frame));
  }

  async #open(): Promise<void> {
    if (this.#closed) return;
    this.#setState(this.#attempt === 0 ? LinkState.Connecting : LinkState.Reconnecting);
    let token: string;
    // Whether this socket's token was renewed just now: refused again, it
    // ends the connection instead of renewing in a loop.
    const fresh = this.#renew;
    try {
      token = this.#renew ? await this.#options.auth.refused() : await this.#options.auth.token();
      this.#renew = false;
    } catch (e) {
      if (e instanceof RefusedError) return this.#refuse(e.message);
      return this.#retry();
    }
    // No token in the URL (URLs end up in access logs): the first frame
    // carries it, and the socket is usable once the server answered
    // `authenticated` (docs/api.md, "Live data").
    const url = `${this.#options.url.replace(/^http/, 'ws')}/v1/ws`;
    let authenticated = false;
    let refused = false;
    const socket = new this.#options.WebSocket(url);
    this.#socket = socket;
    // One way out per socket. A failed handshake (a server stopping or
    // starting answers the upgrade with 502/503) fires `error`, and Node's
    // WebSocket (undici) may never fire `close` after it: waiting for
    // `close` alone left the connection reconnecting forever.
    let ended = false;
    const lost = (code: number, reason: string): void => {
      if (ended) return;
      ended = true;
      clearTimeout(deadline);
      if (this.#socket !== socket || this.#closed) return;
      this.#socket = null;
      this.#authenticated = false;
      // A command the server may or may not have stored is not sent twice.
      this.#failPending(new PlantdError(0, 'network', 'the socket was lost before the server answered the command'), true);
      if (refused && fresh) return this.#refuse('the server refused a token renewed just now');
      // Refused on the auth frame, or revoked or expired while open: a
      // renewed token on the next try — a session refreshes, client
      // credentials ask again (an administrator revoking a service
      // account's tokens does not deactivate it); a static token, a
      // logged-out session or a deactivated account cannot renew, which
      // ends every subscription with RefusedError.
      if (refused || (code === 1008 && (reason === 'token expired' || reason === 'token revoked'))) this.#renew = true;
      this.#retry();
    };
    // Closing a socket still connecting fires `error` again: the guard
    // comes first.
    const drop = (): void => {
      if (ended) return;
      lost(1006, '');
      try {
        socket.close();
      } catch {
        // Already closing.
      }
    };
    const deadline = setTimeout(() => {
      if (!authenticated) drop();
    }, this.#options.openTimeoutMs);
    socket.onopen = () => socket.send(JSON.stringify({ op: AUTH_OP, token }));
    socket.onmessage = (event: MessageEvent) => {
      if (typeof event.data !== 'string') return;
      let frame: Frame;
      try {
        frame = JSON.parse(event.data) as Frame;
      } catch {
        return;
      }
      if (authenticated) return this.#frame(frame);
      if (frame.op === AUTHENTICATED_OP) {
        authenticated = true;
        this.#authenticated = true;
        clearTimeout(deadline);
        this.#attempt = 0;
        this.#setState(LinkState.Connected);
        // A held subscription waits for its reader (#drained).
        for (const [id, sub] of this.#subs) if (sub.flow !== 'held') this.#sendSubscribe(id, sub);
        for (const p of this.#pending.values()) {
          if (p.sent) continue;
          p.sent = true;
          socket.send(JSON.stringify(p.frame));
        }
      } else if (frame.op === 'error') {
        // The token did not verify (invalid, expired, revoked): the
        // server closes with 1008 next; renew before the next attempt.
        refused = true;
      }
    };
    socket.onclose = (event: CloseEvent) => lost(event.code, event.reason);
    // A socket that failed (never a clean close: a close frame such as
    // "token revoked" comes without `error`).
    socket.onerror = drop;
  }

  #retry(): void {
    if (this.#closed) return;
    if (this.#subs.size === 0 && this.#pending.size === 0) {
      // Nothing to resume: the next subscribe opens a socket again.
      this.#setState(LinkState.Closed);
      return;
    }
    this.#setState(LinkState.Reconnecting);
    const cap = Math.min(this.#options.maxBackoffMs, this.#options.backoffMs * 2 ** this.#attempt);
    this.#attempt += 1;
    const delay = cap / 2 + Math.random() * (cap / 2);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#open();
    }, delay);
  }

  #refuse(message: string): void {
    this.#setState(LinkState.Refused);
    const e = new RefusedError(message);
    this.#failPending(e, false);
    for (const sub of this.#subs.values()) sub.queue.end(e);
    this.#subs.clear();
    this.#socket?.close(1000);
    this.#socket = null;
  }

  #frame(f: Frame): void {
    const id = typeof f.id === 'string' ? f.id : '';
    const command = this.#pending.get(id);
    if (command) {
      this.#pending.delete(id);
      clearTimeout(command.timer);
      if (f.op === 'sent') command.resolve({ stream: String(f.stream), sequence: Number(f.sequence) });
      else command.reject(new PlantdError(0, String(f.error ?? 'error'), String(f.message ?? 'the command was refused')));
      return;
    }
    const sub = this.#subs.get(id);
    if (!sub) return;
    switch (f.op) {
      case 'subscribed':
      case 'tailing':
        if (sub.flow === 'awaiting') sub.flow = 'flowing';
        if (typeof f.from_sequence === 'number' && sub.resumeFrom === 0) sub.resumeFrom = f.from_sequence;
        sub.onSubscribed();
        return;
      case 'message': {
        const sequence = typeof f.sequence === 'number' ? f.sequence : 0;
        // Never twice: a resume starts at `next`, but be strict anyway.
        if (sub.flow !== 'flowing' || (sequence !== 0 && sequence < sub.resumeFrom)) return;
        if (sub.queue.length >= this.#options.buffer && sequence !== 0) return this.#hold(id, sub);
        if (sub.queue.length >= this.#options.buffer) {
          sub.queue.end(new PlantdError(0, 'slow_consumer', `subscription ${sub.filter}: more than ${this.#options.buffer} messages unread`));
          this.#unsubscribe(id);
          return;
        }
        sub.resumeFrom = sequence + 1;
        (sub as Subscription<LiveMessage>).queue.push({
          site: String(f.site),
          topic: String(f.topic),
          payload: typeof f.payload === 'string' ? f.payload : undefined,
          payloadBase64: typeof f.payload_base64 === 'string' ? f.payload_base64 : undefined,
          headers: (f.headers as Record<string, string>) ?? {},
          sequence,
          time: typeof f.time === 'string' ? f.time : '',
        });
        return;
      }
      case 'log': {
        const record = f.record as LogLine | undefined;
        if (!record) return;
        const sequence = typeof record.sequence === 'number' ? record.sequence : 0;
        if (sub.flow !== 'flowing' || (sequence !== 0 && sequence < sub.resumeFrom)) return;
        if (sub.queue.length >= this.#options.buffer && sequence !== 0) return this.#hold(id, sub);
        if (sub.queue.length >= this.#options.buffer) {
          sub.queue.end(new PlantdError(0, 'slow_consumer', `tail of ${sub.site}: more than ${this.#options.buffer} lines unread`));
          this.#unsubscribe(id);
          return;
        }
        sub.resumeFrom = sequence + 1;
        (sub as Subscription<LogLine>).queue.push(record);
        return;
      }
      case 'error':
        // A held subscription's consumer is gone: its last words do not count.
        if (sub.flow === 'held') return;
        if (f.error === 'unavailable') {
          // The server's consumer failed: subscribe again from `resumeFrom`.
          setTimeout(() => {
            if (this.#subs.get(id) === sub && sub.flow !== 'held' && this.#socket?.readyState === 1) this.#sendSubscribe(id, sub);
          }, this.#options.backoffMs);
          return;
        }
        this.#subs.delete(id);
        sub.queue.end(new PlantdError(0, String(f.error), String(f.message)));
        return;
      default:
    }
  }
}
