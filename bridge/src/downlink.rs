//! The downlink: commands from the cloud to devices.
//!
//! Commands are published on `plantd.<site>.down.<topic>` and kept by the
//! `PLANTD_COMMANDS` stream until the edge takes them, so a site that was
//! offline receives what was sent meanwhile. The edge reads them through a
//! durable pull consumer (one per site) with one message outstanding at a
//! time — strict order — and acknowledges each only after the broker
//! accepted it ([`CommandSink::deliver`]). A command whose time to live
//! (`Plantd-Ttl`, counted from `Plantd-Sent` or the stream time) has passed
//! is dropped, acknowledged (never redelivered) and counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use bytes::Bytes;
use futures::StreamExt as _;
use plantd_shared::headers;
use plantd_shared::streams;
use plantd_shared::subject::{Channel, Site, prefix, subject_to_topic};
use plantd_shared::topic::Topic;
use tokio::sync::watch;

/// A command to deliver to the MQTT subscribers of its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The MQTT topic.
    pub topic: Topic,
    /// The payload, byte for byte.
    pub payload: Bytes,
    /// QoS to deliver with (from `Plantd-Qos`, default 1).
    pub qos: u8,
    /// Whether to deliver (and keep) it as retained (`Plantd-Retain`).
    pub retain: bool,
    /// MQTT 5 content type, if the sender gave one.
    pub content_type: Option<String>,
    /// Its sequence in `PLANTD_COMMANDS`.
    pub stream_seq: u64,
}

/// Why the broker did not take a command; either way it is offered again
/// later (after `retry_delay`), so commands keep their order.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// The broker refused it (queues full, shutting down...).
    #[error("command not accepted: {0}")]
    Refused(String),
    /// No device subscribes to its topic yet: it waits (up to its time to
    /// live, or `hold` without one) for a device to come.
    #[error("no device subscribes to the command's topic yet")]
    NoSubscribers,
}

/// Boxed future of [`CommandSink::deliver`].
pub type DeliverFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// Where commands go: the edge's broker.
pub trait CommandSink: Send + Sync + 'static {
    /// Hands `command` to the broker; resolves once the broker has
    /// accepted it (routed to live subscribers and queued for persistent
    /// sessions), after which the stream message is acknowledged.
    fn deliver(&self, command: Command) -> DeliverFuture<'_>;
}

/// Downlink settings.
#[derive(Debug, Clone)]
pub struct DownlinkConfig {
    /// This edge's site.
    pub site: Site,
    /// How long JetStream waits for an acknowledgement before redelivering.
    pub ack_wait: Duration,
    /// Delay before a command the broker refused is offered again.
    pub retry_delay: Duration,
    /// Delay before re-creating the consumer after an error.
    pub reconnect_delay: Duration,
    /// How long a command without a time to live waits for a subscriber
    /// before it is dropped (and counted as undelivered).
    pub hold: Duration,
}

impl DownlinkConfig {
    /// Defaults for `site`.
    pub fn new(site: Site) -> Self {
        Self {
            site,
            ack_wait: Duration::from_secs(30),
            retry_delay: Duration::from_secs(1),
            reconnect_delay: Duration::from_secs(1),
            hold: Duration::from_secs(600),
        }
    }

    /// The durable consumer's name: `plantd-edge-<site>`.
    pub fn durable_name(&self) -> String {
        format!("plantd-edge-{}", self.site)
    }
}

/// Counters of the downlink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownlinkStatus {
    /// Whether the consumer is attached.
    pub attached: bool,
    /// Commands accepted by the broker.
    pub delivered: u64,
    /// Commands dropped because their time to live had passed.
    pub expired: u64,
    /// Commands that could not be parsed (bad subject or headers); dropped.
    pub invalid: u64,
    /// Commands the broker refused (retried).
    pub refused: u64,
    /// Commands dropped because no device subscribed within `hold`.
    pub undelivered: u64,
    /// The last error, for operators.
    pub last_error: Option<String>,
}

/// The command consumer. See the module documentation.
pub struct Downlink<S> {
    /// JetStream.
    js: jetstream::Context,
    /// Settings.
    cfg: DownlinkConfig,
    /// The broker.
    sink: Arc<S>,
    /// Published status.
    status: watch::Sender<DownlinkStatus>,
}

impl<S: CommandSink> Downlink<S> {
    /// A downlink over `client` delivering to `sink`.
    pub fn new(client: async_nats::Client, cfg: DownlinkConfig, sink: Arc<S>) -> Self {
        let (status, _) = watch::channel(DownlinkStatus::default());
        Self {
            js: jetstream::new(client),
            cfg,
            sink,
            status,
        }
    }

    /// Follows the downlink's counters.
    pub fn status(&self) -> watch::Receiver<DownlinkStatus> {
        self.status.subscribe()
    }

    /// Consumes commands until `shutdown` resolves, re-attaching after
    /// errors (the stream missing, the connection lost).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                r = self.consume() => {
                    let msg = match r {
                        Ok(()) => "command consumer ended".to_owned(),
                        Err(e) => e,
                    };
                    tracing::warn!(error = %msg, "downlink detached; retrying");
                    self.status.send_modify(|s| {
                        s.attached = false;
                        s.last_error = Some(msg);
                    });
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(self.cfg.reconnect_delay) => {}
                    }
                }
            }
        }
        self.status.send_modify(|s| s.attached = false);
    }

    async fn consume(&self) -> Result<(), String> {
        let stream = self
            .js
            .get_stream(streams::COMMANDS)
            .await
            .map_err(|e| format!("stream {}: {e}", streams::COMMANDS))?;
        let consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                &self.cfg.durable_name(),
                pull::Config {
                    durable_name: Some(self.cfg.durable_name()),
                    description: Some(format!("plantd edge downlink for site {}", self.cfg.site)),
                    filter_subject: format!("{}.>", prefix(&self.cfg.site, Channel::Down)),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: self.cfg.ack_wait,
                    // One at a time: commands reach devices in the order sent.
                    max_ack_pending: 1,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("consumer {}: {e}", self.cfg.durable_name()))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| format!("consumer messages: {e}"))?;
        self.status.send_modify(|s| {
            s.attached = true;
            s.last_error = None;
        });
        tracing::info!(consumer = %self.cfg.durable_name(), "downlink attached");
        while let Some(msg) = messages.next().await {
            let msg = msg.map_err(|e| format!("receiving commands: {e}"))?;
            self.handle(msg).await?;
        }
        Ok(())
    }

    async fn handle(&self, msg: jetstream::Message) -> Result<(), String> {
        let (stream_seq, published_ms) = match msg.info() {
            Ok(i) => (
                i.stream_sequence,
                u64::try_from(i.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
            ),
            Err(_) => (0, 0),
        };
        let parsed = parse(&msg, stream_seq, published_ms);
        let outcome = match parsed {
            Parsed::Invalid(why) => {
                tracing::warn!(subject = %msg.subject, stream_seq, why, "dropping invalid command");
                self.status.send_modify(|s| s.invalid += 1);
                AckKind::Term
            }
            Parsed::Expired => {
                tracing::info!(subject = %msg.subject, stream_seq, "dropping expired command");
                self.status.send_modify(|s| s.expired += 1);
                AckKind::Term
            }
            Parsed::Command(cmd) => match self.sink.deliver(cmd).await {
                Ok(()) => {
                    self.status.send_modify(|s| s.delivered += 1);
                    AckKind::Ack
                }
                Err(SinkError::NoSubscribers)
                    if plantd_shared::headers::now_ms()
                        > published_ms.saturating_add(self.cfg.hold.as_millis() as u64)
                        && !has_ttl(&msg) =>
                {
                    tracing::warn!(subject = %msg.subject, stream_seq, "no device took the command in time; dropping");
                    self.status.send_modify(|s| s.undelivered += 1);
                    AckKind::Term
                }
                Err(e) => {
                    tracing::debug!(stream_seq, error = %e, "command not delivered yet; will retry");
                    self.status.send_modify(|s| s.refused += 1);
                    AckKind::Nak(Some(self.cfg.retry_delay))
                }
            },
        };
        // A double ack confirms the server recorded it before we take the
        // next one, so a command is never delivered twice after a restart
        // unless the broker could not accept it.
        msg.double_ack_with(outcome)
            .await
            .map_err(|e| format!("acknowledging command {stream_seq}: {e}"))
    }
}

fn has_ttl(msg: &jetstream::Message) -> bool {
    msg.headers
        .as_ref()
        .is_some_and(|h| h.get(headers::TTL).is_some())
}

enum Parsed {
    Command(Command),
    Expired,
    Invalid(&'static str),
}

fn parse(msg: &jetstream::Message, stream_seq: u64, published_ms: u64) -> Parsed {
    let Ok(parsed) = subject_to_topic(msg.subject.as_str()) else {
        return Parsed::Invalid("subject is not plantd.<site>.down.<topic>");
    };
    let header = |name: &str| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let qos = match header(headers::QOS).as_deref() {
        None => 1,
        Some("0") => 0,
        Some("1") => 1,
        Some("2") => 2,
        Some(_) => return Parsed::Invalid("Plantd-Qos must be 0, 1 or 2"),
    };
    let retain = match header(headers::RETAIN).as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Parsed::Invalid("Plantd-Retain must be true or false"),
    };
    if let Some(ttl) = header(headers::TTL) {
        let Ok(ttl) = ttl.parse::<u64>() else {
            return Parsed::Invalid("Plantd-Ttl must be whole seconds");
        };
        let sent = header(headers::SENT)
            .and_then(|s| headers::parse_time(&s))
            .unwrap_or(published_ms);
        let now = headers::now_ms();
        if now > sent.saturating_add(ttl.saturating_mul(1000)) {
            return Parsed::Expired;
        }
    }
    Parsed::Command(Command {
        topic: parsed.topic,
        payload: msg.payload.clone(),
        qos,
        retain,
        content_type: header(headers::CONTENT_TYPE),
        stream_seq,
    })
}
