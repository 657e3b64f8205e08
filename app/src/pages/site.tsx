// One site: the topic tree, the live value grid (newest stored values,
// then every live message over /v1/ws — no polling), a trend of the chosen
// topic, and commands for those allowed to send them.
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { api } from '../api/client';
import { allows } from '../session';
import { linkClick } from '../router';
import { payloadText, subscribe } from '../live';
import { age, freshness, numeric, topicTree, under, type TopicNode } from '../topics';
import { Trend, type Point } from '../trend';
import { CommandPanel } from './command';
import { ServicePanel } from './service';
import { ErrorNote } from '../util';

/** The newest value of a topic. */
interface Cell {
  value: string;
  at: number;
  qos?: string;
}

/** Most stored messages read to seed the grid. */
const SEED = 1000;

function Tree(props: { node: TopicNode; selected: string; onSelect: (p: string) => void }) {
  const kids = [...props.node.children.values()].sort((a, b) => a.name.localeCompare(b.name));
  if (!kids.length) return null;
  return (
    <ul>
      {kids.map((k) => (
        <li key={k.path}>
          <button
            type="button"
            class={props.selected === k.path ? 'sel' : ''}
            aria-pressed={props.selected === k.path}
            title={`only topics under ${k.path}`}
            onClick={() => props.onSelect(props.selected === k.path ? '' : k.path)}
          >
            {k.name || '(empty)'} <span class="muted">{k.count}</span>
          </button>
          <Tree node={k} selected={props.selected} onSelect={props.onSelect} />
        </li>
      ))}
    </ul>
  );
}

export function SitePage({ site }: { site: string }) {
  const cells = useRef(new Map<string, Cell>());
  const [version, setVersion] = useState(0);
  const frame = useRef(0);
  const [now, setNow] = useState(Date.now());
  const [error, setError] = useState<unknown>(null);
  const [liveError, setLiveError] = useState<string | null>(null);
  const [subscribed, setSubscribed] = useState(false);
  const [prefix, setPrefix] = useState('');
  const [search, setSearch] = useState('');
  const [chosen, setChosen] = useState<string | null>(new URLSearchParams(location.search).get('topic'));
  const [points, setPoints] = useState<Point[]>([]);
  const chosenRef = useRef(chosen);
  chosenRef.current = chosen;

  // Redraw at most once a frame however fast messages come.
  const touch = () => {
    if (!frame.current) {
      frame.current = requestAnimationFrame(() => {
        frame.current = 0;
        setVersion((v) => v + 1);
      });
    }
  };

  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, []);

  useEffect(() => {
    let live = true;
    // Live first, so nothing published while the seed loads is missed;
    // a seeded value never replaces a newer live one.
    const unsubscribe = subscribe(
      site,
      '#',
      (m) => {
        const at = Date.now();
        const value = payloadText(m);
        cells.current.set(m.topic, { value, at, qos: m.headers?.['Plantd-Qos'] });
        if (m.topic === chosenRef.current) {
          const v = numeric(m.payload);
          if (v !== null) setPoints((p) => p.concat({ t: at, v }));
        }
        touch();
      },
      (message) => setLiveError(message),
      () => {
        setLiveError(null);
        setSubscribed(true);
      },
    );
    (async () => {
      const r = await api.GET('/v1/sites/{site}/history', {
        params: { path: { site }, query: { filter: '#', limit: SEED, order: 'desc' } },
      });
      if (!live) return;
      if (!r.response.ok) {
        setError(new Error((r.error as { message?: string } | undefined)?.message ?? r.response.statusText));
        return;
      }
      for (const m of r.data?.messages ?? []) {
        if (cells.current.has(m.topic)) continue;
        const value = m.value !== undefined && m.value !== null ? (typeof m.value === 'string' ? m.value : JSON.stringify(m.value)) : m.value_base64 ? '(binary)' : '';
        cells.current.set(m.topic, { value, at: new Date(m.time).getTime(), qos: String(m.qos) });
      }
      touch();
    })().catch((e) => live && setError(e));
    return () => {
      live = false;
      unsubscribe();
      cancelAnimationFrame(frame.current);
      frame.current = 0;
    };
  }, [site]);

  const topics = useMemo(() => [...cells.current.keys()].sort(), [version]);
  const tree = useMemo(() => topicTree(topics), [topics]);
  const needle = search.trim().toLowerCase();
  const shown = topics.filter((t) => under(t, prefix) && (!needle || t.toLowerCase().includes(needle)));

  const choose = (topic: string) => {
    setChosen(topic);
    setPoints([]);
    history.replaceState(null, '', `/sites/${encodeURIComponent(site)}?topic=${encodeURIComponent(topic)}`);
  };

  return (
    <section class="site">
      <p class="crumbs">
        <a href="/" onClick={linkClick}>
          Sites
        </a>{' '}
        / <strong>{site}</strong>
      </p>
      <h1>Site {site}</h1>
      <ErrorNote error={error} />
      {liveError && (
        <p class="error" role="alert">
          Live data: {liveError}
        </p>
      )}
      <div class="site-grid">
        <nav class="tree" aria-label="topic tree">
          <h2>Topics</h2>
          <button type="button" class={prefix === '' ? 'sel' : ''} aria-pressed={prefix === ''} onClick={() => setPrefix('')}>
            All <span class="muted">{topics.length}</span>
          </button>
          <div>
            <Tree node={tree} selected={prefix} onSelect={setPrefix} />
          </div>
        </nav>
        <div class="values">
          <h2>Live values</h2>
          <label class="search">
            Search <input type="search" value={search} onInput={(e) => setSearch(e.currentTarget.value)} placeholder="topic contains…" />
          </label>
          <div class="scroll">
            <table class="grid" data-testid="grid" data-live={subscribed ? 'subscribed' : 'waiting'}>
              <thead>
                <tr>
                  <th scope="col">Topic</th>
                  <th scope="col">Value</th>
                  <th scope="col">Age</th>
                  <th scope="col">Quality</th>
                </tr>
              </thead>
              <tbody>
                {shown.map((t) => {
                  const c = cells.current.get(t);
                  if (!c) return null;
                  const f = freshness(c.at, now);
                  return (
                    <tr key={t} data-topic={t} class={`${f} ${chosen === t ? 'sel' : ''}`}>
                      <th scope="row">
                        <button type="button" class="linklike" onClick={() => choose(t)} title="show its trend">
                          {t}
                        </button>
                      </th>
                      <td class="value">{c.value}</td>
                      <td class="age">{age(now - c.at)}</td>
                      <td class="quality">{f}</td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
            {!shown.length && <p class="muted">No values yet: nothing stored or published on this site{prefix || needle ? ' under this filter' : ''}.</p>}
          </div>
        </div>
      </div>
      {chosen && <Trend site={site} topic={chosen} live={points} />}
      {allows(`commands:${site}:send`) ? (
        <CommandPanel site={site} topic={chosen ?? ''} />
      ) : (
        <p class="muted" data-testid="no-commands">
          Your roles cannot send commands to this site (that takes <code>commands:{site}:send</code>).
        </p>
      )}
      {allows(`services:${site}:call`) ? (
        <ServicePanel site={site} />
      ) : (
        <p class="muted" data-testid="no-services">
          Your roles cannot call services on this site (that takes <code>services:{site}:call</code>).
        </p>
      )}
    </section>
  );
}
