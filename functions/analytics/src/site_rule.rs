//! [`SiteRule`]: one rule running on one site's telemetry — its engine,
//! and where its checkpoint stands in the state bucket (generation, slot
//! of each key, revisions for the conditional writes).

use std::collections::HashMap;
use std::time::Instant;

use async_nats::jetstream;
use base64::Engine as _;
use plantd_analytics::{Engine, Output, Rule, RuleMetrics, RuleState, State};

use crate::error::Error;
use crate::store::{self, Head, SlotRecord, Writes};

/// Where one key's checkpoint is.
#[derive(Debug, Default, Clone, Copy)]
struct KeySlots {
    /// The slot (0 = a, 1 = b) holding the committed state; `None` before
    /// the first commit that includes the key.
    committed: Option<usize>,
    /// Each slot's revision, for the conditional write (0: never written).
    rev: [u64; 2],
}

/// Key writes of a commit, not yet committed ([`SiteRule::stage`]).
#[derive(Debug)]
pub(crate) struct Staged {
    /// The generation they were written at.
    generation: u64,
    /// Highest sequence applied.
    through: u64,
    /// The watermark's event time.
    max_event: Option<i64>,
    /// The counters.
    metrics: RuleMetrics,
    /// Keys written and their slot.
    dirty: Vec<(String, usize)>,
    /// How many writes.
    writes: usize,
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
    /// Per analytics key: its slots.
    slots: HashMap<String, KeySlots>,
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

    /// Restores `rule` on `site` from its checkpoint (empty when there is
    /// none, or when it was made by another definition of the rule — then
    /// the old records are purged). Returns the run and the results of an
    /// idle advance that was intended but perhaps not published before a
    /// crash, when there was one (publish them, then [`SiteRule::commit`]
    /// with `force`).
    ///
    /// Writes of a commit that did not finish (slot records of a higher
    /// generation than the commit record's) are blanked first, so they can
    /// never be taken for committed later. Results the committed watermark
    /// had already closed are computed again and dropped (they were
    /// published before that commit): decision 0029.
    ///
    /// # Errors
    /// [`Error`] when the bucket cannot be read or written.
    pub async fn restore(
        js: &jetstream::Context,
        site: &str,
        rule: Rule,
    ) -> Result<(Self, Option<Vec<Output>>), Error> {
        let prefix = store::prefix(site, &rule.name);
        let stored = store::load(js, &prefix).await?;
        let fresh = |engine| Self {
            rule: rule.clone(),
            prefix: prefix.clone(),
            engine,
            generation: 0,
            head_rev: 0,
            through: 0,
            max_event: None,
            metrics: RuleMetrics::default(),
            slots: HashMap::new(),
            last_active: Instant::now(),
            last_advance: None,
        };
        let head = match stored.head {
            Some((head, rev)) if head.rule == rule => Some((head, rev)),
            other => {
                if other.is_some() || stored.head_rev != 0 || !stored.slots.is_empty() {
                    tracing::info!(site, rule = %rule.name, "analytics: no checkpoint of this rule's definition; it starts afresh");
                    store::purge(js, &prefix).await?;
                }
                None
            }
        };
        let Some((head, head_rev)) = head else {
            return Ok((fresh(Engine::new(vec![rule.clone()])?), None));
        };
        let mut keys = Vec::new();
        let mut slots = HashMap::new();
        let mut blanks = Writes::default();
        let mut blanked = Vec::new();
        for (encoded, entries) in stored.slots {
            let Some(name) = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&encoded)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            else {
                continue;
            };
            let mut ks = KeySlots::default();
            let mut best: Option<(u64, usize)> = None;
            for (i, entry) in entries.iter().enumerate() {
                let Some(entry) = entry else { continue };
                ks.rev[i] = entry.rev;
                match &entry.record {
                    // Committed: the newest of the two wins.
                    Some(r) if r.generation <= head.generation => {
                        best = best.max(Some((r.generation, i)));
                    }
                    // Written by a commit that did not finish.
                    Some(_) => {
                        blanks.push(
                            store::slot_key(&prefix, i, &encoded),
                            entry.rev,
                            bytes::Bytes::new(),
                        );
                        blanked.push((name.clone(), i));
                    }
                    None => {}
                }
            }
            if let Some((_, i)) = best {
                ks.committed = Some(i);
                if let Some(Some(entry)) = entries.into_iter().nth(i)
                    && let Some(record) = entry.record
                {
                    keys.push((record.ord, record.ckpt));
                }
            }
            slots.insert(name, ks);
        }
        if blanks.len() > 0 {
            tracing::info!(site, rule = %rule.name, keys = blanks.len(), "analytics: blanking the writes of an unfinished commit");
            let revs = blanks.send(js).await?;
            for ((name, i), rev) in blanked.into_iter().zip(revs) {
                if let Some(ks) = slots.get_mut(&name) {
                    ks.rev[i] = rev;
                }
            }
        }
        keys.sort_by_key(|(ord, _)| *ord);
        let state = |max_event, metrics, keys| State {
            version: State::VERSION,
            rules: vec![RuleState {
                rule: rule.clone(),
                max_event,
                metrics,
                keys,
            }],
        };
        // Restore just below the committed watermark, then advance to it:
        // what it had closed closes again (already published: dropped).
        let keys = keys.into_iter().map(|(_, k)| k).collect();
        let mut engine = Engine::restore(
            vec![rule.clone()],
            state(head.max_event.map(|m| m - 1), head.metrics, keys),
        )?;
        if let Some(m) = head.max_event {
            let _already_published = engine.advance(m);
            let mut settled = engine.checkpoint();
            for r in &mut settled.rules {
                r.metrics = head.metrics;
            }
            engine = Engine::restore(vec![rule.clone()], settled)?;
        }
        let mut run = fresh(engine);
        run.generation = head.generation;
        run.head_rev = head_rev;
        run.through = head.through;
        run.max_event = head.max_event;
        run.metrics = head.metrics;
        run.slots = slots;
        let redo = head.advance_to.map(|to| run.engine.advance(to));
        Ok((run, redo))
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
    pub async fn fence(&self, state: &async_nats::jetstream::kv::Store) -> Result<(), Error> {
        let key = store::head_key(&self.prefix);
        let rev = state
            .entry(key.as_str())
            .await
            .map_err(|e| Error::nats("read a commit record", e))?
            .filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
            .map_or(0, |e| e.revision);
        if rev == self.head_rev {
            Ok(())
        } else {
            Err(Error::Conflict(key))
        }
    }

    /// Writes the commit record with an idle-advance intent to `to`, before
    /// the advance's results are published.
    ///
    /// # Errors
    /// [`Error`] when the write fails or conflicts.
    pub async fn intend_advance(&mut self, js: &jetstream::Context, to: i64) -> Result<(), Error> {
        let head = Head {
            generation: self.generation,
            rule: self.rule.clone(),
            max_event: self.max_event,
            metrics: self.metrics,
            through: self.through,
            advance_to: Some(to),
        };
        let mut w = Writes::default();
        w.push(
            store::head_key(&self.prefix),
            self.head_rev,
            serde_json::to_vec(&head)?.into(),
        );
        let revs = w.send(js).await?;
        self.head_rev = revs.first().copied().unwrap_or(self.head_rev);
        Ok(())
    }

    /// [`SiteRule::stage`] then [`SiteRule::finish`]. Returns the number
    /// of writes.
    ///
    /// # Errors
    /// [`Error`] when a write fails or conflicts; the run must then be
    /// dropped and restored.
    pub async fn commit(&mut self, js: &jetstream::Context, force: bool) -> Result<usize, Error> {
        match self.stage(js, force).await? {
            Some(staged) => self.finish(js, staged).await,
            None => Ok(0),
        }
    }

    /// The first half of a commit: writes the keys an event changed since
    /// the last commit, each into its other slot, at the next generation.
    /// Until [`SiteRule::finish`] writes the commit record they are not
    /// committed (a restore blanks them), so this may run while the
    /// batch's results are still being stored. `None` when nothing
    /// happened, unless `force` (after an advance).
    ///
    /// # Errors
    /// As [`SiteRule::commit`].
    pub async fn stage(
        &mut self,
        js: &jetstream::Context,
        force: bool,
    ) -> Result<Option<Staged>, Error> {
        let metrics = self.engine.metrics(&self.rule.name).unwrap_or_default();
        if !force && metrics == self.metrics {
            return Ok(None);
        }
        let Some(rs) = self.engine.checkpoint().rules.into_iter().next() else {
            return Ok(None);
        };
        let generation = self.generation + 1;
        let mut writes = Writes::default();
        let mut dirty = Vec::new();
        let mut through = self.through;
        for (ord, k) in rs.keys.into_iter().enumerate() {
            let Some(seq) = k.last_seq.filter(|s| *s > self.through) else {
                continue;
            };
            through = through.max(seq);
            let ks = self.slots.entry(k.key.clone()).or_default();
            let target = ks.committed.map_or(0, |c| 1 - c);
            let name = k.key.clone();
            let record = SlotRecord {
                generation,
                ord: u32::try_from(ord).unwrap_or(u32::MAX),
                ckpt: k,
            };
            writes.push(
                store::slot_key(&self.prefix, target, &store::encode_key(&name)),
                ks.rev[target],
                serde_json::to_vec(&record)?.into(),
            );
            dirty.push((name, target));
        }
        let count = writes.len();
        let revs = writes.send(js).await?;
        for ((name, target), rev) in dirty.iter().zip(revs) {
            if let Some(ks) = self.slots.get_mut(name) {
                ks.rev[*target] = rev;
            }
        }
        Ok(Some(Staged {
            generation,
            through,
            max_event: rs.max_event,
            metrics: rs.metrics,
            dirty,
            writes: count,
        }))
    }

    /// The second half of a commit, once the batch's results are stored:
    /// the commit record, which makes the staged keys the committed ones.
    /// Returns the number of writes of the whole commit.
    ///
    /// # Errors
    /// As [`SiteRule::commit`].
    pub async fn finish(
        &mut self,
        js: &jetstream::Context,
        staged: Staged,
    ) -> Result<usize, Error> {
        let Staged {
            generation,
            through,
            max_event,
            metrics,
            dirty,
            writes: count,
        } = staged;
        let head = Head {
            generation,
            rule: self.rule.clone(),
            max_event,
            metrics,
            through,
            advance_to: None,
        };
        let mut w = Writes::default();
        w.push(
            store::head_key(&self.prefix),
            self.head_rev,
            serde_json::to_vec(&head)?.into(),
        );
        let revs = w.send(js).await?;
        self.head_rev = revs.first().copied().unwrap_or(self.head_rev);
        for (name, target) in dirty {
            if let Some(ks) = self.slots.get_mut(&name) {
                ks.committed = Some(target);
            }
        }
        self.generation = generation;
        self.through = through;
        self.max_event = max_event;
        self.metrics = metrics;
        Ok(count + 1)
    }
}
