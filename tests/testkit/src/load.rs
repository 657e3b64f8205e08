//! Reference load for benchmarks: async-nats publishing to JetStream
//! directly, the ceiling that plantd's own paths are compared with.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;

/// Publishes `n` messages of `payload` bytes to JetStream over `client` —
/// subjects `<prefix>.t<i % 16>`, headers from `headers(i)` (which should
/// carry a `Nats-Msg-Id`), at most `window` publishes awaiting their
/// acknowledgement — and returns the acknowledged rate in messages per
/// second. A stream must capture `<prefix>.>`.
///
/// # Panics
/// When a publish fails or is not acknowledged: a benchmark has nothing
/// to report then.
pub async fn jetstream_publish_rate(
    client: async_nats::Client,
    n: u64,
    prefix: &str,
    payload: usize,
    window: usize,
    headers: impl Fn(u64) -> HeaderMap,
) -> f64 {
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .max_ack_inflight(window.max(1) * 2)
        .build(client);
    let body = bytes::Bytes::from(vec![b'x'; payload]);
    let start = Instant::now();
    let mut pending = VecDeque::with_capacity(window);
    for i in 0..n {
        let ack = js
            .publish_with_headers(format!("{prefix}.t{}", i % 16), headers(i), body.clone())
            .await
            .expect("publish");
        pending.push_back(ack);
        if pending.len() >= window {
            pending.pop_front().expect("front").await.expect("ack");
        }
    }
    for ack in pending {
        ack.await.expect("ack");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Headers with only a message id `<tag>:<i>`: the reference publish.
pub fn msg_id_only(tag: &str, i: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", format!("{tag}:{i}").as_str());
    h
}

/// Deletes plantd's streams and buckets and creates them again empty, so a
/// benchmark phase starts from nothing.
///
/// # Panics
/// When they cannot be created.
pub async fn fresh_streams(js: &async_nats::jetstream::Context) {
    use plantd_shared::streams;
    for s in streams::STREAMS {
        let _ = js.delete_stream(s).await;
    }
    streams::ensure(js, &streams::Settings::default())
        .await
        .expect("streams");
}

/// How [`raw_consume_with`] acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawAck {
    /// Every message (`AckPolicy::Explicit`): the reference of the
    /// functions' speed lines.
    Each,
    /// The last message of every batch (`AckPolicy::All`), which
    /// acknowledges the ones before it: what a consumer working in stream
    /// order can do (decision 0064).
    PerBatch,
}

/// The raw consume rate plantd's event functions are measured against: a
/// durable pull consumer `durable` on `stream` (explicit acks, at most
/// `max_ack_pending` outstanding) fetching batches of `batch` and
/// acknowledging every message, until `n` were acknowledged. Returns the
/// time it took.
///
/// # Panics
/// When the consumer cannot be made or a message cannot be read or
/// acknowledged: a benchmark has nothing to report then.
pub async fn raw_consume(
    js: &async_nats::jetstream::Context,
    stream: &str,
    durable: &str,
    max_ack_pending: i64,
    batch: usize,
    n: u64,
) -> Duration {
    raw_consume_with(js, stream, durable, max_ack_pending, batch, n, RawAck::Each).await
}

/// [`raw_consume`] acknowledging as `ack` says.
///
/// # Panics
/// As [`raw_consume`].
pub async fn raw_consume_with(
    js: &async_nats::jetstream::Context,
    stream: &str,
    durable: &str,
    max_ack_pending: i64,
    batch: usize,
    n: u64,
    ack: RawAck,
) -> Duration {
    use async_nats::jetstream::consumer;
    use futures::StreamExt as _;

    let c = js
        .get_stream(stream)
        .await
        .expect("stream")
        .create_consumer(consumer::pull::Config {
            durable_name: Some(durable.to_owned()),
            ack_policy: match ack {
                RawAck::Each => consumer::AckPolicy::Explicit,
                RawAck::PerBatch => consumer::AckPolicy::All,
            },
            max_ack_pending,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let start = Instant::now();
    let mut messages = c
        .stream()
        .max_messages_per_batch(batch)
        .messages()
        .await
        .expect("messages");
    let mut got = 0;
    let every = match ack {
        RawAck::Each => 1,
        RawAck::PerBatch => batch.max(1) as u64,
    };
    while got < n {
        let m = messages.next().await.expect("open").expect("message");
        got += 1;
        if got % every == 0 || got == n {
            m.ack().await.expect("ack");
        }
    }
    start.elapsed()
}

/// CPU seconds and minor page faults of a process so far, from
/// `/proc/<pid>/stat` (Linux; zeros elsewhere).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessUsage {
    /// User plus system CPU seconds.
    pub cpu: f64,
    /// Minor page faults.
    pub faults: u64,
}

impl ProcessUsage {
    /// The usage of process `pid` (`"self"` for this one).
    pub fn of(pid: &str) -> Self {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return Self::default();
        };
        // After the command's closing parenthesis: state is field 3.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return Self::default();
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Self {
            faults: num(10),
            cpu: (num(14) + num(15)) as f64 / 100.0,
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            cpu: self.cpu - before.cpu,
            faults: self.faults.saturating_sub(before.faults),
        }
    }
}

/// This process's and its children's (the testkit's nats-server) usage at
/// one moment: take one before a phase, [`Usage::print`] after it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// This process.
    pub this: ProcessUsage,
    /// Its child processes together.
    pub children: ProcessUsage,
}

impl Usage {
    /// The usage so far.
    pub fn now() -> Self {
        let mut children = ProcessUsage::default();
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for t in tasks.flatten() {
                let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                for pid in list.split_whitespace() {
                    let u = ProcessUsage::of(pid);
                    children.cpu += u.cpu;
                    children.faults += u.faults;
                }
            }
        }
        Self {
            this: ProcessUsage::of("self"),
            children,
        }
    }

    /// Prints the usage since `self` of phase `what` that handled `n`
    /// items called `unit`: CPU and page faults of this process, CPU of
    /// nats-server.
    pub fn print(self, what: &str, n: u64, unit: &str) {
        let after = Self::now();
        let (us, server) = (
            after.this.since(self.this),
            after.children.since(self.children),
        );
        println!(
            "    {what}: this process {:.2} s CPU ({:.2} µs/{unit}, {} page faults), nats-server {:.2} s CPU",
            us.cpu,
            us.cpu * 1e6 / n.max(1) as f64,
            us.faults,
            server.cpu
        );
    }
}
