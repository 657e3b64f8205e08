//! `plantd-client`: the plantd client for Rust (async, Tokio).
//!
//! | module | what it holds |
//! |---|---|
//! | [`client`] | [`Plantd`]: login or a fixed token, the REST calls, the live connection, state with ETags, history as a stream, service calls |
//! | [`rest`] | the REST core the generated operations run on: bearer token, one renewal on 401, time limits, [`Answer`] |
//! | [`proxy`], [`identity`] | generated from the proxy's `/openapi.json` and identity's `/v1/identity/openapi.json`: `types`, `params`, and one method on [`Rest`] per operation |
//! | [`live`] | [`Live`]: one WebSocket, subscriptions and log tails as `Stream`s that resume at the last sequence + 1 across reconnects, their confirmations, commands, [`LinkState`]s |
//! | [`alerting`] | typed calls for alert rules, alerts, silences, notification channels and analytics rules (answers the OpenAPI document does not type yet) |
//! | [`audit`] | why a record breaks the audit chain, typed ([`audit::BrokenReason`]) |
//! | [`auth`] | [`TokenSource`]: password sessions with refresh-token rotation, fixed tokens; [`Secret`] |
//! | [`credentials`] | login and refresh for programs that store their tokens between runs (the `plantd` CLI) |
//! | [`state`] | the state scopes and their keys with revisions, typed ([`Rest::list_scopes`], [`Rest::list_keys`]) |
//! | [`error`] | [`Error`]: the API's `{error, message}` and status, or the client's own failure |
//!
//! Generated operations are named `<method>_<path words>`:
//! `GET /v1/sites/{site}/last` is [`Rest::get_sites_site_last`],
//! `POST /v1/auth/login` is `post_auth_login`, `PUT /v1/state/{scope}/{key}`
//! is `put_state_scope_key`. Query and header parameters come in a
//! `params::<Name>Params` struct.
//!
//! ```no_run
//! # async fn demo() -> Result<(), plantd_client::Error> {
//! use futures::StreamExt as _;
//! use plantd_client::{Plantd, proxy};
//!
//! let plantd = Plantd::login("http://127.0.0.1:8080", "me@example.com", "secret").await?;
//! let last = plantd
//!     .rest()
//!     .get_sites_site_last("plant-1", &proxy::params::GetSitesSiteLastParams { topic: "line1/temp".into() })
//!     .await?
//!     .value;
//! println!("{} = {:?}", last.topic, last.value);
//! let mut live = plantd.live().subscribe("plant-1", "line1/+/temp");
//! while let Some(m) = live.next().await {
//!     let m = m?; // Error::Refused when the token is revoked
//!     println!("{} {}", m.topic, m.text().unwrap_or("<bytes>"));
//! }
//! # Ok(()) }
//! ```
//!
//! Every call can be cancelled by dropping its future; each has a time
//! limit ([`Options::timeout`]). Secrets (tokens, passwords) never appear
//! in `Debug` output.

pub mod alerting;
pub mod audit;
pub mod auth;
pub mod client;
pub mod credentials;
pub mod error;
mod generated;
pub mod live;
pub mod rest;
pub mod state;

pub use auth::{Secret, TokenSource};
pub use client::{Options, Plantd, Versioned};
pub use error::Error;
pub use generated::{identity, proxy};
pub use live::{
    Confirmation, LinkState, Live, LiveOptions, LogLine, Message, SubscribeOptions, Subscription,
    Tail, TailOptions,
};
pub use rest::{Answer, Call, Raw, RawBody, Rest};
