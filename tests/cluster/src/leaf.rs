//! A site's NATS leaf node (`infra/nats/leaf-site.conf`) connected to a
//! region of a [`SuperCluster`].

use std::time::Duration;

use plantd_shared::process::ManagedProcess;
use plantd_testkit::tool;
use tempfile::TempDir;
use tokio::process::Command;

use crate::{SuperCluster, free_port, infra_nats, password};

/// A running leaf node. Dropping it kills the server and removes its store.
#[derive(Debug)]
pub struct Leaf {
    /// The server.
    _proc: ManagedProcess,
    /// Owns its store.
    _dir: TempDir,
    /// `NATS_CLIENT_PORT`.
    pub port: u16,
    /// `NATS_EDGE_PASSWORD` of the leaf (its local edge user).
    pub edge_password: String,
}

impl Leaf {
    /// Starts the leaf of `site`, connected to every node of `region`, and
    /// waits until its leaf connection is up.
    ///
    /// # Panics
    /// When it does not start or connect within 30 s.
    pub async fn start(cluster: &SuperCluster, site: &str, region: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("plantd-leaf-")
            .tempdir()
            .expect("temporary directory for the leaf's store");
        let hubs = cluster
            .region(region)
            .nodes
            .iter()
            .map(|n| format!("tls://leaf:{}@127.0.0.1:{}", cluster.secrets.leaf, n.leaf))
            .collect::<Vec<_>>()
            .join(", ");
        let port = free_port();
        let edge_password = password();
        let path = |p: &std::path::Path| p.display().to_string();
        let mut cmd = Command::new(tool("nats-server"));
        cmd.arg("-c")
            .arg(infra_nats("leaf-site.conf"))
            .env_clear()
            .env("NATS_SERVER_NAME", format!("leaf-{site}"))
            .env("PLANTD_SITE", site)
            .env("NATS_HOST", "127.0.0.1")
            .env("NATS_CLIENT_PORT", port.to_string())
            .env("NATS_STORE_DIR", path(&dir.path().join("store")))
            .env("NATS_MAX_FILE_STORE", "256MB")
            .env("NATS_MAX_MEMORY_STORE", "64MB")
            .env("NATS_TLS_CERT", path(&cluster.pki.cert))
            .env("NATS_TLS_KEY", path(&cluster.pki.key))
            .env("NATS_TLS_CA", path(&cluster.pki.ca))
            .env("NATS_EDGE_PASSWORD", &edge_password)
            .env("NATS_HUB_URLS", format!("[{hubs}]"));
        let proc = ManagedProcess::spawn(
            format!("nats-server leaf-{site}"),
            cmd,
            Duration::from_secs(30),
            |l| l.contains("Leafnode connection created"),
        )
        .await
        .unwrap_or_else(|e| panic!("leaf of {site}: {e}"));
        Self {
            _proc: proc,
            _dir: dir,
            port,
            edge_password,
        }
    }

    /// A client of the leaf's local edge user over TLS trusting `ca`.
    ///
    /// # Panics
    /// When the leaf refuses it.
    pub async fn client(&self, cluster: &SuperCluster) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .add_root_certificates(cluster.pki.ca.clone())
            .require_tls(true)
            .user_and_password("edge".to_owned(), self.edge_password.clone())
            .connect(format!("tls://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| panic!("connect to the leaf: {e}"))
    }
}
