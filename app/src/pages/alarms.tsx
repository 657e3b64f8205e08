// Alarms: the organisation's alert instances (GET /v1/alerts), firing
// first, with acknowledgement and a note (POST /v1/alerts/{id}/ack) for
// callers holding alerts:write.
import { useEffect, useState } from 'preact/hooks';
import { api } from '../api/client';
import { allows, ApiError } from '../session';
import { ErrorNote, Modal, when } from '../util';

/**
 * An alert instance as `GET /v1/alerts` lists it (docs/api.md, "Alerts"):
 * the document gives this answer no schema yet, so it is written here.
 */
interface Alert {
  id: string;
  rule: string;
  site: string;
  key: string;
  severity: string;
  state: string;
  since?: string | number;
  value?: number | null;
  ack?: { by: string; note?: string } | null;
}

const ORDER: Record<string, number> = { firing: 0, pending: 1, no_data: 2, inactive: 3 };

function failure(r: { response: Response; error?: unknown }): ApiError {
  const e = r.error as { error?: string; message?: string } | undefined;
  return new ApiError(r.response.status, e?.error ?? 'error', e?.message ?? r.response.statusText);
}

export function AlarmsPage() {
  const [alerts, setAlerts] = useState<Alert[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [acking, setAcking] = useState<Alert | null>(null);
  const [note, setNote] = useState('');
  const [state, setState] = useState('');
  const canAck = allows('alerts:write');

  async function load() {
    const r = await api.GET('/v1/alerts', { params: { query: state ? { state } : {} } });
    if (!r.response.ok) {
      setError(failure(r));
      return;
    }
    setError(null);
    const list = [...((r.data as { alerts?: Alert[] } | undefined)?.alerts ?? [])];
    list.sort((a, b) => (ORDER[a.state] ?? 9) - (ORDER[b.state] ?? 9) || a.id.localeCompare(b.id));
    setAlerts(list);
  }
  useEffect(() => {
    load().catch(setError);
  }, [state]);

  async function ack() {
    const a = acking;
    setAcking(null);
    if (!a) return;
    const r = await api.POST('/v1/alerts/{id}/ack', { params: { path: { id: a.id } }, body: { note } });
    if (!r.response.ok) setError(failure(r));
    setNote('');
    await load();
  }

  return (
    <section>
      <h1>Alarms</h1>
      <label>
        State{' '}
        <select value={state} onChange={(e) => setState(e.currentTarget.value)}>
          <option value="">all</option>
          <option value="firing">firing</option>
          <option value="pending">pending</option>
          <option value="no_data">no data</option>
          <option value="inactive">inactive</option>
        </select>
      </label>
      <ErrorNote error={error} />
      {alerts?.length === 0 && <p>No alerts.</p>}
      {!!alerts?.length && (
        <div class="scroll">
          <table class="grid" data-testid="alarms">
            <thead>
              <tr>
                <th scope="col">Severity</th>
                <th scope="col">State</th>
                <th scope="col">Rule</th>
                <th scope="col">Site</th>
                <th scope="col">Key</th>
                <th scope="col">Since</th>
                <th scope="col">Value</th>
                <th scope="col">Ack</th>
              </tr>
            </thead>
            <tbody>
              {alerts.map((a) => (
                <tr key={a.id} data-alert={a.id} class={`sev-${a.severity} st-${a.state}`}>
                  <td>{a.severity}</td>
                  <td>{a.state}</td>
                  <th scope="row">{a.rule}</th>
                  <td>{a.site}</td>
                  <td>
                    <code>{a.key}</code>
                  </td>
                  <td>{when(a.since)}</td>
                  <td>{a.value ?? '—'}</td>
                  <td>
                    {a.ack ? (
                      <span title={a.ack.note ?? ''}>acked by {a.ack.by}</span>
                    ) : a.state === 'firing' && canAck ? (
                      <button type="button" onClick={() => setAcking(a)}>
                        Acknowledge…
                      </button>
                    ) : (
                      '—'
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Modal open={acking !== null} title="Acknowledge alert" onClose={() => setAcking(null)}>
        <p>
          <strong>{acking?.rule}</strong> on {acking?.site} <code>{acking?.key}</code>
        </p>
        <label>
          Note
          <input value={note} onInput={(e) => setNote(e.currentTarget.value)} placeholder="who is on it, what is done" />
        </label>
        <div class="row">
          <button type="button" class="primary" onClick={ack}>
            Acknowledge
          </button>
          <button type="button" onClick={() => setAcking(null)}>
            Cancel
          </button>
        </div>
      </Modal>
    </section>
  );
}
