//! The byte format of persisted records: retained messages, queued
//! deliveries and session records.
//!
//! Hand-written, length-prefixed and versioned: every value starts with a
//! format byte ([`FORMAT`]); integers are little-endian; strings and byte
//! strings are a `u32` length and the bytes. Decoding checks every length
//! against what is left and never panics: a short or malformed record is a
//! [`DecodeError`] naming what could not be read.
//!
//! Times are stored as wall-clock deadlines (milliseconds since the Unix
//! epoch), so that what expired while the broker was down is dropped when
//! it is loaded: a message's expiry deadline, a session's expiry deadline.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use plantd_shared::topic::SubscriptionFilter;

use crate::clock::Now;
use crate::message::{Delivery, MessageProperties, Publication, Will};
use crate::protocol::QoS;
use crate::protocol::v5::{RetainHandling, SubscriptionOptions};
use crate::router::subscriptions::SubEntry;
use crate::session::OutFlight;

/// Format byte at the start of every record.
pub const FORMAT: u8 = 1;

/// A record that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
pub struct DecodeError {
    /// What was being read.
    pub what: String,
}

fn err(what: impl Into<String>) -> DecodeError {
    DecodeError { what: what.into() }
}

/// Appends primitive values to a buffer.
#[derive(Debug, Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        // Every length comes from an MQTT packet (< 256 MiB) or a bounded
        // collection; saturate rather than wrap if that ever changes.
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
}

/// Reads primitive values, checking every length.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(err(format!(
                "{what}: needs {n} bytes, {} left",
                self.0.len()
            )));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let b = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }
    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    /// A count of items that each take at least `min_size` bytes; refuses
    /// counts the remaining bytes cannot hold (no huge allocations from a
    /// corrupt length).
    fn count(&mut self, min_size: usize, what: &str) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_size.max(1)) > self.0.len() {
            return Err(err(format!("{what}: count {n} exceeds the record")));
        }
        Ok(n)
    }
    fn bytes(&mut self, what: &str) -> Result<&'a [u8], DecodeError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    fn str(&mut self, what: &str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes(what)?).map_err(|_| err(format!("{what}: not UTF-8")))
    }
    fn qos(&mut self, what: &str) -> Result<QoS, DecodeError> {
        let v = self.u8(what)?;
        QoS::from_u8(v).map_err(|_| err(format!("{what}: QoS {v}")))
    }
    fn format(&mut self) -> Result<(), DecodeError> {
        match self.u8("format byte")? {
            FORMAT => Ok(()),
            v => Err(err(format!("unknown record format {v}"))),
        }
    }
    fn end(&self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(err(format!("{} trailing bytes", self.0.len())))
        }
    }
}

const F_RETAIN: u8 = 1;
const F_ORIGIN: u8 = 1 << 1;
const F_DEADLINE: u8 = 1 << 2;
const F_PFI: u8 = 1 << 3;
const F_CONTENT_TYPE: u8 = 1 << 4;
const F_RESPONSE_TOPIC: u8 = 1 << 5;
const F_CORRELATION: u8 = 1 << 6;

/// Writes `p`, its message expiry as a wall-clock deadline counted from
/// `now` (the broker's clock).
fn put_publication(w: &mut Writer, p: &Publication, now: Now) {
    let props = &p.properties;
    let deadline = p
        .remaining_expiry_at(now.at)
        .map(|secs| now.unix_ms.saturating_add(u64::from(secs) * 1000));
    let mut flags = 0;
    for (set, bit) in [
        (p.retain, F_RETAIN),
        (p.origin.is_some(), F_ORIGIN),
        (deadline.is_some(), F_DEADLINE),
        (props.payload_format_indicator.is_some(), F_PFI),
        (props.content_type.is_some(), F_CONTENT_TYPE),
        (props.response_topic.is_some(), F_RESPONSE_TOPIC),
        (props.correlation_data.is_some(), F_CORRELATION),
    ] {
        if set {
            flags |= bit;
        }
    }
    w.str(&p.topic);
    w.bytes(&p.payload);
    w.u8(p.qos as u8);
    w.u8(flags);
    if let Some(o) = &p.origin {
        w.str(o);
    }
    if let Some(d) = deadline {
        w.u64(d);
    }
    if let Some(v) = props.payload_format_indicator {
        w.u8(v);
    }
    if let Some(v) = &props.content_type {
        w.str(v);
    }
    if let Some(v) = &props.response_topic {
        w.str(v);
    }
    if let Some(v) = &props.correlation_data {
        w.bytes(v);
    }
    w.len(props.user_properties.len());
    for (k, v) in &props.user_properties {
        w.str(k);
        w.str(v);
    }
}

/// A decoded publication, or `None` when its expiry deadline has passed
/// by `now` (the broker's clock, which the rest of its life counts from).
fn get_publication(r: &mut Reader<'_>, now: Now) -> Result<Option<Publication>, DecodeError> {
    let topic = r.str("topic")?;
    let payload = Bytes::copy_from_slice(r.bytes("payload")?);
    let qos = r.qos("publication QoS")?;
    let flags = r.u8("publication flags")?;
    if flags & 0x80 != 0 {
        return Err(err("unknown publication flag"));
    }
    let origin = if flags & F_ORIGIN != 0 {
        Some(Arc::from(r.str("origin")?))
    } else {
        None
    };
    let deadline = if flags & F_DEADLINE != 0 {
        Some(r.u64("expiry deadline")?)
    } else {
        None
    };
    let mut props = MessageProperties::default();
    if flags & F_PFI != 0 {
        props.payload_format_indicator = Some(r.u8("payload format indicator")?);
    }
    if flags & F_CONTENT_TYPE != 0 {
        props.content_type = Some(r.str("content type")?.to_owned());
    }
    if flags & F_RESPONSE_TOPIC != 0 {
        props.response_topic = Some(r.str("response topic")?.to_owned());
    }
    if flags & F_CORRELATION != 0 {
        props.correlation_data = Some(Bytes::copy_from_slice(r.bytes("correlation data")?));
    }
    let n = r.count(8, "user property count")?;
    props.user_properties.reserve(n);
    for _ in 0..n {
        let k = r.str("user property name")?.to_owned();
        let v = r.str("user property value")?.to_owned();
        props.user_properties.push((k, v));
    }
    let mut received = None;
    if let Some(deadline) = deadline {
        if deadline <= now.unix_ms {
            return Ok(None);
        }
        // Round the remaining life up: a message is never dropped early.
        let secs = (deadline - now.unix_ms).div_ceil(1000);
        props.message_expiry_interval = Some(u32::try_from(secs).unwrap_or(u32::MAX));
        received = Some(now.at);
    }
    Ok(Some(Publication {
        topic: Arc::from(topic),
        payload,
        qos,
        retain: flags & F_RETAIN != 0,
        properties: props,
        origin,
        received,
    }))
}

fn put_delivery(w: &mut Writer, d: &Delivery, now: Now) {
    put_publication(w, &d.publication, now);
    w.u8(d.qos as u8);
    w.u8(u8::from(d.retain));
    w.len(d.subscription_ids.len());
    for id in &d.subscription_ids {
        w.u32(*id);
    }
}

fn get_delivery(r: &mut Reader<'_>, now: Now) -> Result<Option<Delivery>, DecodeError> {
    let publication = get_publication(r, now)?;
    let qos = r.qos("delivery QoS")?;
    let retain = match r.u8("delivery retain")? {
        0 => false,
        1 => true,
        v => return Err(err(format!("delivery retain flag {v}"))),
    };
    let n = r.count(4, "subscription id count")?;
    let mut subscription_ids = Vec::with_capacity(n);
    for _ in 0..n {
        subscription_ids.push(r.u32("subscription id")?);
    }
    Ok(publication.map(|p| Delivery {
        publication: Arc::new(p),
        qos,
        retain,
        subscription_ids,
        stored: None,
    }))
}

/// Encodes a retained message (the topic is also the record's key).
pub fn encode_retained(p: &Publication, now: Now) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(FORMAT);
    put_publication(&mut w, p, now);
    w.0
}

/// Decodes a retained message; `None` when it expired.
///
/// # Errors
/// [`DecodeError`] for a malformed record.
pub fn decode_retained(b: &[u8], now: Now) -> Result<Option<Publication>, DecodeError> {
    let mut r = Reader(b);
    r.format()?;
    let p = get_publication(&mut r, now)?;
    r.end()?;
    Ok(p)
}

/// Encodes a delivery queued for an offline session.
pub fn encode_queued(d: &Delivery, now: Now) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(FORMAT);
    put_delivery(&mut w, d, now);
    w.0
}

/// Decodes a queued delivery; `None` when its message expired.
///
/// # Errors
/// [`DecodeError`] for a malformed record.
pub fn decode_queued(b: &[u8], now: Now) -> Result<Option<Delivery>, DecodeError> {
    let mut r = Reader(b);
    r.format()?;
    let d = get_delivery(&mut r, now)?;
    r.end()?;
    Ok(d)
}

/// Where a stored delivery stands with the connected client (the
/// `inflight` table): absent while it is only queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// PUBLISH sent with this packet id, not yet acknowledged: redelivered
    /// with DUP and the same packet id after a restart.
    Sent(u16),
    /// QoS 2: PUBREC received and PUBREL sent with this packet id; only the
    /// PUBREL is repeated after a restart (the message itself is gone).
    Released(u16),
}

const MARK_SENT: u8 = 0;
const MARK_RELEASED: u8 = 1;

/// Encodes an in-flight mark.
pub fn encode_mark(m: Mark) -> [u8; 4] {
    let (state, pkid) = match m {
        Mark::Sent(p) => (MARK_SENT, p),
        Mark::Released(p) => (MARK_RELEASED, p),
    };
    let [lo, hi] = pkid.to_le_bytes();
    [FORMAT, state, lo, hi]
}

/// Decodes an in-flight mark.
///
/// # Errors
/// [`DecodeError`] for a malformed record.
pub fn decode_mark(b: &[u8]) -> Result<Mark, DecodeError> {
    let mut r = Reader(b);
    r.format()?;
    let state = r.u8("mark state")?;
    let pkid = r.u16("mark packet id")?;
    r.end()?;
    if pkid == 0 {
        return Err(err("mark packet id 0"));
    }
    match state {
        MARK_SENT => Ok(Mark::Sent(pkid)),
        MARK_RELEASED => Ok(Mark::Released(pkid)),
        v => Err(err(format!("mark state {v}"))),
    }
}

/// Encodes a will waiting out its delay: when it fires (wall clock, ms
/// since the epoch) and the will message.
pub fn encode_will(w: &Will, fire_at_ms: u64, now: Now) -> Vec<u8> {
    let mut out = Writer::default();
    out.u8(FORMAT);
    out.u64(fire_at_ms);
    out.u32(w.delay_secs);
    let p = Publication {
        topic: w.topic.clone(),
        payload: w.payload.clone(),
        qos: w.qos,
        retain: w.retain,
        properties: w.properties.clone(),
        origin: None,
        // Not stamped: the whole interval is left as of `now`.
        received: None,
    };
    put_publication(&mut out, &p, now);
    out.0
}

/// Decodes a waiting will and when it fires; `None` when its message
/// expired.
///
/// # Errors
/// [`DecodeError`] for a malformed record.
pub fn decode_will(b: &[u8], now: Now) -> Result<Option<(Will, u64)>, DecodeError> {
    let mut r = Reader(b);
    r.format()?;
    let fire_at_ms = r.u64("will fires at")?;
    let delay_secs = r.u32("will delay")?;
    let p = get_publication(&mut r, now)?;
    r.end()?;
    Ok(p.map(|p| {
        (
            Will {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                properties: p.properties,
                delay_secs,
            },
            fire_at_ms,
        )
    }))
}

/// What is persisted of one session besides its queue.
#[derive(Debug, Clone, Default)]
pub struct SessionState {
    /// Session expiry interval in seconds (`u32::MAX`: never).
    pub expiry: u32,
    /// Wall-clock time the session went offline (ms since the epoch);
    /// `None` while a client was connected when this was written.
    pub disconnected_at_ms: Option<u64>,
    /// Next outgoing packet id.
    pub next_pkid: u16,
    /// Incoming QoS 2 packet ids awaiting PUBREL.
    pub incoming_qos2: Vec<u16>,
    /// Unacknowledged outgoing messages, in the order first sent.
    pub outgoing: Vec<(u16, OutFlight)>,
    /// Subscriptions: the raw filter (with any `$share/` prefix) and options.
    pub subs: Vec<(String, SubEntry)>,
}

impl SessionState {
    /// Wall-clock expiry deadline (ms since the epoch), `None` for a session
    /// that never expires or was online when written (whose clock starts at
    /// load).
    pub fn deadline_ms(&self) -> Option<u64> {
        if self.expiry == u32::MAX {
            return None;
        }
        self.disconnected_at_ms
            .map(|at| at.saturating_add(u64::from(self.expiry) * 1000))
    }

    /// Incoming QoS 2 ids as the link keeps them.
    pub fn incoming_set(&self) -> HashSet<u16> {
        self.incoming_qos2.iter().copied().collect()
    }
}

const OUT_PUBLISH: u8 = 0;
const OUT_RELEASED: u8 = 1;

/// Encodes a session record.
pub fn encode_session(s: &SessionState, now: Now) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(FORMAT);
    w.u32(s.expiry);
    match s.disconnected_at_ms {
        Some(at) => {
            w.u8(1);
            w.u64(at);
        }
        None => w.u8(0),
    }
    w.u16(s.next_pkid);
    w.len(s.incoming_qos2.len());
    for id in &s.incoming_qos2 {
        w.u16(*id);
    }
    w.len(s.outgoing.len());
    for (id, f) in &s.outgoing {
        w.u16(*id);
        match f {
            OutFlight::Publish(d) => {
                w.u8(OUT_PUBLISH);
                put_delivery(&mut w, d, now);
            }
            OutFlight::Released(_) => w.u8(OUT_RELEASED),
        }
    }
    w.len(s.subs.len());
    for (raw, e) in &s.subs {
        w.str(raw);
        let o = &e.options;
        w.u8((o.qos as u8)
            | (u8::from(o.no_local) << 2)
            | (u8::from(o.retain_as_published) << 3)
            | ((o.retain_handling as u8) << 4));
        match e.id {
            Some(id) => {
                w.u8(1);
                w.u32(id);
            }
            None => w.u8(0),
        }
    }
    w.0
}

/// Decodes a session record. In-flight messages whose expiry passed are
/// left out (they would be dropped on redelivery anyway).
///
/// # Errors
/// [`DecodeError`] for a malformed record.
pub fn decode_session(b: &[u8], now: Now) -> Result<SessionState, DecodeError> {
    let mut r = Reader(b);
    r.format()?;
    let expiry = r.u32("session expiry")?;
    let disconnected_at_ms = match r.u8("disconnected flag")? {
        0 => None,
        1 => Some(r.u64("disconnected at")?),
        v => return Err(err(format!("disconnected flag {v}"))),
    };
    let next_pkid = r.u16("next packet id")?;
    let n = r.count(2, "incoming QoS 2 count")?;
    let mut incoming_qos2 = Vec::with_capacity(n);
    for _ in 0..n {
        incoming_qos2.push(r.u16("incoming QoS 2 id")?);
    }
    let n = r.count(3, "in-flight count")?;
    let mut outgoing = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.u16("in-flight packet id")?;
        match r.u8("in-flight state")? {
            OUT_PUBLISH => {
                if let Some(d) = get_delivery(&mut r, now)? {
                    outgoing.push((id, OutFlight::Publish(d)));
                }
            }
            OUT_RELEASED => outgoing.push((id, OutFlight::Released(None))),
            v => return Err(err(format!("in-flight state {v}"))),
        }
    }
    let n = r.count(6, "subscription count")?;
    let mut subs = Vec::with_capacity(n);
    for _ in 0..n {
        let raw = r.str("subscription filter")?.to_owned();
        let byte = r.u8("subscription options")?;
        if byte & 0xc0 != 0 {
            return Err(err(format!("subscription options {byte:#x}")));
        }
        let retain_handling = match (byte >> 4) & 0x03 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscription,
            2 => RetainHandling::Never,
            v => return Err(err(format!("retain handling {v}"))),
        };
        let qos = QoS::from_u8(byte & 0x03).map_err(|_| err("subscription QoS 3"))?;
        let id = match r.u8("subscription id flag")? {
            0 => None,
            1 => Some(r.u32("subscription id")?),
            v => return Err(err(format!("subscription id flag {v}"))),
        };
        subs.push((
            raw,
            SubEntry {
                options: SubscriptionOptions {
                    qos,
                    no_local: byte & 0x04 != 0,
                    retain_as_published: byte & 0x08 != 0,
                    retain_handling,
                },
                id,
            },
        ));
    }
    r.end()?;
    Ok(SessionState {
        expiry,
        disconnected_at_ms,
        next_pkid,
        incoming_qos2,
        outgoing,
        subs,
    })
}

/// The raw filter string of a subscription, as the router keys it.
pub fn raw_filter(sf: &SubscriptionFilter) -> String {
    match &sf.group {
        Some(g) => format!("$share/{g}/{}", sf.filter),
        None => sf.filter.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The clock reading at Unix time `unix_ms` (monotonic time: now).
    fn ms(unix_ms: u64) -> Now {
        Now {
            at: std::time::Instant::now(),
            unix_ms,
        }
    }

    fn publication(expiry: Option<u32>) -> Publication {
        let properties = MessageProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: expiry,
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/to".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
            user_properties: vec![
                ("k".into(), "v1".into()),
                ("k".into(), "v2".into()),
                ("é".into(), String::new()),
            ],
        };
        Publication {
            topic: Arc::from("plant/line-1/temp"),
            payload: Bytes::from_static(b"21.5\x00\xff"),
            qos: QoS::ExactlyOnce,
            retain: true,
            // Not stamped: the whole interval is left.
            received: None,
            properties,
            origin: Some(Arc::from("sensor-7")),
        }
    }

    fn same(a: &Publication, b: &Publication) {
        assert_eq!(a.topic, b.topic);
        assert_eq!(a.payload, b.payload);
        assert_eq!(a.qos, b.qos);
        assert_eq!(a.retain, b.retain);
        assert_eq!(a.origin, b.origin);
        assert_eq!(a.properties, b.properties);
    }

    #[test]
    fn retained_round_trip_keeps_every_field() {
        let now = Now::system().unix_ms;
        let p = publication(None);
        let back = decode_retained(&encode_retained(&p, ms(now)), ms(now))
            .expect("decodes")
            .expect("not expired");
        same(&p, &back);
        assert!(back.received.is_none());

        let plain = Publication {
            properties: MessageProperties::default(),
            origin: None,
            retain: false,
            received: None,
            ..p
        };
        let back = decode_retained(&encode_retained(&plain, ms(now)), ms(now))
            .expect("decodes")
            .expect("not expired");
        same(&plain, &back);
    }

    #[test]
    fn message_expiry_counts_from_the_stored_deadline() {
        let written = 1_000_000;
        let p = publication(Some(60));
        let bytes = encode_retained(&p, ms(written));
        // Read back 20.5 s later: 39.5 s left, rounded up.
        let back = decode_retained(&bytes, ms(written + 20_500))
            .expect("decodes")
            .expect("not expired");
        assert_eq!(back.properties.message_expiry_interval, Some(40));
        assert!(back.received.is_some(), "the countdown starts at load");
        // Read back after the deadline: gone.
        assert!(
            decode_retained(&bytes, ms(written + 60_000))
                .expect("decodes")
                .is_none()
        );
    }

    #[test]
    fn queued_delivery_round_trip() {
        let now = Now::system().unix_ms;
        let d = Delivery {
            publication: Arc::new(publication(Some(3600))),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![1, 268_435_455],
            stored: None,
        };
        let back = decode_queued(&encode_queued(&d, ms(now)), ms(now))
            .expect("decodes")
            .expect("not expired");
        assert_eq!(back.qos, d.qos);
        assert_eq!(back.retain, d.retain);
        assert_eq!(back.subscription_ids, d.subscription_ids);
        assert_eq!(
            back.publication.properties.message_expiry_interval,
            Some(3600)
        );
    }

    fn session() -> SessionState {
        let d = Delivery {
            publication: Arc::new(publication(None)),
            qos: QoS::ExactlyOnce,
            retain: true,
            subscription_ids: vec![9],
            stored: None,
        };
        SessionState {
            expiry: 300,
            disconnected_at_ms: Some(5_000),
            next_pkid: 42,
            incoming_qos2: vec![7, 65535],
            outgoing: vec![(3, OutFlight::Publish(d)), (4, OutFlight::Released(None))],
            subs: vec![
                (
                    "plant/+/temp".into(),
                    SubEntry {
                        options: SubscriptionOptions {
                            qos: QoS::AtLeastOnce,
                            no_local: true,
                            retain_as_published: true,
                            retain_handling: RetainHandling::Never,
                        },
                        id: Some(17),
                    },
                ),
                (
                    "$share/g/plant/#".into(),
                    SubEntry {
                        options: SubscriptionOptions {
                            qos: QoS::ExactlyOnce,
                            no_local: false,
                            retain_as_published: false,
                            retain_handling: RetainHandling::OnNewSubscription,
                        },
                        id: None,
                    },
                ),
            ],
        }
    }

    #[test]
    fn session_round_trip_keeps_subscriptions_and_qos_state() {
        let s = session();
        let back = decode_session(&encode_session(&s, ms(5_000)), ms(6_000)).expect("decodes");
        assert_eq!(back.expiry, 300);
        assert_eq!(back.disconnected_at_ms, Some(5_000));
        assert_eq!(back.deadline_ms(), Some(305_000));
        assert_eq!(back.next_pkid, 42);
        assert_eq!(back.incoming_qos2, vec![7, 65535]);
        assert_eq!(back.subs, s.subs);
        assert_eq!(back.outgoing.len(), 2);
        match &back.outgoing[0] {
            (3, OutFlight::Publish(d)) => {
                assert_eq!(d.qos, QoS::ExactlyOnce);
                assert!(d.retain);
                assert_eq!(d.subscription_ids, vec![9]);
                same(&d.publication, &publication(None));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(back.outgoing[1], (4, OutFlight::Released(_))));

        let never = SessionState {
            expiry: u32::MAX,
            disconnected_at_ms: None,
            ..SessionState::default()
        };
        let back = decode_session(&encode_session(&never, ms(0)), ms(0)).expect("decodes");
        assert_eq!(back.deadline_ms(), None);
        assert!(back.subs.is_empty() && back.outgoing.is_empty());
    }

    fn will() -> Will {
        Will {
            topic: Arc::from("status/dev-1"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: MessageProperties {
                message_expiry_interval: Some(60),
                content_type: Some("text/plain".into()),
                ..MessageProperties::default()
            },
            delay_secs: 30,
        }
    }

    #[test]
    fn wills_and_marks_round_trip() {
        let now = Now::system().unix_ms;
        let (w, at) = decode_will(&encode_will(&will(), now + 5_000, ms(now)), ms(now))
            .expect("decodes")
            .expect("not expired");
        let orig = will();
        assert_eq!(at, now + 5_000);
        assert_eq!(
            (&*w.topic, &w.payload, w.qos, w.retain, w.delay_secs),
            (&*orig.topic, &orig.payload, orig.qos, orig.retain, 30)
        );
        assert_eq!(w.properties, orig.properties);
        // A will message whose expiry passed while the broker was down.
        let old = encode_will(&will(), now, ms(now - 61_000));
        assert!(decode_will(&old, ms(now)).expect("decodes").is_none());
        for m in [Mark::Sent(1), Mark::Released(u16::MAX)] {
            assert_eq!(decode_mark(&encode_mark(m)), Ok(m));
        }
        assert!(decode_mark(&[FORMAT, 0, 0, 0]).is_err(), "packet id 0");
        assert!(decode_mark(&[FORMAT, 2, 1, 0]).is_err(), "state 2");
    }

    #[test]
    fn truncated_or_garbled_records_are_errors_not_panics() {
        let now = Now::system().unix_ms;
        let records = [
            encode_session(&session(), ms(now)),
            encode_retained(&publication(Some(10)), ms(now)),
            encode_queued(
                &Delivery {
                    publication: Arc::new(publication(None)),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    subscription_ids: vec![],
                    stored: None,
                },
                ms(now),
            ),
            encode_will(&will(), now + 5_000, ms(now)),
            encode_mark(Mark::Released(513)).to_vec(),
        ];
        for (i, rec) in records.iter().enumerate() {
            let decode = |b: &[u8]| match i {
                0 => decode_session(b, ms(now)).map(|_| ()),
                1 => decode_retained(b, ms(now)).map(|_| ()),
                2 => decode_queued(b, ms(now)).map(|_| ()),
                3 => decode_will(b, ms(now)).map(|_| ()),
                _ => decode_mark(b).map(|_| ()),
            };
            decode(rec).expect("the intact record decodes");
            for cut in 0..rec.len() {
                assert!(decode(&rec[..cut]).is_err(), "record {i} cut at {cut}");
            }
            let mut longer = rec.clone();
            longer.push(0);
            assert!(decode(&longer).is_err(), "trailing byte");
            // Flipping any byte never panics (it may still decode).
            for at in 0..rec.len() {
                let mut bad = rec.clone();
                bad[at] ^= 0xff;
                let _ = decode(&bad);
            }
        }
        assert_eq!(
            decode_session(&[9], ms(now)).expect_err("format").what,
            "unknown record format 9"
        );
        // A corrupt count does not allocate gigabytes.
        let mut huge = vec![FORMAT];
        huge.extend_from_slice(&1u32.to_le_bytes());
        huge.push(0);
        huge.extend_from_slice(&0u16.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_session(&huge, ms(now)).is_err());
    }
}
