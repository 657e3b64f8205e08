//! The three tasks of one (function, stream) binding: the delivery loop
//! (cut a batch from the feed, call the handler, acknowledge, retry or
//! park each item),
//! the watcher (lag, DLQ depth, rate), and the replay responder.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::{FutureExt as _, StreamExt as _};
use tokio_util::sync::CancellationToken;

use crate::dlq::{self, ReplayReply};
use crate::feed::{Buffers, Feed, Spares};
use crate::item::{BatchOutcome, Handler, Item};
use crate::metrics::{ConsumerMetrics, Snapshot};
use crate::settings::{AckMode, ConsumerSettings};

/// Everything a binding's tasks share.
pub(crate) struct Binding<H> {
    /// The function's name.
    pub function: String,
    /// The durable consumer name.
    pub durable: String,
    /// The source stream.
    pub stream: Arc<str>,
    /// The consumer's configuration, to create it again when it is gone.
    pub config: jetstream::consumer::pull::Config,
    /// The function's handler.
    pub handler: Arc<H>,
    /// Its settings.
    pub settings: ConsumerSettings,
    /// For parking and reading `PLANTD_DLQ`.
    pub js: jetstream::Context,
    /// Its counters.
    pub metrics: Arc<ConsumerMetrics>,
}

/// Waits `delay`, or less when `cancel` fires; true when cancelled.
async fn pause(delay: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => true,
        () = tokio::time::sleep(delay) => false,
    }
}

/// Converts a delivery into an [`Item`]; `None` when it carries no
/// JetStream metadata (it cannot be acknowledged either). Copies nothing
/// per delivery: the stream name is `stream` (the binding's) when the
/// delivery names it, the subject and payload are shared with the
/// delivery, and its headers are moved out of it (the delivery is kept
/// only to be acknowledged).
fn to_item(stream: &Arc<str>, m: &mut jetstream::Message) -> Option<Item> {
    let (stream, sequence, published, delivered) = {
        let info = m.info().ok()?;
        let name = if info.stream == &**stream {
            stream.clone()
        } else {
            info.stream.into()
        };
        (name, info.stream_sequence, info.published, info.delivered)
    };
    Some(Item {
        stream,
        sequence,
        subject: m.message.subject.clone(),
        headers: m.message.headers.take().unwrap_or_default(),
        payload: m.message.payload.clone(),
        published,
        delivered: u64::try_from(delivered).unwrap_or(1).max(1),
        replay: None,
    })
}

/// The delivery loop: until `cancel` fires, read the consumer's
/// deliveries through one long-lived subscription ([`Feed`]), cut them
/// into batches (full, or after `max_wait`), hand each to the handler and
/// settle each item. While a batch is being handled and settled, the
/// subscription is read on (up to one batch held ahead): held items wait
/// in this process, their ack deadline extended every half `ack_wait`
/// like the handled ones', and are handed over in stream order once the
/// handler is done. A batch being handled when `cancel` fires is finished
/// first; items received but not yet handed over are NAKed so they come
/// back at once.
pub(crate) async fn deliver<H: Handler>(
    b: Arc<Binding<H>>,
    consumer: PullConsumer,
    cancel: CancellationToken,
) {
    let mut finishing = Finishing(None);
    let mut feed = Feed::new(consumer, b.settings.batch_size, b.settings.max_wait);
    deliver_until_cancelled(&b, &mut feed, &cancel, &mut finishing).await;
    feed.give_back().await;
    finishing.wait().await;
}

/// The acknowledgements of the previous batch, sent by a task of their own
/// while the handler works on the next one; aborted with the delivery
/// loop (a crash: what was not acknowledged comes again).
struct Finishing(Option<tokio::task::JoinHandle<()>>);

impl Finishing {
    /// Waits until the previous batch is settled.
    async fn wait(&mut self) {
        if let Some(task) = self.0.take()
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "settling a batch failed");
        }
    }
}

impl Drop for Finishing {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// [`deliver`]'s loop.
async fn deliver_until_cancelled<H: Handler>(
    b: &Arc<Binding<H>>,
    feed: &mut Feed,
    cancel: &CancellationToken,
    finishing: &mut Finishing,
) {
    let period = b.settings.ack_wait / 2;
    let mut extend = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    extend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        while !feed.batch_ready() {
            let deadline = feed.deadline();
            let wait = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now));
            tokio::select! {
                () = cancel.cancelled() => return,
                r = feed.receive() => {
                    if let Err(e) = r {
                        failed_read(b, feed, &e).await;
                    }
                }
                () = wait, if deadline.is_some() => {}
                _ = extend.tick() => feed.extend().await,
            }
        }
        let batch = feed.take_batch();
        settle_while_reading(b, batch, feed, finishing, &mut extend).await;
        if cancel.is_cancelled() {
            return;
        }
    }
}

/// Hands the batch's messages to the handler while the feed reads on,
/// then leaves their acknowledgements to a task of their own (after those
/// of the previous batch are sent), which gives the batch's buffers back
/// to the feed's spares. Items received meanwhile get their ack deadline
/// extended every half `ack_wait`.
async fn settle_while_reading<H: Handler>(
    b: &Arc<Binding<H>>,
    batch: Buffers,
    feed: &mut Feed,
    finishing: &mut Finishing,
    extend: &mut tokio::time::Interval,
) {
    let spares: Spares = feed.spares.clone();
    let settle = async {
        match handle_batch(b, batch).await {
            Ok(handled) => {
                finishing.wait().await;
                let b = b.clone();
                finishing.0 = Some(tokio::spawn(async move {
                    spares.give(finish_batch(&b, handled).await);
                }));
            }
            Err(buffers) => spares.give(buffers),
        }
    };
    tokio::pin!(settle);
    loop {
        let more = feed.wants_more();
        tokio::select! {
            () = &mut settle => return,
            r = feed.receive(), if more => {
                if let Err(e) = r {
                    failed_read(b, feed, &e).await;
                }
            }
            _ = extend.tick() => feed.extend().await,
        }
    }
}

/// After reading the feed failed: waits a growing delay before the next
/// subscription and, every fifth failure in a row, creates the durable
/// consumer again — it is gone when nats-server came back with a wiped
/// store or someone deleted it (a new consumer starts at the stream's
/// first item: handlers are idempotent). Items already held stay held.
async fn failed_read<H: Handler>(b: &Binding<H>, feed: &mut Feed, error: &str) {
    feed.errors_in_a_row = feed.errors_in_a_row.saturating_add(1);
    let errors_in_a_row = feed.errors_in_a_row;
    let delay = Duration::from_millis(100 * u64::from(errors_in_a_row.min(50)));
    tracing::warn!(consumer = %b.durable, error, ?delay, errors_in_a_row, "cannot read the consumer's deliveries; retrying");
    if errors_in_a_row.is_multiple_of(5) {
        match b.js.get_stream(&b.stream).await {
            Ok(stream) => match stream
                .create_consumer(crate::durable::again(&b.config))
                .await
            {
                Ok(_) => tracing::info!(consumer = %b.durable, "durable consumer created again"),
                Err(e) => {
                    tracing::warn!(consumer = %b.durable, error = %e, "cannot create the consumer again")
                }
            },
            Err(e) => {
                tracing::warn!(consumer = %b.durable, stream = %b.stream, error = %e, "cannot read the stream")
            }
        }
    }
    feed.retry_after(delay);
}

/// A batch the handler is done with; each item still to be acknowledged,
/// retried or parked ([`finish_batch`]).
pub(crate) struct Handled {
    messages: Vec<jetstream::Message>,
    items: Vec<Item>,
    outcome: BatchOutcome,
}

/// Settling a batch, first half: parks the items delivered too often
/// already and hands the others to the handler. `Err`: nothing was left
/// to hand over (the buffers, emptied).
async fn handle_batch<H: Handler>(
    b: &Binding<H>,
    (mut handed, mut items): Buffers,
) -> Result<Handled, Buffers> {
    let max_deliver = u64::from(b.settings.max_deliver);
    let mut to_park = Vec::new();
    // In place: the messages handed over stay in the batch's buffer.
    handed.retain_mut(|m| {
        let Some(item) = to_item(&b.stream, m) else {
            tracing::error!(consumer = %b.durable, subject = %m.subject, "a delivery without JetStream metadata; ignored");
            return false;
        };
        if item.delivered > max_deliver {
            // Delivered max_deliver times already without an outcome: the
            // handler crashed the process or outlived ack_wait each time.
            // Park it without another try, or it would do so for ever.
            to_park.push((m.clone(), item));
            return false;
        }
        items.push(item);
        true
    });
    // Lowest first: under AckMode::Cumulative an item is parked only once
    // no lower one is pending.
    to_park.sort_by_key(|(_, item)| item.sequence);
    for (m, item) in to_park {
        let error = format!(
            "delivered {} times without an outcome (the handler crashed or timed out)",
            item.delivered - 1
        );
        park_or_retry(b, &m, &item, &error).await;
    }
    if items.is_empty() {
        return Err((handed, items));
    }
    let started = Instant::now();
    let outcome = run_handler(b, &items, &handed).await;
    b.metrics.observe_latency(started.elapsed());
    Ok(Handled {
        messages: handed,
        items,
        outcome,
    })
}

/// Settling a batch, second half: acknowledges each item the handler
/// succeeded on ([`crate::cumulative::finish`] with one acknowledgement
/// under [`AckMode::Cumulative`]), NAKs the failed ones with their
/// backoff, parks those out of deliveries. Returns the batch's buffers.
async fn finish_batch<H: Handler>(b: &Binding<H>, handled: Handled) -> Buffers {
    let Handled {
        messages: handed,
        items,
        outcome,
    } = handled;
    if b.settings.ack == AckMode::Cumulative {
        crate::cumulative::finish(b, &handed, &items, &outcome).await;
    } else {
        for (i, (m, item)) in handed.iter().zip(&items).enumerate() {
            match outcome.failure(i) {
                None => {
                    if let Err(e) = m.ack().await {
                        b.metrics.ack_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(consumer = %b.durable, stream_seq = item.sequence, error = %e, "cannot acknowledge; it will be redelivered");
                        continue;
                    }
                    b.metrics.done.fetch_add(1, Ordering::Relaxed);
                    b.metrics.progressed();
                }
                Some(error) => retry_or_park(b, m, item, error).await,
            }
        }
    }
    for (i, _) in outcome.failures().filter(|(i, _)| *i >= items.len()) {
        tracing::warn!(consumer = %b.durable, index = i, batch = items.len(), "handler reported a failure outside the batch; ignored");
    }
    (handed, items)
}

/// A failed item: NAKed with the backoff of its delivery count, or parked
/// after `max_deliver` deliveries.
pub(crate) async fn retry_or_park<H: Handler>(
    b: &Binding<H>,
    m: &jetstream::Message,
    item: &Item,
    error: &str,
) {
    let s = &b.settings;
    b.metrics.failed.fetch_add(1, Ordering::Relaxed);
    if item.delivered >= u64::from(s.max_deliver) {
        park_or_retry(b, m, item, error).await;
    } else {
        let delay = s.backoff_after(item.delivered);
        tracing::info!(consumer = %b.durable, stream = %item.stream, stream_seq = item.sequence, delivered = item.delivered, ?delay, error, "handler failed on an item; retrying later");
        if let Err(e) = m.ack_with(AckKind::Nak(Some(delay))).await {
            b.metrics.ack_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(consumer = %b.durable, error = %e, "cannot NAK; it will be redelivered after ack_wait");
        }
    }
}

/// Calls the handler, extending the items' ack deadline while it runs. A
/// panic fails the batch; when the batch has more than one item, each is
/// then handed over alone, so one item that panics does not fail (and in
/// the end park) the items that happened to share its batch.
async fn run_handler<H: Handler>(
    b: &Binding<H>,
    items: &[Item],
    messages: &[jetstream::Message],
) -> BatchOutcome {
    match call_handler(b, items, messages).await {
        Ok(outcome) => outcome,
        Err(panic) if items.len() == 1 => BatchOutcome::all_failed(1, panic),
        Err(_) => {
            let mut outcome = BatchOutcome::success();
            for (i, item) in items.iter().enumerate() {
                let alone = std::slice::from_ref(item);
                let message = messages.get(i).map(std::slice::from_ref).unwrap_or(&[]);
                match call_handler(b, alone, message).await {
                    Ok(o) => {
                        if let Some(e) = o.failure(0) {
                            outcome.record_failure(i, e);
                        }
                    }
                    Err(panic) => outcome.record_failure(i, panic),
                }
            }
            outcome
        }
    }
}

/// One handler call; `Err` with the panic's message when it panicked.
async fn call_handler<H: Handler>(
    b: &Binding<H>,
    items: &[Item],
    messages: &[jetstream::Message],
) -> Result<BatchOutcome, String> {
    let call = AssertUnwindSafe(b.handler.handle(items)).catch_unwind();
    tokio::pin!(call);
    let period = b.settings.ack_wait / 2;
    let mut extend = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            r = &mut call => {
                return r.map_err(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".to_owned());
                    tracing::error!(consumer = %b.durable, panic = %what, items = items.len(), "handler panicked");
                    format!("handler panicked: {what}")
                });
            }
            _ = extend.tick() => {
                for m in messages {
                    let _ = m.ack_with(AckKind::Progress).await;
                }
            }
        }
    }
}

/// Parks a failed item in `PLANTD_DLQ` and terminates its delivery; when
/// the DLQ refuses it, the item is retried later instead (never dropped).
async fn park_or_retry<H: Handler>(
    b: &Binding<H>,
    m: &jetstream::Message,
    item: &Item,
    error: &str,
) {
    if b.settings.ack == AckMode::Cumulative
        && let Some(delay) = crate::cumulative::park_later(b, item).await
    {
        let _ = m.ack_with(AckKind::Nak(Some(delay))).await;
        return;
    }
    match dlq::park(&b.js, &b.durable, &b.function, item, error, item.delivered).await {
        Ok(dlq_seq) => {
            tracing::warn!(consumer = %b.durable, stream = %item.stream, stream_seq = item.sequence, dlq_seq, delivered = item.delivered, error, "item parked in the dead-letter stream");
            if let Err(e) = m.ack_with(AckKind::Term).await {
                b.metrics.ack_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(consumer = %b.durable, error = %e, "cannot terminate a parked item; its redelivery will be parked once more (de-duplicated)");
            }
            b.metrics.parked.fetch_add(1, Ordering::Relaxed);
            b.metrics.progressed();
        }
        Err(e) => {
            let delay = b.settings.backoff_after(item.delivered);
            tracing::error!(consumer = %b.durable, stream_seq = item.sequence, error = %e, ?delay, "cannot park an item in the dead-letter stream; retrying it later");
            let _ = m.ack_with(AckKind::Nak(Some(delay))).await;
        }
    }
}

/// The watcher: every `watch_interval`, reads the consumer's lag and the
/// DLQ depth and computes the rate.
pub(crate) async fn watch<H: Handler>(
    b: Arc<Binding<H>>,
    consumer: PullConsumer,
    cancel: CancellationToken,
) {
    let mut last = (Instant::now(), b.metrics.completed());
    loop {
        match consumer.get_info().await {
            Ok(info) => {
                let dlq_depth = match dlq::depth(&b.js, &b.durable).await {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::debug!(consumer = %b.durable, error = %e, "cannot read the DLQ depth");
                        None
                    }
                };
                let now = Instant::now();
                let completed = b.metrics.completed();
                let secs = now.duration_since(last.0).as_secs_f64();
                let items_per_second = if secs > 0.0 {
                    completed.saturating_sub(last.1) as f64 / secs
                } else {
                    0.0
                };
                last = (now, completed);
                b.metrics.set_snapshot(Snapshot {
                    at: now,
                    pending: info.num_pending,
                    ack_pending: info.num_ack_pending as u64,
                    dlq_depth,
                    items_per_second,
                });
            }
            Err(e) => {
                tracing::debug!(consumer = %b.durable, error = %e, "cannot read the consumer's state");
            }
        }
        if pause(b.settings.watch_interval, &cancel).await {
            return;
        }
    }
}

/// The replay responder: answers requests on
/// `plantd.trigger.replay.<consumer>` (body: a DLQ sequence) by handing the
/// parked item to the handler and deleting the record once it succeeded.
pub(crate) async fn serve_replays<H: Handler>(
    b: Arc<Binding<H>>,
    mut requests: async_nats::Subscriber,
    cancel: CancellationToken,
) {
    let client = b.js.client();
    loop {
        let request = tokio::select! {
            () = cancel.cancelled() => break,
            r = requests.next() => match r {
                Some(r) => r,
                None => break,
            },
        };
        let Some(reply_to) = request.reply.clone() else {
            continue;
        };
        let reply = match std::str::from_utf8(&request.payload)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
        {
            Some(seq) => replay(&b, seq).await,
            None => ReplayReply {
                dlq_sequence: 0,
                ok: false,
                stream: None,
                sequence: None,
                error: Some("the request body must be a DLQ sequence number".into()),
            },
        };
        match serde_json::to_vec(&reply) {
            Ok(body) => {
                if let Err(e) = client.publish(reply_to, body.into()).await {
                    tracing::warn!(consumer = %b.durable, error = %e, "cannot answer a replay request");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode a replay answer"),
        }
    }
    let _ = requests.unsubscribe().await;
}

/// Replays DLQ record `seq` through the handler.
async fn replay<H: Handler>(b: &Binding<H>, seq: u64) -> ReplayReply {
    let mut reply = ReplayReply {
        dlq_sequence: seq,
        ok: false,
        stream: None,
        sequence: None,
        error: None,
    };
    let parked = match dlq::get(&b.js, seq).await {
        Ok(p) => p,
        Err(e) => {
            reply.error = Some(e.to_string());
            return reply;
        }
    };
    reply.stream = Some(parked.stream.clone());
    reply.sequence = Some(parked.sequence);
    if parked.consumer != b.durable {
        reply.error = Some(format!(
            "record {seq} belongs to consumer {}, not {}",
            parked.consumer, b.durable
        ));
        return reply;
    }
    let items = [parked.to_item()];
    let started = Instant::now();
    let outcome = run_handler(b, &items, &[]).await;
    b.metrics.observe_latency(started.elapsed());
    if let Some(error) = outcome.failure(0) {
        b.metrics.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(consumer = %b.durable, dlq_seq = seq, error, "replay failed; the record stays");
        reply.error = Some(error.to_owned());
        return reply;
    }
    b.metrics.replayed.fetch_add(1, Ordering::Relaxed);
    tracing::info!(consumer = %b.durable, dlq_seq = seq, stream = %parked.stream, stream_seq = parked.sequence, "parked item replayed");
    match b.js.get_stream(plantd_shared::streams::DLQ).await {
        Ok(stream) => {
            if let Err(e) = stream.delete_message(seq).await {
                tracing::warn!(consumer = %b.durable, dlq_seq = seq, error = %e, "replayed, but the record could not be removed");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "replayed, but PLANTD_DLQ is unreachable to remove the record")
        }
    }
    reply.ok = true;
    reply
}
