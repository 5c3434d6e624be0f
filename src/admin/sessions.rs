//! `/v1/sessions`: list live sessions, kill one.
//!
//! Callers see and kill their own sessions; admins and approvers everyone's.
//! A session someone may not see is `404`, exactly like one that never was.
//! A kill is audited before it happens: if the audit log cannot be written
//! the session is left alone and the caller gets `503`.
//!
//! With a fleet's store, the list is the whole fleet's (each session names
//! the proxy that holds it), and a session another proxy holds is killed
//! through the store: the kill is a change every proxy reads, and the one
//! that holds the session ends it.

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
use crate::access::follow::LocalSessions;
use crate::access::store::pg::SessionRow;
use crate::audit::AuditEvent;

pub(super) fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/v1/sessions", get(list))
        .route("/v1/sessions/{id}/kill", post(kill))
}

#[derive(Serialize)]
struct SessionList {
    sessions: Vec<SessionRow>,
    /// Set when the fleet's store cannot be reached: only this proxy's
    /// sessions are listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    incomplete: Option<String>,
}

#[derive(Serialize)]
pub(super) struct Killed<'a> {
    killed: &'a str,
    proxy: String,
}

/// This proxy's sessions and, with a fleet's store, the other proxies'.
async fn fleet(state: &AdminState) -> (Vec<SessionRow>, Option<String>) {
    let me = state.shared.config.store.proxy_name.clone();
    let mut sessions = state.shared.sessions.rows(&me);
    let others = state.access(|a| a.fleet_sessions()).await;
    let incomplete = match others {
        Ok(None) => None,
        Ok(Some(Ok(rows))) => {
            sessions.extend(rows.into_iter().filter(|r| r.proxy != me));
            None
        }
        Ok(Some(Err(e))) => {
            tracing::warn!(error = %e, "admin API: cannot list the fleet's sessions");
            Some(
                "the PostgreSQL store cannot be read now: only this proxy's sessions are listed"
                    .into(),
            )
        }
        Err(_) => Some(
            "the fleet's sessions could not be read: only this proxy's sessions are listed".into(),
        ),
    };
    sessions.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
    (sessions, incomplete)
}

async fn list(State(state): State<Arc<AdminState>>, caller: Caller) -> Response {
    let (sessions, incomplete) = visible(&state, &caller).await;
    Json(SessionList {
        sessions,
        incomplete,
    })
    .into_response()
}

/// The live sessions `caller` sees, oldest first, and why the list may be
/// incomplete.
pub(super) async fn visible(
    state: &AdminState,
    caller: &Caller,
) -> (Vec<SessionRow>, Option<String>) {
    let (mut sessions, incomplete) = fleet(state).await;
    sessions.retain(|s| caller.may_act_for(&s.identity));
    (sessions, incomplete)
}

async fn kill(
    State(state): State<Arc<AdminState>>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let killed = kill_as(&state, &caller, &id).await?;
    Ok(Json(killed).into_response())
}

/// Kill the session `id` as `caller`, if they may (the API's and the
/// approver page's one way to do it).
pub(super) async fn kill_as<'a>(
    state: &AdminState,
    caller: &Caller,
    id: &'a str,
) -> Result<Killed<'a>, ApiError> {
    let not_found = || {
        ApiError::not_found(
            "session not found",
            format!(
                "session \"{id}\" does not exist or has already ended; list live sessions with GET /v1/sessions"
            ),
        )
    };
    let me = state.shared.config.store.proxy_name.clone();
    let local = state
        .shared
        .sessions
        .list()
        .into_iter()
        .find(|s| s.id == id);
    let Some(session) = local else {
        // Held by another proxy of the fleet, maybe.
        let (sessions, _) = fleet(state).await;
        let session = sessions
            .into_iter()
            .find(|s| s.id == id && s.proxy != me)
            .filter(|s| caller.may_act_for(&s.identity))
            .ok_or_else(not_found)?;
        let by = caller.name().to_owned();
        let asked = session.clone();
        state
            .access(move |a| a.request_session_kill(&asked, &by))
            .await??;
        tracing::info!(session = %id, proxy = %session.proxy, identity = %session.identity, by = %caller.name(), "admin API: session kill requested from the proxy that holds it");
        return Ok(Killed {
            killed: id,
            proxy: session.proxy,
        });
    };
    // A session the caller may not see (it is not in their list) is not
    // found, like one that never was.
    if !caller.may_act_for(&session.identity) {
        return Err(not_found());
    }
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
    state.shared.sessions.kill(id).ok_or_else(not_found)?;
    tracing::info!(session = %id, identity = %session.identity, by = %caller.name(), "admin API: session kill requested");
    Ok(Killed {
        killed: id,
        proxy: me,
    })
}
