// The proxy API client: typed from the proxy's /openapi.json (the
// TypeScript SDK's generated sdk/typescript/src/schema.ts — one copy for
// the SDK and the app, checked for drift by scripts/test) through
// openapi-fetch, with the session's bearer token on every request.
import createClient, { type Middleware } from 'openapi-fetch';
import type { paths, components } from '../../../sdk/typescript/src/schema';
import { token } from '../session';

const bearer: Middleware = {
  onRequest({ request }) {
    const t = token();
    if (t) request.headers.set('authorization', `Bearer ${t}`);
    return request;
  },
};

/** The typed proxy client. */
export const api = createClient<paths>({ baseUrl: location.origin });
api.use(bearer);

export type Schemas = components['schemas'];
export type { paths };
