//! `plantd-bridge`: how the edge talks to JetStream.
//!
//! | module | what it does |
//! |---|---|
//! | [`message`] | [`UplinkMessage`]: what the edge journals for each uplinked MQTT message, its compact binary encoding, and its NATS subject and headers |
//! | [`lease`] | [`SiteLease`]: holding the site's lease, so that two live edges never publish one site's messages |
//! | [`downlink`] | [`Downlink`]: commands from `PLANTD_COMMANDS` to the broker, pipelined, in order per topic; a command nobody subscribes to is held (a record in `plantd_commands`) without holding up other topics, and can be cancelled; expired ones dropped |
//! | [`service`] | request/reply to site services: NATS request → MQTT 5 request → the device's answer as the reply |
//! | [`trust`] | [`Trust`]: the identity service's keys (URL or file, cached on disk) and the mirrored revocation list, for verifying MQTT passwords offline |
//! | [`uplink`] | [`Uplink`]: reads the journal from the acknowledged cursor and publishes to JetStream, pipelined with a bounded window, resending after failures |
//!
//! The message id of every uplinked message is
//! `<site>:<journal id>:<journal sequence>`, unique across journal lives
//! (a wiped, restored or copied journal never repeats its predecessor's
//! ids). The uplink skips what JetStream proves it already stored when a
//! connection starts, and the duplicate window drops the rest of a resend:
//! exactly once in the stream, in journal order, whatever the outage.

pub mod downlink;
pub mod lease;
pub mod message;
pub mod service;
pub mod trust;
pub mod uplink;

pub use downlink::{Command, CommandSink, Downlink, DownlinkConfig, DownlinkStatus, SinkError};
pub use lease::{LeaseError, LeaseState, SiteLease};
pub use message::{DecodeError, UplinkMessage};
pub use service::{
    Service, ServiceConfig, ServiceError, ServiceReply, ServiceRequest, ServiceSink,
};
pub use trust::{Refusal, Trust};
pub use uplink::{
    Uplink, UplinkConfig, UplinkConnection, UplinkConnector, UplinkState, UplinkStatus,
};
