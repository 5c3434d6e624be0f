//! `/v1/sessions`: list live sessions, kill one.
//!
//! Callers see and kill their own sessions; admins and approvers everyone's.
//! A session someone may not see is `404`, exactly like one that never was.
//! A kill is audited before it happens: if the audit log cannot be written
//! the session is left alone and the caller gets `503`.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::AdminState;
use super::auth::Caller;
use super::error::ApiError;
use crate::audit::AuditEvent;
use crate::session::SessionInfo;

pub(super) fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/v1/sessions", get(list))
        .route("/v1/sessions/{id}/kill", post(kill))
}

#[derive(Serialize)]
struct SessionList<'a> {
    sessions: Vec<&'a SessionInfo>,
}

#[derive(Serialize)]
struct Killed<'a> {
    killed: &'a str,
}

async fn list(State(state): State<Arc<AdminState>>, caller: Caller) -> Response {
    let live = state.shared.sessions.list();
    let sessions = live
        .iter()
        .filter(|s| caller.may_act_for(&s.identity))
        .map(|s| &**s)
        .collect();
    Json(SessionList { sessions }).into_response()
}

async fn kill(
    State(state): State<Arc<AdminState>>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let not_found = || {
        ApiError::not_found(
            "session not found",
            format!(
                "session \"{id}\" does not exist or has already ended; list live sessions with GET /v1/sessions"
            ),
        )
    };
    let session = state
        .shared
        .sessions
        .list()
        .into_iter()
        .find(|s| s.id == id)
        // A session the caller may not see (it is not in their list) is not
        // found, like one that never was.
        .filter(|s| caller.may_act_for(&s.identity))
        .ok_or_else(not_found)?;
    let client_addr = session.client_addr.to_string();
    state
        .shared
        .audit
        .record(&AuditEvent {
            session: Some(&session.id),
            identity: Some(&session.identity),
            grant: Some(&session.grant),
            target: Some(&session.target),
            level: Some(&session.level),
            client_addr: Some(&client_addr),
            by: Some(caller.name()),
            ..AuditEvent::new("session_kill_requested")
        })
        .map_err(|e| ApiError::audit_unavailable(&e))?;
    state.shared.sessions.kill(&id).ok_or_else(not_found)?;
    tracing::info!(session = %id, identity = %session.identity, by = %caller.name(), "admin API: session kill requested");
    Ok(Json(Killed { killed: &id }).into_response())
}
