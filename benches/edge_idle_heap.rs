//! Heap held per idle connection, counted by the allocator (issue 12:
//! ≤ 2 KB per idle TCP connection, ≤ 8 KB per idle TLS connection).
//!
//! RSS (what `edge_load --scenarios idle,storm` reports) says how much, not
//! where. This bench runs the broker in its own process under a counting
//! global allocator (the system allocator underneath, so `heaptrack` can
//! attribute every byte), opens `--n` idle MQTT 3.1.1 connections from a
//! child process (this binary again, `--client`: its memory is not counted),
//! and prints the broker's live heap growth per connection — after the
//! connections are up and again after `--idle` seconds (buffers given back).
//!
//! ```sh
//! cargo bench -p plantd-edge --bench edge_idle_heap -- [--n 2000] [--tls] [--idle 2]
//! heaptrack target/release/deps/edge_idle_heap-<hash> --n 2000   # where it goes
//! ```
//!
//! The figure excludes what the kernel keeps per socket and the
//! allocator's own overhead; RSS per connection is at least this much.

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use plantd_edge::{Broker, Config};

#[allow(dead_code)]
#[path = "edge_load/storm.rs"]
mod storm;

/// The system allocator, counting the bytes live and the allocations made.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only counters are
// added.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - layout.size() as isize, Relaxed);
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: forwarded with the caller's arguments.
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Options {
    n: usize,
    tls: bool,
    idle: u64,
}

fn options(args: &[String]) -> Options {
    let mut o = Options {
        n: 2000,
        tls: false,
        idle: 2,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--n" => o.n = it.next().and_then(|v| v.parse().ok()).unwrap_or(o.n),
            "--idle" => o.idle = it.next().and_then(|v| v.parse().ok()).unwrap_or(o.idle),
            "--tls" => o.tls = true,
            _ => {}
        }
    }
    o
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if args.first().map(String::as_str) == Some("--client") {
        runtime.block_on(client(&args[1..]));
        return;
    }
    let o = options(&args);
    runtime.block_on(broker(o));
}

/// The child: `--client <dir> <n> [tls]`. With `tls` it first writes a
/// server certificate into `dir` (trusting its CA) and says `pki`; then it
/// reads the broker's address from standard input, connects `n` clients,
/// says `ready <held>` and holds them until its standard input closes.
async fn client(args: &[String]) {
    let dir = std::path::Path::new(&args[0]);
    let n: usize = args[1].parse().expect("count");
    let tls =
        (args.get(2).map(String::as_str) == Some("tls")).then(|| storm::Pki::new(dir).connector);
    println!("pki");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("address");
    let addr: SocketAddr = line.trim().parse().expect("address");
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    // 200 at a time: a storm is not what is measured here.
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|&i| tokio::spawn(storm::one(addr, i, tls.clone())))
            .collect();
        for t in tasks {
            match t.await {
                Ok(Ok(c)) => held.push(c),
                _ => failed += 1,
            }
        }
    }
    if failed > 0 {
        eprintln!("edge_idle_heap: {failed} connections failed");
    }
    println!("ready {}", held.len());
    let _ = std::io::stdout().flush();
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
    drop(held);
}

fn live() -> isize {
    LIVE.load(Relaxed)
}

async fn broker(o: Options) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(std::env::current_exe().expect("this binary"))
        .arg("--client")
        .arg(dir.path())
        .arg(o.n.to_string())
        .arg(if o.tls { "tls" } else { "tcp" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("client process");
    let mut to_child = child.stdin.take().expect("stdin");
    let mut from_child = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    from_child.read_line(&mut line).expect("pki line");
    let mut config = Config {
        mqtt_listen: "127.0.0.1:0".into(),
        http_listen: "127.0.0.1:0".into(),
        allow_anonymous: true,
        ..Config::default()
    };
    config.limits.max_connections = o.n + 100;
    if o.tls {
        config.tls_listen = Some("127.0.0.1:0".into());
        config.tls_cert = Some(dir.path().join("server.pem"));
        config.tls_key = Some(dir.path().join("server.key"));
    }
    let broker = Broker::bind(config).await.expect("broker binds");
    let addr = if o.tls {
        broker.tls_addr().expect("TLS listener")
    } else {
        broker.mqtt_addr()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { broker.run(stop.cancelled_owned()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (before, allocs_before) = (live(), ALLOCATIONS.load(Relaxed));
    writeln!(to_child, "{addr}").expect("address to the client");
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        from_child.read_line(&mut line).expect("ready line");
        line
    })
    .await
    .expect("reader");
    let held: usize = ready
        .trim()
        .strip_prefix("ready ")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let per = |bytes: isize| bytes as f64 / held.max(1) as f64;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let up = live() - before;
    let allocs = ALLOCATIONS.load(Relaxed) - allocs_before;
    tokio::time::sleep(Duration::from_secs(o.idle)).await;
    let idle = live() - before;
    println!(
        "{} idle {} connections: {:.0} B live heap per connection when up, {:.0} B after {} s more ({:.1} allocations per connection made)",
        held,
        if o.tls { "TLS" } else { "TCP" },
        per(up),
        per(idle),
        o.idle,
        allocs as f64 / held.max(1) as f64,
    );
    drop(to_child);
    let _ = child.wait();
    stop.cancel();
    let _ = running.await;
}
