//! End-to-end load generator for `plantd-edge`, Mosquitto and nats-server's
//! MQTT listener, in one run, over raw MQTT 3.1.1 on loopback TCP.
//!
//! ```sh
//! ulimit -n 200000   # for the idle-connection scenario
//! cargo bench -p plantd-edge --bench edge_load -- \
//!     [--brokers plantd,plantd-durable,plantd-system-alloc,mosquitto,nats,addr=IP:PORT] \
//!     [--scenarios qos0,qos0-flood,qos1,qos1-fanout,pingpong,paced,idle,storm,storm-tls] \
//!     [--seconds 5] [--payload 64] [--idle 10000] [--storm 9000] [--storm-idle 10]
//! ```
//!
//! `storm` and `storm-tls` open `--storm` connections at once (plain TCP, or
//! TLS with a certificate made for the run) and report the broker's
//! resident memory per connection one second after the last CONNACK and
//! after `--storm-idle` seconds of idling (`edge_load/storm.rs`).
//!
//! Every broker is started by this program on free ports with its data in a
//! temporary directory, measured, and stopped. `plantd-durable` is
//! `plantd-edge` with `--data-dir` (the session store) whose throughput
//! subscribers keep persistent sessions (clean session 0): every QoS 1
//! message for them is committed to the store before it is delivered and
//! acknowledged (`docs/decisions/0015-edge-session-store.md`). The latency scenarios
//! (`pingpong`, `paced`) run every broker at once and measure them in turns
//! of one-second slices, so a busy moment on the shared machine hits all of
//! them alike. Figures go to stdout as a Markdown table for
//! `docs/performance.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use plantd_edge::protocol::{self, PacketType, QoS, v4};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};

#[path = "edge_load/storm.rs"]
mod storm;

struct Opts {
    brokers: Vec<String>,
    scenarios: Vec<String>,
    seconds: u64,
    payload: usize,
    idle: usize,
    storm: usize,
    storm_idle: u64,
}

fn opts() -> Opts {
    let mut o = Opts {
        brokers: vec!["plantd".into(), "mosquitto".into(), "nats".into()],
        scenarios: ["qos0", "qos0-flood", "qos1", "pingpong", "paced", "idle"]
            .map(String::from)
            .to_vec(),
        seconds: 5,
        payload: 64,
        idle: 10_000,
        storm: 9_000,
        storm_idle: 10,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--brokers" => o.brokers = val.split(',').map(String::from).collect(),
            "--scenarios" => o.scenarios = val.split(',').map(String::from).collect(),
            "--seconds" => o.seconds = val.parse().expect("--seconds N"),
            "--payload" => o.payload = val.parse().expect("--payload BYTES"),
            "--idle" => o.idle = val.parse().expect("--idle N"),
            "--storm" => o.storm = val.parse().expect("--storm N"),
            "--storm-idle" => o.storm_idle = val.parse().expect("--storm-idle SECS"),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

// ------------------------------------------------------------------ brokers

struct Running {
    name: String,
    /// Throughput subscribers keep persistent sessions.
    persistent: bool,
    addr: SocketAddr,
    /// MQTT over TLS (plantd-edge and Mosquitto), with the clients' trust.
    tls: Option<(SocketAddr, tokio_rustls::TlsConnector)>,
    child: Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn start(name: &str) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let tls_port = free_port();
    let pki = storm::Pki::new(dir.path());
    if let Some(addr) = name.strip_prefix("addr=") {
        // A broker started by hand (for profiling): measure only.
        return Running {
            name: name.into(),
            persistent: false,
            addr: addr.parse().expect("--brokers addr=IP:PORT"),
            tls: None,
            child: Command::new("sleep")
                .arg("100000")
                .kill_on_drop(true)
                .spawn()
                .expect("placeholder"),
            _dir: dir,
        };
    }
    let mut cmd = match name {
        "plantd" | "plantd-durable" | "plantd-system-alloc" => {
            let bin = if name == "plantd-system-alloc" {
                system_alloc_bin()
            } else {
                PathBuf::from(env!("CARGO_BIN_EXE_plantd-edge"))
            };
            let mut c = Command::new(bin);
            c.args(["--mqtt-listen", &format!("127.0.0.1:{port}")])
                .args(["--http-listen", "127.0.0.1:0"])
                .arg("--allow-anonymous")
                .args(["--tls-listen", &format!("127.0.0.1:{tls_port}")])
                .arg("--tls-cert")
                .arg(&pki.cert)
                .arg("--tls-key")
                .arg(&pki.key)
                .env("RUST_LOG", "warn");
            if name == "plantd-durable" {
                c.arg("--data-dir").arg(dir.path().join("data"));
            }
            c
        }
        "mosquitto" => {
            let conf = dir.path().join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\nmax_queued_messages 1000\nlistener {tls_port} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
                    pki.cert.display(),
                    pki.key.display()
                ),
            )
            .expect("write mosquitto.conf");
            let mut c = Command::new("/usr/sbin/mosquitto");
            c.arg("-c").arg(conf);
            c
        }
        "nats" => {
            let conf = dir.path().join("nats.conf");
            std::fs::write(
                &conf,
                format!(
                    "server_name: bench\nlisten: 127.0.0.1:{}\njetstream {{ store_dir: \"{}\" }}\nmqtt {{ listen: 127.0.0.1:{port} }}\n",
                    free_port(),
                    dir.path().join("js").display()
                ),
            )
            .expect("write nats.conf");
            let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/nats-server");
            assert!(bin.exists(), "{} missing: run scripts/setup", bin.display());
            let mut c = Command::new(bin);
            c.arg("-c").arg(conf);
            c
        }
        other => panic!("unknown broker {other}"),
    };
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e} (run scripts/setup)"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    // Ready when a CONNECT is answered.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(c) = Conn::connect(addr, "probe", None, true).await {
            drop(c);
            break;
        }
        assert!(Instant::now() < deadline, "{name} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tls = (name != "nats").then(|| {
        let a: SocketAddr = format!("127.0.0.1:{tls_port}").parse().expect("addr");
        (a, pki.connector.clone())
    });
    Running {
        name: name.into(),
        persistent: name == "plantd-durable",
        addr,
        tls,
        child,
        _dir: dir,
    }
}

/// The newest `edge_system_alloc` bench binary beside this one
/// (`cargo bench -p plantd-edge --bench edge_system_alloc --no-run` builds
/// it): `plantd-edge` under the system allocator.
fn system_alloc_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let dir = exe.parent().expect("deps directory");
    std::fs::read_dir(dir)
        .expect("deps directory")
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("edge_system_alloc-") && !name.contains('.')
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .expect("build it first: cargo bench -p plantd-edge --bench edge_system_alloc --no-run")
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------- raw client

struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: BytesMut,
}

impl Conn {
    async fn connect(
        addr: SocketAddr,
        id: &str,
        bind: Option<std::net::IpAddr>,
        clean_session: bool,
    ) -> std::io::Result<Conn> {
        let sock = TcpSocket::new_v4()?;
        if let Some(ip) = bind {
            sock.bind(SocketAddr::new(ip, 0))?;
        }
        let s: TcpStream = sock.connect(addr).await?;
        s.set_nodelay(true)?;
        let (rd, wr) = s.into_split();
        let mut c = Conn {
            rd,
            wr,
            buf: BytesMut::with_capacity(64 * 1024),
        };
        let mut out = BytesMut::new();
        v4::Packet::Connect(v4::Connect {
            level: 4,
            client_id: id.into(),
            clean_session,
            keep_alive: 0,
            will: None,
            username: None,
            password: None,
        })
        .write(&mut out);
        c.wr.write_all(&out).await?;
        match c.next().await? {
            (PacketType::ConnAck, _) => Ok(c),
            _ => Err(std::io::Error::other("no CONNACK")),
        }
    }

    /// Next frame's type and packet id (for acks and QoS 1 publishes).
    async fn next(&mut self) -> std::io::Result<(PacketType, u16)> {
        loop {
            if let Some(h) =
                protocol::check(&self.buf, usize::MAX).map_err(std::io::Error::other)?
                && self.buf.len() >= h.frame_len()
            {
                let mut frame = self.buf.split_to(h.frame_len());
                frame.advance(h.header_len);
                let id = match h.kind {
                    PacketType::PubAck => frame.get_u16(),
                    PacketType::Publish if (h.flags >> 1) & 3 > 0 => {
                        let tl = usize::from(frame.get_u16());
                        frame.advance(tl);
                        frame.get_u16()
                    }
                    _ => 0,
                };
                return Ok((h.kind, id));
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Next PUBLISH with its payload.
    async fn next_publish(&mut self) -> std::io::Result<(u16, bytes::Bytes)> {
        loop {
            if let Some(h) =
                protocol::check(&self.buf, usize::MAX).map_err(std::io::Error::other)?
                && self.buf.len() >= h.frame_len()
            {
                let mut frame = self.buf.split_to(h.frame_len());
                frame.advance(h.header_len);
                if h.kind != PacketType::Publish {
                    continue;
                }
                let tl = usize::from(frame.get_u16());
                frame.advance(tl);
                let id = if (h.flags >> 1) & 3 > 0 {
                    frame.get_u16()
                } else {
                    0
                };
                return Ok((id, frame.freeze()));
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        v4::Packet::Subscribe(v4::Subscribe {
            pkid: 1,
            filters: vec![(filter.into(), qos)],
        })
        .write(&mut out);
        self.wr.write_all(&out).await?;
        while self.next().await?.0 != PacketType::SubAck {}
        Ok(())
    }
}

fn publish(out: &mut BytesMut, topic: &str, qos: QoS, pkid: u16, payload: &[u8]) {
    v4::Packet::Publish(v4::Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: bytes::Bytes::copy_from_slice(payload),
    })
    .write(out);
}

// ---------------------------------------------------------------- scenarios

/// The subscribers of each publisher in [`throughput`].
#[derive(Clone, Copy)]
struct Subscribers {
    /// How many, all on the publisher's topic (the QoS 0 window counts the
    /// deliveries of all of them: use 1 with a window).
    per_publisher: usize,
    /// Persistent sessions (clean session 0).
    persistent: bool,
}

/// Pairs of publisher → own subscriber; returns delivered messages/s. With
/// `window`, a QoS 0 publisher keeps at most that many messages between
/// itself and its subscriber (the sustainable, loss-free rate); without, it
/// floods and the broker's overload policy decides what is delivered.
async fn throughput(
    addr: SocketAddr,
    pairs: usize,
    qos: QoS,
    payload: usize,
    secs: u64,
    window: Option<u64>,
    subs: Subscribers,
) -> f64 {
    let Subscribers {
        per_publisher: fanout,
        persistent,
    } = subs;
    let delivered = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..pairs {
        let topic = format!("bench/{i}");
        let got = Arc::new(AtomicU64::new(0));
        let wake = Arc::new(tokio::sync::Notify::new());
        // `fanout` subscribers per publisher (the QoS 0 window counts the
        // deliveries of all of them: use 1 with a window).
        for j in 0..fanout.max(1) {
            let mut sub = Conn::connect(addr, &format!("sub-{i}-{j}"), None, !persistent)
                .await
                .expect("sub connects");
            sub.subscribe(&topic, qos).await.expect("subscribe");
            let (d, c, s) = (delivered.clone(), counting.clone(), stop.clone());
            let (got_sub, wake_sub) = (got.clone(), wake.clone());
            tasks.push(tokio::spawn(async move {
                // Count whole frames per read; acknowledge QoS 1 in one write.
                let mut acks = BytesMut::new();
                while !s.load(Relaxed) {
                    match tokio::time::timeout(
                        Duration::from_millis(200),
                        sub.rd.read_buf(&mut sub.buf),
                    )
                    .await
                    {
                        Err(_) => continue,
                        Ok(Ok(0) | Err(_)) => return,
                        Ok(Ok(_)) => {}
                    }
                    let mut n = 0;
                    while let Ok(Some(h)) = protocol::check(&sub.buf, usize::MAX) {
                        if sub.buf.len() < h.frame_len() {
                            break;
                        }
                        if h.kind == PacketType::Publish {
                            n += 1;
                            if qos == QoS::AtLeastOnce {
                                let at = h.header_len;
                                let tl =
                                    usize::from(u16::from_be_bytes([sub.buf[at], sub.buf[at + 1]]));
                                let id = u16::from_be_bytes([
                                    sub.buf[at + 2 + tl],
                                    sub.buf[at + 3 + tl],
                                ]);
                                v4::Packet::PubAck(id).write(&mut acks);
                            }
                        }
                        sub.buf.advance(h.frame_len());
                    }
                    if c.load(Relaxed) {
                        d.fetch_add(n, Relaxed);
                    }
                    got_sub.fetch_add(n, Relaxed);
                    wake_sub.notify_one();
                    if !acks.is_empty() {
                        if sub.wr.write_all(&acks).await.is_err() {
                            return;
                        }
                        acks.clear();
                    }
                    if sub.buf.capacity() - sub.buf.len() < 16 * 1024 {
                        sub.buf.reserve(64 * 1024);
                    }
                }
            }));
        }
        let mut publ = Conn::connect(addr, &format!("pub-{i}"), None, true)
            .await
            .expect("pub connects");
        let s = stop.clone();
        let body = vec![b'x'; payload];
        tasks.push(tokio::spawn(async move {
            let mut out = BytesMut::new();
            if qos == QoS::AtMostOnce {
                for _ in 0..256 {
                    publish(&mut out, &topic, qos, 0, &body);
                }
                let mut sent = 0u64;
                while !s.load(Relaxed) {
                    if let Some(w) = window {
                        while sent.saturating_sub(got.load(Relaxed)) + 256 > w && !s.load(Relaxed) {
                            tokio::select! {
                                () = wake.notified() => {}
                                () = tokio::time::sleep(Duration::from_millis(10)) => {}
                            }
                        }
                    }
                    if publ.wr.write_all(&out).await.is_err() {
                        return;
                    }
                    sent += 256;
                }
            } else {
                // Window of 100 unacknowledged publishes.
                let mut inflight = 0u32;
                let mut next_id = 1u16;
                while !s.load(Relaxed) {
                    out.clear();
                    while inflight < 100 {
                        publish(&mut out, &topic, qos, next_id, &body);
                        next_id = next_id.checked_add(1).unwrap_or(1);
                        inflight += 1;
                    }
                    if publ.wr.write_all(&out).await.is_err() {
                        return;
                    }
                    match tokio::time::timeout(Duration::from_millis(200), publ.next()).await {
                        Ok(Ok((PacketType::PubAck, _))) => inflight -= 1,
                        Ok(Ok(_)) | Err(_) => {}
                        Ok(Err(_)) => return,
                    }
                    while let Some(Ok((PacketType::PubAck, _))) = publ.next().now_or_never_ready() {
                        inflight -= 1;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // warm-up
    counting.store(true, Relaxed);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    counting.store(false, Relaxed);
    let n = delivered.load(Relaxed);
    let rate = n as f64 / t.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    for t in tasks {
        t.abort();
    }
    rate
}

trait NowOrNever {
    type Out;
    fn now_or_never_ready(self) -> Option<Self::Out>;
}

impl<F: std::future::Future> NowOrNever for F {
    type Out = F::Output;
    fn now_or_never_ready(self) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(self);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}

/// A subscriber and a publisher on `lat/t`, kept across latency slices.
struct LatPair {
    sub: Conn,
    publ: Conn,
}

async fn lat_pair(addr: SocketAddr) -> LatPair {
    let mut sub = Conn::connect(addr, "lat-sub", None, true)
        .await
        .expect("connect");
    sub.subscribe("lat/t", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    let publ = Conn::connect(addr, "lat-pub", None, true)
        .await
        .expect("connect");
    LatPair { sub, publ }
}

/// One slice of `dur` with one message in flight (`rate` None), or paced
/// at `rate` msg/s; latencies in µs go to `h`. A paced slice waits for
/// every message it sent (up to 2 s), so none is left for the next slice.
async fn latency_slice(
    p: &mut LatPair,
    payload: usize,
    dur: Duration,
    rate: Option<u64>,
    h: &mut Histogram<u64>,
) {
    let origin = Instant::now();
    let end = origin + dur;
    let mut body = vec![b'x'; payload.max(8)];
    let mut out = BytesMut::new();
    let LatPair { sub, publ } = p;
    match rate {
        None => {
            while Instant::now() < end {
                let sent = Instant::now();
                out.clear();
                publish(&mut out, "lat/t", QoS::AtMostOnce, 0, &body);
                publ.wr.write_all(&out).await.expect("write");
                sub.next_publish().await.expect("receive");
                let _ = h.record(sent.elapsed().as_micros() as u64);
            }
        }
        Some(rate) => {
            let interval = Duration::from_nanos(1_000_000_000 / rate);
            let sent = std::cell::Cell::new(0u64);
            let done = std::cell::Cell::new(false);
            let writer_done = tokio::sync::Notify::new();
            let writer = async {
                let mut next = Instant::now();
                while next < end {
                    // Send everything that is due (tokio's timer has 1 ms
                    // resolution, so 10 messages go per millisecond), each
                    // stamped with the time it is written.
                    out.clear();
                    let stamp = origin.elapsed().as_nanos() as u64;
                    while next <= Instant::now() {
                        body[..8].copy_from_slice(&stamp.to_be_bytes());
                        publish(&mut out, "lat/t", QoS::AtMostOnce, 0, &body);
                        sent.set(sent.get() + 1);
                        next += interval;
                    }
                    if !out.is_empty() {
                        publ.wr.write_all(&out).await.expect("write");
                    }
                    tokio::time::sleep_until(next.into()).await;
                }
                done.set(true);
                writer_done.notify_one();
            };
            let reader = async {
                let mut got = 0u64;
                while !(done.get() && got >= sent.get()) {
                    // Until the writer is done, its end interrupts the
                    // wait; after, wait up to 2 s for what is on its way.
                    let r = tokio::select! {
                        r = tokio::time::timeout(Duration::from_secs(2), sub.next_publish()) => Some(r),
                        () = writer_done.notified(), if !done.get() => None,
                    };
                    match r {
                        None => {}
                        Some(Ok(Ok((_, p)))) => {
                            let stamp = u64::from_be_bytes(p[..8].try_into().expect("stamp"));
                            let now = origin.elapsed().as_nanos() as u64;
                            let _ = h.record(now.saturating_sub(stamp) / 1000);
                            got += 1;
                        }
                        Some(Ok(Err(_)) | Err(_)) => break,
                    }
                }
            };
            tokio::join!(writer, reader);
        }
    }
}

/// Latency of every broker in `names`, measured in turns of one-second
/// slices (`secs` slices each), so that all brokers see the same machine
/// load — the development machine is shared, and consecutive runs of ten
/// seconds each can differ more than the brokers do. The client runs on a
/// thread of its own with a single-threaded runtime: a multi-threaded one
/// hands the socket's wake-up between its workers, which adds its own
/// cross-thread wake-ups to every round trip and hides the brokers'.
async fn latency_interleaved(
    names: &[String],
    payload: usize,
    secs: u64,
    rate: Option<u64>,
) -> Vec<(String, Histogram<u64>)> {
    let mut running = Vec::new();
    for name in names {
        running.push(start(name).await);
    }
    let addrs: Vec<SocketAddr> = running.iter().map(|b| b.addr).collect();
    let client = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        rt.block_on(async move {
            let mut pairs = Vec::new();
            for addr in addrs {
                let h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                pairs.push((lat_pair(addr).await, h));
            }
            // Warm-up, not recorded.
            for (pair, _) in &mut pairs {
                let mut scratch =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                latency_slice(
                    pair,
                    payload,
                    Duration::from_millis(200),
                    rate,
                    &mut scratch,
                )
                .await;
            }
            for _ in 0..secs {
                for (pair, h) in &mut pairs {
                    latency_slice(pair, payload, Duration::from_secs(1), rate, h).await;
                }
            }
            pairs.into_iter().map(|(_, h)| h).collect::<Vec<_>>()
        })
    });
    let hists = tokio::task::spawn_blocking(move || client.join().expect("latency client"))
        .await
        .expect("join");
    running
        .into_iter()
        .zip(hists)
        .map(|(b, h)| (b.name.clone(), h))
        .collect()
}

/// Opens `n` idle connections from addresses spread over 127.0.0.0/8;
/// returns the broker's resident memory per connection in bytes.
async fn idle(b: &Running, n: usize) -> (usize, f64) {
    let pid = b.child.id().expect("pid");
    let before = rss_kb(pid);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let ip = std::net::Ipv4Addr::new(
            127,
            1 + (i / 60_000) as u8,
            ((i / 250) % 240) as u8,
            (i % 250 + 1) as u8,
        );
        match Conn::connect(b.addr, &format!("idle-{i}"), Some(ip.into()), true).await {
            Ok(c) => conns.push(c),
            Err(e) => {
                eprintln!("{}: connection {i} failed: {e}", b.name);
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kb(pid);
    let held = conns.len();
    let per = (after.saturating_sub(before) * 1024) as f64 / held.max(1) as f64;
    drop(conns);
    (held, per)
}

#[tokio::main]
async fn main() {
    let o = opts();
    println!("| broker | scenario | result |\n|---|---|---|");
    for name in &o.brokers {
        for sc in &o.scenarios {
            if matches!(sc.as_str(), "pingpong" | "paced") {
                continue; // below, all brokers in turns
            }
            let b = start(name).await;
            let result = match sc.as_str() {
                "qos0" => format!(
                    "{:.0} msg/s delivered (2 pairs, {} B, ≤ 1,000 in flight per pair)",
                    throughput(
                        b.addr,
                        2,
                        QoS::AtMostOnce,
                        o.payload,
                        o.seconds,
                        Some(1000),
                        Subscribers {
                            per_publisher: 1,
                            persistent: b.persistent,
                        },
                    )
                    .await,
                    o.payload
                ),
                "qos0-flood" => format!(
                    "{:.0} msg/s delivered (2 pairs, {} B, publishers unthrottled)",
                    throughput(
                        b.addr,
                        2,
                        QoS::AtMostOnce,
                        o.payload,
                        o.seconds,
                        None,
                        Subscribers {
                            per_publisher: 1,
                            persistent: b.persistent,
                        },
                    )
                    .await,
                    o.payload
                ),
                "qos1" => format!(
                    "{:.0} msg/s delivered (4 pairs, {} B)",
                    throughput(
                        b.addr,
                        4,
                        QoS::AtLeastOnce,
                        o.payload,
                        o.seconds,
                        None,
                        Subscribers {
                            per_publisher: 1,
                            persistent: b.persistent,
                        },
                    )
                    .await,
                    o.payload
                ),
                "qos1-fanout" => format!(
                    "{:.0} msg/s delivered (1 publisher → 8 subscribers, {} B)",
                    throughput(
                        b.addr,
                        1,
                        QoS::AtLeastOnce,
                        o.payload,
                        o.seconds,
                        None,
                        Subscribers {
                            per_publisher: 8,
                            persistent: b.persistent,
                        },
                    )
                    .await,
                    o.payload
                ),
                "idle" => {
                    let (held, per) = idle(&b, o.idle).await;
                    format!("{held} idle connections held, {per:.0} B RSS each")
                }
                "storm" | "storm-tls" => {
                    let (addr, tls) = match (sc.as_str(), &b.tls) {
                        ("storm", _) => (b.addr, None),
                        (_, Some((a, c))) => (*a, Some(c.clone())),
                        (_, None) => {
                            println!("| {} | {} | no TLS listener |", b.name, sc);
                            continue;
                        }
                    };
                    let pid = b.child.id().expect("pid");
                    let idle = Duration::from_secs(o.storm_idle);
                    let s = storm::storm(addr, o.storm, tls, idle, || rss_kb(pid)).await;
                    format!(
                        "{} connected at once in {:.1} s: {:.0} B RSS each after the storm, {:.0} B after {} s idle",
                        s.held,
                        s.took.as_secs_f64(),
                        s.after_storm,
                        s.after_idle,
                        o.storm_idle
                    )
                }
                other => panic!("unknown scenario {other}"),
            };
            println!("| {} | {} | {} |", b.name, sc, result);
            drop(b);
        }
    }
    for sc in &o.scenarios {
        let (rate, what) = match sc.as_str() {
            "pingpong" => (None, "round trips"),
            "paced" => (Some(10_000), "msgs"),
            _ => continue,
        };
        for (name, h) in latency_interleaved(&o.brokers, o.payload, o.seconds, rate).await {
            println!(
                "| {name} | {sc} | {}p50 {} µs, p99 {} µs, p99.9 {} µs ({} {what}, {} × 1 s slices in turn with the other brokers) |",
                if rate.is_some() { "10k msg/s: " } else { "" },
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.len(),
                o.seconds,
            );
        }
    }
}
