//! The engine: a [`plantd_trigger::Handler`] on `PLANTD_LOGS`,
//! `PLANTD_TELEMETRY` and `PLANTD_AGGREGATES` (analytics results with a
//! signal, [`crate::analytics`]) that turns items into observations of alert
//! instances, and a clock ([`Engine::tick`]) for `for` durations, windows
//! sliding out, absence, no-data and repeats.
//!
//! Every change of an instance is stored in `plantd_alert_state` with
//! compare-and-set together with the records it makes (the outbox), then
//! the records are published and the outbox cleared
//! ([`Stores::flush`]). Items are applied once per instance by stream
//! sequence ([`crate::instance::Applied`]), so a redelivered batch changes
//! nothing. All work on instances is serialised in one lock; the current
//! states are cached with their revisions, and a lost compare-and-set (an
//! ack from the proxy, another engine) reloads and re-applies.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt as _;
use plantd_shared::sites::{BOOTSTRAP_ORG, PLATFORM_SITE, SiteCache, Sites};
use plantd_shared::streams;
use plantd_shared::subject::subject_to_topic;
use plantd_trigger::{BatchOutcome, Handler, Item};
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::analytics;
use crate::clock::Clock;
use crate::instance::{InstanceState, Observation, evidence, group_key, instance_id, key_fits};
use crate::logs::{self, LogMatcher};
use crate::record::Evidence;
use crate::rule::{Condition, GroupBy, Input, Rule};
use crate::silence::Silence;
use crate::store::{StoreError, Stores};

/// A rule ready to evaluate.
#[derive(Debug)]
struct Compiled {
    org: String,
    rule: Rule,
    matcher: Option<LogMatcher>,
}

/// One instance's share of a batch.
struct Work {
    rule: Arc<Compiled>,
    site: String,
    key: String,
    group: BTreeMap<String, String>,
    items: Vec<usize>,
    observations: Vec<(u64, Observation, Option<Evidence>)>,
}

/// The alert engine (cheap to clone).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    stores: Stores,
    clock: Arc<dyn Clock>,
    sites: SiteCache,
    rules: RwLock<HashMap<String, Vec<Arc<Compiled>>>>,
    silences: RwLock<HashMap<String, Vec<Silence>>>,
    instances: Mutex<HashMap<String, (InstanceState, u64)>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Engine")
    }
}

impl Engine {
    /// An engine over `js`'s alert buckets reading the time from `clock`:
    /// loads the rules, silences and every instance, and publishes what
    /// a previous run left in instance outboxes.
    ///
    /// # Errors
    /// [`StoreError`] when the buckets or the site registry cannot be read.
    pub async fn new(js: &jetstream::Context, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let stores = Stores::open(js).await?;
        let sites = Sites::open(js)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let engine = Self {
            inner: Arc::new(Inner {
                stores,
                clock,
                sites: SiteCache::new(sites, Duration::from_secs(10)),
                rules: RwLock::default(),
                silences: RwLock::default(),
                instances: Mutex::default(),
            }),
        };
        engine.reload().await?;
        let mut cache = engine.inner.instances.lock().await;
        for (state, rev) in engine.inner.stores.instances().await? {
            let id = state.id.clone();
            let (state, rev) = if state.outbox.is_empty() {
                (state, rev)
            } else {
                tracing::info!(instance = %id, records = state.outbox.len(), "publishing records left in an outbox");
                engine.inner.stores.flush(state, rev).await?
            };
            cache.insert(id, (state, rev));
        }
        drop(cache);
        Ok(engine)
    }

    /// The stores underneath.
    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    /// Reads every rule and silence again (the watchers call this on each
    /// change; tests call it to be sure a change is seen).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn reload(&self) -> Result<(), StoreError> {
        let mut rules: HashMap<String, Vec<Arc<Compiled>>> = HashMap::new();
        let mut orgs: Vec<String> = Vec::new();
        for (org, rule) in self.inner.stores.all_rules().await? {
            if let Err(e) = rule.validate() {
                tracing::warn!(%org, rule = %rule.id, error = %e, "skipping an invalid alert rule");
                continue;
            }
            let matcher = match &rule.condition {
                Condition::LogCount { filter, .. } | Condition::LogAbsence { filter, .. } => {
                    LogMatcher::parse(filter).ok()
                }
                _ => None,
            };
            if !orgs.contains(&org) {
                orgs.push(org.clone());
            }
            rules
                .entry(org.clone())
                .or_default()
                .push(Arc::new(Compiled { org, rule, matcher }));
        }
        let mut silences = HashMap::new();
        for org in orgs {
            silences.insert(org.clone(), self.inner.stores.silences(&org).await?);
        }
        if let Ok(mut r) = self.inner.rules.write() {
            *r = rules;
        }
        if let Ok(mut s) = self.inner.silences.write() {
            *s = silences;
        }
        Ok(())
    }

    fn rules_of(&self, org: &str) -> Vec<Arc<Compiled>> {
        self.inner
            .rules
            .read()
            .map(|r| r.get(org).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    fn silences_of(&self, org: &str) -> Vec<Silence> {
        self.inner
            .silences
            .read()
            .map(|s| s.get(org).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// The instances the engine holds now (for tests and diagnostics).
    pub async fn instances(&self) -> Vec<InstanceState> {
        let cache = self.inner.instances.lock().await;
        let mut out: Vec<InstanceState> = cache.values().map(|(s, _)| s.clone()).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// What `item` tells each instance it concerns.
    async fn observe(&self, item: &Item, work: &mut Vec<Work>) -> Result<(), String> {
        let input = if &*item.stream == streams::LOGS {
            Input::Logs
        } else if &*item.stream == streams::AGGREGATES {
            Input::Aggregates
        } else {
            Input::Telemetry
        };
        let logs = input == Input::Logs;
        let result = if input == Input::Aggregates {
            match analytics::read(item) {
                Some(r) => Some(r),
                None => return Ok(()),
            }
        } else {
            None
        };
        let (site, topic, record) = if let Some(r) = &result {
            (r.site.clone(), r.output.key.clone(), None)
        } else if logs {
            let record = logs::record(item);
            (
                record.site.to_string(),
                record.source.to_string(),
                Some(record),
            )
        } else {
            match subject_to_topic(&item.subject) {
                Ok(p) => (
                    p.site.as_str().to_owned(),
                    p.topic.as_str().to_owned(),
                    None,
                ),
                Err(e) => {
                    tracing::debug!(subject = %item.subject, error = %e, "not a telemetry subject");
                    return Ok(());
                }
            }
        };
        // plantd's own components' log lines (`_plantd`) belong to the
        // bootstrap organisation, as in `/v1/logs`.
        let org = if site == PLATFORM_SITE {
            BOOTSTRAP_ORG.to_owned()
        } else {
            match self
                .inner
                .sites
                .get(&site)
                .await
                .map_err(|e| format!("site registry: {e}"))?
            {
                Some(owner) => owner.org,
                None => return Ok(()),
            }
        };
        for rule in self.rules_of(&org) {
            if rule.rule.condition.input() != input || !rule.rule.covers(&site) {
                continue;
            }
            let text = || String::from_utf8_lossy(&item.payload).into_owned();
            let (obs, ev) = match (&rule.rule.condition, &record) {
                (
                    Condition::Threshold {
                        topic: f,
                        field,
                        op,
                        value,
                    },
                    None,
                ) => {
                    if !plantd_shared::topic::matches(f, &topic) {
                        continue;
                    }
                    let reading = read_number(&item.payload, field.as_deref());
                    let holds = reading.is_some_and(|v| op.holds(v, *value));
                    let ev = evidence(
                        &item.stream,
                        item.sequence,
                        item.published,
                        &topic,
                        reading,
                        Some(text()),
                    );
                    (
                        Observation::Reading {
                            value: reading,
                            holds,
                        },
                        Some(ev),
                    )
                }
                (Condition::Absence { topic: f, .. }, None) => {
                    if !plantd_shared::topic::matches(f, &topic) {
                        continue;
                    }
                    (Observation::Seen { matched: true }, None)
                }
                (Condition::LogCount { .. } | Condition::LogAbsence { .. }, Some(record)) => {
                    let matched = rule.matcher.as_ref().is_some_and(|m| m.matches(record));
                    let ev = matched.then(|| {
                        evidence(
                            &item.stream,
                            item.sequence,
                            record.time,
                            &topic,
                            None,
                            Some(record.message.clone()),
                        )
                    });
                    (Observation::Seen { matched }, ev)
                }
                (Condition::Analytics { rule: name }, None) => match &result {
                    Some(r) if r.output.rule == *name => {
                        let (obs, ev) = analytics::observe(item, r);
                        (obs, Some(ev))
                    }
                    _ => continue,
                },
                _ => continue,
            };
            let mut group = BTreeMap::new();
            if input == Input::Aggregates {
                group.insert(analytics::KEY_LABEL.to_owned(), topic.clone());
            }
            for g in &rule.rule.group_by {
                match g {
                    GroupBy::Site => {}
                    GroupBy::Topic | GroupBy::Source => {
                        group.insert(g.label().to_owned(), topic.clone());
                    }
                }
            }
            let key = group_key(&group);
            let index = work.len();
            let slot = work
                .iter()
                .position(|w| Arc::ptr_eq(&w.rule, &rule) && w.site == site && w.key == key)
                .unwrap_or_else(|| {
                    work.push(Work {
                        rule: rule.clone(),
                        site: site.clone(),
                        key,
                        group,
                        items: Vec::new(),
                        observations: Vec::new(),
                    });
                    index
                });
            work[slot].observations.push((item.sequence, obs, ev));
        }
        Ok(())
    }

    /// Brings one instance up to date — its new observations applied, its
    /// rule evaluated at `now` — stores it (CAS) and publishes its
    /// records. On a lost CAS, reloads and does it again.
    async fn settle(
        &self,
        cache: &mut HashMap<String, (InstanceState, u64)>,
        rule: &Compiled,
        fresh: Option<(&str, &str, &BTreeMap<String, String>)>,
        id: &str,
        observations: &[(u64, Observation, Option<Evidence>)],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let stores = &self.inner.stores;
        let mut silences = self.silences_of(&rule.org);
        // The cached silences follow the bucket through a watch, a moment
        // behind it. Whether a record is silenced decides whether anyone is
        // told, so when a cached silence covers this instance it is checked
        // against the bucket itself once: a silence ended just before the
        // reading came in must not swallow the resolution that follows.
        let mut checked = false;
        for _ in 0..10 {
            let (mut state, rev) = match cache.get(id) {
                Some((s, r)) => (s.clone(), Some(*r)),
                None => match stores.instance(id).await? {
                    Some((s, r)) => (s, Some(r)),
                    None => match fresh {
                        Some((site, key, group)) => (
                            InstanceState::new(&rule.org, &rule.rule, site, key, group, now),
                            None,
                        ),
                        None => return Ok(()),
                    },
                },
            };
            if !checked && silences.iter().any(|s| s.silences(&state.labels, now)) {
                checked = true;
                silences = stores.silences(&rule.org).await?;
            }
            // Each item a step of its own (a fire and its clear in one
            // batch are a firing and a resolution, not nothing).
            let changed = rev.is_none() | state.apply(&rule.rule, observations, &silences, now);
            let rev = if changed {
                match stores.cas(&state, rev).await {
                    Ok(r) => r,
                    Err(StoreError::Conflict) => {
                        cache.remove(id);
                        continue;
                    }
                    Err(e) => {
                        cache.remove(id);
                        return Err(e);
                    }
                }
            } else {
                rev.unwrap_or_default()
            };
            let (state, rev) = match stores.flush(state, rev).await {
                Ok(x) => x,
                Err(e) => {
                    cache.remove(id);
                    return Err(e);
                }
            };
            cache.insert(id.to_owned(), (state, rev));
            return Ok(());
        }
        cache.remove(id);
        Err(StoreError::Conflict)
    }

    /// One clock step: every instance evaluated at the clock's now
    /// (pending → firing after `for`, windows sliding out, absence,
    /// no-data, repeats); instances whose rule is gone, no longer covers
    /// their site, or groups differently now are removed (without a
    /// record).
    pub async fn tick(&self) {
        let now = self.inner.clock.now();
        let mut cache = self.inner.instances.lock().await;
        let ids: Vec<(String, String, String, String)> = cache
            .values()
            .map(|(s, _)| (s.id.clone(), s.org.clone(), s.rule.clone(), s.site.clone()))
            .collect();
        for (id, org, rule_id, site) in ids {
            let rule = self
                .rules_of(&org)
                .into_iter()
                .find(|r| r.rule.id == rule_id && r.rule.covers(&site));
            let fits = rule.as_ref().is_some_and(|r| {
                cache
                    .get(&id)
                    .is_some_and(|(s, _)| key_fits(&r.rule, &s.key))
            });
            let (Some(rule), true) = (rule, fits) else {
                tracing::info!(instance = %id, rule = %rule_id, "rule gone, or no longer covers this site or grouping: removing its alert instance");
                if self.inner.stores.delete_instance(&id).await.is_ok() {
                    cache.remove(&id);
                }
                continue;
            };
            if let Err(e) = self.settle(&mut cache, &rule, None, &id, &[], now).await {
                tracing::warn!(instance = %id, error = %e, "alert evaluation failed; retried next tick");
            }
        }
    }

    /// Runs [`Engine::tick`] every `every` until dropped.
    pub async fn run_clock(self, every: Duration) {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.tick().await;
        }
    }

    /// Reloads rules and silences whenever either bucket changes, until
    /// dropped (or the watch fails: then every `every`).
    pub async fn watch_changes(self, every: Duration) {
        let stores = self.inner.stores.clone();
        loop {
            let rules = stores.rules_bucket().watch_all().await;
            let silences = stores.silences_bucket().watch_all().await;
            match (rules, silences) {
                (Ok(rules), Ok(silences)) => {
                    let mut both = futures::stream::select(rules, silences);
                    while both.next().await.is_some() {
                        if let Err(e) = self.reload().await {
                            tracing::warn!(error = %e, "reloading alert rules failed");
                        }
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "watching alert rules failed; retrying");
                }
            }
            tokio::time::sleep(every).await;
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "reloading alert rules failed");
            }
        }
    }
}

impl Handler for Engine {
    async fn handle(&self, batch: &[Item]) -> BatchOutcome {
        let mut outcome = BatchOutcome::success();
        let mut work = Vec::new();
        for (i, item) in batch.iter().enumerate() {
            let before: Vec<usize> = work.iter().map(|w: &Work| w.observations.len()).collect();
            if let Err(e) = self.observe(item, &mut work).await {
                outcome.record_failure(i, e);
                continue;
            }
            for (n, w) in work.iter_mut().enumerate() {
                if before.get(n).copied().unwrap_or(0) < w.observations.len() {
                    w.items.push(i);
                }
            }
        }
        if work.is_empty() {
            return outcome;
        }
        let now = self.inner.clock.now();
        let mut cache = self.inner.instances.lock().await;
        for w in work {
            let id = instance_id(&w.rule.org, &w.rule.rule.id, &w.site, &w.key);
            let fresh = Some((w.site.as_str(), w.key.as_str(), &w.group));
            if let Err(e) = self
                .settle(&mut cache, &w.rule, fresh, &id, &w.observations, now)
                .await
            {
                tracing::warn!(instance = %id, error = %e, "alert instance not updated; its items are retried");
                for i in &w.items {
                    outcome.record_failure(*i, e.to_string());
                }
            }
        }
        outcome
    }
}

/// The number in a payload: the payload itself as text, or the value at
/// a dotted JSON path (`a.b.0`; a numeric string counts).
pub fn read_number(payload: &[u8], field: Option<&str>) -> Option<f64> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    match field {
        None => text.parse::<f64>().ok().filter(|v| v.is_finite()),
        Some(path) => {
            let root: serde_json::Value = serde_json::from_str(text).ok()?;
            let mut cur = &root;
            for part in path.split('.') {
                cur = match cur {
                    serde_json::Value::Object(m) => m.get(part)?,
                    serde_json::Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
                    _ => return None,
                };
            }
            match cur {
                serde_json::Value::Number(n) => n.as_f64(),
                serde_json::Value::String(s) => s.trim().parse().ok(),
                serde_json::Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
                _ => None,
            }
            .filter(|v| v.is_finite())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::read_number;

    #[test]
    fn numbers_from_payloads() {
        assert_eq!(read_number(b" 21.5 ", None), Some(21.5));
        assert_eq!(read_number(b"hot", None), None);
        assert_eq!(
            read_number(br#"{"a":{"b":[1,2.5]}}"#, Some("a.b.1")),
            Some(2.5)
        );
        assert_eq!(read_number(br#"{"t":"7"}"#, Some("t")), Some(7.0));
        assert_eq!(read_number(br#"{"t":null}"#, Some("t")), None);
    }
}
