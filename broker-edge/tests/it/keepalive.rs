//! Keep-alive checked broker-wide (decision 0049): a silent client is
//! closed no earlier than 1.5 × its keep-alive [MQTT-3.1.2-24], any packet
//! resets its clock, and a session taken over is judged by the new
//! connection's keep-alive alone. (`v311::keep_alive_expiry_closes_and_sends_will`
//! covers the will.)

use std::time::{Duration, Instant};

use crate::common;

use common::*;
use plantd_edge::protocol::v5;

/// Sends PINGREQ and waits for PINGRESP.
async fn ping(raw: &mut Raw) {
    raw.send5(v5::Packet::PingReq).await;
    assert!(
        matches!(raw.recv5().await, Some(v5::Packet::PingResp)),
        "PINGRESP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_v5_client_gets_disconnect_0x8d_after_one_and_a_half_keep_alives() {
    let b = TestBroker::start().await;
    let mut c = v5_connect("quiet5");
    c.keep_alive = 1;
    let (mut raw, ack) = Raw::connect5(&b, c).await;
    assert_eq!(ack.reason, 0);
    let started = Instant::now();
    assert_eq!(raw.closed5().await, Some(0x8d), "Keep Alive timeout");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1450),
        "not before 1.5 x keep-alive ({waited:?})"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_packet_resets_the_keep_alive_clock() {
    let b = TestBroker::start().await;
    let mut c = v5_connect("pinger");
    c.keep_alive = 1;
    let (mut raw, _) = Raw::connect5(&b, c).await;
    // 3 s of pings every 0.8 s: twice the 1.5 s limit, never closed.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        ping(&mut raw).await;
    }
    // Then silence closes it.
    assert_eq!(raw.closed5().await, Some(0x8d));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_over_session_follows_the_new_connections_keep_alive() {
    let b = TestBroker::start().await;
    let mut first = v5_connect("twin-ka");
    first.keep_alive = 1;
    first.clean_start = false;
    let (mut old, _) = Raw::connect5(&b, first).await;
    let mut second = v5_connect("twin-ka");
    second.keep_alive = 0;
    second.clean_start = false;
    let (mut new, _) = Raw::connect5(&b, second).await;
    assert_eq!(old.closed5().await, Some(0x8e), "session taken over");
    // Well past the first connection's 1.5 s: the second (no keep-alive)
    // is still served.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    ping(&mut new).await;
    b.stop().await;
}
