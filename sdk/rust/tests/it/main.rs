//! `plantd-client` against a real `plantd up` (`plantd_testkit::up`) with
//! real MQTT devices (rumqttc 3.1.1 and 5.0). One test binary; one file
//! per concern.

mod common;
mod examples;
mod expiry;
mod live;
mod pace;
mod refused;
mod rest;
mod restart;
mod resume;
mod tail;
mod typed_calls;
