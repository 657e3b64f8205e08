//! Shared by the site routes: the site name in the path and the parsing of
//! topics and filters, with 400s that say what is wrong.

use plantd_shared::subject::Site;
use plantd_shared::topic::{Filter, Topic};

use crate::AppError;

/// Validates the `{site}` path segment.
///
/// # Errors
/// 400 naming the rule.
pub fn site(name: &str) -> Result<Site, AppError> {
    Site::new(name).map_err(|e| AppError::bad_request(e.to_string()))
}

/// Validates a topic (no wildcards, not a `$` topic).
///
/// # Errors
/// 400.
pub fn topic(text: &str) -> Result<Topic, AppError> {
    let topic = Topic::new(text).map_err(|e| AppError::bad_request(format!("topic: {e}")))?;
    if topic.is_system() {
        return Err(AppError::bad_request(
            "topics starting with '$' are reserved for the broker",
        ));
    }
    Ok(topic)
}

/// Validates a topic filter.
///
/// # Errors
/// 400.
pub fn filter(text: &str) -> Result<Filter, AppError> {
    Filter::new(text).map_err(|e| AppError::bad_request(format!("filter: {e}")))
}
