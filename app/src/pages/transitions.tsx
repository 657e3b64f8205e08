// One alert's history (GET /v1/alerts/{id}/history): its records in
// PLANTD_ALERTS, oldest first — each transition (from → to, the value
// judged, the summary), acknowledgement and repeat, and whether a silence
// held its notification back.
import { useEffect, useState } from 'preact/hooks';
import { api, type Schemas } from '../api/client';
import { ErrorNote, when } from '../util';
import { failure } from './silences';

/** An alert record (functions/alerts/src/record.rs). */
export type AlertRecord = Schemas['AlertRecord'];

export function Transitions(props: { id: string }) {
  const [records, setRecords] = useState<AlertRecord[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    (async () => {
      const r = await api.GET('/v1/alerts/{id}/history', { params: { path: { id: props.id } } });
      if (!r.response.ok) throw failure(r);
      setRecords(r.data?.records ?? []);
    })().catch(setError);
  }, [props.id]);
  return (
    <>
      <ErrorNote error={error} />
      {records && !records.length && <p class="muted">No records yet.</p>}
      {records && !!records.length && (
        <ol class="transitions" data-testid="transitions">
          {records.map((r) => (
            <li key={`${r.id}-${r.kind}-${r.n}-${r.at}`} data-kind={r.kind} data-to={r.to} data-silenced={r.silenced ? 'yes' : 'no'}>
              <time>{when(r.at)}</time>{' '}
              {r.kind === 'transition' ? (
                <strong>
                  {r.from} → {r.to}
                </strong>
              ) : r.kind === 'ack' ? (
                <strong>acknowledged</strong>
              ) : (
                <strong>repeated</strong>
              )}
              {r.value !== undefined && r.value !== null && <> at value {r.value}</>}
              {r.kind === 'ack' && r.ack && (
                <>
                  {' '}
                  by {r.ack.by}
                  {r.ack.note ? `: “${r.ack.note}”` : ''}
                </>
              )}{' '}
              {r.silenced && <span class="badge">silenced — not notified</span>}
              {r.summary && <div class="muted">{r.summary}</div>}
            </li>
          ))}
        </ol>
      )}
    </>
  );
}
