// The live value grid: the newest value of every topic of a site, with
// its age and quality, fast enough for 1,000 topics updating 10 times a
// second (docs/performance.md, "App: the live value grid").
//
// How it stays fast:
// * `LiveCells` keeps the values and collects the topics that changed;
//   once per animation frame it hands them over in one batch. Only a new
//   topic (the grid's rows change) goes through Preact.
// * The grid renders only the rows in view (plus a few): the scroller has
//   a fixed height and `contain: strict`, rows one fixed height, the table
//   a fixed layout — changing a value lays out one cell, not the page.
// * Values, ages and quality are written into the rows' own text nodes
//   (Preact renders the cells empty and never touches them), and only
//   when the text differs.
// * Ages advance with one timer for the whole grid, for the rows in view.
import { memo } from 'preact/compat';
import { useCallback, useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { age, freshness, Freshness } from './topics';
import './grid.css';

/** The newest value of a topic. */
export interface Cell {
  value: string;
  /** When it was received (ms, this browser's clock). */
  at: number;
  qos?: string;
}

/**
 * The newest value of every topic, and the topics that changed since the
 * last animation frame. `onValues` hears the changed topics once a frame;
 * `onTopics` hears when a topic was added (then `topics()` is new).
 */
export class LiveCells {
  private readonly cells = new Map<string, Cell>();
  private sorted: string[] = [];
  private dirty = new Set<string>();
  private added = false;
  private frame = 0;
  private readonly valueListeners = new Set<(changed: ReadonlySet<string>) => void>();
  private readonly topicListeners = new Set<() => void>();

  /** The value of `topic`. */
  get(topic: string): Cell | undefined {
    return this.cells.get(topic);
  }

  /** Every topic, sorted (a new array after each addition). */
  topics(): readonly string[] {
    return this.sorted;
  }

  /** Stores the newest value of `topic`. */
  put(topic: string, cell: Cell): void {
    if (!this.cells.has(topic)) this.add(topic);
    this.cells.set(topic, cell);
    this.dirty.add(topic);
    this.schedule();
  }

  /** Stores `cell` unless `topic` already has a value (a stored message never replaces a live one). */
  seed(topic: string, cell: Cell): void {
    if (!this.cells.has(topic)) this.put(topic, cell);
  }

  onValues(f: (changed: ReadonlySet<string>) => void): () => void {
    this.valueListeners.add(f);
    return () => this.valueListeners.delete(f);
  }

  onTopics(f: () => void): () => void {
    this.topicListeners.add(f);
    return () => this.topicListeners.delete(f);
  }

  /** Stops the pending frame (the page is closing). */
  dispose(): void {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.valueListeners.clear();
    this.topicListeners.clear();
  }

  private add(topic: string): void {
    // Binary search: the list stays sorted without sorting it again.
    let lo = 0;
    let hi = this.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.sorted[mid] < topic) lo = mid + 1;
      else hi = mid;
    }
    if (!this.added) this.sorted = this.sorted.slice();
    this.sorted.splice(lo, 0, topic);
    this.added = true;
  }

  private schedule(): void {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  private flush(): void {
    this.frame = 0;
    const changed = this.dirty;
    this.dirty = new Set();
    if (this.added) {
      this.added = false;
      for (const f of this.topicListeners) f();
    }
    for (const f of this.valueListeners) f(changed);
  }
}

/** Height of a row in px (the CSS variable `--grid-row` is set from it). */
export const ROW_PX = 29;
/** Rows rendered above and below the ones in view. */
const OVERSCAN = 8;
/** How often ages and quality advance. */
const AGE_EVERY_MS = 1000;

/** A rendered row's text nodes. */
interface RowDom {
  tr: HTMLTableRowElement;
  value: Text;
  age: Text;
  quality: Text;
}

/** Each row element's text nodes, made once per element. */
const doms = new WeakMap<HTMLTableRowElement, RowDom>();

function rowDom(tr: HTMLTableRowElement): RowDom {
  let d = doms.get(tr);
  if (!d) {
    const text = (i: number) => {
      const t = document.createTextNode('');
      tr.cells[i].replaceChildren(t);
      return t;
    };
    d = { tr, value: text(1), age: text(2), quality: text(3) };
    doms.set(tr, d);
  }
  return d;
}

/** Writes `cell` into `row`, touching only what changed. */
function fill(row: RowDom, cell: Cell, now: number): void {
  if (row.value.data !== cell.value) row.value.data = cell.value;
  const a = age(now - cell.at);
  if (row.age.data !== a) row.age.data = a;
  const f = freshness(cell.at, now);
  if (row.quality.data !== f) row.quality.data = f;
  const stale = f === Freshness.Stale;
  if (row.tr.classList.contains('stale') !== stale) row.tr.classList.toggle('stale', stale);
}

/** The range of rows to render for a scroll position and viewport height. */
export function visibleRange(scrollTop: number, height: number, total: number): [number, number] {
  const first = Math.max(0, Math.floor(scrollTop / ROW_PX) - OVERSCAN);
  const last = Math.min(total, Math.ceil((scrollTop + height) / ROW_PX) + OVERSCAN);
  return [first, Math.max(first, last)];
}

export interface LiveGridProps {
  cells: LiveCells;
  /** The topics to show, in order. */
  topics: readonly string[];
  /** The topic whose trend is shown. */
  chosen: string | null;
  onChoose: (topic: string) => void;
  /** Whether the live subscription is in place (`data-live`). */
  subscribed: boolean;
}

/** The grid: only the rows in view are in the document. */
export const LiveGrid = memo(function LiveGrid({ cells, topics, chosen, onChoose, subscribed }: LiveGridProps) {
  const scroller = useRef<HTMLDivElement>(null);
  const body = useRef<HTMLTableSectionElement>(null);
  const [range, setRange] = useState<[number, number]>([0, 60]);
  const rows = useRef(new Map<string, RowDom>());

  // Which rows are in view, on scroll and resize (once a frame at most).
  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    let frame = 0;
    const measure = () => {
      frame = 0;
      const next = visibleRange(el.scrollTop, el.clientHeight, topics.length);
      setRange((r) => (r[0] === next[0] && r[1] === next[1] ? r : next));
    };
    const later = () => {
      if (!frame) frame = requestAnimationFrame(measure);
    };
    measure();
    el.addEventListener('scroll', later, { passive: true });
    const resize = new ResizeObserver(later);
    resize.observe(el);
    return () => {
      el.removeEventListener('scroll', later);
      resize.disconnect();
      cancelAnimationFrame(frame);
    };
  }, [topics.length]);

  // After each render: find the rendered rows and fill them.
  useLayoutEffect(() => {
    const now = Date.now();
    const map = new Map<string, RowDom>();
    for (const tr of body.current?.rows ?? []) {
      const topic = tr.dataset.topic;
      if (topic === undefined) continue;
      const d = rowDom(tr);
      map.set(topic, d);
      const c = cells.get(topic);
      if (c) fill(d, c, now);
    }
    rows.current = map;
  });

  // New values: only the changed rows in view, once a frame.
  useEffect(
    () =>
      cells.onValues((changed) => {
        const now = Date.now();
        const map = rows.current;
        if (changed.size < map.size) {
          for (const t of changed) {
            const d = map.get(t);
            const c = d && cells.get(t);
            if (d && c) fill(d, c, now);
          }
        } else {
          for (const [t, d] of map) {
            if (!changed.has(t)) continue;
            const c = cells.get(t);
            if (c) fill(d, c, now);
          }
        }
      }),
    [cells],
  );

  // Ages and quality: one timer for the rows in view.
  useEffect(() => {
    const t = setInterval(() => {
      const now = Date.now();
      for (const [topic, d] of rows.current) {
        const c = cells.get(topic);
        if (c) fill(d, c, now);
      }
    }, AGE_EVERY_MS);
    return () => clearInterval(t);
  }, [cells]);

  const [first, last] = [Math.min(range[0], topics.length), Math.min(range[1], topics.length)];
  const shown = topics.slice(first, last);
  const choose = useCallback((e: Event) => {
    const topic = (e.currentTarget as HTMLElement).closest('tr')?.dataset.topic;
    if (topic !== undefined) onChoose(topic);
  }, [onChoose]);
  return (
    <div class="grid-scroll" ref={scroller} style={`--grid-row: ${ROW_PX}px`}>
      <table class="grid virtual" data-testid="grid" data-live={subscribed ? 'subscribed' : 'waiting'} aria-rowcount={topics.length + 1}>
        <colgroup>
          <col class="c-topic" />
          <col class="c-value" />
          <col class="c-age" />
          <col class="c-quality" />
        </colgroup>
        <thead>
          <tr>
            <th scope="col">Topic</th>
            <th scope="col">Value</th>
            <th scope="col">Age</th>
            <th scope="col">Quality</th>
          </tr>
        </thead>
        <tbody ref={body}>
          {first > 0 && (
            <tr class="spacer" aria-hidden="true">
              <td colSpan={4} style={{ height: `${first * ROW_PX}px` }} />
            </tr>
          )}
          {shown.map((t, i) => (
            <tr key={t} data-topic={t} class={chosen === t ? 'sel' : ''} aria-rowindex={first + i + 2}>
              <th scope="row">
                <button type="button" class="linklike" onClick={choose} title={`${t}: show its trend`}>
                  {t}
                </button>
              </th>
              <td class="value" />
              <td class="age" />
              <td class="quality" />
            </tr>
          ))}
          {last < topics.length && (
            <tr class="spacer" aria-hidden="true">
              <td colSpan={4} style={{ height: `${(topics.length - last) * ROW_PX}px` }} />
            </tr>
          )}
        </tbody>
      </table>
    </div>
  );
});
