//! `plantd analytics rules list|get|put|delete` and `plantd analytics
//! results`: the organisation's analytics rules over the proxy's
//! `/v1/analytics/rules` (reads need `analytics:read`, changes
//! `analytics:write`, and `alerts:write` for a rule with an alert), and
//! their results over `GET /v1/sites/{site}/aggregates`.
//!
//! `put NAME` takes the rule as `--sql "SELECT …"` or `--file rule.json`
//! (a whole request body `{sql | rule, sites, at, enabled, alert}` — what
//! `get` prints — or a bare rule in its JSON form); `--sites`, `--at`,
//! `--disabled` and `--alert-*` set those parts on top. The proxy checks
//! the rule: a mistake comes back naming the field, and the SQL's line
//! and column (exit 2).

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use plantd_client::alerting::AnalyticsRule;
use plantd_client::proxy::params;
use plantd_client::proxy::types::{Aggregate, Severity};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::audit::time_arg;
use crate::session::{ExitKind, Session, api_error, fail};

/// Most results `results` reads unless `--limit` says otherwise.
pub const DEFAULT_RESULTS: usize = 100;

fn print_json(v: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A rule name as one path segment, or a usage error.
fn path_name(name: &str) -> Result<&str> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(name)
    } else {
        Err(fail(
            ExitKind::Usage,
            format!("{name:?} is not a rule name (1-64 letters, digits, '_', '-')"),
        ))
    }
}

/// One line per rule: name, where, enabled, sites, alert severity, what
/// it is.
fn print_line(r: &AnalyticsRule) {
    let sites = if r.sites.is_empty() {
        "all sites".to_owned()
    } else {
        r.sites.join(",")
    };
    let what = r
        .sql
        .clone()
        .or_else(|| {
            r.rule
                .as_ref()
                .and_then(|rule| rule.get("from"))
                .and_then(Value::as_str)
                .map(|f| format!("from {f:?}"))
        })
        .unwrap_or_default();
    println!(
        "{:<24} {:<5} {:<8} {:<24} alert:{:<8} {}",
        r.name,
        r.at,
        if r.enabled { "enabled" } else { "paused" },
        sites,
        r.alert_severity().map_or("-", Severity::as_str),
        what.replace('\n', " ")
    );
}

/// `plantd analytics rules list`.
///
/// # Errors
/// As the API answers.
pub async fn list(s: &Session, json: bool) -> Result<()> {
    let rules = s
        .client()?
        .rest()
        .list_analytics_rules()
        .await
        .map_err(api_error)?;
    if json {
        print_json(&json!({ "rules": rules }));
    } else {
        for r in &rules {
            print_line(r);
        }
    }
    Ok(())
}

/// `plantd analytics rules get NAME`: the rule as JSON (what `put --file`
/// takes).
///
/// # Errors
/// Usage (2) for a malformed name; as the API answers (5 unknown).
pub async fn get(s: &Session, name: &str) -> Result<()> {
    let name = path_name(name)?;
    let rule = s
        .client()?
        .rest()
        .get_analytics_rule(name)
        .await
        .map_err(api_error)?;
    print_json(&rule);
    Ok(())
}

/// What `plantd analytics rules put` was given.
#[derive(Debug, Default, Clone)]
pub struct PutArgs {
    /// The rule as SQL.
    pub sql: Option<String>,
    /// A JSON file: a request body or a bare JSON-form rule (`-`: standard
    /// input).
    pub file: Option<PathBuf>,
    /// The sites it reads (none given: as in the file, else every site).
    pub sites: Vec<String>,
    /// `cloud` or `edge`.
    pub at: Option<String>,
    /// Keep it paused.
    pub disabled: bool,
    /// With a companion alert of this severity (`info`, `warning`,
    /// `critical`).
    pub alert_severity: Option<String>,
    /// The companion alert's notification channels.
    pub alert_channels: Vec<String>,
}

/// The request body `args` make.
///
/// # Errors
/// Usage (2): neither or both of `--sql` and `--file`, a file that is not
/// JSON, `--alert-channels` without an alert.
pub fn body_of(args: &PutArgs) -> Result<Value> {
    let mut body = match (&args.sql, &args.file) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(fail(
                ExitKind::Usage,
                "give the rule as --sql \"SELECT ...\" or --file rule.json (one of them)",
            ));
        }
        (Some(sql), None) => json!({ "sql": sql }),
        (None, Some(file)) => {
            let text = if file.as_os_str() == "-" {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                    .context("cannot read standard input")?;
                t
            } else {
                std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let v: Value = serde_json::from_str(&text).map_err(|e| {
                fail(
                    ExitKind::Usage,
                    format!("{}: not JSON: {e}", file.display()),
                )
            })?;
            if !v.is_object() {
                return Err(fail(
                    ExitKind::Usage,
                    format!("{}: expected a JSON object", file.display()),
                ));
            }
            if v.get("sql").is_some() || v.get("rule").is_some() {
                v
            } else {
                json!({ "rule": v })
            }
        }
    };
    let Some(obj) = body.as_object_mut() else {
        return Err(fail(ExitKind::Usage, "expected a JSON object"));
    };
    if !args.sites.is_empty() {
        obj.insert("sites".into(), json!(args.sites));
    }
    if let Some(at) = &args.at {
        obj.insert("at".into(), json!(at));
    }
    if args.disabled {
        obj.insert("enabled".into(), json!(false));
    }
    match (&args.alert_severity, args.alert_channels.is_empty()) {
        (Some(sev), _) => {
            let alert = obj.entry("alert").or_insert_with(|| json!({}));
            alert["severity"] = json!(sev);
            if !args.alert_channels.is_empty() {
                alert["channels"] = json!(args.alert_channels);
            }
        }
        (None, false) => match obj.get_mut("alert") {
            Some(alert) => alert["channels"] = json!(args.alert_channels),
            None => {
                return Err(fail(
                    ExitKind::Usage,
                    "--alert-channels needs --alert-severity (or an alert in the file)",
                ));
            }
        },
        (None, true) => {}
    }
    Ok(body)
}

/// A rule the proxy refused (400: its message names the field and the
/// SQL's position) is a usage error (exit 2), like a rule file `plantd
/// rules apply` refuses; anything else keeps its exit code.
fn refused_rule(name: &str, e: plantd_client::Error) -> anyhow::Error {
    match e {
        plantd_client::Error::Api {
            status: 400,
            message,
            ..
        } => fail(ExitKind::Usage, format!("analytics rule {name}: {message}")),
        other => api_error(other).context(format!("analytics rule {name}")),
    }
}

/// `plantd analytics rules put NAME …`: creates or replaces the rule (and
/// its companion alert rule `analytics-<NAME>`).
///
/// # Errors
/// Usage (2) for bad arguments or a rule the proxy refuses (its message
/// names the field and position); as the API answers.
pub async fn put(s: &Session, name: &str, args: &PutArgs, json: bool) -> Result<()> {
    let name = path_name(name)?;
    let body = body_of(args)?;
    let put = s
        .client()?
        .rest()
        .put_analytics_rule(name, &body)
        .await
        .map_err(|e| refused_rule(name, e))?;
    if json {
        print_json(&put.value);
    } else {
        let alert = put
            .value
            .alert_severity()
            .map(|sev| format!(" with alert rule analytics-{name} ({sev})"))
            .unwrap_or_default();
        println!(
            "analytics rule {name} {}{alert}",
            if put.created { "created" } else { "updated" }
        );
    }
    Ok(())
}

/// `plantd analytics rules delete NAME` (its companion alert rule goes
/// with it).
///
/// # Errors
/// As the API answers (5 unknown).
pub async fn delete(s: &Session, name: &str) -> Result<()> {
    let name = path_name(name)?;
    s.client()?
        .rest()
        .delete_analytics_rule(name)
        .await
        .map_err(api_error)?;
    println!("analytics rule {name} deleted");
    Ok(())
}

/// What `plantd analytics results` reads.
#[derive(Debug, Default, Clone)]
pub struct ResultsArgs {
    /// The site.
    pub site: String,
    /// Only this rule's.
    pub rule: Option<String>,
    /// Only this key's.
    pub key: Option<String>,
    /// Windows starting at or after (RFC 3339, ms since the epoch, or a
    /// duration ago such as `30m`).
    pub from: Option<String>,
    /// Windows starting at or before.
    pub to: Option<String>,
    /// At most this many windows.
    pub limit: usize,
}

/// A window bound as stored (ms since the epoch, or text) for people.
fn when(v: &Value) -> String {
    match v.as_i64() {
        Some(ms) => OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| ms.to_string()),
        None => v.as_str().unwrap_or("?").to_owned(),
    }
}

/// `plantd analytics results --site S [--rule R] [--key K] [--from]
/// [--to]`: the latest revision of each window, oldest first, following
/// the pages up to `limit` windows. One line each: start, end, rule,
/// key, revision, values; `--json`: the windows as a list.
///
/// # Errors
/// As the API answers.
pub async fn results(s: &Session, args: &ResultsArgs, json: bool) -> Result<()> {
    let limit = if args.limit == 0 {
        DEFAULT_RESULTS
    } else {
        args.limit
    };
    // ms since the epoch pass as they are; otherwise RFC 3339 or a
    // duration ago (`30m`), as `plantd logs` takes them.
    let bound = |flag: &str, v: &Option<String>| -> Result<Option<String>> {
        v.as_deref()
            .map(|t| {
                if t.parse::<i64>().is_ok() {
                    Ok(t.to_owned())
                } else {
                    time_arg(flag, t)
                }
            })
            .transpose()
    };
    let from = bound("from", &args.from)?;
    let to = bound("to", &args.to)?;
    let plantd = s.client()?;
    let mut all: Vec<Aggregate> = Vec::new();
    let mut cursor: Option<String> = None;
    while all.len() < limit {
        let query = params::GetSitesSiteAggregatesParams {
            rule: args.rule.clone(),
            key: args.key.clone(),
            from: from.clone(),
            to: to.clone(),
            limit: Some((limit - all.len()) as u64),
            cursor: cursor.take(),
        };
        let page = plantd
            .rest()
            .get_sites_site_aggregates(&args.site, &query)
            .await
            .map_err(api_error)?
            .value;
        all.extend(page.aggregates);
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    if json {
        print_json(&all);
        return Ok(());
    }
    for w in &all {
        let values = w
            .values
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let late = Some(w.dropped_late).filter(|n| *n > 0);
        println!(
            "{} {} {:<20} {:<28} rev {} {}{}",
            when(&w.window_start),
            when(&w.window_end),
            w.rule,
            w.key,
            w.revision,
            values,
            late.map(|n| format!(" (dropped late: {n})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_arguments_make_the_request_body() {
        let args = PutArgs {
            sql: Some("SELECT 1".into()),
            sites: vec!["plant-1".into()],
            at: Some("edge".into()),
            alert_severity: Some("critical".into()),
            alert_channels: vec!["ops".into()],
            ..PutArgs::default()
        };
        assert_eq!(
            body_of(&args).expect("body"),
            json!({"sql": "SELECT 1", "sites": ["plant-1"], "at": "edge",
                "alert": {"severity": "critical", "channels": ["ops"]}})
        );
        let neither = PutArgs::default();
        assert!(body_of(&neither).is_err());
        let channels_only = PutArgs {
            sql: Some("SELECT 1".into()),
            alert_channels: vec!["ops".into()],
            ..PutArgs::default()
        };
        assert!(body_of(&channels_only).is_err());
    }

    #[test]
    fn a_bare_json_rule_file_is_wrapped() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("rule.json");
        std::fs::write(&file, r#"{"from":"a/b","operator":{}}"#).expect("write");
        let args = PutArgs {
            file: Some(file),
            ..PutArgs::default()
        };
        let body = body_of(&args).expect("body");
        assert_eq!(body["rule"]["from"], "a/b");
        assert_eq!(when(&json!(60_000)), "1970-01-01T00:01:00Z");
    }
}
