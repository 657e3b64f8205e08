//! `plantd audit` (an organisation's audit records, filtered) and
//! `plantd audit verify` (its hash chain checked) over the identity API
//! (`GET /v1/audit`, `GET /v1/audit/verify`), so they work wherever the
//! API is reachable — against `plantd up` and in the cloud alike.
//!
//! `verify` exits 0 when the chain is intact, and 1 after printing the
//! first broken record when it is not.

use anyhow::Result;
use plantd_client::identity::params::{GetAuditParams, GetAuditVerifyParams};
use plantd_client::identity::types::AuditRecord;
use serde::Serialize;

use crate::session::{ExitKind, Session, api_error, fail};

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

fn print_json(v: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// One record as a line: time, outcome, action, actor, target, source.
fn line(r: &AuditRecord) -> String {
    let actor = match (r.actor.as_str(), r.actor_org.as_deref()) {
        ("", _) => format!("({})", r.actor_kind),
        (a, Some(org)) => format!("{a}@{org}"),
        (a, None) => a.to_owned(),
    };
    format!(
        "{}  {:<7}  {:<24}  {:<40}  {}  {}",
        r.time,
        r.outcome,
        r.action,
        actor,
        r.target,
        r.source.as_deref().unwrap_or("-"),
    )
}

/// `plantd audit [filters]`: the records, oldest first.
///
/// # Errors
/// As the API answers; a usage error for a malformed time.
pub async fn list(s: &Session, f: Filters<'_>, json: bool) -> Result<()> {
    let base = GetAuditParams {
        org: f.org.map(str::to_owned),
        actor: f.actor.map(str::to_owned),
        action: f.action.map(str::to_owned),
        target: f.target.map(str::to_owned),
        since: f.since.map(|t| time_arg("since", t)).transpose()?,
        until: f.until.map(|t| time_arg("until", t)).transpose()?,
        ..GetAuditParams::default()
    };
    let plantd = s.client()?;
    let mut records: Vec<AuditRecord> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut org = String::new();
    while records.len() < f.limit {
        let query = GetAuditParams {
            limit: u32::try_from((f.limit - records.len()).min(PAGE)).ok(),
            cursor: cursor.take(),
            ..base.clone()
        };
        let page = plantd
            .rest()
            .get_audit(&query)
            .await
            .map_err(api_error)?
            .value;
        org = page.org;
        records.extend(page.records);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
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
/// As the API answers; exit 1 with the first broken record when the
/// chain is broken.
pub async fn verify(s: &Session, org: Option<&str>, json: bool) -> Result<()> {
    let query = GetAuditVerifyParams {
        org: org.map(str::to_owned),
    };
    let v = s
        .client()?
        .rest()
        .get_audit_verify(&query)
        .await
        .map_err(api_error)?
        .value;
    if json {
        print_json(&v);
    }
    let broken = match (&v.broken, v.ok) {
        (Some(b), false) => b,
        (_, true) => {
            if !json {
                println!(
                    "audit trail of {}: {} record(s), chain intact (last hash {})",
                    v.org, v.records, v.last_hash
                );
            }
            return Ok(());
        }
        (None, false) => {
            return Err(fail(
                ExitKind::Failure,
                format!(
                    "audit trail of {} is BROKEN after {} intact record(s)",
                    v.org, v.last_n
                ),
            ));
        }
    };
    let reason = match broken.why() {
        Ok(why) => why.to_string(),
        Err(_) => broken.reason.to_string(),
    };
    let mut message = format!(
        "audit trail of {} is BROKEN: the record at stream sequence {} (after {} intact record(s)) {reason}",
        v.org, broken.seq, v.last_n
    );
    if !json && let Some(r) = &broken.record {
        message.push_str("\nfirst broken record:\n");
        message.push_str(&serde_json::to_string_pretty(r).unwrap_or_default());
    }
    Err(fail(ExitKind::Failure, message))
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
