//! `plantd-trigger`: the event half of plantd's functions — durable
//! JetStream pull consumers that hand batches of stream items to function
//! handlers in this process (`plantd up`), with at-least-once delivery,
//! retries with backoff, a dead-letter stream, metrics and a health verdict
//! that names a stuck consumer.
//!
//! | module | what it holds |
//! |---|---|
//! | [`item`] | [`Item`] (what a handler gets, keyed by `(stream, sequence)`), [`BatchOutcome`] (per-item failures), the [`Handler`] trait |
//! | [`settings`] | [`ConsumerSettings`] (batch size and wait, max deliveries, backoff, stuck threshold) and the durable name `<function>_<stream>` |
//! | [`trigger`] | [`Trigger`]: bind handlers to streams, shut down |
//! | `consumer` | the tasks of a binding: delivery loop, watcher, replay responder |
//! | `durable` | the durable consumer created, updated, or replaced when its acknowledgement policy changed |
//! | `cumulative` | settling a batch with one acknowledgement ([`AckMode::Cumulative`]) |
//! | `feed` | one long-lived pull subscription per binding, read on while the handler works; batches cut from it |
//! | [`dlq`] | the `PLANTD_DLQ` record format, park, list, depth, replay requests |
//! | [`metrics`] | counters and gauges, Prometheus text, health ([`Status`]) |
//! | [`http`] | `GET /metrics` and `GET /healthz/trigger` for the host's HTTP server |
//! | [`sqs`] | the AWS path's Lambda side: the SQS message envelope, an SQS event → [`Item`]s → any [`Handler`] → a partial batch response |
//! | `forward` | (feature `aws`) the forwarder: the same consumers, each batch sent to the function's SQS queue, acked after SQS accepted it; `plantd-forwarder` |
//! | `cloud_metrics` | (feature `aws`) the forwarder's CloudWatch metrics (EMF): consumer lag and the edges' backlog, for the template's alarms |
//!
//! ## Contract
//! - One durable consumer per (function, stream): `<function>_<stream>`,
//!   explicit acknowledgement ([`AckMode::Cumulative`] for a handler that
//!   works in stream order: one acknowledgement per batch), starting at the
//!   stream's first item.
//! - An item is acknowledged only after the handler succeeded on it; a
//!   failed item is NAKed with the backoff delay for its delivery count,
//!   and after `max_deliver` failed deliveries parked on
//!   `plantd.dlq.<function>_<stream>` with its error, then terminated on the
//!   source. Nothing is acknowledged that was not handled or parked.
//! - `plantd dlq replay <seq>` hands a parked item back to the same
//!   handler with its original `(stream, sequence)` (see [`dlq`] for why
//!   not a republish).
//!
//! In AWS the same consumers forward batches to SQS instead of calling
//! handlers in-process (`forward`, feature `aws`), and the Lambda
//! functions the queues invoke hand them to the same handlers through
//! [`sqs`] (docs/decisions/0026-trigger-on-aws.md).

pub mod dlq;
pub mod http;
pub mod item;
pub mod metrics;
pub mod settings;
pub mod sqs;
pub mod trigger;

#[cfg(feature = "aws")]
pub mod cloud_metrics;
#[cfg(feature = "aws")]
pub mod forward;

mod consumer;
mod cumulative;
mod durable;
mod feed;

pub use item::{BatchOutcome, Handler, Item};
pub use metrics::{ConsumerHealth, ConsumerState, Health, Status};
pub use settings::{AckMode, ConsumerSettings, durable_name};
pub use trigger::{Trigger, TriggerError};
