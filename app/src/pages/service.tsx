// Calling a device's service on a site (POST /v1/sites/{site}/call/{topic}):
// the body goes to the device as an MQTT 5 request through the site's
// edge, and its answer is shown with its content type — or why there is
// none: no device serves the topic (503), nobody answered in time (504).
import { useState } from 'preact/hooks';
import { apiError, authFetch } from '../session';
import { ErrorNote, explain, useAction } from '../util';

/** The outcome of a call, as the panel shows it. */
type Outcome =
  | { kind: 'answer'; contentType: string; text: string; ms: number }
  | { kind: 'no_device'; message: string }
  | { kind: 'timeout'; ms: number }
  | { kind: 'failed'; message: string };

/** The call URL: each topic level escaped on its own (the route takes `/`). */
export function callUrl(site: string, topic: string, timeoutMs: number): string {
  const path = topic.split('/').map(encodeURIComponent).join('/');
  return `/v1/sites/${encodeURIComponent(site)}/call/${path}?timeout_ms=${timeoutMs}`;
}

/** The answer's body for a person: pretty JSON, text, or its size when binary. */
async function answerText(r: Response, contentType: string): Promise<string> {
  const bytes = new Uint8Array(await r.arrayBuffer());
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return `(${bytes.length} bytes of binary)`;
  }
  if (contentType.includes('json')) {
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      /* shown as sent */
    }
  }
  return text;
}

export function ServicePanel(props: { site: string }) {
  const [topic, setTopic] = useState('');
  const [body, setBody] = useState('');
  const [contentType, setContentType] = useState('application/json');
  const [timeout, setTimeoutMs] = useState('5000');
  const [outcome, setOutcome] = useState<Outcome | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [run, busy] = useAction(setError);
  const ms = Number(timeout);
  const msValid = Number.isInteger(ms) && ms > 0 && ms <= 60000;

  const call = () =>
    run(async () => {
      setOutcome(null);
      const started = performance.now();
      const r = await authFetch(callUrl(props.site, topic.trim(), ms), {
        method: 'POST',
        headers: { 'content-type': contentType },
        body,
      });
      if (r.ok) {
        const ct = r.headers.get('content-type') ?? 'application/octet-stream';
        setOutcome({ kind: 'answer', contentType: ct, text: await answerText(r, ct), ms: Math.round(performance.now() - started) });
        return;
      }
      const e = await apiError(r);
      if (r.status === 503) setOutcome({ kind: 'no_device', message: e.message });
      else if (r.status === 504) setOutcome({ kind: 'timeout', ms });
      else setOutcome({ kind: 'failed', message: explain(e) });
    });

  return (
    <section class="panel" aria-labelledby="svc-title">
      <h2 id="svc-title">Call a device service</h2>
      <form
        data-testid="service-form"
        onSubmit={(e) => {
          e.preventDefault();
          call();
        }}
      >
        <div class="row">
          <label class="grow">
            Service topic
            <input name="service" required value={topic} onInput={(e) => setTopic(e.currentTarget.value)} placeholder="pump/1/status" />
          </label>
          <label>
            Content type
            <select value={contentType} onChange={(e) => setContentType(e.currentTarget.value)}>
              <option value="application/json">application/json</option>
              <option value="text/plain">text/plain</option>
              <option value="application/octet-stream">application/octet-stream</option>
            </select>
          </label>
          <label>
            Timeout (ms)
            <input name="timeout" inputMode="numeric" value={timeout} onInput={(e) => setTimeoutMs(e.currentTarget.value)} aria-invalid={!msValid} />
          </label>
        </div>
        <label class="block">
          Request body
          <textarea name="request" rows={3} value={body} onInput={(e) => setBody(e.currentTarget.value)} placeholder='{"ask": "status"}' />
        </label>
        <div class="row">
          <button type="submit" disabled={busy || !topic.trim() || !msValid}>
            {busy ? 'Calling…' : 'Call'}
          </button>
        </div>
      </form>
      <ErrorNote error={error} />
      {outcome && (
        <div role="status" data-testid="service-outcome" data-outcome={outcome.kind}>
          {outcome.kind === 'answer' && (
            <>
              <p class="ok">
                Answered in {outcome.ms} ms (<code>{outcome.contentType}</code>):
              </p>
              <pre class="answer" data-testid="service-answer">
                {outcome.text}
              </pre>
            </>
          )}
          {outcome.kind === 'no_device' && <p class="error">No device serves this: {outcome.message}</p>}
          {outcome.kind === 'timeout' && <p class="error">Timed out: no answer within {outcome.ms} ms.</p>}
          {outcome.kind === 'failed' && <p class="error">{outcome.message}</p>}
        </div>
      )}
    </section>
  );
}
