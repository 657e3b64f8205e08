// Scoped state: browse scopes and keys, edit a value with optimistic
// concurrency — the value's ETag goes back as If-Match, and a 409 says
// someone else changed it, offering to reload theirs or overwrite it.
import { useEffect, useState } from 'preact/hooks';
import { allows, apiError, authFetch, getJson } from '../session';
import { ErrorNote } from '../util';

interface Loaded {
  key: string;
  text: string;
  etag: string | null;
  contentType: string;
}

const path = (scope: string, key?: string) =>
  `/v1/state/${encodeURIComponent(scope)}${key === undefined ? '' : '/' + encodeURIComponent(key)}`;

export function StatePage() {
  const [scopes, setScopes] = useState<string[] | null>(null);
  const [scope, setScope] = useState('');
  const [keys, setKeys] = useState<{ key: string; revision: number }[]>([]);
  const [loaded, setLoaded] = useState<Loaded | null>(null);
  const [text, setText] = useState('');
  const [conflict, setConflict] = useState(false);
  const [saved, setSaved] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [newKey, setNewKey] = useState('');

  useEffect(() => {
    getJson<{ scopes: string[] }>('/v1/state/scopes')
      .then((r) => {
        setScopes(r.scopes);
        if (r.scopes.length) setScope(r.scopes[0]);
      })
      .catch(setError);
  }, []);

  async function loadKeys(s: string) {
    if (!s) return setKeys([]);
    const r = await getJson<{ keys: { key: string; revision: number }[] }>(path(s));
    setKeys(r.keys);
  }
  useEffect(() => {
    setLoaded(null);
    loadKeys(scope).catch(setError);
  }, [scope]);

  async function open(key: string) {
    setError(null);
    setSaved(null);
    setConflict(false);
    const r = await authFetch(path(scope, key));
    if (!r.ok) throw await apiError(r);
    const body = await r.text();
    const contentType = r.headers.get('content-type') ?? 'application/json';
    let shown = body;
    if (contentType.startsWith('application/json')) {
      try {
        shown = JSON.stringify(JSON.parse(body), null, 2);
      } catch {
        /* keep as stored */
      }
    }
    setLoaded({ key, text: shown, etag: r.headers.get('etag'), contentType });
    setText(shown);
  }

  async function save(overwrite: boolean) {
    if (!loaded) return;
    setError(null);
    setSaved(null);
    if (loaded.contentType.startsWith('application/json')) {
      try {
        JSON.parse(text);
      } catch (e) {
        setError(new Error(`Not valid JSON: ${(e as Error).message}`));
        return;
      }
    }
    const headers: Record<string, string> = { 'content-type': loaded.contentType };
    if (!overwrite && loaded.etag) headers['if-match'] = loaded.etag;
    if (!overwrite && !loaded.etag) headers['if-none-match'] = '*';
    const r = await authFetch(path(scope, loaded.key), { method: 'PUT', headers, body: text });
    if (r.status === 409) {
      setConflict(true);
      return;
    }
    if (!r.ok) throw await apiError(r);
    setConflict(false);
    setLoaded({ ...loaded, text, etag: r.headers.get('etag') });
    setSaved(`Saved (revision ${(await r.json()).revision}).`);
    await loadKeys(scope);
  }

  const canWrite = scope !== '' && allows(`state:scope:${scope}:write`);

  return (
    <section>
      <h1>State</h1>
      <ErrorNote error={error} />
      {scopes?.length === 0 && <p>No scopes you may read.</p>}
      {!!scopes?.length && (
        <label>
          Scope{' '}
          <select value={scope} onChange={(e) => setScope(e.currentTarget.value)} data-testid="scope">
            {scopes.map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
        </label>
      )}
      <div class="state-grid">
        <ul class="keys" aria-label="keys">
          {keys.map((k) => (
            <li key={k.key}>
              <button type="button" class={loaded?.key === k.key ? 'sel' : ''} onClick={() => open(k.key).catch(setError)}>
                {k.key} <span class="muted">r{k.revision}</span>
              </button>
            </li>
          ))}
          {canWrite && (
            <li>
              <form
                onSubmit={(e) => {
                  e.preventDefault();
                  if (!newKey.trim()) return;
                  setLoaded({ key: newKey.trim(), text: '{}', etag: null, contentType: 'application/json' });
                  setText('{}');
                  setNewKey('');
                }}
              >
                <input aria-label="new key" placeholder="new key" value={newKey} onInput={(e) => setNewKey(e.currentTarget.value)} />
              </form>
            </li>
          )}
        </ul>
        {loaded && (
          <div class="editor">
            <h2>
              <code>{loaded.key}</code> <span class="muted">{loaded.etag ? `revision ${loaded.etag.replaceAll('"', '')}` : 'new'}</span>
            </h2>
            <textarea aria-label="value" data-testid="state-value" rows={14} value={text} readOnly={!canWrite} onInput={(e) => setText(e.currentTarget.value)} />
            {conflict && (
              <div class="error" role="alert" data-testid="conflict">
                <p>Changed by someone else since you opened it — reload or overwrite.</p>
                <div class="row">
                  <button type="button" onClick={() => open(loaded.key).catch(setError)}>
                    Reload theirs
                  </button>
                  <button type="button" onClick={() => save(true).catch(setError)}>
                    Overwrite with mine
                  </button>
                </div>
              </div>
            )}
            {saved && (
              <p class="ok" role="status">
                {saved}
              </p>
            )}
            {canWrite && (
              <button type="button" class="primary" onClick={() => save(false).catch(setError)}>
                Save
              </button>
            )}
          </div>
        )}
      </div>
    </section>
  );
}
