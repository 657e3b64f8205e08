/**
 * The plantd client for TypeScript and JavaScript (Node ≥ 20 and browsers,
 * no polyfills): typed REST calls generated from the proxy's and
 * identity's OpenAPI documents, password login with refresh-token rotation or a fixed token,
 * and live subscriptions as async iterators that resume across reconnects.
 *
 * ```ts
 * const plantd = await Plantd.login('http://127.0.0.1:8080', 'me@example.com', password);
 * for await (const m of plantd.live.subscribe('plant-1', 'line1/+/temp')) console.log(m.topic, m.payload);
 * ```
 */
export {
  Plantd,
  type PlantdOptions,
  type Schemas,
  type Versioned,
  type paths,
  type IdentitySchemas,
  type IdentityPaths,
} from './client.js';
export { ClientCredentials, PasswordSession, StaticToken, type TokenSource, type Tokens } from './auth.js';
export { PlantdError, RefusedError } from './errors.js';
export { Live, LinkState, Subscription, type LiveMessage, type LiveOptions, type LogLine, type PublishOptions, type Sent, type SubscribeOptions, type TailOptions } from './live.js';
