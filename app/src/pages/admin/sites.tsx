// Site registry: the organisation's sites and registering a new one (its
// id is global: identity answers 409 when any organisation has it).
import { useEffect, useState } from 'preact/hooks';
import { linkClick } from '../../router';
import { sites, type SiteRecord } from '../../identity';
import { ErrorNote, useAction, when } from '../../util';

/** `k=v` lines (or comma separated) as labels; a line without `=` is an error. */
export function parseLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of text.split(/[\n,]+/)) {
    const p = part.trim();
    if (!p) continue;
    const i = p.indexOf('=');
    if (i <= 0) throw new Error(`label "${p}": write key=value`);
    out[p.slice(0, i).trim()] = p.slice(i + 1).trim();
  }
  return out;
}

export function SitesTab() {
  const [list, setList] = useState<SiteRecord[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [note, setNote] = useState<string | null>(null);
  const [id, setId] = useState('');
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [labels, setLabels] = useState('');
  const [run, busy] = useAction(setError);

  async function load() {
    setList(await sites.list());
  }
  useEffect(() => {
    load().catch(setError);
  }, []);

  const create = () =>
    run(async () => {
      const s = await sites.create({ id: id.trim(), name: name.trim(), description, labels: parseLabels(labels) });
      setNote(`Site ${s.id} registered.`);
      setId('');
      setName('');
      setDescription('');
      setLabels('');
      await load();
    });

  return (
    <div>
      <ErrorNote error={error} />
      {note && (
        <p class="ok" role="status" data-testid="admin-note">
          {note}
        </p>
      )}
      <form
        class="panel"
        aria-label="register a site"
        onSubmit={(e) => {
          e.preventDefault();
          create();
        }}
      >
        <h2>Register a site</h2>
        <div class="row">
          <label>
            Id
            <input required pattern="[A-Za-z0-9_\-]{1,64}" title="1-64 of A-Z a-z 0-9 _ -" value={id} onInput={(e) => setId(e.currentTarget.value)} placeholder="plant-7" />
          </label>
          <label>
            Name
            <input value={name} onInput={(e) => setName(e.currentTarget.value)} placeholder="Plant 7, Lyon" />
          </label>
          <label class="grow">
            Description
            <input value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
          </label>
          <label class="grow">
            Labels (key=value, …)
            <input value={labels} onInput={(e) => setLabels(e.currentTarget.value)} placeholder="region=eu, tier=1" />
          </label>
          <button type="submit" class="primary" disabled={busy}>
            Register site
          </button>
        </div>
      </form>
      <div class="scroll">
        <table class="grid" data-testid="site-registry">
          <thead>
            <tr>
              <th scope="col">Site</th>
              <th scope="col">Name</th>
              <th scope="col">Labels</th>
              <th scope="col">Registered</th>
            </tr>
          </thead>
          <tbody>
            {(list ?? []).map((s) => (
              <tr key={s.id} data-site-id={s.id}>
                <th scope="row">
                  <a href={`/sites/${encodeURIComponent(s.id)}`} onClick={linkClick}>
                    {s.id}
                  </a>
                </th>
                <td>
                  {s.name || '—'}
                  {s.description && <div class="muted">{s.description}</div>}
                </td>
                <td>
                  <code>
                    {Object.entries(s.labels ?? {})
                      .map(([k, v]) => `${k}=${v}`)
                      .join(' ') || '—'}
                  </code>
                </td>
                <td>{when(s.created_ms)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}
