//! `plantd-bridge`: how the edge talks to JetStream.
//!
//! | module | what it does |
//! |---|---|
//! | [`message`] | [`UplinkMessage`]: what the edge journals for each uplinked MQTT message, its compact binary encoding, and its NATS subject and headers |
//! | [`uplink`] | [`Uplink`]: reads the journal from the acknowledged cursor and publishes to JetStream, pipelined with a bounded window, resending after failures |
//!
//! The message id of every uplinked message is `<site>:<journal sequence>`,
//! so JetStream's duplicate window drops anything resent after a crash or
//! an outage: exactly once in the stream, in journal order.

pub mod message;
pub mod uplink;

pub use message::{DecodeError, UplinkMessage};
pub use uplink::{Uplink, UplinkConfig, UplinkState, UplinkStatus};
