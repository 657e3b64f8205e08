/**
 * A state-backed job: adds `--times` to a counter kept in plantd's state,
 * one step at a time, safely alongside other copies of itself — each write
 * says which revision it read (`If-Match`), and a conflict (409) means
 * someone else wrote first: read again and retry.
 *
 *     node build/examples/state_job.js --scope jobs --key batches --times 10
 */
import { type Plantd, PlantdError } from '@plantd/client';
import { arg, connect } from './connect.js';

const scope = arg('scope');
const key = arg('key');
const times = Number(arg('times', '1'));

/** Adds one to the counter; returns how many conflicts it met. */
async function addOne(plantd: Plantd): Promise<number> {
  for (let conflicts = 0; ; conflicts++) {
    const current = await plantd.getState<{ n: number }>(scope, key);
    const n = current?.value.n ?? 0;
    try {
      if (current === null) {
        // Created only if nobody created it meanwhile.
        await plantd.createState(scope, key, { n: n + 1 });
      } else {
        await plantd.putState(scope, key, { n: n + 1 }, current.etag);
      }
      return conflicts;
    } catch (e) {
      if (e instanceof PlantdError && e.status === 409) continue;
      throw e;
    }
  }
}

const plantd = await connect();
try {
  await plantd.rest.POST('/v1/state/scopes', { body: { scope } });
} catch (e) {
  if (!(e instanceof PlantdError && e.status === 409)) throw e; // another copy made it
}
let conflicts = 0;
for (let i = 0; i < times; i++) conflicts += await addOne(plantd);
console.log(JSON.stringify({ added: times, conflicts }));
