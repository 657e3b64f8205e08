//! The fixtures themselves work against the real programs: nats-server keeps
//! a stream across a restart on the same port, moto forgets on reset, and
//! the MQTT command-line clients are installed.

use async_nats::jetstream;
use bytes_free::payload;
use plantd_shared::streams::{self, Settings};
use plantd_testkit::{Moto, Nats, http, tool};

mod bytes_free {
    /// A payload for message `i`.
    pub fn payload(i: usize) -> Vec<u8> {
        format!("reading-{i}").into_bytes()
    }
}

async fn publish_n(js: &jetstream::Context, subject: &str, n: usize) {
    for i in 0..n {
        js.publish(subject.to_owned(), payload(i).into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
}

#[tokio::test]
async fn stream_messages_survive_a_restart_on_the_same_port() {
    let mut nats = Nats::start().await;
    let url = nats.url();
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("ensure");
    publish_n(&js, "plantd.site-1.up.line1.temp", 25).await;

    nats.restart().await;
    assert_eq!(nats.url(), url, "same address after restart");

    let js = nats.jetstream().await;
    let mut stream = js
        .get_stream(streams::TELEMETRY)
        .await
        .expect("stream after restart");
    let info = stream.info().await.expect("info");
    assert_eq!(info.state.messages, 25);
    let last = stream
        .get_last_raw_message_by_subject("plantd.site-1.up.line1.temp")
        .await
        .expect("last message");
    assert_eq!(&last.payload[..], payload(24).as_slice());
}

#[tokio::test]
async fn killed_server_comes_back_with_its_store() {
    let mut nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("ensure");
    publish_n(&js, "plantd.s.log.app", 3).await;
    nats.kill().await;
    assert!(!nats.is_running());
    // While it is down, nothing listens on its port.
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", nats.port())).await;
    assert!(refused.is_err(), "nothing should answer while killed");
    nats.start_again().await;
    let js = nats.jetstream().await;
    let mut logs = js.get_stream(streams::LOGS).await.expect("logs stream");
    assert_eq!(logs.info().await.expect("info").state.messages, 3);
}

#[tokio::test]
async fn ensure_creates_everything_once_and_is_idempotent() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    let first = streams::ensure(&js, &Settings::default())
        .await
        .expect("first");
    assert_eq!(
        first.created.len(),
        streams::STREAMS.len() + streams::BUCKETS.len()
    );
    assert!(first.updated.is_empty());
    let second = streams::ensure(&js, &Settings::default())
        .await
        .expect("second");
    assert!(second.created.is_empty(), "{second:?}");
    assert_eq!(second.updated.len(), first.created.len());
    for name in streams::STREAMS {
        let mut s = js.get_stream(name).await.expect("stream exists");
        let subjects = s.info().await.expect("info").config.subjects.clone();
        assert_eq!(
            subjects,
            vec![streams::stream_subjects(name).expect("known")]
        );
    }
    for bucket in streams::BUCKETS {
        js.get_key_value(bucket).await.expect("bucket exists");
    }
    // Commands go to PLANTD_COMMANDS, telemetry does not.
    let ack = js
        .publish("plantd.site-1.down.valve.open", "1".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    assert_eq!(ack.stream, streams::COMMANDS);
}

#[tokio::test]
async fn moto_reset_forgets_what_was_created() {
    let moto = Moto::start().await;
    let created = http::request(moto.port(), "PUT", "/plantd-fixture-bucket", &[], b"")
        .await
        .expect("create bucket");
    assert_eq!(created.status, 200, "{}", created.text());
    let listed = http::get(moto.port(), "/").await.expect("list buckets");
    assert!(
        listed.text().contains("plantd-fixture-bucket"),
        "{}",
        listed.text()
    );
    moto.reset().await;
    let listed = http::get(moto.port(), "/").await.expect("list buckets");
    assert!(
        !listed.text().contains("plantd-fixture-bucket"),
        "{}",
        listed.text()
    );
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
}

#[test]
fn real_clients_and_tools_are_installed() {
    for name in [
        "mosquitto_pub",
        "mosquitto_sub",
        "mosquitto",
        "nats-server",
        "cargo-lambda",
        "cfn-lint",
    ] {
        let path = tool(name);
        assert!(path.exists(), "{name} at {}", path.display());
    }
    let out = std::process::Command::new(tool("mosquitto_pub"))
        .arg("--help")
        .output()
        .expect("run mosquitto_pub");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mosquitto_pub"), "{text}");
}

#[test]
#[should_panic(expected = "scripts/setup")]
fn a_missing_tool_fails_with_the_setup_command() {
    tool("plantd-definitely-missing");
}
