//! `plantd alerts list|ack|history|silence|silences|unsilence`: the
//! organisation's alerts and silences over the proxy's `/v1/alerts` and
//! `/v1/silences` (reads need `alerts:read`, ack and silences
//! `alerts:write`).

use anyhow::Result;
use plantd_alerts::{Dur, Matcher};
use plantd_client::alerting::{AlertFilter, LabelMatcher, NewSilence};
use plantd_client::proxy::types::{RecordKind, Severity};
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::session::{ExitKind, Session, api_error, fail};

fn print_json(v: &impl Serialize) {
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
/// As the API answers (2 with the reason for a bad filter value).
pub async fn list(s: &Session, filter: &ListFilter<'_>, json: bool) -> Result<()> {
    // State, severity and site values are single tokens (validated by the
    // proxy); separators are refused here so a typo is a usage error.
    for (k, v) in [
        ("state", filter.state),
        ("site", filter.site),
        ("severity", filter.severity),
    ] {
        if let Some(v) = v
            && v.contains(['&', '=', '#', '?', ' ', '%'])
        {
            return Err(fail(
                ExitKind::Usage,
                format!("--{k}: {v:?} is not a valid value"),
            ));
        }
    }
    let query = AlertFilter {
        state: filter.state.map(str::to_owned),
        site: filter.site.map(str::to_owned),
        severity: filter.severity.map(str::to_owned),
        rule: None,
    };
    let alerts = s
        .client()?
        .rest()
        .list_alerts(&query)
        .await
        .map_err(api_error)?;
    if json {
        print_json(&json!({ "alerts": alerts }));
        return Ok(());
    }
    for a in &alerts {
        let value = a.value.map(|x| x.to_string()).unwrap_or_default();
        let acked = a
            .ack
            .as_ref()
            .map(|ack| format!("acked by {}", ack.by))
            .unwrap_or_default();
        println!(
            "{:<40} {:<9} {:<9} {:<12} {:<20} {:<28} {:<10} {}",
            a.id,
            a.state,
            a.severity.map_or("?", Severity::as_str),
            a.site,
            a.rule,
            a.key,
            value,
            acked
        );
    }
    Ok(())
}

/// `plantd alerts ack ID --note TEXT`.
///
/// # Errors
/// As the API answers (5 unknown, 6 when not firing or acked already).
pub async fn ack(s: &Session, id: &str, note: &str, json: bool) -> Result<()> {
    let id = path_id(id)?;
    let record = s
        .client()?
        .rest()
        .ack_alert(id, note)
        .await
        .map_err(api_error)?;
    if json {
        print_json(&record);
    } else {
        println!("alert {id} acknowledged");
    }
    Ok(())
}

/// `plantd alerts history ID`: the alert's records, oldest first.
///
/// # Errors
/// As the API answers (5 unknown).
pub async fn history(s: &Session, id: &str, json: bool) -> Result<()> {
    let id = path_id(id)?;
    let h = s
        .client()?
        .rest()
        .alert_history(id)
        .await
        .map_err(api_error)?;
    if json {
        print_json(&h);
        return Ok(());
    }
    for r in &h.records {
        let what = if r.kind == RecordKind::Transition {
            format!("{} -> {}", r.from, r.to)
        } else {
            r.kind.to_string()
        };
        let silenced = if r.silenced == Some(true) {
            " (silenced)"
        } else {
            ""
        };
        println!("{:<26} {:<22} {}{}", r.at, what, r.summary, silenced);
    }
    Ok(())
}

/// The silence `plantd alerts silence` creates.
///
/// # Errors
/// A usage error (2) for a bad matcher or duration.
pub fn silence_body(matchers: &[String], duration: &str, comment: &str) -> Result<NewSilence> {
    if matchers.is_empty() {
        return Err(fail(
            ExitKind::Usage,
            "give at least one --match label=value",
        ));
    }
    let parsed = matchers
        .iter()
        .map(|m| {
            let m = m.parse::<Matcher>().map_err(|e| fail(ExitKind::Usage, e))?;
            // The engine's own matcher, as the API reads it.
            serde_json::from_value::<LabelMatcher>(json!(m))
                .map_err(|e| fail(ExitKind::Usage, format!("--match: {e}")))
        })
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
    Ok(NewSilence {
        matchers: parsed,
        ends,
        comment: Some(comment.to_owned()),
        ..NewSilence::default()
    })
}

/// `plantd alerts silence --match k=v [--match ..] --for 2h [--comment ..]`.
///
/// # Errors
/// Usage (2) for a bad matcher or duration; as the API answers.
pub async fn silence(
    s: &Session,
    matchers: &[String],
    duration: &str,
    comment: &str,
    json: bool,
) -> Result<()> {
    let body = silence_body(matchers, duration, comment)?;
    let created = s
        .client()?
        .rest()
        .create_silence(&body)
        .await
        .map_err(api_error)?;
    if json {
        print_json(&created);
    } else {
        println!(
            "silence {} until {}",
            created.id.as_deref().unwrap_or("?"),
            created.ends
        );
    }
    Ok(())
}

/// `plantd alerts silences`: one line per silence: id, active, until,
/// matchers, comment.
///
/// # Errors
/// As the API answers.
pub async fn silences(s: &Session, json: bool) -> Result<()> {
    let all = s
        .client()?
        .rest()
        .list_silences()
        .await
        .map_err(api_error)?;
    if json {
        print_json(&json!({ "silences": all }));
        return Ok(());
    }
    for x in &all {
        let matchers = x
            .matchers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let active = if x.active { "active" } else { "inactive" };
        println!(
            "{:<36} {:<8} until {:<26} {:<32} {}",
            x.id, active, x.ends, matchers, x.comment
        );
    }
    Ok(())
}

/// `plantd alerts unsilence ID`: ends a silence now.
///
/// # Errors
/// As the API answers (5 unknown).
pub async fn unsilence(s: &Session, id: &str) -> Result<()> {
    let id = path_id(id)?;
    s.client()?
        .rest()
        .delete_silence(id)
        .await
        .map_err(api_error)?;
    println!("silence {id} deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plantd_client::proxy::types::MatchOp;

    #[test]
    fn silence_flags_make_a_body() {
        let b = silence_body(&["site=plant1".into(), "rule=~hot.*".into()], "2h", "x").expect("ok");
        assert_eq!(b.matchers[1].op, MatchOp::Re);
        assert!(!b.ends.is_empty());
        assert!(silence_body(&[], "2h", "").is_err());
        assert!(silence_body(&["site=a".into()], "soon", "").is_err());
        assert!(silence_body(&["nothing".into()], "1h", "").is_err());
    }
}
