// Logs: query the log index (GET /v1/logs) by site, source, level and the
// filter language of docs/api.md, newest first; or follow the lines live
// (the `tail` operation of /v1/ws).
import { useEffect, useState } from 'preact/hooks';
import { tail } from '../live';
import { api, type Schemas } from '../api/client';
import { ApiError } from '../session';
import { ErrorNote, when } from '../util';

type LogLine = Schemas['LogLine'];

/** Most lines the live tail keeps on screen. */
const TAIL_KEEP = 500;

const LEVELS = ['', 'trace', 'debug', 'info', 'warn', 'error'];

export function LogsPage() {
  const [site, setSite] = useState('local');
  const [source, setSource] = useState('');
  const [level, setLevel] = useState('');
  const [filter, setFilter] = useState('');
  const [records, setRecords] = useState<LogLine[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [following, setFollowing] = useState(false);
  const [tailing, setTailing] = useState(false);
  // Queried and tailed lines alike carry their sequence in PLANTD_LOGS.
  const keyOf = (l: LogLine) => `${l.stream}:${l.sequence}`;

  useEffect(() => {
    if (!following) return;
    setError(null);
    setRecords([]);
    const stop = tail(
      { site: site.trim(), filter: filter.trim(), source: source.trim(), level },
      (record) => setRecords((r) => [record, ...(r ?? [])].slice(0, TAIL_KEEP)),
      (message) => {
        setError(new Error(`Live tail: ${message}`));
        setFollowing(false);
      },
      () => setTailing(true),
    );
    return () => {
      stop();
      setTailing(false);
    };
  }, [following]);

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
        <button type="submit" disabled={busy || following}>
          Query
        </button>
        <button type="button" aria-pressed={following} onClick={() => setFollowing((f) => !f)}>
          {following ? 'Stop following' : 'Follow live'}
        </button>
        {tailing && (
          <span class="ok" role="status" data-testid="tailing">
            following new lines…
          </span>
        )}
      </form>
      <ErrorNote error={error} />
      {records?.length === 0 && !following && <p>No matching lines.</p>}
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
                <tr key={keyOf(l)} class={`lvl-${l.level}`}>
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
