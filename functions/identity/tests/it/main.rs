//! Every integration test of this crate, in one binary: one link instead
//! of one per file keeps the cold build (and its disk) small. Each file
//! is a module; shared helpers are the directories beside them.

mod common;

mod api;
mod audit;
mod audit_chain;
mod device_certs;
mod keys;
mod lambda;
mod openapi_routes;
mod revocation;
mod routes;
mod secrets;
mod ship_logs;
mod sites;
mod takeover;
mod template;
mod throttle;
