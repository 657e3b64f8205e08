//! The `plantd` command line.
//!
//! | module | what it does |
//! |---|---|
//! | [`analytics`] | `plantd analytics rules list\|get\|put\|delete` and `plantd analytics results` over the proxy |
//! | [`rules`] | `plantd rules list\|get\|apply\|delete`: alert rules over the proxy, checked locally first |
//! | [`alerts`] | `plantd alerts list\|ack\|history\|silence\|silences\|unsilence` over the proxy |
//! | [`channels`] | `plantd channels list\|get\|apply\|delete\|test`: alert notification channels over the proxy |
//! | [`audit`] | `plantd audit [filters]` and `plantd audit verify` over the identity API |
//! | [`dlq`] | `plantd dlq list\|replay`: items parked by the trigger in `PLANTD_DLQ`, over NATS directly |
//! | [`functions`] | `plantd functions`: the logger, the alert engine, the notifier and analytics on one trigger, alone against any NATS (and the same set `plantd up` runs) |
//! | [`commands`] | `whoami`, `state`, `command`, `call`, `history` over the HTTP API |
//! | [`logs`] | `plantd logs [--filter …] [-f]`: log lines from `/v1/logs`, or live (`Live::tail`) |
//! | [`live`] | `plantd sub` and `plantd pub` on the SDK's `Live` (`/v1/ws`): sequenced subscriptions resumed across reconnects and token refreshes |
//! | [`session`] | profiles, login, tokens (0600, refreshed automatically), the `plantd-client` every API command goes through, exit codes |
//! | [`sites`] | `plantd sites list\|create\|get\|delete` over the identity API |
//! | [`streams`] | `plantd streams`: create or update the streams and buckets on any NATS server |
//! | [`supervise`] | the restart policy `plantd up` keeps its components running with (growing delays, crash-loop detection) |
//! | [`up`] | `plantd up`: the whole stack on one machine — nats-server with JetStream, streams and buckets, the functions, the edge broker — supervised |
//!
//! The binary only parses arguments and calls into these modules:
//! `main.rs` (the runtime, exit codes), `args.rs` (the verbs; each command
//! group's subcommands under `args/`), `input.rs` (the password, a payload
//! file) and `dispatch.rs` (each verb to the module that does it).

pub mod alerts;
pub mod analytics;
pub mod audit;
pub mod channels;
pub mod commands;
pub mod dlq;
pub mod functions;
pub mod live;
pub mod logs;
pub mod rules;
pub mod session;
pub mod sites;
pub mod streams;
pub mod supervise;
pub mod up;
