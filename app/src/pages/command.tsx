// Sending a command to a site (POST /v1/sites/{site}/commands), after a
// confirmation; shown only to callers holding commands:<site>:send. A
// second after sending, the site's pending list says whether the edge
// delivered it, holds it (and why) or has not taken it (site offline);
// a pending command can be cancelled.
import { useEffect, useState } from 'preact/hooks';
import { api, type Schemas } from '../api/client';
import { Modal, ErrorNote } from '../util';
import { ApiError } from '../session';

type Pending = Schemas['PendingCommand'];

/** What a pending command's state means for the operator. */
function describe(p: Pending | null, ttl: string): string {
  if (!p) return 'Delivered: the edge handed it to the site\'s broker.';
  switch (p.state) {
    case 'queued':
      return `Queued — the site's edge has not taken it (site offline?). It is delivered when the site connects${ttl ? `, if within ${ttl} s` : ''}.`;
    case 'held':
      if (p.reason === 'no_subscriber') return 'Held by the edge: no device subscribes to this topic yet.';
      if (p.reason === 'behind') return 'Held by the edge behind an earlier command to this topic.';
      if (p.reason === 'refused') return "Held by the edge: every subscriber's queue is full.";
      return 'Held by the edge.';
    case 'cancel_requested':
      return 'Cancel requested: the edge drops it when it comes back.';
    default:
      return String(p.state);
  }
}

export function CommandPanel(props: { site: string; topic: string }) {
  const [topic, setTopic] = useState(props.topic);
  const [payload, setPayload] = useState('');
  const [ttl, setTtl] = useState('60');
  const [confirming, setConfirming] = useState(false);
  const [result, setResult] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [sent, setSent] = useState<number | null>(null);
  const [delivery, setDelivery] = useState<{ pending: Pending | null; cancelled?: boolean } | null>(null);
  useEffect(() => setTopic((t) => t || props.topic), [props.topic]);

  const ttlSecs = Number(ttl);
  const ttlValid = ttl.trim() === '' || (Number.isInteger(ttlSecs) && ttlSecs > 0);

  async function check(id: number) {
    const r = await api.GET('/v1/sites/{site}/commands', {
      params: { path: { site: props.site }, query: { state: 'pending', limit: 1000 } },
    });
    if (!r.response.ok || !r.data) return;
    setDelivery({ pending: r.data.commands.find((c) => c.id === id) ?? null });
  }

  async function cancel(id: number) {
    const r = await api.DELETE('/v1/sites/{site}/commands/{id}', { params: { path: { site: props.site, id } } });
    if (!r.response.ok) {
      const e = r.error as { error?: string; message?: string } | undefined;
      setError(new ApiError(r.response.status, e?.error ?? 'error', e?.message ?? r.response.statusText));
      await check(id);
      return;
    }
    if (r.data?.state === 'cancelled') setDelivery({ pending: null, cancelled: true });
    else await check(id);
  }

  async function send() {
    setConfirming(false);
    setError(null);
    setResult(null);
    setSent(null);
    setDelivery(null);
    const r = await api.POST('/v1/sites/{site}/commands', {
      params: { path: { site: props.site } },
      body: { topic, payload, qos: 1, ...(ttl.trim() ? { ttl_secs: ttlSecs } : {}) },
    });
    if (r.response.ok && r.data) {
      const id = r.data.sequence;
      setResult(`Sent: command ${id}.`);
      setSent(id);
      setTimeout(() => check(id).catch(setError), 1000);
    } else {
      const e = r.error as { error?: string; message?: string } | undefined;
      setError(new ApiError(r.response.status, e?.error ?? 'error', e?.message ?? r.response.statusText));
    }
  }

  return (
    <section class="panel" aria-labelledby="cmd-title">
      <h2 id="cmd-title">Send a command</h2>
      <form
        class="row"
        data-testid="command-form"
        onSubmit={(e) => {
          e.preventDefault();
          setConfirming(true);
        }}
      >
        <label>
          Topic
          <input name="topic" required value={topic} onInput={(e) => setTopic(e.currentTarget.value)} placeholder="line1/valve/set" />
        </label>
        <label>
          Payload
          <input name="payload" value={payload} onInput={(e) => setPayload(e.currentTarget.value)} placeholder="open" />
        </label>
        <label>
          TTL (s)
          <input name="ttl" inputMode="numeric" value={ttl} onInput={(e) => setTtl(e.currentTarget.value)} aria-invalid={!ttlValid} />
        </label>
        <button type="submit" disabled={!topic.trim() || !ttlValid}>
          Send…
        </button>
      </form>
      {result && (
        <p class="ok" role="status" data-testid="command-result">
          {result}
        </p>
      )}
      {sent !== null && delivery && (
        <p role="status" data-testid="command-delivery" data-state={delivery.cancelled ? 'cancelled' : (delivery.pending?.state ?? 'delivered')}>
          {delivery.cancelled ? 'Cancelled: it will never be delivered.' : describe(delivery.pending, ttl.trim())}{' '}
          <button type="button" onClick={() => check(sent).catch(setError)}>
            Check again
          </button>{' '}
          {!delivery.cancelled && delivery.pending && delivery.pending.state !== 'cancel_requested' && (
            <button type="button" onClick={() => cancel(sent).catch(setError)}>
              Cancel it
            </button>
          )}
        </p>
      )}
      <ErrorNote error={error} />
      <Modal open={confirming} title="Send this command?" onClose={() => setConfirming(false)}>
        <p>
          To site <strong>{props.site}</strong>, topic <code>{topic}</code>: <code>{payload || '(empty)'}</code>
          {ttl.trim() ? `, dropped after ${ttlSecs} s if undelivered` : ''}.
        </p>
        <div class="row">
          <button type="button" class="primary" onClick={send} autoFocus>
            Send command
          </button>
          <button type="button" onClick={() => setConfirming(false)}>
            Cancel
          </button>
        </div>
      </Modal>
    </section>
  );
}
