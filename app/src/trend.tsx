// A trend of one topic: server-side downsampled history
// (GET /v1/sites/{site}/series, LTTB) plus the live points the page hands
// in, drawn with uPlot on a canvas.
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { api } from './api/client';
import { ApiError } from './session';
import { ErrorNote } from './util';

/** How far back the trend starts. */
export const TREND_WINDOW_MS = 60 * 60 * 1000;

/** A live reading to append: time in ms, value. */
export interface Point {
  t: number;
  v: number;
}

export function Trend(props: { site: string; topic: string; live: Point[] }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const data = useRef<[number[], number[]]>([[], []]);
  const seen = useRef(0);
  const [error, setError] = useState<unknown>(null);
  const [count, setCount] = useState(0);

  useEffect(() => {
    let live = true;
    data.current = [[], []];
    seen.current = props.live.length;
    setError(null);
    const el = box.current;
    if (!el) return;
    const width = () => Math.max(280, el.clientWidth);
    const u = new uPlot(
      {
        width: width(),
        height: 260,
        series: [{}, { label: props.topic, stroke: '#1f77b4', width: 1.5, points: { show: false } }],
        axes: [{}, { size: 60 }],
        cursor: { drag: { x: true, y: false } },
      },
      data.current,
      el,
    );
    plot.current = u;
    const onResize = () => u.setSize({ width: width(), height: 260 });
    addEventListener('resize', onResize);
    (async () => {
      const to = Date.now();
      const r = await api.GET('/v1/sites/{site}/series', {
        params: {
          path: { site: props.site },
          query: { topic: props.topic, from: String(to - TREND_WINDOW_MS), to: String(to), buckets: '1000', agg: 'lttb' },
        },
      });
      if (!live) return;
      if (!r.response.ok) {
        const e = r.error as { error?: string; message?: string } | undefined;
        setError(new ApiError(r.response.status, e?.error ?? 'error', e?.message ?? r.response.statusText));
        return;
      }
      const pts = r.data?.points ?? [];
      const [xs, ys] = data.current;
      // History first, then any live points that arrived meanwhile.
      const hx = pts.map((p) => p.t / 1000);
      const hy = pts.map((p) => p.v);
      const last = hx.length ? hx[hx.length - 1] : -Infinity;
      const keep = xs.map((x, i) => [x, ys[i]] as const).filter(([x]) => x > last);
      data.current = [hx.concat(keep.map(([x]) => x)), hy.concat(keep.map(([, y]) => y))];
      u.setData(data.current);
      setCount(data.current[0].length);
    })().catch((e) => live && setError(e));
    return () => {
      live = false;
      removeEventListener('resize', onResize);
      u.destroy();
      plot.current = null;
    };
  }, [props.site, props.topic]);

  // Append live points handed in since the last render.
  useEffect(() => {
    const fresh = props.live.slice(seen.current);
    seen.current = props.live.length;
    if (!fresh.length || !plot.current) return;
    const [xs, ys] = data.current;
    for (const p of fresh) {
      xs.push(p.t / 1000);
      ys.push(p.v);
    }
    plot.current.setData(data.current);
    setCount(xs.length);
  }, [props.live.length]);

  /** Downloads the points on the chart (the zoomed range, if zoomed) as CSV. */
  function exportCsv() {
    const [xs, ys] = data.current;
    const scale = plot.current?.scales.x;
    const lo = scale?.min ?? -Infinity;
    const hi = scale?.max ?? Infinity;
    const rows = ['time,value'];
    xs.forEach((x, i) => {
      if (x >= lo && x <= hi) rows.push(`${new Date(x * 1000).toISOString()},${ys[i]}`);
    });
    const url = URL.createObjectURL(new Blob([rows.join('\n') + '\n'], { type: 'text/csv' }));
    const a = document.createElement('a');
    a.href = url;
    a.download = `${props.site}-${props.topic.replaceAll('/', '_')}.csv`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 0);
  }

  return (
    <figure class="trend">
      <figcaption>
        Trend of <code>{props.topic}</code> (last hour, <span data-testid="trend-points">{count}</span> points; drag to zoom, double-click to
        reset){' '}
        <button type="button" onClick={exportCsv}>
          Export CSV
        </button>
      </figcaption>
      <ErrorNote error={error} />
      <div ref={box} class="chart" data-testid="trend" />
    </figure>
  );
}
