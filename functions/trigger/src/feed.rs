//! The deliveries of one binding: ONE long-lived pull subscription
//! (async-nats `stream()`, which sends the next pull request before the
//! previous one is used up, so nats-server always has one outstanding)
//! read into a queue of held messages, from which the delivery loop cuts
//! batches. The loop keeps reading while the handler works on the
//! previous batch — at most one batch is held ahead — so the handler never
//! waits for a pull round trip and nats-server never waits for this
//! process to ask again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, consumer::pull::Stream};
use futures::{FutureExt as _, StreamExt as _};
use tokio::time::Instant;

use crate::item::Item;

/// The buffers of a settled batch — its messages and items, emptied —
/// kept for the next batches. A batch of thousands is megabytes of
/// buffers (a delivery is ≈ 400 bytes, an item ≈ 180); the allocator hands
/// out a block that large as fresh memory each time, so allocating them
/// per batch costs page faults on every batch (docs/performance.md,
/// "Logs").
#[derive(Clone, Default)]
pub(crate) struct Spares(Arc<Mutex<Vec<Buffers>>>);

/// One batch's buffers.
pub(crate) type Buffers = (Vec<jetstream::Message>, Vec<Item>);

/// Most buffer pairs kept: one batch handled, one being acknowledged.
const SPARES: usize = 2;

impl Spares {
    /// Empty buffers: a kept pair, or new ones.
    pub fn take(&self) -> Buffers {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default()
    }

    /// Empties `buffers` (dropping what they hold) and keeps them for
    /// [`Spares::take`].
    pub fn give(&self, (mut messages, mut items): Buffers) {
        messages.clear();
        items.clear();
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() < SPARES {
            kept.push((messages, items));
        }
    }
}

/// How often nats-server reports an idle subscription is alive; two
/// missed in a row end the subscription (a new one is opened).
const HEARTBEAT: Duration = Duration::from_secs(5);

/// The held messages of a binding and the subscription they come from.
pub(crate) struct Feed {
    /// The durable consumer read.
    consumer: PullConsumer,
    /// Most items in a batch (and held ahead of the handler).
    batch_size: usize,
    /// Longest an item waits for company (see [`Feed::batch_ready`]).
    max_wait: Duration,
    /// The subscription; `None` before the first read and after it failed.
    messages: Option<Stream>,
    /// Received, not yet handed over, in delivery order.
    held: VecDeque<jetstream::Message>,
    /// When the previous batch was handed over (or the feed started).
    last_cut: Instant,
    /// No new subscription before this (after a failure).
    retry_at: Option<Instant>,
    /// Failed reads since the last message arrived.
    pub errors_in_a_row: u32,
    /// Buffers of settled batches, for the next ones.
    pub spares: Spares,
}

impl Feed {
    /// A feed of `consumer`'s deliveries, nothing read yet.
    pub fn new(consumer: PullConsumer, batch_size: usize, max_wait: Duration) -> Self {
        Self {
            consumer,
            batch_size,
            max_wait,
            messages: None,
            held: VecDeque::with_capacity(batch_size),
            last_cut: Instant::now(),
            retry_at: None,
            errors_in_a_row: 0,
            spares: Spares::default(),
        }
    }

    /// True when a batch should be handed over now: a full one is held, or
    /// items are held and `max_wait` has passed since the previous batch
    /// was handed over. An item thus waits at most `max_wait` for company
    /// (plus the time the handler is busy with the batch before it), and
    /// one arriving after a quiet spell is handed over at once.
    pub fn batch_ready(&self) -> bool {
        self.held.len() >= self.batch_size
            || (!self.held.is_empty() && Instant::now() >= self.last_cut + self.max_wait)
    }

    /// When the held items' wait is over; `None` when nothing is held.
    pub fn deadline(&self) -> Option<Instant> {
        (!self.held.is_empty()).then(|| self.last_cut + self.max_wait)
    }

    /// True while less than a batch is held: reading on is worth it.
    pub fn wants_more(&self) -> bool {
        self.held.len() < self.batch_size
    }

    /// Takes the next batch: the oldest `batch_size` held items at most,
    /// in spare buffers ([`Spares`]; the items buffer is empty).
    pub fn take_batch(&mut self) -> Buffers {
        self.last_cut = Instant::now();
        let n = self.held.len().min(self.batch_size);
        let (mut messages, items) = self.spares.take();
        messages.extend(self.held.drain(..n));
        (messages, items)
    }

    /// Receives the next delivery into the held queue, and those that
    /// arrived with it (up to a batch held), opening the
    /// subscription first when there is none (not before the delay set
    /// by [`Feed::retry_after`]). Cancel-safe: dropped before it
    /// finished, nothing is lost.
    ///
    /// # Errors
    /// Why the subscription could not be opened or failed (it is dropped;
    /// the next call opens another).
    pub async fn receive(&mut self) -> Result<(), String> {
        if self.messages.is_none() {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
            }
            let opened = self
                .consumer
                .stream()
                .max_messages_per_batch(self.batch_size)
                .heartbeat(HEARTBEAT)
                .messages()
                .await
                .map_err(|e| format!("cannot subscribe: {e}"))?;
            self.retry_at = None;
            self.messages = Some(opened);
        }
        let Some(messages) = self.messages.as_mut() else {
            return Err("no subscription".to_owned());
        };
        let mut next = messages.next().await;
        loop {
            match next {
                Some(Ok(m)) => {
                    self.held.push_back(m);
                    self.errors_in_a_row = 0;
                }
                Some(Err(e)) => {
                    self.messages = None;
                    return Err(e.to_string());
                }
                None => {
                    self.messages = None;
                    return Err("the subscription ended".to_owned());
                }
            }
            // Whatever else has arrived already, up to a batch held.
            if self.held.len() >= self.batch_size {
                return Ok(());
            }
            match messages.next().now_or_never() {
                Some(n) => next = n,
                None => return Ok(()),
            }
        }
    }

    /// Delays the next subscription by `delay` (after a failure).
    pub fn retry_after(&mut self, delay: Duration) {
        self.retry_at = Some(Instant::now() + delay);
    }

    /// Extends the ack deadline of every held message (`+WPI`): they wait
    /// for the handler to finish the batch before them.
    pub async fn extend(&self) {
        for m in &self.held {
            let _ = m.ack_with(AckKind::Progress).await;
        }
    }

    /// At shutdown: NAKs every held message, and those already received
    /// by the subscription, so JetStream redelivers them at once (to this
    /// process after a restart, or to another host); then closes the
    /// subscription.
    pub async fn give_back(&mut self) {
        if let Some(mut messages) = self.messages.take() {
            while let Some(Some(Ok(m))) = messages.next().now_or_never() {
                self.held.push_back(m);
            }
        }
        for m in self.held.drain(..) {
            let _ = m.ack_with(AckKind::Nak(None)).await;
        }
    }
}
