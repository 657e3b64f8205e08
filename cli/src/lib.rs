//! The `plantd` command line.
//!
//! | module | what it does |
//! |---|---|
//! | [`streams`] | `plantd streams`: create or update the streams and buckets on any NATS server |
//! | [`up`] | `plantd up`: the whole stack on one machine (nats-server with JetStream, streams and buckets; later the edge broker and the functions) |
//!
//! `main.rs` only parses arguments and calls into these modules.

pub mod streams;
pub mod up;
