//! Which analytics rules this edge runs, and keeping them on its disk.
//!
//! The rules come from the cloud: KV bucket `plantd_analytics_rules`, key
//! `<org>.<name>`, value [`StoredRule`]. The edge runs a rule when it
//! belongs to the site's owner ([`crate::owner`], followed while the edge
//! runs: a change of hands swaps the rules without a restart) and
//! [`StoredRule::runs_at_edge_of`] its site (enabled, placed `at = "edge"`,
//! naming the site). [`follow`] keeps that set current — at every
//! (re)connection it reads the bucket whole (rules deleted while the link
//! was down go), then applies each change as it comes (added, changed,
//! removed: no restart) — and writes it to `<data-dir>/`[`RULES_FILE`]
//! (temp file, fsync, rename) so an edge that starts without its uplink
//! runs the rules it had ([`load_cache`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv::{Entry, Operation, Store};
use futures::StreamExt as _;
use plantd_analytics::StoredRule;
use plantd_shared::streams::ANALYTICS_RULES_BUCKET;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The cached rules under `--data-dir`.
pub const RULES_FILE: &str = "analytics-rules.json";

/// The rules the edge runs, by KV key (`<org>.<name>`).
pub type Rules = Arc<BTreeMap<String, StoredRule>>;

/// The cache file's content.
#[derive(Debug, Serialize, Deserialize)]
struct Cached {
    /// The site they were chosen for.
    site: String,
    /// The organisation owning the site then.
    org: String,
    /// By KV key.
    rules: BTreeMap<String, StoredRule>,
}

/// The rules cached in `path` for `site` of `org`; empty (with a warning)
/// when the file is missing, unreadable, malformed, or written for another
/// site or owner.
pub fn load_cache(path: &Path, site: &str, org: &str) -> BTreeMap<String, StoredRule> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the cached analytics rules");
            return BTreeMap::new();
        }
    };
    match serde_json::from_slice::<Cached>(&bytes) {
        Ok(c) if c.site == site && c.org == org => {
            let rules: BTreeMap<_, _> = c
                .rules
                .into_iter()
                .filter(|(_, r)| runs_here(r, site, org))
                .collect();
            info!(path = %path.display(), rules = rules.len(), "analytics rules from the cache");
            rules
        }
        Ok(c) => {
            warn!(path = %path.display(), cached_site = %c.site, cached_org = %c.org, %site, %org,
                "the cached analytics rules are for another site or owner; ignored");
            BTreeMap::new()
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "the cached analytics rules are malformed; ignored");
            BTreeMap::new()
        }
    }
}

/// Writes `rules` to `path` atomically: a temp file, fsynced, renamed over.
///
/// # Errors
/// The I/O error.
pub fn write_cache(
    path: &Path,
    site: &str,
    org: &str,
    rules: &BTreeMap<String, StoredRule>,
) -> std::io::Result<()> {
    let cached = Cached {
        site: site.to_owned(),
        org: org.to_owned(),
        rules: rules.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&cached).map_err(std::io::Error::other)?;
    super::write_atomically(path, &bytes)
}

/// Whether the edge of `site`, owned by `org`, runs `rule`.
pub fn runs_here(rule: &StoredRule, site: &str, org: &str) -> bool {
    rule.org == org && rule.runs_at_edge_of(site)
}

/// Keeps `rules` equal to the rules of the site's owner that run at
/// `site`'s edge, following the bucket until `stop`, and each change to
/// `cache`. The owner comes from `owners` ([`crate::owner::watch`]): when
/// the site changes hands the previous owner's rules stop at once (an
/// empty set is handed over before the new owner's are read), and with no
/// owner (the site deleted, or registered to another organisation than
/// `--org`) nothing runs. NATS down, or no bucket yet: retried with
/// backoff, the current rules kept.
pub async fn follow(
    js: jetstream::Context,
    site: String,
    mut owners: watch::Receiver<Option<String>>,
    cache: PathBuf,
    rules: watch::Sender<Rules>,
    stop: CancellationToken,
) {
    let mut following = true;
    loop {
        let org = owners.borrow_and_update().clone();
        let Some(org) = org else {
            if !rules.borrow().is_empty() {
                info!(%site, "the site has no owner now: no analytics rules run at this edge");
                rules.send_replace(Arc::new(BTreeMap::new()));
            }
            tokio::select! {
                () = stop.cancelled() => return,
                changed = owners.changed(), if following => following = changed.is_ok(),
            }
            if !following {
                stop.cancelled().await;
                return;
            }
            continue;
        };
        if rules.borrow().values().any(|r| r.org != org) {
            info!(%site, %org, "the site changed hands: the previous owner's analytics rules stop");
            rules.send_replace(Arc::new(BTreeMap::new()));
        }
        let mut follower = Follower {
            site: site.clone(),
            org,
            cache: cache.clone(),
            rules: rules.clone(),
            revisions: HashMap::new(),
        };
        tokio::select! {
            () = follower.follow(&js, &stop) => return,
            changed = owners.changed(), if following => following = changed.is_ok(),
        }
        if !following {
            // Nobody reports owner changes any more: the owner stays.
            follower.follow(&js, &stop).await;
            return;
        }
    }
}

/// Follows the rules of one owner.
struct Follower {
    site: String,
    org: String,
    cache: PathBuf,
    rules: watch::Sender<Rules>,
    /// The newest revision applied per key (puts and deletes): an older
    /// change seen late (the watch overlaps the snapshot) is ignored.
    revisions: HashMap<String, u64>,
}

impl Follower {
    /// Follows the bucket for this owner until `stop`, reconnecting with
    /// backoff.
    async fn follow(&mut self, js: &jetstream::Context, stop: &CancellationToken) {
        let mut delay = Duration::from_millis(200);
        loop {
            let error = tokio::select! {
                () = stop.cancelled() => return,
                e = self.run(js) => e,
            };
            warn!(error = %error, retry_in = ?delay, "following the analytics rules interrupted; the edge runs the rules it has");
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// One connection's worth: watch, snapshot, then changes. Returns why
    /// it ended.
    async fn run(&mut self, js: &jetstream::Context) -> String {
        let kv = match js.get_key_value(ANALYTICS_RULES_BUCKET).await {
            Ok(kv) => kv,
            Err(e) => return format!("bucket {ANALYTICS_RULES_BUCKET}: {e}"),
        };
        // Watch first, then read the whole: a change in between is seen
        // twice (harmless), never missed.
        let prefix = format!("{}.", self.org);
        let mut changes = match kv.watch(format!("{prefix}>")).await {
            Ok(w) => w,
            Err(e) => return format!("watching {ANALYTICS_RULES_BUCKET}: {e}"),
        };
        match self.snapshot(&kv, &prefix).await {
            Ok(all) => self.publish(all),
            Err(e) => return e,
        }
        while let Some(entry) = changes.next().await {
            match entry {
                Ok(entry) => self.apply(&entry),
                Err(e) => return format!("watching {ANALYTICS_RULES_BUCKET}: {e}"),
            }
        }
        "the watch ended".to_owned()
    }

    /// Every rule of the organisation that runs here, now.
    async fn snapshot(
        &mut self,
        kv: &Store,
        prefix: &str,
    ) -> Result<BTreeMap<String, StoredRule>, String> {
        let mut keys = kv
            .keys()
            .await
            .map_err(|e| format!("listing {ANALYTICS_RULES_BUCKET}: {e}"))?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| format!("listing {ANALYTICS_RULES_BUCKET}: {e}"))?;
            if key.starts_with(prefix) {
                names.push(key);
            }
        }
        let mut all = BTreeMap::new();
        for key in names {
            let entry = kv
                .entry(key.as_str())
                .await
                .map_err(|e| format!("reading {ANALYTICS_RULES_BUCKET} {key}: {e}"))?;
            let Some(entry) = entry else { continue };
            self.revisions.insert(key.clone(), entry.revision);
            if entry.operation != Operation::Put {
                continue;
            }
            if let Some(rule) = self.decode(&key, &entry.value) {
                all.insert(key, rule);
            }
        }
        Ok(all)
    }

    /// One change from the watch.
    fn apply(&mut self, entry: &Entry) {
        let key = &entry.key;
        if self
            .revisions
            .get(key)
            .is_some_and(|&seen| seen >= entry.revision)
        {
            return;
        }
        self.revisions.insert(key.clone(), entry.revision);
        let mut all = (**self.rules.borrow()).clone();
        let before = all.get(key).cloned();
        let now = match entry.operation {
            Operation::Put => self.decode(key, &entry.value),
            Operation::Delete | Operation::Purge => None,
        };
        if before == now {
            return;
        }
        match &now {
            Some(_) if before.is_some() => info!(rule = %key, "analytics rule changed"),
            Some(_) => info!(rule = %key, "analytics rule added"),
            None => info!(rule = %key, "analytics rule no longer runs here"),
        }
        match now {
            Some(rule) => all.insert(key.clone(), rule),
            None => all.remove(key),
        };
        self.publish(all);
    }

    /// The rule in `value` when it runs here; `None` (logged when it is
    /// malformed or invalid) otherwise.
    fn decode(&self, key: &str, value: &[u8]) -> Option<StoredRule> {
        let rule = match serde_json::from_slice::<StoredRule>(value) {
            Ok(r) => r,
            Err(e) => {
                warn!(rule = %key, error = %e, "analytics rule is malformed; not run");
                return None;
            }
        };
        if !runs_here(&rule, &self.site, &self.org) {
            return None;
        }
        if let Err(e) = rule.validate() {
            warn!(rule = %key, error = %e, "analytics rule is invalid; not run");
            return None;
        }
        Some(rule)
    }

    /// Hands `all` to the engine and the cache when it differs.
    fn publish(&mut self, all: BTreeMap<String, StoredRule>) {
        if **self.rules.borrow() == all {
            return;
        }
        if let Err(e) = write_cache(&self.cache, &self.site, &self.org, &all) {
            warn!(path = %self.cache.display(), error = %e, "cannot cache the analytics rules");
        }
        info!(rules = all.len(), "analytics rules for this edge");
        self.rules.send_replace(Arc::new(all));
    }
}

#[cfg(test)]
mod tests {
    use plantd_analytics::{Placement, Rule, Source};

    use super::*;

    fn rule(org: &str, name: &str, at: Placement, sites: &[&str]) -> StoredRule {
        let sql = r#"SELECT avg(value) FROM "line1/+/temp" GROUP BY topic, TUMBLE(1m)"#.to_owned();
        StoredRule {
            org: org.into(),
            sites: sites.iter().map(|s| (*s).to_owned()).collect(),
            at,
            enabled: true,
            rule: Rule::from_sql(name, &sql).expect("rule"),
            source: Source::Sql(sql),
            updated_by: "u1".into(),
            updated_at: "2026-12-06T18:00:00Z".into(),
        }
    }

    #[test]
    fn the_cache_keeps_this_sites_edge_rules_of_its_owner_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(RULES_FILE);
        let mut rules = BTreeMap::new();
        rules.insert(
            "acme.avg".to_owned(),
            rule("acme", "avg", Placement::Edge, &["plant-1"]),
        );
        write_cache(&path, "plant-1", "acme", &rules).expect("write");
        assert_eq!(load_cache(&path, "plant-1", "acme"), rules);
        assert!(
            load_cache(&path, "plant-2", "acme").is_empty(),
            "another site"
        );
        assert!(
            load_cache(&path, "plant-1", "initech").is_empty(),
            "another owner"
        );
        std::fs::write(&path, b"{").expect("write");
        assert!(load_cache(&path, "plant-1", "acme").is_empty(), "malformed");
        assert!(load_cache(&dir.path().join("none"), "plant-1", "acme").is_empty());
    }

    #[test]
    fn only_enabled_edge_rules_of_the_owner_naming_the_site_run_here() {
        let here = |r: &StoredRule| runs_here(r, "plant-1", "acme");
        assert!(here(&rule("acme", "a", Placement::Edge, &["plant-1"])));
        assert!(!here(&rule("acme", "a", Placement::Cloud, &["plant-1"])));
        assert!(!here(&rule("acme", "a", Placement::Edge, &["plant-2"])));
        assert!(!here(&rule("initech", "a", Placement::Edge, &["plant-1"])));
        let mut paused = rule("acme", "a", Placement::Edge, &["plant-1"]);
        paused.enabled = false;
        assert!(!here(&paused));
    }
}
