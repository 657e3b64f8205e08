//! Keep-alive checked broker-wide (decision 0049): a silent client is
//! closed no earlier than 1.5 × its keep-alive [MQTT-3.1.2-24] and at most
//! one sweep (`TICK`, 250 ms) later, any packet resets its clock, and a
//! session taken over is judged by the new connection's keep-alive alone.
//! (`v311::keep_alive_expiry_closes_and_sends_will` covers the will.)
//!
//! The broker runs on a manual clock (decision 0056): the tests advance it
//! past the limits instead of waiting them out, and a ping first makes sure
//! the connection is being watched.

use std::time::Duration;

use crate::common;

use common::*;
use plantd_edge::link::KEEP_ALIVE_TICK as TICK;
use plantd_edge::protocol::v5;

/// 1.5 × a keep-alive of one second.
const LIMIT: Duration = Duration::from_millis(1500);
/// Just short of [`LIMIT`].
const ALMOST: Duration = Duration::from_millis(1499);

/// Sends PINGREQ and waits for PINGRESP.
async fn ping(raw: &mut Raw) {
    raw.send5(v5::Packet::PingReq).await;
    assert!(
        matches!(raw.recv5().await, Some(v5::Packet::PingResp)),
        "PINGRESP"
    );
}

/// A 5.0 connection with a keep-alive of one second, watched by the
/// broker (its PINGREQ answered).
async fn watched(b: &TestBroker, id: &str) -> Raw {
    let mut c = v5_connect(id);
    c.keep_alive = 1;
    let (mut raw, ack) = Raw::connect5(b, c).await;
    assert_eq!(ack.reason, 0);
    ping(&mut raw).await;
    raw
}

/// Fails on a broker without keep-alive (never closed) and on one that
/// closes early (closed at 1.499 s of silence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_v5_client_gets_disconnect_0x8d_after_one_and_a_half_keep_alives() {
    let (b, clock) = TestBroker::on_manual_clock().await;
    let mut raw = watched(&b, "quiet5").await;
    clock.advance(ALMOST);
    raw.stays_open().await;
    clock.advance(TICK);
    assert_eq!(raw.closed5().await, Some(0x8d), "Keep Alive timeout");
    b.stop().await;
}

/// 3.2 s of pings every 0.8 s — twice the 1.5 s limit — and the connection
/// is still served; then silence closes it. Fails on a broker that does
/// not count a packet as life (closed before the third ping) and on one
/// without keep-alive (never closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_packet_resets_the_keep_alive_clock() {
    let (b, clock) = TestBroker::on_manual_clock().await;
    let mut raw = watched(&b, "pinger").await;
    for _ in 0..4 {
        clock.advance(Duration::from_millis(800));
        ping(&mut raw).await;
    }
    clock.advance(LIMIT + TICK);
    assert_eq!(raw.closed5().await, Some(0x8d));
    b.stop().await;
}

/// Fails on a broker that keeps judging the session by the first
/// connection's one-second keep-alive: the sweep that closes the canary
/// (same limit, same advance) would close the second connection too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_over_session_follows_the_new_connections_keep_alive() {
    let (b, clock) = TestBroker::on_manual_clock().await;
    let mut first = v5_connect("twin-ka");
    first.keep_alive = 1;
    first.clean_start = false;
    let (mut old, _) = Raw::connect5(&b, first).await;
    let mut second = v5_connect("twin-ka");
    second.keep_alive = 0;
    second.clean_start = false;
    let (mut new, _) = Raw::connect5(&b, second).await;
    assert_eq!(old.closed5().await, Some(0x8e), "session taken over");
    let mut canary = watched(&b, "canary-ka").await;
    // Well past the first connection's 1.5 s: the canary goes, the second
    // (no keep-alive) is still served.
    clock.advance(LIMIT + TICK);
    assert_eq!(canary.closed5().await, Some(0x8d), "the sweep ran");
    new.stays_open().await;
    ping(&mut new).await;
    b.stop().await;
}
