//! The analytics rules bucket (`plantd_analytics_rules`, `<org>.<name>`,
//! value [`StoredRule`] JSON) with compare-and-set: every write names the
//! revision it replaces (or that there is none), so two writers never both
//! win, and `If-Match` makes the revision the client's.

use async_nats::jetstream::kv::{self, Operation};
use futures::StreamExt as _;
use plantd_analytics::StoredRule;
use plantd_analytics::stored::key;
use plantd_shared::streams;

use crate::state_store::Precondition;
use crate::{AppError, AppState};

/// The bucket (made by `plantd_shared::streams::ensure`).
///
/// # Errors
/// 503 when it is missing or JetStream is unreachable.
pub async fn bucket(state: &AppState) -> Result<kv::Store, AppError> {
    state
        .js
        .get_key_value(streams::ANALYTICS_RULES_BUCKET)
        .await
        .map_err(|e| AppError::unavailable(format!("{}: {e}", streams::ANALYTICS_RULES_BUCKET)))
}

/// `org`'s rule `name` with its revision (`None`: never written, or
/// deleted).
///
/// # Errors
/// 503; 500 for a stored value this version cannot read.
pub async fn get(
    kv: &kv::Store,
    org: &str,
    name: &str,
) -> Result<Option<(StoredRule, u64)>, AppError> {
    let k = key(org, name);
    let Some(entry) = kv.entry(&k).await.map_err(AppError::unavailable)? else {
        return Ok(None);
    };
    if entry.operation != Operation::Put {
        return Ok(None);
    }
    let rule = serde_json::from_slice(&entry.value)
        .map_err(|e| AppError::internal(format!("stored analytics rule {k}: {e}")))?;
    Ok(Some((rule, entry.revision)))
}

/// Every rule of `org` with its revision, by name. An unreadable one is
/// skipped with a warning.
///
/// # Errors
/// 503.
pub async fn list(kv: &kv::Store, org: &str) -> Result<Vec<(StoredRule, u64)>, AppError> {
    let prefix = format!("{org}.");
    let mut keys = kv.keys().await.map_err(AppError::unavailable)?;
    let mut names = Vec::new();
    while let Some(k) = keys.next().await {
        let k = k.map_err(AppError::unavailable)?;
        if let Some(name) = k.strip_prefix(&prefix) {
            names.push(name.to_owned());
        }
    }
    names.sort();
    let mut out = Vec::new();
    for name in names {
        match get(kv, org, &name).await {
            Ok(Some(x)) => out.push(x),
            Ok(None) => {}
            Err(e) if e.status.is_server_error() && e.code == "internal" => {
                tracing::warn!(%org, rule = %name, "skipping an unreadable analytics rule");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn changed(name: &str) -> AppError {
    AppError::conflict(format!(
        "analytics rule {name} changed concurrently; read it again"
    ))
}

/// The revision a write must replace under `pre`, given the current one
/// (`None`: the rule does not exist): `Some(rev)` to update, `None` to
/// create.
///
/// # Errors
/// 409 when `pre` does not hold (exists under `If-None-Match: *`, another
/// revision than `If-Match`'s); 404 for `If-Match` on a rule that is not
/// there.
pub fn expected(
    name: &str,
    pre: Precondition,
    current: Option<u64>,
) -> Result<Option<u64>, AppError> {
    match (pre, current) {
        (Precondition::None, c) => Ok(c),
        (Precondition::Absent, None) => Ok(None),
        (Precondition::Absent, Some(_)) => Err(AppError::conflict(format!(
            "analytics rule {name} exists (If-None-Match: *)"
        ))),
        (Precondition::Exists | Precondition::Revision(_), None) => {
            Err(AppError::not_found(format!("analytics rule {name}")))
        }
        (Precondition::Exists, Some(c)) => Ok(Some(c)),
        (Precondition::Revision(r), Some(c)) if r == c => Ok(Some(c)),
        (Precondition::Revision(r), Some(c)) => Err(AppError::conflict(format!(
            "analytics rule {name} is at revision {c}, not {r} (If-Match); read it again"
        ))),
    }
}

/// Stores `rule` replacing revision `expected` (`None`: it must not
/// exist); the new revision.
///
/// # Errors
/// 409 when another writer changed it first, 503.
pub async fn write(
    kv: &kv::Store,
    rule: &StoredRule,
    expected: Option<u64>,
) -> Result<u64, AppError> {
    let body: bytes::Bytes = serde_json::to_vec(rule).map_err(AppError::internal)?.into();
    let k = rule.key();
    match expected {
        Some(rev) => kv.update(&k, body, rev).await.map_err(|e| {
            if e.kind() == kv::UpdateErrorKind::WrongLastRevision {
                changed(&rule.rule.name)
            } else {
                AppError::unavailable(e)
            }
        }),
        None => kv.create(&k, body).await.map_err(|e| {
            if e.kind() == kv::CreateErrorKind::AlreadyExists {
                changed(&rule.rule.name)
            } else {
                AppError::unavailable(e)
            }
        }),
    }
}

/// Deletes `org`'s rule `name` if it is still at `revision`.
///
/// # Errors
/// 409 when it changed since, 503.
pub async fn delete(kv: &kv::Store, org: &str, name: &str, revision: u64) -> Result<(), AppError> {
    match kv
        .delete_expect_revision(key(org, name), Some(revision))
        .await
    {
        Ok(()) => Ok(()),
        Err(e) => match get(kv, org, name).await? {
            Some((_, now)) if now != revision => Err(changed(name)),
            None => Err(changed(name)),
            Some(_) => Err(AppError::unavailable(e)),
        },
    }
}

/// Puts back what a write replaced (`previous`; `None`: removes what it
/// made at `revision`), so a request that failed half way leaves nothing
/// behind. Best effort: a failure is logged.
pub async fn undo(
    kv: &kv::Store,
    written: &StoredRule,
    revision: u64,
    previous: Option<&StoredRule>,
) {
    let outcome = match previous {
        Some(p) => write(kv, p, Some(revision)).await.map(drop),
        None => delete(kv, &written.org, &written.rule.name, revision).await,
    };
    if let Err(e) = outcome {
        tracing::error!(org = %written.org, rule = %written.rule.name, error = %e.message, "could not undo an analytics rule write whose companion alert failed");
    }
}
