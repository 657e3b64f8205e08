//! `plantd-cluster-tests`: the NATS backbone as it is deployed, for tests.
//!
//! Everything here runs the very files in `infra/nats/` with real
//! `nats-server` processes; only their environment (ports, paths,
//! certificates, passwords) is the test's.
//!
//! | module | what it runs |
//! |---|---|
//! | [`pki`] | a CA and a node certificate (server and client), made with rcgen |
//! | [`cluster`] | [`SuperCluster`]: regions of `cluster-node.conf` nodes joined by gateways; nodes killed and restarted |
//! | [`leaf`] | [`Leaf`]: a site's `leaf-site.conf` connected to a region |
//! | [`edge`] | the real `plantd-edge` binary with its uplink to a region |
//!
//! A missing `nats-server` fails the test with a message naming
//! `scripts/setup`; nothing is skipped.

pub mod cluster;
pub mod edge;
pub mod leaf;
pub mod pki;

pub use cluster::{Region, SuperCluster, User};
pub use leaf::Leaf;
pub use pki::Pki;

use std::path::PathBuf;

/// `infra/nats/<file>`.
pub fn infra_nats(file: &str) -> PathBuf {
    plantd_shared::tools::workspace_root()
        .join("infra")
        .join("nats")
        .join(file)
}

/// A free loopback TCP port (bound once and released; the server binds it
/// right after).
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

/// A random password of letters and digits (what the configs accept
/// unquoted).
pub fn password() -> String {
    use rand::Rng as _;
    use rand::distributions::Alphanumeric;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}
