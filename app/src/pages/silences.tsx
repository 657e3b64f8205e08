// Silences (GET/POST /v1/silences, DELETE /v1/silences/{id}): label
// matchers and a time window. While one matches an alert's labels, its
// records are stored `silenced` and not notified. Created with a duration
// from now; "Expire now" deletes it (records from then on are notified).
import { useState } from 'preact/hooks';
import { api, type Schemas } from '../api/client';
import { ApiError } from '../session';
import { ErrorNote, useAction, when } from '../util';

/** How a matcher compares (docs/api.md, "Alerts"). */
export type MatchOp = Schemas['MatchOp'];

/** One label condition of a silence. */
export type Matcher = Schemas['Matcher'];

/** A silence as `GET /v1/silences` lists it (with `active`). */
export type Silence = Schemas['SilenceView'];

/** Durations offered, in minutes. */
const DURATIONS: [number, string][] = [
  [15, '15 minutes'],
  [60, '1 hour'],
  [120, '2 hours'],
  [240, '4 hours'],
  [480, '8 hours'],
  [1440, '1 day'],
  [10080, '1 week'],
];

/** Whether `m` holds for `labels` (a missing label reads as ""), as the server decides. */
export function matches(m: Matcher, labels: Record<string, string>): boolean {
  const got = labels[m.label] ?? '';
  if (m.op === '=') return got === m.value;
  if (m.op === '!=') return got !== m.value;
  try {
    return new RegExp(`^(?:${m.value})$`).test(got);
  } catch {
    return false;
  }
}

/** The silence in force now that matches `labels`, if any. */
export function silencing(silences: Silence[], labels: Record<string, string>, now = Date.now()): Silence | undefined {
  return silences.find(
    (s) => Date.parse(s.starts) <= now && now < Date.parse(s.ends) && s.matchers.every((m) => matches(m, labels)),
  );
}

export function failure(r: { response: Response; error?: unknown }): ApiError {
  const e = r.error as { error?: string; message?: string } | undefined;
  return new ApiError(r.response.status, e?.error ?? 'error', e?.message ?? r.response.statusText);
}

/** The form for a new silence; `initial` prefills its matchers. */
export function SilenceForm(props: { initial: Matcher[]; onDone: (s: Schemas['Silence'] | null) => void }) {
  const [matchers, setMatchers] = useState<Matcher[]>(props.initial.length ? props.initial : [{ label: 'rule', op: '=', value: '' }]);
  const [minutes, setMinutes] = useState(60);
  const [comment, setComment] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [run, busy] = useAction(setError);

  const edit = (i: number, patch: Partial<Matcher>) => setMatchers(matchers.map((m, j) => (j === i ? { ...m, ...patch } : m)));

  const create = () =>
    run(async () => {
      const ends = new Date(Date.now() + minutes * 60_000).toISOString();
      // The document gives this body no schema (a free object: the server
      // names the field it refuses), so it is typed as the silence it makes.
      const body: Schemas['Silence'] = { matchers: matchers.map((m) => ({ ...m, label: m.label.trim() })), ends, comment };
      const r = await api.POST('/v1/silences', { body: body as unknown as Record<string, never> });
      if (!r.response.ok || !r.data) throw failure(r);
      props.onDone(r.data);
    });

  return (
    <form
      data-testid="silence-form"
      onSubmit={(e) => {
        e.preventDefault();
        create();
      }}
    >
      <fieldset class="matchers">
        <legend>Matchers (all must hold; labels: rule, severity, site, the rule's and group-by labels)</legend>
        {matchers.map((m, i) => (
          <div class="row" key={i}>
            <label>
              Label
              <input required value={m.label} onInput={(e) => edit(i, { label: e.currentTarget.value })} />
            </label>
            <label>
              Match
              <select value={m.op} onChange={(e) => edit(i, { op: e.currentTarget.value as MatchOp })}>
                <option value="=">=</option>
                <option value="!=">!=</option>
                <option value="=~">=~ (regex)</option>
              </select>
            </label>
            <label class="grow">
              Value
              <input value={m.value} onInput={(e) => edit(i, { value: e.currentTarget.value })} />
            </label>
            <button type="button" disabled={matchers.length === 1} onClick={() => setMatchers(matchers.filter((_, j) => j !== i))} aria-label={`remove matcher ${i + 1}`}>
              Remove
            </button>
          </div>
        ))}
        <button type="button" onClick={() => setMatchers([...matchers, { label: '', op: '=', value: '' }])}>
          Add matcher
        </button>
      </fieldset>
      <div class="row">
        <label>
          For
          <select value={String(minutes)} onChange={(e) => setMinutes(Number(e.currentTarget.value))}>
            {DURATIONS.map(([m, text]) => (
              <option key={m} value={String(m)}>
                {text}
              </option>
            ))}
          </select>
        </label>
        <label class="grow">
          Comment
          <input value={comment} onInput={(e) => setComment(e.currentTarget.value)} placeholder="maintenance on line 1" />
        </label>
      </div>
      <ErrorNote error={error} />
      <div class="row">
        <button type="submit" class="primary" disabled={busy}>
          Create silence
        </button>
        <button type="button" onClick={() => props.onDone(null)}>
          Cancel
        </button>
      </div>
    </form>
  );
}

/** The organisation's silences, active first, with "Expire now" for those allowed. */
export function SilenceList(props: { silences: Silence[]; canWrite: boolean; onChange: () => void }) {
  const [error, setError] = useState<unknown>(null);
  const [run] = useAction(setError);
  const now = Date.now();
  const live = (s: Silence) => s.active ?? (Date.parse(s.starts) <= now && now < Date.parse(s.ends));
  const sorted = [...props.silences].sort((a, b) => Number(live(b)) - Number(live(a)) || b.ends.localeCompare(a.ends));
  const expire = (s: Silence) =>
    run(async () => {
      const r = await api.DELETE('/v1/silences/{id}', { params: { path: { id: s.id } } });
      if (!r.response.ok) throw failure(r);
      props.onChange();
    });
  return (
    <>
      <ErrorNote error={error} />
      {!sorted.length && <p class="muted">No silences.</p>}
      {!!sorted.length && (
        <div class="scroll">
          <table class="grid" data-testid="silences">
            <thead>
              <tr>
                <th scope="col">Matchers</th>
                <th scope="col">State</th>
                <th scope="col">From</th>
                <th scope="col">Until</th>
                <th scope="col">Comment</th>
                <th scope="col" />
              </tr>
            </thead>
            <tbody>
              {sorted.map((s) => (
                <tr key={s.id} data-silence={s.id} class={live(s) ? '' : 'stale'}>
                  <th scope="row">
                    <code>{s.matchers.map((m) => `${m.label}${m.op}"${m.value}"`).join(', ')}</code>
                  </th>
                  <td>{live(s) ? 'active' : Date.parse(s.starts) > now ? 'pending' : 'expired'}</td>
                  <td>{when(s.starts)}</td>
                  <td>{when(s.ends)}</td>
                  <td>{s.comment || '—'}</td>
                  <td>
                    {props.canWrite && live(s) && (
                      <button type="button" onClick={() => expire(s)}>
                        Expire now
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}
