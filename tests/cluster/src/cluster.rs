//! Regions of `infra/nats/cluster-node.conf` nodes joined by gateways into
//! one super-cluster, as deployed, on loopback ports.

use std::path::PathBuf;
use std::time::Duration;

use plantd_shared::process::ManagedProcess;
use plantd_testkit::{eventually, tool};
use tempfile::TempDir;
use tokio::process::Command;

use crate::{Pki, infra_nats, password};

/// How long a node may take to say it is ready, and a cluster to elect
/// its JetStream meta leader.
const START: Duration = Duration::from_secs(60);

/// The users of `infra/nats/accounts.conf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User {
    /// The functions, the forwarder, `plantd streams`.
    Plantd,
    /// The edge brokers.
    Edge,
    /// The system account.
    Sys,
}

impl User {
    /// The user name in the config.
    pub fn name(self) -> &'static str {
        match self {
            User::Plantd => "plantd",
            User::Edge => "edge",
            User::Sys => "sys",
        }
    }
}

/// The passwords every node is started with.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// `NATS_ROUTE_PASSWORD`.
    pub route: String,
    /// `NATS_GATEWAY_PASSWORD`.
    pub gateway: String,
    /// `NATS_PLANTD_PASSWORD`.
    pub plantd: String,
    /// `NATS_EDGE_PASSWORD`.
    pub edge: String,
    /// `NATS_LEAF_PASSWORD`.
    pub leaf: String,
    /// `NATS_SYS_PASSWORD`.
    pub sys: String,
}

impl Secrets {
    fn new() -> Self {
        Self {
            route: password(),
            gateway: password(),
            plantd: password(),
            edge: password(),
            leaf: password(),
            sys: password(),
        }
    }

    /// The password of `user`.
    pub fn of(&self, user: User) -> &str {
        match user {
            User::Plantd => &self.plantd,
            User::Edge => &self.edge,
            User::Sys => &self.sys,
        }
    }
}

/// One node: its name, ports and store, and the process while it runs.
#[derive(Debug)]
pub struct Node {
    /// `NATS_SERVER_NAME`.
    pub name: String,
    /// `NATS_CLIENT_PORT`.
    pub client: u16,
    /// `NATS_CLUSTER_PORT`.
    pub cluster: u16,
    /// `NATS_GATEWAY_PORT`.
    pub gateway: u16,
    /// `NATS_LEAF_PORT`.
    pub leaf: u16,
    /// `NATS_STORE_DIR`.
    store: PathBuf,
    /// Its whole environment (kept for restarts).
    env: Vec<(String, String)>,
    /// The running server; `None` while stopped.
    proc: Option<ManagedProcess>,
}

impl Node {
    /// Starts the server and waits until it accepts clients.
    ///
    /// # Panics
    /// When it is already running or does not start.
    pub async fn start(&mut self) {
        assert!(self.proc.is_none(), "{} is already running", self.name);
        let mut cmd = Command::new(tool("nats-server"));
        cmd.arg("-c")
            .arg(infra_nats("cluster-node.conf"))
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let proc = ManagedProcess::spawn(format!("nats-server {}", self.name), cmd, START, |l| {
            l.contains("Server is ready")
        })
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        self.proc = Some(proc);
    }

    /// Kills the server (SIGKILL), keeping its store.
    ///
    /// # Panics
    /// When it cannot be reaped.
    pub async fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill()
                .await
                .unwrap_or_else(|e| panic!("kill {}: {e}", self.name));
        }
    }

    /// Whether the server runs.
    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    /// Its recent output (for failure messages).
    pub fn tail(&self) -> Vec<String> {
        self.proc
            .as_ref()
            .map(ManagedProcess::tail)
            .unwrap_or_default()
    }

    /// Its JetStream store.
    pub fn store(&self) -> &std::path::Path {
        &self.store
    }
}

/// One region: a cluster of nodes, named as its gateway.
#[derive(Debug)]
pub struct Region {
    /// `NATS_REGION`: the cluster and gateway name.
    pub name: String,
    /// Its nodes.
    pub nodes: Vec<Node>,
}

impl Region {
    /// `tls://<user>:<password>@127.0.0.1:<port>` of every node, comma
    /// separated (what `--nats-url` takes).
    pub fn urls(&self, user: User, secrets: &Secrets) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "tls://{}:{}@127.0.0.1:{}",
                    user.name(),
                    secrets.of(user),
                    n.client
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Regions of three-node (or other size) clusters, joined by gateways,
/// each node running `infra/nats/cluster-node.conf`. Dropping it kills
/// every node and removes the stores.
#[derive(Debug)]
pub struct SuperCluster {
    /// Owns the stores.
    _dir: TempDir,
    /// The certificates every node uses.
    pub pki: Pki,
    /// The passwords every node uses.
    pub secrets: Secrets,
    /// The regions, in the order given to [`SuperCluster::start`].
    pub regions: Vec<Region>,
}

impl SuperCluster {
    /// Starts `regions` — (name, nodes) each — and waits until JetStream
    /// answers in every region (its meta leader is elected).
    ///
    /// # Panics
    /// When a node does not start or JetStream does not become available.
    pub async fn start(regions: &[(&str, usize)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("plantd-cluster-")
            .tempdir()
            .expect("temporary directory for the stores");
        let pki = Pki::new();
        let secrets = Secrets::new();
        // Every port is bound at once and released together, so no two
        // nodes of this cluster are given the same one.
        let held: Vec<std::net::TcpListener> =
            (0..regions.iter().map(|(_, n)| 4 * n).sum::<usize>())
                .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
                .collect();
        let mut ports = held
            .iter()
            .map(|l| l.local_addr().expect("bound address").port())
            .collect::<Vec<_>>()
            .into_iter();
        let mut free_port = move || ports.next().expect("a port for every node");
        let mut planned: Vec<Region> = regions
            .iter()
            .map(|(name, n)| Region {
                name: (*name).to_owned(),
                nodes: (1..=*n)
                    .map(|i| {
                        let node = format!("{name}-{i}");
                        Node {
                            store: dir.path().join(&node),
                            name: node,
                            client: free_port(),
                            cluster: free_port(),
                            gateway: free_port(),
                            leaf: free_port(),
                            env: Vec::new(),
                            proc: None,
                        }
                    })
                    .collect(),
            })
            .collect();
        drop(held);
        let gateways = planned
            .iter()
            .map(|r| {
                let urls = r
                    .nodes
                    .iter()
                    .map(|n| format!("nats://gateway:{}@127.0.0.1:{}", secrets.gateway, n.gateway))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("{{name: {}, urls: [{urls}]}}", r.name)
            })
            .collect::<Vec<_>>()
            .join(", ");
        let gateways = format!("[{gateways}]");
        for region in &mut planned {
            let routes = region
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "nats-route://route:{}@127.0.0.1:{}",
                        secrets.route, n.cluster
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let routes = format!("[{routes}]");
            for node in &mut region.nodes {
                let path = |p: &std::path::Path| p.display().to_string();
                node.env = [
                    ("NATS_SERVER_NAME", node.name.clone()),
                    ("NATS_REGION", region.name.clone()),
                    ("NATS_HOST", "127.0.0.1".to_owned()),
                    ("NATS_CLIENT_PORT", node.client.to_string()),
                    ("NATS_CLUSTER_PORT", node.cluster.to_string()),
                    ("NATS_GATEWAY_PORT", node.gateway.to_string()),
                    ("NATS_LEAF_PORT", node.leaf.to_string()),
                    ("NATS_STORE_DIR", path(&node.store)),
                    ("NATS_MAX_FILE_STORE", "1GB".to_owned()),
                    ("NATS_MAX_MEMORY_STORE", "256MB".to_owned()),
                    ("NATS_TLS_CERT", path(&pki.cert)),
                    ("NATS_TLS_KEY", path(&pki.key)),
                    ("NATS_TLS_CA", path(&pki.ca)),
                    ("NATS_ROUTE_PASSWORD", secrets.route.clone()),
                    ("NATS_ROUTES", routes.clone()),
                    ("NATS_GATEWAY_PASSWORD", secrets.gateway.clone()),
                    ("NATS_GATEWAYS", gateways.clone()),
                    ("NATS_PLANTD_PASSWORD", secrets.plantd.clone()),
                    ("NATS_EDGE_PASSWORD", secrets.edge.clone()),
                    ("NATS_LEAF_PASSWORD", secrets.leaf.clone()),
                    ("NATS_SYS_PASSWORD", secrets.sys.clone()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            }
        }
        let mut this = Self {
            _dir: dir,
            pki,
            secrets,
            regions: planned,
        };
        for region in &mut this.regions {
            for node in &mut region.nodes {
                node.start().await;
            }
        }
        for i in 0..this.regions.len() {
            this.jetstream_ready(i).await;
        }
        this
    }

    /// The region named `name`.
    ///
    /// # Panics
    /// When there is none.
    pub fn region(&self, name: &str) -> &Region {
        self.regions
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no region {name}"))
    }

    /// The region named `name`, to kill or start its nodes.
    ///
    /// # Panics
    /// When there is none.
    pub fn region_mut(&mut self, name: &str) -> &mut Region {
        self.regions
            .iter_mut()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no region {name}"))
    }

    /// Every node's URL in region `name` for `user` (see [`Region::urls`]).
    pub fn urls(&self, region: &str, user: User) -> String {
        self.region(region).urls(user, &self.secrets)
    }

    /// Connection options of `user`: TLS trusting the test CA, and the
    /// user's password.
    pub fn options(&self, user: User) -> async_nats::ConnectOptions {
        async_nats::ConnectOptions::new()
            .add_root_certificates(self.pki.ca.clone())
            .require_tls(true)
            .user_and_password(user.name().to_owned(), self.secrets.of(user).to_owned())
    }

    /// A client of `user` to the running nodes of `region` (it fails over
    /// between them).
    ///
    /// # Panics
    /// When none of them accepts it.
    pub async fn client(&self, region: &str, user: User) -> async_nats::Client {
        let urls: Vec<String> = self
            .region(region)
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| format!("tls://127.0.0.1:{}", n.client))
            .collect();
        self.options(user)
            .connect(urls.clone())
            .await
            .unwrap_or_else(|e| panic!("connect to {urls:?} as {}: {e}", user.name()))
    }

    /// A JetStream context of the `plantd` user in `region`.
    pub async fn jetstream(&self, region: &str) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client(region, User::Plantd).await)
    }

    /// Waits until JetStream answers account requests in region `i`.
    async fn jetstream_ready(&self, i: usize) {
        let region = &self.regions[i];
        let js = self.jetstream(&region.name).await;
        eventually(START, &format!("JetStream in {}", region.name), || {
            let js = js.clone();
            async move { js.query_account().await.ok() }
        })
        .await;
    }

    /// The recent output of every node, for failure messages.
    pub fn tails(&self) -> String {
        let mut out = String::new();
        for r in &self.regions {
            for n in &r.nodes {
                out.push_str(&format!("--- {}\n{}\n", n.name, n.tail().join("\n")));
            }
        }
        out
    }
}
