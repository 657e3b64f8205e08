//! [`RuleBook`]: the analytics rules of every organisation, read from KV
//! bucket `plantd_analytics_rules` and kept current by a watch — a rule
//! created, changed, paused or deleted applies from the next batch, with
//! no restart.

use std::sync::{Arc, RwLock};

use async_nats::jetstream::{self, kv};
use futures::StreamExt as _;
use plantd_analytics::{Rule, StoredRule};
use plantd_shared::streams::ANALYTICS_RULES_BUCKET;

use crate::error::Error;

/// Every stored rule, as last read.
#[derive(Debug, Default)]
pub struct RuleBook {
    /// The rules, by KV key order.
    rules: RwLock<Arc<Vec<StoredRule>>>,
}

impl RuleBook {
    /// Reads the bucket once and returns the book with the task that keeps
    /// it current (abort it to stop watching).
    ///
    /// # Errors
    /// [`Error::Nats`] when the bucket does not exist or cannot be read.
    pub async fn open(
        js: &jetstream::Context,
    ) -> Result<(Arc<Self>, tokio::task::JoinHandle<()>), Error> {
        let store = js
            .get_key_value(ANALYTICS_RULES_BUCKET)
            .await
            .map_err(|e| Error::nats("open the analytics rules bucket", e))?;
        // Watch first, then read: a change in between is not missed.
        let changes = store
            .watch_all()
            .await
            .map_err(|e| Error::nats("watch the analytics rules", e))?;
        let book = Arc::new(Self::default());
        book.set(read_all(&store).await?);
        let task = tokio::spawn(watch(book.clone(), store, changes));
        Ok((book, task))
    }

    fn set(&self, rules: Vec<StoredRule>) {
        let mut guard = self
            .rules
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = Arc::new(rules);
    }

    /// The rules as last read.
    pub fn all(&self) -> Arc<Vec<StoredRule>> {
        self.rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The rules the cloud runs on `site` of organisation `org`
    /// ([`StoredRule::runs_in_cloud_for`]), by name.
    pub fn for_site(&self, org: &str, site: &str) -> Vec<Rule> {
        let mut rules: Vec<Rule> = self
            .all()
            .iter()
            .filter(|r| r.org == org && r.runs_in_cloud_for(site))
            .map(|r| r.rule.clone())
            .collect();
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        rules
    }

    /// Whether `org` still has a rule named `name` (paused or not): a rule
    /// that is gone has its checkpoints removed.
    pub fn exists(&self, org: &str, name: &str) -> bool {
        self.all()
            .iter()
            .any(|r| r.org == org && r.rule.name == name)
    }
}

/// Every valid rule in the bucket; an invalid one is logged and skipped.
async fn read_all(store: &kv::Store) -> Result<Vec<StoredRule>, Error> {
    let mut keys = store
        .keys()
        .await
        .map_err(|e| Error::nats("list the analytics rules", e))?;
    let mut names = Vec::new();
    while let Some(k) = keys.next().await {
        names.push(k.map_err(|e| Error::nats("list the analytics rules", e))?);
    }
    names.sort();
    let mut rules = Vec::with_capacity(names.len());
    for name in names {
        let Some(value) = store
            .get(&name)
            .await
            .map_err(|e| Error::nats("read an analytics rule", e))?
        else {
            continue;
        };
        match serde_json::from_slice::<StoredRule>(&value) {
            Ok(r) => match r.validate() {
                Ok(()) => rules.push(r),
                Err(e) => {
                    tracing::warn!(key = %name, error = %e, "analytics: invalid rule skipped")
                }
            },
            Err(e) => tracing::warn!(key = %name, error = %e, "analytics: unreadable rule skipped"),
        }
    }
    Ok(rules)
}

/// Rereads the bucket after each change.
async fn watch(book: Arc<RuleBook>, store: kv::Store, mut changes: kv::Watch) {
    while let Some(change) = changes.next().await {
        if let Err(e) = change {
            tracing::warn!(error = %e, "analytics: rule watch failed");
            continue;
        }
        match read_all(&store).await {
            Ok(rules) => {
                tracing::info!(rules = rules.len(), "analytics: rules changed");
                book.set(rules);
            }
            Err(e) => tracing::warn!(error = %e, "analytics: cannot reread the rules"),
        }
    }
    tracing::warn!("analytics: the rule watch ended; rules stay as last read");
}
