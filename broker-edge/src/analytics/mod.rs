//! Analytics at the edge: the rules placed `at = "edge"` for this site run
//! here, on the edge's own messages, so local aggregates and alarms go on
//! while the uplink is down.
//!
//! | module | what it does |
//! |---|---|
//! | [`rules`] | which rules run here: the owner's edge rules naming the site, followed in KV `plantd_analytics_rules` (and across a change of owner), cached in `<data-dir>/analytics-rules.json` |
//! | [`feed`] | which topics are readings, and the analytics' counters |
//! | [`replay`] | journal records as the engine reads them; the results the journal already holds |
//! | [`runner`] | the engine's task: readings read from the journal, the wall clock's ticks, rebuilt on rule changes, checkpoints (state + journal position) in `<data-dir>/analytics-state.json` |
//! | [`results`] | results on `$plantd/agg/<rule>/<key>` through the journal (to `PLANTD_AGGREGATES`) and to local subscribers; signals also on `$plantd/alert/<rule>/<key>` |
//!
//! Readings are the publications the journal hook journaled
//! ([`crate::journal_hook::JournalHook`]): the ones that go up, `$`-topics
//! excepted, read back from the journal in its order, so a SIGKILL loses
//! none and repeats no result (see [`runner`]). A rule runs in one place only ([`plantd_analytics::Placement`]),
//! so its results are computed and stored once: the cloud does not compute
//! an edge rule again. See `docs/broker.md`, "Analytics at the edge".

pub mod feed;
pub mod replay;
pub mod results;
pub mod rules;
pub mod runner;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use plantd_journal::Journal;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use feed::Stats;
pub use results::Results;
pub use rules::RULES_FILE;
pub use runner::{STATE_FILE, resume_from};

use crate::config::AnalyticsSettings;
use crate::inject::BrokerHandle;

/// Writes `bytes` to `path` so that a crash leaves the old content or the
/// new, never a mix: a temp file beside it, fsynced, renamed over, the
/// directory fsynced.
///
/// # Errors
/// The I/O error.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What the edge wires in before the broker exists: the counters for
/// `/metrics`. The engine reads its readings from the journal
/// ([`runner`], decision 0031).
pub struct Pending {
    /// For `/metrics`.
    pub stats: Arc<Stats>,
}

/// The analytics' counters, before the broker exists.
pub fn prepare() -> Pending {
    Pending {
        stats: Arc::new(Stats::default()),
    }
}

/// Where the edge runs, for [`Pending::start`].
pub struct Site<'a> {
    /// The site.
    pub site: &'a str,
    /// Its owner as [`crate::owner::watch`] follows it; `None` runs
    /// nothing (no rule can be told to be ours).
    pub owners: watch::Receiver<Option<String>>,
    /// `--data-dir`.
    pub data_dir: &'a Path,
}

impl Pending {
    /// Starts following the rules (over `nats`) and the engine's task;
    /// both stop with `stop` (the engine after its last checkpoint).
    pub fn start(
        self,
        settings: &AnalyticsSettings,
        at: &Site<'_>,
        nats: async_nats::Client,
        journal: Journal,
        broker: BrokerHandle,
        stop: CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let cache = at.data_dir.join(RULES_FILE);
        let org = at.owners.borrow().clone();
        let cached = match &org {
            Some(org) => rules::load_cache(&cache, at.site, org),
            None => {
                tracing::info!(site = %at.site, "site owner unknown: no analytics rules run at this edge until it has one");
                BTreeMap::new()
            }
        };
        let (tx, rx) = watch::channel(Arc::new(cached) as rules::Rules);
        let follow = tokio::spawn(rules::follow(
            async_nats::jetstream::new(nats),
            at.site.to_owned(),
            at.owners.clone(),
            cache,
            tx,
            stop.clone(),
        ));
        let runner = runner::Runner::new(
            runner::Settings {
                state_file: at.data_dir.join(STATE_FILE),
                tick: Duration::from_millis(settings.tick_ms.max(10)),
                checkpoint_every: Duration::from_secs(settings.checkpoint_secs.max(1)),
            },
            rx,
            Results {
                journal,
                broker,
                stats: self.stats.clone(),
            },
            self.stats,
        );
        let run = tokio::spawn(runner.run(stop));
        vec![follow, run]
    }
}
