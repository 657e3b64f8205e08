// The audit trail (GET /v1/audit): filtered by actor, action, target and
// time, read a page at a time (oldest first, as the chain is kept) with
// the server's cursor; "Previous" goes back through the cursors seen.
import { useEffect, useState } from 'preact/hooks';
import { allows } from '../../session';
import { audit, users, type AuditPage, type AuditQuery } from '../../identity';
import { ErrorNote, useAction } from '../../util';

/** A `datetime-local` value (local time) as RFC 3339, or undefined. */
function rfc3339(local: string): string | undefined {
  if (!local) return undefined;
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

const PAGE_SIZES = [25, 100, 500];

export function AuditTab() {
  const [actor, setActor] = useState('');
  const [action, setAction] = useState('');
  const [target, setTarget] = useState('');
  const [since, setSince] = useState('');
  const [until, setUntil] = useState('');
  const [limit, setLimit] = useState(100);
  const [page, setPage] = useState<AuditPage | null>(null);
  // Cursors of the pages before the one shown ('' for the first).
  const [back, setBack] = useState<string[]>([]);
  const [cursor, setCursor] = useState('');
  const [emails, setEmails] = useState<Record<string, string>>({});
  const [error, setError] = useState<unknown>(null);
  const [run, busy] = useAction(setError);

  const query = (c: string): AuditQuery => ({
    actor: actor.trim(),
    action: action.trim(),
    target: target.trim(),
    since: rfc3339(since),
    until: rfc3339(until),
    limit,
    cursor: c || undefined,
  });

  const load = (c: string, history: string[]) =>
    run(async () => {
      const p = await audit.page(query(c));
      setPage(p);
      setCursor(c);
      setBack(history);
    });

  useEffect(() => {
    load('', []);
    if (allows('identity:user:read'))
      users
        .list()
        .then((l) => setEmails(Object.fromEntries(l.map((u) => [u.id, u.email]))))
        .catch(() => undefined);
  }, []);

  return (
    <div>
      <form
        class="panel row"
        aria-label="audit filters"
        onSubmit={(e) => {
          e.preventDefault();
          load('', []);
        }}
      >
        <label>
          Actor
          <input value={actor} onInput={(e) => setActor(e.currentTarget.value)} placeholder="id, or prefix*" />
        </label>
        <label>
          Action
          <input value={action} onInput={(e) => setAction(e.currentTarget.value)} placeholder="auth.* or user.create" />
        </label>
        <label>
          Target
          <input value={target} onInput={(e) => setTarget(e.currentTarget.value)} placeholder="user:*" />
        </label>
        <label>
          Since
          <input type="datetime-local" value={since} onInput={(e) => setSince(e.currentTarget.value)} />
        </label>
        <label>
          Until
          <input type="datetime-local" value={until} onInput={(e) => setUntil(e.currentTarget.value)} />
        </label>
        <label>
          Per page
          <select value={String(limit)} onChange={(e) => setLimit(Number(e.currentTarget.value))}>
            {PAGE_SIZES.map((n) => (
              <option key={n} value={String(n)}>
                {n}
              </option>
            ))}
          </select>
        </label>
        <button type="submit" class="primary" disabled={busy}>
          Search
        </button>
      </form>
      <ErrorNote error={error} />
      {page && (
        <>
          <p class="muted" role="status" data-testid="audit-count">
            {page.records.length} record{page.records.length === 1 ? '' : 's'} of {page.org}, page {back.length + 1}, oldest first
          </p>
          <div class="scroll">
            <table class="grid" data-testid="audit">
              <thead>
                <tr>
                  <th scope="col">Time</th>
                  <th scope="col">Actor</th>
                  <th scope="col">Action</th>
                  <th scope="col">Target</th>
                  <th scope="col">Outcome</th>
                  <th scope="col">Source</th>
                  <th scope="col">Detail</th>
                </tr>
              </thead>
              <tbody>
                {page.records.map((r) => (
                  <tr key={r.seq} data-action={r.action} class={r.outcome === 'success' ? '' : 'refused'}>
                    <td class="age">{new Date(r.time).toLocaleString()}</td>
                    <td>
                      {emails[r.actor] ?? <code>{r.actor}</code>} <span class="muted">{r.actor_kind}</span>
                    </td>
                    <th scope="row">{r.action}</th>
                    <td>
                      <code>{r.target}</code>
                    </td>
                    <td>{r.outcome}</td>
                    <td class="muted">{r.source ?? '—'}</td>
                    <td>
                      {r.detail !== undefined ? (
                        <details>
                          <summary>detail</summary>
                          <pre>{JSON.stringify(r.detail, null, 2)}</pre>
                        </details>
                      ) : (
                        '—'
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <div class="row">
            <button type="button" disabled={busy || back.length === 0} onClick={() => load(back[back.length - 1], back.slice(0, -1))}>
              ← Previous page
            </button>
            <button type="button" disabled={busy || !page.next_cursor} onClick={() => load(page.next_cursor ?? '', [...back, cursor])}>
              Next page →
            </button>
          </div>
        </>
      )}
    </div>
  );
}
