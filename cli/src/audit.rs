//! `plantd audit` (an organisation's audit records, filtered) and
//! `plantd audit verify` (its hash chain checked) over the identity API
//! (`GET /v1/audit`, `GET /v1/audit/verify`), so they work wherever the
//! API is reachable — against `plantd up` and in the cloud alike.
//!
//! `verify` exits 0 when the chain is intact, and 1 after printing the
//! first broken record when it is not.

use anyhow::Result;
use reqwest::Method;
use serde_json::Value;

use crate::session::{ExitKind, Session, fail};

/// The filters of `plantd audit`.
#[derive(Debug, Clone, Default)]
pub struct Filters<'a> {
    /// Another organisation (superadmin).
    pub org: Option<&'a str>,
    /// Only this actor id (`*` at the end: a prefix).
    pub actor: Option<&'a str>,
    /// Only this action (`auth.login`, or `auth.*`).
    pub action: Option<&'a str>,
    /// Only this target (`user:<id>`, `*` at the end: a prefix).
    pub target: Option<&'a str>,
    /// From this time: RFC 3339, or a duration ago (`30m`, `2h`, `7d`).
    pub since: Option<&'a str>,
    /// Until this time: as `since`.
    pub until: Option<&'a str>,
    /// Print at most this many records.
    pub limit: usize,
}

/// Records per API page.
const PAGE: usize = 1000;

/// `30s`, `15m`, `2h`, `7d` → milliseconds.
fn duration_ms(text: &str) -> Option<u64> {
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = number.parse().ok()?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

/// An RFC 3339 time for `--since`/`--until`: given as one, or a duration
/// ago.
///
/// # Errors
/// A usage error (exit 2) naming the flag.
pub fn time_arg(flag: &str, text: &str) -> Result<String> {
    if plantd_shared::headers::parse_time(text).is_some() {
        return Ok(text.to_owned());
    }
    match duration_ms(text) {
        Some(ago) => Ok(plantd_shared::headers::format_time(
            plantd_shared::headers::now_ms().saturating_sub(ago),
        )),
        None => Err(fail(
            ExitKind::Usage,
            format!(
                "--{flag} {text:?}: give an RFC 3339 time (2026-12-06T10:00:00Z) or a duration ago (30m, 2h, 7d)"
            ),
        )),
    }
}

/// `path?k=v&…` with the values percent-encoded.
pub(crate) fn with_query(path: &str, pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return path.to_owned();
    }
    let Ok(mut url) = reqwest::Url::parse("http://query.invalid/") else {
        return path.to_owned();
    };
    url.query_pairs_mut()
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())));
    format!("{path}?{}", url.query().unwrap_or_default())
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or("-")
}

/// One record as a line: time, outcome, action, actor, target, source.
fn line(r: &Value) -> String {
    let actor = match (r["actor"].as_str(), r["actor_org"].as_str()) {
        (Some(""), _) | (None, _) => format!("({})", text(r, "actor_kind")),
        (Some(a), Some(org)) => format!("{a}@{org}"),
        (Some(a), None) => a.to_owned(),
    };
    format!(
        "{}  {:<7}  {:<24}  {:<40}  {}  {}",
        text(r, "time"),
        text(r, "outcome"),
        text(r, "action"),
        actor,
        text(r, "target"),
        text(r, "source"),
    )
}

/// `plantd audit [filters]`: the records, oldest first.
///
/// # Errors
/// As [`Session::send`]; a usage error for a malformed time.
pub async fn list(s: &Session, f: Filters<'_>, json: bool) -> Result<()> {
    let mut query: Vec<(&str, String)> = Vec::new();
    for (name, value) in [
        ("org", f.org),
        ("actor", f.actor),
        ("action", f.action),
        ("target", f.target),
    ] {
        if let Some(v) = value {
            query.push((name, v.to_owned()));
        }
    }
    if let Some(t) = f.since {
        query.push(("since", time_arg("since", t)?));
    }
    if let Some(t) = f.until {
        query.push(("until", time_arg("until", t)?));
    }
    let mut records: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut org = String::new();
    while records.len() < f.limit {
        let mut q = query.clone();
        q.push(("limit", (f.limit - records.len()).min(PAGE).to_string()));
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let page: Value = s
            .send(s.request(Method::GET, &with_query("/v1/audit", &q)))
            .await?
            .json()
            .await?;
        org = text(&page, "org").to_owned();
        records.extend(page["records"].as_array().into_iter().flatten().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    if json {
        print_json(&serde_json::json!({ "org": org, "records": records }));
    } else {
        for r in &records {
            println!("{}", line(r));
        }
        if records.is_empty() {
            eprintln!("no audit records of {org} match");
        }
    }
    Ok(())
}

/// `plantd audit verify [--org ORG]`: checks the chain.
///
/// # Errors
/// As [`Session::send`]; exit 1 with the first broken record when the
/// chain is broken.
pub async fn verify(s: &Session, org: Option<&str>, json: bool) -> Result<()> {
    let q: Vec<(&str, String)> = org.map(|o| ("org", o.to_owned())).into_iter().collect();
    let req = s.request(Method::GET, &with_query("/v1/audit/verify", &q));
    let v: Value = s.send(req).await?.json().await?;
    let org = text(&v, "org");
    if json {
        print_json(&v);
    }
    if v["ok"].as_bool() == Some(true) {
        if !json {
            println!(
                "audit trail of {org}: {} record(s), chain intact (last hash {})",
                v["records"],
                text(&v, "last_hash")
            );
        }
        return Ok(());
    }
    let b = &v["broken"];
    let reason = describe(&b["reason"]);
    let mut message = format!(
        "audit trail of {org} is BROKEN: the record at stream sequence {} (after {} intact record(s)) {reason}",
        b["seq"], v["last_n"]
    );
    if !json && let Some(r) = b.get("record") {
        message.push_str("\nfirst broken record:\n");
        message.push_str(&serde_json::to_string_pretty(r).unwrap_or_default());
    }
    Err(fail(ExitKind::Failure, message))
}

/// The reason of a broken record in words.
fn describe(reason: &Value) -> String {
    match reason["kind"].as_str() {
        Some("numbering") => {
            let (want, got) = (
                reason["expected_n"].as_u64().unwrap_or(0),
                reason["found_n"].as_u64().unwrap_or(0),
            );
            if got > want {
                format!(
                    "is number {got} where {want} was due: {} record(s) before it are missing",
                    got - want
                )
            } else {
                format!("is number {got} where {want} was due: a record was inserted or repeated")
            }
        }
        Some("link") => format!(
            "does not link to the record before it (prev {}, but that record hashes to {}): a record was altered or forged",
            text(reason, "found_prev"),
            text(reason, "expected_prev")
        ),
        Some("wrong_org") => format!("names organisation {}", text(reason, "found")),
        Some("unreadable") => format!("is not a readable record ({})", text(reason, "error")),
        _ => reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_durations_ago() {
        assert_eq!(
            time_arg("since", "2026-12-06T10:00:00Z").expect("rfc3339"),
            "2026-12-06T10:00:00Z"
        );
        let t = time_arg("since", "2h").expect("duration");
        let ms = plantd_shared::headers::parse_time(&t).expect("a time");
        let now = plantd_shared::headers::now_ms();
        assert!(now - ms >= 7_200_000 && now - ms < 7_260_000);
        for bad in ["yesterday", "2x", "h", ""] {
            assert!(time_arg("since", bad).is_err(), "{bad}");
        }
    }
}
