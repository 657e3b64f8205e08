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
use futures::StreamExt as _;
use plantd_client::proxy::{params, types::LogLine};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::audit::time_arg;
use crate::live::{ClientFrame, ServerFrame, connect, refusal, send};
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

/// `-f`: tails the site's lines until interrupted (or `--limit` lines).
async fn follow(s: &mut Session, a: &LogsArgs<'_>) -> Result<()> {
    let Some(site) = a.site else {
        return Err(fail(ExitKind::Usage, "--site is required with -f"));
    };
    let op = ClientFrame::Tail {
        id: "logs",
        site,
        filter: a.filter,
        source: a.source,
        level: a.level,
    };
    let mut printed = 0usize;
    loop {
        let mut ws = connect(s).await?;
        send(&mut ws, &op).await?;
        loop {
            let frame = match ws.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    return Err(fail(
                        ExitKind::Unavailable,
                        format!("the connection was lost: {e}; run `plantd logs -f` again"),
                    ));
                }
                None => {
                    return Err(fail(
                        ExitKind::Unavailable,
                        "the server ended the connection; run `plantd logs -f` again",
                    ));
                }
            };
            let text = match frame {
                Message::Text(t) => t,
                Message::Close(f)
                    if f.as_ref()
                        .is_some_and(|f| f.reason.as_str() == "token expired") =>
                {
                    break;
                }
                Message::Close(f) => {
                    let why = f.map(|f| f.reason.as_str().to_owned()).unwrap_or_default();
                    return Err(fail(
                        if why == "token revoked" {
                            ExitKind::Unauthorized
                        } else {
                            ExitKind::Unavailable
                        },
                        format!("the server closed the tail ({why}); run `plantd logs -f` again"),
                    ));
                }
                _ => continue,
            };
            match ServerFrame::parse(text.as_str()) {
                Some(ServerFrame::Tailing) => eprintln!("tailing the logs of {site}"),
                Some(ServerFrame::Log { record }) => {
                    print_record(&record, a.json);
                    printed += 1;
                    if a.limit.is_some_and(|n| printed >= n) {
                        let _ = ws.close(None).await;
                        return Ok(());
                    }
                }
                Some(ServerFrame::Error { error, message, .. }) => {
                    return Err(refusal(&error, &message, site, "the log tail"));
                }
                _ => {}
            }
        }
        s.refresh().await?;
        eprintln!(
            "plantd: the access token expired; tailing again with a fresh one (lines logged meanwhile: `plantd logs --since 5m`)"
        );
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
