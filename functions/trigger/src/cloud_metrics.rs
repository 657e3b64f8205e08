//! The deployment's own CloudWatch metrics (feature `aws`), put by the
//! forwarder because it is the one long-running part next to NATS that
//! already knows them: each of its consumers' pending count, and every
//! site's journal backlog from the edges' statuses
//! (docs/decisions/0044-cloud-metrics-and-lambda-size.md).
//!
//! ## Contract
//! - Every [`CloudMetricsConfig::interval_ms`] (60 s: the alarms' period)
//!   the forwarder writes CloudWatch embedded metric format (EMF) documents
//!   with `PutLogEvents` to log group [`log_group`]`(stage)`; CloudWatch
//!   extracts the metrics into namespace [`namespace`]`(stage)`, the
//!   namespace of `infra/template.yaml`'s `ConsumerLagAlarm` and
//!   `EdgeBacklogAlarm` (a test reads both).
//! - [`CONSUMER_PENDING`]: one document per consumer whose lag is known,
//!   with dimensions [`DIM_FUNCTION`] and [`DIM_STREAM`] and once more
//!   without dimensions (what the alarm watches, `Maximum` over the
//!   consumers). A consumer whose lag cannot be read (NATS unreachable)
//!   is left out: the alarm sees missing data, never a false 0.
//! - [`EDGE_BACKLOG_MESSAGES`] (without dimensions): the largest journal
//!   backlog over the sites whose edge is connected
//!   ([`plantd_shared::site_status::connected`]); the document names that
//!   site. [`EDGES_NOT_CONNECTED`]: sites whose newest status is stale and
//!   does not say the edge stopped — an uplink that is down cannot report
//!   its backlog, so it shows here instead. Not published when the status
//!   bucket cannot be read.
//! - The log stream is `plantd-forwarder/<host>/<pid>`, created on first use;
//!   a failed put is logged and retried at the next interval.

use std::time::Duration;

use async_nats::jetstream;
use aws_sdk_cloudwatchlogs::error::DisplayErrorContext;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use futures::StreamExt as _;
use plantd_shared::site_status::{self, LinkState, SiteStatus};
use plantd_shared::streams::SITE_STATUS_BUCKET;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::metrics::{ConsumerHealth, Status};

/// Metric: items of a consumer's stream not yet delivered to it.
pub const CONSUMER_PENDING: &str = "ConsumerPending";
/// Metric: the largest journal backlog (messages JetStream has not
/// acknowledged) over the connected sites.
pub const EDGE_BACKLOG_MESSAGES: &str = "EdgeBacklogMessages";
/// Metric: sites whose edge stopped reporting without a clean stop.
pub const EDGES_NOT_CONNECTED: &str = "EdgesNotConnected";
/// Dimension of [`CONSUMER_PENDING`]: the function.
pub const DIM_FUNCTION: &str = "Function";
/// Dimension of [`CONSUMER_PENDING`]: the stream.
pub const DIM_STREAM: &str = "Stream";
/// The metrics' unit.
pub const UNIT: &str = "Count";

/// The metrics' namespace for a stage (`plantd/<stage>`).
pub fn namespace(stage: &str) -> String {
    format!("plantd/{stage}")
}

/// The log group the documents go to (`/plantd/<stage>/metrics`).
pub fn log_group(stage: &str) -> String {
    format!("/plantd/{stage}/metrics")
}

/// `[cloud_metrics]` of the forwarder's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudMetricsConfig {
    /// The stack's `Stage` (`PLANTD_CLOUD_METRICS__STAGE`); empty: no
    /// metrics are put.
    pub stage: String,
    /// How often, in ms.
    pub interval_ms: u64,
}

impl Default for CloudMetricsConfig {
    fn default() -> Self {
        Self {
            stage: String::new(),
            interval_ms: 60_000,
        }
    }
}

impl CloudMetricsConfig {
    /// Whether metrics are put at all.
    pub fn enabled(&self) -> bool {
        !self.stage.is_empty()
    }
}

/// What the sites' statuses say, as of one reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SitesReading {
    /// Sites with a status (a clean stop included).
    pub sites: u64,
    /// Sites whose status is stale without a clean stop.
    pub not_connected: u64,
    /// The largest backlog over the connected sites (0: none).
    pub max_backlog: u64,
    /// The site that has it.
    pub max_site: Option<String>,
}

impl SitesReading {
    /// Adds one site's newest status, stored `age_ms` ago.
    pub fn add(&mut self, status: &SiteStatus, age_ms: u64) {
        self.sites += 1;
        if status.uplink.state == LinkState::Stopped {
            return;
        }
        if !site_status::connected(status, age_ms) {
            self.not_connected += 1;
            return;
        }
        if self.max_site.is_none() || status.backlog.messages > self.max_backlog {
            self.max_backlog = status.backlog.messages;
            self.max_site = Some(status.site.clone());
        }
    }
}

/// Why the sites could not be read.
#[derive(Debug, thiserror::Error)]
#[error("site statuses ({SITE_STATUS_BUCKET}): {0}")]
pub struct SitesError(String);

/// Reads every site's newest status from `plantd_site_status`; ages on
/// the server's clock against `now_ms`. No bucket: no site has reported.
///
/// # Errors
/// When NATS cannot be asked.
pub async fn read_sites(js: &jetstream::Context, now_ms: u64) -> Result<SitesReading, SitesError> {
    let kv = match js.get_key_value(SITE_STATUS_BUCKET).await {
        Ok(kv) => kv,
        Err(e) if e.kind() == jetstream::context::KeyValueErrorKind::GetBucket => {
            return Ok(SitesReading::default());
        }
        Err(e) => return Err(SitesError(e.to_string())),
    };
    let mut keys = kv.keys().await.map_err(|e| SitesError(e.to_string()))?;
    let mut reading = SitesReading::default();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| SitesError(e.to_string()))?;
        let Some(entry) = kv
            .entry(&key)
            .await
            .map_err(|e| SitesError(e.to_string()))?
        else {
            continue;
        };
        if entry.operation != jetstream::kv::Operation::Put {
            continue;
        }
        match serde_json::from_slice::<SiteStatus>(&entry.value) {
            Ok(status) => {
                let stored =
                    u64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
                reading.add(&status, now_ms.saturating_sub(stored));
            }
            Err(e) => {
                tracing::warn!(site = %key, error = %e, "unreadable site status; not counted")
            }
        }
    }
    Ok(reading)
}

/// The EMF documents for one reading, one JSON line each: a
/// [`CONSUMER_PENDING`] document per consumer whose lag is known, and
/// the sites' document when `sites` is known.
pub fn documents(
    stage: &str,
    at_ms: u64,
    consumers: &[ConsumerHealth],
    sites: Option<&SitesReading>,
) -> Vec<String> {
    let ns = namespace(stage);
    let directive = |dimensions: Value, metrics: &[&str]| {
        json!({
            "Timestamp": at_ms,
            "CloudWatchMetrics": [{
                "Namespace": ns,
                "Dimensions": dimensions,
                "Metrics": metrics.iter().map(|m| json!({"Name": m, "Unit": UNIT})).collect::<Vec<_>>(),
            }],
        })
    };
    let mut out = Vec::new();
    for c in consumers {
        let Some(pending) = c.pending else { continue };
        out.push(
            json!({
                "_aws": directive(json!([[DIM_FUNCTION, DIM_STREAM], []]), &[CONSUMER_PENDING]),
                DIM_FUNCTION: c.function,
                DIM_STREAM: c.stream,
                "Consumer": c.consumer,
                CONSUMER_PENDING: pending,
                "AckPending": c.ack_pending,
                "DlqDepth": c.dlq_depth,
            })
            .to_string(),
        );
    }
    if let Some(s) = sites {
        out.push(
            json!({
                "_aws": directive(json!([[]]), &[EDGE_BACKLOG_MESSAGES, EDGES_NOT_CONNECTED]),
                EDGE_BACKLOG_MESSAGES: s.max_backlog,
                EDGES_NOT_CONNECTED: s.not_connected,
                "Site": s.max_site,
                "Sites": s.sites,
            })
            .to_string(),
        );
    }
    out
}

/// Puts the documents into the stage's log group.
#[derive(Debug)]
pub struct Publisher {
    logs: aws_sdk_cloudwatchlogs::Client,
    stage: String,
    group: String,
    stream: String,
    stream_exists: bool,
}

/// Why a put failed.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The log stream could not be created (no log group? no permission?).
    #[error("CloudWatch Logs CreateLogStream {group}/{stream}: {why}")]
    CreateStream {
        /// The group.
        group: String,
        /// The stream.
        stream: String,
        /// Why.
        why: String,
    },
    /// `PutLogEvents` failed.
    #[error("CloudWatch Logs PutLogEvents {group}: {why}")]
    Put {
        /// The group.
        group: String,
        /// Why.
        why: String,
    },
}

impl Publisher {
    /// A publisher for `stage` writing through `logs`, in log stream
    /// `stream` (see [`default_stream`]).
    pub fn new(logs: aws_sdk_cloudwatchlogs::Client, stage: &str, stream: String) -> Self {
        Self {
            logs,
            stage: stage.to_owned(),
            group: log_group(stage),
            stream,
            stream_exists: false,
        }
    }

    /// The log group written to.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The log stream written to.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Reads the consumers from `status` and the sites from `js`, and puts
    /// the documents; returns what it put.
    ///
    /// # Errors
    /// When CloudWatch Logs refused them (the sites unreadable is not an
    /// error: their document is left out and a warning logged).
    pub async fn publish_once(
        &mut self,
        status: &Status,
        js: &jetstream::Context,
    ) -> Result<Vec<String>, PutError> {
        let now = now_ms();
        let sites = match read_sites(js, now).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "site statuses unreadable: no edge backlog metric this time");
                None
            }
        };
        let docs = documents(&self.stage, now, &status.health().consumers, sites.as_ref());
        self.put(now, &docs).await?;
        Ok(docs)
    }

    async fn put(&mut self, at_ms: u64, docs: &[String]) -> Result<(), PutError> {
        if docs.is_empty() {
            return Ok(());
        }
        if !self.stream_exists {
            match self
                .logs
                .create_log_stream()
                .log_group_name(&self.group)
                .log_stream_name(&self.stream)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_already_exists_exception()) => {}
                Err(e) => {
                    return Err(PutError::CreateStream {
                        group: self.group.clone(),
                        stream: self.stream.clone(),
                        why: DisplayErrorContext(&e).to_string(),
                    });
                }
            }
            self.stream_exists = true;
        }
        let timestamp = i64::try_from(at_ms).unwrap_or(i64::MAX);
        let events = docs
            .iter()
            .map(|d| {
                InputLogEvent::builder()
                    .timestamp(timestamp)
                    .message(d)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PutError::Put {
                group: self.group.clone(),
                why: e.to_string(),
            })?;
        let answer = self
            .logs
            .put_log_events()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .set_log_events(Some(events))
            .send()
            .await;
        match answer {
            Ok(_) => Ok(()),
            Err(e) => {
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception())
                {
                    // The stream (or group) went away: create it again next time.
                    self.stream_exists = false;
                }
                Err(PutError::Put {
                    group: self.group.clone(),
                    why: DisplayErrorContext(&e).to_string(),
                })
            }
        }
    }

    /// Publishes every `interval` until `stop` is cancelled.
    pub async fn run(
        mut self,
        status: Status,
        js: jetstream::Context,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.publish_once(&status, &js).await {
                Ok(docs) => {
                    tracing::debug!(documents = docs.len(), group = %self.group, "cloud metrics put")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cloud metrics not put; next try at the next interval")
                }
            }
        }
    }
}

/// `plantd-forwarder/<host>/<pid>`: one stream per process.
pub fn default_stream() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("plantd-forwarder/{host}/{}", std::process::id())
}

fn now_ms() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plantd_shared::site_status::{Backlog, EdgeInfo, Uplink};

    fn status(site: &str, state: LinkState, backlog: u64) -> SiteStatus {
        SiteStatus {
            site: site.into(),
            edge: EdgeInfo {
                id: "j1".into(),
                version: "0.1.0".into(),
                holder: "host h".into(),
                started_ms: 1,
            },
            at_ms: 1,
            interval_ms: 5_000,
            clients: 0,
            last_message_ms: None,
            backlog: Backlog {
                messages: backlog,
                ..Backlog::default()
            },
            uplink: Uplink {
                state,
                since_ms: 1,
                last_ack_ms: None,
                last_error: None,
            },
        }
    }

    #[test]
    fn the_backlog_is_the_largest_of_the_connected_sites() {
        let mut r = SitesReading::default();
        r.add(&status("a", LinkState::Up, 5), 1_000);
        r.add(&status("b", LinkState::Down, 40), 1_000);
        // Stale: not connected, its old backlog not taken for current.
        r.add(&status("c", LinkState::Up, 900), 60_000);
        // Stopped cleanly: neither.
        r.add(&status("d", LinkState::Stopped, 800), 60_000);
        assert_eq!(
            r,
            SitesReading {
                sites: 4,
                not_connected: 1,
                max_backlog: 40,
                max_site: Some("b".into()),
            }
        );
    }

    #[test]
    fn documents_are_emf_in_the_stages_namespace() {
        let consumer = |pending| ConsumerHealth {
            function: "logger".into(),
            stream: "PLANTD_LOGS".into(),
            consumer: "logger_PLANTD_LOGS".into(),
            state: crate::metrics::ConsumerState::Working,
            reason: None,
            pending,
            ack_pending: Some(3),
            dlq_depth: Some(0),
            seconds_since_progress: 0.0,
        };
        let sites = SitesReading {
            sites: 2,
            not_connected: 1,
            max_backlog: 42,
            max_site: Some("plant-1".into()),
        };
        let docs = documents(
            "prod",
            1_700_000_000_000,
            &[consumer(Some(17)), consumer(None)],
            Some(&sites),
        );
        assert_eq!(docs.len(), 2, "the unknown lag is left out: {docs:?}");
        let c: Value = serde_json::from_str(&docs[0]).expect("JSON");
        let m = &c["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(c["_aws"]["Timestamp"], 1_700_000_000_000_u64);
        assert_eq!(m["Namespace"], "plantd/prod");
        assert_eq!(m["Dimensions"], json!([["Function", "Stream"], []]));
        assert_eq!(
            m["Metrics"],
            json!([{"Name": "ConsumerPending", "Unit": "Count"}])
        );
        assert_eq!(
            (&c["Function"], &c["Stream"], &c["ConsumerPending"]),
            (&json!("logger"), &json!("PLANTD_LOGS"), &json!(17))
        );
        let e: Value = serde_json::from_str(&docs[1]).expect("JSON");
        let m = &e["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Dimensions"], json!([[]]));
        assert_eq!(e["EdgeBacklogMessages"], 42);
        assert_eq!(e["EdgesNotConnected"], 1);
        assert_eq!(e["Site"], "plant-1");
        // Every metric named in a directive is a number member of the
        // document (EMF drops the document otherwise).
        for d in [&c, &e] {
            for metric in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .expect("metrics")
            {
                let name = metric["Name"].as_str().expect("name");
                assert!(d[name].is_u64(), "{name} in {d}");
            }
        }
        assert!(documents("prod", 1, &[consumer(None)], None).is_empty());
    }
}
