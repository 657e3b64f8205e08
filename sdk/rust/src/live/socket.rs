//! Opening `/v1/ws`: plain TCP for `http://` bases, TLS (the platform's
//! certificate verifier, as `reqwest` uses) for `https://`, the token in
//! the `Authorization` header.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

/// A byte stream a WebSocket runs over: plain TCP or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An open `/v1/ws` socket.
pub(crate) type Socket = WebSocketStream<Box<dyn Io>>;

/// Largest frame accepted: a message with the largest payload the API
/// carries (512 KiB, base64-encoded) and its envelope.
const MAX_FRAME: usize = 1024 * 1024;

/// Why a socket could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// 401 before the upgrade: the token is invalid, expired or revoked.
    Unauthorized(String),
    /// Anything else (unreachable, TLS, a 5xx); worth trying again.
    Failed(String),
}

/// `ws://…/v1/ws` for `http://…`, `wss://…/v1/ws` for `https://…`.
pub(crate) fn socket_url(base: &str) -> Result<String, String> {
    let base = base.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        Ok(format!("ws://{rest}/v1/ws"))
    } else if let Some(rest) = base.strip_prefix("https://") {
        Ok(format!("wss://{rest}/v1/ws"))
    } else {
        Err(format!("the base URL {base:?} is not http:// or https://"))
    }
}

/// Opens the socket within `limit`.
pub(crate) async fn open(base: &str, token: &str, limit: Duration) -> Result<Socket, OpenError> {
    match tokio::time::timeout(limit, open_now(base, token)).await {
        Ok(r) => r,
        Err(_) => Err(OpenError::Failed(format!("no WebSocket within {limit:?}"))),
    }
}

async fn open_now(base: &str, token: &str) -> Result<Socket, OpenError> {
    let url = socket_url(base).map_err(OpenError::Failed)?;
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| OpenError::Failed(format!("bad URL {url}: {e}")))?;
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| OpenError::Unauthorized("the token is not a valid header value".to_owned()))?;
    request.headers_mut().insert("authorization", bearer);
    let tls = request.uri().scheme_str() == Some("wss");
    let host = request
        .uri()
        .host()
        .unwrap_or("")
        .trim_matches(['[', ']'])
        .to_owned();
    let port = request
        .uri()
        .port_u16()
        .unwrap_or(if tls { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| OpenError::Failed(format!("cannot reach {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if tls {
        Box::new(tls_connect(&host, tcp).await.map_err(OpenError::Failed)?)
    } else {
        Box::new(tcp)
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    match client_async_with_config(request, stream, Some(config)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.body().as_deref().unwrap_or_default();
            let e = crate::error::Error::from_answer(status, body);
            if status == 401 {
                Err(OpenError::Unauthorized(match e {
                    crate::error::Error::Api { message, .. } => message,
                    other => other.to_string(),
                }))
            } else {
                Err(OpenError::Failed(e.to_string()))
            }
        }
        Err(e) => Err(OpenError::Failed(format!("WebSocket handshake: {e}"))),
    }
}

/// TLS to `host` over `tcp`, checking the certificate with the platform's
/// verifier.
async fn tls_connect(
    host: &str,
    tcp: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    use rustls_platform_verifier::ConfigVerifierExt as _;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config =
        rustls::ClientConfig::with_platform_verifier().map_err(|e| format!("TLS set-up: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host} is not a valid TLS server name: {e}"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {host}: {e}"))
}
