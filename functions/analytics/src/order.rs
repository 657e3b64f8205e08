//! [`StreamOrder`]: items reach the engine in stream order, also after a
//! crash.
//!
//! The engine ignores a reading at or below the last sequence applied to
//! its key, so a reading applied *after* a later one of the same key would
//! be lost. JetStream hands a killed host's unacknowledged items out again
//! only after `ack_wait`, and meanwhile delivers newer ones to whoever
//! pulls. So the handler admits items only in sequence from the
//! consumer's acknowledgement floor: every sequence at or below the floor
//! is acknowledged, hence checkpointed. An item beyond a gap fails (it
//! comes back after a short backoff) until the gap is filled — by the
//! redelivery, or by finding that the missing sequences are no longer in
//! the stream (retention, deletes). The consumer reads the whole stream,
//! so its sequences have no other gaps.

use async_nats::jetstream::{self, consumer, stream::RawMessageErrorKind};
use plantd_shared::streams;

use crate::error::Error;

/// Where the next item must start.
#[derive(Debug)]
pub(crate) struct StreamOrder {
    /// The durable consumer whose floor starts the order.
    durable: String,
    /// The next sequence to admit; `None` until read from the floor.
    next: Option<u64>,
}

/// What [`StreamOrder::admit`] decided.
#[derive(Debug, Default)]
pub(crate) struct Admitted {
    /// How many of the sorted items are admitted (a prefix).
    pub count: usize,
    /// The sequence the first refused item waits for.
    pub waiting_for: Option<u64>,
    /// The floor moved past what this host had applied: another host has
    /// been working, this host's in-memory state is stale.
    pub stale: bool,
    /// The next sequence after the admitted ones (commit it with
    /// [`StreamOrder::advance`] once they are applied).
    pub next: u64,
}

impl StreamOrder {
    /// The order of durable consumer `durable` on `PLANTD_TELEMETRY`.
    pub fn new(durable: String) -> Self {
        Self {
            durable,
            next: None,
        }
    }

    /// The longest prefix of `sorted` (stream sequences, increasing) that
    /// continues the order.
    ///
    /// # Errors
    /// [`Error::Nats`] when the consumer or the stream cannot be read.
    pub async fn admit(&self, js: &jetstream::Context, sorted: &[u64]) -> Result<Admitted, Error> {
        let mut a = Admitted::default();
        let mut next = match self.next {
            Some(n) => n,
            None => self.floor(js).await? + 1,
        };
        let mut refreshed = self.next.is_none();
        let mut i = 0;
        while i < sorted.len() {
            let seq = sorted[i];
            if seq < next {
                // Acknowledged or applied already: the engine ignores it.
                i += 1;
                continue;
            }
            if seq == next {
                next += 1;
                i += 1;
                continue;
            }
            if !refreshed {
                refreshed = true;
                let floor = self.floor(js).await? + 1;
                if floor > next {
                    a.stale = true;
                    next = floor;
                    continue;
                }
            }
            // A gap: are the missing sequences still in the stream?
            let stream = js
                .get_stream(streams::TELEMETRY)
                .await
                .map_err(|e| Error::nats("read PLANTD_TELEMETRY", e))?;
            while next < seq {
                match stream.get_raw_message(next).await {
                    Ok(_) => break,
                    Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => next += 1,
                    Err(e) => return Err(Error::nats("read PLANTD_TELEMETRY", e)),
                }
            }
            if next < seq {
                a.waiting_for = Some(next);
                break;
            }
        }
        a.count = i;
        a.next = next;
        Ok(a)
    }

    /// Records that the admitted items were applied.
    pub fn advance(&mut self, next: u64) {
        self.next = Some(next);
    }

    /// Forgets the position: the next batch reads the floor again.
    pub fn reset(&mut self) {
        self.next = None;
    }

    /// The consumer's acknowledgement floor.
    async fn floor(&self, js: &jetstream::Context) -> Result<u64, Error> {
        let mut c: consumer::PullConsumer = js
            .get_stream(streams::TELEMETRY)
            .await
            .map_err(|e| Error::nats("read PLANTD_TELEMETRY", e))?
            .get_consumer(&self.durable)
            .await
            .map_err(|e| Error::nats("read the analytics consumer", e))?;
        Ok(c.info()
            .await
            .map_err(|e| Error::nats("read the analytics consumer", e))?
            .ack_floor
            .stream_sequence)
    }
}
