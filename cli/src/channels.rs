//! `plantd channels list|get|apply|delete|test`: the organisation's alert
//! notification channels (webhook, SNS), over the proxy's
//! `/v1/alert-channels` (needs `alerts:admin`). Secrets are write-only:
//! `list` and `get` never show them; `apply` without a webhook `secret`
//! keeps the stored one.
//!
//! `apply -f FILE` takes one channel (`{"name": "ops", "webhook": {…}}`)
//! or a list of them, and creates or replaces each (`-` reads standard
//! input).

use std::io::Read as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use reqwest::Method;
use serde_json::Value;

use crate::session::{ExitKind, Session, fail};

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// One line per channel: name, type, target, send_resolved, matchers.
fn print_line(c: &Value) {
    let target = match c["type"].as_str() {
        Some("webhook") => c["webhook"]["url"].as_str().unwrap_or("?").to_owned(),
        Some("sns") => c["sns"]["topic_arn"].as_str().unwrap_or("?").to_owned(),
        _ => "?".to_owned(),
    };
    let matchers = c["matchers"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    format!(
                        "{}{}{}",
                        m["label"].as_str().unwrap_or("?"),
                        m["op"].as_str().unwrap_or("="),
                        m["value"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let resolved = if c["send_resolved"].as_bool().unwrap_or(true) {
        "resolved:yes"
    } else {
        "resolved:no"
    };
    println!(
        "{:<24} {:<8} {:<48} {:<12} {}",
        c["name"].as_str().unwrap_or("?"),
        c["type"].as_str().unwrap_or("?"),
        target,
        resolved,
        matchers
    );
}

/// A channel name as one path segment, or a usage error.
fn path_name(name: &str) -> Result<&str> {
    plantd_alerts::notify::channel::check_name(name)
        .map(|()| name)
        .map_err(|e| fail(ExitKind::Usage, e.to_string()))
}

/// `plantd channels list`.
///
/// # Errors
/// As [`Session::send`].
pub async fn list(s: &Session, json: bool) -> Result<()> {
    let v: Value = s
        .send(s.request(Method::GET, "/v1/alert-channels"))
        .await?
        .json()
        .await?;
    if json {
        print_json(&v);
    } else {
        for c in v["channels"].as_array().into_iter().flatten() {
            print_line(c);
        }
    }
    Ok(())
}

/// `plantd channels get NAME`.
///
/// # Errors
/// Usage (2) for a malformed name; as [`Session::send`] (5 unknown).
pub async fn get(s: &Session, name: &str, json: bool) -> Result<()> {
    let name = path_name(name)?;
    let v: Value = s
        .send(s.request(Method::GET, &format!("/v1/alert-channels/{name}")))
        .await?
        .json()
        .await?;
    if json {
        print_json(&v);
    } else {
        print_line(&v);
    }
    Ok(())
}

/// The channels in `text`: one object or a list of them.
///
/// # Errors
/// A usage error (2) naming what is wrong.
pub fn parse_channels(text: &str) -> Result<Vec<(String, Value)>> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| fail(ExitKind::Usage, format!("not JSON: {e}")))?;
    let items = match v {
        Value::Array(items) => items,
        Value::Object(_) => vec![v],
        _ => {
            return Err(fail(
                ExitKind::Usage,
                "expected a channel object or a list of them",
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let name = item["name"].as_str().map(str::to_owned).ok_or_else(|| {
                fail(
                    ExitKind::Usage,
                    format!("channel {i}: \"name\" is required"),
                )
            })?;
            path_name(&name)?;
            Ok((name, item))
        })
        .collect()
}

/// `plantd channels apply -f FILE`: creates or replaces every channel in
/// the file (`-`: standard input), in order; stops at the first refusal.
///
/// # Errors
/// Usage (2) for a file that is not channels; as [`Session::send`] (1 with
/// the field named for an invalid channel).
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
    let mut applied = Vec::new();
    for (name, body) in parse_channels(&text)? {
        let resp = s
            .send(
                s.request(Method::PUT, &format!("/v1/alert-channels/{name}"))
                    .json(&body),
            )
            .await
            .map_err(|e| e.context(format!("channel {name}")))?;
        let created = resp.status().as_u16() == 201;
        let v: Value = resp.json().await?;
        if !json {
            println!(
                "channel {name} {}",
                if created { "created" } else { "updated" }
            );
        }
        applied.push(v);
    }
    if json {
        print_json(&Value::Array(applied));
    }
    Ok(())
}

/// `plantd channels delete NAME`.
///
/// # Errors
/// As [`Session::send`] (5 unknown).
pub async fn delete(s: &Session, name: &str) -> Result<()> {
    let name = path_name(name)?;
    s.send(s.request(Method::DELETE, &format!("/v1/alert-channels/{name}")))
        .await?;
    println!("channel {name} deleted");
    Ok(())
}

/// `plantd channels test NAME`: sends a test notification once.
///
/// # Errors
/// As [`Session::send`] (1 with the receiver's answer when it refused).
pub async fn test(s: &Session, name: &str, json: bool) -> Result<()> {
    let name = path_name(name)?;
    let v: Value = s
        .send(s.request(Method::POST, &format!("/v1/alert-channels/{name}/test")))
        .await?
        .json()
        .await?;
    if json {
        print_json(&v);
    } else {
        println!(
            "test notification delivered on {name} ({})",
            v["receipt"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_hold_one_channel_or_a_list() {
        let one = parse_channels(r#"{"name":"ops","webhook":{"url":"http://x"}}"#).expect("one");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].0, "ops");
        let list =
            parse_channels(r#"[{"name":"a","sns":{}},{"name":"b","sns":{}}]"#).expect("list");
        assert_eq!(
            list.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(
            parse_channels(r#"{"webhook":{}}"#).is_err(),
            "a name is required"
        );
        assert!(parse_channels(r#"{"name":"Bad.Name"}"#).is_err());
        assert!(parse_channels("3").is_err());
        assert!(parse_channels("not json").is_err());
    }
}
