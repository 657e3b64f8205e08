//! The site lease: one live edge journal per site.
//!
//! Two edges serving the same site — a copied data directory, a spare
//! configured with the wrong site, a wiped edge started while the old one
//! still runs — would interleave two journals' messages on the site's
//! subjects. The lease makes that impossible to miss:
//!
//! * KV bucket [`crate::streams::EDGE_LEASES_BUCKET`] holds one key per site
//!   (`<site>`), whose value is a [`LeaseRecord`]: the holder's current
//!   journal id, who it is (host, process, data directory), when it took
//!   and last renewed the lease, and its journal's lives. A lease nobody
//!   renewed for [`TTL`] has expired (the record stays: a successor still
//!   learns its predecessor's journal lives from it).
//! * The holder renews it every [`RENEW_EVERY`] and answers requests on
//!   [`liveness_subject`] (its site and journal id) for as long as its
//!   process runs.
//! * An edge may publish its site's messages only while it holds the lease;
//!   it checks before the first publish of every uplink connection, and at
//!   start-up. [`decide`] is the rule.
//! * The lives a successor read from its predecessor's record tell it, when
//!   its own journal is an older copy of the predecessor's (a restored
//!   backup), which of its records the predecessor went on to store: see
//!   [`LeaseRecord::predecessor_lives`].
//!
//! A lease held by another journal is taken over when its holder does not
//! answer on its liveness subject (NATS reports no responders: that
//! process is gone or cut off) — so an edge restarting after a crash
//! (which always has a new journal id) or a replaced edge whose predecessor
//! is dead takes over at once — or when the lease has expired. A holder
//! that answers is live, and the newcomer is refused with a message naming
//! the holder.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::subject::{ROOT, Site};

/// A lease nobody renewed for this long has expired.
pub const TTL: Duration = Duration::from_secs(30);

/// How often the holder renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);

/// How long a challenger waits for the holder to answer on its liveness
/// subject before treating it as unknown (not dead).
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The lease's key in the bucket: the site name.
pub fn key(site: &Site) -> &str {
    site.as_str()
}

/// Where the holder of a site's lease with journal `journal` answers:
/// `plantd.<site>.lease.<journal>`.
pub fn liveness_subject(site: &Site, journal: &str) -> String {
    format!("{ROOT}.{site}.lease.{journal}")
}

/// The value of a site's lease (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The holder's current journal id (see `plantd_journal::identity`).
    pub journal: String,
    /// Who holds it, for operators: host, process id, data directory.
    pub holder: String,
    /// When this journal took the lease (ms since the Unix epoch).
    pub since_ms: u64,
    /// When it was last renewed (ms since the Unix epoch).
    pub renewed_ms: u64,
    /// The holder's journal lives (journal id and first sequence of each,
    /// oldest first; see `plantd_journal::identity`).
    #[serde(default)]
    pub lives: Vec<LeaseLife>,
    /// The lives of the journal this holder took the site over from, when
    /// it shares a life with this holder's journal (this one is a restored
    /// backup or copy of it), kept until this holder's uplink has resumed
    /// with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predecessor_lives: Vec<LeaseLife>,
}

/// One journal life in a [`LeaseRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseLife {
    /// Its journal id.
    pub id: String,
    /// Its first sequence (it ends where the next life starts).
    pub first_seq: u64,
}

impl LeaseRecord {
    /// Whether this record has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.renewed_ms) > u64::try_from(TTL.as_millis()).unwrap_or(u64::MAX)
    }
}

/// What a challenger learnt from the holder's liveness subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The holder answered: its process runs and reaches NATS.
    Live,
    /// NATS reported no responders: nobody listens there.
    Gone,
    /// No clear answer (timeout, permission, error).
    Unknown,
}

/// What an edge with journal `mine` does about a site's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is no lease: create it.
    Create,
    /// The lease is ours: renew it.
    Renew,
    /// The lease is another journal's whose holder is gone: take it over.
    TakeOver,
    /// The lease is another journal's whose holder may be live: do not
    /// publish; the reason says who holds it.
    Refuse(String),
}

/// The rule: no lease → create; ours → renew; another journal's → take
/// over if its holder is [`Liveness::Gone`], or if it did not answer
/// clearly and its lease has expired (not renewed for [`TTL`]); otherwise
/// refuse.
pub fn decide(
    site: &Site,
    mine: &str,
    current: Option<&LeaseRecord>,
    holder: Liveness,
    now_ms: u64,
) -> Decision {
    let Some(current) = current else {
        return Decision::Create;
    };
    if current.journal == mine {
        return Decision::Renew;
    }
    match holder {
        Liveness::Gone => Decision::TakeOver,
        Liveness::Unknown if current.expired(now_ms) => Decision::TakeOver,
        Liveness::Live => Decision::Refuse(format!(
            "site {site} is already served by another live edge (journal {}, {}); two edges \
             must not share a site: stop one, or give this one its own --site",
            current.journal, current.holder
        )),
        Liveness::Unknown => Decision::Refuse(format!(
            "site {site} is leased to journal {} ({}), which did not answer; waiting for its \
             lease to expire (at most {} s after its last renewal)",
            current.journal,
            current.holder,
            TTL.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(journal: &str) -> LeaseRecord {
        LeaseRecord {
            journal: journal.into(),
            holder: "host edge-1, pid 7, data dir /var/lib/plantd".into(),
            since_ms: 1,
            renewed_ms: 2,
            lives: Vec::new(),
            predecessor_lives: Vec::new(),
        }
    }

    #[test]
    fn the_rule() {
        let site = Site::new("plant-1").expect("site");
        let mine = "aaaaaaaaaaaaaaaa";
        let now = 100_000;
        assert_eq!(
            decide(&site, mine, None, Liveness::Live, now),
            Decision::Create
        );
        assert_eq!(
            decide(&site, mine, Some(&rec(mine)), Liveness::Unknown, now),
            Decision::Renew
        );
        let mut other = rec("bbbbbbbbbbbbbbbb");
        other.renewed_ms = now - 1_000;
        assert_eq!(
            decide(&site, mine, Some(&other), Liveness::Gone, now),
            Decision::TakeOver
        );
        let Decision::Refuse(why) = decide(&site, mine, Some(&other), Liveness::Live, now) else {
            panic!("a live holder keeps its lease");
        };
        assert!(
            why.contains("bbbbbbbbbbbbbbbb") && why.contains("edge-1"),
            "{why}"
        );
        assert!(matches!(
            decide(&site, mine, Some(&other), Liveness::Unknown, now),
            Decision::Refuse(_)
        ));
        // Not renewed for longer than the TTL: expired.
        let later = other.renewed_ms + TTL.as_millis() as u64 + 1;
        assert_eq!(
            decide(&site, mine, Some(&other), Liveness::Unknown, later),
            Decision::TakeOver
        );
        assert!(matches!(
            decide(&site, mine, Some(&other), Liveness::Live, later),
            Decision::Refuse(_)
        ));
        assert_eq!(
            liveness_subject(&site, mine),
            "plantd.plant-1.lease.aaaaaaaaaaaaaaaa"
        );
    }
}
