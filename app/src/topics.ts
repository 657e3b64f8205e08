// Topics as a tree (area / line / device from the topic levels) and the
// staleness of a value: pure functions, no DOM.

/** A node of the topic tree: a level, its children, and how many topics lie under it. */
export interface TopicNode {
  name: string;
  /** The topic prefix this node stands for (`line1/press`). */
  path: string;
  children: Map<string, TopicNode>;
  count: number;
}

/** Builds the tree of `topics` (split on `/`). */
export function topicTree(topics: Iterable<string>): TopicNode {
  const root: TopicNode = { name: '', path: '', children: new Map(), count: 0 };
  for (const t of topics) {
    let node = root;
    node.count++;
    const levels = t.split('/');
    levels.forEach((level, i) => {
      let child = node.children.get(level);
      if (!child) {
        child = { name: level, path: levels.slice(0, i + 1).join('/'), children: new Map(), count: 0 };
        node.children.set(level, child);
      }
      child.count++;
      node = child;
    });
  }
  return root;
}

/** Whether `topic` is `prefix` or lies under it (empty prefix: everything). */
export function under(topic: string, prefix: string): boolean {
  return prefix === '' || topic === prefix || topic.startsWith(prefix + '/');
}

/** How fresh a value is. */
export enum Freshness {
  Live = 'live',
  Stale = 'stale',
}

/** A value older than this is shown stale. */
export const STALE_AFTER_MS = 60_000;

/** The freshness of a value received at `at` (ms), seen at `now`. */
export function freshness(at: number, now: number): Freshness {
  return now - at > STALE_AFTER_MS ? Freshness.Stale : Freshness.Live;
}

/** An age in words: `0.4 s`, `12 s`, `3 min`, `2 h`, `4 d`. */
export function age(ms: number): string {
  if (ms < 0) ms = 0;
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 60_000) return `${Math.floor(ms / 1000)} s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} min`;
  if (ms < 86_400_000) return `${Math.floor(ms / 3_600_000)} h`;
  return `${Math.floor(ms / 86_400_000)} d`;
}

/** A payload as a number, when it is one (`21.5`, ` -3e2 `). */
export function numeric(payload: string | undefined): number | null {
  if (payload === undefined) return null;
  const s = payload.trim();
  if (s === '') return null;
  const n = Number(s);
  return Number.isFinite(n) ? n : null;
}
