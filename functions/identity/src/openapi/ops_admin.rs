//! The operations of organisations, users, roles, signing keys, login
//! throttles, the audit trail, the JWKS, the health check and the document
//! itself. Like [`super::ops`], annotations only: never routed.
#![allow(dead_code, clippy::unused_async)]

use super::admin::{
    AuditPage, AuditVerification, CreateOrg, CreateUser, Jwks, KeyView, Lockout, Org, OrgCreated,
    Role, RoleBody, Rotated, SetRoles, UpdateUser, UserView,
};
use super::schemas::ErrorBody;

#[utoipa::path(get, path = "/healthz", tag = "service",
    description = "Liveness: `ok` while the process serves requests.",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
pub(super) async fn healthz() {}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "service",
    description = "The public keys that verify plantd's tokens (the signing key, the next one and those retiring). No token needed.",
    responses((status = 200, description = "The key set", body = Jwks)))]
pub(super) async fn jwks() {}

#[utoipa::path(get, path = "/v1/identity/openapi.json", tag = "service",
    description = "This document. No token needed.",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub(super) async fn openapi_document() {}

#[utoipa::path(get, path = "/v1/orgs", tag = "orgs",
    description = "The organisations the caller may see: every one with identity:org:list (the superadmin), else its own.",
    responses((status = 200, description = "Organisations", body = Vec<Org>)),
    security(("bearer" = [])))]
pub(super) async fn list_orgs() {}

#[utoipa::path(post, path = "/v1/orgs", tag = "orgs",
    description = "Creates an organisation, optionally with its first administrator (role admin).",
    request_body = CreateOrg,
    responses(
        (status = 201, description = "Created", body = OrgCreated),
        (status = 400, description = "Bad id, short password, or only one of admin_email and admin_password", body = ErrorBody),
        (status = 403, description = "Missing identity:org:create", body = ErrorBody),
        (status = 409, description = "The organisation or the administrator's email exists", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn create_org() {}

#[utoipa::path(get, path = "/v1/orgs/{id}", tag = "orgs",
    params(("id" = String, Path, description = "The organisation id")),
    responses(
        (status = 200, description = "The organisation", body = Org),
        (status = 404, description = "Unknown, or another organisation without identity:org:list", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn get_org() {}

#[utoipa::path(get, path = "/v1/users", tag = "users",
    responses(
        (status = 200, description = "The organisation's users", body = Vec<UserView>),
        (status = 403, description = "Missing identity:user:read", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list_users() {}

#[utoipa::path(post, path = "/v1/users", tag = "users",
    description = "Creates a user in the caller's organisation.",
    request_body = CreateUser,
    responses(
        (status = 201, description = "Created", body = UserView),
        (status = 400, description = "Bad email, short password or unknown role", body = ErrorBody),
        (status = 403, description = "Missing identity:user:create, or a role granting more than the caller holds", body = ErrorBody),
        (status = 409, description = "A user with this email exists", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn create_user() {}

#[utoipa::path(get, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "The user id")),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 403, description = "Missing identity:user:read", body = ErrorBody),
        (status = 404, description = "Not in the caller's organisation", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn get_user() {}

#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users",
    description = "Activates or deactivates a user, sets attributes or resets the password (compare-and-set: concurrent updates of different fields both land). Deactivating or a new password revokes the user's tokens (a new password ends their refresh tokens too). Only someone holding every permission and MQTT grant of the user's roles may change them.",
    params(("id" = String, Path, description = "The user id")),
    request_body = UpdateUser,
    responses(
        (status = 200, description = "Updated", body = UserView),
        (status = 400, description = "Short password", body = ErrorBody),
        (status = 403, description = "Missing identity:user:update, or the user holds a permission or MQTT grant the caller lacks", body = ErrorBody),
        (status = 404, description = "Not in the caller's organisation", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn update_user() {}

#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "The user id")),
    responses(
        (status = 204, description = "Deleted (their tokens are revoked)"),
        (status = 403, description = "Missing identity:user:delete, or the user holds a permission or MQTT grant the caller lacks", body = ErrorBody),
        (status = 404, description = "Not in the caller's organisation", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn delete_user() {}

#[utoipa::path(put, path = "/v1/users/{id}/roles", tag = "users",
    description = "Replaces a user's roles; removing one revokes their tokens.",
    params(("id" = String, Path, description = "The user id")),
    request_body = SetRoles,
    responses(
        (status = 200, description = "Updated", body = UserView),
        (status = 400, description = "Unknown role", body = ErrorBody),
        (status = 403, description = "Missing identity:user:update, a role granting more than the caller holds, or the user holds a permission or MQTT grant the caller lacks", body = ErrorBody),
        (status = 404, description = "Not in the caller's organisation", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn set_user_roles() {}

#[utoipa::path(get, path = "/v1/roles", tag = "roles",
    description = "The built-in roles and the organisation's own.",
    responses(
        (status = 200, description = "Roles", body = Vec<Role>),
        (status = 403, description = "Missing identity:role:read", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list_roles() {}

#[utoipa::path(post, path = "/v1/roles", tag = "roles",
    description = "Creates a role. Nobody can put a permission or an MQTT grant in a role that they do not hold themselves.",
    request_body = RoleBody,
    responses(
        (status = 201, description = "Created", body = Role),
        (status = 400, description = "Bad name, site or topic filter", body = ErrorBody),
        (status = 403, description = "Missing identity:role:create, or a permission or MQTT grant the caller lacks", body = ErrorBody),
        (status = 409, description = "It exists, or is a built-in role", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn create_role() {}

#[utoipa::path(get, path = "/v1/roles/{name}", tag = "roles",
    params(("name" = String, Path, description = "The role name")),
    responses(
        (status = 200, description = "The role", body = Role),
        (status = 403, description = "Missing identity:role:read", body = ErrorBody),
        (status = 404, description = "Unknown", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn get_role() {}

#[utoipa::path(put, path = "/v1/roles/{name}", tag = "roles",
    description = "Replaces a custom role; when it grants less than before, the tokens of its holders are revoked.",
    params(("name" = String, Path, description = "The role name")),
    request_body = RoleBody,
    responses(
        (status = 200, description = "Replaced", body = Role),
        (status = 400, description = "Bad site or topic filter", body = ErrorBody),
        (status = 403, description = "Missing identity:role:update, or a permission or MQTT grant the caller lacks", body = ErrorBody),
        (status = 404, description = "Unknown", body = ErrorBody),
        (status = 409, description = "A built-in role", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn replace_role() {}

#[utoipa::path(delete, path = "/v1/roles/{name}", tag = "roles",
    description = "Deletes a custom role; the tokens of its holders are revoked.",
    params(("name" = String, Path, description = "The role name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Missing identity:role:delete", body = ErrorBody),
        (status = 404, description = "Unknown", body = ErrorBody),
        (status = 409, description = "A built-in role", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn delete_role() {}

#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    description = "The published signing keys (signing, next, previous with the time each leaves the JWKS). No key material.",
    responses(
        (status = 200, description = "Keys", body = Vec<KeyView>),
        (status = 403, description = "Missing identity:keys:read", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list_keys() {}

#[utoipa::path(post, path = "/v1/keys/rotate", tag = "keys",
    description = "Rotates the signing key: the next key starts signing, a new next key is published, the old signing key stays in the JWKS until every token it signed has expired.",
    responses(
        (status = 200, description = "Rotated", body = Rotated),
        (status = 403, description = "Missing identity:keys:rotate", body = ErrorBody),
        (status = 409, description = "The key comes from the environment and cannot be rotated", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn rotate_keys() {}

#[utoipa::path(get, path = "/v1/lockouts", tag = "lockouts",
    description = "The login throttles the caller may see (its organisation's emails; every one with identity:lockout:all), refused ones first.",
    responses(
        (status = 200, description = "Throttles", body = Vec<Lockout>),
        (status = 403, description = "Missing identity:user:read", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list_lockouts() {}

#[utoipa::path(delete, path = "/v1/lockouts/{id}", tag = "lockouts",
    description = "Clears a login throttle (the failures it counted are forgotten).",
    params(("id" = String, Path, description = "The throttle id, from GET /v1/lockouts")),
    responses(
        (status = 204, description = "Cleared"),
        (status = 403, description = "Missing identity:user:update", body = ErrorBody),
        (status = 404, description = "Unknown, or one the caller cannot see", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn clear_lockout() {}

#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    description = "One organisation's audit records, oldest first, filtered and paged.",
    params(
        ("org" = Option<String>, Query, description = "The organisation (default: the caller's; another one needs identity:org:list)"),
        ("actor" = Option<String>, Query, description = "Only this actor id (`*` at the end: a prefix)"),
        ("action" = Option<String>, Query, description = "Only this action (`auth.login`), or a prefix (`auth.*`)"),
        ("target" = Option<String>, Query, description = "Only this target (`user:<id>`; `*` at the end: a prefix)"),
        ("since" = Option<String>, Query, description = "Records at or after this RFC 3339 time"),
        ("until" = Option<String>, Query, description = "Records at or before this RFC 3339 time"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Records per page (default 100)")),
    responses(
        (status = 200, description = "A page of records", body = AuditPage),
        (status = 400, description = "A malformed parameter (named in the message)", body = ErrorBody),
        (status = 403, description = "Missing identity:audit:read, or identity:org:list for another organisation", body = ErrorBody),
        (status = 404, description = "Unknown organisation", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list_audit() {}

#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    description = "Checks an organisation's audit hash chain end to end.",
    params(("org" = Option<String>, Query, description = "The organisation (default: the caller's; another one needs identity:org:list)")),
    responses(
        (status = 200, description = "The verdict", body = AuditVerification),
        (status = 400, description = "A malformed parameter", body = ErrorBody),
        (status = 403, description = "Missing identity:audit:read, or identity:org:list for another organisation", body = ErrorBody),
        (status = 404, description = "Unknown organisation", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn verify_audit() {}
