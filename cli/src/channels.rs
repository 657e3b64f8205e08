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
use plantd_client::alerting::Channel;
use serde::Serialize;
use serde_json::Value;

use crate::session::{ExitKind, Session, api_error, fail};

fn print_json(v: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// One line per channel: name, type, target, send_resolved, matchers.
fn print_line(c: &Channel) {
    let matchers = c
        .matchers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let resolved = if c.send_resolved {
        "resolved:yes"
    } else {
        "resolved:no"
    };
    println!(
        "{:<24} {:<8} {:<48} {:<12} {}",
        c.name,
        c.r#type,
        c.target().unwrap_or("?"),
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
/// As the API answers.
pub async fn list(s: &Session, json: bool) -> Result<()> {
    let channels = s
        .client()?
        .rest()
        .list_channels()
        .await
        .map_err(api_error)?;
    if json {
        print_json(&serde_json::json!({ "channels": channels }));
    } else {
        for c in &channels {
            print_line(c);
        }
    }
    Ok(())
}

/// `plantd channels get NAME`.
///
/// # Errors
/// Usage (2) for a malformed name; as the API answers (5 unknown).
pub async fn get(s: &Session, name: &str, json: bool) -> Result<()> {
    let name = path_name(name)?;
    let c = s
        .client()?
        .rest()
        .get_channel(name)
        .await
        .map_err(api_error)?;
    if json {
        print_json(&c);
    } else {
        print_line(&c);
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
/// Usage (2) for a file that is not channels; as a failed API call (1 with
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
    let channels = parse_channels(&text)?;
    let plantd = s.client()?;
    let mut applied = Vec::new();
    for (name, body) in channels {
        let put = plantd
            .rest()
            .put_channel(&name, &body)
            .await
            .map_err(|e| api_error(e).context(format!("channel {name}")))?;
        if !json {
            println!(
                "channel {name} {}",
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

/// `plantd channels delete NAME`.
///
/// # Errors
/// As the API answers (5 unknown).
pub async fn delete(s: &Session, name: &str) -> Result<()> {
    let name = path_name(name)?;
    s.client()?
        .rest()
        .delete_channel(name)
        .await
        .map_err(api_error)?;
    println!("channel {name} deleted");
    Ok(())
}

/// `plantd channels test NAME`: sends a test notification once.
///
/// # Errors
/// As the API answers (1 with the receiver's answer when it refused).
pub async fn test(s: &Session, name: &str, json: bool) -> Result<()> {
    let name = path_name(name)?;
    let t = s
        .client()?
        .rest()
        .test_channel(name)
        .await
        .map_err(api_error)?;
    if json {
        print_json(&t);
    } else {
        println!("test notification delivered on {name} ({})", t.receipt);
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
