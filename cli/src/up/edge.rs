//! The edge broker `plantd up` runs, bridged to the local NATS and trusting
//! the local identity's keys, and its site registered to the bootstrap
//! organisation.

use anyhow::Result;

use super::{UpConfig, status};

/// The edge broker's task: what `plantd_edge::edge::run` ended with.
pub(super) type EdgeTask = tokio::task::JoinHandle<Result<(), plantd_edge::edge::EdgeError>>;

/// Runs the edge broker bridged to the local NATS, trusting the local
/// identity service's keys.
pub(super) async fn start_edge(
    config: &UpConfig,
    nats_url: &str,
    functions_url: &str,
) -> Result<(
    tokio::sync::oneshot::Sender<()>,
    EdgeTask,
    std::net::SocketAddr,
)> {
    let e = &config.edge;
    let mut edge = plantd_edge::Config {
        site: e.site.clone(),
        mqtt_listen: e.mqtt_listen.clone(),
        http_listen: e.http_listen.clone(),
        data_dir: Some(config.data_dir.join("edge")),
        allow_anonymous: e.allow_anonymous,
        // The site is registered to the bootstrap organisation at start
        // (`register_site`): only its tokens are let in.
        org: Some(plantd_shared::sites::BOOTSTRAP_ORG.to_owned()),
        jwks_url: Some(format!("{functions_url}/.well-known/jwks.json")),
        ..plantd_edge::Config::default()
    };
    edge.uplink.nats_url = Some(nats_url.to_owned());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(plantd_edge::edge::run(
        edge,
        async move {
            let _ = stopped.await;
        },
        move |listening: plantd_edge::server::Listening| {
            let _ = ready_tx.send((listening.mqtt, listening.http));
        },
    ));
    let (mqtt, http) = match ready_rx.await {
        Ok(a) => a,
        Err(_) => {
            let why = match task.await {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(())) => "stopped".into(),
                Err(e) => e.to_string(),
            };
            return Err(anyhow::anyhow!("the edge broker did not start: {why}"));
        }
    };
    status(
        "edge",
        "ready",
        format_args!(
            "mqtt://{mqtt}  (site {}, bridged to NATS; health http://{http}/readyz, metrics /metrics{})",
            e.site,
            if e.allow_anonymous {
                "; ANONYMOUS ACCESS ON"
            } else {
                "; clients need a token"
            }
        ),
    );
    Ok((stop, task, mqtt))
}

/// Registers the edge's site to the bootstrap organisation (idempotent: a
/// restart finds it registered).
///
/// # Errors
/// When the site name is invalid, the registry unreachable, or another
/// organisation owns the site.
pub(super) async fn register_site(state: &plantd_identity::AppState, site: &str) -> Result<()> {
    use plantd_shared::sites::{BOOTSTRAP_ORG, Registered, SitesError};
    let id =
        plantd_shared::subject::Site::new(site).map_err(|e| anyhow::anyhow!("edge site: {e}"))?;
    match state
        .sites
        .register(&id, BOOTSTRAP_ORG, "local site (plantd up)")
        .await
    {
        Ok(Registered::Created) => status(
            "site",
            "registered",
            format_args!("{site} (organisation {BOOTSTRAP_ORG})"),
        ),
        Ok(Registered::Existed) => status(
            "site",
            "ready",
            format_args!("{site} (organisation {BOOTSTRAP_ORG})"),
        ),
        Err(SitesError::OwnedByOther { org, .. }) => {
            return Err(anyhow::anyhow!(
                "site {site} is registered to organisation {org}; plantd up runs its edge for organisation {BOOTSTRAP_ORG}: choose another site or delete it (plantd sites delete {site})"
            ));
        }
        Err(e) => return Err(anyhow::anyhow!("site registry: {e}")),
    }
    Ok(())
}
