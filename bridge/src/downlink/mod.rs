//! The downlink: commands from the cloud to devices.
//!
//! Commands are published on `plantd.<site>.down.<topic>` and kept by the
//! `PLANTD_COMMANDS` stream until the edge takes them, so a site that was
//! offline receives what was sent meanwhile. The edge reads them through a
//! durable pull consumer (one per site, [`consumer_name`]) with up to
//! [`DownlinkConfig::window`] commands in flight, and hands each to the
//! broker ([`CommandSink::deliver`]) in stream order.
//!
//! **Order is promised per topic, not per site.** A command the broker
//! cannot take — nobody subscribes to its topic, or every subscriber's
//! queue is full — is *held*: it gets a record in the `plantd_commands` KV
//! bucket ([`plantd_shared::commands`]) and waits in its topic's queue,
//! offered again every [`DownlinkConfig::retry_delay`], until it is
//! delivered, its time to live (`Plantd-Ttl`, counted from `Plantd-Sent`
//! or the stream time) or the [`DownlinkConfig::hold`] runs out, or it is
//! cancelled. Later commands to the same topic are held behind it; commands
//! to other topics never wait. A command for a device whose persistent
//! session is offline is not held: the broker queues it for that session
//! like any MQTT message.
//!
//! **Acknowledgement.** The consumer acknowledges cumulatively
//! (`AckPolicy::All`): the edge acknowledges the newest command before
//! which every command was delivered, dropped, or held *with its record
//! written*. After a crash or a lost connection nothing above the
//! acknowledgement floor is lost: on attaching, a consumer with commands
//! pending is re-created at the floor, so those come again at once and in
//! order (a command delivered just before the crash may reach a device
//! twice: at least once), and held ones are reloaded from their records
//! before any new command is taken.
//!
//! **Cancelling.** The proxy marks a held record `cancel_requested`; the
//! edge watches its site's records, drops the command and answers with
//! `cancelled` (or `delivered` when the cancel came too late). See
//! [`plantd_shared::commands`] for the record's life.

mod held;
mod parse;
mod session;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
pub use plantd_shared::commands::consumer_name;
use plantd_shared::subject::Site;
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
    /// Its sequence in `PLANTD_COMMANDS` (the command's id).
    pub stream_seq: u64,
}

/// Why the broker did not take a command; either way it is held and
/// offered again later (after `retry_delay`), and later commands to its
/// topic wait behind it.
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
    /// Delay between offers of a held command.
    pub retry_delay: Duration,
    /// Delay before re-creating the consumer after an error.
    pub reconnect_delay: Duration,
    /// How long a command without a time to live waits for a subscriber
    /// (counted from when the stream stored it) before it is dropped (and
    /// counted as undelivered).
    pub hold: Duration,
    /// Commands in flight between JetStream and the edge (the consumer's
    /// `max_ack_pending`). Held commands do not count: they are
    /// acknowledged once their record is written.
    pub window: usize,
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
            window: 1024,
        }
    }

    /// The durable consumer's name: `plantd-edge-<site>`.
    pub fn durable_name(&self) -> String {
        consumer_name(&self.site)
    }
}

/// Counters of the downlink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownlinkStatus {
    /// Whether the consumer is attached.
    pub attached: bool,
    /// Commands accepted by the broker.
    pub delivered: u64,
    /// Commands held now (no subscriber, or behind one without).
    pub pending: u64,
    /// Commands dropped because their time to live had passed.
    pub expired: u64,
    /// Commands that could not be parsed (bad subject or headers); dropped.
    pub invalid: u64,
    /// Offers the broker refused (queues full; the command is held).
    pub refused: u64,
    /// Commands dropped because no device subscribed within `hold`.
    pub undelivered: u64,
    /// Held commands dropped on request.
    pub cancelled: u64,
    /// The last error, for operators.
    pub last_error: Option<String>,
}

/// The command consumer. See the module documentation.
pub struct Downlink<S> {
    /// The NATS connection, flushed at shutdown so the last
    /// acknowledgements leave.
    client: async_nats::Client,
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
            js: jetstream::new(client.clone()),
            client,
            cfg,
            sink,
            status,
        }
    }

    /// Publishes the status on `status` instead of a channel of its own
    /// (for a reader made before the downlink, such as `/metrics`).
    #[must_use]
    pub fn with_status(mut self, status: watch::Sender<DownlinkStatus>) -> Self {
        self.status = status;
        self
    }

    /// Follows the downlink's counters.
    pub fn status(&self) -> watch::Receiver<DownlinkStatus> {
        self.status.subscribe()
    }

    /// Consumes commands until `shutdown` resolves, re-attaching after
    /// errors (the stream missing, the connection lost).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        // Tells an attached session to stop taking commands and finish
        // what it holds in hand (records being written, acknowledgements).
        let (stop, stopping) = watch::channel(false);
        loop {
            let attached = session::run(
                &self.js,
                &self.cfg,
                self.sink.as_ref(),
                &self.status,
                stopping.clone(),
            );
            tokio::pin!(attached);
            tokio::select! {
                _ = &mut shutdown => {
                    let _ = stop.send(true);
                    // Bounded: with NATS down the last writes would wait.
                    let _ = tokio::time::timeout(Duration::from_secs(2), &mut attached).await;
                    break;
                }
                r = &mut attached => {
                    let msg = match r {
                        Ok(()) => "command consumer ended".to_owned(),
                        Err(e) => e,
                    };
                    tracing::warn!(error = %msg, "downlink detached; retrying");
                    self.status.send_modify(|s| {
                        s.attached = false;
                        s.pending = 0;
                        s.last_error = Some(msg);
                    });
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(self.cfg.reconnect_delay) => {}
                    }
                }
            }
        }
        // Bounded: with NATS down a flush would wait for it.
        let flushed = tokio::time::timeout(Duration::from_secs(2), self.client.flush()).await;
        if !matches!(flushed, Ok(Ok(()))) {
            tracing::debug!("the last acknowledgements may not have left");
        }
        self.status.send_modify(|s| s.attached = false);
    }
}
