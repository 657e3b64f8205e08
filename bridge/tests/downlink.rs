//! Commands from the cloud against a real nats-server: sent while the edge
//! is away, they arrive when it attaches, in order; expired ones do not;
//! acknowledged ones are not delivered twice.

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
/// `refuse` deliveries.
struct Broker {
    tx: mpsc::UnboundedSender<Command>,
    refuse: AtomicUsize,
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
    let (tx, rx) = mpsc::unbounded_channel();
    let broker = Arc::new(Broker {
        tx,
        refuse: AtomicUsize::new(refuse),
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
