//! `/v1/requests`: ask for access, list and read requests, decide them.
//!
//! The access model owns the rules — which policy applies, who may approve,
//! that nobody approves their own request, when a grant is created — and
//! writes the audit records; this file turns HTTP into its calls and its
//! answers (`AccessError`) into the API's statuses.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::AdminState;
use super::auth::Caller;
use super::error::ApiError;
use super::json::{self, JsonBody, OptionalJsonBody};
use crate::access::{NewRequest, Request, RequestState};

pub(super) fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/v1/requests", get(list).post(create))
        .route("/v1/requests/{id}", get(show))
        .route("/v1/requests/{id}/approve", post(approve))
        .route("/v1/requests/{id}/deny", post(deny))
        .route("/v1/requests/{id}/cancel", post(cancel))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    target: String,
    level: String,
    /// Like "30m" or "2h".
    duration: String,
    /// Left to the access model to insist on, so a missing and an empty
    /// reason get the same answer.
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    comment: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
}

#[derive(Serialize)]
struct RequestList {
    requests: Vec<Request>,
}

async fn create(
    State(state): State<Arc<AdminState>>,
    caller: Caller,
    body: Result<JsonBody<CreateRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let JsonBody(body) = body?;
    let duration = json::duration(&body.duration)?;
    let new = NewRequest {
        target: body.target,
        level: body.level,
        duration,
        reason: body.reason,
    };
    let identity = caller.identity.clone();
    let request = state.access(move |a| a.request(&identity, new)).await??;
    tracing::info!(request = %request.id, identity = %request.requested_by, target = %request.target,
        level = %request.level, state = request.state.as_str(), "admin API: access requested");
    Ok((StatusCode::CREATED, Json(request)).into_response())
}

async fn list(
    State(state): State<Arc<AdminState>>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let filter = match query.state.as_deref() {
        None => None,
        Some(s) => Some(RequestState::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "bad state",
                format!(
                    "`{s}` is not a request state; use pending, approved, denied, cancelled or expired, or leave `state` out for all"
                ),
            )
        })?),
    };
    let identity = caller.identity.clone();
    let requests = state
        .access(move |a| {
            a.catch_up_for_reading();
            a.requests_for(&identity, filter)
        })
        .await?;
    Ok(Json(RequestList { requests }).into_response())
}

async fn show(
    State(state): State<Arc<AdminState>>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    // Someone who may not see a request learns nothing, not even that it
    // exists: the model answers both alike, here and on approve, deny, cancel.
    let identity = caller.identity.clone();
    let request = state
        .access(move |a| {
            a.catch_up_for_reading();
            a.request_seen_by(&identity, &id)
        })
        .await??;
    Ok(Json(request).into_response())
}

async fn approve(
    State(state): State<Arc<AdminState>>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    body: Result<OptionalJsonBody<DecisionBody>, ApiError>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let OptionalJsonBody(body) = body?;
    let identity = caller.identity.clone();
    let request = state
        .access(move |a| a.approve(&identity, &id, body.comment))
        .await??;
    tracing::info!(request = %request.id, by = %caller.name(), state = request.state.as_str(),
        grant = request.grant.as_deref().unwrap_or("-"), "admin API: request approved");
    Ok(Json(request).into_response())
}

async fn deny(
    State(state): State<Arc<AdminState>>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    body: Result<OptionalJsonBody<DecisionBody>, ApiError>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let OptionalJsonBody(body) = body?;
    let identity = caller.identity.clone();
    let request = state
        .access(move |a| a.deny(&identity, &id, body.comment))
        .await??;
    tracing::info!(request = %request.id, by = %caller.name(), "admin API: request denied");
    Ok(Json(request).into_response())
}

async fn cancel(
    State(state): State<Arc<AdminState>>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let identity = caller.identity.clone();
    let request = state.access(move |a| a.cancel(&identity, &id)).await??;
    tracing::info!(request = %request.id, by = %caller.name(), "admin API: request cancelled");
    Ok(Json(request).into_response())
}
