//! `plantd streams`: create or update plantd's streams and KV buckets on a
//! NATS server or cluster — the step a cloud cluster needs before edges and
//! functions connect (`plantd up` does it for the local server by itself) —
//! and, in a super-cluster, their mirrors in the other regions.
//!
//! * Streams and buckets go to the cluster (region) of the server the
//!   command is connected to, with `--replicas` replicas each.
//! * `--mirror-into <region>` adds, for every stream and for the stream
//!   under every bucket, a mirror placed in that region:
//!   [`mirror_name`]`(origin, region)`, e.g. `PLANTD_TELEMETRY-region-b` and
//!   `KV_plantd_identity-region-b`. A mirror keeps the origin's sequences,
//!   message ids and headers; it trails the origin by its lag (what the
//!   `plantd-mirror-lag` alarm watches, docs/deploy.md) and holds everything
//!   it has copied when the origin's region is gone
//!   (docs/decisions/0040-nats-backbone-and-cloud-template.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use async_nats::jetstream::{self, stream};
use plantd_shared::streams::{self, Settings};

/// What `plantd streams` sets up, and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// NATS server URL(s), comma separated; user and password may be in
    /// the URL (`tls://user:password@host:4222`).
    pub url: String,
    /// NATS credentials file (JWT + seed).
    pub creds: Option<PathBuf>,
    /// CA certificate(s) to verify the servers with (PEM); without it the
    /// system's roots.
    pub ca: Option<PathBuf>,
    /// Replicas per stream, bucket and mirror (3 in a cluster).
    pub replicas: usize,
    /// Regions (gateway names) to mirror every stream and bucket into.
    pub mirror_into: Vec<String>,
    /// How long telemetry, logs and alerts are kept (`None`: the default
    /// of [`Settings`]).
    pub retention: Option<Duration>,
    /// JetStream's de-duplication window (`None`: the default of
    /// [`Settings`]).
    pub duplicate_window: Option<Duration>,
}

impl Options {
    /// One server, no credentials, one replica, no mirrors.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            creds: None,
            ca: None,
            replicas: 1,
            mirror_into: Vec::new(),
            retention: None,
            duplicate_window: None,
        }
    }
}

/// The name of the mirror of stream `origin` in `region`.
pub fn mirror_name(origin: &str, region: &str) -> String {
    format!("{origin}-{region}")
}

/// Every stream a region mirror copies: plantd's streams, then the stream
/// under each KV bucket (`KV_<bucket>`).
pub fn mirrored_streams() -> Vec<String> {
    streams::STREAMS
        .iter()
        .map(|s| (*s).to_owned())
        .chain(streams::BUCKETS.iter().map(|b| format!("KV_{b}")))
        .collect()
}

/// The configuration of the mirror of `origin` (with configuration
/// `origin_config`) in `region`: the origin's limits and storage, `replicas`
/// replicas, placed in the region's cluster; read-only (a mirror takes no
/// publishes of its own) and readable with direct gets.
pub fn mirror_config(
    origin_config: &stream::Config,
    region: &str,
    replicas: usize,
) -> stream::Config {
    stream::Config {
        name: mirror_name(&origin_config.name, region),
        description: Some(format!(
            "plantd: mirror of {} in {region}",
            origin_config.name
        )),
        mirror: Some(stream::Source {
            name: origin_config.name.clone(),
            ..Default::default()
        }),
        storage: origin_config.storage,
        num_replicas: replicas,
        max_age: origin_config.max_age,
        max_bytes: origin_config.max_bytes,
        max_messages: origin_config.max_messages,
        max_messages_per_subject: origin_config.max_messages_per_subject,
        discard: origin_config.discard,
        deny_delete: origin_config.deny_delete,
        deny_purge: origin_config.deny_purge,
        allow_direct: true,
        placement: Some(stream::Placement {
            cluster: Some(region.to_owned()),
            tags: Vec::new(),
        }),
        ..Default::default()
    }
}

/// Connects as `options` say: credentials, CA, every URL of the list.
///
/// # Errors
/// When a file cannot be read or no server accepts the connection.
pub async fn connect(options: &Options) -> Result<async_nats::Client> {
    let mut opts = async_nats::ConnectOptions::new();
    if let Some(c) = &options.creds {
        opts = opts
            .credentials_file(c)
            .await
            .with_context(|| format!("cannot read credentials {}", c.display()))?;
    }
    if let Some(ca) = &options.ca {
        readable(ca)?;
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    anyhow::ensure!(
        !plantd_shared::nats_urls::server_urls(&options.url).is_empty(),
        "no NATS URL given"
    );
    plantd_shared::nats_urls::connect(&options.url, opts)
        .await
        .with_context(|| {
            format!(
                "cannot connect to {}",
                plantd_shared::nats_urls::redacted(&options.url)
            )
        })
}

fn readable(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .map(drop)
        .with_context(|| format!("cannot read {}", path.display()))
}

/// What [`ensure`] did: streams and buckets, then mirrors, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Created by this call.
    pub created: Vec<String>,
    /// Existed and were updated to the wanted configuration.
    pub updated: Vec<String>,
}

/// Creates or updates every stream and bucket with `options.replicas`
/// replicas, then every mirror of `options.mirror_into`. Idempotent.
///
/// # Errors
/// When JetStream refuses a stream, a bucket or a mirror (named in the
/// error) — e.g. a region that does not exist, or fewer servers than
/// replicas.
pub async fn ensure_with(js: &jetstream::Context, options: &Options) -> Result<Report> {
    let defaults = Settings::default();
    let settings = Settings {
        replicas: options.replicas,
        retention: options.retention.unwrap_or(defaults.retention),
        duplicate_window: options
            .duplicate_window
            .unwrap_or(defaults.duplicate_window),
        ..defaults
    };
    anyhow::ensure!(options.replicas >= 1, "--replicas must be at least 1");
    anyhow::ensure!(
        !settings.retention.is_zero() && !settings.duplicate_window.is_zero(),
        "--retention-days and --duplicate-window-mins must be above 0"
    );
    let done = streams::ensure(js, &settings).await?;
    let mut report = Report {
        created: done.created.iter().map(|s| (*s).to_owned()).collect(),
        updated: done.updated.iter().map(|s| (*s).to_owned()).collect(),
    };
    for region in &options.mirror_into {
        for origin in mirrored_streams() {
            let origin_config = js
                .get_stream(&origin)
                .await
                .with_context(|| format!("stream {origin}"))?
                .cached_info()
                .config
                .clone();
            let config = mirror_config(&origin_config, region, options.replicas);
            let name = config.name.clone();
            let existed = js.get_stream(&name).await.is_ok();
            js.create_or_update_stream(config)
                .await
                .with_context(|| format!("mirror {name} of {origin} in {region}"))?;
            if existed {
                report.updated.push(name);
            } else {
                report.created.push(name);
            }
        }
    }
    Ok(report)
}

/// `plantd streams`: connects, runs [`ensure_with`] and prints what was
/// created or updated.
///
/// # Errors
/// When the servers cannot be reached or refuse a stream, bucket or mirror.
pub async fn ensure(options: &Options) -> Result<()> {
    let client = connect(options).await?;
    let js = jetstream::new(client);
    let report = ensure_with(&js, options).await?;
    for name in &report.created {
        println!("created  {name}");
    }
    for name in &report.updated {
        println!("updated  {name}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mirror_copies_the_origin_limits_into_its_region() {
        let origin = streams::stream_config(streams::AUDIT, &Settings::default()).expect("known");
        let m = mirror_config(&origin, "region-b", 3);
        assert_eq!(m.name, "PLANTD_AUDIT-region-b");
        assert!(m.subjects.is_empty(), "a mirror takes no publishes");
        assert_eq!(
            m.mirror.as_ref().map(|s| s.name.as_str()),
            Some("PLANTD_AUDIT")
        );
        assert!(m.deny_delete && m.deny_purge, "the trail stays undeletable");
        assert_eq!(m.num_replicas, 3);
        assert_eq!(
            m.placement.and_then(|p| p.cluster).as_deref(),
            Some("region-b")
        );
        assert_eq!(
            mirrored_streams().len(),
            streams::STREAMS.len() + streams::BUCKETS.len()
        );
    }
}
