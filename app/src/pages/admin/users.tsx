// Users of the organisation: list, create with roles, change their roles
// (taking one away revokes their live tokens), deactivate or reactivate,
// and log out everywhere (every live token revoked, refresh tokens issued
// before now refused).
import { useEffect, useState } from 'preact/hooks';
import { allows } from '../../session';
import { roles as rolesApi, users, type User } from '../../identity';
import { ErrorNote, Modal, useAction } from '../../util';

export function UsersTab() {
  const [list, setList] = useState<User[] | null>(null);
  const [roleNames, setRoleNames] = useState<string[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [note, setNote] = useState<string | null>(null);
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [picked, setPicked] = useState<string[]>(['viewer']);
  const [confirm, setConfirm] = useState<{ user: User; kind: 'deactivate' | 'revoke' } | null>(null);
  const [editing, setEditing] = useState<{ user: User; roles: string[] } | null>(null);
  const [run, busy] = useAction(setError);
  const canCreate = allows('identity:user:create');
  const canUpdate = allows('identity:user:update');

  async function load() {
    setList(await users.list());
  }
  useEffect(() => {
    load().catch(setError);
    if (allows('identity:role:read'))
      rolesApi
        .list()
        .then((r) => setRoleNames(r.map((x) => x.name).filter((n) => n !== 'device' && n !== 'superadmin')))
        .catch(() => setRoleNames(['admin', 'operator', 'viewer']));
    else setRoleNames(['admin', 'operator', 'viewer']);
  }, []);

  const create = () =>
    run(async () => {
      const u = await users.create(email.trim(), password, picked);
      setNote(`Created ${u.email} with ${u.roles.join(', ') || 'no roles'}.`);
      setEmail('');
      setPassword('');
      await load();
    });

  const act = () => {
    const c = confirm;
    setConfirm(null);
    if (!c) return;
    return run(async () => {
      if (c.kind === 'revoke') {
        const r = await users.revoke(c.user.id);
        setNote(`${c.user.email} is logged out everywhere (${r.revoked} live token${r.revoked === 1 ? '' : 's'} revoked).`);
      } else {
        await users.setActive(c.user.id, !c.user.active);
        setNote(`${c.user.email} is ${c.user.active ? 'deactivated: its tokens are revoked' : 'active again'}.`);
      }
      await load();
    });
  };

  const saveRoles = () => {
    const e = editing;
    setEditing(null);
    if (!e) return;
    return run(async () => {
      const u = await users.setRoles(e.user.id, e.roles);
      setNote(`${u.email} now has ${u.roles.join(', ') || 'no roles'}.`);
      await load();
    });
  };

  const roleChecks = (chosen: string[], set: (r: string[]) => void) =>
    roleNames.map((r) => (
      <label key={r} class="check">
        <input type="checkbox" checked={chosen.includes(r)} onChange={(e) => set(e.currentTarget.checked ? [...chosen, r] : chosen.filter((x) => x !== r))} />{' '}
        {r}
      </label>
    ));

  return (
    <div>
      <ErrorNote error={error} />
      {note && (
        <p class="ok" role="status" data-testid="admin-note">
          {note}
        </p>
      )}
      {canCreate && (
        <form
          class="panel row"
          aria-label="new user"
          onSubmit={(e) => {
            e.preventDefault();
            create();
          }}
        >
          <label>
            Email
            <input type="email" required value={email} onInput={(e) => setEmail(e.currentTarget.value)} autoComplete="off" />
          </label>
          <label>
            Initial password
            <input type="password" required value={password} onInput={(e) => setPassword(e.currentTarget.value)} autoComplete="new-password" />
          </label>
          <fieldset class="checks">
            <legend>Roles</legend>
            {roleChecks(picked, setPicked)}
          </fieldset>
          <button type="submit" class="primary" disabled={busy}>
            Create user
          </button>
        </form>
      )}
      <div class="scroll">
        <table class="grid" data-testid="users">
          <thead>
            <tr>
              <th scope="col">Email</th>
              <th scope="col">Roles</th>
              <th scope="col">State</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {(list ?? []).map((u) => (
              <tr key={u.id} data-user={u.email} class={u.active ? '' : 'stale'}>
                <th scope="row">{u.email}</th>
                <td>{u.roles.join(', ') || '—'}</td>
                <td>{u.active ? 'active' : 'deactivated'}</td>
                <td class="actions">
                  {canUpdate ? (
                    <>
                      <button type="button" onClick={() => setEditing({ user: u, roles: u.roles })}>
                        Roles…
                      </button>
                      <button type="button" onClick={() => setConfirm({ user: u, kind: 'deactivate' })}>
                        {u.active ? 'Deactivate…' : 'Reactivate…'}
                      </button>
                      <button type="button" onClick={() => setConfirm({ user: u, kind: 'revoke' })}>
                        Log out everywhere…
                      </button>
                    </>
                  ) : (
                    <span class="muted">needs identity:user:update</span>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <Modal open={editing !== null} title="Change roles" onClose={() => setEditing(null)}>
        <p>
          Roles of <strong>{editing?.user.email}</strong>. Taking a role away ends their sessions' current tokens; their next
          refresh carries the new roles.
        </p>
        {editing && (
          <fieldset class="checks">
            <legend>Roles</legend>
            {roleChecks(editing.roles, (roles) => setEditing({ ...editing, roles }))}
          </fieldset>
        )}
        <div class="row">
          <button type="button" class="primary" onClick={saveRoles}>
            Save roles
          </button>
          <button type="button" onClick={() => setEditing(null)}>
            Cancel
          </button>
        </div>
      </Modal>
      <Modal open={confirm !== null} title={confirm?.kind === 'revoke' ? 'Log out everywhere?' : confirm?.user.active ? 'Deactivate user?' : 'Reactivate user?'} onClose={() => setConfirm(null)}>
        <p>
          {confirm?.kind === 'revoke'
            ? `Every session of ${confirm?.user.email} ends now; they may log in again.`
            : confirm?.user.active
              ? `${confirm?.user.email} can no longer log in, and every session ends now.`
              : `${confirm?.user.email} can log in again.`}
        </p>
        <div class="row">
          <button type="button" class="primary" onClick={act} autoFocus>
            {confirm?.kind === 'revoke' ? 'Log out everywhere' : confirm?.user.active ? 'Deactivate' : 'Reactivate'}
          </button>
          <button type="button" onClick={() => setConfirm(null)}>
            Cancel
          </button>
        </div>
      </Modal>
    </div>
  );
}
