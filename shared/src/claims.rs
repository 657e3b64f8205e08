//! JWT claims and the permission checks made against them.
//!
//! A plantd access token carries who the caller is (`sub`, `org`, `roles`),
//! what it may do in the API (`perms`, plantd permission strings), and what
//! it may do over MQTT on each site (`mqtt`). [`Permissions`] compiles the
//! claims once per connection or request, so a PUBLISH is checked against
//! parsed filters, never by re-reading the token.
//!
//! # Permission strings
//! Colon-separated segments, e.g. `state:scope:line1:write` or
//! `identity:user:create`. In a *grant*:
//! * `*` as a segment matches any one segment (`state:scope:*:read`);
//! * a grant that is exactly `*` allows everything (the built-in `admin`);
//! * a final `admin` segment also allows `read`, `write` and `delete` on the
//!   same prefix (`state:scope:line1:admin` allows `state:scope:line1:read`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::subject::Site;
use crate::topic::{Filter, Topic};

/// Reading alert rules, alerts, their history and silences of the
/// caller's organisation (built-in roles: admin, operator, viewer).
pub const ALERTS_READ: &str = "alerts:read";
/// Creating, replacing and deleting alert rules and silences, and
/// acknowledging alerts (built-in roles: admin, operator).
pub const ALERTS_WRITE: &str = "alerts:write";
/// Reading the analytics rules of the caller's organisation (built-in
/// roles: admin, operator, viewer).
pub const ANALYTICS_READ: &str = "analytics:read";
/// Creating, replacing and deleting analytics rules (built-in roles:
/// admin, operator). A rule with an `alert` section also needs
/// [`ALERTS_WRITE`]: it writes its companion alert rule.
pub const ANALYTICS_WRITE: &str = "analytics:write";

/// The key in [`Claims::mqtt`] that applies to every site.
pub const ANY_SITE: &str = "*";

/// What kind of principal a token was issued to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A person who logged in with a password.
    #[default]
    User,
    /// A program using client credentials.
    Service,
    /// A device on a site.
    Device,
}

/// MQTT topic filters a principal may publish to and subscribe to on a site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttGrant {
    /// Filters the principal may PUBLISH to (a topic must match one).
    #[serde(default)]
    pub publish: Vec<String>,
    /// Filters the principal may SUBSCRIBE within (a requested filter must
    /// be covered by one).
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// The audience claim: one string or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` is among the audiences.
    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Audience::One(a) => a == aud,
            Audience::Many(v) => v.iter().any(|a| a == aud),
        }
    }
}

/// The audience a token must carry to be accepted by the edge of `site`.
pub fn site_audience(site: &Site) -> String {
    format!("plantd:site:{site}")
}

/// The audience of tokens for the HTTP API (proxy and functions).
pub const API_AUDIENCE: &str = "plantd:api";

/// The claims of a plantd access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer (the identity service's URL or name).
    pub iss: String,
    /// Subject: the user, service account or device id.
    pub sub: String,
    /// Audience: `plantd:api` and/or `plantd:site:<site>`.
    pub aud: Audience,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Token id, the key of a revocation in `plantd_revoked`.
    pub jti: String,
    /// Organisation (tenant) the principal belongs to.
    pub org: String,
    /// What kind of principal this is.
    #[serde(default)]
    pub kind: PrincipalKind,
    /// Role names, for display and audit; permissions are already expanded.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Granted plantd permission strings.
    #[serde(default)]
    pub perms: Vec<String>,
    /// MQTT grants per site name, or [`ANY_SITE`] for all sites.
    #[serde(default)]
    pub mqtt: BTreeMap<String, MqttGrant>,
}

/// Permissions compiled from [`Claims`]: parsed once, checked often.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    /// Permission grants split into segments.
    grants: Vec<Vec<String>>,
    /// Per-site compiled MQTT grants; `None` key is [`ANY_SITE`].
    mqtt: Vec<(Option<String>, CompiledGrant)>,
}

#[derive(Debug, Clone, Default)]
struct CompiledGrant {
    publish: Vec<Filter>,
    subscribe: Vec<Filter>,
}

impl Permissions {
    /// Compiles the permissions in `claims`. Filters that do not parse are
    /// ignored (they can grant nothing) and logged.
    pub fn from_claims(claims: &Claims) -> Self {
        Self::new(&claims.perms, &claims.mqtt)
    }

    /// Compiles permission strings and MQTT grants.
    pub fn new(perms: &[String], mqtt: &BTreeMap<String, MqttGrant>) -> Self {
        let grants = perms
            .iter()
            .map(|p| p.split(':').map(str::to_owned).collect())
            .collect();
        let parse = |filters: &[String]| -> Vec<Filter> {
            filters
                .iter()
                .filter_map(|f| match Filter::new(f.as_str()) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        tracing::warn!(filter = %f, error = %e, "ignoring invalid MQTT grant filter");
                        None
                    }
                })
                .collect()
        };
        let mqtt = mqtt
            .iter()
            .map(|(site, g)| {
                let key = (site != ANY_SITE).then(|| site.clone());
                (
                    key,
                    CompiledGrant {
                        publish: parse(&g.publish),
                        subscribe: parse(&g.subscribe),
                    },
                )
            })
            .collect();
        Self { grants, mqtt }
    }

    fn site_grants<'a>(&'a self, site: &'a Site) -> impl Iterator<Item = &'a CompiledGrant> + 'a {
        self.mqtt
            .iter()
            .filter(move |(k, _)| k.as_deref().is_none_or(|k| k == site.as_str()))
            .map(|(_, g)| g)
    }

    /// Whether a PUBLISH to `topic` on `site` is allowed: some publish
    /// filter granted for that site (or all sites) matches the topic.
    pub fn can_publish(&self, site: &Site, topic: &Topic) -> bool {
        self.site_grants(site)
            .any(|g| g.publish.iter().any(|f| f.matches(topic)))
    }

    /// Whether a SUBSCRIBE to `filter` on `site` is allowed: the requested
    /// filter is covered by a granted subscribe filter, so it can never
    /// select a topic outside the grant.
    pub fn can_subscribe(&self, site: &Site, filter: &Filter) -> bool {
        self.site_grants(site)
            .any(|g| g.subscribe.iter().any(|w| filter.is_covered_by(w)))
    }

    /// Whether giving someone a PUBLISH grant of `filter` on `site`
    /// (`None`: every site, [`ANY_SITE`]) hands out nothing beyond this
    /// principal's own publish grants: the filter is covered by one of
    /// them, so every topic it lets through ours does too. For a single
    /// site, our grants for that site and for every site count; for every
    /// site, only our grants for every site.
    pub fn covers_publish(&self, site: Option<&Site>, filter: &Filter) -> bool {
        self.grants_for(site)
            .any(|g| g.publish.iter().any(|w| filter.is_covered_by(w)))
    }

    /// [`Permissions::covers_publish`] for a SUBSCRIBE grant.
    pub fn covers_subscribe(&self, site: Option<&Site>, filter: &Filter) -> bool {
        self.grants_for(site)
            .any(|g| g.subscribe.iter().any(|w| filter.is_covered_by(w)))
    }

    /// Our grants that apply to `site`, or to every site (`None`: only
    /// those for [`ANY_SITE`]).
    fn grants_for<'a>(
        &'a self,
        site: Option<&'a Site>,
    ) -> impl Iterator<Item = &'a CompiledGrant> + 'a {
        self.mqtt
            .iter()
            .filter(move |(k, _)| match (k, site) {
                (None, _) => true,
                (Some(k), Some(s)) => k == s.as_str(),
                (Some(_), None) => false,
            })
            .map(|(_, g)| g)
    }

    /// Whether the permission string `required` (e.g.
    /// `state:scope:line1:write`) is granted.
    pub fn allows(&self, required: &str) -> bool {
        let req: Vec<&str> = required.split(':').collect();
        self.grants.iter().any(|g| grant_allows(g, &req))
    }
}

fn grant_allows(grant: &[String], req: &[&str]) -> bool {
    if grant.len() == 1 && grant[0] == "*" {
        return true;
    }
    if grant.len() != req.len() || req.is_empty() {
        return false;
    }
    let last = req.len() - 1;
    grant.iter().zip(req).enumerate().all(|(i, (g, r))| {
        g == "*"
            || g == r
            || (i == last && g == "admin" && matches!(*r, "read" | "write" | "delete"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(p: &[&str], mqtt: &[(&str, &[&str], &[&str])]) -> Permissions {
        let m = mqtt
            .iter()
            .map(|(s, p, sub)| {
                (
                    (*s).to_owned(),
                    MqttGrant {
                        publish: p.iter().map(|x| (*x).to_owned()).collect(),
                        subscribe: sub.iter().map(|x| (*x).to_owned()).collect(),
                    },
                )
            })
            .collect();
        Permissions::new(&p.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>(), &m)
    }

    fn site(s: &str) -> Site {
        Site::new(s).expect("site")
    }

    fn t(s: &str) -> Topic {
        Topic::new(s).expect("topic")
    }

    fn f(s: &str) -> Filter {
        Filter::new(s).expect("filter")
    }

    #[test]
    fn permission_strings() {
        let p = perms(
            &[
                "state:scope:line1:write",
                "state:scope:*:read",
                "identity:user:create",
            ],
            &[],
        );
        assert!(p.allows("state:scope:line1:write"));
        assert!(!p.allows("state:scope:line2:write"));
        assert!(p.allows("state:scope:line2:read"));
        assert!(p.allows("identity:user:create"));
        assert!(!p.allows("identity:user:delete"));
        assert!(!p.allows("state:scope:line1"), "length must match");
        assert!(!p.allows("state:scope:line1:write:extra"));
        let admin = perms(&["state:scope:line1:admin"], &[]);
        assert!(admin.allows("state:scope:line1:delete"));
        assert!(admin.allows("state:scope:line1:admin"));
        assert!(!admin.allows("state:scope:line2:read"));
        assert!(perms(&["*"], &[]).allows("anything:at:all"));
        assert!(!perms(&[], &[]).allows("state:scope:x:read"));
    }

    #[test]
    fn mqtt_publish_per_site() {
        let p = perms(
            &[],
            &[
                ("plant-1", &["line1/+/temp"], &[]),
                ("*", &["status/#"], &[]),
            ],
        );
        assert!(p.can_publish(&site("plant-1"), &t("line1/press/temp")));
        assert!(!p.can_publish(&site("plant-2"), &t("line1/press/temp")));
        assert!(
            !p.can_publish(&site("plant-1"), &t("line1/press/temp/x")),
            "off by one level"
        );
        assert!(p.can_publish(&site("plant-2"), &t("status/ok")));
        assert!(p.can_publish(&site("plant-2"), &t("status")));
    }

    #[test]
    fn mqtt_subscribe_must_be_covered() {
        let p = perms(&[], &[("plant-1", &[], &["line1/#", "alarms/+"])]);
        let s = site("plant-1");
        assert!(p.can_subscribe(&s, &f("line1/#")));
        assert!(p.can_subscribe(&s, &f("line1/+/temp")));
        assert!(p.can_subscribe(&s, &f("alarms/a")));
        assert!(!p.can_subscribe(&s, &f("alarms/#")));
        assert!(!p.can_subscribe(&s, &f("#")));
        assert!(!p.can_subscribe(&site("other"), &f("line1/#")));
    }

    #[test]
    fn handing_out_grants_stays_within_ones_own() {
        let p = perms(
            &[],
            &[
                ("plant-1", &["line1/#"], &["line1/#"]),
                ("*", &["status/+"], &["#"]),
            ],
        );
        let one = site("plant-1");
        assert!(p.covers_publish(Some(&one), &f("line1/press/temp")));
        assert!(p.covers_publish(Some(&one), &f("line1/#")));
        assert!(!p.covers_publish(Some(&one), &f("#")), "wider than ours");
        assert!(
            p.covers_publish(Some(&one), &f("status/ok")),
            "the every-site grant counts"
        );
        assert!(!p.covers_publish(Some(&site("plant-2")), &f("line1/x")));
        assert!(
            !p.covers_publish(None, &f("line1/x")),
            "a one-site grant is not every site's"
        );
        assert!(p.covers_publish(None, &f("status/+")));
        assert!(p.covers_subscribe(None, &f("a/#")));
        assert!(
            !p.covers_subscribe(None, &f("$SYS/#")),
            "# never covers $ topics"
        );
        assert!(!perms(&[], &[]).covers_subscribe(Some(&one), &f("a")));
    }

    #[test]
    fn hash_grant_does_not_cover_sys() {
        let p = perms(&[], &[("*", &["#"], &["#"])]);
        let s = site("a");
        assert!(!p.can_subscribe(&s, &f("$SYS/#")));
        assert!(!p.can_publish(&s, &t("$SYS/x")));
        assert!(p.can_publish(&s, &t("x")));
    }

    #[test]
    fn claims_serde_accepts_string_or_list_audience() {
        let j = r#"{"iss":"i","sub":"u","aud":"plantd:api","exp":1,"iat":0,"jti":"j","org":"o"}"#;
        let c: Claims = serde_json::from_str(j).expect("claims");
        assert!(c.aud.contains(API_AUDIENCE));
        assert_eq!(c.kind, PrincipalKind::User);
        let j = r##"{"iss":"i","sub":"u","aud":["a","b"],"exp":1,"iat":0,"jti":"j","org":"o","mqtt":{"*":{"publish":["#"]}}}"##;
        let c: Claims = serde_json::from_str(j).expect("claims");
        assert!(c.aud.contains("b"));
        assert_eq!(c.mqtt["*"].publish, vec!["#"]);
    }
}
