//! One pull request of a binding — up to `batch_size` items, expiring
//! after `max_wait` — as a future the delivery loop can run *while the
//! handler works on the previous batch* (prefetch), so the handler never
//! waits for a pull round trip and nats-server sends the next batch while
//! this process parses the current one.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

/// What one pull request brought.
#[derive(Default)]
pub(crate) struct Pulled {
    /// The messages, in delivery order.
    pub messages: Vec<jetstream::Message>,
    /// Why the request failed or ended early (with `messages` empty: the
    /// pull failed).
    pub error: Option<String>,
    /// Cancellation stopped it: `messages` were not handed to anyone.
    pub cancelled: bool,
}

impl Pulled {
    /// NAKs every message so JetStream redelivers it at once (to this
    /// process after a restart, or to another host).
    pub async fn give_back(&self) {
        for m in &self.messages {
            let _ = m.ack_with(AckKind::Nak(None)).await;
        }
    }

    /// Extends the ack deadline of every message (`+WPI`): they are held,
    /// waiting for the handler to finish the batch before them.
    pub async fn extend(&self) {
        for m in &self.messages {
            let _ = m.ack_with(AckKind::Progress).await;
        }
    }
}

/// A pull in flight (or done and not yet taken).
pub(crate) type Pull = Pin<Box<dyn Future<Output = Pulled> + Send>>;

/// Starts one pull of up to `batch_size` items, waiting at most `max_wait`
/// for the batch to fill. It ends early, with what it has, when `cancel`
/// fires. Nothing happens until the future is polled.
pub(crate) fn pull(
    consumer: PullConsumer,
    batch_size: usize,
    max_wait: Duration,
    cancel: CancellationToken,
) -> Pull {
    Box::pin(async move {
        let mut pulled = Pulled {
            messages: Vec::with_capacity(batch_size),
            ..Pulled::default()
        };
        let request = consumer
            .batch()
            .max_messages(batch_size)
            .expires(max_wait)
            .messages();
        let mut batch = tokio::select! {
            () = cancel.cancelled() => {
                pulled.cancelled = true;
                return pulled;
            }
            b = request => match b {
                Ok(b) => b,
                Err(e) => {
                    pulled.error = Some(e.to_string());
                    return pulled;
                }
            },
        };
        loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    pulled.cancelled = true;
                    return pulled;
                }
                next = batch.next() => match next {
                    None => return pulled,
                    Some(Ok(m)) => pulled.messages.push(m),
                    Some(Err(e)) => {
                        pulled.error = Some(e.to_string());
                        return pulled;
                    }
                },
            }
        }
    })
}

/// A pull already done, as a [`Pull`].
pub(crate) fn ready(pulled: Pulled) -> Pull {
    Box::pin(std::future::ready(pulled))
}
