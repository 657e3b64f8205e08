//! Waiting for something to become true — an event observed by polling
//! when the thing has no notification of its own (a process exiting, a
//! stream reaching a count, a log line appearing). One helper, so tests do
//! not grow their own sleep loops.

use std::future::Future;
use std::time::Duration;

/// How often [`eventually`] looks again.
pub const POLL: Duration = Duration::from_millis(50);

/// Calls `probe` until it returns `Some`, and returns that value.
///
/// # Panics
/// When `within` passes without a `Some`, naming `what` — the test states
/// what it waited for.
pub async fn eventually<T, Fut>(within: Duration, what: &str, probe: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Option<T>>,
{
    match at_most(within, probe).await {
        Some(v) => v,
        None => panic!("timed out after {within:?} waiting for {what}"),
    }
}

/// Calls `probe` until it returns `Some` or `within` passes; `None` then.
/// For a test that, having waited, checks what it got in detail (naming
/// what is missing) rather than only that the wait ran out.
pub async fn at_most<T, Fut>(within: Duration, mut probe: impl FnMut() -> Fut) -> Option<T>
where
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Processes on this machine: who runs what, read from `/proc`.
pub mod procs {
    /// The ids and command names of the live children of `parent`.
    pub fn children_of(parent: u32) -> Vec<(u32, String)> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| {
                let (comm, state, ppid) = stat(pid)?;
                (ppid == parent && state != 'Z').then_some((pid, comm))
            })
            .collect()
    }

    /// Whether process `pid` exists and is not a zombie.
    pub fn is_alive(pid: u32) -> bool {
        stat(pid).is_some_and(|(_, state, _)| state != 'Z' && state != 'X')
    }

    /// `(comm, state, ppid)` of a process, from `/proc/<pid>/stat`.
    fn stat(pid: u32) -> Option<(String, char, u32)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid ..." — comm may contain spaces and ')'.
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let comm = text.get(open + 1..close)?.to_owned();
        let mut rest = text.get(close + 1..)?.split_whitespace();
        let state = rest.next()?.chars().next()?;
        let ppid = rest.next()?.parse().ok()?;
        Some((comm, state, ppid))
    }
}

/// Items a durable JetStream consumer still has to finish: pending plus
/// delivered and not yet acknowledged; `None` while its stream or the
/// consumer cannot be read (nats-server restarting, consumer not created
/// yet).
pub async fn consumer_backlog(
    js: &async_nats::jetstream::Context,
    stream: &str,
    durable: &str,
) -> Option<u64> {
    let s = js.get_stream(stream).await.ok()?;
    let mut c: async_nats::jetstream::consumer::PullConsumer =
        s.get_consumer(durable).await.ok()?;
    let info = c.info().await.ok()?;
    Some(info.num_pending + u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX))
}

/// Waits until durable consumer `durable` on `stream` has acknowledged
/// everything ([`consumer_backlog`] is zero).
///
/// # Panics
/// When it has not within `within`.
pub async fn drained(
    js: &async_nats::jetstream::Context,
    stream: &str,
    durable: &str,
    within: Duration,
) {
    eventually(
        within,
        &format!("consumer {durable} to have acknowledged everything"),
        || async { (consumer_backlog(js, stream, durable).await == Some(0)).then_some(()) },
    )
    .await;
}
