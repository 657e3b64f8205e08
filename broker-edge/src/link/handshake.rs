//! The first packet: read CONNECT within the connect timeout, pick the
//! protocol version, normalise it into a [`Hello`] and answer refusals.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use plantd_shared::topic::validate_topic;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::wire::Wire;
use crate::message::{MessageProperties, Will};
use crate::protocol::v5::{self, ConnAck, Properties};
use crate::protocol::{self, DecodeError, FixedHeader, PacketType, ReasonCode, v4};

/// A CONNECT, version-neutral.
#[derive(Debug)]
pub struct Hello {
    /// Negotiated version.
    pub wire: Wire,
    /// Client id (assigned when the client sent none).
    pub client_id: String,
    /// True when the broker assigned the client id (v5 tells the client).
    pub assigned: bool,
    /// Clean start (v5) / clean session (v3).
    pub clean_start: bool,
    /// Keep-alive requested by the client, seconds.
    pub keep_alive: u16,
    /// Session expiry interval requested, seconds (`u32::MAX` forever).
    pub session_expiry: u32,
    /// Will, if any.
    pub will: Option<Will>,
    /// User name.
    pub username: Option<String>,
    /// Password: the access token (taken by authentication, then dropped).
    pub password: Option<Password>,
    /// Client's Receive Maximum (how many QoS 1/2 it accepts in flight).
    pub receive_maximum: u16,
    /// Largest packet the client accepts.
    pub max_packet_size: u32,
    /// Topic aliases the client accepts from the broker.
    pub topic_alias_maximum: u16,
    /// Whether the client wants reason strings.
    pub request_problem_info: bool,
    /// Whether the client asked for Response Information.
    pub request_response_info: bool,
    /// The enhanced authentication method of a 5.0 CONNECT; its
    /// Authentication Data is then in `password` (see
    /// [`crate::auth::Authenticator::authenticate_with_method`]).
    pub auth_method: Option<String>,
}

/// A CONNECT password (an access token); `Debug` never prints it.
pub struct Password(pub Bytes);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Password(<{} bytes>)", self.0.len())
    }
}

/// Why the handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// No complete CONNECT within the timeout.
    Timeout,
    /// The socket closed or failed.
    Io,
    /// The first packet was not a valid CONNECT; answer with this version's
    /// CONNACK carrying the v5 reason code, if a version is known.
    Refuse(Option<Wire>, u8, String),
}

/// The counter of assigned client ids (see [`assign_id`]).
static ASSIGNED: AtomicU64 = AtomicU64::new(1);
/// A random number drawn once per process (see [`assign_id`]).
static INSTANCE: OnceLock<u64> = OnceLock::new();

/// Reads frames until the first complete one, within `timeout`.
async fn first_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    max_packet: usize,
    timeout: Duration,
) -> Result<(FixedHeader, Bytes), HandshakeError> {
    let read = async {
        loop {
            // Anything but CONNECT is refused from its first byte, without
            // waiting for the body it announces.
            if rbuf
                .first()
                .is_some_and(|b| b >> 4 != PacketType::Connect as u8)
            {
                return Err(HandshakeError::Refuse(
                    None,
                    ReasonCode::ProtocolError.code(),
                    "first packet is not CONNECT".into(),
                ));
            }
            match protocol::split_frame(rbuf, max_packet) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(HandshakeError::Refuse(None, e.reason_code(), e.to_string())),
            }
            rbuf.reserve(1024);
            match stream.read_buf(rbuf).await {
                Ok(0) | Err(_) => return Err(HandshakeError::Io),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| HandshakeError::Timeout)?
}

/// Reads and decodes the CONNECT.
///
/// # Errors
/// [`HandshakeError`] as documented on its variants.
pub async fn read_connect<S: AsyncRead + Unpin>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    max_packet: usize,
    timeout: Duration,
) -> Result<Hello, HandshakeError> {
    let (header, body) = first_frame(stream, rbuf, max_packet, timeout).await?;
    if header.kind != PacketType::Connect {
        return Err(HandshakeError::Refuse(
            None,
            ReasonCode::ProtocolError.code(),
            "first packet is not CONNECT".into(),
        ));
    }
    let level = match protocol::connect_level(&body) {
        Ok(l) => l,
        Err(DecodeError::UnsupportedProtocol(level)) => {
            // [MQTT-3.1.2-2]: 0x84 in the 5.0 format to a level 5 or newer
            // (a client of a later version reads at least that much of a
            // 5.0 CONNACK), its 3.1.1 equivalent (return code 1) below.
            let wire = if level >= 5 {
                Wire::V5
            } else {
                Wire::V4 { level: 4 }
            };
            return Err(HandshakeError::Refuse(
                Some(wire),
                ReasonCode::UnsupportedProtocolVersion.code(),
                "unsupported protocol level".into(),
            ));
        }
        Err(e) => return Err(HandshakeError::Refuse(None, e.reason_code(), e.to_string())),
    };
    if level == 5 {
        let p = v5::Packet::read(&header, body)
            .map_err(|e| HandshakeError::Refuse(Some(Wire::V5), e.reason_code(), e.to_string()))?;
        let v5::Packet::Connect(c) = p else {
            return Err(HandshakeError::Refuse(
                Some(Wire::V5),
                ReasonCode::ProtocolError.code(),
                "not CONNECT".into(),
            ));
        };
        hello_v5(*c)
    } else {
        let wire = Wire::V4 { level };
        let p = v4::Packet::read(&header, body)
            .map_err(|e| HandshakeError::Refuse(Some(wire), e.reason_code(), e.to_string()))?;
        let v4::Packet::Connect(c) = p else {
            return Err(HandshakeError::Refuse(
                Some(wire),
                ReasonCode::ProtocolError.code(),
                "not CONNECT".into(),
            ));
        };
        hello_v4(c)
    }
}

fn check_will_topic(wire: Wire, topic: &str) -> Result<(), HandshakeError> {
    validate_topic(topic).map_err(|e| {
        HandshakeError::Refuse(
            Some(wire),
            ReasonCode::TopicNameInvalid.code(),
            format!("will topic: {e}"),
        )
    })
}

/// A client id for a client that sent none, `plantd-<instance>-<n>`:
/// unique among the sessions in the broker [MQTT-3.2.2-16], including
/// those an earlier process left in the session store. The instance is
/// random per process, not the process id, which a restarted container
/// gets again (pid 1) — a counter starting again at 1 would then assign
/// the id of a stored session to a newcomer.
fn assign_id() -> String {
    let instance = *INSTANCE.get_or_init(rand::random::<u64>);
    format!("plantd-{instance:016x}-{}", ASSIGNED.fetch_add(1, Relaxed))
}

fn hello_v4(c: v4::Connect) -> Result<Hello, HandshakeError> {
    let wire = Wire::V4 { level: c.level };
    let (client_id, assigned) = if c.client_id.is_empty() {
        if !c.clean_session {
            return Err(HandshakeError::Refuse(
                Some(wire),
                ReasonCode::ClientIdentifierNotValid.code(),
                "empty client id requires clean session".into(),
            ));
        }
        (assign_id(), true)
    } else {
        (c.client_id, false)
    };
    let will = match c.will {
        Some(w) => {
            check_will_topic(wire, &w.topic)?;
            Some(Will {
                topic: Arc::from(w.topic),
                payload: w.payload,
                qos: w.qos,
                retain: w.retain,
                properties: MessageProperties::default(),
                delay_secs: 0,
            })
        }
        None => None,
    };
    Ok(Hello {
        wire,
        client_id,
        assigned,
        clean_start: c.clean_session,
        keep_alive: c.keep_alive,
        session_expiry: if c.clean_session { 0 } else { u32::MAX },
        will,
        username: c.username,
        password: c.password.map(Password),
        receive_maximum: u16::MAX,
        max_packet_size: u32::MAX,
        topic_alias_maximum: 0,
        request_problem_info: false,
        request_response_info: false,
        auth_method: None,
    })
}

fn hello_v5(mut c: v5::Connect) -> Result<Hello, HandshakeError> {
    let wire = Wire::V5;
    // Enhanced authentication: the Authentication Data is the credential
    // (the method is checked by the authenticator, which answers 0x8C for
    // one it does not offer).
    let auth_method = c.properties.authentication_method.take();
    if auth_method.is_some() {
        c.password = c.properties.authentication_data.take();
    }
    let (client_id, assigned) = if c.client_id.is_empty() {
        (assign_id(), true)
    } else {
        (std::mem::take(&mut c.client_id), false)
    };
    let will = match c.will {
        Some(mut w) => {
            check_will_topic(wire, &w.topic)?;
            if w.properties.payload_format_indicator == Some(1)
                && std::str::from_utf8(&w.payload).is_err()
            {
                return Err(HandshakeError::Refuse(
                    Some(wire),
                    ReasonCode::PayloadFormatInvalid.code(),
                    "will payload is not UTF-8".into(),
                ));
            }
            let delay_secs = w.properties.will_delay_interval.unwrap_or(0);
            Some(Will {
                topic: Arc::from(w.topic),
                payload: w.payload,
                qos: w.qos,
                retain: w.retain,
                properties: MessageProperties::from_properties(&mut w.properties),
                delay_secs,
            })
        }
        None => None,
    };
    let p = &c.properties;
    Ok(Hello {
        wire,
        client_id,
        assigned,
        clean_start: c.clean_start,
        keep_alive: c.keep_alive,
        session_expiry: p.session_expiry_interval.unwrap_or(0),
        will,
        username: c.username,
        password: c.password.map(Password),
        receive_maximum: p.receive_maximum.unwrap_or(u16::MAX),
        max_packet_size: p.maximum_packet_size.unwrap_or(u32::MAX),
        topic_alias_maximum: p.topic_alias_maximum.unwrap_or(0),
        request_problem_info: p.request_problem_information.unwrap_or(1) == 1,
        request_response_info: p.request_response_information.unwrap_or(0) == 1,
        auth_method,
    })
}

/// Writes a refusing CONNACK (when the version is known) and closes.
pub async fn refuse<S: AsyncWrite + Unpin>(
    stream: &mut S,
    wire: Option<Wire>,
    reason: u8,
    why: Option<String>,
) {
    refuse_within(stream, wire, reason, why, u32::MAX).await;
}

/// [`refuse`] to a client whose Maximum Packet Size is `max_packet`: the
/// Reason String is left out when it would not fit [MQTT-3.2.2-19].
pub async fn refuse_within<S: AsyncWrite + Unpin>(
    stream: &mut S,
    wire: Option<Wire>,
    reason: u8,
    why: Option<String>,
    max_packet: u32,
) {
    let Some(wire) = wire else {
        return;
    };
    let mut out = BytesMut::new();
    let mut properties = Properties::default();
    // A client refused for its protocol level may not parse 5.0
    // properties: its CONNACK carries the reason code alone.
    if wire.is_v5() && reason != ReasonCode::UnsupportedProtocolVersion.code() {
        properties.reason_string = why;
    }
    let mut connack = v5::Packet::ConnAck(ConnAck {
        session_present: false,
        reason,
        properties,
    });
    connack.fit(usize::try_from(max_packet).unwrap_or(usize::MAX));
    wire.encode(&connack, &mut out);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Reads and discards what a client still sends after the broker closed
/// its side, until the client closes too, it pauses for 50 ms, or a
/// second has passed: a close with unread input would reset the
/// connection and discard the DISCONNECT the client has not read yet.
pub async fn drain_input<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut sink = vec![0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(50), stream.read(&mut sink)).await
        {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
