//! Every integration test of this crate, in one binary: one link instead
//! of one per file keeps the cold build (and its disk) small. Each file
//! is a module; shared helpers are the directories beside them.

mod aws_common;
mod common;

mod aggregates;
mod alerts;
mod analytics_rules;
mod audit;
mod aws_fanout;
mod aws_lambda;
mod aws_orgs;
mod aws_registry;
mod aws_sequenced;
mod aws_template;
mod aws_websocket;
mod channels;
mod health;
mod history_downsample;
mod hostile_input;
mod keys;
mod live;
mod live_auth;
mod logs;
mod openapi;
mod orgs;
mod pending;
mod revocation;
mod rule_compiler;
mod site;
mod state;
