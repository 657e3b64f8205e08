//! `plantd-bridge`: how the edge talks to JetStream.
//!
//! | module | what it does |
//! |---|---|
//! | [`message`] | [`UplinkMessage`]: what the edge journals for each uplinked MQTT message, its compact binary encoding, and its NATS subject and headers |
//! | [`downlink`] | [`Downlink`]: commands from `PLANTD_COMMANDS` to the broker, in order, acknowledged after the broker accepted them, expired ones dropped |
//! | [`service`] | request/reply to site services: NATS request → MQTT 5 request → the device's answer as the reply |
//! | [`trust`] | [`Trust`]: the identity service's keys (URL or file, cached on disk) and the mirrored revocation list, for verifying MQTT passwords offline |
//! | [`uplink`] | [`Uplink`]: reads the journal from the acknowledged cursor and publishes to JetStream, pipelined with a bounded window, resending after failures |
//!
//! The message id of every uplinked message is `<site>:<journal sequence>`,
//! so JetStream's duplicate window drops anything resent after a crash or
//! an outage: exactly once in the stream, in journal order.

pub mod downlink;
pub mod message;
pub mod service;
pub mod trust;
pub mod uplink;

pub use downlink::{Command, CommandSink, Downlink, DownlinkConfig, DownlinkStatus, SinkError};
pub use message::{DecodeError, UplinkMessage};
pub use service::{
    Service, ServiceConfig, ServiceError, ServiceReply, ServiceRequest, ServiceSink,
};
pub use trust::{Refusal, Trust};
pub use uplink::{
    Uplink, UplinkConfig, UplinkConnection, UplinkConnector, UplinkState, UplinkStatus,
};
