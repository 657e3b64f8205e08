//! A run's commit: [`SiteRule::prepare`] encodes the segment of the keys
//! changed since the last commit (and those carried forward out of mostly
//! superseded segments), [`SiteRule::stage`] writes it, [`SiteRule::finish`]
//! writes the commit record that makes it committed (decision 0029).

use std::collections::{BTreeMap, HashMap, HashSet};

use async_nats::jetstream;
use plantd_analytics::{KeyCheckpointRef, RuleMetrics};
use serde::Serialize;

use super::{Segment, SiteRule};
use crate::error::Error;
use crate::store::{self, Head, LAYOUT, PART_BYTES, Writes};

/// Superseded key records a (site, rule) may keep stored before commits
/// carry live keys forward out of mostly superseded segments, on top of
/// one per live key (storage stays below about twice the live keys).
const SLACK: usize = 4_096;

/// A commit's segment, written and not yet committed
/// ([`SiteRule::stage`]).
#[derive(Debug)]
pub(crate) struct Staged {
    /// The generation it was written at.
    generation: u64,
    /// Highest sequence applied.
    through: u64,
    /// The watermark's event time.
    max_event: Option<i64>,
    /// The counters.
    metrics: RuleMetrics,
    /// Keys written.
    keys: Vec<String>,
    /// Its parts.
    parts: u32,
    /// How many writes.
    writes: usize,
}

/// A commit's segment, encoded and not yet written
/// ([`SiteRule::prepare`]).
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The generation it is for.
    generation: u64,
    /// Highest sequence applied.
    through: u64,
    /// The watermark's event time.
    max_event: Option<i64>,
    /// The counters.
    metrics: RuleMetrics,
    /// Keys it holds.
    keys: Vec<String>,
    /// Its parts: (KV key, expected revision, JSON).
    parts: Vec<(String, u64, bytes::Bytes)>,
}

/// A key of a segment being written: [`store::SegmentKey`]'s JSON from
/// the engine's borrowed state.
#[derive(Serialize)]
struct SegmentKeyRef<'a> {
    /// The key's position in the engine's interning order.
    ord: u32,
    /// The engine's state of the key.
    ckpt: KeyCheckpointRef<'a>,
}

impl SiteRule {
    /// Writes the commit record with an idle-advance intent to `to`, before
    /// the advance's results are published.
    ///
    /// # Errors
    /// [`Error`] when the write fails or conflicts.
    pub async fn intend_advance(&mut self, js: &jetstream::Context, to: i64) -> Result<(), Error> {
        let head = Head {
            layout: LAYOUT,
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

    /// [`SiteRule::prepare`], [`SiteRule::stage`] then
    /// [`SiteRule::finish`]. Returns the number of writes.
    ///
    /// # Errors
    /// [`Error`] when a write fails or conflicts; the run must then be
    /// dropped and restored.
    pub async fn commit(&mut self, js: &jetstream::Context, force: bool) -> Result<usize, Error> {
        match self.prepare(force)? {
            Some(prepared) => {
                let staged = self.stage(js, prepared).await?;
                self.finish(js, staged).await
            }
            None => Ok(0),
        }
    }

    /// The first half of a commit, CPU only: encodes one segment at the
    /// next generation holding the keys an event changed since the last
    /// commit — and, when superseded records pile up, the live keys of
    /// mostly superseded segments, so those can be purged
    /// ([`carry_forward`]). `None` when nothing happened, unless `force`
    /// (after an advance).
    ///
    /// # Errors
    /// [`Error::Encode`] when a key cannot be encoded.
    pub fn prepare(&self, force: bool) -> Result<Option<Prepared>, Error> {
        let metrics = self.engine.metrics(&self.rule.name).unwrap_or_default();
        if !force && metrics == self.metrics {
            return Ok(None);
        }
        // Borrowed from the engine: every written key is encoded once,
        // straight from its state, never copied first.
        let Some(rs) = self.engine.checkpoint_rule(0) else {
            return Ok(None);
        };
        let generation = self.generation + 1;
        let changed: HashSet<&str> = rs
            .keys
            .iter()
            .filter(|k| k.last_seq().is_some_and(|s| s > self.through))
            .map(|k| k.key())
            .collect();
        let carried = carry_forward(&self.segments, &self.live, &changed, SLACK);
        let mut through = self.through;
        let mut names = Vec::with_capacity(changed.len() + carried.len());
        let mut records = Vec::with_capacity(names.capacity());
        for (ord, k) in rs.keys.iter().enumerate() {
            let is_changed = k.last_seq().is_some_and(|s| s > self.through);
            if !is_changed && !carried.contains(k.key()) {
                continue;
            }
            if is_changed {
                through = through.max(k.last_seq().unwrap_or(0));
            }
            names.push(k.key().to_owned());
            records.push(SegmentKeyRef {
                ord: u32::try_from(ord).unwrap_or(u32::MAX),
                ckpt: *k,
            });
        }
        let mut parts = Vec::new();
        for (part, chunk) in (0u32..).zip(split_parts(&records, generation)?) {
            let key = store::part_key(&self.prefix, generation, part);
            let rev = self.blanked.get(&key).copied().unwrap_or(0);
            parts.push((key, rev, chunk));
        }
        Ok(Some(Prepared {
            generation,
            through,
            max_event: rs.max_event,
            metrics: rs.metrics,
            keys: names,
            parts,
        }))
    }

    /// The second half of a commit: writes the [`Prepared`] segment. Until
    /// [`SiteRule::finish`] writes the commit record the segment is not
    /// committed (a restore blanks it), so this may run while the batch's
    /// results are still being stored — but only after the fence.
    ///
    /// # Errors
    /// As [`SiteRule::commit`].
    pub async fn stage(
        &mut self,
        js: &jetstream::Context,
        prepared: Prepared,
    ) -> Result<Staged, Error> {
        let Prepared {
            generation,
            through,
            max_event,
            metrics,
            keys,
            parts,
        } = prepared;
        let mut writes = Writes::default();
        let mut written = Vec::with_capacity(parts.len());
        for (key, rev, chunk) in parts {
            written.push(key.clone());
            writes.push(key, rev, chunk);
        }
        let count = writes.len();
        writes.send(js).await?;
        for key in &written {
            self.blanked.remove(key);
        }
        Ok(Staged {
            generation,
            through,
            max_event,
            metrics,
            keys,
            parts: u32::try_from(written.len()).unwrap_or(u32::MAX),
            writes: count,
        })
    }

    /// The second half of a commit, once the batch's results are stored:
    /// the commit record, which makes the staged segment committed; then
    /// the segments it superseded entirely are purged. Returns the number
    /// of writes of the whole commit.
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
            keys,
            parts,
            writes: count,
        } = staged;
        let head = Head {
            layout: LAYOUT,
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
        self.generation = generation;
        self.through = through;
        self.max_event = max_event;
        self.metrics = metrics;
        if parts > 0 {
            self.segments.insert(
                generation,
                Segment {
                    parts,
                    entries: keys.len(),
                    live: keys.len(),
                },
            );
        }
        let mut emptied = Vec::new();
        for name in keys {
            if let Some(old) = self.live.insert(name, generation)
                && let Some(s) = self.segments.get_mut(&old)
            {
                s.live = s.live.saturating_sub(1);
                if s.live == 0 {
                    emptied.push(old);
                }
            }
        }
        for old in &emptied {
            self.segments.remove(old);
        }
        if !emptied.is_empty() {
            // In the background: nothing waits for it, and it removes only
            // what was stored before this commit record (a generation
            // number used again after the rule's records were removed is
            // never touched by a late purge).
            let (js, prefix, before) = (js.clone(), self.prefix.clone(), self.head_rev);
            tokio::spawn(async move {
                for old in emptied {
                    if let Err(e) = store::purge_segment(&js, &prefix, old, before).await {
                        tracing::warn!(prefix, generation = old, error = %e, "analytics: cannot purge a superseded checkpoint segment; tried again at the next restore");
                    }
                }
            });
        }
        Ok(count + 1)
    }
}

/// The live keys to carry forward into the next segment besides the
/// `changed` ones: while more than one record per live key (plus `slack`)
/// would be stored once `changed` is committed, the oldest segments of
/// which at most half is still live are emptied (their live keys written
/// again), so they can be purged. Each carried key frees at least one
/// superseded record, so compaction costs no more than it saves, and the
/// records stored stay below about twice the live keys plus `slack`.
/// `segments` and `live` are the committed ones (key → generation of the
/// segment holding its committed state).
fn carry_forward(
    segments: &BTreeMap<u64, Segment>,
    live: &HashMap<String, u64>,
    changed: &HashSet<&str>,
    slack: usize,
) -> HashSet<String> {
    let mut segments = segments.clone();
    let mut fresh = 0usize;
    for k in changed {
        match live.get(*k) {
            Some(g) => {
                if let Some(s) = segments.get_mut(g) {
                    s.live = s.live.saturating_sub(1);
                }
            }
            None => fresh += 1,
        }
    }
    let live_keys = live.len() + fresh;
    let stored: usize = segments.values().map(|s| s.entries).sum::<usize>() + changed.len();
    let mut superseded = stored.saturating_sub(live_keys);
    let mut chosen = HashSet::new();
    for (generation, s) in &segments {
        if superseded <= live_keys + slack {
            break;
        }
        if s.live * 2 > s.entries {
            continue;
        }
        chosen.insert(*generation);
        superseded -= s.entries - s.live;
    }
    if chosen.is_empty() {
        return HashSet::new();
    }
    live.iter()
        .filter(|(k, g)| chosen.contains(*g) && !changed.contains(k.as_str()))
        .map(|(k, _)| k.clone())
        .collect()
}

/// `records` as the JSON of [`SegmentRecord`] parts of at most
/// [`PART_BYTES`] each (a single larger key makes a part of its own); no
/// part when there is no record. Each key is encoded once, straight into
/// its part's buffer, which is made at the part's full size up front (a
/// buffer grown by doubling takes fresh memory at each step — page faults
/// on every batch, docs/performance.md, "Analytics end to end").
fn split_parts<K: serde::Serialize>(
    records: &[K],
    generation: u64,
) -> Result<Vec<bytes::Bytes>, Error> {
    let open = format!("{{\"generation\":{generation},\"keys\":[");
    let close = "]}";
    let fresh = || {
        let mut body = Vec::with_capacity(PART_BYTES);
        body.extend_from_slice(open.as_bytes());
        body
    };
    let mut parts = Vec::new();
    let mut body: Vec<u8> = Vec::new();
    for r in records {
        if body.is_empty() {
            body = fresh();
        }
        let empty = body.len() == open.len();
        let start = body.len();
        if !empty {
            body.push(b',');
        }
        serde_json::to_writer(&mut body, r)?;
        if !empty && body.len() + close.len() > PART_BYTES {
            // This key does not fit: it opens the next part.
            let mut next = fresh();
            next.extend_from_slice(&body[start + 1..]);
            body.truncate(start);
            body.extend_from_slice(close.as_bytes());
            parts.push(std::mem::replace(&mut body, next).into());
        }
    }
    if !body.is_empty() {
        body.extend_from_slice(close.as_bytes());
        parts.push(body.into());
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SegmentKey, SegmentRecord};
    use plantd_analytics::{Engine, Rule};

    fn key(name: &str, seq: u64) -> SegmentKey {
        let mut engine = Engine::new(vec![
            Rule::from_sql(
                "r",
                r#"SELECT count(*) FROM "line/+/+" GROUP BY topic, TUMBLE(1s)"#,
            )
            .expect("rule"),
        ])
        .expect("engine");
        let mut out = Vec::new();
        engine.process_into(
            &plantd_analytics::Event {
                topic: name,
                payload: b"1",
                received_at: 1_000,
                stream_seq: seq,
            },
            &mut out,
        );
        let ckpt = engine.checkpoint().rules.remove(0).keys.remove(0);
        SegmentKey { ord: 0, ckpt }
    }

    /// Segments and the live map of `commits` (each the keys it wrote,
    /// generations 1, 2, …), as `finish` leaves them.
    fn committed(commits: &[Vec<String>]) -> (BTreeMap<u64, Segment>, HashMap<String, u64>) {
        let (mut segments, mut live) = (BTreeMap::new(), HashMap::new());
        for (i, keys) in commits.iter().enumerate() {
            let g = i as u64 + 1;
            segments.insert(
                g,
                Segment {
                    parts: 1,
                    entries: keys.len(),
                    live: keys.len(),
                },
            );
            for k in keys {
                if let Some(old) = live.insert(k.clone(), g)
                    && let Some(s) = segments.get_mut(&old)
                {
                    s.live -= 1;
                    if s.live == 0 {
                        segments.remove(&old);
                    }
                }
            }
        }
        (segments, live)
    }

    #[test]
    fn mostly_superseded_segments_are_carried_forward_and_storage_stays_bounded() {
        // 100 keys, first all at once, then one hot key per commit and one
        // of the others in turn: without compaction every segment keeps a
        // live key and the first keeps 99 of 100.
        let names: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        let mut commits = vec![names.clone()];
        let (mut segments, mut live) = committed(&commits);
        let mut most_stored = 0;
        for round in 0..1_000 {
            let other = names[1 + round % 99].clone();
            let changed_owned = vec![names[0].clone(), other];
            let changed: HashSet<&str> = changed_owned.iter().map(String::as_str).collect();
            let carried = carry_forward(&segments, &live, &changed, 10);
            assert!(carried.iter().all(|k| !changed.contains(k.as_str())));
            let mut written = changed_owned.clone();
            written.extend(carried);
            commits.push(written);
            (segments, live) = committed(&commits);
            let stored: usize = segments.values().map(|s| s.entries).sum();
            most_stored = most_stored.max(stored);
            assert_eq!(live.len(), 100, "every key stays live");
        }
        assert!(
            most_stored <= 2 * 100 + 10 + 2,
            "at most twice the live keys plus the slack stored: {most_stored}"
        );
        // Few superseded records: nothing is carried.
        let (segments, live) = committed(&[names.clone(), vec![names[0].clone()]]);
        let changed: HashSet<&str> = [names[1].as_str()].into();
        assert!(carry_forward(&segments, &live, &changed, 10).is_empty());
    }

    #[test]
    fn parts_stay_under_the_limit_and_read_back_as_every_key_once() {
        let records: Vec<SegmentKey> = (0..6_000)
            .map(|i| key(&format!("line/m{i}/temperature"), i))
            .collect();
        let parts = split_parts(&records, 7).expect("encode");
        assert!(parts.len() > 1, "{} bytes fit one part?", PART_BYTES);
        let mut names = Vec::new();
        for p in &parts {
            assert!(p.len() <= PART_BYTES, "a part of {} bytes", p.len());
            let r: SegmentRecord = serde_json::from_slice(p).expect("a part reads back");
            assert_eq!(r.generation, 7);
            names.extend(r.keys.into_iter().map(|k| k.ckpt.key));
        }
        let expected: Vec<String> = records.iter().map(|r| r.ckpt.key.clone()).collect();
        assert_eq!(names, expected);
        assert!(
            split_parts::<SegmentKey>(&[], 1)
                .expect("encode")
                .is_empty()
        );
    }
}
