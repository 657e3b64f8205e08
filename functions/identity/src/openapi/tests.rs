//! The document's schemas agree with the routes' own types, and the
//! committed document is what the annotations make (feature `openapi`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::DOCUMENT;
use super::admin::*;
use super::schemas::*;
use serde::de::DeserializeOwned;

/// `documented`'s JSON is read by the route's own type `T`.
fn accepted<T: DeserializeOwned>(documented: &impl Serialize) {
    let json = serde_json::to_value(documented).expect("serialize");
    if let Err(e) = serde_json::from_value::<T>(json.clone()) {
        panic!(
            "{json} (as documented) is refused by {}: {e}",
            std::any::type_name::<T>()
        );
    }
}

/// The route's answer `real` is read by the documented schema `D`.
fn described<D: DeserializeOwned>(real: &impl Serialize) {
    let json = serde_json::to_value(real).expect("serialize");
    if let Err(e) = serde_json::from_value::<D>(json.clone()) {
        panic!(
            "{json} (a real answer) does not match {}: {e}",
            std::any::type_name::<D>()
        );
    }
}

#[test]
fn documented_bodies_are_what_the_routes_accept() {
    use crate::routes::{auth, clients, sites};
    let s = |v: &str| v.to_owned();
    accepted::<auth::LoginRequest>(&LoginRequest {
        email: s("a@b"),
        password: s("p"),
        sites: vec![s("x")],
    });
    accepted::<auth::RefreshRequest>(&RefreshRequest {
        refresh_token: s("r"),
    });
    accepted::<auth::LogoutRequest>(&LogoutRequest {
        refresh_token: Some(s("r")),
    });
    accepted::<auth::TokenRequest>(&TokenRequest {
        grant_type: s("client_credentials"),
        client_id: s("c"),
        client_secret: s("s"),
        sites: vec![s("x")],
    });
    accepted::<auth::PasswordRequest>(&PasswordRequest {
        current_password: s("a"),
        new_password: s("b"),
    });
    accepted::<clients::CreateServiceAccount>(&CreateServiceAccount {
        name: s("n"),
        roles: vec![s("viewer")],
    });
    accepted::<clients::UpdateServiceAccount>(&UpdateServiceAccount {
        active: Some(false),
        roles: Some(vec![]),
    });
    accepted::<clients::CreateDevice>(&CreateDevice {
        name: s("n"),
        site: s("x"),
        publish: vec![s("a/#")],
        subscribe: vec![s("b/#")],
        certificate_sha256: Some(s("ab").repeat(32)),
    });
    accepted::<clients::UpdateDevice>(&UpdateDevice {
        active: Some(true),
        certificate_sha256: Some(String::new()),
    });
    accepted::<sites::CreateSite>(&CreateSite {
        id: s("x"),
        org: Some(s("o")),
        name: s("n"),
        description: s("d"),
        labels: BTreeMap::from([(s("k"), s("v"))]),
    });
    accepted::<sites::UpdateSite>(&UpdateSite {
        name: Some(s("n")),
        description: Some(s("d")),
        labels: Some(BTreeMap::new()),
    });
}

#[test]
fn real_answers_match_the_documented_schemas() {
    use crate::routes::{clients, users};
    let s = |v: &str| v.to_owned();
    described::<TokenResponse>(&crate::tokens::TokenResponse {
        access_token: s("a"),
        token_type: "Bearer",
        expires_in: 300,
        refresh_token: Some(s("r")),
    });
    described::<Credentials>(&clients::Credentials {
        client_id: s("c"),
        client_secret: s("s"),
    });
    described::<ServiceAccountView>(&clients::ServiceAccountView {
        client_id: s("c"),
        name: s("n"),
        roles: vec![],
        active: true,
    });
    described::<DeviceView>(&clients::DeviceView {
        client_id: s("c"),
        name: s("n"),
        site: s("x"),
        publish: vec![],
        subscribe: vec![],
        active: true,
    });
    described::<Revoked>(&users::Revoked { revoked: 2 });
    described::<SiteRecord>(&plantd_shared::sites::SiteRecord {
        id: s("x"),
        org: s("o"),
        name: s("n"),
        description: s("d"),
        labels: BTreeMap::new(),
        created_ms: 1,
    });
    described::<ErrorBody>(&serde_json::json!({"error": "conflict", "message": "m"}));
}

#[test]
fn the_document_names_every_operation_once() {
    let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("JSON");
    let ops: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| item.as_object().map_or(0, serde_json::Map::len))
        .sum();
    assert_eq!(ops, 45, "{doc}");
    assert_eq!(doc["openapi"], "3.1.0");
}

#[test]
fn documented_admin_bodies_are_what_the_routes_accept() {
    use crate::routes::{orgs, roles, users};
    let s = |v: &str| v.to_owned();
    accepted::<orgs::CreateOrg>(&CreateOrg {
        id: s("acme"),
        name: s("Acme"),
        admin_email: Some(s("a@acme.test")),
        admin_password: Some(s("p")),
    });
    accepted::<users::CreateUser>(&CreateUser {
        email: s("a@b.test"),
        password: s("p"),
        roles: Some(vec![s("viewer")]),
        attributes: BTreeMap::from([(s("k"), s("v"))]),
    });
    accepted::<users::UpdateUser>(&UpdateUser {
        active: Some(false),
        attributes: BTreeMap::from([(s("k"), None), (s("j"), Some(s("v")))]),
        password: Some(s("p")),
    });
    accepted::<users::SetRoles>(&SetRoles {
        roles: vec![s("operator")],
    });
    accepted::<roles::RoleBody>(&RoleBody {
        name: s("line"),
        description: s("d"),
        perms: vec![s("state:read")],
        mqtt: BTreeMap::from([(
            s("*"),
            MqttGrant {
                publish: vec![s("a/#")],
                subscribe: vec![s("b/#")],
            },
        )]),
    });
}

/// An audit record as the shared audit module writes it.
fn record() -> plantd_shared::audit::Record {
    plantd_shared::audit::Record {
        v: 1,
        id: "0".repeat(32),
        n: 3,
        time: "2026-12-07T10:00:00.000Z".to_owned(),
        org: "acme".to_owned(),
        actor: "u1".to_owned(),
        actor_kind: plantd_shared::audit::ActorKind::User,
        actor_org: Some("root".to_owned()),
        action: "user.create".to_owned(),
        target: "user:u2".to_owned(),
        outcome: plantd_shared::audit::Outcome::Denied,
        source: Some("10.0.0.1".to_owned()),
        request_id: Some("r".to_owned()),
        detail: Some(serde_json::json!({"roles": ["viewer"]})),
        prev: "f".repeat(64),
    }
}

#[test]
fn real_admin_answers_match_the_documented_schemas() {
    use crate::routes::{audit, lockouts, orgs};
    use plantd_shared::audit::{Broken, BrokenReason, Stored};
    let s = |v: &str| v.to_owned();
    let org = crate::model::Org {
        id: s("acme"),
        name: s("Acme"),
        created_ms: 1,
    };
    described::<Org>(&org);
    described::<OrgCreated>(&orgs::Created {
        org: org.clone(),
        admin_id: None,
    });
    described::<OrgCreated>(&orgs::Created {
        org,
        admin_id: Some(s("u")),
    });
    described::<UserView>(&crate::model::UserView {
        id: s("u"),
        org: s("acme"),
        email: s("a@b.test"),
        active: true,
        roles: vec![s("admin")],
        attributes: BTreeMap::from([(s("k"), s("v"))]),
    });
    for name in crate::model::BUILTIN_ROLES {
        let role = crate::model::builtin_role(name).expect("built in");
        described::<Role>(&role);
    }
    for role in ["signing", "next", "previous"] {
        described::<KeyView>(&crate::keys::KeyView {
            kid: s("k"),
            role,
            retire_at: Some(5),
        });
    }
    described::<Rotated>(&crate::keys::Rotated {
        signing_kid: s("a"),
        next_kid: s("b"),
        retired_kid: s("c"),
        retire_at: 9,
    });
    for kind in [
        crate::throttle::ThrottleKind::Account,
        crate::throttle::ThrottleKind::Source,
    ] {
        described::<Lockout>(&lockouts::LockoutView {
            id: s("acct.x"),
            throttle: crate::throttle::Throttle {
                kind,
                email: Some(s("a@b.test")),
                org: Some(s("acme")),
                source: s("10.0.0.1"),
                failures: 5,
                since_ms: 1,
                last_failure_ms: 2,
                blocked_until_ms: 3,
            },
            retry_after_secs: 4,
        });
    }
    described::<AuditPage>(&audit::AuditPage {
        org: s("acme"),
        records: vec![Stored {
            seq: 7,
            hash: "a".repeat(64),
            record: record(),
        }],
        next_cursor: Some(s("c")),
    });
    for reason in [
        BrokenReason::Unreadable { error: s("e") },
        BrokenReason::WrongOrg { found: s("x") },
    ] {
        described::<AuditVerification>(&audit::VerifyAnswer {
            ok: false,
            org: s("acme"),
            records: 3,
            last_n: 2,
            last_hash: "b".repeat(64),
            broken: Some(Broken {
                seq: 8,
                hash: "c".repeat(64),
                reason,
                record: Some(record()),
            }),
        });
    }
    let claims = plantd_shared::claims::Claims {
        iss: s("plantd-identity"),
        sub: s("u"),
        aud: plantd_shared::claims::Audience::Many(vec![s("plantd:api")]),
        exp: 2,
        iat: 1,
        nbf: Some(1),
        jti: s("j"),
        org: s("acme"),
        kind: plantd_shared::claims::PrincipalKind::Device,
        roles: vec![s("device")],
        perms: vec![s("state:read")],
        mqtt: BTreeMap::from([(s("*"), plantd_shared::claims::MqttGrant::default())]),
    };
    described::<Claims>(&claims);
    let key = plantd_shared::jwt::SigningKey::generate_ed25519("k1").expect("key");
    let jwks = plantd_shared::jwt::jwks_of([&key]).expect("jwks");
    described::<Jwks>(&jwks);
}

/// The committed `functions/identity/openapi.json` is what the
/// annotations make: the drift check `scripts/test` runs
/// (`cargo nextest run -p plantd-identity --features openapi --lib`).
#[cfg(feature = "openapi")]
#[test]
fn the_committed_document_is_what_the_annotations_make() {
    let made = super::document::generate().expect("document");
    assert!(
        made == DOCUMENT,
        "functions/identity/openapi.json is out of date: regenerate it with \
         `cargo run -p plantd-identity --features openapi -- --print-openapi > functions/identity/openapi.json`, \
         then the SDKs (docs/sdk.md), and commit the result"
    );
}
