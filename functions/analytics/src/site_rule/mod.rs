//! [`SiteRule`]: one rule running on one site's telemetry — its engine,
//! and where its checkpoint stands in the state bucket (generation, which
//! segment holds each key's committed state, revisions for the
//! conditional writes).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use async_nats::jetstream;
use plantd_analytics::{Engine, Rule, RuleMetrics};

use crate::error::Error;
use crate::store;

mod commit;
mod restore;

/// A committed segment, as far as the run keeps track of it.
#[derive(Debug, Default, Clone, Copy)]
struct Segment {
    /// Its parts.
    parts: u32,
    /// Key records it holds.
    entries: usize,
    /// Of those, the keys whose committed state it still holds.
    live: usize,
}

/// A fencing read on the way ([`SiteRule::start_fence`]).
#[derive(Debug)]
pub(crate) struct Fence(tokio::task::JoinHandle<Result<(), Error>>);

impl Fence {
    /// Waits for the read: `Ok` when the commit record is still the one
    /// the run wrote last.
    ///
    /// # Errors
    /// As [`SiteRule::fence`].
    pub async fn check(self) -> Result<(), Error> {
        self.0
            .await
            .map_err(|e| Error::nats("read a commit record", e))?
    }
}

/// The revision of the commit record `key` (0: none or deleted).
async fn head_revision(state: &jetstream::kv::Store, key: &str) -> Result<u64, Error> {
    Ok(state
        .entry(key)
        .await
        .map_err(|e| Error::nats("read a commit record", e))?
        .filter(|e| e.operation == jetstream::kv::Operation::Put)
        .map_or(0, |e| e.revision))
}

/// One rule on one site.
#[derive(Debug)]
pub(crate) struct SiteRule {
    /// The rule.
    pub rule: Rule,
    /// `<site>.<rule>`: the records' KV prefix.
    prefix: String,
    /// The engine (one rule: its watermark and keys are this site's).
    pub engine: Engine,
    /// The generation last committed.
    generation: u64,
    /// The commit record's revision.
    head_rev: u64,
    /// Highest stream sequence committed for any key.
    through: u64,
    /// The watermark's event time as committed.
    pub max_event: Option<i64>,
    /// The counters as committed.
    metrics: RuleMetrics,
    /// Per analytics key: the generation of the segment holding its
    /// committed state.
    live: HashMap<String, u64>,
    /// The committed segments by generation.
    segments: BTreeMap<u64, Segment>,
    /// Revisions of segment parts blanked at restore (an unfinished
    /// commit's), for the conditional write that reuses their key.
    blanked: HashMap<String, u64>,
    /// When an event was last applied (or the run was restored).
    pub last_active: Instant,
    /// When the idle clock last advanced it.
    pub last_advance: Option<Instant>,
}

impl SiteRule {
    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.rule.name
    }

    /// The engine's counters as last committed.
    pub fn committed_metrics(&self) -> RuleMetrics {
        self.metrics
    }

    /// The generation committed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether anything happened since the last commit.
    pub fn changed(&self) -> bool {
        self.engine.metrics(&self.rule.name).unwrap_or_default() != self.metrics
    }

    /// Checks that the commit record is still the one this run wrote
    /// last — no other host has committed meanwhile — before results
    /// computed from this run's state are published.
    ///
    /// # Errors
    /// [`Error::Conflict`] when it is not, [`Error::Nats`] when it cannot
    /// be read.
    pub async fn fence(&self, state: &jetstream::kv::Store) -> Result<(), Error> {
        let key = store::head_key(&self.prefix);
        if head_revision(state, &key).await? == self.head_rev {
            Ok(())
        } else {
            Err(Error::Conflict(key))
        }
    }

    /// [`SiteRule::fence`] in a task of its own, so the handler encodes
    /// the batch's results and segment while the read is on the way;
    /// [`Fence::check`] before anything is written.
    pub fn start_fence(&self, state: &jetstream::kv::Store) -> Fence {
        let state = state.clone();
        let key = store::head_key(&self.prefix);
        let expected = self.head_rev;
        Fence(tokio::spawn(async move {
            if head_revision(&state, &key).await? == expected {
                Ok(())
            } else {
                Err(Error::Conflict(key))
            }
        }))
    }
}
