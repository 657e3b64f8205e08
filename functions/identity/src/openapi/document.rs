//! The document, built from the annotations in `ops` and `ops_admin`
//! (feature `openapi` only: the shipping bootstrap serves the committed
//! file instead, decision 0046).
//!
//! `cargo run -p plantd-identity --features openapi -- --print-openapi >
//! functions/identity/openapi.json` regenerates the committed file;
//! `scripts/test` runs the same and fails on a difference.

use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use super::schemas::ErrorBody;
use super::{ops, ops_admin};

/// Adds the bearer-token scheme the operations name.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// An error answer with the `{error, message}` body.
fn error(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// Adds the errors every operation of a kind can answer, where the
/// operation does not describe them itself: `401` to those that need a
/// token, `400` (malformed JSON) and `413` (body over 64 KiB) to those
/// with a body, `503` (the store is unreachable) to both.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        for item in api.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let body = op.request_body.is_some();
                let mut add = |status: &str, description: &str| {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description));
                };
                if secured {
                    add("401", "Missing, invalid, expired or revoked token");
                }
                if body {
                    add("400", "Malformed JSON body (the message names the field)");
                    add("413", "Body larger than 64 KiB");
                }
                if secured || body {
                    add("503", "The identity store (NATS) is unavailable; retry");
                }
            }
        }
    }
}

/// Operations whose body may be left out (the route reads an empty body
/// as the defaults): `POST /v1/auth/logout`.
const OPTIONAL_BODIES: [&str; 1] = ["/v1/auth/logout"];

/// Marks the bodies of [`OPTIONAL_BODIES`] as not required (utoipa marks
/// every `request_body = T` required).
struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        for path in OPTIONAL_BODIES {
            let body = api
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.post.as_mut())
                .and_then(|op| op.request_body.as_mut());
            if let Some(body) = body {
                body.required = Some(utoipa::openapi::Required::False);
            }
        }
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "plantd identity API",
        description = "Login and tokens, organisations, users, roles, service accounts, devices, sites, login throttles, signing keys and the audit trail. Every error answers `{\"error\", \"message\"}` (ErrorBody). See docs/api.md."
    ),
    paths(
        ops::login, ops::refresh, ops::logout, ops::whoami, ops::token, ops::password,
        ops::list_service_accounts, ops::create_service_account, ops::update_service_account,
        ops::delete_service_account, ops::revoke_service_account,
        ops::list_devices, ops::create_device, ops::update_device, ops::delete_device,
        ops::revoke_device, ops::revoke_user,
        ops::list_sites, ops::create_site, ops::get_site, ops::update_site, ops::delete_site,
        ops_admin::healthz, ops_admin::jwks, ops_admin::openapi_document,
        ops_admin::list_orgs, ops_admin::create_org, ops_admin::get_org,
        ops_admin::list_users, ops_admin::create_user, ops_admin::get_user,
        ops_admin::update_user, ops_admin::delete_user, ops_admin::set_user_roles,
        ops_admin::list_roles, ops_admin::create_role, ops_admin::get_role,
        ops_admin::replace_role, ops_admin::delete_role,
        ops_admin::list_keys, ops_admin::rotate_keys,
        ops_admin::list_lockouts, ops_admin::clear_lockout,
        ops_admin::list_audit, ops_admin::verify_audit
    ),
    components(schemas(ErrorBody)),
    modifiers(&Bearer, &CommonErrors, &OptionalBodies),
    tags(
        (name = "auth", description = "Login, refresh-token rotation, logout and client-credential tokens"),
        (name = "orgs", description = "Organisations (tenants)"),
        (name = "users", description = "Users of the caller's organisation"),
        (name = "roles", description = "Built-in and custom roles"),
        (name = "clients", description = "Service accounts and devices"),
        (name = "sites", description = "Sites and their organisations"),
        (name = "lockouts", description = "Login throttles, for administrators"),
        (name = "keys", description = "The signing keys, for the platform's operators"),
        (name = "audit", description = "The audit trail and its hash chain"),
        (name = "service", description = "Health, the JWKS and this document (no token)")
    )
)]
pub struct ApiDoc;

/// The document as pretty-printed JSON with a final newline: the bytes
/// `functions/identity/openapi.json` must hold.
///
/// # Errors
/// When the document cannot be serialised (it always can).
pub fn generate() -> Result<String, serde_json::Error> {
    ApiDoc::openapi().to_pretty_json().map(|s| s + "\n")
}
