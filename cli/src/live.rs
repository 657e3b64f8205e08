//! `plantd sub` and `plantd pub`: live messages and commands on the SDK's
//! live connection ([`plantd_client::Live`]: the proxy's WebSocket
//! `GET /v1/ws`, protocol in `docs/api.md`, "Live data").
//!
//! * [`sub`] subscribes to one or more MQTT topic filters on a site and
//!   prints every message the site's edge publishes on a matching topic, as
//!   it arrives: one line per message (`<topic> <payload>`, the payload as
//!   text when it is UTF-8, else `base64:<…>`), or one JSON object per line
//!   with `--json`. It says `subscribed …` on standard error once the server
//!   has confirmed every subscription, so a script (or a test) can wait for
//!   that line before making a device publish. Nothing older is replayed:
//!   use `plantd history` for the past. Each filter is a sequenced
//!   subscription, so a lost connection or a restarted server is resumed
//!   at the last message + 1 — nothing missed, nothing repeated — and an
//!   expired token is refreshed and every filter resumed the same way.
//! * [`publish`] sends one command ([`plantd_client::Live::publish`]: the
//!   WebSocket `command` operation, the same body as
//!   `POST /v1/sites/{site}/commands`) and prints where it was stored
//!   (`PLANTD_COMMANDS` and its sequence).
//!
//! Both authenticate with the profile's access token (refreshed by
//! [`Session::open`] when it is about to expire). A revoked token, a
//! refused filter or a server that cannot be reached end them with the
//! exit codes of [`ExitKind`].

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use plantd_client::proxy::types;
use serde::Serialize;
use serde_json::json;

use crate::session::{ExitKind, Session, api_error, fail};

/// An `{"op":"error"}` answer (its `error` code and `message`) as an exit
/// code and what to do.
pub(crate) fn refusal(code: &str, message: &str, site: &str, what: &str) -> anyhow::Error {
    let msg = if message.is_empty() {
        "no details"
    } else {
        message
    };
    match code {
        "forbidden" => fail(
            ExitKind::Forbidden,
            format!(
                "refused {what} on site {site}: {msg}; ask an administrator for a role that grants it, then run `plantd login` again"
            ),
        ),
        "bad_request" => fail(ExitKind::Usage, format!("refused {what}: {msg}")),
        "unauthorized" => fail(
            ExitKind::Unauthorized,
            format!("not authorised ({msg}); run `plantd login`"),
        ),
        "unavailable" | "timeout" | "no_responder" => {
            fail(ExitKind::Unavailable, format!("unavailable: {msg}"))
        }
        code => fail(ExitKind::Failure, format!("refused {what}: {code}: {msg}")),
    }
}

/// `plantd sub`: what to subscribe to and when to stop.
#[derive(Debug, Clone)]
pub struct SubArgs<'a> {
    /// The site.
    pub site: &'a str,
    /// MQTT topic filters (duplicates are ignored).
    pub filters: &'a [String],
    /// Exit (0) after this many messages; `None` runs until interrupted.
    pub count: Option<u64>,
    /// One JSON object per line instead of `<topic> <payload>`.
    pub json: bool,
}

/// How long `plantd sub` and `plantd logs -f` wait for the server to
/// confirm their subscriptions before saying it cannot be reached.
pub(crate) const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// A live subscription's end as an exit code and what to do; `what` names
/// it (`the filter "line1/#"`).
pub(crate) fn live_error(e: plantd_client::Error, site: &str, what: &str) -> anyhow::Error {
    match e {
        plantd_client::Error::Live { code, message } => refusal(&code, &message, site, what),
        plantd_client::Error::Refused(why) => fail(
            ExitKind::Unauthorized,
            format!("the server refused the token ({why}); run `plantd login`"),
        ),
        plantd_client::Error::SlowConsumer(n) => fail(
            ExitKind::Failure,
            format!("{what} fell more than {n} messages behind and was ended"),
        ),
        other => api_error(other),
    }
}

/// Waits until the server confirmed `sub` (the sequence it starts at),
/// or says why it did not.
pub(crate) async fn confirmed<T>(
    sub: &mut plantd_client::Subscription<T>,
    s: &Session,
    site: &str,
    what: &str,
) -> Result<u64> {
    use futures::StreamExt as _;
    match tokio::time::timeout(CONFIRM_TIMEOUT, sub.confirmed()).await {
        Ok(Some(c)) => Ok(c.from_sequence),
        Ok(None) => match sub.next().await {
            Some(Err(e)) => Err(live_error(e, site, what)),
            _ => Err(fail(
                ExitKind::Unavailable,
                format!("the server ended {what} before confirming it"),
            )),
        },
        Err(_) => Err(fail(
            ExitKind::Unavailable,
            format!(
                "{what} was not confirmed within {CONFIRM_TIMEOUT:?}: cannot reach {}; is `plantd up` running?",
                s.url()
            ),
        )),
    }
}

/// `plantd sub --site SITE FILTER...`: prints live messages until
/// `--count` of them arrived (exit 0), or forever.
///
/// Runs on the SDK's [`plantd_client::Live`]: each filter is a sequenced
/// subscription, so a lost connection (or a restarted server) is resumed
/// at the last message + 1 without missing or repeating one; when the
/// access token expires the session is refreshed and every filter resumed
/// the same way.
///
/// # Errors
/// Exit code 4 when a filter is not covered by the token's MQTT subscribe
/// grants for the site, 2 for a malformed filter, 3 when the token is
/// refused or revoked, 7 when the server cannot be reached.
pub async fn sub(s: &mut Session, a: SubArgs<'_>) -> Result<()> {
    use futures::StreamExt as _;
    let filters: BTreeSet<&str> = a.filters.iter().map(String::as_str).collect();
    if filters.is_empty() {
        return Err(fail(ExitKind::Usage, "give at least one topic filter"));
    }
    if a.count == Some(0) {
        return Ok(());
    }
    let mut printed = 0u64;
    // The next sequence each filter resumes at after a token refresh.
    let mut resume: BTreeMap<&str, u64> = BTreeMap::new();
    let mut first = true;
    loop {
        let plantd = s.client()?;
        let mut subs = Vec::new();
        for f in &filters {
            let options = plantd_client::SubscribeOptions {
                from_sequence: resume.get(f).copied(),
            };
            subs.push((*f, plantd.live().subscribe_with(a.site, f, options)));
        }
        for (f, sub) in &mut subs {
            let from = confirmed(sub, s, a.site, &format!("the filter {f:?}")).await?;
            resume.entry(*f).or_insert(from);
        }
        if first {
            let list: Vec<&str> = filters.iter().copied().collect();
            eprintln!("subscribed to {} on {}", list.join(" "), a.site);
            first = false;
        } else {
            eprintln!(
                "plantd: the access token expired; subscribed again with a fresh one, from where it stopped (nothing missed)"
            );
        }
        let mut all = futures::stream::select_all(
            subs.into_iter()
                .map(|(f, sub)| sub.map(move |item| (f, item)).boxed()),
        );
        let ended = loop {
            match all.next().await {
                Some((f, Ok(m))) => {
                    resume.insert(f, m.sequence + 1);
                    print_message(a.site, f, &m, a.json);
                    printed += 1;
                    if a.count.is_some_and(|n| printed >= n) {
                        plantd.live().close();
                        return Ok(());
                    }
                }
                Some((f, Err(e))) => break (f, e),
                None => {
                    return Err(fail(
                        ExitKind::Unavailable,
                        "the live connection ended; run `plantd sub` again",
                    ));
                }
            }
        };
        drop(all);
        plantd.live().close();
        match ended {
            (_, plantd_client::Error::Refused(_)) if s.token_expired() => s.refresh().await?,
            (f, e) => return Err(live_error(e, a.site, &format!("the filter {f:?}"))),
        }
    }
}

/// One live message as `plantd sub --json` prints it.
#[derive(Debug, Serialize)]
struct Printed<'a> {
    site: &'a str,
    filter: &'a str,
    topic: &'a str,
    headers: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
}

/// One live message: `<topic> <payload>` (the payload as text when it is
/// UTF-8, else `base64:<…>`) or a JSON line.
fn print_message(site: &str, filter: &str, m: &plantd_client::Message, json: bool) {
    use std::io::Write as _;
    let text = m.text();
    let b64 = || base64_encode(&m.payload);
    let line = if json {
        serde_json::to_string(&Printed {
            site,
            filter,
            topic: &m.topic,
            headers: &m.headers,
            payload: text,
            payload_base64: text.is_none().then(b64),
        })
        .unwrap_or_default()
    } else {
        match text {
            Some(t) => format!("{} {t}", m.topic),
            None => format!("{} base64:{}", m.topic, b64()),
        }
    };
    let mut out = std::io::stdout().lock();
    // A closed pipe (`plantd sub | head`) is not worth a panic.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The payload of `plantd pub`.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Text from the command line.
    Text(String),
    /// Bytes from `--file` (sent as text when they are UTF-8).
    Bytes(Vec<u8>),
}

/// `plantd pub`: one command.
#[derive(Debug, Clone)]
pub struct PubArgs<'a> {
    /// The site.
    pub site: &'a str,
    /// The MQTT topic to deliver on.
    pub topic: &'a str,
    /// The payload.
    pub payload: Payload,
    /// Delivery QoS (0, 1 or 2).
    pub qos: u8,
    /// Deliver as retained.
    pub retain: bool,
    /// Drop it if not delivered within this many seconds.
    pub ttl: Option<u64>,
    /// MQTT 5 content type to deliver with.
    pub content_type: Option<&'a str>,
}

/// How long `plantd pub` waits for the server to store the command
/// (reconnecting meanwhile if the socket drops).
const PUB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// `plantd pub --site SITE TOPIC PAYLOAD`: sends a command to the
/// devices subscribed to `TOPIC` on the site over the SDK's live
/// connection ([`plantd_client::Live::publish`]) and prints its sequence
/// in `PLANTD_COMMANDS` (the edge delivers it when the site is reachable).
///
/// # Errors
/// Exit code 4 without `commands:<site>:send`, 2 for a bad topic or QoS, 3
/// when the token is refused, 7 when the server does not confirm it in
/// time.
pub async fn publish(s: &Session, a: PubArgs<'_>, json: bool) -> Result<()> {
    let (payload, payload_base64) = match a.payload {
        Payload::Text(t) => (Some(t), None),
        Payload::Bytes(b) => match String::from_utf8(b) {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(base64_encode(e.as_bytes()))),
        },
    };
    let command = types::Command {
        topic: a.topic.to_owned(),
        payload,
        payload_base64,
        qos: Some(u32::from(a.qos)),
        retain: Some(a.retain),
        ttl_secs: a.ttl,
        content_type: a.content_type.map(str::to_owned),
    };
    let options = plantd_client::Options {
        live: plantd_client::LiveOptions {
            command_timeout: PUB_TIMEOUT,
            ..plantd_client::LiveOptions::default()
        },
        ..plantd_client::Options::default()
    };
    let plantd = plantd_client::Plantd::new(
        s.url(),
        plantd_client::TokenSource::fixed(s.access_token()),
        options,
    )
    .map_err(api_error)?;
    let sent = plantd.live().publish(a.site, &command).await;
    plantd.live().close();
    let sent = sent.map_err(|e| match e {
        plantd_client::Error::Live { code, message } => refusal(
            &code,
            &message,
            a.site,
            &format!("the command on {:?}", a.topic),
        ),
        plantd_client::Error::Transport(why) => fail(
            ExitKind::Unavailable,
            format!("the connection was lost: {why}; the command may not have been sent"),
        ),
        plantd_client::Error::Timeout(limit) => fail(
            ExitKind::Unavailable,
            format!(
                "no confirmation from {} within {limit:?}; is `plantd up` running? (the command may not have been sent)",
                s.url()
            ),
        ),
        other => api_error(other),
    })?;
    if json {
        println!(
            "{}",
            json!({"site": a.site, "topic": a.topic, "stream": sent.stream, "sequence": sent.sequence})
        );
    } else {
        println!(
            "sent to {} {}: {} #{}",
            a.site, a.topic, sent.stream, sent.sequence
        );
    }
    Ok(())
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_exit_codes() {
        let kind = |code: &str| {
            refusal(code, "m", "s", "x")
                .downcast_ref::<crate::session::CliError>()
                .map(|e| e.kind)
        };
        assert_eq!(kind("forbidden"), Some(ExitKind::Forbidden));
        assert_eq!(kind("bad_request"), Some(ExitKind::Usage));
        assert_eq!(kind("unauthorized"), Some(ExitKind::Unauthorized));
        assert_eq!(kind("unavailable"), Some(ExitKind::Unavailable));
    }

    #[test]
    fn live_errors_map_to_exit_codes() {
        let kind = |e: plantd_client::Error| {
            live_error(e, "s", "x")
                .downcast_ref::<crate::session::CliError>()
                .map(|e| e.kind)
        };
        assert_eq!(
            kind(plantd_client::Error::Live {
                code: "forbidden".into(),
                message: "m".into()
            }),
            Some(ExitKind::Forbidden)
        );
        assert_eq!(
            kind(plantd_client::Error::Refused("revoked".into())),
            Some(ExitKind::Unauthorized)
        );
        assert_eq!(
            kind(plantd_client::Error::SlowConsumer(10)),
            Some(ExitKind::Failure)
        );
    }
}
