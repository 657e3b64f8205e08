//! The whole edge's store-and-forward path, against a real nats-server with
//! file storage, in one run so the figures compare (issue 5's speed lines):
//!
//! 1. **raw**: async-nats publishing to JetStream itself (64-byte payloads,
//!    message ids, a window of 4096 unacknowledged publishes) — the ceiling;
//! 2. **end to end**: MQTT QoS 1 publishers → `plantd-edge` (journal,
//!    `--fsync batch`) → uplink → JetStream, timed until JetStream has
//!    acknowledged every message;
//! 3. **PUBACK, uplink down**: QoS 1 publish-to-PUBACK through the edge
//!    binary while its NATS server is unreachable (the journal alone);
//! 4. **backlog drain**: a backlog built during an outage drains after
//!    nats-server returns, while publishers keep sending.
//!
//! ```sh
//! scripts/setup
//! cargo bench -p plantd-edge --bench edge_uplink -- [--n 400000] \
//!     [--backlog 1000000] [--publishers 4] [--topics 64] [--live-rate 20000] \
//!     [--e2e-only]
//! ```

#[path = "../broker-edge/tests/it/edge_proc/mod.rs"]
mod edge_proc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use edge_proc::{Edge, metric, start_edge};
use plantd_edge::protocol::{self, PacketType, QoS, v4};
use plantd_testkit::{Nats, load};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

struct Opts {
    n: u64,
    backlog: u64,
    publishers: u64,
    topics: u64,
    live_rate: u64,
    /// Stop after the end-to-end phase (for profiling it alone).
    e2e_only: bool,
}

fn opts() -> Opts {
    let mut o = Opts {
        n: 400_000,
        backlog: 1_000_000,
        publishers: 4,
        topics: 64,
        live_rate: 20_000,
        e2e_only: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = || {
            args.get(i + 1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{} needs a number", args[i]))
        };
        match args[i].as_str() {
            "--n" => o.n = val(),
            "--backlog" => o.backlog = val(),
            "--publishers" => o.publishers = val(),
            "--topics" => o.topics = val(),
            "--live-rate" => o.live_rate = val(),
            "--e2e-only" => {
                o.e2e_only = true;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

fn rate(count: u64, d: Duration) -> f64 {
    count as f64 / d.as_secs_f64()
}

async fn fresh_streams(nats: &Nats) {
    load::fresh_streams(&nats.jetstream().await).await;
}

/// async-nats publishing to JetStream directly: the reference rate.
async fn raw_jetstream(nats: &Nats, n: u64) -> f64 {
    fresh_streams(nats).await;
    let client = nats.client().await;
    load::jetstream_publish_rate(client, n, "plantd.raw.up", 64, 4096, |i| {
        load::msg_id_only("raw", i)
    })
    .await
}

/// A QoS 1 MQTT 3.1.1 publisher with up to `window` unacknowledged
/// publishes: a writer task and a PUBACK reader sharing a semaphore.
struct Publisher {
    acked: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Publisher {
    /// Publishes `count` messages (or until `stop`) to `topics` topics,
    /// at most `per_sec` per second if given.
    async fn start(
        addr: SocketAddr,
        id: &str,
        count: u64,
        topics: u64,
        per_sec: Option<u64>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let mut out = BytesMut::new();
        v4::Packet::Connect(v4::Connect {
            level: 4,
            client_id: id.into(),
            clean_session: true,
            keep_alive: 0,
            will: None,
            username: None,
            password: None,
        })
        .write(&mut out);
        s.write_all(&out).await.expect("CONNECT");
        let (mut rd, mut wr) = s.into_split();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let window = 1000;
        let permits = Arc::new(Semaphore::new(window));
        let acked = Arc::new(AtomicU64::new(0));
        // The first frame is the CONNACK; then PUBACKs.
        let reader = {
            let (permits, acked) = (permits.clone(), acked.clone());
            tokio::spawn(async move {
                let mut connack = false;
                loop {
                    match rd.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let mut n = 0;
                    while let Ok(Some(h)) = protocol::check(&buf, usize::MAX) {
                        if buf.len() < h.frame_len() {
                            break;
                        }
                        match h.kind {
                            PacketType::ConnAck => connack = true,
                            PacketType::PubAck => n += 1,
                            _ => {}
                        }
                        buf.advance(h.frame_len());
                    }
                    debug_assert!(connack);
                    acked.fetch_add(n as u64, Relaxed);
                    permits.add_permits(n);
                }
            })
        };
        let topics: Vec<String> = (0..topics).map(|t| format!("line/{t}/temp")).collect();
        let writer = tokio::spawn(async move {
            let body = Bytes::from(vec![b'x'; 64]);
            let mut next_id = 1u16;
            let started = Instant::now();
            let mut sent = 0u64;
            let mut out = BytesMut::with_capacity(64 * 1024);
            while sent < count && !stop.load(Relaxed) {
                let want = (count - sent).min(256) as u32;
                let Ok(p) = permits.acquire_many(want).await else {
                    return;
                };
                p.forget();
                out.clear();
                for _ in 0..want {
                    v4::Packet::Publish(v4::Publish {
                        dup: false,
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        topic: topics[(sent % topics.len() as u64) as usize]
                            .as_str()
                            .into(),
                        pkid: next_id,
                        payload: body.clone(),
                    })
                    .write(&mut out);
                    next_id = next_id.checked_add(1).unwrap_or(1);
                    sent += 1;
                }
                if wr.write_all(&out).await.is_err() {
                    return;
                }
                if let Some(r) = per_sec {
                    let due = Duration::from_secs_f64(sent as f64 / r as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            // Keep the write half open until the publisher is dropped:
            // dropping it would half-close the socket, and the broker ends
            // a session whose client has gone before it sends the last
            // PUBACKs.
            std::future::pending::<()>().await;
            drop(wr);
        });
        Publisher {
            acked,
            tasks: vec![reader, writer],
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// `publishers` QoS 1 publishers sending `n` messages in all; returns when
/// every PUBACK arrived, with the PUBACK rate.
async fn publish_all(addr: SocketAddr, n: u64, publishers: u64, topics: u64, tag: &str) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let per = n / publishers;
    let start = Instant::now();
    let mut pubs = Vec::new();
    for p in 0..publishers {
        pubs.push(
            Publisher::start(addr, &format!("{tag}-{p}"), per, topics, None, stop.clone()).await,
        );
    }
    loop {
        let acked: u64 = pubs.iter().map(|p| p.acked.load(Relaxed)).sum();
        if acked >= per * publishers {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    rate(per * publishers, start.elapsed())
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

/// The pid of this process's child called `name`.
fn child_named(name: &str) -> Option<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let comm = stat.split_once('(')?.1.rsplit_once(')')?.0;
        let ppid: u32 = stat
            .rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (comm == name && ppid == me).then_some(pid)
    })
}

/// CPU used by the load generator, plantd-edge and nats-server between
/// two points, in cores (CPU seconds per second).
struct CpuWatch {
    pids: Vec<(&'static str, u32)>,
    start: Vec<f64>,
    at: Instant,
}

impl CpuWatch {
    fn start(pids: Vec<(&'static str, u32)>) -> Self {
        let start = pids.iter().map(|(_, p)| cpu_secs(*p)).collect();
        Self {
            pids,
            start,
            at: Instant::now(),
        }
    }

    fn report(&self) -> String {
        let secs = self.at.elapsed().as_secs_f64();
        self.pids
            .iter()
            .zip(&self.start)
            .map(|((name, pid), s)| format!("{name} {:.2}", (cpu_secs(*pid) - s) / secs))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

async fn gauge(edge: &Edge, name: &str) -> u64 {
    metric(edge, name).await.unwrap_or(0.0) as u64
}

/// Waits until the edge's uplink has no unacknowledged journal records.
async fn uplink_caught_up(edge: &Edge) {
    loop {
        if metric(edge, "plantd_journal_records_unacked").await == Some(0.0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() {
    let o = opts();
    let mut nats = Nats::start().await;
    let me = std::process::id();
    let nats_pid = child_named("nats-server").unwrap_or(me);
    let cpu = CpuWatch::start(vec![("bench", me), ("nats-server", nats_pid)]);
    let raw = raw_jetstream(&nats, o.n).await;
    println!(
        "raw async-nats JetStream publish (64 B, msg ids, window 4096): {raw:>10.0} msg/s (cores: {})",
        cpu.report()
    );

    // End to end: MQTT in, JetStream acknowledged.
    fresh_streams(&nats).await;
    // Scratch data goes under the workspace's target/ (the project's disk,
    // never a crate folder that git would see).
    let scratch = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-scratch");
    std::fs::create_dir_all(&scratch).expect("target/bench-scratch");
    let data = tempfile::tempdir_in(&scratch).expect("tmp on the project's disk");
    let edge = start_edge(
        &nats,
        data.path(),
        &["--fsync", "batch", "--journal-max-bytes", "4000000000"],
    )
    .await;
    let edge_pid = edge.proc.pid().unwrap_or(me);
    let cpu = CpuWatch::start(vec![
        ("load generator", me),
        ("plantd-edge", edge_pid),
        ("nats-server", nats_pid),
    ]);
    let start = Instant::now();
    publish_all(edge.mqtt, o.n, o.publishers, o.topics, "e2e").await;
    uplink_caught_up(&edge).await;
    let e2e = rate(o.n, start.elapsed());
    println!(
        "end to end, {} QoS 1 publishers, {} topics, fsync batch, until JetStream acked: {e2e:>10.0} msg/s ({:.0}% of raw; cores: {})",
        o.publishers,
        o.topics,
        100.0 * e2e / raw,
        cpu.report()
    );

    if o.e2e_only {
        return;
    }

    // The journal alone: NATS unreachable.
    eprintln!("stopping nats-server");
    nats.stop().await;
    eprintln!("publishing with the uplink down");
    let puback = publish_all(edge.mqtt, o.n, o.publishers, o.topics, "down").await;
    let fsyncs = gauge(&edge, "plantd_journal_fsyncs_total").await;
    println!(
        "QoS 1 publish to PUBACK, uplink down, fsync batch: {puback:>10.0} msg/s ({fsyncs} fsyncs in all so far)"
    );

    // Backlog: the rest of `backlog` while still down, then drain while
    // live publishers keep sending.
    eprintln!("building the backlog");
    let more = o.backlog.saturating_sub(o.n);
    publish_all(edge.mqtt, more, o.publishers, o.topics, "backlog").await;
    let backlog = gauge(&edge, "plantd_journal_records_unacked").await;
    let stop = Arc::new(AtomicBool::new(false));
    let live = Publisher::start(
        edge.mqtt,
        "live",
        u64::MAX,
        o.topics,
        Some(o.live_rate),
        stop.clone(),
    )
    .await;
    let acked_at_start = gauge(&edge, "plantd_uplink_acked_total").await;
    let back = Instant::now();
    eprintln!("starting nats-server again");
    nats.start_again().await;
    // Draining starts with the uplink's first acknowledgement (after its
    // reconnect backoff, reported separately).
    while gauge(&edge, "plantd_uplink_acked_total").await == acked_at_start {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let start = Instant::now();
    println!(
        "uplink's first acknowledgement {:.2} s after nats-server was started again",
        back.elapsed().as_secs_f64()
    );
    uplink_caught_up(&edge).await;
    let elapsed = start.elapsed();
    let acked = gauge(&edge, "plantd_uplink_acked_total").await - acked_at_start;
    stop.store(true, Relaxed);
    let live_sent = live.acked.load(Relaxed);
    let drain = rate(acked, elapsed);
    println!(
        "backlog of {backlog} drained with {live_sent} live messages arriving at {}/s: {drain:>10.0} msg/s ({:.0}% of raw), {:.1} s",
        o.live_rate,
        100.0 * drain / raw,
        elapsed.as_secs_f64()
    );
    let bytes = gauge(&edge, "plantd_journal_bytes_written_total").await;
    let payload = gauge(&edge, "plantd_journal_payload_bytes_total").await;
    if payload > 0 {
        println!(
            "journal write amplification: {:.2} bytes written per payload byte",
            bytes as f64 / payload as f64
        );
    }
}
