//! A subscription or tail as the connection task keeps it: what it asks
//! for, where it resumes, and the queue its reader drains.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, watch};

use super::frames::{self, Op};
use super::{Confirmation, LogLine, Message};
use crate::error::Error;

/// Where a subscription's items go: messages or log lines.
#[derive(Debug)]
pub(crate) enum Sink {
    /// A `subscribe`'s messages.
    Messages(mpsc::Sender<Result<Message, Error>>),
    /// A `tail`'s log lines.
    Logs(mpsc::Sender<Result<LogLine, Error>>),
}

impl Sink {
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Sink::Messages(s) => s.is_closed(),
            Sink::Logs(s) => s.is_closed(),
        }
    }

    /// Whether its reader has drained it to `half` or fewer items.
    pub(crate) fn drained(&self, half: usize) -> bool {
        let held = |capacity: usize, max: usize| max.saturating_sub(capacity);
        match self {
            Sink::Messages(s) => held(s.capacity(), s.max_capacity()) <= half,
            Sink::Logs(s) => held(s.capacity(), s.max_capacity()) <= half,
        }
    }

    /// Ends the stream with `error` (its reserved slot holds it).
    pub(crate) fn end(&self, error: Error) {
        match self {
            Sink::Messages(s) => {
                let _ = s.try_send(Err(error));
            }
            Sink::Logs(s) => {
                let _ = s.try_send(Err(error));
            }
        }
    }
}

/// What became of an item handed to a subscription's queue.
pub(crate) enum Delivery {
    /// Queued.
    Queued,
    /// Its stream was dropped.
    Dropped,
    /// The queue is full and the item is in the server's stream: not
    /// queued, to be fetched again from the subscription's `resume`
    /// once the reader has caught up ([`Flow::Paused`]).
    Full,
    /// The queue is full and the item cannot be fetched again (it has no
    /// sequence): the stream ends with [`Error::SlowConsumer`].
    TooSlow,
}

/// Queues `item`, keeping one slot for the error that ends a stream.
/// `sequenced`: the item can be fetched again from the server's stream.
pub(crate) fn deliver<T>(
    sink: &mpsc::Sender<Result<T, Error>>,
    item: T,
    buffer: usize,
    sequenced: bool,
) -> Delivery {
    if sink.is_closed() {
        return Delivery::Dropped;
    }
    if sink.capacity() <= 1 {
        if sequenced {
            return Delivery::Full;
        }
        let _ = sink.try_send(Err(Error::SlowConsumer(buffer)));
        return Delivery::TooSlow;
    }
    let _ = sink.try_send(Ok(item));
    Delivery::Queued
}

/// Where a subscription is in its flow control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Asked for on this socket (or waiting for one): its items are
    /// delivered once the server confirms it — anything before that is a
    /// paused consumer's leftover.
    Awaiting,
    /// Confirmed: its items are delivered.
    Flowing,
    /// Its reader fell [`LiveOptions::buffer`](super::LiveOptions::buffer)
    /// behind: unsubscribed on the server until the reader has drained
    /// its queue to half, then subscribed again from `resume`. Items still
    /// arriving meanwhile are dropped (they are fetched again).
    Paused,
}

/// The flag a paused subscription shares with its reader: set when the
/// connection pauses it; whoever clears it (the reader, once it has
/// drained half its queue, or the connection, finding it drained already)
/// resumes it — exactly once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stall(Arc<AtomicBool>);

impl Stall {
    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Whether it was set (and is now cleared): the caller resumes.
    pub(crate) fn take(&self) -> bool {
        self.0.load(Ordering::SeqCst)
            && self
                .0
                .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }
}

/// One subscription (or tail) as the connection keeps it.
#[derive(Debug)]
pub(crate) struct Sub {
    /// The site.
    pub(crate) site: String,
    /// What it asks for.
    pub(crate) op: Op,
    /// The next sequence to yield (0: not known yet).
    pub(crate) resume: u64,
    /// The server said retention dropped some; flag the next message.
    pub(crate) missed: bool,
    /// Its items.
    pub(crate) sink: Sink,
    /// The server's latest confirmation of it.
    pub(crate) confirmed: watch::Sender<Option<Confirmation>>,
    /// Flow control.
    pub(crate) flow: Flow,
    /// Shared with its reader while paused.
    pub(crate) stall: Stall,
}

impl Sub {
    /// Its reader is a full queue behind: unsubscribes it on the server
    /// (`id` is its id on the socket) and, if the reader has drained it to
    /// `half` meanwhile, subscribes it again at once from `resume` — the
    /// server's stream holds what it has not yielded, so nothing is lost
    /// and the replay goes at the reader's pace. The frames to send.
    pub(crate) fn hold(&mut self, id: &str, half: usize) -> Vec<String> {
        tracing::debug!(site = %self.site, what = %self.op.describe(), resume = self.resume, "live: the reader is behind; pausing");
        self.flow = Flow::Paused;
        self.stall.set();
        let mut out = vec![frames::unsubscribe(id)];
        // The reader may have drained it before it could see the flag.
        if self.sink.drained(half) && self.stall.take() {
            out.push(self.reopen(id));
        }
        out
    }

    /// Subscribes it again from `resume`: the frame to send.
    pub(crate) fn reopen(&mut self, id: &str) -> String {
        self.flow = Flow::Awaiting;
        frames::open(id, &self.site, &self.op, self.resume)
    }
}
