//! The NATS backbone as deployed, proved against real servers: every file
//! of `infra/nats/` run by `nats-server` (three-node clusters, two regions
//! joined by gateways, a site leaf node), the real `plantd-edge` binary
//! uplinking to them, and `plantd streams` setting them up. One test
//! binary; each file is a module.

mod common;

mod auth;
mod configs;
mod leaf;
mod node_loss;
mod regions;
mod streams_cmd;
