//! `plantd sub` and `plantd pub`: live messages and commands over the
//! proxy's WebSocket `GET /v1/ws` (protocol in `docs/api.md`, "Live data").
//!
//! * [`sub`] subscribes to one or more MQTT topic filters on a site and
//!   prints every message the site's edge publishes on a matching topic, as
//!   it arrives: one line per message (`<topic> <payload>`, the payload as
//!   text when it is UTF-8, else `base64:<…>`), or one JSON object per line
//!   with `--json`. It says `subscribed …` on standard error once the server
//!   has every subscription, so a script (or a test) can wait for that line
//!   before making a device publish. Nothing is replayed: use
//!   `plantd history` for the past. It keeps its own socket (typed frames:
//!   [`ServerFrame`]) rather than the SDK's `Live`, because `Live` does not
//!   yet tell a subscriber when the server confirmed its subscription —
//!   the moment that line is printed.
//! * [`publish`] sends one command through the SDK's live connection
//!   ([`plantd_client::Live::publish`]: the WebSocket `command` operation,
//!   the same body as `POST /v1/sites/{site}/commands`) and prints where it
//!   was stored (`PLANTD_COMMANDS` and its sequence).
//!
//! Both authenticate with the profile's access token (refreshed by
//! [`Session::open`] when it is about to expire). When the server closes a
//! subscription because the token expired, [`sub`] refreshes it and
//! subscribes again (messages published in between are missed, and it says
//! so on standard error); a revoked token, a refused filter or a lost
//! connection end it with the exit codes of [`ExitKind`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use futures::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use plantd_client::proxy::types::{self, LogLine};

use crate::session::{ExitKind, Session, api_error, error_for_status, fail};

/// A byte stream a WebSocket can run over: plain TCP or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An open `/v1/ws` socket.
pub(crate) type Socket = WebSocketStream<Box<dyn Io>>;

/// Largest frame accepted from the server: a message with the largest
/// payload the API carries (512 KiB, base64-encoded) plus its envelope.
const MAX_FRAME: usize = 1024 * 1024;

/// `ws://…/v1/ws` for `http://…`, `wss://…/v1/ws` for `https://…`.
///
/// # Errors
/// Exit code 2 for a profile URL that is neither.
pub fn socket_url(base: &str) -> Result<String> {
    let base = base.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        Ok(format!("ws://{rest}/v1/ws"))
    } else if let Some(rest) = base.strip_prefix("https://") {
        Ok(format!("wss://{rest}/v1/ws"))
    } else {
        Err(fail(
            ExitKind::Usage,
            format!(
                "the profile's URL {base:?} is not http:// or https://; run `plantd login --url …` again"
            ),
        ))
    }
}

/// Opens `/v1/ws` with the session's token in the `Authorization` header.
///
/// # Errors
/// Exit code 3 when the token is refused (invalid, expired or revoked), 7
/// when the server cannot be reached.
pub(crate) async fn connect(s: &Session) -> Result<Socket> {
    let url = socket_url(s.url())?;
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| fail(ExitKind::Usage, format!("bad URL {url}: {e}")))?;
    let bearer = format!("Bearer {}", s.access_token())
        .parse()
        .map_err(|_| {
            fail(
                ExitKind::Unauthorized,
                "the stored token is damaged; run `plantd login`",
            )
        })?;
    req.headers_mut().insert("authorization", bearer);
    let tls = req.uri().scheme_str() == Some("wss");
    let host = req
        .uri()
        .host()
        .unwrap_or("")
        .trim_matches(['[', ']'])
        .to_owned();
    let port = req.uri().port_u16().unwrap_or(if tls { 443 } else { 80 });
    let unreachable = |e: &dyn std::fmt::Display| {
        fail(
            ExitKind::Unavailable,
            format!("cannot reach {}: {e}; is `plantd up` running?", s.url()),
        )
    };
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| unreachable(&e))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if tls {
        Box::new(tls_connect(&host, tcp).await.map_err(|e| unreachable(&e))?)
    } else {
        Box::new(tcp)
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    match client_async_with_config(req, stream, Some(config)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            /// The API's error body (its `error` code is in the status).
            #[derive(Deserialize)]
            struct ErrorBody {
                message: String,
            }
            let message = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<ErrorBody>(b).ok())
                .map_or_else(|| "no details".to_owned(), |b| b.message);
            Err(error_for_status(status, message))
        }
        Err(e) => Err(unreachable(&e)),
    }
}

/// TLS to `host` over `tcp`, checking the certificate like `reqwest` does
/// (the platform's verifier).
async fn tls_connect(
    host: &str,
    tcp: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls_platform_verifier::ConfigVerifierExt as _;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ClientConfig::with_platform_verifier().context("TLS set-up")?;
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host} is not a valid TLS server name"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .context("TLS handshake")
}

pub(crate) async fn send(ws: &mut Socket, frame: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string(frame)
        .map_err(|e| fail(ExitKind::Failure, format!("cannot write a frame: {e}")))?;
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|e| fail(ExitKind::Unavailable, format!("the connection failed: {e}")))
}

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

/// What the server sends on `/v1/ws` (docs/api.md, "Live data"), as far
/// as `plantd sub` and `plantd logs -f` read it.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum ServerFrame {
    /// A subscription is in place.
    Subscribed {
        /// The subscription's id (`plantd sub` uses the filter).
        id: String,
    },
    /// A live message.
    Message(LiveMessage),
    /// A log tail runs.
    Tailing,
    /// One line of a log tail.
    Log {
        /// The record, as `GET /v1/logs` shows it.
        record: LogLine,
    },
    /// A subscription, tail or frame was refused.
    Error {
        /// The refused frame's id, if it had one.
        #[serde(default)]
        id: Option<String>,
        /// The API's code (`forbidden`, `bad_request`, …).
        #[serde(default)]
        error: String,
        /// For people.
        #[serde(default)]
        message: String,
    },
    /// Anything else (`unsubscribed`, `sent`, later additions).
    #[serde(other)]
    Other,
}

impl ServerFrame {
    /// A text frame, or `None` when it is not one the server sends.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// A live message as the server sends it and as `plantd sub --json`
/// prints it (`id` becomes `filter`).
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct LiveMessage {
    /// The site.
    site: String,
    /// The subscription it matched (`plantd sub`: the filter).
    #[serde(rename(deserialize = "id", serialize = "filter"))]
    filter: String,
    /// The MQTT topic.
    topic: String,
    /// The edge's headers.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// The payload as text…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    /// …or as base64 when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
}

/// What `plantd sub` and `plantd logs -f` send on `/v1/ws`.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum ClientFrame<'a> {
    /// Live messages on topics matching `filter`.
    Subscribe {
        /// Echoed in every answer.
        id: &'a str,
        /// The site.
        site: &'a str,
        /// An MQTT topic filter.
        filter: &'a str,
    },
    /// A site's log lines as they arrive.
    Tail {
        /// Echoed in every answer.
        id: &'a str,
        /// The site.
        site: &'a str,
        /// A filter in the log query language.
        #[serde(skip_serializing_if = "Option::is_none")]
        filter: Option<&'a str>,
        /// Only this source (or glob).
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<&'a str>,
        /// Only this level and above.
        #[serde(skip_serializing_if = "Option::is_none")]
        level: Option<&'a str>,
    },
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

/// How a socket ended.
enum Ended {
    /// `--count` messages were printed.
    Done,
    /// The server closed it because the token expired: refresh and resume.
    Expired,
}

/// `plantd sub --site SITE FILTER...`: prints live messages until
/// `--count` of them arrived (exit 0), or forever.
///
/// # Errors
/// Exit code 4 when a filter is not covered by the token's MQTT subscribe
/// grants for the site, 2 for a malformed filter, 3 when the token is
/// refused or revoked, 7 when the connection is lost.
pub async fn sub(s: &mut Session, a: SubArgs<'_>) -> Result<()> {
    let filters: BTreeSet<&str> = a.filters.iter().map(String::as_str).collect();
    if filters.is_empty() {
        return Err(fail(ExitKind::Usage, "give at least one topic filter"));
    }
    let mut printed = 0u64;
    loop {
        if a.count.is_some_and(|n| printed >= n) {
            return Ok(());
        }
        let mut ws = connect(s).await?;
        match run_sub(&mut ws, &a, &filters, &mut printed).await? {
            Ended::Done => {
                let _ = ws.close(None).await;
                return Ok(());
            }
            Ended::Expired => {
                s.refresh().await?;
                eprintln!(
                    "plantd: the access token expired; subscribed again with a fresh one (messages published meanwhile were missed — see `plantd history`)"
                );
            }
        }
    }
}

/// Subscribes to every filter on `ws` and prints messages.
async fn run_sub(
    ws: &mut Socket,
    a: &SubArgs<'_>,
    filters: &BTreeSet<&str>,
    printed: &mut u64,
) -> Result<Ended> {
    for f in filters {
        send(
            ws,
            &ClientFrame::Subscribe {
                id: f,
                site: a.site,
                filter: f,
            },
        )
        .await?;
    }
    let mut pending: BTreeSet<&str> = filters.clone();
    loop {
        let frame = match ws.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                return Err(fail(
                    ExitKind::Unavailable,
                    format!("the connection was lost: {e}; run `plantd sub` again"),
                ));
            }
            None => {
                return Err(fail(
                    ExitKind::Unavailable,
                    "the server ended the connection; run `plantd sub` again",
                ));
            }
        };
        let text = match frame {
            Message::Text(t) => t,
            Message::Close(frame) => return closed(frame),
            _ => continue,
        };
        match ServerFrame::parse(text.as_str()) {
            Some(ServerFrame::Subscribed { id }) => {
                pending.remove(id.as_str());
                if pending.is_empty() {
                    let list: Vec<&str> = filters.iter().copied().collect();
                    eprintln!("subscribed to {} on {}", list.join(" "), a.site);
                }
            }
            Some(ServerFrame::Message(m)) => {
                print_message(&m, a.json);
                *printed += 1;
                if a.count.is_some_and(|n| *printed >= n) {
                    return Ok(Ended::Done);
                }
            }
            Some(ServerFrame::Error { id, error, message }) => {
                let what = match id {
                    Some(f) => format!("the filter {f:?}"),
                    None => "the subscription".to_owned(),
                };
                return Err(refusal(&error, &message, a.site, &what));
            }
            _ => {}
        }
    }
}

/// What the server's close frame means for `plantd sub`.
fn closed(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> Result<Ended> {
    let (code, reason) = frame
        .map(|f| (u16::from(f.code), f.reason.as_str().to_owned()))
        .unwrap_or((1005, String::new()));
    match reason.as_str() {
        "token expired" => Ok(Ended::Expired),
        "token revoked" => Err(fail(
            ExitKind::Unauthorized,
            "the server closed the subscription: the token was revoked; run `plantd login`",
        )),
        _ => Err(fail(
            ExitKind::Unavailable,
            format!("the server closed the subscription ({code} {reason}); run `plantd sub` again"),
        )),
    }
}

/// One live message: `<topic> <payload>` or a JSON line.
fn print_message(m: &LiveMessage, json: bool) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let line = if json {
        serde_json::to_string(m).unwrap_or_default()
    } else {
        let payload = match (&m.payload, &m.payload_base64) {
            (Some(text), _) => text.clone(),
            (None, Some(b64)) => format!("base64:{b64}"),
            (None, None) => String::new(),
        };
        format!("{} {payload}", m.topic)
    };
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
    fn socket_urls_follow_the_profile_scheme() {
        assert_eq!(
            socket_url("http://127.0.0.1:8080/").expect("http"),
            "ws://127.0.0.1:8080/v1/ws"
        );
        assert_eq!(
            socket_url("https://api.example.com").expect("https"),
            "wss://api.example.com/v1/ws"
        );
        assert!(socket_url("ftp://x").is_err());
    }

    #[test]
    fn server_frames_are_typed_and_messages_print_with_their_filter() {
        let frame = ServerFrame::parse(
            r#"{"op":"message","id":"line1/#","site":"plant1","topic":"line1/temp","payload":"21.5","headers":{"Plantd-Qos":"1"},"sequence":7}"#,
        );
        let Some(ServerFrame::Message(m)) = frame else {
            panic!("a message: {frame:?}");
        };
        let printed: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&m).expect("json")).expect("json");
        assert_eq!(
            printed,
            json!({"site": "plant1", "filter": "line1/#", "topic": "line1/temp",
                "headers": {"Plantd-Qos": "1"}, "payload": "21.5"})
        );
        assert!(matches!(
            ServerFrame::parse(r#"{"op":"error","id":"x","error":"forbidden","message":"m"}"#),
            Some(ServerFrame::Error { error, .. }) if error == "forbidden"
        ));
        assert!(matches!(
            ServerFrame::parse(r#"{"op":"unsubscribed","id":"x"}"#),
            Some(ServerFrame::Other)
        ));
    }

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
    fn close_reasons_decide_what_sub_does() {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        let frame = |reason: &'static str| {
            Some(CloseFrame {
                code: CloseCode::Policy,
                reason: reason.into(),
            })
        };
        assert!(matches!(closed(frame("token expired")), Ok(Ended::Expired)));
        let revoked = closed(frame("token revoked")).err().expect("an error");
        assert_eq!(
            revoked
                .downcast_ref::<crate::session::CliError>()
                .map(|e| e.kind),
            Some(ExitKind::Unauthorized)
        );
        assert!(closed(None).is_err());
    }
}
