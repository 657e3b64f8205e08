//! `plantd logs`: a site's log lines over the proxy — the past from
//! `GET /v1/logs` (the log index), or live with `-f` over the WebSocket
//! `/v1/ws` (`tail` operation), like `plantd sub`.
//!
//! Lines print oldest first, one per line:
//! `<time> <LEVEL> <site> <source> <message> key=value…` (a line that could
//! not be parsed ends with `[unparsed: why]`), or one JSON record per line
//! with `--json` (the shape of `GET /v1/logs`). `--filter` takes the log
//! query language (`|= "overheat" | temp > 80`, docs/api.md "Logs"); a bad
//! filter is a usage error naming its position.

use anyhow::Result;
use plantd_client::TailOptions;
use plantd_client::proxy::{params, types::LogLine};
use serde_json::Value;

use crate::audit::time_arg;
use crate::live::{confirmed, live_error};
use crate::session::{ExitKind, Session, api_error, fail};

/// Records per API page.
const PAGE: usize = 1000;

/// What `plantd logs` reads.
#[derive(Debug, Clone, Default)]
pub struct LogsArgs<'a> {
    /// The site (required but for the superadmin, and always with `-f`).
    pub site: Option<&'a str>,
    /// Only this source (exact, or a glob: `line1/*`).
    pub source: Option<&'a str>,
    /// Only this level and above.
    pub level: Option<&'a str>,
    /// From this time: RFC 3339 or a duration ago (`1h`).
    pub since: Option<&'a str>,
    /// Until this time.
    pub until: Option<&'a str>,
    /// A filter in the log query language.
    pub filter: Option<&'a str>,
    /// At most this many lines (the newest); with `-f`, exit after this many.
    pub limit: Option<usize>,
    /// Follow live lines instead of reading the past.
    pub follow: bool,
    /// JSON lines instead of text.
    pub json: bool,
}

/// `plantd logs`.
///
/// # Errors
/// Exit code 2 for a bad filter, level or time (naming it), 4 for a site
/// of another organisation or a missing permission, 3 for a refused token,
/// 7 when the server (or its log index) is unavailable.
pub async fn logs(s: &mut Session, a: LogsArgs<'_>) -> Result<()> {
    // Checked here first, so a typo is a usage error naming the position.
    if let Some(f) = a.filter {
        plantd_logger::parse_filter(f)
            .map_err(|e| fail(ExitKind::Usage, format!("--filter: {e}")))?;
    }
    if let Some(l) = a.level
        && plantd_logger::Level::from_name(l).is_none()
    {
        return Err(fail(
            ExitKind::Usage,
            format!("--level {l:?}: give trace, debug, info, warn, error or fatal"),
        ));
    }
    if a.follow {
        return follow(s, &a).await;
    }
    let limit = a.limit.unwrap_or(100).max(1);
    let base = params::GetLogsParams {
        site: a.site.map(str::to_owned),
        source: a.source.map(str::to_owned),
        level: a.level.map(str::to_owned),
        from: a.since.map(|v| time_arg("since", v)).transpose()?,
        to: a.until.map(|v| time_arg("until", v)).transpose()?,
        filter: a.filter.map(str::to_owned),
        ..params::GetLogsParams::default()
    };
    let plantd = s.client()?;
    // Newest first from the API, printed oldest first.
    let mut records: Vec<LogLine> = Vec::new();
    let mut cursor: Option<String> = None;
    while records.len() < limit {
        let query = params::GetLogsParams {
            limit: Some((limit - records.len()).min(PAGE) as u64),
            cursor: cursor.take(),
            ..base.clone()
        };
        let page = plantd
            .rest()
            .get_logs(&query)
            .await
            .map_err(api_error)?
            .value;
        records.extend(page.records);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    for r in records.iter().rev() {
        print_record(r, a.json);
    }
    Ok(())
}

/// `-f`: tails the site's lines until interrupted (or `--limit` lines),
/// on the SDK's [`plantd_client::Live::tail`]: sequenced on
/// `PLANTD_LOGS`, so a lost connection is resumed at the last line + 1,
/// and an expired token is refreshed and the tail resumed the same way.
async fn follow(s: &mut Session, a: &LogsArgs<'_>) -> Result<()> {
    use futures::StreamExt as _;
    let Some(site) = a.site else {
        return Err(fail(ExitKind::Usage, "--site is required with -f"));
    };
    if a.limit == Some(0) {
        return Ok(());
    }
    let mut printed = 0usize;
    let mut resume: Option<u64> = None;
    let mut first = true;
    loop {
        let plantd = s.client()?;
        let mut tail = plantd.live().tail(
            site,
            TailOptions {
                filter: a.filter.map(str::to_owned),
                source: a.source.map(str::to_owned),
                level: a.level.map(str::to_owned),
                from_sequence: resume,
            },
        );
        let from = confirmed(&mut tail, s, site, "the log tail").await?;
        resume.get_or_insert(from);
        if first {
            eprintln!("tailing the logs of {site}");
            first = false;
        } else {
            eprintln!(
                "plantd: the access token expired; tailing again with a fresh one, from where it stopped (nothing missed)"
            );
        }
        let ended = loop {
            match tail.next().await {
                Some(Ok(line)) => {
                    resume = Some(line.sequence + 1);
                    print_record(&line, a.json);
                    printed += 1;
                    if a.limit.is_some_and(|n| printed >= n) {
                        plantd.live().close();
                        return Ok(());
                    }
                }
                Some(Err(e)) => break e,
                None => {
                    return Err(fail(
                        ExitKind::Unavailable,
                        "the live connection ended; run `plantd logs -f` again",
                    ));
                }
            }
        };
        drop(tail);
        plantd.live().close();
        match ended {
            plantd_client::Error::Refused(_) if s.token_expired() => s.refresh().await?,
            e => return Err(live_error(e, site, "the log tail")),
        }
    }
}

/// One record as a text line (or its JSON).
pub fn format_record(r: &LogLine, as_json: bool) -> String {
    if as_json {
        return serde_json::to_string(r).unwrap_or_default();
    }
    let mut line = format!(
        "{} {:<5} {} {} {}",
        r.time,
        r.level.to_uppercase(),
        r.site,
        r.source,
        r.message
    );
    if let Some(fields) = r.fields.as_object() {
        for (k, v) in fields {
            match v {
                Value::String(t) if !t.contains(char::is_whitespace) && !t.is_empty() => {
                    line.push_str(&format!(" {k}={t}"));
                }
                other => line.push_str(&format!(" {k}={other}")),
            }
        }
    }
    if let Some(why) = &r.parse_error {
        line.push_str(&format!(" [unparsed: {why}]"));
    }
    line
}

fn print_record(r: &LogLine, as_json: bool) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    // A closed pipe (`plantd logs | head`) is not worth a panic.
    let _ = writeln!(out, "{}", format_record(r, as_json));
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_print_as_one_line_with_their_fields() {
        let line = |v: Value| serde_json::from_value::<LogLine>(v).expect("a record");
        let r = line(json!({
            "time": "2026-12-06T10:00:00Z", "level": "warn", "site": "plant1",
            "source": "line1/plc", "message": "valve stuck", "format": "logfmt",
            "sequence": 1, "stream": "PLANTD_LOGS",
            "fields": {"valve": "3", "note": "two words", "temp": 81.5},
        }));
        assert_eq!(
            format_record(&r, false),
            r#"2026-12-06T10:00:00Z WARN  plant1 line1/plc valve stuck note="two words" temp=81.5 valve=3"#
        );
        let bad = line(
            json!({"time": "t", "level": "info", "site": "s", "source": "x",
            "message": "{oops", "fields": {}, "parse_error": "invalid JSON", "format": "json",
            "sequence": 2, "stream": "PLANTD_LOGS"}),
        );
        assert!(format_record(&bad, false).ends_with("{oops [unparsed: invalid JSON]"));
        let again: LogLine = serde_json::from_str(&format_record(&bad, true)).expect("JSON");
        assert_eq!(again, bad);
    }
}
