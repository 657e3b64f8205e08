//! `plantd-shared`: the contracts every part of plantd agrees on.
//!
//! | module | what it holds |
//! |---|---|
//! | [`topic`] | MQTT topic names and filters, the one matching function, `$share` parsing |
//! | [`subject`] | the reversible MQTT topic ⇄ NATS subject mapping, site names |
//! | `http` (feature `http`) | the JSON error type and extractors every HTTP API shares |
//! | `aws` (feature `aws`) | the AWS SDK configuration the functions share (rustls with ring) |
//! | `secrets` (feature `aws`) | reading a function's Secrets Manager secret, one error type |
//! | [`headers`] | NATS header names and their meaning, uplink message ids |
//! | [`lease`] | the site lease: one live edge journal per site (`plantd_edge_leases`) |
//! | [`streams`] | stream and KV bucket names, subjects, and idempotent creation |
//! | [`audit`] | the audit trail: records, the hash chain per organisation in `PLANTD_AUDIT`, the `Auditor`, reading and verifying |
//! | [`revocations`] | watching `plantd_revoked` for revoked token ids (the edge's mirror, the proxy's sockets) |
//! | [`device_certs`] | devices that log in with their client certificate: fingerprints in `plantd_device_certs`, followed by their site's edge |
//! | [`sites`] | site records in `plantd_sites`, and the one rule for who may act on a site (its organisation, or the bootstrap superadmin) |
//! | [`site_status`] | the status each edge publishes to `plantd_site_status` (site health), and when the cloud counts it connected |
//! | [`commands`] | held commands: records in `plantd_commands` the edge writes and the proxy lists and cancels |
//! | [`claims`] | JWT claims and permission checks (`can_publish`, `can_subscribe`, `allows`) |
//! | [`jwt`] | signing and verifying tokens (EdDSA, ES256; never HS256) against a JWKS |
//! | [`config`] | TOML file + `PLANTD_*` environment configuration with one-line errors |
//! | [`logging`] | tracing set-up (text or JSON) |
//! | [`log_ship`] | shipping plantd's own warnings and errors to `PLANTD_LOGS` |
//! | [`tools`] | locating the real external programs (`nats-server`, `mosquitto_pub`, ...) |
//! | [`private_file`] | files only their owner reads (0600), made once on first start |
//! | [`process`] | supervising child programs: start, await readiness, stop |
//! | [`local_nats`] | a local nats-server with JetStream, for `plantd up` and tests |
//!
//! If you are about to write a topic mapping, a filter match or a permission
//! check anywhere else, call the one here instead.

pub mod audit;
#[cfg(feature = "aws")]
pub mod aws;
pub mod claims;
pub mod commands;
pub mod config;
pub mod device_certs;
pub mod headers;
#[cfg(feature = "http")]
pub mod http;
pub mod jwt;
pub mod lease;
pub mod local_nats;
pub mod log_ship;
pub mod logging;
pub mod nats_urls;
pub mod private_file;
pub mod process;
pub mod revocations;
#[cfg(feature = "aws")]
pub mod secrets;
pub mod shutdown;
pub mod site_status;
pub mod sites;
pub mod streams;
pub mod subject;
pub mod tools;
pub mod topic;
