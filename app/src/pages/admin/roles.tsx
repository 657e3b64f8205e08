// Roles: the built-in ones (read only) and the organisation's own, created
// and edited with their permissions and MQTT grants. Nobody can put a
// permission in a role they do not hold (identity answers 403 naming it).
import { useEffect, useState } from 'preact/hooks';
import { allows } from '../../session';
import { list as split, roles, type Role } from '../../identity';
import { ErrorNote, useAction } from '../../util';

/**
 * The editor's fields; MQTT grants are edited for one site (or `*`), the
 * role's grants for other sites are kept as they are.
 */
interface Draft {
  name: string;
  description: string;
  perms: string;
  site: string;
  publish: string;
  subscribe: string;
  editing: boolean;
  others: Role['mqtt'];
}

const EMPTY: Draft = { name: '', description: '', perms: '', site: '*', publish: '', subscribe: '', editing: false, others: {} };

function draftOf(r: Role): Draft {
  const [site, grant] = Object.entries(r.mqtt)[0] ?? ['*', { publish: [], subscribe: [] }];
  return {
    name: r.name,
    description: r.description,
    perms: r.perms.join('\n'),
    site,
    publish: grant.publish.join('\n'),
    subscribe: grant.subscribe.join('\n'),
    editing: true,
    others: Object.fromEntries(Object.entries(r.mqtt).filter(([s]) => s !== site)),
  };
}

function grants(r: Role): string {
  return Object.entries(r.mqtt)
    .map(([site, g]) => `${site}: pub ${g.publish.join(' ') || '—'}; sub ${g.subscribe.join(' ') || '—'}`)
    .join(' · ');
}

export function RolesTab() {
  const [list, setList] = useState<Role[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [note, setNote] = useState<string | null>(null);
  const [draft, setDraft] = useState<Draft>(EMPTY);
  const [run, busy] = useAction(setError);
  const canCreate = allows('identity:role:create');
  const canUpdate = allows('identity:role:update');

  async function load() {
    setList(await roles.list());
  }
  useEffect(() => {
    load().catch(setError);
  }, []);

  const set = (k: keyof Draft) => (e: { currentTarget: { value: string } }) => setDraft({ ...draft, [k]: e.currentTarget.value });

  const save = () =>
    run(async () => {
      const publish = split(draft.publish);
      const subscribe = split(draft.subscribe);
      const body = {
        name: draft.name.trim(),
        description: draft.description,
        perms: split(draft.perms),
        mqtt: { ...draft.others, ...(publish.length || subscribe.length ? { [draft.site.trim() || '*']: { publish, subscribe } } : {}) },
      };
      if (draft.editing) await roles.replace(body);
      else await roles.create(body);
      setNote(`Role ${body.name} ${draft.editing ? 'saved' : 'created'}.`);
      setDraft(EMPTY);
      await load();
    });

  const showForm = draft.editing ? canUpdate : canCreate;
  return (
    <div>
      <ErrorNote error={error} />
      {note && (
        <p class="ok" role="status" data-testid="admin-note">
          {note}
        </p>
      )}
      {showForm && (
        <form
          class="panel"
          aria-label={draft.editing ? `edit role ${draft.name}` : 'new role'}
          onSubmit={(e) => {
            e.preventDefault();
            save();
          }}
        >
          <h2>{draft.editing ? `Edit role ${draft.name}` : 'New role'}</h2>
          <div class="row">
            <label>
              Name
              <input required pattern="[a-z0-9_\-]{1,64}" value={draft.name} disabled={draft.editing} onInput={set('name')} title="1-64 of a-z, 0-9, -, _" />
            </label>
            <label class="grow">
              Description
              <input value={draft.description} onInput={set('description')} />
            </label>
          </div>
          <div class="row">
            <label class="grow">
              Permissions (one a line)
              <textarea rows={4} value={draft.perms} onInput={set('perms')} placeholder={'telemetry:*:read\ncommands:plant1:send'} />
            </label>
            <label>
              MQTT site
              <input value={draft.site} onInput={set('site')} placeholder="* or a site" />
            </label>
            <label class="grow">
              MQTT publish filters
              <textarea rows={4} value={draft.publish} onInput={set('publish')} placeholder="line1/#" />
            </label>
            <label class="grow">
              MQTT subscribe filters
              <textarea rows={4} value={draft.subscribe} onInput={set('subscribe')} placeholder="#" />
            </label>
          </div>
          <div class="row">
            <button type="submit" class="primary" disabled={busy}>
              {draft.editing ? 'Save role' : 'Create role'}
            </button>
            {draft.editing && (
              <button type="button" onClick={() => setDraft(EMPTY)}>
                Cancel
              </button>
            )}
          </div>
        </form>
      )}
      <div class="scroll">
        <table class="grid" data-testid="roles">
          <thead>
            <tr>
              <th scope="col">Role</th>
              <th scope="col">Permissions</th>
              <th scope="col">MQTT</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {(list ?? []).map((r) => (
              <tr key={r.name} data-role={r.name}>
                <th scope="row">
                  {r.name}
                  <div class="muted">{r.description}</div>
                </th>
                <td>
                  <code>{r.perms.join(' ') || '—'}</code>
                </td>
                <td class="muted">{grants(r) || '—'}</td>
                <td>
                  {r.builtin ? (
                    <span class="muted">built in</span>
                  ) : canUpdate ? (
                    <button type="button" onClick={() => setDraft(draftOf(r))}>
                      Edit
                    </button>
                  ) : (
                    <span class="muted">needs identity:role:update</span>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}
