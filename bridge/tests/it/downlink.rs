//! Commands from the cloud against a real nats-server: sent while the edge
//! is away, they arrive when it attaches, in order; expired ones do not;
//! acknowledged ones are not delivered twice; held ones (nobody subscribed)
//! come back after a restart, still before later ones to their topic.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use plantd_bridge::downlink::DeliverFuture;
use plantd_bridge::{Command, CommandSink, Downlink, DownlinkConfig, DownlinkStatus, SinkError};
use plantd_shared::headers;
use plantd_shared::streams::{self, Settings};
use plantd_shared::subject::Site;
use plantd_testkit::Nats;
use tokio::sync::{mpsc, oneshot, watch};

/// The broker stand-in: records what it accepted; refuses the first
/// `refuse` deliveries; nobody subscribes to the topics in `absent`.
struct Broker {
    tx: mpsc::UnboundedSender<Command>,
    refuse: AtomicUsize,
    absent: Vec<String>,
}

impl CommandSink for Broker {
    fn deliver(&self, command: Command) -> DeliverFuture<'_> {
        Box::pin(async move {
            if self
                .refuse
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(SinkError::Refused("session queue full".into()));
            }
            if self.absent.iter().any(|t| t == command.topic.as_str()) {
                return Err(SinkError::NoSubscribers);
            }
            self.tx
                .send(command)
                .map_err(|_| SinkError::Refused("closed".into()))
        })
    }
}

fn site() -> Site {
    Site::new("plant-1").expect("site")
}

async fn send(
    js: &async_nats::jetstream::Context,
    subject: &str,
    payload: &str,
    extra: &[(&str, &str)],
) {
    let mut h = HeaderMap::new();
    for (k, v) in extra {
        h.insert(*k, *v);
    }
    js.publish_with_headers(subject.to_owned(), h, payload.to_owned().into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

struct Running {
    rx: mpsc::UnboundedReceiver<Command>,
    status: watch::Receiver<DownlinkStatus>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(nats: &Nats, refuse: usize) -> Running {
    start_with(nats, refuse, &[]).await
}

/// [`start`] with nobody subscribed to the topics in `absent`.
async fn start_with(nats: &Nats, refuse: usize, absent: &[&str]) -> Running {
    let (tx, rx) = mpsc::unbounded_channel();
    let broker = Arc::new(Broker {
        tx,
        refuse: AtomicUsize::new(refuse),
        absent: absent.iter().map(|t| (*t).to_owned()).collect(),
    });
    let mut cfg = DownlinkConfig::new(site());
    cfg.retry_delay = Duration::from_millis(50);
    let d = Downlink::new(nats.client().await, cfg, broker);
    let status = d.status();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(d.run(async move {
        let _ = stop_rx.await;
    }));
    Running {
        rx,
        status,
        stop,
        task,
    }
}

impl Running {
    async fn next(&mut self) -> Command {
        tokio::time::timeout(Duration::from_secs(30), self.rx.recv())
            .await
            .expect("a command in time")
            .expect("downlink alive")
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("downlink task");
    }
}

#[tokio::test]
async fn commands_sent_while_away_arrive_in_order_and_expired_ones_do_not() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    let past = headers::format_time(headers::now_ms() - 120_000);
    send(
        &js,
        "plantd.plant-1.down.valve.open",
        "1",
        &[(headers::QOS, "2")],
    )
    .await;
    send(
        &js,
        "plantd.plant-1.down.valve.open",
        "stale",
        &[(headers::TTL, "60"), (headers::SENT, &past)],
    )
    .await;
    send(&js, "plantd.other.down.valve.open", "not ours", &[]).await;
    send(
        &js,
        "plantd.plant-1.down.setpoint",
        "42",
        &[(headers::RETAIN, "true"), (headers::QOS, "0")],
    )
    .await;
    send(
        &js,
        "plantd.plant-1.down.a%2Eb.%",
        "escaped",
        &[(headers::TTL, "3600")],
    )
    .await;

    let mut d = start(&nats, 0).await;
    let c = d.next().await;
    assert_eq!(
        (c.topic.as_str(), &c.payload[..], c.qos, c.retain),
        ("valve/open", &b"1"[..], 2, false)
    );
    let c = d.next().await;
    assert_eq!(
        (c.topic.as_str(), &c.payload[..], c.qos, c.retain),
        ("setpoint", &b"42"[..], 0, true)
    );
    let c = d.next().await;
    assert_eq!(
        c.topic.as_str(),
        "a.b/",
        "subjects decode back to the MQTT topic"
    );
    assert_eq!(c.qos, 1, "QoS 1 when the sender did not say");
    let s = d
        .status
        .wait_for(|s| s.delivered == 3)
        .await
        .expect("status")
        .clone();
    assert_eq!(s.expired, 1);
    d.stop().await;
}

#[tokio::test]
async fn a_refused_command_is_retried_before_the_next_one() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    send(&js, "plantd.plant-1.down.step", "first", &[]).await;
    send(&js, "plantd.plant-1.down.step", "second", &[]).await;
    let mut d = start(&nats, 2).await;
    assert_eq!(&d.next().await.payload[..], b"first");
    assert_eq!(&d.next().await.payload[..], b"second");
    let s = d.status.borrow().clone();
    assert_eq!(s.refused, 2);
    d.stop().await;
}

#[tokio::test]
async fn acknowledged_commands_are_not_delivered_again_after_a_restart() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    for i in 0..3 {
        send(&js, "plantd.plant-1.down.cmd", &i.to_string(), &[]).await;
    }
    let mut d = start(&nats, 0).await;
    for i in 0..3 {
        assert_eq!(d.next().await.payload, i.to_string());
    }
    d.status
        .wait_for(|s| s.delivered == 3)
        .await
        .expect("status");
    d.stop().await;

    send(&js, "plantd.plant-1.down.cmd", "3", &[]).await;
    let mut d = start(&nats, 0).await;
    assert_eq!(
        d.next().await.payload,
        "3",
        "only what was not acknowledged before"
    );
    d.stop().await;
}

#[tokio::test]
async fn held_commands_come_back_after_a_restart_before_later_ones_to_their_topic() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    send(&js, "plantd.plant-1.down.door", "a", &[]).await;
    send(&js, "plantd.plant-1.down.door", "b", &[]).await;
    send(&js, "plantd.plant-1.down.lamp", "c", &[]).await;
    // Nobody subscribes to `door`: its two commands are held, `lamp` does
    // not wait for them.
    let mut d = start_with(&nats, 0, &["door"]).await;
    assert_eq!(&d.next().await.payload[..], b"c");
    d.status.wait_for(|s| s.pending == 2).await.expect("status");
    d.stop().await;

    send(&js, "plantd.plant-1.down.door", "d", &[]).await;
    send(&js, "plantd.plant-1.down.lamp", "e", &[]).await;
    // Someone subscribes now: the held ones first, in order, then the rest.
    let mut d = start(&nats, 0).await;
    let mut door = Vec::new();
    let mut lamp = Vec::new();
    for _ in 0..4 {
        let c = d.next().await;
        let into = if c.topic.as_str() == "door" {
            &mut door
        } else {
            &mut lamp
        };
        into.push(String::from_utf8(c.payload.to_vec()).expect("utf-8"));
    }
    assert_eq!(door, ["a", "b", "d"], "order per topic across the restart");
    assert_eq!(lamp, ["e"], "delivered once");
    d.status
        .wait_for(|s| s.pending == 0 && s.delivered == 4)
        .await
        .expect("status");
    d.stop().await;
}

#[tokio::test]
async fn commands_in_flight_at_a_crash_come_again_first_and_in_order() {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    use futures::StreamExt as _;

    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    for step in ["1", "2", "3"] {
        send(&js, "plantd.plant-1.down.step", step, &[]).await;
    }
    // An earlier edge (with the one-at-a-time consumer of old) took "1"
    // and "2" and died before acknowledging them.
    let stream = js.get_stream(streams::COMMANDS).await.expect("stream");
    let old = stream
        .create_consumer(pull::Config {
            durable_name: Some("plantd-edge-plant-1".into()),
            filter_subject: "plantd.plant-1.down.>".into(),
            ack_policy: AckPolicy::Explicit,
            max_ack_pending: 2,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut taken = old.fetch().max_messages(2).messages().await.expect("fetch");
    for _ in 0..2 {
        taken.next().await.expect("a message").expect("message");
    }

    // They come again at once (not after the acknowledgement wait), first.
    let mut d = start(&nats, 0).await;
    for want in ["1", "2", "3"] {
        assert_eq!(d.next().await.payload, want);
    }
    d.stop().await;
}
