//! What `PUT /v1/analytics/rules/{name}` takes and what the API shows: the
//! request body read into a [`plantd_analytics::StoredRule`] (plus its
//! optional companion alert), every error naming the field — `sql: line
//! 1, column 8: …` for the SQL form, `rule.operator.aggregate.select[0].fn:
//! …` for the JSON form, `sites[1]: …`, `alert.channels[0]: …`.
//!
//! The companion alert of a rule with an `alert` section is the alert rule
//! `analytics-<name>` with condition `{"kind": "analytics", "rule":
//! "<name>"}` (decision 0030): it is the one place the section is stored,
//! and reading a rule shows it back from there.

use std::collections::BTreeMap;

use plantd_alerts::rule::{Condition, Rule as AlertRule, valid_id};
use plantd_alerts::{Dur, Severity};
use plantd_analytics::{Placement, Rule, Source, StoredRule, StoredRuleError};
use plantd_shared::subject::Site;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::AppError;
use crate::rule_compiler::Compiler;

/// The id prefix of companion alert rules: `analytics-<name>`.
pub const COMPANION_PREFIX: &str = "analytics-";

/// The request body. Exactly one of `sql` and `rule` gives the rule;
/// `compiled`, `revision`, `updated_by` and `updated_at` are what a read
/// shows and are ignored, so a rule read can be written back as it is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    /// Must be the name in the path when given.
    #[serde(default)]
    name: Option<String>,
    /// The SQL form.
    #[serde(default)]
    sql: Option<String>,
    /// The JSON form (its `name` defaults to the path's).
    #[serde(default)]
    rule: Option<Value>,
    /// The sites it reads; empty: all the organisation's (cloud only).
    #[serde(default)]
    sites: Vec<String>,
    /// Where it runs.
    #[serde(default)]
    at: Placement,
    /// Paused rules are kept, not run.
    #[serde(default = "yes")]
    enabled: bool,
    /// The companion alert, if any.
    #[serde(default)]
    alert: Option<AlertSpec>,
    /// Read-only (shown by reads), ignored.
    #[serde(default, rename = "compiled")]
    _compiled: Option<Value>,
    /// Read-only, ignored.
    #[serde(default, rename = "revision")]
    _revision: Option<Value>,
    /// Read-only, ignored.
    #[serde(default, rename = "updated_by")]
    _updated_by: Option<Value>,
    /// Read-only, ignored.
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<Value>,
}

fn yes() -> bool {
    true
}

/// An analytics rule's `alert` section: what its companion alert rule
/// says when the rule's pattern or anomaly signals fire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = AnalyticsAlert)]
#[serde(deny_unknown_fields)]
pub struct AlertSpec {
    /// How bad it is (`info`, `warning`, `critical`).
    #[serde(default)]
    pub severity: Severity,
    /// Notification channels (names in `/v1/alert-channels`).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Labels every alert carries (silences and routing match on them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How long a fire signal must stand before the alert fires (`0s`: at
    /// once).
    #[serde(default, rename = "for")]
    pub for_: Dur,
}

/// A write, read and checked: the rule to store and its alert section.
#[derive(Debug, Clone)]
pub struct Write {
    /// What goes into `plantd_analytics_rules`.
    pub stored: StoredRule,
    /// The companion alert rule, when the body has an `alert` section.
    pub companion: Option<AlertRule>,
}

/// The companion alert rule id of analytics rule `name`.
pub fn companion_id(name: &str) -> String {
    format!("{COMPANION_PREFIX}{name}")
}

/// Whether `rule` is the companion of analytics rule `name` (an alert
/// rule someone wrote by hand under that id is not, and is left alone).
pub fn is_companion(rule: &AlertRule, name: &str) -> bool {
    rule.id == companion_id(name)
        && matches!(&rule.condition, Condition::Analytics { rule } if rule == name)
}

/// The `alert` section an existing companion says.
pub fn spec_of(rule: &AlertRule) -> AlertSpec {
    AlertSpec {
        severity: rule.severity,
        channels: rule.notify.clone(),
        labels: rule.labels.clone(),
        for_: rule.for_,
    }
}

fn bad(field: &str, message: impl std::fmt::Display) -> AppError {
    AppError::bad_request(format!("{field}: {message}"))
}

/// Reads the body of a write of rule `name` by `org`: the rule compiled
/// from `sql` (by `compiler`) or read from `rule`, placement and sites checked, the
/// companion alert rule built. Whether the sites are the organisation's
/// is the caller's check (it needs the registry).
///
/// # Errors
/// 400 whose message starts with the field: `body`, `name`, `sql` (with
/// line and column), `rule.<path>`, `sites[i]`, `at`, `alert.<field>`;
/// 503 when no compiler answered for `sql`.
pub async fn read(
    org: &str,
    name: &str,
    bytes: &[u8],
    by: &str,
    now: &str,
    compiler: &Compiler,
) -> Result<Write, AppError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let body: RuleBody = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        bad(&field, e.into_inner())
    })?;
    if let Some(given) = &body.name
        && given != name
    {
        return Err(bad(
            "name",
            format!("must be {name:?}, the name in the path"),
        ));
    }
    let (source, rule) = match (body.sql, body.rule) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "sql",
                "give the rule as sql or as rule (its JSON form), not both",
            ));
        }
        (None, None) => {
            return Err(bad(
                "sql",
                "missing: give the rule as sql (SELECT …) or as rule (its JSON form)",
            ));
        }
        (Some(sql), None) => {
            let rule = compiler.compile(name, &sql).await?;
            (Source::Sql(sql), rule)
        }
        (None, Some(mut value)) => {
            if let Some(obj) = value.as_object_mut() {
                match obj.get("name") {
                    None => {
                        obj.insert("name".into(), json!(name));
                    }
                    Some(given) if given.as_str() == Some(name) => {}
                    Some(_) => {
                        return Err(bad(
                            "rule.name",
                            format!("must be {name:?}, the name in the path"),
                        ));
                    }
                }
            }
            let bytes = serde_json::to_vec(&value).map_err(AppError::internal)?;
            let rule = Rule::from_json(&bytes).map_err(|e| {
                let field = if e.field == "." || e.field.is_empty() {
                    "rule".to_owned()
                } else {
                    format!("rule.{}", e.field)
                };
                bad(&field, e.message)
            })?;
            (Source::Json, rule)
        }
    };
    for (i, site) in body.sites.iter().enumerate() {
        Site::new(site.as_str()).map_err(|e| bad(&format!("sites[{i}]"), e))?;
        if body.sites[..i].contains(site) {
            return Err(bad(
                &format!("sites[{i}]"),
                format!("{site} is named twice"),
            ));
        }
    }
    let stored = StoredRule {
        org: org.to_owned(),
        sites: body.sites,
        at: body.at,
        enabled: body.enabled,
        source,
        rule,
        updated_by: by.to_owned(),
        updated_at: now.to_owned(),
    };
    stored.validate().map_err(|e| match e {
        StoredRuleError::Sql(e) => bad("sql", e),
        StoredRuleError::Rule(e) => bad(&format!("rule.{}", e.field), e.message),
        e @ StoredRuleError::EdgeWithoutSites => AppError::bad_request(e.to_string()),
    })?;
    let companion = body
        .alert
        .map(|spec| companion(&stored, spec))
        .transpose()?;
    Ok(Write { stored, companion })
}

/// The companion alert rule of `stored` with `spec`.
///
/// # Errors
/// 400 naming `alert.<field>`, or `alert` when the rule's name cannot name
/// an alert rule (alert rule ids are lowercase).
fn companion(stored: &StoredRule, spec: AlertSpec) -> Result<AlertRule, AppError> {
    let name = &stored.rule.name;
    let id = companion_id(name);
    if !valid_id(&id) {
        return Err(bad(
            "alert",
            format!(
                "the companion alert rule would be {id:?}; alert rule ids are at most {} lowercase letters, digits, '-' or '_', so an analytics rule with an alert needs such a name",
                plantd_alerts::rule::MAX_ID
            ),
        ));
    }
    let rule = AlertRule {
        id,
        name: format!("{name} (analytics)"),
        description: format!(
            "Fires while analytics rule {name} signals fire; written with it by /v1/analytics/rules/{name} (change it there)."
        ),
        severity: spec.severity,
        labels: spec.labels,
        notify: spec.channels,
        group_by: Vec::new(),
        for_: spec.for_,
        repeat_interval: None,
        no_data: None,
        sites: stored.sites.clone(),
        condition: Condition::Analytics { rule: name.clone() },
    };
    rule.validate().map_err(|e| {
        let field = if let Some(rest) = e.field.strip_prefix("notify") {
            format!("alert.channels{rest}")
        } else {
            format!("alert.{}", e.field)
        };
        bad(&field, e.reason)
    })?;
    Ok(rule)
}

/// A rule as the API shows it: what a write takes (`sql` or `rule`,
/// `sites`, `at`, `enabled`, `alert`) plus `name`, `compiled` (the JSON
/// form of a SQL rule), `revision` (also the `ETag`), `updated_by`,
/// `updated_at`. A read can be written back as it is.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = AnalyticsRule)]
pub struct RuleView {
    /// The rule's name.
    pub name: String,
    /// The SQL, for a rule written in SQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// The JSON form the SQL compiled to, for a rule written in SQL
    /// (docs/analytics.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub compiled: Option<Rule>,
    /// The JSON form, for a rule written so (docs/analytics.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub rule: Option<Rule>,
    /// The sites it reads; empty: all the organisation's.
    pub sites: Vec<String>,
    /// Where it runs: `cloud` or `edge`.
    #[schema(value_type = String)]
    pub at: Placement,
    /// Paused rules are kept, not run.
    pub enabled: bool,
    /// Its companion alert's settings, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertSpec>,
    /// Its revision (also the `ETag`).
    pub revision: u64,
    /// Who last wrote it (user or service account id).
    pub updated_by: String,
    /// When (RFC 3339).
    pub updated_at: String,
}

/// `stored` at `revision` as the API shows it, with its companion's
/// `alert` section.
pub fn view(stored: &StoredRule, revision: u64, alert: Option<&AlertSpec>) -> RuleView {
    let (sql, compiled, rule) = match &stored.source {
        Source::Sql(sql) => (Some(sql.clone()), Some(stored.rule.clone()), None),
        Source::Json => (None, None, Some(stored.rule.clone())),
    };
    RuleView {
        name: stored.rule.name.clone(),
        sql,
        compiled,
        rule,
        sites: stored.sites.clone(),
        at: stored.at,
        enabled: stored.enabled,
        alert: alert.cloned(),
        revision,
        updated_by: stored.updated_by.clone(),
        updated_at: stored.updated_at.clone(),
    }
}

#[cfg(all(test, feature = "sql-rules"))]
mod tests {
    use super::*;

    const SQL: &str = r#"SELECT avg(value) FROM "line1/+/temp" GROUP BY topic, TUMBLE(1m)"#;

    async fn message(body: &Value) -> String {
        let bytes = serde_json::to_vec(body).expect("json");
        match read("acme", "temp", &bytes, "u", "now", &Compiler::Here).await {
            Ok(_) => String::new(),
            Err(e) => e.message,
        }
    }

    #[tokio::test]
    async fn errors_name_the_field_and_the_position() {
        let m = message(&json!({"sql": "SELECT avg(value) FROM"})).await;
        assert!(m.starts_with("sql: line 1, column "), "{m}");
        let m = message(&json!({"rule": {"from": "a/b", "operator": {"aggregate": {
            "window": {"tumbling": {"size": "1m"}},
            "select": [{"name": "x", "fn": "mean"}]}}}}))
        .await;
        assert!(
            m.starts_with("rule.operator.aggregate.select[0].fn: "),
            "{m}"
        );
        let m = message(&json!({"sql": SQL, "at": "edge"})).await;
        assert!(m.starts_with("sites: "), "{m}");
        let m = message(&json!({"sql": SQL, "at": "fog"})).await;
        assert!(m.starts_with("at: "), "{m}");
        let m = message(&json!({"sql": SQL, "sites": ["ok", "a.b"]})).await;
        assert!(m.starts_with("sites[1]: "), "{m}");
        let m = message(&json!({"sql": SQL, "alert": {"channels": ["Ops!"]}})).await;
        assert!(m.starts_with("alert.channels[0]: "), "{m}");
        let m = message(&json!({"sql": SQL, "alert": {"severity": "dire"}})).await;
        assert!(m.starts_with("alert.severity: "), "{m}");
        let m = message(&json!({"sql": SQL, "name": "other"})).await;
        assert!(m.starts_with("name: "), "{m}");
        let m = message(&json!({"sql": SQL, "rule": {}})).await;
        assert!(m.starts_with("sql: "), "{m}");
        let m = message(&json!({"sites": []})).await;
        assert!(m.starts_with("sql: missing"), "{m}");
        let m = message(&json!({"sql": SQL, "colour": "red"})).await;
        assert!(m.starts_with("colour: ") || m.starts_with("body: "), "{m}");
    }

    #[tokio::test]
    async fn a_read_rule_writes_back_as_it_is() {
        let body = json!({"sql": SQL, "sites": ["plant-1"], "alert": {"severity": "critical", "channels": ["ops"]}});
        let w = read(
            "acme",
            "temp",
            body.to_string().as_bytes(),
            "u",
            "t",
            &Compiler::Here,
        )
        .await
        .expect("valid");
        let companion = w.companion.expect("a companion");
        assert!(is_companion(&companion, "temp"));
        assert_eq!(companion.sites, vec!["plant-1".to_owned()]);
        let shown = serde_json::to_value(view(&w.stored, 3, Some(&spec_of(&companion))))
            .expect("serialisable");
        assert_eq!(shown["alert"]["severity"], "critical");
        let again = read(
            "acme",
            "temp",
            shown.to_string().as_bytes(),
            "u",
            "t",
            &Compiler::Here,
        )
        .await
        .expect("again");
        assert_eq!(again.stored, w.stored);
    }

    #[tokio::test]
    async fn an_uppercase_name_cannot_have_an_alert() {
        let body = json!({"sql": SQL, "alert": {}});
        let e = read(
            "acme",
            "Temp",
            body.to_string().as_bytes(),
            "u",
            "t",
            &Compiler::Here,
        )
        .await
        .expect_err("refused");
        assert!(e.message.starts_with("alert: "), "{}", e.message);
    }
}
