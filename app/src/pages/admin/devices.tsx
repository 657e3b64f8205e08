// Devices: list, register (with the site and its MQTT filters), issue a
// device token, deactivate, revoke its tokens. The secret and the token
// are shown once, with copy buttons: identity keeps only the secret's hash,
// and the page forgets both when it is left.
import { useEffect, useState } from 'preact/hooks';
import { allows } from '../../session';
import { devices, list as split, sites as sitesApi, type Credentials, type Device, type IssuedToken } from '../../identity';
import { CopyButton, ErrorNote, Modal, useAction } from '../../util';

/** What the page shows once: credentials and a token issued with them. */
interface Issued {
  creds: Credentials;
  token: IssuedToken | null;
  fresh: boolean;
}

function Secret(props: { label: string; value: string; testid: string }) {
  return (
    <div class="secret">
      <span class="muted">{props.label}</span>
      <code data-testid={props.testid}>{props.value}</code>
      <CopyButton text={props.value} label={`Copy ${props.label.toLowerCase()}`} />
    </div>
  );
}

export function DevicesTab() {
  const [list, setList] = useState<Device[] | null>(null);
  const [siteIds, setSiteIds] = useState<string[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [note, setNote] = useState<string | null>(null);
  const [name, setName] = useState('');
  const [site, setSite] = useState('');
  const [publish, setPublish] = useState('');
  const [subscribe, setSubscribe] = useState('');
  const [issued, setIssued] = useState<Issued | null>(null);
  const [asking, setAsking] = useState<Device | null>(null);
  const [secret, setSecret] = useState('');
  const [run, busy] = useAction(setError);
  const canCreate = allows('identity:device:create');
  const canUpdate = allows('identity:device:update');

  async function load() {
    setList(await devices.list());
  }
  useEffect(() => {
    load().catch(setError);
    sitesApi
      .list()
      .then((s) => {
        setSiteIds(s.map((x) => x.id));
        if (s.length) setSite(s[0].id);
      })
      .catch(() => undefined);
  }, []);

  const register = () =>
    run(async () => {
      const creds = await devices.create({ name: name.trim(), site, publish: split(publish), subscribe: split(subscribe) });
      setIssued({ creds, token: null, fresh: true });
      setName('');
      await load();
      setIssued({ creds, token: await devices.token(creds), fresh: true });
    });

  const issue = () => {
    const d = asking;
    setAsking(null);
    if (!d) return;
    const creds = { client_id: d.client_id, client_secret: secret.trim() };
    setSecret('');
    return run(async () => {
      setIssued({ creds, token: await devices.token(creds), fresh: false });
    });
  };

  const toggle = (d: Device) =>
    run(async () => {
      await devices.setActive(d.client_id, !d.active);
      setNote(`${d.name} is ${d.active ? 'deactivated: its tokens are revoked and its connections closed' : 'active again'}.`);
      await load();
    });

  const revoke = (d: Device) =>
    run(async () => {
      const r = await devices.revoke(d.client_id);
      setNote(`${d.name}: ${r.revoked} live token${r.revoked === 1 ? '' : 's'} revoked; its MQTT connections close.`);
    });

  return (
    <div>
      <ErrorNote error={error} />
      {note && (
        <p class="ok" role="status" data-testid="admin-note">
          {note}
        </p>
      )}
      {issued && (
        <section class="panel once" aria-labelledby="once-title" data-testid="device-issued">
          <h2 id="once-title">Shown once — copy it now</h2>
          <p class="muted">
            {issued.fresh
              ? 'The device authenticates with its client id and secret (POST /v1/auth/token, client_credentials); the token is its MQTT password (username: the client id). Neither is shown again.'
              : 'A new token for this device: its MQTT password (username: the client id). It is not shown again.'}
          </p>
          <Secret label="Client id" value={issued.creds.client_id} testid="device-client-id" />
          {issued.fresh && <Secret label="Client secret" value={issued.creds.client_secret} testid="device-secret" />}
          {issued.token ? (
            <>
              <Secret label="Token" value={issued.token.access_token} testid="device-token" />
              <p class="muted">Valid for {Math.round(issued.token.expires_in / 60)} min; the device asks for new ones with its secret.</p>
            </>
          ) : (
            <p class="muted">Issuing a token…</p>
          )}
          <button type="button" onClick={() => setIssued(null)}>
            Done — forget them
          </button>
        </section>
      )}
      {canCreate && (
        <form
          class="panel"
          aria-label="register a device"
          onSubmit={(e) => {
            e.preventDefault();
            register();
          }}
        >
          <h2>Register a device</h2>
          <div class="row">
            <label>
              Name
              <input required value={name} onInput={(e) => setName(e.currentTarget.value)} placeholder="pump-1" />
            </label>
            <label>
              Site
              <select required value={site} onChange={(e) => setSite(e.currentTarget.value)}>
                {siteIds.map((s) => (
                  <option key={s} value={s}>
                    {s}
                  </option>
                ))}
              </select>
            </label>
            <label class="grow">
              May publish to
              <input value={publish} onInput={(e) => setPublish(e.currentTarget.value)} placeholder="line1/pump1/#" />
            </label>
            <label class="grow">
              May subscribe to
              <input value={subscribe} onInput={(e) => setSubscribe(e.currentTarget.value)} placeholder="line1/pump1/set" />
            </label>
            <button type="submit" class="primary" disabled={busy || !site}>
              Register and issue a token
            </button>
          </div>
        </form>
      )}
      <div class="scroll">
        <table class="grid" data-testid="devices">
          <thead>
            <tr>
              <th scope="col">Device</th>
              <th scope="col">Site</th>
              <th scope="col">Publish</th>
              <th scope="col">Subscribe</th>
              <th scope="col">State</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {(list ?? []).map((d) => (
              <tr key={d.client_id} data-device={d.name} class={d.active ? '' : 'stale'}>
                <th scope="row">
                  {d.name}
                  <div class="muted">
                    <code>{d.client_id}</code>
                  </div>
                </th>
                <td>{d.site}</td>
                <td>
                  <code>{d.publish.join(' ') || '—'}</code>
                </td>
                <td>
                  <code>{d.subscribe.join(' ') || '—'}</code>
                </td>
                <td>{d.active ? 'active' : 'deactivated'}</td>
                <td class="actions">
                  <button type="button" onClick={() => setAsking(d)} disabled={!d.active}>
                    Issue a token…
                  </button>
                  {canUpdate && (
                    <>
                      <button type="button" onClick={() => revoke(d)}>
                        Revoke tokens
                      </button>
                      <button type="button" onClick={() => toggle(d)}>
                        {d.active ? 'Deactivate' : 'Reactivate'}
                      </button>
                    </>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <Modal open={asking !== null} title="Issue a device token" onClose={() => setAsking(null)}>
        <form
          onSubmit={(e) => {
            e.preventDefault();
            issue();
          }}
        >
          <p>
            A token for <strong>{asking?.name}</strong> needs its client secret (shown when it was registered; identity keeps only
            its hash).
          </p>
          <label>
            Client secret
            <input type="password" required value={secret} onInput={(e) => setSecret(e.currentTarget.value)} autoComplete="off" />
          </label>
          <div class="row">
            <button type="submit" class="primary">
              Issue token
            </button>
            <button type="button" onClick={() => setAsking(null)}>
              Cancel
            </button>
          </div>
        </form>
      </Modal>
    </div>
  );
}
