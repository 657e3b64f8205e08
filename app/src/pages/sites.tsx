// The organisation's sites with what the API tells about their health
// today: the newest stored message (how long ago), and alerts firing.
import { useEffect, useState } from 'preact/hooks';
import { api } from '../api/client';
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

interface Health {
  lastMs: number | null;
  firing: number | null;
}

export function SitesPage() {
  const [sites, setSites] = useState<SiteRecord[] | null>(null);
  const [health, setHealth] = useState<Record<string, Health>>({});
  const [error, setError] = useState<unknown>(null);
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, []);
  useEffect(() => {
    let live = true;
    (async () => {
      try {
        const list = await getJson<SiteRecord[]>('/v1/sites');
        if (!live) return;
        setSites(list);
        const alerts = await api.GET('/v1/alerts', { params: { query: { state: 'firing' } } });
        const firing: Record<string, number> = {};
        const available = alerts.response.ok;
        for (const a of (alerts.data as { alerts?: { site: string }[] } | undefined)?.alerts ?? []) firing[a.site] = (firing[a.site] ?? 0) + 1;
        const entries = await Promise.all(
          list.map(async (s) => {
            const h = await api.GET('/v1/sites/{site}/history', {
              params: { path: { site: s.id }, query: { filter: '#', limit: 1 } },
            });
            const newest = h.data?.messages?.[0];
            const lastMs = newest ? new Date(newest.time).getTime() : null;
            return [s.id, { lastMs, firing: available ? (firing[s.id] ?? 0) : null }] as const;
          }),
        );
        if (live) setHealth(Object.fromEntries(entries));
      } catch (e) {
        if (live) setError(e);
      }
    })();
    return () => {
      live = false;
    };
  }, []);
  return (
    <section>
      <h1>Sites</h1>
      <ErrorNote error={error} />
      {sites === null && !error && <p>Loading…</p>}
      {sites?.length === 0 && <p>No sites yet. Register one with <code>plantd sites create</code>.</p>}
      <ul class="cards" aria-label="sites">
        {sites?.map((s) => {
          const h = health[s.id];
          return (
            <li key={s.id} class="card" data-site={s.id}>
              <a href={`/sites/${encodeURIComponent(s.id)}`} onClick={linkClick}>
                <strong>{s.name || s.id}</strong> <code>{s.id}</code>
              </a>
              {s.description && <p class="muted">{s.description}</p>}
              <dl>
                <dt>Last message</dt>
                <dd>{h === undefined ? '…' : h.lastMs === null ? 'none stored' : `${age(now - h.lastMs)} ago`}</dd>
                <dt>Alerts firing</dt>
                <dd class={h?.firing ? 'bad' : ''}>{h === undefined ? '…' : h.firing === null ? 'not available' : h.firing}</dd>
              </dl>
            </li>
          );
        })}
      </ul>
    </section>
  );
}
