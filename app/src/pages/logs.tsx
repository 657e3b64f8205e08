// Logs: query the log index (GET /v1/logs) by site, source, level and the
// filter language of docs/api.md; newest first.
import { useState } from 'preact/hooks';
import { api, type Schemas } from '../api/client';
import { ApiError } from '../session';
import { ErrorNote, when } from '../util';

type LogLine = Schemas['LogLine'];

const LEVELS = ['', 'trace', 'debug', 'info', 'warn', 'error'];

export function LogsPage() {
  const [site, setSite] = useState('local');
  const [source, setSource] = useState('');
  const [level, setLevel] = useState('');
  const [filter, setFilter] = useState('');
  const [records, setRecords] = useState<LogLine[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function query(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const q: Record<string, string | number> = { limit: 200 };
      if (site.trim()) q.site = site.trim();
      if (source.trim()) q.source = source.trim();
      if (level) q.level = level;
      if (filter.trim()) q.filter = filter.trim();
      const r = await api.GET('/v1/logs', { params: { query: q as never } });
      if (!r.response.ok) {
        const b = r.error as { error?: string; message?: string } | undefined;
        throw new ApiError(r.response.status, b?.error ?? 'error', b?.message ?? r.response.statusText);
      }
      setRecords(r.data?.records ?? []);
    } catch (err) {
      setError(err);
      setRecords(null);
    } finally {
      setBusy(false);
    }
  }

  return (
    <section>
      <h1>Logs</h1>
      <form class="row" onSubmit={query}>
        <label>
          Site <input value={site} onInput={(e) => setSite(e.currentTarget.value)} />
        </label>
        <label>
          Source <input value={source} onInput={(e) => setSource(e.currentTarget.value)} placeholder="line1/*" />
        </label>
        <label>
          Level{' '}
          <select value={level} onChange={(e) => setLevel(e.currentTarget.value)}>
            {LEVELS.map((l) => (
              <option key={l} value={l}>
                {l || 'any'}
              </option>
            ))}
          </select>
        </label>
        <label class="grow">
          Filter <input value={filter} onInput={(e) => setFilter(e.currentTarget.value)} placeholder='|= "overheat"' />
        </label>
        <button type="submit" disabled={busy}>
          Query
        </button>
      </form>
      <ErrorNote error={error} />
      {records?.length === 0 && <p>No matching lines.</p>}
      {!!records?.length && (
        <div class="scroll">
          <table class="grid logs" data-testid="logs">
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Level</th>
                <th scope="col">Source</th>
                <th scope="col">Message</th>
              </tr>
            </thead>
            <tbody>
              {records.map((l) => (
                <tr key={`${l.stream}:${l.sequence}`} class={`lvl-${l.level}`}>
                  <td>{when(l.time)}</td>
                  <td>{l.level}</td>
                  <td>
                    <code>{l.source}</code>
                  </td>
                  <td>{l.message}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
