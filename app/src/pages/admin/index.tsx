// The admin pages: users, roles, devices, sites and the audit trail, each
// a tab shown only to callers holding its read permission (the server
// checks every action again; a refusal shows its message).
import { allows } from '../../session';
import { linkClick } from '../../router';
import { Lacks } from '../../util';
import { UsersTab } from './users';
import { RolesTab } from './roles';
import { DevicesTab } from './devices';
import { SitesTab } from './sites';
import { AuditTab } from './audit';

/** An admin tab: its path segment, label, the permission to see it. */
interface Tab {
  id: AdminTab;
  label: string;
  perm: string;
  what: string;
}

/** The admin tabs, in the order shown. */
export type AdminTab = 'users' | 'roles' | 'devices' | 'sites' | 'audit';

const TABS: Tab[] = [
  { id: 'users', label: 'Users', perm: 'identity:user:read', what: 'see users' },
  { id: 'roles', label: 'Roles', perm: 'identity:role:read', what: 'see roles' },
  { id: 'devices', label: 'Devices', perm: 'identity:device:read', what: 'see devices' },
  { id: 'sites', label: 'Sites', perm: 'identity:site:create', what: 'register sites' },
  { id: 'audit', label: 'Audit trail', perm: 'identity:audit:read', what: 'read the audit trail' },
];

/** The tabs the session may open. */
export function adminTabs(): Tab[] {
  return TABS.filter((t) => allows(t.perm));
}

/** Whether the session sees the Admin entry at all. */
export function showsAdmin(): boolean {
  return adminTabs().length > 0;
}

export function AdminPage({ tab }: { tab: string | null }) {
  const mine = adminTabs();
  const chosen = TABS.find((t) => t.id === tab) ?? mine[0] ?? TABS[0];
  let body;
  if (!allows(chosen.perm)) body = <Lacks what={chosen.what} perm={chosen.perm} />;
  else if (chosen.id === 'users') body = <UsersTab />;
  else if (chosen.id === 'roles') body = <RolesTab />;
  else if (chosen.id === 'devices') body = <DevicesTab />;
  else if (chosen.id === 'sites') body = <SitesTab />;
  else body = <AuditTab />;
  return (
    <section class="admin">
      <h1>Admin</h1>
      <nav class="tabs" aria-label="admin">
        {mine.map((t) => (
          <a key={t.id} href={`/admin/${t.id}`} onClick={linkClick} aria-current={t.id === chosen.id ? 'page' : undefined}>
            {t.label}
          </a>
        ))}
      </nav>
      {body}
    </section>
  );
}
