//! `/v1/grants`: create (break-glass, admins only), list, revoke.
//!
//! Grants made by approving a request appear here too, with `approved_by`.
//!
//! Callers see their own grants, admins and approvers everyone's; a grant
//! someone may not see is `404` on revoke, exactly like one that never was.
//!
//! The access model does the work and writes the audit records; this file
//! only decides who may ask and turns answers into HTTP.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::AdminState;
use super::auth::Caller;
use super::error::ApiError;
use super::json::{self, JsonBody};
use crate::access::{AccessModel, Grant, NewGrant};

pub(super) fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/v1/grants", get(list).post(create))
        .route("/v1/grants/{id}/revoke", post(revoke))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateGrant {
    identity: String,
    target: String,
    level: String,
    /// Like "30m" or "2h".
    duration: String,
    /// Left to the access model to insist on, so a missing and an empty
    /// reason get the same answer.
    #[serde(default)]
    reason: String,
}

#[derive(Serialize)]
struct GrantList<'a> {
    grants: Vec<&'a Grant>,
}

async fn create(
    State(state): State<Arc<AdminState>>,
    caller: Caller,
    body: Result<JsonBody<CreateGrant>, ApiError>,
) -> Result<Response, ApiError> {
    caller.require_admin("grant access directly")?;
    let JsonBody(body) = body?;
    let duration = json::duration(&body.duration)?;
    let new = NewGrant {
        identity: body.identity,
        target: body.target,
        level: body.level,
        duration,
        reason: body.reason,
        granted_by: caller.name().to_owned(),
    };
    let grant = state.access(move |a| a.grant(new)).await??;
    tracing::info!(grant = %grant.id, identity = %grant.identity, target = %grant.target,
        level = %grant.level, by = %grant.granted_by, "admin API: grant created");
    Ok((StatusCode::CREATED, Json(&*grant)).into_response())
}

async fn list(State(state): State<Arc<AdminState>>, caller: Caller) -> Response {
    let active = visible(&state, &caller).await;
    let grants = active.iter().map(|g| &**g).collect();
    Json(GrantList { grants }).into_response()
}

/// The active grants `caller` sees, oldest first.
pub(super) async fn visible(state: &AdminState, caller: &Caller) -> Vec<Arc<Grant>> {
    // Best effort: the grants this proxy knows if the store cannot be asked.
    let _ = state.access(|a| a.catch_up_for_reading()).await;
    let access = &state.shared.access;
    let mut active = access.grants.active(crate::access::clock::now());
    active.retain(|g| may_see(caller, access, g));
    active
}

/// Whose grants a caller sees: their own, everyone's for admins and
/// approvers, and those they may revoke.
fn may_see(caller: &Caller, access: &AccessModel, grant: &Grant) -> bool {
    caller.may_act_for(&grant.identity) || access.may_revoke(&caller.identity, grant)
}

async fn revoke(
    State(state): State<Arc<AdminState>>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let grant = revoke_as(&state, &caller, id).await?;
    Ok(Json(&*grant).into_response())
}

/// The active grant `id` if `caller` sees it; else the `404` a grant that
/// never was gets.
pub(super) async fn active_seen_by(
    state: &AdminState,
    caller: &Caller,
    id: &str,
) -> Result<Arc<Grant>, ApiError> {
    let not_found = || {
        ApiError::not_found(
            "grant not found",
            format!(
                "grant \"{id}\" does not exist or has already ended; list active grants with GET /v1/grants"
            ),
        )
    };
    // With a fleet's store, a grant made on another proxy a moment ago is
    // known here once this proxy has caught up.
    state.access(|a| a.catch_up_now()).await??;
    let access = &state.shared.access;
    access
        .grants
        .get(id)
        .filter(|g| g.expires_at > crate::access::clock::now())
        // A grant the caller may not see is not found, like one that never was.
        .filter(|g| may_see(caller, access, g))
        .ok_or_else(not_found)
}

/// Revoke the grant `id` as `caller`, if they may (the API's and the
/// approver page's one way to do it).
pub(super) async fn revoke_as(
    state: &AdminState,
    caller: &Caller,
    id: String,
) -> Result<Arc<Grant>, ApiError> {
    let grant = active_seen_by(state, caller, &id).await?;
    let access = &state.shared.access;
    if !access.may_revoke(&caller.identity, &grant) {
        return Err(ApiError::forbidden(format!(
            "{} may not revoke a grant of {}; only the grantee, an approver of its policy or an admin may",
            caller.name(),
            grant.identity
        )));
    }
    let by = caller.name().to_owned();
    let grant = state.access(move |a| a.revoke(&id, &by)).await??;
    tracing::info!(grant = %grant.id, identity = %grant.identity, by = %caller.name(), "admin API: grant revoked");
    Ok(grant)
}
