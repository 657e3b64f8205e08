//! One attachment of the downlink: reload the held commands, attach the
//! consumer, then take commands, offer held ones again, answer cancel
//! requests and acknowledge, until an error ends it (the caller attaches
//! again after a delay).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use async_nats::jetstream::{self, consumer::pull, kv};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use plantd_shared::commands::{self, CommandState, HeldCommand, HoldReason, record_key};
use plantd_shared::headers;
use plantd_shared::streams;
use plantd_shared::subject::{Channel, prefix};
use tokio::sync::watch;

use super::{Command, CommandSink, DownlinkConfig, DownlinkStatus, SinkError};
use crate::downlink::held::{Held, HeldEntry};
use crate::downlink::parse::{Deadline, Parsed, Raw, parse, sent};

mod records;

/// A record being written: resolves to the command's sequence and the
/// record's revision.
type Write = Pin<Box<dyn Future<Output = (u64, Result<u64, String>)> + Send>>;

/// A command taken from the consumer, in arrival (stream) order, until it
/// is acknowledged.
struct Slot {
    /// Its stream sequence.
    seq: u64,
    /// The message, to acknowledge.
    msg: jetstream::Message,
    /// Delivered, dropped, or held with its record written.
    done: bool,
}

/// What woke the session up.
enum Event {
    Message(Option<Result<Box<jetstream::Message>, String>>),
    Written((u64, Result<u64, String>)),
    Record(Option<Result<kv::Entry, String>>),
    Tick,
    Stop,
}

/// Runs one attachment (see the module documentation) until an error, or
/// until `stop` turns true: then it takes no more commands, finishes the
/// records being written and acknowledges what is done, so that a restart
/// delivers nothing twice.
pub(super) async fn run<S: CommandSink>(
    js: &jetstream::Context,
    cfg: &DownlinkConfig,
    sink: &S,
    status: &watch::Sender<DownlinkStatus>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let stream = js
        .get_stream(streams::COMMANDS)
        .await
        .map_err(|e| format!("stream {}: {e}", streams::COMMANDS))?;
    let kv = records_bucket(js).await?;
    // Watch first, load second: no cancel request falls in between.
    let mut watch = kv
        .watch(commands::site_records(&cfg.site))
        .await
        .map_err(|e| format!("watching held commands: {e}"))?;
    let mut s = Session {
        cfg,
        sink,
        status,
        kv,
        stream: stream.clone(),
        held: Held::default(),
        window: VecDeque::new(),
        highest_seen: 0,
        known: HashSet::new(),
        finished: BTreeMap::new(),
        writes: FuturesUnordered::new(),
    };
    s.load().await?;
    let consumer = attach(&stream, cfg).await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(cfg.window.clamp(1, 256))
        .messages()
        .await
        .map_err(|e| format!("consumer messages: {e}"))?;
    status.send_modify(|st| {
        st.attached = true;
        st.last_error = None;
    });
    s.publish_pending();
    tracing::info!(consumer = %cfg.durable_name(), held = s.held.len(), "downlink attached");
    let mut tick = tokio::time::interval(cfg.retry_delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            m = messages.next() => Event::Message(m.map(|r| r.map(Box::new).map_err(|e| format!("receiving commands: {e}")))),
            Some(w) = s.writes.next(), if !s.writes.is_empty() => Event::Written(w),
            e = watch.next() => Event::Record(e.map(|r| r.map_err(|e| format!("watching held commands: {e}")))),
            _ = tick.tick() => Event::Tick,
            _ = stop.wait_for(|s| *s) => Event::Stop,
        };
        match event {
            Event::Message(None) => return Ok(()),
            Event::Message(Some(m)) => s.arrive(*m?).await?,
            Event::Written((seq, revision)) => {
                s.held.set_revision(seq, revision?);
                s.done(seq);
            }
            Event::Record(None) => return Err("the held-command watch ended".into()),
            Event::Record(Some(e)) => s.changed(e?).await,
            Event::Tick => s.retry().await?,
            Event::Stop => {
                while let Some((seq, revision)) = s.writes.next().await {
                    s.held.set_revision(seq, revision?);
                    s.done(seq);
                }
                return s.acknowledge().await;
            }
        }
        s.acknowledge().await?;
        s.publish_pending();
    }
}

/// The `plantd_commands` bucket, created if the streams were set up before
/// it existed.
async fn records_bucket(js: &jetstream::Context) -> Result<kv::Store, String> {
    if let Ok(kv) = js.get_key_value(streams::COMMANDS_BUCKET).await {
        return Ok(kv);
    }
    let config = streams::bucket_config(streams::COMMANDS_BUCKET, &streams::Settings::default())
        .ok_or("no configuration for the held-commands bucket")?;
    js.create_or_update_key_value(config)
        .await
        .map_err(|e| format!("bucket {}: {e}", streams::COMMANDS_BUCKET))
}

/// The durable consumer, re-created at its acknowledgement floor when it
/// has commands pending from an earlier attachment (so they come again
/// first, in order) or was made with other settings.
async fn attach(
    stream: &jetstream::stream::Stream,
    cfg: &DownlinkConfig,
) -> Result<jetstream::consumer::Consumer<pull::Config>, String> {
    use jetstream::consumer::{AckPolicy, DeliverPolicy};
    let name = cfg.durable_name();
    let max_ack_pending = i64::try_from(cfg.window.max(1)).unwrap_or(i64::MAX);
    let config = |deliver_policy| pull::Config {
        durable_name: Some(name.clone()),
        description: Some(format!("plantd edge downlink for site {}", cfg.site)),
        filter_subject: format!("{}.>", prefix(&cfg.site, Channel::Down)),
        ack_policy: AckPolicy::All,
        ack_wait: cfg.ack_wait,
        max_ack_pending,
        deliver_policy,
        ..Default::default()
    };
    let create = |c: pull::Config| async move {
        stream
            .create_consumer(c)
            .await
            .map_err(|e| format!("consumer {name}: {e}", name = cfg.durable_name()))
    };
    match stream.consumer_info(&name).await {
        Ok(info) => {
            let same = info.config.ack_policy == AckPolicy::All
                && info.config.max_ack_pending == max_ack_pending
                && info.config.ack_wait == cfg.ack_wait;
            if same && info.num_ack_pending == 0 {
                return stream
                    .get_consumer(&name)
                    .await
                    .map_err(|e| format!("consumer {name}: {e}"));
            }
            let start_sequence = info.ack_floor.stream_sequence.saturating_add(1);
            tracing::info!(
                consumer = %name,
                start_sequence,
                pending = info.num_ack_pending,
                "re-creating the command consumer at its acknowledgement floor"
            );
            stream
                .delete_consumer(&name)
                .await
                .map_err(|e| format!("consumer {name}: {e}"))?;
            create(config(DeliverPolicy::ByStartSequence { start_sequence })).await
        }
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::ConsumerInfoErrorKind::NotFound
            ) =>
        {
            create(config(DeliverPolicy::All)).await
        }
        Err(e) => Err(format!("consumer {name}: {e}")),
    }
}

/// Milliseconds since the epoch of a JetStream time (0 before 1970).
fn ms(t: time::OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// The state of one attachment.
struct Session<'a, S> {
    /// Settings.
    cfg: &'a DownlinkConfig,
    /// The broker.
    sink: &'a S,
    /// Published status.
    status: &'a watch::Sender<DownlinkStatus>,
    /// The held-command records.
    kv: kv::Store,
    /// `PLANTD_COMMANDS`, to read held commands back after a restart.
    stream: jetstream::stream::Stream,
    /// Held commands by topic.
    held: Held,
    /// Commands taken and not yet acknowledged, in stream order.
    window: VecDeque<Slot>,
    /// The newest stream sequence taken: anything at or below it that
    /// comes again is a redelivery of a command in hand.
    highest_seen: u64,
    /// Commands that had a record when the session started (held, or
    /// finished): taken again, they are not delivered again.
    known: HashSet<u64>,
    /// Records in a final state, by command, with their revision and when
    /// they were written; deleted after [`FINISHED_RECORD_KEEP`](plantd_shared::commands::FINISHED_RECORD_KEEP).
    finished: BTreeMap<u64, (u64, Instant)>,
    /// Records being written.
    writes: FuturesUnordered<Write>,
}

impl<S: CommandSink> Session<'_, S> {
    fn count(&self, f: impl FnOnce(&mut DownlinkStatus)) {
        self.status.send_modify(f);
    }

    fn publish_pending(&self) {
        let pending = self.held.len() as u64;
        self.status.send_if_modified(|s| {
            let changed = s.pending != pending;
            s.pending = pending;
            changed
        });
    }

    /// Takes one command from the consumer.
    async fn arrive(&mut self, msg: jetstream::Message) -> Result<(), String> {
        let (seq, published_ms) = match msg.info() {
            Ok(i) => (i.stream_sequence, ms(i.published)),
            Err(e) => return Err(format!("a command without stream information: {e}")),
        };
        if seq <= self.highest_seen {
            // Redelivered while in hand (its acknowledgement is coming).
            return Ok(());
        }
        self.highest_seen = seq;
        let now = headers::now_ms();
        let parsed = parse(
            &Raw {
                subject: msg.subject.as_str(),
                headers: msg.headers.as_ref(),
                payload: &msg.payload,
                stream_seq: seq,
                published_ms,
            },
            now,
            self.cfg.hold.as_millis() as u64,
        );
        let sent = sent(msg.headers.as_ref());
        let subject = msg.subject.to_string();
        self.window.push_back(Slot {
            seq,
            msg,
            done: false,
        });
        if self.known.contains(&seq) {
            // Held (or finished) before a restart: not offered twice.
            self.done(seq);
            return Ok(());
        }
        match parsed {
            Parsed::Invalid(why) => {
                tracing::warn!(subject, stream_seq = seq, why, "dropping invalid command");
                self.count(|s| s.invalid += 1);
                self.done(seq);
            }
            Parsed::Expired => {
                tracing::info!(subject, stream_seq = seq, "dropping expired command");
                self.count(|s| s.expired += 1);
                self.done(seq);
            }
            Parsed::Command(command, deadline) => {
                if self.held.last_on(&command.topic).is_some() {
                    self.hold(command, deadline, HoldReason::Behind, sent, now);
                    return Ok(());
                }
                match self.sink.deliver(command.clone()).await {
                    Ok(()) => {
                        self.count(|s| s.delivered += 1);
                        self.done(seq);
                    }
                    Err(SinkError::NoSubscribers) => {
                        self.hold(command, deadline, HoldReason::NoSubscriber, sent, now);
                    }
                    Err(SinkError::Refused(why)) => {
                        tracing::debug!(stream_seq = seq, why, "command refused; holding it");
                        self.count(|s| s.refused += 1);
                        self.hold(command, deadline, HoldReason::Refused, sent, now);
                    }
                }
            }
        }
        Ok(())
    }

    /// Holds `command` in its topic's queue and writes its record; it
    /// counts as done (may be acknowledged) once the record is written.
    fn hold(
        &mut self,
        command: Command,
        deadline: Deadline,
        reason: HoldReason,
        sent: Option<String>,
        now: u64,
    ) {
        let seq = command.stream_seq;
        if now > deadline.at_ms {
            self.count_dropped(deadline);
            self.done(seq);
            return;
        }
        let record = HeldCommand {
            id: seq,
            topic: command.topic.to_string(),
            state: CommandState::Held,
            reason,
            sent,
            held_since: headers::format_time(now),
            expires: headers::format_time(deadline.at_ms),
            finished: None,
        };
        tracing::info!(stream_seq = seq, topic = %command.topic, ?reason, "command held");
        let kv = self.kv.clone();
        let key = record_key(&self.cfg.site, seq);
        let value = record.to_bytes();
        self.writes.push(Box::pin(async move {
            let written = kv
                .create(&key, value.into())
                .await
                .map_err(|e| format!("holding command {seq}: {e}"));
            (seq, written)
        }));
        self.held.push(HeldEntry {
            command,
            deadline,
            record,
            revision: None,
        });
    }

    fn count_dropped(&self, deadline: Deadline) {
        if deadline.from_ttl {
            self.count(|s| s.expired += 1);
        } else {
            self.count(|s| s.undelivered += 1);
        }
    }

    /// Marks `seq` done.
    fn done(&mut self, seq: u64) {
        if let Some(slot) = self.window.iter_mut().rev().find(|s| s.seq == seq) {
            slot.done = true;
        }
    }

    /// Acknowledges the newest command before which all are done (the
    /// consumer acknowledges cumulatively).
    async fn acknowledge(&mut self) -> Result<(), String> {
        let mut last = None;
        while self.window.front().is_some_and(|s| s.done) {
            last = self.window.pop_front();
        }
        if let Some(slot) = last {
            slot.msg
                .ack()
                .await
                .map_err(|e| format!("acknowledging command {}: {e}", slot.seq))?;
        }
        Ok(())
    }
}
