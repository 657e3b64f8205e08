//! `plantd-edge`: the MQTT 3.1.1 and 5.0 broker on site hardware.
//!
//! # Module map
//!
//! | module | what it does |
//! |---|---|
//! | [`server`] | binds listeners, accepts sockets (connection limit), runs until shutdown |
//! | [`link`] | one task per socket: handshake, QoS state machine, batched writes |
//! | [`link::socket`] | what a link reads and writes: TCP, or the local socket of the TLS and WebSocket bridges |
//! | [`tls`] | TLS listener: certificates (reloaded on SIGHUP), handshake, client-certificate common name, bridge |
//! | [`ws`] | WebSocket and secure WebSocket listeners: upgrade (path, subprotocol), message ⇄ byte-stream bridge |
//! | [`link::wire`] | translation between 3.1.1 packets and the 5.0 packets the link works with |
//! | [`router`] | the single owner of sessions, subscriptions and retained messages |
//! | [`router::subscriptions`] | subscription index (exact + wildcard, shared groups) |
//! | [`mailbox`] | a session's bounded delivery queue and its overflow policy |
//! | [`session`] | QoS in-flight state carried between connections |
//! | [`retained`] | retained message store |
//! | [`store`] | the durable session store (`<data-dir>/sessions.redb`): persistent sessions, offline queues, retained messages, written behind |
//! | [`message`] | publications, deliveries, wills |
//! | [`protocol`] | the wire format: framing, [`protocol::v4`], [`protocol::v5`] |
//! | [`auth`] | tokens at CONNECT, per-connection permissions, closing on expiry and revocation |
//! | [`owner`] | which organisation owns the site: `--org`, the site record in `plantd_sites`, its cached copy |
//! | [`hooks`] | extension points: publish hook (journal), authoriser |
//! | [`inject`] | [`inject::BrokerHandle`]: publications and subscriptions from inside the process — cloud commands and site service requests |
//! | [`journal_hook`] | the journal hook: which publications go up, journaled before they are acknowledged (the bridge's `Uplink` then publishes them) |
//! | [`status`] | the site status for the cloud's site health: put in `plantd_site_status` every few seconds |
//! | [`own_logs`] | the edge's own warnings and errors, journaled as log lines on `$plantd/log/plantd/edge` |
//! | [`analytics`] | analytics rules placed at the edge: followed from KV and cached, run on accepted publications, results through the journal and on `$plantd/agg|alert/…` |
//! | [`edge`] | the whole edge: broker + journal + JetStream uplink, downlink and site services |
//! | [`metrics`] | counters, Prometheus text, `$SYS` values |
//! | [`http`] | `/healthz` and `/metrics` |
//! | [`config`] | the configuration struct |
//!
//! Topic validation and matching come from `plantd_shared::topic`, the one
//! home of those rules. See `docs/broker.md` for the design and the limits.

pub mod analytics;
pub mod auth;
pub mod clock;
pub mod config;
pub mod edge;
pub mod hooks;
pub mod http;
pub mod inject;
pub mod journal_hook;
pub mod link;
pub mod mailbox;
pub mod memory;
pub mod message;
pub mod metrics;
pub mod own_logs;
pub mod owner;
pub mod protocol;
pub mod retained;
pub mod router;
pub mod server;
pub mod session;
pub mod status;
pub mod store;
pub mod tls;
pub mod ws;

pub use clock::Clock;
pub use config::{Config, Limits};
pub use server::{Broker, Error, run};
