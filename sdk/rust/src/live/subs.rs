//! A subscription or tail as the connection task keeps it: what it asks
//! for, where it resumes, and the queue its reader drains.

use tokio::sync::{mpsc, watch};

use super::frames::Op;
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
    /// The reader is more than the buffer behind: ended.
    TooSlow,
}

/// Queues `item`, keeping one slot for the error that ends a slow reader.
pub(crate) fn deliver<T>(
    sink: &mpsc::Sender<Result<T, Error>>,
    item: T,
    buffer: usize,
) -> Delivery {
    if sink.is_closed() {
        return Delivery::Dropped;
    }
    if sink.capacity() <= 1 {
        let _ = sink.try_send(Err(Error::SlowConsumer(buffer)));
        return Delivery::TooSlow;
    }
    let _ = sink.try_send(Ok(item));
    Delivery::Queued
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
}
