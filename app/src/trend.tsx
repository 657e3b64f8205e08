// A trend of one or more topics of a site, drawn with uPlot on a canvas:
// server-side downsampled history (GET /v1/sites/{site}/series, LTTB, about
// one point per pixel) for any time range, plus live readings while the
// range ends now. Zooming (drag) or panning (buttons, arrow keys) refetches
// the new range at full resolution from the server; "Export CSV" downloads
// the range (every topic a column) at up to 10,000 points per topic.
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { api } from './api/client';
import { ApiError } from './session';
import { subscribe } from './live';
import { numeric } from './topics';
import { ErrorNote } from './util';

/** How far back a trend starts. */
export const TREND_WINDOW_MS = 60 * 60 * 1000;

/** Most buckets asked of the server for a chart, and for an export (its maximum). */
const CHART_BUCKETS = 2000;
const EXPORT_BUCKETS = 10000;

/** Ranges offered, ending now. */
export const PRESETS: [number, string][] = [
  [15 * 60_000, '15 min'],
  [TREND_WINDOW_MS, '1 h'],
  [6 * TREND_WINDOW_MS, '6 h'],
  [24 * TREND_WINDOW_MS, '24 h'],
  [7 * 24 * TREND_WINDOW_MS, '7 d'],
  [30 * 24 * TREND_WINDOW_MS, '30 d'],
];

const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2'];

/** A live reading to append: time in ms, value. */
export interface Point {
  t: number;
  v: number;
}

/**
 * The time range shown: `span` ms ending now (following: live readings are
 * appended), or fixed `[from, to]` after a zoom or a pan.
 */
export type Range = { follow: true; span: number } | { follow: false; from: number; to: number };

/** The `[from, to]` of a range now. */
export function bounds(r: Range, now = Date.now()): [number, number] {
  return r.follow ? [now - r.span, now] : [r.from, r.to];
}

/** The range moved by `fraction` of its span (negative: earlier); never past now. */
export function pan(r: Range, fraction: number, now = Date.now()): Range {
  const [from, to] = bounds(r, now);
  const span = to - from;
  const shift = Math.round(span * fraction);
  if (to + shift >= now) return { follow: true, span };
  return { follow: false, from: from + shift, to: to + shift };
}

/** The range zoomed around its middle by `factor` (< 1: in). */
export function zoom(r: Range, factor: number, now = Date.now()): Range {
  const [from, to] = bounds(r, now);
  const span = Math.max(1000, Math.round((to - from) * factor));
  if (r.follow) return { follow: true, span };
  const mid = (from + to) / 2;
  return { follow: false, from: Math.round(mid - span / 2), to: Math.round(mid + span / 2) };
}

/** One topic's points, times in ms. */
type Series = { t: number[]; v: number[] };

async function fetchSeries(site: string, topic: string, from: number, to: number, buckets: number): Promise<Series> {
  const r = await api.GET('/v1/sites/{site}/series', {
    params: {
      path: { site },
      query: { topic, from: String(from), to: String(to), buckets: String(buckets), agg: 'lttb' },
    },
  });
  if (!r.response.ok) {
    const e = r.error as { error?: string; message?: string } | undefined;
    throw new ApiError(r.response.status, e?.error ?? 'error', `${topic}: ${e?.message ?? r.response.statusText}`);
  }
  const pts = r.data?.points ?? [];
  return { t: pts.map((p) => p.t), v: pts.map((p) => p.v) };
}

/** Appends the readings of `live` from `from` on that are later than the last of `s`. */
function withLive(s: Series, live: Point[], from: number): Series {
  const last = s.t.length ? s.t[s.t.length - 1] : -Infinity;
  const t = s.t.slice();
  const v = s.v.slice();
  for (const p of live) {
    if (p.t > last && p.t >= from) {
      t.push(p.t);
      v.push(p.v);
    }
  }
  return { t, v };
}

/** The series as one uPlot table (seconds on x; a topic without a point at a time: null). */
function table(series: Series[]): uPlot.AlignedData {
  if (!series.length) return [[]];
  return uPlot.join(series.map((s) => [s.t.map((t) => t / 1000), s.v] as uPlot.AlignedData));
}

/** CSV of the series: `time` then one column per topic, rows by time. */
export function toCsv(topics: string[], series: Series[]): string {
  const rows = new Map<number, (number | undefined)[]>();
  series.forEach((s, i) =>
    s.t.forEach((t, j) => {
      let row = rows.get(t);
      if (!row) rows.set(t, (row = new Array(topics.length)));
      row[i] = s.v[j];
    }),
  );
  const quote = (s: string) => (/[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s);
  const lines = [['time', ...topics.map(quote)].join(',')];
  for (const t of [...rows.keys()].sort((a, b) => a - b)) {
    lines.push([new Date(t).toISOString(), ...(rows.get(t) ?? []).map((v) => (v === undefined ? '' : String(v)))].join(','));
  }
  return lines.join('\n') + '\n';
}

export function Trend(props: { site: string; topic: string; live: Point[] }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const [extra, setExtra] = useState<string[]>([]);
  const topics = [props.topic, ...extra.filter((t) => t !== props.topic)];
  const [range, setRange] = useState<Range>({ follow: true, span: TREND_WINDOW_MS });
  const rangeRef = useRef(range);
  rangeRef.current = range;
  // Fetched history per topic, and live readings per extra topic.
  const fetched = useRef<Series[]>([]);
  const extraLive = useRef(new Map<string, Point[]>());
  const [loaded, setLoaded] = useState<[number, number] | null>(null);
  const [count, setCount] = useState(0);
  const [error, setError] = useState<unknown>(null);
  const [adding, setAdding] = useState('');
  const [exporting, setExporting] = useState(false);

  /** The series on the chart now: history plus live readings while following. */
  function current(): Series[] {
    const [from] = bounds(rangeRef.current);
    return fetched.current.map((s, i) => {
      if (!rangeRef.current.follow) return s;
      const live = i === 0 ? props.live : (extraLive.current.get(topics[i]) ?? []);
      return withLive(s, live, from);
    });
  }

  function redraw() {
    const u = plot.current;
    if (!u) return;
    const s = current();
    // Between a change of topics and its history arriving, the chart has
    // more series than the data: wait for the data.
    if (s.length !== u.series.length - 1) return;
    u.setData(table(s));
    setCount(s.reduce((n, x) => n + x.t.length, 0));
  }

  // The chart itself: made again when the topics change.
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const width = () => Math.max(280, el.clientWidth);
    const u = new uPlot(
      {
        width: width(),
        height: 280,
        series: [{}, ...topics.map((t, i) => ({ label: t, stroke: COLOURS[i % COLOURS.length], width: 1.5, spanGaps: true }))],
        axes: [{}, { size: 60 }],
        scales: {
          x: {
            time: true,
            // The chosen range, whatever the data covers (following: up to
            // now, as of this draw).
            range: () => {
              const [from, to] = bounds(rangeRef.current);
              return [from / 1000, to / 1000];
            },
          },
        },
        cursor: { drag: { x: true, y: false, setScale: false } },
        hooks: {
          setSelect: [
            (u) => {
              const { left, width: w } = u.select;
              if (w < 2) return;
              const from = Math.round(u.posToVal(left, 'x') * 1000);
              const to = Math.round(u.posToVal(left + w, 'x') * 1000);
              u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
              if (to > from) setRange({ follow: false, from, to });
            },
          ],
        },
      },
      [[]],
      el,
    );
    plot.current = u;
    const onResize = () => u.setSize({ width: width(), height: 280 });
    addEventListener('resize', onResize);
    const reset = () => setRange({ follow: true, span: TREND_WINDOW_MS });
    u.over.addEventListener('dblclick', reset);
    return () => {
      removeEventListener('resize', onResize);
      u.destroy();
      plot.current = null;
    };
  }, [props.site, topics.join('\n')]);

  // History of the range, refetched whenever the range or the topics change.
  useEffect(() => {
    let live = true;
    setError(null);
    const [from, to] = bounds(range);
    const buckets = Math.min(CHART_BUCKETS, Math.max(100, box.current?.clientWidth ?? 1000));
    Promise.all(topics.map((t) => fetchSeries(props.site, t, from, to, buckets)))
      .then((all) => {
        if (!live) return;
        fetched.current = all;
        setLoaded([from, to]);
        redraw();
      })
      .catch((e) => live && setError(e));
    return () => {
      live = false;
    };
  }, [props.site, topics.join('\n'), range]);

  // Live readings of the extra topics (the page hands in the first one's).
  useEffect(() => {
    const offs = extra.map((t) =>
      subscribe(
        props.site,
        t,
        (m) => {
          const v = numeric(m.payload);
          if (v === null) return;
          const list = extraLive.current.get(t) ?? [];
          list.push({ t: Date.now(), v });
          extraLive.current.set(t, list);
          if (rangeRef.current.follow) redraw();
        },
        () => undefined,
        () => undefined,
      ),
    );
    return () => offs.forEach((off) => off());
  }, [props.site, extra.join('\n')]);

  // The first topic's live readings handed in since the last render.
  useEffect(() => {
    if (range.follow) redraw();
  }, [props.live.length]);

  function add(e: Event) {
    e.preventDefault();
    const t = adding.trim();
    if (t && !topics.includes(t)) setExtra([...extra, t]);
    setAdding('');
  }

  async function exportCsv() {
    setExporting(true);
    try {
      const [from, to] = bounds(range);
      // What the server stored, at stream times (every live reading shown is
      // stored by now; their receive times in the page would repeat them).
      const all = await Promise.all(topics.map((t) => fetchSeries(props.site, t, from, range.follow ? Date.now() : to, EXPORT_BUCKETS)));
      const url = URL.createObjectURL(new Blob([toCsv(topics, all)], { type: 'text/csv' }));
      const a = document.createElement('a');
      a.href = url;
      const stamp = (ms: number) => new Date(ms).toISOString().replaceAll(':', '').slice(0, 15);
      a.download = `${props.site}-${topics.map((t) => t.replaceAll('/', '_')).join('+')}-${stamp(from)}-${stamp(to)}.csv`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 0);
    } catch (e) {
      setError(e);
    } finally {
      setExporting(false);
    }
  }

  function onKey(e: KeyboardEvent) {
    const moves: Record<string, () => Range> = {
      ArrowLeft: () => pan(range, -0.25),
      ArrowRight: () => pan(range, 0.25),
      '+': () => zoom(range, 0.5),
      '=': () => zoom(range, 0.5),
      '-': () => zoom(range, 2),
      Home: () => ({ follow: true, span: TREND_WINDOW_MS }),
    };
    const m = moves[e.key];
    if (!m) return;
    e.preventDefault();
    setRange(m());
  }

  const span = bounds(range);
  const fmt = (ms: number) => new Date(ms).toLocaleString();
  return (
    <figure class="trend">
      <figcaption>
        Trend of{' '}
        {topics.map((t, i) => (
          <span key={t} class="trend-topic">
            <code style={{ color: COLOURS[i % COLOURS.length] }}>{t}</code>{' '}
            {i > 0 && (
              <button type="button" class="linklike" aria-label={`remove ${t} from the trend`} onClick={() => setExtra(extra.filter((x) => x !== t))}>
                ×
              </button>
            )}{' '}
          </span>
        ))}
        (<span data-testid="trend-points">{count}</span> points)
      </figcaption>
      <div class="row trend-controls">
        <div role="group" aria-label="range" class="presets">
          {PRESETS.map(([ms, label]) => (
            <button
              key={ms}
              type="button"
              class={range.follow && range.span === ms ? 'sel' : ''}
              aria-pressed={range.follow && range.span === ms}
              onClick={() => setRange({ follow: true, span: ms })}
            >
              {label}
            </button>
          ))}
        </div>
        <button type="button" onClick={() => setRange(pan(range, -0.5))} aria-label="earlier">
          ◀ Earlier
        </button>
        <button type="button" onClick={() => setRange(pan(range, 0.5))} disabled={range.follow} aria-label="later">
          Later ▶
        </button>
        <button type="button" onClick={() => setRange(zoom(range, 0.5))}>
          Zoom in
        </button>
        <button type="button" onClick={() => setRange(zoom(range, 2))}>
          Zoom out
        </button>
        <form class="row add-topic" onSubmit={add}>
          <label>
            Add topic
            <input value={adding} onInput={(e) => setAdding(e.currentTarget.value)} placeholder="line2/flow" />
          </label>
          <button type="submit" disabled={!adding.trim()}>
            Add
          </button>
        </form>
        <button type="button" onClick={exportCsv} disabled={exporting}>
          {exporting ? 'Exporting…' : 'Export CSV'}
        </button>
      </div>
      <p class="muted" data-testid="trend-range" data-from={loaded?.[0]} data-to={loaded?.[1]} data-follow={range.follow ? 'yes' : 'no'}>
        {range.follow ? 'Live, ' : ''}
        {fmt(span[0])} – {range.follow ? 'now' : fmt(span[1])}; drag to zoom (fetches that range again from the server), arrow keys to pan,
        + and − to zoom, Home or double-click for the last hour.
      </p>
      <ErrorNote error={error} />
      <div ref={box} class="chart" data-testid="trend" tabIndex={0} onKeyDown={onKey} aria-label={`chart of ${topics.join(', ')}; arrow keys pan, + and − zoom`} />
    </figure>
  );
}
