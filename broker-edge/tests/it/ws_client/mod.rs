//! A WebSocket MQTT client for the tests: tokio-tungstenite carrying MQTT
//! bytes made by the broker's own codec, so a test decides exactly how
//! packets are cut into WebSocket messages.

#![allow(dead_code)] // each test file uses a different part

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt as _, StreamExt as _};
use plantd_edge::protocol::{self, QoS, v4};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

/// How long any single expected event may take.
const WAIT: Duration = Duration::from_secs(10);

/// The upgrade's outcome: the stream and the subprotocol the server chose.
pub type Upgrade<S> = Result<(WebSocketStream<S>, Option<String>), tungstenite::Error>;

/// Upgrades `stream` to a WebSocket at `url`, offering `protocols` (none:
/// no Sec-WebSocket-Protocol header).
pub async fn upgrade<S>(stream: S, url: &str, protocols: &[&str]) -> Upgrade<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut req = url.into_client_request()?;
    if !protocols.is_empty() {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(&protocols.join(", ")).expect("header value"),
        );
    }
    let (ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(req, stream))
        .await
        .expect("WebSocket upgrade answered in time")?;
    let chosen = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((ws, chosen))
}

/// A plain WebSocket to `ws://addr{path}`.
pub async fn ws(addr: SocketAddr, path: &str, protocols: &[&str]) -> Upgrade<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    upgrade(tcp, &format!("ws://{addr}{path}"), protocols).await
}

/// A secure WebSocket to `wss://addr/mqtt` with `config`; `Err` carries the
/// TLS or upgrade failure as text.
pub async fn wss(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> Result<WsMqtt<tokio_rustls::client::TlsStream<TcpStream>>, String> {
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (ws, _) = upgrade(tls, &format!("wss://{addr}/mqtt"), &["mqtt"])
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    Ok(WsMqtt::new(ws))
}

/// MQTT 3.1.1 over a WebSocket.
pub struct WsMqtt<S> {
    pub ws: WebSocketStream<S>,
    rbuf: BytesMut,
}

impl WsMqtt<TcpStream> {
    /// A WebSocket to `ws://addr/mqtt` offering `mqtt`.
    pub async fn open(addr: SocketAddr) -> Self {
        let (ws, chosen) = ws(addr, "/mqtt", &["mqtt"]).await.expect("upgrade");
        assert_eq!(chosen.as_deref(), Some("mqtt"), "subprotocol echoed");
        WsMqtt::new(ws)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsMqtt<S> {
    pub fn new(ws: WebSocketStream<S>) -> Self {
        WsMqtt {
            ws,
            rbuf: BytesMut::new(),
        }
    }

    /// Sends `bytes` as one binary message.
    pub async fn send(&mut self, bytes: impl Into<Bytes>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send binary message");
    }

    /// Sends one packet as one binary message.
    pub async fn send4(&mut self, p: v4::Packet) {
        self.send(encode(&[p])).await;
    }

    /// The next WebSocket message that is not MQTT data (binary data is
    /// buffered), or None when the stream ended.
    pub async fn next_other(&mut self) -> Option<Message> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("WebSocket message in time")
            {
                Some(Ok(Message::Binary(b))) => self.rbuf.extend_from_slice(&b),
                Some(Ok(m)) => return Some(m),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next MQTT packet, or None when the broker closed.
    pub async fn recv4(&mut self) -> Option<v4::Packet> {
        let fut = async {
            loop {
                if let Some((h, b)) = protocol::split_frame(&mut self.rbuf, usize::MAX)
                    .expect("broker sends valid frames")
                {
                    return Some(v4::Packet::read(&h, b).expect("valid 3.1.1 packet"));
                }
                match self.ws.next().await {
                    Some(Ok(Message::Binary(b))) => self.rbuf.extend_from_slice(&b),
                    Some(Ok(Message::Text(_))) => panic!("the broker sent a text message"),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return None,
                }
            }
        };
        tokio::time::timeout(WAIT, fut)
            .await
            .expect("broker answers or closes in time")
    }

    /// CONNECT (3.1.1, clean session) with an optional token as password;
    /// returns the CONNACK.
    pub async fn connect4(&mut self, id: &str, token: Option<&str>) -> v4::ConnAck {
        self.send4(connect(id, token)).await;
        match self.recv4().await {
            Some(v4::Packet::ConnAck(a)) => a,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// The next PUBLISH (acknowledging nothing).
    pub async fn publish(&mut self) -> v4::Publish {
        loop {
            match self.recv4().await {
                Some(v4::Packet::Publish(p)) => return p,
                Some(_) => {}
                None => panic!("closed while waiting for a PUBLISH"),
            }
        }
    }
}

/// A 3.1.1 CONNECT, clean session, 30 s keep-alive.
pub fn connect(id: &str, token: Option<&str>) -> v4::Packet {
    v4::Packet::Connect(v4::Connect {
        level: 4,
        client_id: id.into(),
        clean_session: true,
        keep_alive: 30,
        will: None,
        username: token.map(|_| "device".to_owned()),
        password: token.map(|t| Bytes::copy_from_slice(t.as_bytes())),
    })
}

pub fn subscribe(pkid: u16, filter: &str, qos: QoS) -> v4::Packet {
    v4::Packet::Subscribe(v4::Subscribe {
        pkid,
        filters: vec![(filter.into(), qos)],
    })
}

pub fn publish(pkid: u16, topic: &str, qos: QoS, payload: &[u8]) -> v4::Packet {
    v4::Packet::Publish(v4::Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: Bytes::copy_from_slice(payload),
    })
}

/// The packets' bytes, back to back.
pub fn encode(packets: &[v4::Packet]) -> Bytes {
    let mut out = BytesMut::new();
    for p in packets {
        p.write(&mut out);
    }
    out.freeze()
}
