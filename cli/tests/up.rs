//! `plantd up` as a user runs it: a child process that brings nats-server
//! up with plantd's streams and buckets, prints where it is, and stops
//! everything cleanly on SIGTERM.

use std::time::Duration;

use plantd_shared::process::ManagedProcess;
use plantd_shared::streams;
use tokio::process::Command;

fn plantd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_plantd"))
}

#[tokio::test]
async fn up_starts_nats_with_streams_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = plantd();
    cmd.arg("up")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--nats-port", "0"]);
    let mut url = None;
    let mut up = ManagedProcess::spawn("plantd up", cmd, Duration::from_secs(60), |line| {
        if line.trim_start().starts_with("nats ") {
            url = line
                .split_whitespace()
                .find(|w| w.starts_with("nats://"))
                .map(str::to_owned);
        }
        line.starts_with("plantd is up")
    })
    .await
    .expect("plantd up becomes ready");
    let url = url.expect("plantd up prints the NATS URL");

    let client = async_nats::connect(&url)
        .await
        .expect("connect to printed URL");
    let js = async_nats::jetstream::new(client.clone());
    for name in streams::STREAMS {
        let mut s = js
            .get_stream(name)
            .await
            .unwrap_or_else(|e| panic!("stream {name}: {e}"));
        let info = s.info().await.expect("stream info");
        assert_eq!(
            info.config.subjects,
            vec![streams::stream_subjects(name).expect("known")]
        );
    }
    for bucket in streams::BUCKETS {
        js.get_key_value(bucket)
            .await
            .unwrap_or_else(|e| panic!("bucket {bucket}: {e}"));
    }
    assert!(
        dir.path().join("nats").join("jetstream").is_dir(),
        "store under --data-dir"
    );
    drop(client);

    let status = up
        .terminate(Duration::from_secs(30))
        .await
        .expect("plantd up exits");
    assert!(status.success(), "clean exit on SIGTERM, got {status}");
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in URL");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "nats-server must be stopped with plantd up"
    );
    assert!(
        up.tail().iter().any(|l| l.contains("stopped")),
        "{:?}",
        up.tail()
    );
}

#[tokio::test]
async fn bad_config_is_one_clear_line_and_a_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plantd.toml");
    std::fs::write(&file, "[nats]\nport = \"many\"\n").expect("write config");
    let out = plantd()
        .arg("up")
        .arg("--config")
        .arg(&file)
        .output()
        .await
        .expect("run plantd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("config error"))
        .expect("a config error line");
    assert!(line.contains("nats.port"), "{line}");
    assert!(line.contains(&file.display().to_string()), "{line}");

    std::fs::write(&file, "[nats]\nprot = 4222\n").expect("write config");
    let out = plantd()
        .arg("up")
        .arg("--config")
        .arg(&file)
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("prot") && err.contains(&file.display().to_string()),
        "{err}"
    );

    let out = plantd()
        .args(["up", "--config", "/nonexistent/plantd.toml"])
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/plantd.toml"));
}
