//! Reading the audit trail back: [`read`] (one organisation, filtered and
//! paged, oldest first) and [`verify`] (walks one organisation's chain and
//! names the first broken record). The chain rules themselves are in
//! [`Chain`], which needs no server.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::push::OrderedConfig};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::{AuditError, GENESIS, Record, STREAM, hash, subject};

/// A record with where it is stored and its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// Its sequence in [`STREAM`].
    pub seq: u64,
    /// Its hash (the next record's `prev`).
    pub hash: String,
    /// The record.
    #[serde(flatten)]
    pub record: Record,
}

/// What [`read`] returns.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// The organisation (required).
    pub org: String,
    /// Only this actor (a trailing `*` matches a prefix).
    pub actor: Option<String>,
    /// Only this action (`auth.login`; `auth.*` matches a prefix).
    pub action: Option<String>,
    /// Only this target (`user:<id>`; a trailing `*` matches a prefix).
    pub target: Option<String>,
    /// Only records at or after this time, ms since the epoch.
    pub since_ms: Option<u64>,
    /// Only records at or before this time, ms since the epoch.
    pub until_ms: Option<u64>,
    /// Continue after this stream sequence (a [`Page::next`]).
    pub after: Option<u64>,
    /// Most records to return (at least 1).
    pub limit: usize,
}

/// One page of [`read`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Page {
    /// Matching records, oldest first.
    pub records: Vec<Stored>,
    /// Pass as [`Query::after`] for the next page; `None` when there is no
    /// more.
    pub next: Option<u64>,
}

fn matches(want: Option<&str>, have: &str) -> bool {
    match want {
        None => true,
        Some(w) => match w.strip_suffix('*') {
            Some(prefix) => have.starts_with(prefix),
            None => w == have,
        },
    }
}

impl Query {
    /// Whether `r` passes the filters.
    pub fn accepts(&self, r: &Record) -> bool {
        let t = r.time_ms();
        matches(self.actor.as_deref(), &r.actor)
            && matches(self.action.as_deref(), &r.action)
            && matches(self.target.as_deref(), &r.target)
            && self.since_ms.is_none_or(|s| t >= s)
            && self.until_ms.is_none_or(|u| t <= u)
    }
}

/// Records are timed before they are stored; a stream time is trusted to be
/// within this of the record's time when choosing where to start and stop.
const CLOCK_SLACK: Duration = Duration::from_secs(60);

/// How long a read waits for the next message the stream said it has.
const STALL: Duration = Duration::from_secs(5);

fn to_time(ms: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn millis(t: time::OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Reads `org`'s records from `policy` on, in stream order, handing each
/// (sequence, stream time, payload) to `each` until it returns `false` or
/// the stream has no more.
async fn walk(
    js: &jetstream::Context,
    org: &str,
    policy: DeliverPolicy,
    mut each: impl FnMut(u64, u64, &[u8]) -> bool,
) -> Result<(), AuditError> {
    let filter = subject(org)?;
    let stream = js.get_stream_no_info(STREAM).await.map_err(super::js_err)?;
    let client = js.client();
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: filter,
            deliver_policy: policy,
            replay_policy: jetstream::consumer::ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(super::js_err)?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(());
    }
    let mut messages = consumer.messages().await.map_err(super::js_err)?;
    loop {
        let next = tokio::time::timeout(STALL, messages.next())
            .await
            .map_err(|_| AuditError::JetStream("reading the audit stream stalled".into()))?;
        let Some(message) = next else { break };
        let message = message.map_err(super::js_err)?;
        let info = message.info().map_err(super::js_err)?;
        let (seq, pending, at) = (info.stream_sequence, info.pending, millis(info.published));
        if !each(seq, at, &message.payload) || pending == 0 {
            break;
        }
    }
    Ok(())
}

/// One page of `q.org`'s records that pass `q`'s filters, oldest first.
/// Unreadable records are skipped here ([`verify`] reports them).
///
/// # Errors
/// [`AuditError::BadOrg`]; [`AuditError::JetStream`] when the stream is
/// missing or JetStream fails.
pub async fn read(js: &jetstream::Context, q: &Query) -> Result<Page, AuditError> {
    let limit = q.limit.max(1);
    let policy = match (q.after, q.since_ms) {
        // Saturating: the cursor is the client's text (u64::MAX panicked).
        (Some(after), _) => DeliverPolicy::ByStartSequence {
            start_sequence: after.saturating_add(1),
        },
        (None, Some(since)) => DeliverPolicy::ByStartTime {
            start_time: to_time(since.saturating_sub(CLOCK_SLACK.as_millis() as u64)),
        },
        (None, None) => DeliverPolicy::All,
    };
    let stop_after = q
        .until_ms
        .map(|u| u.saturating_add(CLOCK_SLACK.as_millis() as u64));
    let mut page = Page::default();
    walk(js, &q.org, policy, |seq, at, payload| {
        if stop_after.is_some_and(|s| at > s) {
            return false;
        }
        let Ok(record) = serde_json::from_slice::<Record>(payload) else {
            return true;
        };
        if !q.accepts(&record) {
            return true;
        }
        if page.records.len() >= limit {
            // A matching record beyond the page: there is a next page.
            page.next = page.records.last().map(|s| s.seq);
            return false;
        }
        page.records.push(Stored {
            seq,
            hash: hash(payload),
            record,
        });
        true
    })
    .await?;
    Ok(page)
}

/// Why a record breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BrokenReason {
    /// The payload is not a record.
    Unreadable {
        /// The parse error.
        error: String,
    },
    /// The record names another organisation than its subject.
    WrongOrg {
        /// The organisation it names.
        found: String,
    },
    /// The numbering skips or repeats: records were deleted, or one was
    /// inserted. For the first record present, `expected_n` is 1 and the
    /// start of the chain is gone.
    Numbering {
        /// The `n` the chain needs here.
        expected_n: u64,
        /// The `n` the record has.
        found_n: u64,
    },
    /// `prev` is not the hash of the record before it: that record was
    /// changed or replaced, or this one was forged.
    Link {
        /// The hash of the record before it ([`GENESIS`] at the start).
        expected_prev: String,
        /// The `prev` it carries.
        found_prev: String,
    },
}

impl std::fmt::Display for BrokenReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreadable { error } => write!(f, "not a readable record ({error})"),
            Self::WrongOrg { found } => write!(f, "names organisation {found:?}"),
            Self::Numbering {
                expected_n,
                found_n,
            } if found_n > expected_n => write!(
                f,
                "is number {found_n} where {expected_n} was due: {} record(s) before it are missing",
                found_n - expected_n
            ),
            Self::Numbering {
                expected_n,
                found_n,
            } => write!(
                f,
                "is number {found_n} where {expected_n} was due: an inserted or repeated record"
            ),
            Self::Link {
                expected_prev,
                found_prev,
            } => write!(
                f,
                "links to {found_prev} but the record before it hashes to {expected_prev}: a record was altered or forged"
            ),
        }
    }
}

/// The first record that breaks a chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Broken {
    /// Its sequence in [`STREAM`].
    pub seq: u64,
    /// Its hash.
    pub hash: String,
    /// What is wrong.
    pub reason: BrokenReason,
    /// The record, when readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Record>,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// The organisation.
    pub org: String,
    /// Records checked (up to and including the broken one).
    pub records: u64,
    /// The `n` of the last intact record (0: none).
    pub last_n: u64,
    /// The hash of the last intact record ([`GENESIS`]: none).
    pub last_hash: String,
    /// The first broken record; `None` when the chain is intact.
    pub broken: Option<Broken>,
}

impl Verification {
    /// Whether the chain is intact.
    pub fn ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// The chain rules, record by record: feed an organisation's payloads in
/// stream order to [`Chain::push`].
#[derive(Debug, Clone)]
pub struct Chain {
    org: String,
    n: u64,
    hash: String,
    records: u64,
}

impl Chain {
    /// An empty chain of `org`.
    pub fn new(org: &str) -> Self {
        Self {
            org: org.to_owned(),
            n: 0,
            hash: GENESIS.to_owned(),
            records: 0,
        }
    }

    /// Checks the next record (stored at `seq`).
    ///
    /// # Errors
    /// The [`Broken`] record, when it does not continue the chain.
    pub fn push(&mut self, seq: u64, payload: &[u8]) -> Result<(), Box<Broken>> {
        self.records += 1;
        let h = hash(payload);
        let broken = |reason, record| {
            Box::new(Broken {
                seq,
                hash: h.clone(),
                reason,
                record,
            })
        };
        let record: Record = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                return Err(broken(
                    BrokenReason::Unreadable {
                        error: e.to_string(),
                    },
                    None,
                ));
            }
        };
        let reason = if record.org != self.org {
            Some(BrokenReason::WrongOrg {
                found: record.org.clone(),
            })
        } else if record.n != self.n + 1 {
            Some(BrokenReason::Numbering {
                expected_n: self.n + 1,
                found_n: record.n,
            })
        } else if record.prev != self.hash {
            Some(BrokenReason::Link {
                expected_prev: self.hash.clone(),
                found_prev: record.prev.clone(),
            })
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(broken(reason, Some(record)));
        }
        self.n = record.n;
        self.hash = h;
        Ok(())
    }

    /// The result so far, with `broken` if a record broke it.
    pub fn finish(self, broken: Option<Broken>) -> Verification {
        Verification {
            org: self.org,
            records: self.records,
            last_n: self.n,
            last_hash: self.hash,
            broken,
        }
    }
}

/// Walks `org`'s whole chain and reports the first broken record.
///
/// # Errors
/// [`AuditError::BadOrg`]; [`AuditError::JetStream`] when the stream is
/// missing or JetStream fails (a tampered chain is not an error: it is
/// [`Verification::broken`]).
pub async fn verify(js: &jetstream::Context, org: &str) -> Result<Verification, AuditError> {
    let mut chain = Chain::new(org);
    let mut broken = None;
    walk(js, org, DeliverPolicy::All, |seq, _, payload| {
        match chain.push(seq, payload) {
            Ok(()) => true,
            Err(b) => {
                broken = Some(*b);
                false
            }
        }
    })
    .await?;
    Ok(chain.finish(broken))
}

#[cfg(test)]
mod tests {
    use super::super::{ActorKind, FORMAT_VERSION, Outcome};
    use super::*;

    fn record(n: u64, prev: &str) -> Record {
        Record {
            v: FORMAT_VERSION,
            id: format!("id{n}"),
            n,
            time: "2026-01-01T00:00:00.000Z".into(),
            org: "o".into(),
            actor: "a".into(),
            actor_kind: ActorKind::User,
            actor_org: None,
            action: "auth.login".into(),
            target: "user:a".into(),
            outcome: Outcome::Success,
            source: None,
            request_id: None,
            detail: None,
            prev: prev.into(),
        }
    }

    fn chain_of(len: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut prev = GENESIS.to_owned();
        for n in 1..=len {
            let bytes = serde_json::to_vec(&record(n, &prev)).expect("json");
            prev = hash(&bytes);
            out.push(bytes);
        }
        out
    }

    fn check(payloads: &[Vec<u8>]) -> Verification {
        let mut c = Chain::new("o");
        for (i, p) in payloads.iter().enumerate() {
            if let Err(b) = c.push(i as u64 + 1, p) {
                return c.finish(Some(*b));
            }
        }
        c.finish(None)
    }

    #[test]
    fn an_intact_chain_verifies() {
        let v = check(&chain_of(5));
        assert!(v.ok(), "{v:?}");
        assert_eq!((v.records, v.last_n), (5, 5));
    }

    #[test]
    fn an_altered_record_breaks_the_link_of_the_next() {
        let mut c = chain_of(5);
        let mut r: Record = serde_json::from_slice(&c[2]).expect("record");
        r.outcome = Outcome::Failure;
        c[2] = serde_json::to_vec(&r).expect("json");
        let v = check(&c);
        let b = v.broken.expect("broken");
        assert_eq!(b.seq, 4);
        assert!(
            matches!(b.reason, BrokenReason::Link { .. }),
            "{:?}",
            b.reason
        );
        assert_eq!(v.last_n, 3);
    }

    #[test]
    fn a_deleted_record_breaks_the_numbering() {
        let mut c = chain_of(5);
        c.remove(1);
        let b = check(&c).broken.expect("broken");
        assert_eq!(
            b.reason,
            BrokenReason::Numbering {
                expected_n: 2,
                found_n: 3
            }
        );
        assert!(
            b.reason
                .to_string()
                .contains("1 record(s) before it are missing")
        );
        let mut c = chain_of(3);
        c.remove(0);
        let b = check(&c).broken.expect("start gone");
        assert_eq!(b.seq, 1);
    }

    #[test]
    fn garbage_and_other_orgs_are_named() {
        let mut c = chain_of(2);
        c.push(b"not json".to_vec());
        assert!(matches!(
            check(&c).broken.expect("broken").reason,
            BrokenReason::Unreadable { .. }
        ));
        let mut r = record(1, GENESIS);
        r.org = "p".into();
        let v = check(&[serde_json::to_vec(&r).expect("json")]);
        assert!(matches!(
            v.broken.expect("broken").reason,
            BrokenReason::WrongOrg { .. }
        ));
    }

    #[test]
    fn filters_match_exactly_or_by_prefix() {
        let q = Query {
            action: Some("auth.*".into()),
            target: Some("user:a".into()),
            since_ms: Some(1_767_225_600_000),
            ..Query::default()
        };
        assert!(q.accepts(&record(1, GENESIS)));
        let q = Query {
            actor: Some("b".into()),
            ..Query::default()
        };
        assert!(!q.accepts(&record(1, GENESIS)));
        let q = Query {
            until_ms: Some(1_767_225_599_999),
            ..Query::default()
        };
        assert!(!q.accepts(&record(1, GENESIS)));
    }
}
