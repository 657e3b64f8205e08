//! JetStream streams and KV buckets, and the one function that creates or
//! updates them.
//!
//! | name | holds | subjects / keys |
//! |---|---|---|
//! | `PLANTD_TELEMETRY` | device → cloud messages | `plantd.*.up.>` |
//! | `PLANTD_LOGS` | log records | `plantd.*.log.>` |
//! | `PLANTD_ALERTS` | alerts | `plantd.*.alert.>` |
//! | `PLANTD_COMMANDS` | cloud → device commands, kept until the edge takes them | `plantd.*.down.>` |
//! | `PLANTD_AUDIT` | the audit trail, hash-chained per organisation, kept forever, no deletes or purges ([`crate::audit`]) | `plantd.audit.<org>` |
//! | `PLANTD_AGGREGATES` | analytics results, one message per (rule, key, window, revision) | `plantd.<site>.agg.<rule>.<key>` |
//! | `PLANTD_DLQ` | items a function failed on N times, parked by the trigger (`plantd-trigger`) with their error | `plantd.dlq.<consumer>` |
//! | `plantd_state` (KV) | scoped state | `<scope>.<key>` |
//! | `plantd_identity` (KV) | users, orgs, roles, service accounts, devices | |
//! | `plantd_revoked` (KV) | revoked token ids, mirrored by every edge | `<jti>` |
//! | `plantd_edge_leases` (KV) | which live edge journal serves each site ([`crate::lease`]) | `<site>` |
//! | `plantd_commands` (KV) | commands the edge holds (no subscriber yet), listed and cancelled by the proxy ([`crate::commands`]) | `<site>.<id>` |
//! | `plantd_sites` (KV) | site records: which organisation owns each site ([`crate::sites`]) | `<site>` |
//! | `plantd_device_certs` (KV) | devices that log in with their client certificate, followed by their site's edge ([`crate::device_certs`]) | `<site>.<sha256 hex>` |
//! | `plantd_site_status` (KV) | each site's edge status, put every few seconds (site health, [`crate::site_status`]) | `<site>` |
//! | `plantd_analytics_rules` (KV) | analytics rules (`plantd_analytics::StoredRule`) | `<org>.<rule>` |
//! | `plantd_analytics_state` (KV) | the analytics function's checkpoints | `<site>.<rule>.…` |
//! | `plantd_log_aggregates` (KV) | the logger's per-minute counts, each with the stream sequences it has applied | `<site>.<minute>` |
//! | `plantd_alert_rules` (KV) | alert rules, per organisation (`plantd-alerts`) | `<org>.<rule>` |
//! | `plantd_alert_state` (KV) | each alert's lifecycle state and the outbox of its transitions | `<rule>.<key>` |
//! | `plantd_alert_silences` (KV) | silences: matchers and a time window | `<org>.<id>` |
//! | `plantd_alert_channels` (KV) | notification channels (webhook, SNS), per organisation | `<org>.<name>` |
//! | `plantd_notifications` (KV) | which alert record each channel has been notified of | `<channel>.<record>` |

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use thiserror::Error;

use crate::subject::{Channel, all_sites};

/// Device → cloud telemetry.
pub const TELEMETRY: &str = "PLANTD_TELEMETRY";
/// Log records.
pub const LOGS: &str = "PLANTD_LOGS";
/// Alerts.
pub const ALERTS: &str = "PLANTD_ALERTS";
/// Cloud → device commands.
pub const COMMANDS: &str = "PLANTD_COMMANDS";
/// The audit trail ([`crate::audit`]).
pub const AUDIT: &str = "PLANTD_AUDIT";
/// The dead-letter stream: items a function handler failed on too often,
/// parked by the trigger on `plantd.dlq.<consumer>` ([`DLQ_SUBJECTS`]).
pub const DLQ: &str = "PLANTD_DLQ";
/// The subjects of [`DLQ`]: one token after `plantd.dlq`, the trigger's
/// durable consumer name (`<function>_<stream>`). Three tokens, so it never
/// overlaps a site channel (`plantd.<site>.<channel>.>` has four or more).
pub const DLQ_SUBJECTS: &str = "plantd.dlq.*";
/// Analytics results: one JSON document per rule, key, window and
/// revision on `plantd.<site>.agg.<rule>.<key>`, message id
/// `<site>:<rule>:<key>:<window_start>:<revision>` when the cloud's
/// analytics function computed it (`plantd-analytics-function`; rule names
/// are per organisation, so the site comes first), the edge journal's id
/// when an edge did (a later revision of a window supersedes the earlier
/// ones; read by `GET /v1/sites/{site}/aggregates`).
pub const AGGREGATES: &str = "PLANTD_AGGREGATES";
/// The subjects of [`AGGREGATES`].
pub const AGGREGATES_SUBJECTS: &str = "plantd.*.agg.>";

/// Scoped key/value state (`<scope>.<key>`).
pub const STATE_BUCKET: &str = "plantd_state";
/// Identity records.
pub const IDENTITY_BUCKET: &str = "plantd_identity";
/// Revoked token ids.
pub const REVOKED_BUCKET: &str = "plantd_revoked";
/// Site leases (`<site>` → [`crate::lease::LeaseRecord`]): which live edge
/// journal serves each site (a lease not renewed for
/// [`crate::lease::TTL`] has expired).
pub const EDGE_LEASES_BUCKET: &str = "plantd_edge_leases";
/// Held commands (`<site>.<id>` → [`crate::commands::HeldCommand`]).
pub const COMMANDS_BUCKET: &str = "plantd_commands";
/// Site records (`<site>` → [`crate::sites::SiteRecord`]): which
/// organisation owns each site.
pub const SITES_BUCKET: &str = "plantd_sites";
/// Devices registered with a client certificate fingerprint, per site
/// ([`crate::device_certs`]).
pub const DEVICE_CERTS_BUCKET: &str = "plantd_device_certs";
/// Each site's newest edge status (`<site>` →
/// [`crate::site_status::SiteStatus`]), put by the edge every few seconds.
pub const SITE_STATUS_BUCKET: &str = "plantd_site_status";
/// The logger's per-minute aggregates (`<site>.<minute>`).
pub const LOG_AGGREGATES_BUCKET: &str = "plantd_log_aggregates";
/// Alert rules (`<org>.<rule>`).
pub const ALERT_RULES_BUCKET: &str = "plantd_alert_rules";
/// Alert lifecycle state and transition outbox (`<rule>.<key>`).
pub const ALERT_STATE_BUCKET: &str = "plantd_alert_state";
/// Silences (`<org>.<id>`).
pub const ALERT_SILENCES_BUCKET: &str = "plantd_alert_silences";
/// Notification channels (`<org>.<name>`).
pub const ALERT_CHANNELS_BUCKET: &str = "plantd_alert_channels";
/// Notification delivery markers (`<channel>.<record>`): what each channel
/// has been sent, so a redelivered alert record is not notified twice.
pub const NOTIFICATIONS_BUCKET: &str = "plantd_notifications";

/// Analytics rules, per organisation (`<org>.<rule>`): what
/// `/v1/analytics/rules` stores, the analytics function runs and edges
/// watch (rules placed `at = "edge"`). JSON `plantd_analytics::StoredRule`.
pub const ANALYTICS_RULES_BUCKET: &str = "plantd_analytics_rules";
/// The analytics function's checkpoints: per (site, rule, key) the engine
/// state with the last stream sequence applied, per (site, rule) the
/// watermark.
pub const ANALYTICS_STATE_BUCKET: &str = "plantd_analytics_state";

/// Every stream name, in creation order.
pub const STREAMS: [&str; 7] = [TELEMETRY, LOGS, ALERTS, COMMANDS, AUDIT, DLQ, AGGREGATES];
/// Every bucket name, in creation order.
pub const BUCKETS: [&str; 16] = [
    STATE_BUCKET,
    IDENTITY_BUCKET,
    REVOKED_BUCKET,
    SITES_BUCKET,
    COMMANDS_BUCKET,
    EDGE_LEASES_BUCKET,
    LOG_AGGREGATES_BUCKET,
    ALERT_RULES_BUCKET,
    ALERT_STATE_BUCKET,
    ALERT_SILENCES_BUCKET,
    ALERT_CHANNELS_BUCKET,
    NOTIFICATIONS_BUCKET,
    ANALYTICS_RULES_BUCKET,
    ANALYTICS_STATE_BUCKET,
    SITE_STATUS_BUCKET,
    DEVICE_CERTS_BUCKET,
];

/// Tunables for [`ensure`]. `Default` is what `plantd up` uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// File or memory storage (file in every real deployment).
    pub storage: stream::StorageType,
    /// Replicas per stream (1 on one machine, 3 in a cluster).
    pub replicas: usize,
    /// JetStream's de-duplication window. Must be at least as long as the
    /// longest time an edge may take to resend a message it published but
    /// did not see acknowledged (an uplink outage), so resends are dropped.
    pub duplicate_window: Duration,
    /// How long telemetry, logs and alerts are kept.
    pub retention: Duration,
    /// How long an undelivered command is kept.
    pub command_retention: Duration,
    /// How long a revoked token id is remembered (≥ refresh token life).
    pub revoked_ttl: Duration,
    /// Create `PLANTD_AUDIT` denying message deletes and purges (JetStream
    /// cannot take that back once set). Off only in tests that tamper with
    /// the trail on purpose.
    pub audit_deny_delete: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            storage: stream::StorageType::File,
            replicas: 1,
            duplicate_window: Duration::from_secs(2 * 60 * 60),
            retention: Duration::from_secs(30 * 24 * 60 * 60),
            command_retention: Duration::from_secs(7 * 24 * 60 * 60),
            revoked_ttl: Duration::from_secs(30 * 24 * 60 * 60),
            audit_deny_delete: true,
        }
    }
}

/// The subject set of a stream.
pub fn stream_subjects(name: &str) -> Option<String> {
    if name == AUDIT {
        return Some(crate::audit::ALL_SUBJECTS.to_owned());
    }
    if name == DLQ {
        return Some(DLQ_SUBJECTS.to_owned());
    }
    if name == AGGREGATES {
        return Some(AGGREGATES_SUBJECTS.to_owned());
    }
    let channel = match name {
        TELEMETRY => Channel::Up,
        LOGS => Channel::Log,
        ALERTS => Channel::Alert,
        COMMANDS => Channel::Down,
        _ => return None,
    };
    Some(all_sites(channel))
}

/// The configuration plantd wants for stream `name` under `settings`.
pub fn stream_config(name: &str, settings: &Settings) -> Option<stream::Config> {
    let subjects = stream_subjects(name)?;
    if name == AUDIT {
        // Kept forever: the chain is verified from its first record.
        return Some(stream::Config {
            name: name.to_owned(),
            subjects: vec![subjects],
            storage: settings.storage,
            num_replicas: settings.replicas,
            duplicate_window: Duration::from_secs(120),
            deny_delete: settings.audit_deny_delete,
            deny_purge: settings.audit_deny_delete,
            allow_direct: true,
            ..Default::default()
        });
    }
    let max_age = if name == COMMANDS {
        settings.command_retention
    } else {
        settings.retention
    };
    Some(stream::Config {
        name: name.to_owned(),
        subjects: vec![subjects],
        storage: settings.storage,
        num_replicas: settings.replicas,
        max_age,
        duplicate_window: settings.duplicate_window.min(max_age),
        allow_direct: true,
        // The analytics function stores a batch's results as one
        // fast-ingest batch (nats-server 2.14+; decision 0061).
        allow_batch_publish: name == AGGREGATES,
        ..Default::default()
    })
}

/// The configuration plantd wants for bucket `name` under `settings`.
pub fn bucket_config(name: &str, settings: &Settings) -> Option<kv::Config> {
    let (history, max_age, description) = match name {
        STATE_BUCKET => (16, Duration::ZERO, "plantd scoped state"),
        IDENTITY_BUCKET => (8, Duration::ZERO, "plantd identity"),
        REVOKED_BUCKET => (1, settings.revoked_ttl, "plantd revoked token ids"),
        EDGE_LEASES_BUCKET => (1, Duration::ZERO, "plantd site leases of edge journals"),
        SITES_BUCKET => (8, Duration::ZERO, "plantd sites and their organisations"),
        COMMANDS_BUCKET => (1, Duration::ZERO, "plantd commands held by edges"),
        LOG_AGGREGATES_BUCKET => (1, Duration::ZERO, "plantd per-minute log aggregates"),
        ALERT_RULES_BUCKET => (8, Duration::ZERO, "plantd alert rules"),
        ALERT_STATE_BUCKET => (1, Duration::ZERO, "plantd alert state and outbox"),
        ALERT_SILENCES_BUCKET => (4, Duration::ZERO, "plantd alert silences"),
        ALERT_CHANNELS_BUCKET => (4, Duration::ZERO, "plantd notification channels"),
        NOTIFICATIONS_BUCKET => (1, Duration::ZERO, "plantd notification markers"),
        ANALYTICS_RULES_BUCKET => (8, Duration::ZERO, "plantd analytics rules"),
        ANALYTICS_STATE_BUCKET => (1, Duration::ZERO, "plantd analytics checkpoints"),
        SITE_STATUS_BUCKET => (1, Duration::ZERO, "plantd edge status per site"),
        DEVICE_CERTS_BUCKET => (4, Duration::ZERO, "plantd device certificates per site"),
        _ => return None,
    };
    Some(kv::Config {
        bucket: name.to_owned(),
        description: description.to_owned(),
        history,
        max_age,
        storage: settings.storage,
        num_replicas: settings.replicas,
        ..Default::default()
    })
}

/// Why [`ensure`] failed, naming the stream or bucket.
#[derive(Debug, Error)]
pub enum EnsureError {
    /// Creating or updating a stream failed.
    #[error("stream {name}: {source}")]
    Stream {
        /// The stream.
        name: &'static str,
        /// What JetStream said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Creating or updating a KV bucket failed.
    #[error("bucket {name}: {source}")]
    Bucket {
        /// The bucket.
        name: &'static str,
        /// What JetStream said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What [`ensure`] did to each stream and bucket.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EnsureReport {
    /// Streams and buckets created by this call.
    pub created: Vec<&'static str>,
    /// Streams and buckets that existed and were updated to the wanted
    /// configuration.
    pub updated: Vec<&'static str>,
}

/// Creates every stream and bucket, or updates existing ones to the wanted
/// configuration. Idempotent: calling it twice changes nothing the second
/// time.
///
/// # Errors
/// [`EnsureError`] naming the first stream or bucket JetStream refused.
pub async fn ensure(
    js: &jetstream::Context,
    settings: &Settings,
) -> Result<EnsureReport, EnsureError> {
    let mut report = EnsureReport::default();
    for name in STREAMS {
        let Some(config) = stream_config(name, settings) else {
            continue;
        };
        let existed = js.get_stream(name).await.is_ok();
        js.create_or_update_stream(config)
            .await
            .map_err(|e| EnsureError::Stream {
                name,
                source: Box::new(e),
            })?;
        if existed {
            report.updated.push(name);
        } else {
            report.created.push(name);
        }
    }
    for name in BUCKETS {
        let Some(config) = bucket_config(name, settings) else {
            continue;
        };
        let existed = js.get_key_value(name).await.is_ok();
        js.create_or_update_key_value(config)
            .await
            .map_err(|e| EnsureError::Bucket {
                name,
                source: Box::new(e),
            })?;
        if existed {
            report.updated.push(name);
        } else {
            report.created.push(name);
        }
    }
    tracing::info!(created = ?report.created, updated = ?report.updated, "jetstream streams and buckets ready");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stream_has_its_channel() {
        assert_eq!(stream_subjects(TELEMETRY).as_deref(), Some("plantd.*.up.>"));
        assert_eq!(stream_subjects(LOGS).as_deref(), Some("plantd.*.log.>"));
        assert_eq!(stream_subjects(ALERTS).as_deref(), Some("plantd.*.alert.>"));
        assert_eq!(
            stream_subjects(COMMANDS).as_deref(),
            Some("plantd.*.down.>")
        );
        assert_eq!(stream_subjects(AUDIT).as_deref(), Some("plantd.audit.*"));
        assert_eq!(stream_subjects(DLQ).as_deref(), Some("plantd.dlq.*"));
        assert_eq!(
            stream_subjects(AGGREGATES).as_deref(),
            Some("plantd.*.agg.>")
        );
        assert_eq!(stream_subjects("NOPE"), None);
    }

    #[test]
    fn duplicate_window_never_exceeds_max_age() {
        let s = Settings {
            command_retention: Duration::from_secs(60),
            ..Settings::default()
        };
        let c = stream_config(COMMANDS, &s).expect("known");
        assert!(c.duplicate_window <= c.max_age);
    }
}
