//! Every failure the client reports: one [`Error`] enum to match on.

use std::time::Duration;

/// What went wrong. `Api` carries what the server said (`{error,
/// message}` and the HTTP status); the other variants are the client's
/// own view (no answer, a refused token, a live subscription ended).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error status and its JSON error body.
    #[error("{status} {code}: {message}")]
    Api {
        /// The HTTP status (400, 403, 404, 409, …).
        status: u16,
        /// The API's stable code (`bad_request`, `forbidden`,
        /// `not_found`, `conflict`, …; `http_<status>` when the body was
        /// not the API's error JSON).
        code: String,
        /// The server's message, for people.
        message: String,
    },
    /// The token was refused for good: revoked, or expired with no way to
    /// renew it (a fixed token, or a session whose refresh token no longer
    /// works). Live subscriptions end with this instead of reconnecting.
    #[error("refused: {0}")]
    Refused(String),
    /// A live subscription or command was refused by the server
    /// (`{"op":"error"}` on the socket: `forbidden`, `bad_request`, …).
    #[error("live {code}: {message}")]
    Live {
        /// The API's code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// A subscription's reader fell behind by more than its buffer and the
    /// item that did not fit cannot be fetched again (it has no stream
    /// sequence); the subscription was ended rather than grown without
    /// bound. A sequenced item — every message and log line the server
    /// sends today — is paced instead (flow control, decision 0059).
    #[error("slow consumer: more than {0} messages unread")]
    SlowConsumer(usize),
    /// No answer within the time limit.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server could not be reached, or the connection broke.
    #[error("transport: {0}")]
    Transport(String),
    /// The server's answer could not be read as the expected type.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// A bad argument (URL, header value, …) caught before sending.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The live connection was closed by [`crate::Live::close`].
    #[error("the live connection is closed")]
    Closed,
}

impl Error {
    /// The HTTP status the server answered with (401 for [`Error::Refused`]).
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            Error::Refused(_) => Some(401),
            _ => None,
        }
    }

    /// The API's error code (`conflict`, `forbidden`, …), or the client's
    /// own (`refused`, `timeout`, `transport`, `slow_consumer`, `decode`,
    /// `invalid`, `closed`).
    pub fn code(&self) -> &str {
        match self {
            Error::Api { code, .. } | Error::Live { code, .. } => code,
            Error::Refused(_) => "refused",
            Error::SlowConsumer(_) => "slow_consumer",
            Error::Timeout(_) => "timeout",
            Error::Transport(_) => "transport",
            Error::Decode(_) => "decode",
            Error::Invalid(_) => "invalid",
            Error::Closed => "closed",
        }
    }

    /// Whether this is a 409: someone changed it since you read it
    /// (`If-Match`), or it exists already.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    /// Whether this is a 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// An error answer: its `{error, message}` body when it has one, else
    /// the status line.
    pub(crate) fn from_answer(status: u16, body: &[u8]) -> Error {
        #[derive(serde::Deserialize)]
        struct Body {
            error: Option<String>,
            message: Option<String>,
        }
        let parsed: Option<Body> = serde_json::from_slice(body).ok();
        let code = parsed
            .as_ref()
            .and_then(|b| b.error.clone())
            .unwrap_or_else(|| format!("http_{status}"));
        let message = parsed.and_then(|b| b.message).unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("HTTP {status}")
            } else {
                text.chars().take(200).collect()
            }
        });
        Error::Api {
            status,
            code,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_error_carries_its_code_message_and_status() {
        let e = Error::from_answer(
            409,
            br#"{"error":"conflict","message":"revision 3 is not 2"}"#,
        );
        assert_eq!(e.status(), Some(409));
        assert_eq!(e.code(), "conflict");
        assert!(e.is_conflict());
        assert_eq!(e.to_string(), "409 conflict: revision 3 is not 2");
        let e = Error::from_answer(502, b"bad gateway");
        assert_eq!(e.code(), "http_502");
        assert!(e.to_string().contains("bad gateway"));
    }
}
