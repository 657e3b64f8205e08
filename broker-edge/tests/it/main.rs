//! Every integration test of this crate, in one binary: one link instead
//! of one per file keeps the cold build (and its disk) small. Each file
//! is a module; shared helpers are the directories beside them.

mod common;
mod edge_proc;
mod pki;
mod ws_client;

mod auth;
mod certificate_login;
mod chaos;
mod cli;
mod codec_fuzz;
mod crash_sessions;
mod downlink;
mod edge_analytics;
mod edge_analytics_crash;
mod edge_analytics_owner;
mod enhanced_auth;
mod hooks;
mod idle_buffers;
mod keepalive;
mod key_refresh;
mod limits;
mod logs;
mod nats_tls;
mod orgs;
mod packaging;
mod paho;
mod persistence;
mod reload;
mod site_owner;
mod spec5;
mod spec5_rows;
mod tls;
mod uplink;
mod v311;
mod v5;
mod ws;
