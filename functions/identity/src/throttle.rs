//! Login throttling by account **and** source, so that nobody can lock an
//! operator out by guessing their password from somewhere else.
//!
//! Two records in `plantd_identity`, both updated with compare-and-set
//! **before** the password is checked (so a burst of parallel guesses is
//! counted, not raced):
//!
//! | key | record | rule |
//! |---|---|---|
//! | `throttle.acct.<sha256(email, source)>` | [`Throttle`] of kind [`ThrottleKind::Account`] | after [`ThrottleSettings::free_failures`] failed attempts *from this source* for this email, each further attempt is refused until a delay that doubles per failure (from [`base_delay`](ThrottleSettings::base_delay) up to [`max_delay`](ThrottleSettings::max_delay)) has passed; a successful login clears it |
//! | `throttle.src.<sha256(source)>` | [`Throttle`] of kind [`ThrottleKind::Source`] | more than [`source_max_attempts`](ThrottleSettings::source_max_attempts) failed attempts from one source within [`source_window`](ThrottleSettings::source_window), across every account, refuse that source for [`source_block`](ThrottleSettings::source_block) |
//!
//! A refused attempt is 429 with `Retry-After` and never reaches the
//! password check. The same email from another source has its own record,
//! so the real operator still gets in while the attacker's address is
//! refused. Unknown emails are throttled the same way (the answer reveals
//! nothing). Records live in KV, so the limits hold across every instance
//! of the function. Administrators list them (`GET /v1/lockouts`) and clear
//! them (`DELETE /v1/lockouts/{id}`): see [`crate::routes::lockouts`].
//!
//! The source is [`plantd_shared::http::source`]'s: the peer, and
//! `X-Forwarded-For` only from a trusted proxy.

use std::time::Duration;

use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use plantd_shared::http::source::Source;
use serde::{Deserialize, Serialize};

use crate::model::sha256_hex;
use crate::{AppError, AppState};

/// Key prefix of every throttle record.
pub const PREFIX: &str = "throttle.";

/// The throttling policy.
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    /// Failed attempts for one (email, source) pair before delays start.
    pub free_failures: u32,
    /// The first delay; it doubles with each further failure.
    pub base_delay: Duration,
    /// The longest delay for one (email, source) pair.
    pub max_delay: Duration,
    /// An (email, source) record with no failure for this long starts over.
    pub forget_after: Duration,
    /// Failed attempts one source may make, across accounts, per window.
    pub source_max_attempts: u32,
    /// The window of `source_max_attempts`.
    pub source_window: Duration,
    /// How long a source over its limit is refused.
    pub source_block: Duration,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            free_failures: 3,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(60 * 60),
            source_max_attempts: 30,
            source_window: Duration::from_secs(60),
            source_block: Duration::from_secs(5 * 60),
        }
    }
}

/// What a throttle record counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleKind {
    /// One email from one source.
    Account,
    /// One source, across every email.
    Source,
}

/// A throttle record (also what administrators see).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    /// What it counts.
    pub kind: ThrottleKind,
    /// The email tried (account records only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The organisation of that email, when it belongs to a user (decides
    /// which administrators see the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// The source address, as text (`unknown` when none is known).
    pub source: String,
    /// Failed attempts counted (in the window, for source records).
    pub failures: u32,
    /// When counting started (the window start, for source records), ms.
    pub since_ms: u64,
    /// The last failed attempt, ms.
    pub last_failure_ms: u64,
    /// Attempts are refused until then, ms since the epoch (0: not
    /// refused).
    pub blocked_until_ms: u64,
}

/// A refused attempt: 429 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Which limit refused it.
    pub kind: ThrottleKind,
    /// Seconds until an attempt may be made again.
    pub retry_after_secs: u64,
}

impl IntoResponse for Throttled {
    fn into_response(self) -> Response {
        let mut r = AppError::too_many(format!(
            "too many failed logins from this address; try again in {} s",
            self.retry_after_secs
        ))
        .into_response();
        r.headers_mut()
            .insert(RETRY_AFTER, self.retry_after_secs.into());
        r
    }
}

/// Why an attempt may not go ahead.
#[derive(Debug)]
pub enum Refusal {
    /// Throttled (429).
    Throttled(Throttled),
    /// Storage trouble (503).
    Error(AppError),
}

impl From<AppError> for Refusal {
    fn from(e: AppError) -> Self {
        Self::Error(e)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Throttled(t) => t.into_response(),
            Self::Error(e) => e.into_response(),
        }
    }
}

/// A login attempt that was let through and counted; finish it with
/// [`Attempt::succeeded`] (or drop it: it stays counted as a failure).
#[derive(Debug)]
pub struct Attempt {
    /// `throttle.acct.…`.
    account_key: String,
    /// `throttle.src.…`.
    source_key: String,
}

/// Key of the (email, source) record.
pub fn account_key(email: &str, source: &Source) -> String {
    format!("{PREFIX}acct.{}", sha256_hex(&format!("{email}\n{source}")))
}

/// Key of the source record.
pub fn source_key(source: &Source) -> String {
    format!("{PREFIX}src.{}", sha256_hex(&source.to_string()))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn retry_secs(until_ms: u64, now_ms: u64) -> u64 {
    until_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
}

/// The delay after `failures` failed attempts of one pair.
pub fn delay_after(s: &ThrottleSettings, failures: u32) -> Duration {
    if failures <= s.free_failures {
        return Duration::ZERO;
    }
    let doublings = (failures - s.free_failures - 1).min(30);
    s.base_delay
        .saturating_mul(1u32 << doublings)
        .min(s.max_delay)
}

/// Counts a login attempt for `email` (normalised; `org` when it belongs
/// to a user) from `source`, or refuses it.
///
/// # Errors
/// [`Refusal::Throttled`] while the source or the pair is refused,
/// [`Refusal::Error`] on storage errors.
pub async fn begin(
    state: &AppState,
    email: &str,
    org: Option<&str>,
    source: &Source,
) -> Result<Attempt, Refusal> {
    let s = &state.settings.throttle;
    let now = plantd_shared::headers::now_ms();
    let source_key = source_key(source);
    let blank = |kind| Throttle {
        kind,
        email: None,
        org: None,
        source: source.to_string(),
        failures: 0,
        since_ms: now,
        last_failure_ms: 0,
        blocked_until_ms: 0,
    };
    let window = ms(s.source_window);
    let src = upsert(state, &source_key, blank(ThrottleKind::Source), |t| {
        if t.blocked_until_ms > now {
            return Err(t.blocked_until_ms);
        }
        if t.blocked_until_ms != 0 || now.saturating_sub(t.since_ms) > window {
            // A block served or a window passed: count afresh.
            t.blocked_until_ms = 0;
            t.failures = 0;
            t.since_ms = now;
        }
        t.failures += 1;
        t.last_failure_ms = now;
        if t.failures > s.source_max_attempts {
            t.blocked_until_ms = now + ms(s.source_block);
        }
        Ok(())
    })
    .await?;
    match src {
        Err(until) => {
            return Err(Refusal::Throttled(Throttled {
                kind: ThrottleKind::Source,
                retry_after_secs: retry_secs(until, now),
            }));
        }
        Ok(t) if t.blocked_until_ms > now => {
            note(state, &t, "source over its login limit: refusing it").await;
            return Err(Refusal::Throttled(Throttled {
                kind: ThrottleKind::Source,
                retry_after_secs: retry_secs(t.blocked_until_ms, now),
            }));
        }
        Ok(_) => {}
    }
    let account_key = account_key(email, source);
    let forget = ms(s.forget_after);
    let mut fresh = blank(ThrottleKind::Account);
    fresh.email = Some(email.to_owned());
    fresh.org = org.map(str::to_owned);
    let acct = upsert(state, &account_key, fresh, |t| {
        if t.blocked_until_ms > now {
            return Err(t.blocked_until_ms);
        }
        if now.saturating_sub(t.last_failure_ms) > forget {
            t.failures = 0;
            t.since_ms = now;
        }
        t.failures += 1;
        t.last_failure_ms = now;
        let delay = delay_after(s, t.failures);
        if !delay.is_zero() {
            t.blocked_until_ms = now + ms(delay);
        }
        Ok(())
    })
    .await?;
    match acct {
        Err(until) => Err(Refusal::Throttled(Throttled {
            kind: ThrottleKind::Account,
            retry_after_secs: retry_secs(until, now),
        })),
        Ok(t) => {
            if t.blocked_until_ms > now {
                // This attempt still goes ahead; the next one waits.
                note(state, &t, "repeated failed logins: delaying this address").await;
            }
            Ok(Attempt {
                account_key,
                source_key,
            })
        }
    }
}

impl Attempt {
    /// The password was right: the pair starts over and the attempt no
    /// longer counts against the source.
    ///
    /// # Errors
    /// 503 on storage errors.
    pub async fn succeeded(self, state: &AppState) -> Result<(), AppError> {
        state.store.delete(&self.account_key).await?;
        let r = state
            .store
            .modify::<Throttle, _>(&self.source_key, |t| {
                if t.failures == 0 {
                    return Ok(crate::store::Change::Keep);
                }
                t.failures -= 1;
                Ok(crate::store::Change::Put(()))
            })
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.status == StatusCode::NOT_FOUND => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Where a throttle starts refusing (or delays an address): logged here.
/// This is the one place to add an audit record for lockouts.
async fn note(state: &AppState, t: &Throttle, what: &str) {
    state.audit.record(lockout_event(t)).await;
    tracing::warn!(
        kind = ?t.kind,
        email = t.email.as_deref().unwrap_or(""),
        source = %t.source,
        failures = t.failures,
        blocked_until_ms = t.blocked_until_ms,
        "{what}"
    );
}

/// The audit event of throttle `t` starting to refuse: `auth.lockout` in
/// the email's organisation (the bootstrap organisation for unknown emails
/// and per-source throttles), target `email:<email>` or `source:<address>`.
pub fn lockout_event(t: &Throttle) -> plantd_shared::audit::Event {
    use plantd_shared::audit::{Action, Event};
    let org = t.org.as_deref().unwrap_or(crate::model::SYSTEM_ORG);
    let target = match (&t.kind, &t.email) {
        (ThrottleKind::Account, Some(email)) => format!("email:{email}"),
        _ => format!("source:{}", t.source),
    };
    let source = (t.source != Source::Unknown.to_string()).then(|| t.source.clone());
    Event::new(Action::Lockout, org)
        .target(target)
        .origin(source, None)
        .detail(serde_json::json!({
            "kind": t.kind,
            "failures": t.failures,
            "blocked_until": plantd_shared::headers::format_time(t.blocked_until_ms),
        }))
}

/// Creates `key` with `fresh` or updates it, applying `step` with
/// compare-and-set. `step` returning `Err(until)` means "refused until",
/// and nothing is written.
async fn upsert(
    state: &AppState,
    key: &str,
    fresh: Throttle,
    step: impl Fn(&mut Throttle) -> Result<(), u64>,
) -> Result<Result<Throttle, u64>, AppError> {
    for _ in 0..crate::store::CAS_ATTEMPTS {
        match state.store.get::<Throttle>(key).await? {
            None => {
                let mut t = fresh.clone();
                if let Err(until) = step(&mut t) {
                    return Ok(Err(until));
                }
                match state.store.create(key, &t).await {
                    Ok(_) => return Ok(Ok(t)),
                    Err(e) if e.status == StatusCode::CONFLICT => continue,
                    Err(e) => return Err(e),
                }
            }
            Some((mut t, rev)) => {
                if let Err(until) = step(&mut t) {
                    return Ok(Err(until));
                }
                match state.store.update(key, &t, rev).await {
                    Ok(_) => return Ok(Ok(t)),
                    Err(e) if e.status == StatusCode::CONFLICT => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Err(AppError::conflict(format!(
        "{key}: too many concurrent changes"
    )))
}

/// Every throttle record with its id (the part of the key after
/// `throttle.`). Records that no longer refuse anything and have been
/// quiet longer than `forget_after` are deleted on the way.
///
/// # Errors
/// 503 on storage errors.
pub async fn list(state: &AppState) -> Result<Vec<(String, Throttle)>, AppError> {
    let now = plantd_shared::headers::now_ms();
    let forget = ms(state.settings.throttle.forget_after);
    let mut out = Vec::new();
    for key in state.store.keys(PREFIX).await? {
        let Some((t, _)) = state.store.get::<Throttle>(&key).await? else {
            continue;
        };
        if t.blocked_until_ms <= now && now.saturating_sub(t.last_failure_ms) > forget {
            state.store.delete(&key).await?;
            continue;
        }
        let id = key.trim_start_matches(PREFIX).to_owned();
        out.push((id, t));
    }
    Ok(out)
}
