// Sending a command to a site (POST /v1/sites/{site}/commands), after a
// confirmation; shown only to callers holding commands:<site>:send.
import { useEffect, useState } from 'preact/hooks';
import { api } from '../api/client';
import { Modal, ErrorNote } from '../util';
import { ApiError } from '../session';

export function CommandPanel(props: { site: string; topic: string }) {
  const [topic, setTopic] = useState(props.topic);
  const [payload, setPayload] = useState('');
  const [ttl, setTtl] = useState('60');
  const [confirming, setConfirming] = useState(false);
  const [result, setResult] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => setTopic((t) => t || props.topic), [props.topic]);

  const ttlSecs = Number(ttl);
  const ttlValid = ttl.trim() === '' || (Number.isInteger(ttlSecs) && ttlSecs > 0);

  async function send() {
    setConfirming(false);
    setError(null);
    setResult(null);
    const r = await api.POST('/v1/sites/{site}/commands', {
      params: { path: { site: props.site } },
      body: { topic, payload, qos: 1, ...(ttl.trim() ? { ttl_secs: ttlSecs } : {}) },
    });
    if (r.response.ok && r.data) {
      setResult(`Sent: command ${r.data.sequence}. The edge delivers it while the site is connected${ttl.trim() ? ` and drops it after ${ttlSecs} s` : ''}.`);
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
