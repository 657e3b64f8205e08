//! The audit trail: who did what, to what, from where, with what outcome —
//! appended to the JetStream stream [`STREAM`] (`PLANTD_AUDIT`), one
//! subject per organisation ([`subject`]: `plantd.audit.<org>`), and
//! hash-chained per organisation so an edit, an insertion or a deletion is
//! detectable ([`verify`]).
//!
//! # The record
//! A [`Record`] is stored as the message payload, compact JSON, fields in
//! this order: `v`, `id`, `n`, `time`, `org`, `actor`, `actor_kind`,
//! `actor_org`, `action`, `target`, `outcome`, `source`, `request_id`,
//! `detail`, `prev`. Its **hash** is the lower-case hex SHA-256 of the
//! payload bytes exactly as stored ([`hash`]); it is not stored in the
//! record but in the next one, as `prev`. The first record of an
//! organisation has `n = 1` and `prev` = [`GENESIS`]; every later one has
//! `n` one more than its predecessor's and `prev` = its predecessor's hash.
//!
//! # Appending without forking the chain
//! Any number of processes append at once (identity and proxy, many Lambda
//! instances). Each append reads the last record on the organisation's
//! subject from the stream leader, links to it, and publishes with
//! `Nats-Expected-Last-Subject-Sequence` set to that record's sequence:
//! JetStream refuses the publish if anyone appended in between, and the
//! [`Auditor`] reads the new tip and tries again. The chain of one
//! organisation is therefore one line in stream order. `Nats-Msg-Id` is the
//! record's `id`, so a publish whose acknowledgement was lost is not stored
//! twice.
//!
//! # What the chain proves
//! Rewriting or deleting a record, or inserting one, breaks the link of the
//! record after it (or the numbering), and [`verify`] names the first
//! broken record. It cannot show that the newest records were cut off
//! (nothing comes after them) or that someone with write access rebuilt the
//! whole chain after a point; the stream also denies deletes and purges
//! ([`crate::streams::Settings::audit_deny_delete`]) so that the ordinary
//! API cannot remove records at all.
//!
//! # Recording never fails a request
//! [`Auditor::record`] waits for the append (so a record exists once the
//! request it describes has been answered) but at most
//! [`Auditor::timeout`]; a failure is logged (`tracing` target
//! `plantd::audit`) and counted ([`Auditor::failures`]), never returned.
//!
//! Reading back: [`read`] (filters and pages, for `GET /v1/audit`) and
//! [`verify`] (the whole chain of one organisation) in [`query`].

pub mod query;
pub mod record;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, stream::LastRawMessageErrorKind};
use sha2::{Digest, Sha256};
use thiserror::Error;

pub use crate::streams::AUDIT as STREAM;

pub use query::{Broken, BrokenReason, Page, Query, Stored, Verification, read, verify};
pub use record::{Action, ActorKind, Event, Outcome, Record};

/// The subject prefix of every audit record: `plantd.audit.<org>`.
pub const SUBJECT_PREFIX: &str = "plantd.audit";

/// The subjects of [`STREAM`]: every organisation's chain.
pub const ALL_SUBJECTS: &str = "plantd.audit.*";

/// The `prev` of an organisation's first record: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The record format version written in `v`.
pub const FORMAT_VERSION: u32 = 1;

/// Longest organisation id accepted for a subject.
const MAX_ORG_LEN: usize = 128;

/// The subject of `org`'s chain.
///
/// # Errors
/// [`AuditError::BadOrg`] when `org` is empty, too long, or holds a
/// character a subject token cannot (`.`, `*`, `>`, white space, control).
pub fn subject(org: &str) -> Result<String, AuditError> {
    let ok = !org.is_empty()
        && org.len() <= MAX_ORG_LEN
        && org
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '.' | '*' | '>'));
    if ok {
        Ok(format!("{SUBJECT_PREFIX}.{org}"))
    } else {
        Err(AuditError::BadOrg(org.to_owned()))
    }
}

/// The hash of a stored record: lower-case hex SHA-256 of its payload bytes.
pub fn hash(payload: &[u8]) -> String {
    let d = Sha256::digest(payload);
    let mut s = String::with_capacity(64);
    for b in d {
        use fmt::Write as _;
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Why an append or a read failed.
#[derive(Debug, Error)]
pub enum AuditError {
    /// The organisation cannot name a subject.
    #[error("organisation {0:?} cannot be audited: not a subject token")]
    BadOrg(String),
    /// Not an action this plantd knows.
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    /// JetStream refused or did not answer.
    #[error("jetstream: {0}")]
    JetStream(String),
    /// Other writers kept winning the race for the chain's tip.
    #[error("gave up after {0} attempts: other writers kept appending")]
    Contended(u32),
    /// The append took longer than the auditor's timeout.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    /// A stored record is not a record.
    #[error("record at sequence {seq} is unreadable: {reason}")]
    Unreadable {
        /// Its stream sequence.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

fn js_err(e: impl fmt::Display) -> AuditError {
    AuditError::JetStream(e.to_string())
}

/// The last record of one organisation's chain, as this process last saw
/// it.
#[derive(Debug, Clone)]
struct Tip {
    /// Its stream sequence (0: the chain is empty).
    seq: u64,
    /// Its hash ([`GENESIS`] for an empty chain).
    hash: String,
    /// Its `n` (0 for an empty chain).
    n: u64,
    /// Its `id`.
    id: String,
}

impl Tip {
    fn empty() -> Self {
        Self {
            seq: 0,
            hash: GENESIS.to_owned(),
            n: 0,
            id: String::new(),
        }
    }
}

/// How many times an append re-reads the tip after losing a race.
const MAX_ATTEMPTS: u32 = 64;

type TipSlot = Arc<tokio::sync::Mutex<Option<Tip>>>;

struct Inner {
    js: jetstream::Context,
    /// The tip per organisation; the mutex also makes one process's
    /// appends to one organisation take turns instead of racing.
    tips: std::sync::Mutex<HashMap<String, TipSlot>>,
    timeout: Duration,
    recorded: AtomicU64,
    failures: AtomicU64,
}

/// Appends audit records. Cheap to clone (one `Arc`); share one per
/// process.
#[derive(Clone)]
pub struct Auditor {
    inner: Arc<Inner>,
}

impl fmt::Debug for Auditor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auditor")
            .field("recorded", &self.recorded())
            .field("failures", &self.failures())
            .finish_non_exhaustive()
    }
}

/// How long [`Auditor::record`] waits for an append by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

impl Auditor {
    /// An auditor appending to [`STREAM`] through `js` (the stream must
    /// exist: [`crate::streams::ensure`] creates it), waiting at most
    /// [`DEFAULT_TIMEOUT`] per record.
    pub fn new(js: jetstream::Context) -> Self {
        Self::with_timeout(js, DEFAULT_TIMEOUT)
    }

    /// As [`Auditor::new`] with another timeout.
    pub fn with_timeout(js: jetstream::Context, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                js,
                tips: std::sync::Mutex::new(HashMap::new()),
                timeout,
                recorded: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        }
    }

    /// The JetStream context it appends through (for [`read`] and
    /// [`verify`]).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    /// How long [`Auditor::record`] waits.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Records appended by this auditor (and its clones).
    pub fn recorded(&self) -> u64 {
        self.inner.recorded.load(Ordering::Relaxed)
    }

    /// Records this auditor (and its clones) failed to append.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// Appends `event`, waiting at most [`Auditor::timeout`]. Never fails:
    /// an error is logged with the event's fields and counted in
    /// [`Auditor::failures`].
    pub async fn record(&self, event: Event) {
        let action = event.action;
        let org = event.org.clone();
        let target = event.target.clone();
        let result = match tokio::time::timeout(self.inner.timeout, self.append(event)).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(AuditError::TimedOut(self.inner.timeout)),
        };
        if let Err(e) = result {
            self.inner.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(target: "plantd::audit", error = %e, %action, %org, %target,
                failures = self.failures(), "audit record NOT written");
        }
    }

    /// Appends `event` to its organisation's chain and returns the stored
    /// record.
    ///
    /// # Errors
    /// [`AuditError::BadOrg`] for an organisation that cannot name a
    /// subject; [`AuditError::JetStream`] when the stream is missing or
    /// JetStream fails; [`AuditError::Contended`] when other writers won
    /// the race `MAX_ATTEMPTS` (64) times in a row.
    pub async fn append(&self, event: Event) -> Result<Stored, AuditError> {
        let subject = subject(&event.org)?;
        let slot = self.slot(&event.org);
        let mut tip = slot.lock().await;
        let id = new_id();
        let time = crate::headers::format_time(crate::headers::now_ms());
        let stream = self
            .inner
            .js
            .get_stream_no_info(STREAM)
            .await
            .map_err(js_err)?;
        for attempt in 0..MAX_ATTEMPTS {
            let current = match tip.take() {
                Some(t) => t,
                None => read_tip(&stream, &subject).await?,
            };
            if current.id == id {
                // An earlier attempt was stored although its answer was
                // lost: done.
                *tip = Some(current.clone());
                return self.done(&stream, current.seq).await;
            }
            let record = Record {
                v: FORMAT_VERSION,
                id: id.clone(),
                n: current.n + 1,
                time: time.clone(),
                org: event.org.clone(),
                actor: event.actor.clone(),
                actor_kind: event.actor_kind,
                actor_org: event.actor_org.clone(),
                action: event.action.as_str().to_owned(),
                target: event.target.clone(),
                outcome: event.outcome,
                source: event.source.clone(),
                request_id: event.request_id.clone(),
                detail: event.detail.clone(),
                prev: current.hash.clone(),
            };
            let payload = serde_json::to_vec(&record).map_err(|e| AuditError::Unreadable {
                seq: 0,
                reason: e.to_string(),
            })?;
            let record_hash = hash(&payload);
            let publish = jetstream::message::PublishMessage::build()
                .payload(payload.into())
                .message_id(&id)
                .expected_last_subject_sequence(current.seq);
            let acked = match self.inner.js.send_publish(subject.clone(), publish).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(ack) if ack.duplicate => {
                    // Stored by an earlier attempt whose answer was lost;
                    // where the tip is now, the next append finds out.
                    return self.done(&stream, ack.sequence).await;
                }
                Ok(ack) => {
                    *tip = Some(Tip {
                        seq: ack.sequence,
                        hash: record_hash.clone(),
                        n: record.n,
                        id,
                    });
                    self.inner.recorded.fetch_add(1, Ordering::Relaxed);
                    return Ok(Stored {
                        seq: ack.sequence,
                        hash: record_hash,
                        record,
                    });
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    // Another writer appended first: re-read the tip. A
                    // little jitter so two losers do not collide again.
                    tracing::debug!(target: "plantd::audit", attempt, org = %event.org, "lost the race for the chain's tip; retrying");
                    let pause = rand::random::<u64>() % (1 + u64::from(attempt.min(20)) * 500);
                    tokio::time::sleep(Duration::from_micros(pause)).await;
                }
                Err(e) => return Err(js_err(e)),
            }
        }
        Err(AuditError::Contended(MAX_ATTEMPTS))
    }

    /// The stored record at `seq`, after an append found it had already
    /// landed.
    async fn done(
        &self,
        stream: &jetstream::stream::Stream<()>,
        seq: u64,
    ) -> Result<Stored, AuditError> {
        let m = stream.get_raw_message(seq).await.map_err(js_err)?;
        let record: Record =
            serde_json::from_slice(&m.payload).map_err(|e| AuditError::Unreadable {
                seq,
                reason: e.to_string(),
            })?;
        self.inner.recorded.fetch_add(1, Ordering::Relaxed);
        Ok(Stored {
            seq,
            hash: hash(&m.payload),
            record,
        })
    }

    fn slot(&self, org: &str) -> TipSlot {
        let mut tips = self
            .inner
            .tips
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tips.entry(org.to_owned()).or_default().clone()
    }
}

/// The last record on `subject`, read from the stream leader.
async fn read_tip(
    stream: &jetstream::stream::Stream<()>,
    subject: &str,
) -> Result<Tip, AuditError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => {
            let record: Record =
                serde_json::from_slice(&m.payload).map_err(|e| AuditError::Unreadable {
                    seq: m.sequence,
                    reason: e.to_string(),
                })?;
            Ok(Tip {
                seq: m.sequence,
                hash: hash(&m.payload),
                n: record.n,
                id: record.id,
            })
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(Tip::empty()),
        Err(e) => Err(js_err(e)),
    }
}

/// 32 random hex digits.
fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::Claims;

    #[test]
    fn subjects_are_one_token_per_org() {
        assert_eq!(subject("initech").expect("ok"), "plantd.audit.initech");
        for bad in ["", "a.b", "a*", "a>", "a b", "a\n"] {
            assert!(subject(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_action_name_parses_back_and_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for a in Action::ALL {
            assert!(seen.insert(a.as_str()), "duplicate {a}");
            assert_eq!(a.as_str().parse::<Action>().expect("parses"), *a);
        }
        assert!("auth.nope".parse::<Action>().is_err());
    }

    #[test]
    fn the_hash_is_sha256_of_the_bytes() {
        assert_eq!(
            hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(GENESIS.len(), 64);
    }

    #[test]
    fn records_serialise_in_the_documented_order_without_empty_options() {
        let r = Record {
            v: 1,
            id: "x".into(),
            n: 1,
            time: "2026-01-01T00:00:00Z".into(),
            org: "o".into(),
            actor: "a".into(),
            actor_kind: ActorKind::User,
            actor_org: None,
            action: Action::Login.as_str().into(),
            target: "user:a".into(),
            outcome: Outcome::Success,
            source: None,
            request_id: Some("r".into()),
            detail: None,
            prev: GENESIS.into(),
        };
        let text = serde_json::to_string(&r).expect("json");
        assert!(
            text.starts_with(r#"{"v":1,"id":"x","n":1,"time":"#),
            "{text}"
        );
        assert!(!text.contains("source"), "{text}");
        assert!(
            text.ends_with(&format!(r#""prev":"{GENESIS}"}}"#)),
            "{text}"
        );
        assert_eq!(r.time_ms(), 1_767_225_600_000);
    }

    #[test]
    fn an_event_by_a_caller_of_another_org_names_that_org() {
        let claims: Claims = serde_json::from_value(serde_json::json!({
            "iss": "t", "sub": "u1", "aud": "plantd:api", "exp": 2, "iat": 1,
            "jti": "j", "org": "plantd", "kind": "user"
        }))
        .expect("claims");
        let e = Event::new(Action::SiteCreate, "initech").by(&claims);
        assert_eq!(e.actor, "u1");
        assert_eq!(e.actor_kind, ActorKind::User);
        assert_eq!(e.actor_org.as_deref(), Some("plantd"));
        let own = Event::new(Action::SiteCreate, "plantd").by(&claims);
        assert_eq!(own.actor_org, None);
    }
}
