//! [`SiteRule::restore`]: a rule's run rebuilt from its checkpoint records
//! (decision 0029).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use async_nats::jetstream;
use plantd_analytics::{Engine, KeyCheckpoint, Output, Rule, RuleMetrics, RuleState, State};

use super::{Segment, SiteRule};
use crate::error::Error;
use crate::store::{self, LAYOUT, Writes};

impl SiteRule {
    /// Restores `rule` on `site` from its checkpoint (empty when there is
    /// none, or when it was made by another definition of the rule or
    /// another checkpoint layout — then the old records are purged).
    /// Returns the run and the results of an idle advance that was
    /// intended but perhaps not published before a crash, when there was
    /// one (publish them, then [`SiteRule::commit`] with `force`).
    ///
    /// Segments of a commit that did not finish (a higher generation than
    /// the commit record's) are blanked first, so they can never be taken
    /// for committed later; committed segments holding no key's current
    /// state are purged. Each key takes its record from the newest
    /// committed segment that holds it. Results the committed watermark
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
            live: HashMap::new(),
            segments: BTreeMap::new(),
            blanked: HashMap::new(),
            last_active: Instant::now(),
            last_advance: None,
        };
        let head = match stored.head {
            Some((head, rev)) if head.rule == rule && head.layout == LAYOUT => Some((head, rev)),
            other => {
                if other.is_some()
                    || stored.head_rev != 0
                    || !stored.parts.is_empty()
                    || stored.foreign
                {
                    tracing::info!(site, rule = %rule.name, "analytics: no checkpoint of this rule's definition; it starts afresh");
                    store::purge(js, &prefix).await?;
                }
                None
            }
        };
        let Some((head, head_rev)) = head else {
            return Ok((fresh(Engine::new(vec![rule.clone()])?), None));
        };
        // Newest committed record of each key; segments read oldest first.
        let mut latest: HashMap<String, (u64, u32, KeyCheckpoint)> = HashMap::new();
        let mut segments: BTreeMap<u64, Segment> = BTreeMap::new();
        let mut blanks = Writes::default();
        let mut blanked_keys = Vec::new();
        for ((generation, _), entry) in stored.parts {
            let Some(record) = entry.record else { continue };
            if generation > head.generation {
                // Written by a commit that did not finish.
                blanks.push(entry.key.clone(), entry.rev, bytes::Bytes::new());
                blanked_keys.push(entry.key);
                continue;
            }
            let seg = segments.entry(generation).or_default();
            seg.parts += 1;
            seg.entries += record.keys.len();
            for k in record.keys {
                latest.insert(k.ckpt.key.clone(), (generation, k.ord, k.ckpt));
            }
        }
        let mut blanked = HashMap::new();
        if blanks.len() > 0 {
            tracing::info!(site, rule = %rule.name, parts = blanks.len(), "analytics: blanking the segment of an unfinished commit");
            let revs = blanks.send(js).await?;
            blanked = blanked_keys.into_iter().zip(revs).collect();
        }
        let mut live = HashMap::with_capacity(latest.len());
        let mut keys = Vec::with_capacity(latest.len());
        for (name, (generation, ord, ckpt)) in latest {
            if let Some(seg) = segments.get_mut(&generation) {
                seg.live += 1;
            }
            live.insert(name, generation);
            keys.push((ord, ckpt));
        }
        let dead: Vec<u64> = segments
            .iter()
            .filter(|(_, s)| s.live == 0)
            .map(|(g, _)| *g)
            .collect();
        for generation in dead {
            segments.remove(&generation);
            if let Err(e) = store::purge_segment(js, &prefix, generation, head_rev).await {
                tracing::warn!(site, rule = %rule.name, generation, error = %e, "analytics: cannot purge a superseded checkpoint segment; tried again at the next restore");
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
        run.live = live;
        run.segments = segments;
        run.blanked = blanked;
        let redo = head.advance_to.map(|to| run.engine.advance(to));
        Ok((run, redo))
    }
}
