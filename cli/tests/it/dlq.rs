//! `plantd dlq list|replay` against a real nats-server and a trigger
//! running in this process: a parked item is listed with its error, a
//! replay while the function is still broken fails and keeps it, a replay
//! once fixed hands it back and removes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use plantd_shared::streams;
use plantd_testkit::{Nats, eventually};
use plantd_trigger::{BatchOutcome, ConsumerSettings, Handler, Item, Trigger, dlq};

/// Fails `poison` while `broken`; counts the replays it handled.
#[derive(Default)]
struct Picky {
    broken: AtomicBool,
    replayed: std::sync::Mutex<Vec<(String, u64)>>,
}

impl Handler for Picky {
    async fn handle(&self, batch: &[Item]) -> BatchOutcome {
        let mut out = BatchOutcome::success();
        for (i, item) in batch.iter().enumerate() {
            if self.broken.load(Ordering::SeqCst) && item.payload.as_ref() == b"poison" {
                out.record_failure(i, "poison is not a log line");
            } else if item.replay.is_some() {
                self.replayed
                    .lock()
                    .expect("lock")
                    .push((item.stream.to_string(), item.sequence));
            }
        }
        out
    }
}

/// Runs `plantd dlq <args>` and returns (exit code, stdout, stderr).
async fn plantd(nats: &Nats, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_plantd"))
        .arg("dlq")
        .args(args)
        .args(["--nats-url", &nats.url()])
        .env_remove("PLANTD_NATS_URL")
        .output()
        .await
        .expect("run plantd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn dlq_list_and_replay_over_nats() {
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    for p in ["fine", "poison", "fine too"] {
        js.publish("plantd.site1.log.app", p.into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    let handler = Arc::new(Picky::default());
    handler.broken.store(true, Ordering::SeqCst);
    let mut trigger = Trigger::new(js.clone());
    let settings = ConsumerSettings {
        max_deliver: 2,
        backoff: vec![Duration::from_millis(20)],
        ..ConsumerSettings::default()
    };
    let durable = trigger
        .bind("picky", streams::LOGS, handler.clone(), settings)
        .await
        .expect("bind");
    let parked = eventually(
        Duration::from_secs(20),
        "the poison item parked",
        || async {
            dlq::list(&js, None, 10)
                .await
                .expect("list")
                .into_iter()
                .next()
        },
    )
    .await;

    let (code, out, err) = plantd(&nats, &["list", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed[0]["dlq_sequence"], parked.dlq_sequence);
    assert_eq!(listed[0]["consumer"], durable.as_str());
    assert_eq!(listed[0]["stream"], streams::LOGS);
    assert_eq!(listed[0]["sequence"], 2);
    assert_eq!(listed[0]["error"], "poison is not a log line");
    assert_eq!(listed[0]["deliveries"], 2);
    assert_eq!(listed[0]["payload"], "poison");
    let (code, out, _) = plantd(&nats, &["list"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("picky_PLANTD_LOGS") && out.contains("PLANTD_LOGS#2"),
        "{out}"
    );

    let seq = parked.dlq_sequence.to_string();
    let (code, _, err) = plantd(&nats, &["replay", &seq]).await;
    assert_eq!(code, 1, "still broken: {err}");
    assert!(
        err.contains("poison is not a log line") && err.contains("stays parked"),
        "{err}"
    );

    handler.broken.store(false, Ordering::SeqCst);
    let (code, out, err) = plantd(&nats, &["replay", &seq]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed"), "{out}");
    assert_eq!(
        *handler.replayed.lock().expect("lock"),
        vec![(streams::LOGS.to_owned(), 2)],
        "handed back once, with its original stream and sequence"
    );
    let (code, out, _) = plantd(&nats, &["list", "--json"]).await;
    assert_eq!((code, out.trim()), (0, "[]"));
    let (code, _, err) = plantd(&nats, &["replay", &seq]).await;
    assert_eq!(code, 5, "gone: {err}");

    trigger.shutdown().await;
    // With no trigger running, a replay is "unavailable" (exit 7).
    let mut item = parked.to_item();
    item.sequence = 3;
    let again = dlq::park(&js, &durable, "picky", &item, "again", 2)
        .await
        .expect("park");
    let (code, _, err) = plantd(&nats, &["replay", &again.to_string()]).await;
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("no running trigger"), "{err}");
}
