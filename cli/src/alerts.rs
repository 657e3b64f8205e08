//! `plantd alerts list|ack|history|silence|silences|unsilence`: the
//! organisation's alerts and silences over the proxy's `/v1/alerts` and
//! `/v1/silences` (reads need `alerts:read`, ack and silences
//! `alerts:write`).

use anyhow::Result;
use plantd_alerts::{Dur, Matcher};
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::session::{ExitKind, Session, fail};

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// An alert id (`<rule>.<key hash>`) as one path segment, or a usage error.
fn path_id(id: &str) -> Result<&str> {
    let ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(id)
    } else {
        Err(fail(ExitKind::Usage, format!("{id:?} is not an alert id")))
    }
}

/// Filters of `plantd alerts list`.
#[derive(Debug, Default, Clone)]
pub struct ListFilter<'a> {
    /// `inactive`, `pending`, `firing`, `no_data`.
    pub state: Option<&'a str>,
    /// A site.
    pub site: Option<&'a str>,
    /// `info`, `warning`, `critical`.
    pub severity: Option<&'a str>,
}

/// `plantd alerts list`: one line per alert instance: id, state, severity,
/// site, rule, key, value, ack.
///
/// # Errors
/// As [`Session::send`] (1 with the reason for a bad filter).
pub async fn list(s: &Session, filter: &ListFilter<'_>, json: bool) -> Result<()> {
    // State, severity and site values are single tokens (validated by the
    // proxy), so they need no escaping beyond refusing separators.
    let mut query = Vec::new();
    for (k, v) in [
        ("state", filter.state),
        ("site", filter.site),
        ("severity", filter.severity),
    ] {
        if let Some(v) = v {
            if v.contains(['&', '=', '#', '?', ' ', '%']) {
                return Err(fail(
                    ExitKind::Usage,
                    format!("--{k}: {v:?} is not a valid value"),
                ));
            }
            query.push(format!("{k}={v}"));
        }
    }
    let path = if query.is_empty() {
        "/v1/alerts".to_owned()
    } else {
        format!("/v1/alerts?{}", query.join("&"))
    };
    let v: Value = s.send(s.request(Method::GET, &path)).await?.json().await?;
    if json {
        print_json(&v);
        return Ok(());
    }
    for a in v["alerts"].as_array().into_iter().flatten() {
        let value = a["value"]
            .as_f64()
            .map(|x| x.to_string())
            .unwrap_or_default();
        let acked = a["ack"]["by"]
            .as_str()
            .map(|by| format!("acked by {by}"))
            .unwrap_or_default();
        println!(
            "{:<40} {:<9} {:<9} {:<12} {:<20} {:<28} {:<10} {}",
            a["id"].as_str().unwrap_or("?"),
            a["state"].as_str().unwrap_or("?"),
            a["severity"].as_str().unwrap_or("?"),
            a["site"].as_str().unwrap_or("?"),
            a["rule"].as_str().unwrap_or("?"),
            a["key"].as_str().unwrap_or(""),
            value,
            acked
        );
    }
    Ok(())
}

/// `plantd alerts ack ID --note TEXT`.
///
/// # Errors
/// As [`Session::send`] (5 unknown, 1 when not firing or acked already).
pub async fn ack(s: &Session, id: &str, note: &str, json: bool) -> Result<()> {
    let id = path_id(id)?;
    let v: Value = s
        .send(
            s.request(Method::POST, &format!("/v1/alerts/{id}/ack"))
                .json(&json!({ "note": note })),
        )
        .await?
        .json()
        .await?;
    if json {
        print_json(&v);
    } else {
        println!("alert {id} acknowledged");
    }
    Ok(())
}

/// `plantd alerts history ID`: the alert's records, oldest first.
///
/// # Errors
/// As [`Session::send`] (5 unknown).
pub async fn history(s: &Session, id: &str, json: bool) -> Result<()> {
    let id = path_id(id)?;
    let v: Value = s
        .send(s.request(Method::GET, &format!("/v1/alerts/{id}/history")))
        .await?
        .json()
        .await?;
    if json {
        print_json(&v);
        return Ok(());
    }
    for r in v["records"].as_array().into_iter().flatten() {
        let what = match r["kind"].as_str() {
            Some("transition") => format!(
                "{} -> {}",
                r["from"].as_str().unwrap_or("?"),
                r["to"].as_str().unwrap_or("?")
            ),
            Some(kind) => kind.to_owned(),
            None => "?".to_owned(),
        };
        let silenced = if r["silenced"].as_bool() == Some(true) {
            " (silenced)"
        } else {
            ""
        };
        println!(
            "{:<26} {:<22} {}{}",
            r["at"].as_str().unwrap_or("?"),
            what,
            r["summary"].as_str().unwrap_or(""),
            silenced
        );
    }
    Ok(())
}

/// The body of `POST /v1/silences` for `plantd alerts silence`.
///
/// # Errors
/// A usage error (2) for a bad matcher or duration.
pub fn silence_body(matchers: &[String], duration: &str, comment: &str) -> Result<Value> {
    if matchers.is_empty() {
        return Err(fail(
            ExitKind::Usage,
            "give at least one --match label=value",
        ));
    }
    let parsed = matchers
        .iter()
        .map(|m| m.parse::<Matcher>().map_err(|e| fail(ExitKind::Usage, e)))
        .collect::<Result<Vec<_>>>()?;
    let d: Dur = duration
        .parse()
        .map_err(|e: plantd_alerts::duration::DurError| {
            fail(ExitKind::Usage, format!("--for: {e}"))
        })?;
    if d.as_millis() <= 0 {
        return Err(fail(ExitKind::Usage, "--for: must be more than 0s"));
    }
    let now = OffsetDateTime::now_utc();
    let ends = (now + d.to_time())
        .format(&Rfc3339)
        .map_err(|e| fail(ExitKind::Usage, format!("--for: {e}")))?;
    Ok(json!({ "matchers": parsed, "ends": ends, "comment": comment }))
}

/// `plantd alerts silence --match k=v [--match ..] --for 2h [--comment ..]`.
///
/// # Errors
/// Usage (2) for a bad matcher or duration; as [`Session::send`].
pub async fn silence(
    s: &Session,
    matchers: &[String],
    duration: &str,
    comment: &str,
    json: bool,
) -> Result<()> {
    let body = silence_body(matchers, duration, comment)?;
    let v: Value = s
        .send(s.request(Method::POST, "/v1/silences").json(&body))
        .await?
        .json()
        .await?;
    if json {
        print_json(&v);
    } else {
        println!(
            "silence {} until {}",
            v["id"].as_str().unwrap_or("?"),
            v["ends"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `plantd alerts silences`: one line per silence: id, active, until,
/// matchers, comment.
///
/// # Errors
/// As [`Session::send`].
pub async fn silences(s: &Session, json: bool) -> Result<()> {
    let v: Value = s
        .send(s.request(Method::GET, "/v1/silences"))
        .await?
        .json()
        .await?;
    if json {
        print_json(&v);
        return Ok(());
    }
    for x in v["silences"].as_array().into_iter().flatten() {
        let matchers = x["matchers"]
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
        let active = if x["active"].as_bool() == Some(true) {
            "active"
        } else {
            "inactive"
        };
        println!(
            "{:<36} {:<8} until {:<26} {:<32} {}",
            x["id"].as_str().unwrap_or("?"),
            active,
            x["ends"].as_str().unwrap_or("?"),
            matchers,
            x["comment"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `plantd alerts unsilence ID`: ends a silence now.
///
/// # Errors
/// As [`Session::send`] (5 unknown).
pub async fn unsilence(s: &Session, id: &str) -> Result<()> {
    let id = path_id(id)?;
    s.send(s.request(Method::DELETE, &format!("/v1/silences/{id}")))
        .await?;
    println!("silence {id} deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_flags_make_a_body() {
        let b = silence_body(&["site=plant1".into(), "rule=~hot.*".into()], "2h", "x").expect("ok");
        assert_eq!(b["matchers"][1]["op"], "=~");
        assert!(b["ends"].as_str().is_some());
        assert!(silence_body(&[], "2h", "").is_err());
        assert!(silence_body(&["site=a".into()], "soon", "").is_err());
        assert!(silence_body(&["nothing".into()], "1h", "").is_err());
    }
}
