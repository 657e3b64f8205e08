//! Shared by the site routes: the site name in the path, the one
//! organisation check every site-scoped door makes ([`owned`]), and the
//! parsing of topics and filters, with 4xx answers that say what is wrong.

use plantd_shared::audit;
use plantd_shared::http::Caller;
use plantd_shared::sites::{self, Access};
use plantd_shared::subject::Site;
use plantd_shared::topic::{Filter, Topic};

use crate::{AppError, AppState};

/// Validates the `{site}` path segment.
///
/// # Errors
/// 400 naming the rule.
pub fn site(name: &str) -> Result<Site, AppError> {
    Site::new(name).map_err(|e| AppError::bad_request(e.to_string()))
}

/// The organisation check of every site-scoped door — REST telemetry,
/// commands and service calls, `/v1/ws` subscriptions and commands, the AWS
/// WebSocket routes — made after the permission check: `site` must be
/// registered in `plantd_sites` to the caller's organisation, or the caller
/// is the bootstrap superadmin ([`plantd_shared::sites::authorize`]; such a
/// cross-organisation act is logged for the audit). So `telemetry:*:read`
/// or an MQTT grant for site `*` means "every site of my organisation".
///
/// # Errors
/// 404 for a site nobody registered, 403 for another organisation's, 503
/// when the registry cannot be read.
pub async fn owned(state: &AppState, caller: &Caller, site: &Site) -> Result<Owned, AppError> {
    let record = state.sites.get(site.as_str()).await?.map(|(r, _)| r);
    let access = sites::authorize(&caller.claims, record.as_ref()).map_err(|denied| {
        tracing::info!(site = %site, org = %caller.org(), sub = %caller.claims.sub, %denied, "refused at a site door");
        denied.to_app_error(site.as_str())
    })?;
    let org = record.map(|r| r.org).unwrap_or_default();
    if access == Access::AsSuperadmin {
        tracing::warn!(
            site = %site,
            %org,
            actor = %caller.claims.sub,
            actor_org = %caller.org(),
            cross_org = true,
            "superadmin acting on another organisation's site"
        );
        state
            .audit
            .record(
                audit::Event::new(audit::Action::SiteCrossOrg, org.clone())
                    .by(&caller.claims)
                    .target(format!("site:{site}"))
                    .detail(serde_json::json!({"via": "api"})),
            )
            .await;
    }
    Ok(Owned { access, org })
}

/// What [`owned`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    /// Own organisation's site, or the superadmin acting for another.
    pub access: Access,
    /// The organisation that owns the site.
    pub org: String,
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
