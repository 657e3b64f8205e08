// Alarms: the organisation's alert instances (GET /v1/alerts), firing
// first, with acknowledgement and a note (POST /v1/alerts/{id}/ack) for
// callers holding alerts:write, each alert's transitions, and silences
// (which alerts they hold back, creating one from an alert's labels,
// expiring one).
import { useEffect, useState } from 'preact/hooks';
import { api, type Schemas } from '../api/client';
import { allows } from '../session';
import { ErrorNote, Modal, when } from '../util';
import { failure, silencing, SilenceForm, SilenceList, type Matcher, type Silence } from './silences';
import { Transitions } from './transitions';

/** An alert instance as `GET /v1/alerts` lists it (docs/api.md, "Alerts"). */
type Alert = Schemas['AlertView'];

const ORDER: Record<string, number> = { firing: 0, pending: 1, no_data: 2, inactive: 3 };

export function AlarmsPage() {
  const [alerts, setAlerts] = useState<Alert[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [acking, setAcking] = useState<Alert | null>(null);
  const [note, setNote] = useState('');
  const [state, setState] = useState('');
  const [silences, setSilences] = useState<Silence[]>([]);
  const [silencing_, setSilencing] = useState<Matcher[] | null>(null);
  const [history, setHistory] = useState<Alert | null>(null);
  const canAck = allows('alerts:write');

  async function loadSilences() {
    const r = await api.GET('/v1/silences');
    if (!r.response.ok) throw failure(r);
    setSilences(r.data?.silences ?? []);
  }

  async function load() {
    loadSilences().catch(setError);
    const r = await api.GET('/v1/alerts', { params: { query: state ? { state } : {} } });
    if (!r.response.ok) {
      setError(failure(r));
      return;
    }
    setError(null);
    const list = [...(r.data?.alerts ?? [])];
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
                <th scope="col">More</th>
              </tr>
            </thead>
            <tbody>
              {alerts.map((a) => {
                const held = silencing(silences, a.labels);
                return (
                  <tr key={a.id} data-alert={a.id} class={`sev-${a.severity} st-${a.state}`} data-silenced={held ? 'yes' : 'no'}>
                    <td>{a.severity}</td>
                    <td>
                      {a.state}
                      {held && (
                        <>
                          {' '}
                          <span class="badge" title={held.comment || held.id}>
                            silenced until {new Date(held.ends).toLocaleTimeString()}
                          </span>
                        </>
                      )}
                    </td>
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
                    <td class="actions">
                      <button type="button" onClick={() => setHistory(a)}>
                        Transitions ({a.transitions ?? '?'})
                      </button>
                      {canAck && !held && (
                        <button
                          type="button"
                          onClick={() =>
                            setSilencing([
                              { label: 'rule', op: '=', value: a.rule },
                              { label: 'site', op: '=', value: a.site },
                            ])
                          }
                        >
                          Silence…
                        </button>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      <section class="panel" aria-labelledby="silences-title">
        <h2 id="silences-title">Silences</h2>
        <p class="muted">While a silence matches an alert's labels, its records are kept but not notified.</p>
        {canAck && (
          <button type="button" onClick={() => setSilencing([])}>
            New silence…
          </button>
        )}
        <SilenceList silences={silences} canWrite={canAck} onChange={() => loadSilences().catch(setError)} />
      </section>
      <Modal open={silencing_ !== null} title="New silence" onClose={() => setSilencing(null)}>
        {silencing_ !== null && (
          <SilenceForm
            initial={silencing_}
            onDone={(s) => {
              setSilencing(null);
              if (s) loadSilences().catch(setError);
            }}
          />
        )}
      </Modal>
      <Modal open={history !== null} title="Alert transitions" onClose={() => setHistory(null)}>
        <p>
          <strong>{history?.rule}</strong> on {history?.site} <code>{history?.key}</code>
        </p>
        {history && <Transitions id={history.id} />}
        <div class="row">
          <button type="button" onClick={() => setHistory(null)} autoFocus>
            Close
          </button>
        </div>
      </Modal>
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
