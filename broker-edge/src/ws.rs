//! MQTT over WebSocket (`--ws-listen`) and secure WebSocket
//! (`--wss-listen`): the HTTP upgrade with its path and subprotocol rules,
//! and the bridge that turns WebSocket messages into the byte stream an
//! unchanged link serves.
//!
//! The contract (`docs/decisions/0016-edge-websocket.md`):
//! * the upgrade must ask for [`PATH`]; any other path gets HTTP 404;
//! * `Sec-WebSocket-Protocol`: the first offered name that is one of
//!   [`SUBPROTOCOLS`] is echoed; a client offering none is accepted (as
//!   Mosquitto does); a client offering only unknown names gets HTTP 400;
//! * MQTT is carried in binary messages and is a byte stream across them:
//!   a packet may span messages and a message may carry several packets;
//! * a text message closes the connection with 1003 (unsupported data);
//!   pings are answered with pongs (by tungstenite, on the next read);
//! * the upgrade (and, for WSS, the TLS handshake before it) must finish
//!   within `limits.connect_timeout_ms`.
//!
//! As with TLS (`crate::tls`), the link serves one end of a local socket
//! pair and [`bridge`] copies between the other end and the WebSocket, so
//! the link's readiness model stays untouched.

use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt as _, StreamExt as _};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::debug;

/// The only path MQTT is served on.
pub const PATH: &str = "/mqtt";

/// Subprotocols accepted, in no particular order: `mqtt` (MQTT 3.1.1 and
/// 5.0) and `mqttv3.1` (what MQTT 3.1 clients, and some newer ones, send).
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// How long the bridge waits for the client's close frame after the link
/// ended, before it cuts the connection.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Bytes read from the link's side per WebSocket message at most.
const CHUNK: usize = 16 * 1024;

/// Why a WebSocket upgrade failed.
#[derive(Debug, Error)]
pub enum WsError {
    /// The client did not complete the upgrade in time.
    #[error("no WebSocket upgrade within the connect timeout")]
    Timeout,
    /// The request was not a valid upgrade, or was refused (wrong path:
    /// 404; unsupported subprotocols: 400; the answer has been sent).
    #[error("WebSocket upgrade failed: {0}")]
    Handshake(#[source] tungstenite::Error),
}

/// WebSocket settings for a broker whose largest MQTT packet is
/// `max_packet_size`: one message may carry a whole packet plus the start
/// of the next, never more than twice the packet limit; buffers start
/// small so that an idle connection stays cheap.
pub fn config(max_packet_size: u32) -> WebSocketConfig {
    let limit = usize::try_from(max_packet_size)
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
        .max(64 * 1024);
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
}

/// An HTTP error answer for a refused upgrade.
fn refuse(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(format!("{why}\n")));
    *r.status_mut() = status;
    r
}

/// Checks the upgrade request's path and subprotocols and chooses the
/// subprotocol to echo (see the module documentation for the rules).
///
/// # Errors
/// The HTTP answer for a wrong path (404) or unsupported subprotocols
/// (400).
#[expect(
    clippy::result_large_err,
    reason = "the signature of tungstenite's handshake callback"
)]
pub fn negotiate(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() != PATH {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "MQTT over WebSocket is served on /mqtt",
        ));
    }
    let mut offered = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .peekable();
    if offered.peek().is_none() {
        return Ok(resp);
    }
    let Some(chosen) = offered.find_map(|p| SUBPROTOCOLS.iter().find(|s| **s == p)) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "unsupported WebSocket subprotocol (use mqtt)",
        ));
    };
    resp.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(chosen),
    );
    Ok(resp)
}

/// Runs the WebSocket upgrade on `stream` within `timeout`.
///
/// # Errors
/// [`WsError`] when the upgrade fails, is refused or times out.
pub async fn handshake<S>(
    stream: S,
    timeout: Duration,
    max_packet_size: u32,
) -> Result<WebSocketStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        negotiate,
        Some(config(max_packet_size)),
    );
    tokio::time::timeout(timeout, upgrade)
        .await
        .map_err(|_| WsError::Timeout)?
        .map_err(WsError::Handshake)
}

/// How the client side of the bridge ended.
enum ClientEnd {
    /// Close frame, end of stream or a transport error.
    Gone,
    /// A text message: not MQTT.
    Text,
    /// The link's socket refused a write: the link has ended.
    LinkGone,
}

/// Copies between the WebSocket and the link's socket until either side
/// ends. Binary messages are written to the link as they come (so the link
/// sees one byte stream); what the link writes goes out as binary
/// messages. When the link ends, the client gets a normal close frame and
/// one second to answer it; when the client ends or sends text (closed
/// with 1003), the link's socket is shut so the link sees end-of-file.
pub async fn bridge<S>(ws: WebSocketStream<S>, local: UnixStream)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let (rd, mut wr) = local.into_split();
    let ended = {
        let inbound = async {
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(Message::Binary(bytes)) => {
                        if wr.write_all(&bytes).await.is_err() {
                            return ClientEnd::LinkGone;
                        }
                    }
                    Ok(Message::Text(_)) => return ClientEnd::Text,
                    Ok(Message::Close(_)) => return ClientEnd::Gone,
                    // Pongs are sent by tungstenite on the next read.
                    Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                    Err(e) => {
                        debug!(error = %e, "WebSocket read failed");
                        return ClientEnd::Gone;
                    }
                }
            }
            ClientEnd::Gone
        };
        let outbound = async {
            loop {
                // Wait before allocating: an idle connection holds no
                // buffer here.
                if rd.readable().await.is_err() {
                    return;
                }
                let mut buf = BytesMut::with_capacity(CHUNK);
                match rd.try_read_buf(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {
                        if let Err(e) = sink.send(Message::Binary(buf.freeze())).await {
                            debug!(error = %e, "WebSocket write failed");
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        tokio::select! {
            end = inbound => Some(end),
            () = outbound => None,
        }
    };
    match ended {
        Some(end) => {
            // The link sees end-of-file now, whatever the client does next.
            let _ = wr.shutdown().await;
            drop((rd, wr));
            let close = match end {
                ClientEnd::Text => Some(CloseFrame {
                    code: CloseCode::Unsupported,
                    reason: "MQTT needs binary messages".into(),
                }),
                ClientEnd::LinkGone => Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                }),
                ClientEnd::Gone => None,
            };
            let finish = async {
                if let Some(frame) = close {
                    let _ = sink.send(Message::Close(Some(frame))).await;
                }
                // Flushes the reply to a client's close frame, if any.
                let _ = sink.close().await;
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, finish).await;
        }
        None => {
            drop((rd, wr));
            let finish = async {
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    })))
                    .await;
                while let Some(Ok(_)) = stream.next().await {}
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, finish).await;
        }
    }
}
