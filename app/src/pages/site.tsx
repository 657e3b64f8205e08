// One site: the topic tree, the live value grid (newest stored values,
// then every live message over /v1/ws — no polling; the grid itself is
// ../grid.tsx), a trend of the chosen topic, and commands for those
// allowed to send them.
import { useCallback, useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { api } from '../api/client';
import { allows } from '../session';
import { linkClick } from '../router';
import { payloadText, subscribe } from '../live';
import { numeric, topicTree, under, type TopicNode } from '../topics';
import { LiveCells, LiveGrid } from '../grid';
import { Trend, type Point } from '../trend';
import { CommandPanel } from './command';
import { ServicePanel } from './service';
import { ErrorNote } from '../util';

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
  // Values go straight to the grid, once a frame; this page re-renders
  // only when a topic is added (the tree and the filtered list change).
  const cells = useMemo(() => new LiveCells(), []);
  const [version, setVersion] = useState(0);
  const [error, setError] = useState<unknown>(null);
  const [liveError, setLiveError] = useState<string | null>(null);
  const [subscribed, setSubscribed] = useState(false);
  const [prefix, setPrefix] = useState('');
  const [search, setSearch] = useState('');
  const [chosen, setChosen] = useState<string | null>(new URLSearchParams(location.search).get('topic'));
  const [points, setPoints] = useState<Point[]>([]);
  const chosenRef = useRef(chosen);
  chosenRef.current = chosen;

  useEffect(() => cells.onTopics(() => setVersion((v) => v + 1)), [cells]);

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
        cells.put(m.topic, { value, at, qos: m.headers?.['Plantd-Qos'] });
        if (m.topic === chosenRef.current) {
          const v = numeric(m.payload);
          if (v !== null) setPoints((p) => p.concat({ t: at, v }));
        }
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
        const value = m.value !== undefined && m.value !== null ? (typeof m.value === 'string' ? m.value : JSON.stringify(m.value)) : m.value_base64 ? '(binary)' : '';
        cells.seed(m.topic, { value, at: new Date(m.time).getTime(), qos: String(m.qos) });
      }
    })().catch((e) => live && setError(e));
    return () => {
      live = false;
      unsubscribe();
      cells.dispose();
    };
  }, [site]);

  // `version` moves when a topic was added: `topics()` is then a new list.
  const topics = useMemo(() => cells.topics(), [version]);
  const tree = useMemo(() => topicTree(topics), [topics]);
  const needle = search.trim().toLowerCase();
  const shown = useMemo(
    () => (prefix || needle ? topics.filter((t) => under(t, prefix) && (!needle || t.toLowerCase().includes(needle))) : topics),
    [topics, prefix, needle],
  );
  const treeView = useMemo(() => <Tree node={tree} selected={prefix} onSelect={setPrefix} />, [tree, prefix]);

  const choose = useCallback(
    (topic: string) => {
      setChosen(topic);
      setPoints([]);
      history.replaceState(null, '', `/sites/${encodeURIComponent(site)}?topic=${encodeURIComponent(topic)}`);
    },
    [site],
  );

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
          <div>{treeView}</div>
        </nav>
        <div class="values">
          <h2>Live values</h2>
          <label class="search">
            Search <input type="search" value={search} onInput={(e) => setSearch(e.currentTarget.value)} placeholder="topic contains…" />
          </label>
          <LiveGrid cells={cells} topics={shown} chosen={chosen} onChoose={choose} subscribed={subscribed} />
          <div>
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
