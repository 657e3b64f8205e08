//! First-frame authentication of a live socket: `{"op":"auth","token":…}`.
//!
//! A browser cannot set headers on a WebSocket handshake, so it used to put
//! its token in the URL (`?access_token=`), where proxies, CDNs and access
//! logs record it. A socket opened **without** any token instead sends the
//! token as its first frame and gets `{"op":"authenticated","sub","org",
//! "expires"}` back; from then on it is the same socket as one
//! authenticated on the handshake (docs/decisions/0045-cloud-app-live.md).
//!
//! Both sockets speak it: the local `/v1/ws` ([`first_frame`], called by
//! [`crate::routes::live::socket`] when the handshake offered no token)
//! and the AWS WebSocket API's `auth` route
//! ([`crate::aws::websocket::Handler`]), with the same frames and the same
//! token verification ([`crate::ApiTrust::verify`]: keys, audience,
//! expiry, `plantd_revoked`).
//!
//! Locally a socket that sends anything else first, a token that does not
//! verify, or nothing within [`AUTH_TIMEOUT`], gets an `error` frame
//! (`unauthorized`, or `bad_request` for a malformed frame) and is closed
//! with 1008.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as Frame, WebSocket};
use axum::http::{HeaderMap, Uri, header};
use plantd_shared::claims::Claims;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::{AppError, AppState};

/// The op of the first frame.
pub const AUTH_OP: &str = "auth";

/// The op of its answer.
pub const AUTHENTICATED_OP: &str = "authenticated";

/// How long a local socket opened without a token may take to send it.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Close code for a socket that failed to authenticate (RFC 6455 1008,
/// policy violation — the code the socket closes with for a revoked or
/// expired token).
const CLOSE_POLICY: u16 = 1008;

/// `{"op":"auth","token":…}`. `Debug` never shows the token.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Auth {
    /// Always `auth`.
    op: String,
    /// The bearer token.
    token: String,
}

/// The token of an `auth` frame.
///
/// # Errors
/// `bad_request` when `text` is not `{"op":"auth","token":"…"}` (another
/// op, another field, an empty token).
pub fn parse(text: &str) -> Result<String, AppError> {
    let wanted = || {
        AppError::bad_request(
            "authenticate first: send {\"op\":\"auth\",\"token\":\"<bearer token>\"}",
        )
    };
    let auth: Auth = serde_json::from_str(text).map_err(|_| wanted())?;
    if auth.op != AUTH_OP || auth.token.trim().is_empty() {
        return Err(wanted());
    }
    Ok(auth.token.trim().to_owned())
}

/// The answer to a verified `auth` frame: who the socket acts for and
/// when its token expires (seconds since the epoch) — the socket ends
/// then; reconnect with a fresh token.
pub fn authenticated(claims: &Claims) -> Value {
    json!({ "op": AUTHENTICATED_OP, "sub": claims.sub, "org": claims.org, "expires": claims.exp })
}

/// Whether the handshake offered a token (`Authorization` header or the
/// `access_token` query parameter): then it is verified on the handshake
/// (401 before the upgrade) and no `auth` frame is expected.
pub fn offered(headers: &HeaderMap, uri: &Uri) -> bool {
    headers.contains_key(header::AUTHORIZATION)
        || uri.query().is_some_and(|q| {
            q.split('&')
                .any(|pair| pair.split('=').next() == Some("access_token"))
        })
}

/// `{"op":"error","id":null,"error","message"}`.
fn error(e: &AppError) -> Value {
    json!({ "op": "error", "id": Value::Null, "error": e.code, "message": e.message })
}

/// Reads the first frame of a socket opened without a token and verifies
/// its token: the socket (with `authenticated` sent) and its caller, or
/// `None` when the socket was refused (an `error` frame and close 1008) or
/// went away.
pub async fn first_frame(mut ws: WebSocket, state: &AppState) -> Option<(WebSocket, Caller)> {
    let first = tokio::time::timeout(AUTH_TIMEOUT, async {
        loop {
            match ws.recv().await {
                Some(Ok(Frame::Text(text))) => break Some(parse(text.as_str())),
                Some(Ok(Frame::Binary(_))) => {
                    break Some(Err(AppError::bad_request(
                        "send JSON operations as text frames",
                    )));
                }
                Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => {}
                Some(Ok(Frame::Close(_)) | Err(_)) | None => break None,
            }
        }
    })
    .await;
    let token = match first {
        Err(_) => {
            let e = AppError::unauthorized(format!(
                "no auth frame within {} s",
                AUTH_TIMEOUT.as_secs()
            ));
            refuse(ws, &e, "authentication timeout").await;
            return None;
        }
        Ok(None) => return None,
        Ok(Some(Err(e))) => {
            refuse(ws, &e, "unauthorized").await;
            return None;
        }
        Ok(Some(Ok(token))) => token,
    };
    match state.trust.verify(&token).await {
        Ok(claims) => {
            let answer = authenticated(&claims);
            ws.send(Frame::Text(answer.to_string().into())).await.ok()?;
            tracing::debug!(sub = %claims.sub, "socket authenticated by its first frame");
            Some((ws, Caller::new(claims)))
        }
        Err(e) => {
            tracing::info!(error = %e.message, "socket refused: its auth frame's token");
            refuse(ws, &e, "unauthorized").await;
            None
        }
    }
}

/// Sends the error frame, then closes with 1008 and `reason`.
async fn refuse(mut ws: WebSocket, e: &AppError, reason: &'static str) {
    let _ = ws.send(Frame::Text(error(e).to_string().into())).await;
    let _ = ws
        .send(Frame::Close(Some(CloseFrame {
            code: CLOSE_POLICY,
            reason: reason.into(),
        })))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_auth_frame_with_a_token_passes() {
        assert_eq!(
            parse(r#"{"op":"auth","token":"a.b.c"}"#).expect("auth"),
            "a.b.c"
        );
        for bad in [
            r##"{"op":"subscribe","id":"x","site":"s","filter":"#"}"##,
            r#"{"op":"auth"}"#,
            r#"{"op":"auth","token":" "}"#,
            r#"{"op":"auth","token":"a.b.c","extra":1}"#,
            "not json",
        ] {
            let e = parse(bad).expect_err(bad);
            assert_eq!(e.code, "bad_request", "{bad}");
            assert!(
                e.message.contains("\"op\":\"auth\""),
                "{bad}: {}",
                e.message
            );
        }
    }

    #[test]
    fn a_token_is_offered_by_header_or_access_token_only() {
        let uri = |s: &str| s.parse::<Uri>().expect("uri");
        let mut h = HeaderMap::new();
        assert!(!offered(&h, &uri("/v1/ws")));
        assert!(!offered(&h, &uri("/v1/ws?x=1&access_tokens=2")));
        assert!(offered(&h, &uri("/v1/ws?x=1&access_token=abc")));
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().expect("value"));
        assert!(offered(&h, &uri("/v1/ws")));
    }
}
