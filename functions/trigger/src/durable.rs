//! The binding's durable consumer: created, updated to the binding's
//! settings, or — when its acknowledgement policy changed, which JetStream
//! cannot change in place — replaced by one that starts right after the
//! old one's acknowledgement floor.

use async_nats::jetstream::consumer::{self, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::Stream;

/// Creates durable consumer `config.durable_name` on `stream`, or updates
/// it to `config`. Returns the consumer and the configuration it has.
///
/// An existing consumer keeps its deliver policy (JetStream cannot change
/// it). One with another acknowledgement policy (a binding whose
/// [`crate::AckMode`] changed) is deleted and made again from the sequence
/// after its acknowledgement floor: nothing it acknowledged comes again,
/// and everything it had not is delivered again (handlers are idempotent);
/// redeliveries above the floor are what a crash would have caused too.
///
/// # Errors
/// A message naming what JetStream refused.
pub(crate) async fn ensure(
    stream: &Stream,
    mut config: consumer::pull::Config,
) -> Result<(PullConsumer, consumer::pull::Config), String> {
    let durable = config.durable_name.clone().unwrap_or_default();
    match stream.consumer_info(&durable).await {
        Ok(info) if info.config.ack_policy != config.ack_policy => {
            let floor = info.ack_floor.stream_sequence;
            stream
                .delete_consumer(&durable)
                .await
                .map_err(|e| format!("cannot replace it (delete): {e}"))?;
            config.deliver_policy = DeliverPolicy::ByStartSequence {
                start_sequence: floor + 1,
            };
            tracing::info!(
                consumer = %durable,
                from = ?info.config.ack_policy,
                to = ?config.ack_policy,
                start_sequence = floor + 1,
                "durable consumer replaced: its acknowledgement policy changed"
            );
        }
        Ok(info) => config.deliver_policy = info.config.deliver_policy,
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read it: {e}")),
    }
    let created = stream
        .create_consumer(config.clone())
        .await
        .map_err(|e| e.to_string())?;
    Ok((created, config))
}

/// `config` for a consumer made again after it vanished (nats-server came
/// back with a wiped store, or someone deleted it): from the stream's first
/// item, whatever the deliver policy was — a start sequence of the old
/// stream could skip items of a new one.
pub(crate) fn again(config: &consumer::pull::Config) -> consumer::pull::Config {
    consumer::pull::Config {
        deliver_policy: DeliverPolicy::All,
        ..config.clone()
    }
}
