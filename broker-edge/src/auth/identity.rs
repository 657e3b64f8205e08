//! A connection's proven identity: who it is (a token's subject, or a
//! registered certificate's device) and what it may do on the site,
//! compiled once at CONNECT and asked on every PUBLISH and SUBSCRIBE.

use std::sync::Arc;

use plantd_shared::claims::{Claims, Permissions, PrincipalKind};
use plantd_shared::sites;
use plantd_shared::subject::Site;
use plantd_shared::topic::{Filter, Topic};

/// A connection's proven identity: who the token names and what it may do
/// on this site, compiled once at CONNECT.
#[derive(Debug)]
pub struct Identity {
    /// The token's subject (user, service account or device id).
    pub subject: String,
    /// The token's organisation.
    pub org: String,
    /// What the subject is (user, service account, device): with `org`
    /// and `subject`, the principal a re-authentication must name again.
    pub kind: PrincipalKind,
    /// The token id, the key of a revocation.
    pub jti: Arc<str>,
    /// The token's `exp`, seconds since the Unix epoch.
    pub expires: u64,
    /// The enhanced authentication method of the CONNECT
    /// ([`AUTH_METHOD_TOKEN`](crate::auth::AUTH_METHOD_TOKEN)); `None` for a token sent as the password.
    /// Only a connection with a method may re-authenticate.
    pub auth_method: Option<&'static str>,
    /// The bootstrap superadmin ([`sites::is_superadmin`]): admitted on
    /// any organisation's site, and so not closed when the site changes
    /// hands.
    pub superadmin: bool,
    /// The site the permissions are checked for.
    pub(super) site: Site,
    /// The token's MQTT grants, parsed.
    pub(super) permissions: Permissions,
}

impl Identity {
    /// Compiles `claims` for `site`.
    pub fn new(site: Site, claims: &Claims) -> Self {
        Self {
            subject: claims.sub.clone(),
            org: claims.org.clone(),
            kind: claims.kind,
            jti: Arc::from(claims.jti.as_str()),
            expires: claims.exp,
            auth_method: None,
            superadmin: sites::is_superadmin(claims),
            permissions: Permissions::from_claims(claims),
            site,
        }
    }

    /// Whether `other` names the same principal (kind, subject and
    /// organisation): the condition for a re-authentication.
    pub fn same_principal(&self, other: &Identity) -> bool {
        self.kind == other.kind && self.subject == other.subject && self.org == other.org
    }

    /// Whether a site owned by `owner` (`None`: unknown or deleted) admits
    /// this identity — the rule of [`sites::authorize_principal`], which
    /// refuses everybody on a site nobody owns.
    pub fn admitted_by(&self, owner: Option<&str>) -> bool {
        owner.is_some_and(|o| o == self.org || self.superadmin)
    }

    /// May this identity PUBLISH to `topic` on the site? An invalid topic
    /// is never allowed. Answers to site service requests — the Response
    /// Topic `$plantd/reply/<id>` the broker put in a request this device
    /// received — are always allowed: the 128-bit id is known only to the
    /// devices the request went to.
    pub fn can_publish(&self, topic: &str) -> bool {
        if topic
            .strip_prefix(crate::inject::REPLY_PREFIX)
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
        {
            return true;
        }
        Topic::new(topic).is_ok_and(|t| self.permissions.can_publish(&self.site, &t))
    }

    /// May this identity SUBSCRIBE to `filter` (without `$share/`) on the
    /// site?
    pub fn can_subscribe(&self, filter: &Filter) -> bool {
        self.permissions.can_subscribe(&self.site, filter)
    }
}

#[cfg(test)]
mod reply_tests {
    use plantd_shared::claims::{Audience, Claims, PrincipalKind};

    use super::*;

    #[test]
    fn devices_may_answer_service_requests_but_nothing_else_under_plantd() {
        let claims = Claims {
            iss: "t".into(),
            sub: "dev".into(),
            aud: Audience::One("plantd:site:s".into()),
            exp: u64::MAX,
            iat: 0,
            nbf: None,
            jti: "j".into(),
            org: "o".into(),
            kind: PrincipalKind::Device,
            roles: vec![],
            perms: vec![],
            mqtt: Default::default(),
        };
        let id = Identity::new(Site::new("s").expect("site"), &claims);
        assert!(id.can_publish("$plantd/reply/0123456789abcdef0123456789abcdef"));
        assert!(!id.can_publish("$plantd/reply/"), "an id is needed");
        assert!(!id.can_publish("$plantd/reply/a/b"), "one level only");
        assert!(!id.can_publish("$plantd/other"));
        assert!(!id.can_publish("line1/temp"), "no grants, no publish");
    }
}
