//! [`StoredRule`]: an analytics rule as plantd stores it — in KV bucket
//! `plantd_analytics_rules` under `<org>.<name>` — with where it runs and
//! which sites it reads. The one contract between `/v1/analytics/rules`
//! (writes it), the cloud's analytics function (runs rules placed in the
//! cloud) and the edge (watches the bucket, runs rules placed at the edge
//! for its site, keeps them on disk for an offline start).

use serde::{Deserialize, Serialize};

use crate::rule::{Rule, RuleError};
use crate::sql::SqlError;

/// Where a rule runs. A rule runs in exactly one place, so its results are
/// computed and stored once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// The analytics function, on `PLANTD_TELEMETRY` (all the org's sites,
    /// or those named).
    #[default]
    Cloud,
    /// Each named site's edge, on its own messages: results go on while the
    /// uplink is down and reach `PLANTD_AGGREGATES` through the journal.
    Edge,
}

/// How the rule was written: kept so it reads back as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `SELECT … FROM "filter" … GROUP BY …` ([`Rule::from_sql`]).
    Sql(String),
    /// The JSON form ([`Rule`]).
    Json,
}

/// An analytics rule with its organisation, placement and sites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRule {
    /// The owning organisation.
    pub org: String,
    /// The sites it reads; empty means every site of the organisation
    /// (a rule placed at the edge must name its sites).
    #[serde(default)]
    pub sites: Vec<String>,
    /// Where it runs.
    #[serde(default)]
    pub at: Placement,
    /// Paused rules are kept but not run.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How it was written.
    pub source: Source,
    /// The compiled rule (its `name` is the rule's name).
    pub rule: Rule,
    /// Who last wrote it (user or service account id).
    #[serde(default)]
    pub updated_by: String,
    /// When (RFC 3339).
    #[serde(default)]
    pub updated_at: String,
}

fn yes() -> bool {
    true
}

/// Why a stored rule cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum StoredRuleError {
    /// The SQL does not parse or compile (position inside).
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// The rule is invalid (field inside).
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// Placed at the edge without naming a site.
    #[error("sites: a rule placed at the edge must name its sites")]
    EdgeWithoutSites,
}

impl StoredRule {
    /// The KV key: `<org>.<name>`.
    pub fn key(&self) -> String {
        key(&self.org, &self.rule.name)
    }

    /// Whether this rule reads `site` (of its organisation).
    pub fn reads_site(&self, site: &str) -> bool {
        self.sites.is_empty() || self.sites.iter().any(|s| s == site)
    }

    /// Whether the edge of `site` runs it.
    pub fn runs_at_edge_of(&self, site: &str) -> bool {
        self.enabled && self.at == Placement::Edge && self.sites.iter().any(|s| s == site)
    }

    /// Whether the cloud's analytics function runs it for `site`.
    pub fn runs_in_cloud_for(&self, site: &str) -> bool {
        self.enabled && self.at == Placement::Cloud && self.reads_site(site)
    }

    /// Checks the rule and its placement.
    ///
    /// # Errors
    /// [`StoredRuleError`] naming what is wrong.
    pub fn validate(&self) -> Result<(), StoredRuleError> {
        self.rule.validate()?;
        if self.at == Placement::Edge && self.sites.is_empty() {
            return Err(StoredRuleError::EdgeWithoutSites);
        }
        Ok(())
    }
}

/// The KV key of rule `name` of `org`.
pub fn key(org: &str, name: &str) -> String {
    format!("{org}.{name}")
}
