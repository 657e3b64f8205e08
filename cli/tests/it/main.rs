//! Every integration test of this crate, in one binary: one link instead
//! of one per file keeps the cold build (and its disk) small. Each file
//! is a module; shared helpers are the directories beside them.

mod common;

mod alerts;
mod alerts_devices;
mod analytics;
mod analytics_crash;
mod analytics_e2e;
mod app;
mod audit;
mod channels;
mod commands;
mod dlq;
mod expiry;
mod functions_crash;
mod live;
mod logs;
mod sdk_python;
mod sdk_typescript;
mod session;
mod site_health;
mod sites;
mod supervise;
mod up;
