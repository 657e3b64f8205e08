/**
 * A command sender: sends one command to a site's devices and prints where
 * it was stored (its id); `--wait` then waits until it is no longer pending
 * (delivered, or dropped after its TTL).
 *
 *     node build/examples/command_sender.js --site local --topic line1/valve/set --payload open --ttl 30
 */
import type { Schemas } from '@plantd/client';
import { arg, connect, flag } from './connect.js';

const site = arg('site', process.env.PLANTD_SITE ?? 'local');
const topic = arg('topic');
const payload = arg('payload');
const ttl = Number(arg('ttl', '60'));

const plantd = await connect();
const { data: sent } = await plantd.rest.POST('/v1/sites/{site}/commands', {
  params: { path: { site } },
  body: { topic, payload, qos: 1, ttl_secs: ttl },
});
if (!sent) throw new Error('no answer body');
console.log(JSON.stringify({ id: sent.sequence, stream: sent.stream }));
while (flag('wait')) {
  const { data: pending } = await plantd.rest.GET('/v1/sites/{site}/commands', {
    params: { path: { site }, query: { state: 'pending' } },
  });
  if (!pending?.commands.some((c: Schemas['PendingCommand']) => c.id === sent.sequence)) break;
  await new Promise((resolve) => setTimeout(resolve, 500));
}
