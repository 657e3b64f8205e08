//! `plantd rules list|get|apply|delete`: the organisation's alert rules,
//! over the proxy's `/v1/alert-rules` (reads need `alerts:read`, changes
//! `alerts:write`).
//!
//! `apply -f FILE` takes one rule or a list of them and creates or
//! replaces each (`-` reads standard input). Every rule is checked here
//! first with the engine's own validation, so a mistake is reported with
//! its field (`rules[1].for: must be ≥ 0s`, exit 2) before anything is
//! sent.

use std::io::Read as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use plantd_alerts::Rule;
use plantd_client::alerting::AlertRule;
use plantd_client::proxy::types::Severity;
use serde::Serialize;
use serde_json::Value;

use crate::session::{ExitKind, Session, api_error, fail};

fn print_json(v: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// One line per rule: id, severity, `for`, condition kind, what it
/// watches, name.
fn print_line(r: &AlertRule) {
    println!(
        "{:<24} {:<9} for {:<6} {:<11} {:<32} {}",
        r.id,
        r.severity.map_or("warning", Severity::as_str),
        r.r#for.as_deref().unwrap_or("0s"),
        r.condition_kind().unwrap_or("?"),
        r.watches().unwrap_or("?"),
        r.name.as_deref().unwrap_or_default()
    );
}

/// A rule id as one path segment, or a usage error.
fn path_id(id: &str) -> Result<&str> {
    if plantd_alerts::rule::valid_id(id) {
        Ok(id)
    } else {
        Err(fail(
            ExitKind::Usage,
            format!("{id:?} is not a rule id (lowercase letters, digits, '-', '_')"),
        ))
    }
}

/// The rules in `text` (one object or a list), each validated; errors
/// name the field, prefixed `rules[i].` for a list.
///
/// # Errors
/// A usage error (2) naming the rule and the field.
pub fn parse_rules(text: &str) -> Result<Vec<Rule>> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| fail(ExitKind::Usage, format!("not JSON: {e}")))?;
    let (items, list) = match v {
        Value::Array(items) => (items, true),
        Value::Object(_) => (vec![v], false),
        _ => {
            return Err(fail(
                ExitKind::Usage,
                "expected a rule object or a list of them",
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let bytes = serde_json::to_vec(item)?;
            Rule::from_json(&bytes).map_err(|e| {
                let at = if list {
                    format!("rules[{i}].")
                } else {
                    String::new()
                };
                fail(ExitKind::Usage, format!("{at}{e}"))
            })
        })
        .collect()
}

/// `plantd rules list`.
///
/// # Errors
/// As the API answers.
pub async fn list(s: &Session, json: bool) -> Result<()> {
    let rules = s
        .client()?
        .rest()
        .list_alert_rules()
        .await
        .map_err(api_error)?;
    if json {
        print_json(&serde_json::json!({ "rules": rules }));
    } else {
        for r in &rules {
            print_line(r);
        }
    }
    Ok(())
}

/// `plantd rules get ID`: the rule as JSON (what `apply` takes).
///
/// # Errors
/// Usage (2) for a malformed id; as the API answers (5 unknown).
pub async fn get(s: &Session, id: &str) -> Result<()> {
    let id = path_id(id)?;
    let rule = s
        .client()?
        .rest()
        .get_alert_rule(id)
        .await
        .map_err(api_error)?;
    print_json(&rule);
    Ok(())
}

/// `plantd rules apply -f FILE`: creates or replaces every rule in the
/// file (`-`: standard input), in order, after checking them all.
///
/// # Errors
/// Usage (2) for an invalid rule (the field named); as the API answers.
pub async fn apply(s: &Session, file: &Path, json: bool) -> Result<()> {
    let text = if file.as_os_str() == "-" {
        let mut t = String::new();
        std::io::stdin()
            .read_to_string(&mut t)
            .context("cannot read standard input")?;
        t
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let rules = parse_rules(&text)?;
    let plantd = s.client()?;
    let mut applied = Vec::new();
    for rule in rules {
        let put = plantd
            .rest()
            .put_alert_rule(&rule.id, &rule)
            .await
            .map_err(|e| api_error(e).context(format!("rule {}", rule.id)))?;
        if !json {
            println!(
                "rule {} {}",
                rule.id,
                if put.created { "created" } else { "updated" }
            );
        }
        applied.push(put.value);
    }
    if json {
        print_json(&applied);
    }
    Ok(())
}

/// `plantd rules delete ID`.
///
/// # Errors
/// As the API answers (5 unknown).
pub async fn delete(s: &Session, id: &str) -> Result<()> {
    let id = path_id(id)?;
    s.client()?
        .rest()
        .delete_alert_rule(id)
        .await
        .map_err(api_error)?;
    println!("rule {id} deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_files_are_checked_naming_the_field() {
        let ok = r#"{"id":"hot","condition":{"kind":"threshold","topic":"t","op":">","value":1}}"#;
        assert_eq!(parse_rules(ok).expect("one").len(), 1);
        let list = format!(
            "[{ok}, {}]",
            ok.replace("\"hot\"", "\"hot2\",\"for\":\"-1s\"")
        );
        let err = parse_rules(&list).expect_err("invalid").to_string();
        assert_eq!(err, "rules[1].for: must be ≥ 0s");
        assert!(parse_rules("3").is_err());
    }
}
