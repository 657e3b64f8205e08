//! The answers of the alerting routes ([`super::alerts`],
//! [`super::channels`]) that are not a type of [`plantd_alerts`] itself:
//! the lists' envelopes, a silence with whether it is active, and a test
//! send's result. Each is what the handler serialises, so the OpenAPI
//! document (`body = ...`) describes the JSON on the wire.

use plantd_alerts::notify::ChannelView;
use plantd_alerts::record::AlertRecord;
use plantd_alerts::{Rule, Silence, silence::Matcher};
use serde::Serialize;
use time::OffsetDateTime;

use super::alerts::AlertView;

/// The answer of `GET /v1/alert-rules`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertRules {
    /// The organisation's rules, by id.
    pub rules: Vec<Rule>,
}

/// The answer of `GET /v1/alerts`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertList {
    /// The alert instances that pass the filters.
    pub alerts: Vec<AlertView>,
}

/// The answer of `GET /v1/alerts/{id}/history`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertHistory {
    /// The alert instance now.
    pub alert: AlertView,
    /// Its records in `PLANTD_ALERTS`, oldest first (the newest 500).
    pub records: Vec<AlertRecord>,
}

/// A silence as `GET /v1/silences` lists it: the silence and whether it
/// is in force now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SilenceView {
    /// Its id.
    pub id: String,
    /// All must match.
    pub matchers: Vec<Matcher>,
    /// From (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String)]
    pub starts: OffsetDateTime,
    /// Until (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String)]
    pub ends: OffsetDateTime,
    /// Why.
    pub comment: String,
    /// Who made it (the token's subject).
    pub created_by: String,
    /// True while `starts <= now < ends`.
    pub active: bool,
}

impl SilenceView {
    /// `silence` as listed at `now`.
    pub fn new(silence: Silence, now: OffsetDateTime) -> Self {
        let Silence {
            id,
            matchers,
            starts,
            ends,
            comment,
            created_by,
        } = silence;
        Self {
            active: starts <= now && now < ends,
            id,
            matchers,
            starts,
            ends,
            comment,
            created_by,
        }
    }
}

/// The answer of `GET /v1/silences`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SilenceList {
    /// The organisation's silences, expired ones included.
    pub silences: Vec<SilenceView>,
}

/// The answer of `GET /v1/alert-channels`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelList {
    /// The organisation's channels, by name, without secrets.
    pub channels: Vec<ChannelView>,
}

/// The answer of `POST /v1/alert-channels/{name}/test` when the channel
/// accepted the test notification (a refusal answers 502).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestSent {
    /// Always true (a failed send is an error answer).
    pub delivered: bool,
    /// What the channel answered: the webhook's HTTP status or the SNS
    /// message id.
    pub receipt: String,
    /// Attempts it took.
    pub attempts: u32,
}
