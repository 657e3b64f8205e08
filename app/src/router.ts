// Client-side routes over the History API: the server answers every app
// path with index.html (functions/proxy/src/static_files.rs), the app picks
// the page from location.pathname.

/** A parsed route. */
export type Route =
  | { page: 'login' }
  | { page: 'sites' }
  | { page: 'site'; site: string }
  | { page: 'alarms' }
  | { page: 'state' }
  | { page: 'logs' }
  | { page: 'admin'; tab: string | null }
  | { page: 'missing'; path: string };

/** The route of a path. */
export function parse(path: string): Route {
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return { page: 'sites' };
  if (parts.length === 1) {
    switch (parts[0]) {
      case 'login':
        return { page: 'login' };
      case 'sites':
        return { page: 'sites' };
      case 'alarms':
        return { page: 'alarms' };
      case 'state':
        return { page: 'state' };
      case 'logs':
        return { page: 'logs' };
      case 'admin':
        return { page: 'admin', tab: null };
    }
  }
  if (parts.length === 2 && parts[0] === 'admin') return { page: 'admin', tab: parts[1] };
  if (parts.length === 2 && parts[0] === 'sites') return { page: 'site', site: parts[1] };
  return { page: 'missing', path };
}

const listeners = new Set<() => void>();

/** Goes to `path` without reloading. */
export function navigate(path: string) {
  if (path !== location.pathname + location.search) history.pushState(null, '', path);
  for (const l of listeners) l();
}

/** Calls `f` on every navigation (links, back and forward). */
export function onNavigate(f: () => void): () => void {
  listeners.add(f);
  return () => listeners.delete(f);
}

addEventListener('popstate', () => {
  for (const l of listeners) l();
});

/** A click handler for in-app links: plain clicks navigate in place. */
export function linkClick(e: MouseEvent) {
  const a = (e.currentTarget as HTMLAnchorElement | null) ?? null;
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(a.getAttribute('href') ?? '/');
}
