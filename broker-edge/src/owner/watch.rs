//! Following the site's owner while the edge runs.
//!
//! [`crate::owner::resolve`] decides the owner at start; [`follow`] keeps
//! it current while the uplink's NATS is configured: it watches the site's
//! key in `plantd_sites` (a KV watch with history — the newest record or
//! delete marker first, then every change — re-established with backoff
//! when NATS goes away) and, on each change, [`decide`]s the owner,
//! updates `<data-dir>/site.json`, hands the owner to the
//! [`Authenticator`] ([`Authenticator::set_owner`]), which closes every
//! live connection the new owner does not admit (v5 DISCONNECT 0x87,
//! 3.1.1 close; the bootstrap superadmin excepted while the site has an
//! owner; anonymous connections stay) and to the edge's analytics (the
//! new owner's rules replace the previous owner's). Each decision is logged with
//! structured fields and counted in `/metrics`
//! (`plantd_site_owner_changes_total{decision}`,
//! `plantd_site_owner_disconnects_total`).
//!
//! | the record becomes | without `--org` | with `--org A` |
//! |---|---|---|
//! | owned by B (was A) | owner B: A's connections close | **mismatch**: error logged, nobody's tokens admitted, every token connection closes |
//! | owned by A again | owner A | owner A again (`restored`) |
//! | deleted (or purged) | nobody's tokens: every token connection closes, `site.json` removed | the same: a deletion observed is authoritative |
//!
//! A site that was never registered has no history: the watch sees
//! nothing and the start-up decision (`--org` with a warning) stands.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv::{Entry, Operation};
use futures::StreamExt as _;
use plantd_shared::sites::{SITES_BUCKET, SiteRecord};
use plantd_shared::subject::Site;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::auth::Authenticator;

/// What the registry says about the site, as watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Its record.
    Registered(SiteRecord),
    /// It was deleted or purged.
    Deleted,
}

/// What a change of the site record means for the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The owner is what it was: nothing to do.
    Unchanged,
    /// Another organisation owns the site now (no `--org`).
    Changed,
    /// The record names `--org` again after a mismatch or a deletion.
    Restored,
    /// The record names another owner than `--org`: nobody is admitted.
    Mismatch,
    /// The site is gone: nobody is admitted.
    Deleted,
}

impl Decision {
    /// Every decision that changes something, for the metrics.
    pub const COUNTED: [Decision; 4] = [
        Decision::Changed,
        Decision::Restored,
        Decision::Mismatch,
        Decision::Deleted,
    ];

    /// The label value in `/metrics` and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Unchanged => "unchanged",
            Decision::Changed => "changed",
            Decision::Restored => "restored",
            Decision::Mismatch => "mismatch",
            Decision::Deleted => "deleted",
        }
    }
}

/// The owner the edge should use after `observed`, given `--org`
/// (`configured`) and the owner in force (`current`), and what kind of
/// change it is.
pub fn decide(
    configured: Option<&str>,
    current: Option<&str>,
    observed: &Observed,
) -> (Option<String>, Decision) {
    let (owner, changed) = match (observed, configured) {
        (Observed::Deleted, _) => (None, Decision::Deleted),
        (Observed::Registered(r), Some(c)) if r.org != c => (None, Decision::Mismatch),
        (Observed::Registered(r), Some(_)) => (Some(r.org.clone()), Decision::Restored),
        (Observed::Registered(r), None) => (Some(r.org.clone()), Decision::Changed),
    };
    if owner.as_deref() == current {
        return (owner, Decision::Unchanged);
    }
    (owner, changed)
}

/// Decisions and their disconnections, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Decisions that changed the owner, by [`Decision::COUNTED`] index.
    decisions: [AtomicU64; 4],
    /// Connections closed because of them.
    disconnects: AtomicU64,
}

impl Stats {
    fn count(&self, decision: Decision, closed: usize) {
        if let Some(i) = Decision::COUNTED.iter().position(|d| *d == decision) {
            self.decisions[i].fetch_add(1, Relaxed);
        }
        self.disconnects.fetch_add(closed as u64, Relaxed);
    }

    /// How many times `decision` was taken.
    pub fn decisions(&self, decision: Decision) -> u64 {
        Decision::COUNTED
            .iter()
            .position(|d| *d == decision)
            .map_or(0, |i| self.decisions[i].load(Relaxed))
    }

    /// The figures in the Prometheus text format.
    pub fn prometheus(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP plantd_site_owner_changes_total Changes of the site's owner seen in plantd_sites while running, by decision.\n# TYPE plantd_site_owner_changes_total counter"
        );
        for d in Decision::COUNTED {
            let _ = writeln!(
                out,
                "plantd_site_owner_changes_total{{decision=\"{}\"}} {}",
                d.as_str(),
                self.decisions(d)
            );
        }
        let _ = writeln!(
            out,
            "# HELP plantd_site_owner_disconnects_total Connections closed because their organisation no longer owns the site.\n# TYPE plantd_site_owner_disconnects_total counter\nplantd_site_owner_disconnects_total {}",
            self.disconnects.load(Relaxed)
        );
    }
}

/// What [`follow`] needs.
#[derive(Debug)]
pub struct Watch {
    /// The edge's site.
    pub site: Site,
    /// `--org`, as configured (before [`crate::owner::resolve`]).
    pub configured: Option<String>,
    /// `<data-dir>/site.json`, when there is a data directory.
    pub cache: Option<PathBuf>,
    /// Whose owner to switch.
    pub authn: Arc<Authenticator>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Where the owner in force goes after each change (the edge's
    /// analytics follow it: [`crate::analytics::rules::follow`]).
    pub owners: tokio::sync::watch::Sender<Option<String>>,
}

/// Follows the site's record in `plantd_sites` over `js` until `stop`
/// (see the module documentation).
pub async fn follow(js: jetstream::Context, watch: Watch, stop: CancellationToken) {
    let mut revision = 0;
    let mut delay = Duration::from_millis(200);
    loop {
        let run = follow_once(&js, &watch, &mut revision, &mut delay);
        let error = tokio::select! {
            () = stop.cancelled() => return,
            e = run => e,
        };
        warn!(site = %watch.site, error = %error, retry_in = ?delay, "following the site record interrupted; the owner stays as it is");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// One watch; returns why it ended.
async fn follow_once(
    js: &jetstream::Context,
    watch: &Watch,
    revision: &mut u64,
    delay: &mut Duration,
) -> String {
    let kv = match js.get_key_value(SITES_BUCKET).await {
        Ok(kv) => kv,
        Err(e) => return format!("bucket {SITES_BUCKET}: {e}"),
    };
    let mut changes = match kv.watch_with_history(watch.site.as_str()).await {
        Ok(w) => w,
        Err(e) => return format!("watching {SITES_BUCKET}: {e}"),
    };
    *delay = Duration::from_millis(200);
    while let Some(entry) = changes.next().await {
        match entry {
            // The newest entry comes again after a reconnection.
            Ok(entry) if entry.revision <= *revision => {}
            Ok(entry) => {
                *revision = entry.revision;
                apply(watch, &entry);
            }
            Err(e) => return format!("watching {SITES_BUCKET}: {e}"),
        }
    }
    "the watch ended".to_owned()
}

/// One change of the site's record.
fn apply(watch: &Watch, entry: &Entry) {
    let site = &watch.site;
    let observed = match entry.operation {
        Operation::Put => match serde_json::from_slice::<SiteRecord>(&entry.value) {
            Ok(r) if r.id == site.as_str() && !r.org.is_empty() => Observed::Registered(r),
            Ok(r) => {
                warn!(%site, record_id = %r.id, "the site record names another site or no organisation; ignored");
                return;
            }
            Err(e) => {
                warn!(%site, error = %e, "the site record is malformed; ignored");
                return;
            }
        },
        Operation::Delete | Operation::Purge => Observed::Deleted,
    };
    if let Some(path) = &watch.cache {
        match &observed {
            Observed::Registered(r) => crate::owner::write_cache(path, r),
            Observed::Deleted => crate::owner::remove_cache(path),
        }
    }
    let current = watch.authn.org();
    let (owner, decision) = decide(watch.configured.as_deref(), current.as_deref(), &observed);
    if decision == Decision::Unchanged {
        debug!(%site, org = ?owner, revision = entry.revision, "site record seen; owner unchanged");
        return;
    }
    let closed = watch.authn.set_owner(owner.as_deref());
    watch.owners.send_replace(owner.clone());
    watch.stats.count(decision, closed);
    let previous = current.as_deref().unwrap_or("");
    match (decision, &observed) {
        (Decision::Mismatch, Observed::Registered(r)) => error!(
            %site, decision = decision.as_str(), registered = %r.org, configured = ?watch.configured,
            previous_org = previous, connections_closed = closed,
            "the site was re-registered to another organisation than --org: admitting nobody's tokens until the record or the flag is fixed"
        ),
        (Decision::Deleted, _) => warn!(
            %site, decision = decision.as_str(), previous_org = previous, connections_closed = closed,
            "the site was deleted from plantd_sites: admitting nobody's tokens"
        ),
        _ => warn!(
            %site, decision = decision.as_str(), org = ?owner, previous_org = previous,
            connections_closed = closed,
            "the site's owner changed: connections of other organisations closed"
        ),
    }
    if decision != Decision::Mismatch && owner.is_some() {
        info!(%site, org = ?owner, "tokens of the site's owner are admitted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(org: &str) -> Observed {
        Observed::Registered(SiteRecord::new(&Site::new("plant-1").expect("site"), org))
    }

    #[test]
    fn the_registry_decides_without_org_and_only_confirms_with_it() {
        assert_eq!(
            decide(None, Some("acme"), &registered("initech")),
            (Some("initech".into()), Decision::Changed)
        );
        assert_eq!(
            decide(None, Some("acme"), &registered("acme")),
            (Some("acme".into()), Decision::Unchanged)
        );
        assert_eq!(
            decide(None, Some("acme"), &Observed::Deleted),
            (None, Decision::Deleted)
        );
        assert_eq!(
            decide(None, None, &Observed::Deleted),
            (None, Decision::Unchanged)
        );
        assert_eq!(
            decide(Some("acme"), Some("acme"), &registered("initech")),
            (None, Decision::Mismatch)
        );
        assert_eq!(
            decide(Some("acme"), None, &registered("acme")),
            (Some("acme".into()), Decision::Restored)
        );
        assert_eq!(
            decide(Some("acme"), Some("acme"), &Observed::Deleted),
            (None, Decision::Deleted)
        );
    }

    #[test]
    fn decisions_are_counted_by_label() {
        let s = Stats::default();
        s.count(Decision::Changed, 3);
        s.count(Decision::Unchanged, 0);
        let mut out = String::new();
        s.prometheus(&mut out);
        assert!(out.contains("plantd_site_owner_changes_total{decision=\"changed\"} 1"));
        assert!(out.contains("plantd_site_owner_changes_total{decision=\"deleted\"} 0"));
        assert!(out.contains("plantd_site_owner_disconnects_total 3"));
    }
}
