// The plantd web app: shell, navigation and pages.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import './style.css';
import { current, logout, onSession } from './session';
import { linkClick, navigate, onNavigate, parse } from './router';
import { LinkState, onLinkState, stop } from './live';
import { LoginPage } from './pages/login';
import { SitesPage } from './pages/sites';
import { SitePage } from './pages/site';
import { AlarmsPage } from './pages/alarms';
import { StatePage } from './pages/state';
import { LogsPage } from './pages/logs';
import { AdminPage, showsAdmin } from './pages/admin';

function useSession() {
  const [, set] = useState(0);
  useEffect(() => onSession(() => set((n) => n + 1)), []);
  return current();
}

function useRoute() {
  const [route, set] = useState(parse(location.pathname));
  useEffect(() => onNavigate(() => set(parse(location.pathname))), []);
  return route;
}

function LinkIndicator() {
  const [s, set] = useState(LinkState.Closed);
  useEffect(() => onLinkState(set), []);
  return (
    <span class={`link link-${s}`} role="status" title={`live data: ${s}`} data-testid="link-state">
      {s === LinkState.Open ? '● live' : s === LinkState.Connecting ? '○ connecting' : '○ offline'}
    </span>
  );
}

function Nav({ page }: { page: string }) {
  const who = current();
  const item = (href: string, label: string, name: string) => (
    <a href={href} onClick={linkClick} aria-current={page === name ? 'page' : undefined}>
      {label}
    </a>
  );
  return (
    <header class="top">
      <a class="brand" href="/" onClick={linkClick}>
        plantd
      </a>
      <nav aria-label="main">
        {item('/', 'Sites', 'sites')}
        {item('/alarms', 'Alarms', 'alarms')}
        {item('/state', 'State', 'state')}
        {item('/logs', 'Logs', 'logs')}
        {showsAdmin() && item('/admin', 'Admin', 'admin')}
      </nav>
      <span class="who">
        <LinkIndicator />
        <span data-testid="whoami">
          {who?.org} · {who?.roles.join(', ')}
        </span>
        <button
          type="button"
          onClick={async () => {
            stop();
            await logout();
            navigate('/login');
          }}
        >
          Log out
        </button>
      </span>
    </header>
  );
}

function App() {
  const who = useSession();
  const route = useRoute();
  if (!who) return <LoginPage />;
  if (route.page === 'login') {
    queueMicrotask(() => navigate('/'));
    return null;
  }
  let page;
  switch (route.page) {
    case 'sites':
      page = <SitesPage />;
      break;
    case 'site':
      page = <SitePage key={route.site} site={route.site} />;
      break;
    case 'alarms':
      page = <AlarmsPage />;
      break;
    case 'state':
      page = <StatePage />;
      break;
    case 'logs':
      page = <LogsPage />;
      break;
    case 'admin':
      page = <AdminPage key={route.tab ?? ''} tab={route.tab} />;
      break;
    default:
      page = (
        <section>
          <h1>Not found</h1>
          <p>
            Nothing at <code>{route.path}</code>.{' '}
            <a href="/" onClick={linkClick}>
              Sites
            </a>
          </p>
        </section>
      );
  }
  return (
    <>
      <Nav page={route.page} />
      <main id="main">{page}</main>
    </>
  );
}

const root = document.getElementById('app');
if (root) render(<App />, root);
