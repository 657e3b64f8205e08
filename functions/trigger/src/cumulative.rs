//! Settling a batch with one acknowledgement ([`AckMode::Cumulative`]):
//! the highest sequence the handler succeeded on is acknowledged, which
//! acknowledges every lower one with it (JetStream `AckPolicy::All`).
//!
//! [`AckMode::Cumulative`]: crate::AckMode::Cumulative

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream;

use crate::consumer::{Binding, retry_or_park};
use crate::item::{BatchOutcome, Handler, Item};

/// Acknowledges the batch's successful items with one acknowledgement and
/// retries or parks the failed ones ([`retry_or_park`]).
///
/// Only successes below the batch's lowest failed sequence are
/// acknowledged (the acknowledgement would take the failed item with it);
/// a success above a failure — which a handler keeping this mode's
/// contract does not report — is left unacknowledged: it comes again
/// after `ack_wait` (not NAKed at once, which would spend its deliveries
/// while the failed item is retried, and park it with that one).
pub(crate) async fn finish<H: Handler>(
    b: &Binding<H>,
    handed: &[jetstream::Message],
    items: &[Item],
    outcome: &BatchOutcome,
) {
    let lowest_failed = items
        .iter()
        .enumerate()
        .filter(|(i, _)| outcome.failure(*i).is_some())
        .map(|(_, item)| item.sequence)
        .min();
    let mut top: Option<usize> = None;
    let mut done = 0u64;
    let mut retry = Vec::new();
    let mut above = 0u32;
    for (i, item) in items.iter().enumerate() {
        match outcome.failure(i) {
            Some(error) => retry.push((i, error)),
            None if lowest_failed.is_some_and(|f| item.sequence > f) => above += 1,
            None => {
                done += 1;
                if top.is_none_or(|t| items[t].sequence < item.sequence) {
                    top = Some(i);
                }
            }
        }
    }
    if above > 0 {
        tracing::warn!(consumer = %b.durable, items = above, lowest_failed, "successes above a failed item of the batch cannot be acknowledged cumulatively; they come again after ack_wait");
    }
    // The successes first: a failed item due to be parked then finds no
    // lower item of its own batch pending.
    if let Some(top) = top {
        match handed[top].ack().await {
            Ok(()) => {
                b.metrics.done.fetch_add(done, Ordering::Relaxed);
                b.metrics.progressed();
            }
            Err(e) => {
                b.metrics.ack_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(consumer = %b.durable, stream_seq = items[top].sequence, items = done, error = %e, "cannot acknowledge the batch; it will be redelivered");
            }
        }
    }
    for (i, error) in retry {
        retry_or_park(b, &handed[i], &items[i], error).await;
    }
}

/// Before `item` is parked: parking terminates it, which acknowledges
/// every lower sequence too — so while a lower one is still pending (the
/// consumer's acknowledgement floor is below the one just before
/// `item`), the item waits instead: `Some(delay)` to NAK it with. After
/// twice `max_deliver` deliveries it is parked anyway (a stream with a
/// hole the floor never crosses would otherwise hold it for ever), and
/// when the floor cannot be read it waits.
pub(crate) async fn park_later<H: Handler>(b: &Binding<H>, item: &Item) -> Option<Duration> {
    let delay = b.settings.backoff_after(item.delivered);
    if item.delivered >= 2 * u64::from(b.settings.max_deliver) {
        tracing::error!(consumer = %b.durable, stream_seq = item.sequence, delivered = item.delivered, "parking an item while lower ones may still be pending: they are acknowledged with it");
        return None;
    }
    let floor = match b.js.get_stream(&*b.stream).await {
        Ok(stream) => match stream.consumer_info(&b.durable).await {
            Ok(info) => info.ack_floor.stream_sequence,
            Err(e) => {
                tracing::warn!(consumer = %b.durable, error = %e, "cannot read the acknowledgement floor before parking; retrying later");
                return Some(delay);
            }
        },
        Err(e) => {
            tracing::warn!(consumer = %b.durable, error = %e, "cannot read the stream before parking; retrying later");
            return Some(delay);
        }
    };
    if floor + 1 >= item.sequence {
        return None;
    }
    tracing::info!(consumer = %b.durable, stream_seq = item.sequence, floor, ?delay, "not parked yet: lower items are still pending");
    Some(delay)
}
