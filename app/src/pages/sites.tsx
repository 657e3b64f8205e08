// The organisation's sites with their health from
// `GET /v1/sites/{site}/health` (docs/api.md): the edge connected or not
// (and since when it was last heard from), the uplink's state and lag, the
// journal backlog, the time since a device last published, the clients,
// and the alerts firing. Health is a status the edge puts every few
// seconds, not a live value: it is fetched again every 5 s, and the ages
// in between advance with one 1 s timer.
import { useEffect, useState } from 'preact/hooks';
import { api, type Schemas } from '../api/client';
import { getJson } from '../session';
import { linkClick } from '../router';
import { age } from '../topics';
import { ErrorNote } from '../util';

interface SiteRecord {
  id: string;
  org: string;
  name: string;
  description?: string;
  labels?: Record<string, string>;
}

type Health = Schemas['SiteHealth'];

/** A site's health as last fetched, or why it could not be. */
interface Fetched {
  /** When it was fetched (ms, this browser's clock): ages advance from it. */
  at: number;
  health?: Health;
  error?: string;
}

/** How often health is fetched again. */
export const HEALTH_EVERY_MS = 5000;

/** Bytes in words: `512 B`, `3.2 KB`, `41 MB`. */
function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

async function fetchHealth(site: string): Promise<Fetched> {
  const at = Date.now();
  try {
    const r = await api.GET('/v1/sites/{site}/health', { params: { path: { site } } });
    if (r.response.ok && r.data) return { at, health: r.data };
    const message = (r.error as { message?: string } | undefined)?.message ?? r.response.statusText;
    return { at, error: r.response.status === 403 ? `not allowed: ${message}` : message };
  } catch (e) {
    return { at, error: e instanceof Error ? e.message : String(e) };
  }
}

/** The health lines of one site card. */
function HealthList({ f, now }: { f: Fetched | undefined; now: number }) {
  if (!f) return <p class="muted">Loading health…</p>;
  if (!f.health) return <p class="muted" data-testid="health-error">Health not available: {f.error}</p>;
  const h = f.health;
  const since = now - f.at;
  const later = (ms: number | null | undefined) => (ms === null || ms === undefined ? null : ms + since);
  const e = h.edge;
  const seen = later(h.status_age_ms);
  const lastMessage = later(e?.last_message_age_ms);
  const down = e && e.uplink.state !== 'up' && e.uplink.state !== 'starting';
  return (
    <dl>
      <dt>Edge</dt>
      <dd data-testid="edge" data-connected={h.connected ? 'yes' : 'no'}>
        {h.connected ? (
          <span class="ok" title={`status ${age(seen ?? 0)} ago`}>
            ● connected
          </span>
        ) : (
          <span class="bad">○ not connected</span>
        )}{' '}
        {!h.connected && <span class="muted">{seen === null ? 'never heard from' : `last seen ${age(seen)} ago`}</span>}
      </dd>
      {e && (
        <>
          <dt>Uplink</dt>
          <dd data-testid="uplink" class={down ? 'bad' : ''} title={e.uplink.last_error ?? ''}>
            {e.uplink.state} <span class="muted">since {new Date(e.uplink.since).toLocaleTimeString()}</span>
          </dd>
          <dt>Uplink lag</dt>
          <dd data-testid="lag" class={e.backlog.lag_ms > 60_000 ? 'bad' : ''}>
            {e.backlog.messages === 0 ? 'none' : age(e.backlog.lag_ms)}
          </dd>
          <dt>Backlog</dt>
          <dd data-testid="backlog" class={e.backlog.blocked ? 'bad' : ''}>
            {e.backlog.messages} {e.backlog.messages === 1 ? 'message' : 'messages'}{' '}
            <span class="muted">
              (journal {bytes(e.backlog.journal_bytes)}
              {e.backlog.journal_max_bytes ? ` of ${bytes(e.backlog.journal_max_bytes)}` : ''}
              {e.backlog.blocked ? ', full: publishers held back' : ''})
            </span>
          </dd>
          <dt>Last message</dt>
          <dd data-testid="last-message">{lastMessage === null ? 'none since the edge started' : `${age(lastMessage)} ago`}</dd>
          <dt>Clients</dt>
          <dd data-testid="clients">{e.clients}</dd>
        </>
      )}
      <dt>Alerts firing</dt>
      <dd data-testid="firing" class={h.alerts?.firing ? 'bad' : ''}>
        {h.alerts ? (
          h.alerts.firing ? (
            <a href="/alarms" onClick={linkClick} title={h.alerts.list.map((a) => `${a.rule} (${a.severity ?? 'no severity'})`).join('\n')}>
              {h.alerts.firing}
              {h.alerts.critical ? ` (${h.alerts.critical} critical)` : ''}
            </a>
          ) : (
            0
          )
        ) : (
          <span class="muted">not available{h.alerts_note ? `: ${h.alerts_note}` : ''}</span>
        )}
      </dd>
    </dl>
  );
}

export function SitesPage() {
  const [sites, setSites] = useState<SiteRecord[] | null>(null);
  const [health, setHealth] = useState<Record<string, Fetched>>({});
  const [error, setError] = useState<unknown>(null);
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, []);
  useEffect(() => {
    let live = true;
    getJson<SiteRecord[]>('/v1/sites')
      .then((list) => live && setSites(list))
      .catch((e) => live && setError(e));
    return () => {
      live = false;
    };
  }, []);
  useEffect(() => {
    if (!sites?.length) return;
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    // One round at a time: the next starts 5 s after the last one ended,
    // so a slow proxy is never asked twice at once.
    const round = async () => {
      const entries = await Promise.all(sites.map(async (s) => [s.id, await fetchHealth(s.id)] as const));
      if (!live) return;
      setHealth(Object.fromEntries(entries));
      setNow(Date.now());
      timer = setTimeout(round, HEALTH_EVERY_MS);
    };
    round();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [sites]);
  return (
    <section>
      <h1>Sites</h1>
      <ErrorNote error={error} />
      {sites === null && !error && <p>Loading…</p>}
      {sites?.length === 0 && <p>No sites yet. Register one with <code>plantd sites create</code>.</p>}
      <ul class="cards" aria-label="sites">
        {sites?.map((s) => (
          <li key={s.id} class="card" data-site={s.id}>
            <a href={`/sites/${encodeURIComponent(s.id)}`} onClick={linkClick}>
              <strong>{s.name || s.id}</strong> <code>{s.id}</code>
            </a>
            {s.description && <p class="muted">{s.description}</p>}
            <HealthList f={health[s.id]} now={now} />
          </li>
        ))}
      </ul>
    </section>
  );
}
