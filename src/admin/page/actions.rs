//! What the approver page's forms do: request, approve, deny, cancel,
//! revoke, kill.
//!
//! Each goes through the same calls as the API's endpoint for it (the
//! access model's rules, `grants::revoke_as`, `sessions::kill_as`), which
//! write the audit records naming the person; a refusal is the API's own
//! answer shown as a page. Every form arrives as an [`Action`]: signed in,
//! from this origin, with the sign-in's CSRF token.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::signin::{Action, NoFields, Viewer};
use super::views::{self, RequestForm};
use crate::access::{AccessError, AccessModel, NewRequest, Request};
use crate::admin::error::ApiError;
use crate::admin::{AdminState, grants, json, sessions};
use crate::identity::Identity;

/// After a change: the page that shows its result.
fn see(path: String) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, path)]).into_response()
}

/// `POST /requests`: ask for access; a refusal keeps what was typed.
pub(super) async fn create_request(
    State(state): State<Arc<AdminState>>,
    action: Action<RequestForm>,
) -> Response {
    let Action { viewer, form } = action;
    let asked = async {
        let duration = json::duration(&form.duration)?;
        let new = NewRequest {
            target: form.target.clone(),
            level: form.level.clone(),
            duration,
            reason: form.reason.trim().to_owned(),
        };
        let identity = viewer.caller.identity.clone();
        Ok::<_, ApiError>(state.access(move |a| a.request(&identity, new)).await??)
    }
    .await;
    match asked {
        Ok(request) => {
            tracing::info!(request = %request.id, identity = %request.requested_by, target = %request.target,
                level = %request.level, state = request.state.as_str(), "approver page: access requested");
            see(format!("/requests/{}", request.id))
        }
        Err(e) => {
            let (status, _, detail) = e.parts();
            views::request_form(&state, &viewer, &form, Some(detail), status)
        }
    }
}

#[derive(Deserialize)]
pub(super) struct Decision {
    #[serde(default)]
    comment: String,
}

fn comment(d: Decision) -> Option<String> {
    let c = d.comment.trim();
    (!c.is_empty()).then(|| c.to_owned())
}

/// `POST /requests/{id}/approve`.
pub(super) async fn approve(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    action: Action<Decision>,
) -> Response {
    let comment = comment(action.form);
    change_request(&state, id, &action.viewer, "approved", move |a, who, id| {
        a.approve(who, id, comment)
    })
    .await
}

/// `POST /requests/{id}/deny`.
pub(super) async fn deny(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    action: Action<Decision>,
) -> Response {
    let comment = comment(action.form);
    change_request(&state, id, &action.viewer, "denied", move |a, who, id| {
        a.deny(who, id, comment)
    })
    .await
}

/// `POST /requests/{id}/cancel`: the requester takes it back.
pub(super) async fn cancel(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    action: Action<NoFields>,
) -> Response {
    change_request(&state, id, &action.viewer, "cancelled", |a, who, id| {
        a.cancel(who, id)
    })
    .await
}

/// Make `change` to request `id` as the viewer, through the access model;
/// then the request's page, or the model's refusal.
async fn change_request(
    state: &AdminState,
    id: String,
    viewer: &Viewer,
    done: &'static str,
    change: impl FnOnce(&Arc<AccessModel>, &Identity, &str) -> Result<Request, AccessError>
    + Send
    + 'static,
) -> Response {
    let identity = viewer.caller.identity.clone();
    let asked = id.clone();
    match state.access(move |a| change(a, &identity, &asked)).await {
        Ok(Ok(request)) => {
            tracing::info!(request = %request.id, by = %viewer.caller.name(), state = request.state.as_str(), done, "approver page: request changed");
            see(format!("/requests/{id}"))
        }
        Ok(Err(e)) => views::failure(e.into()),
        Err(e) => views::failure(e),
    }
}

/// `POST /grants/{id}/revoke` (the confirmation's button).
pub(super) async fn revoke(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    action: Action<NoFields>,
) -> Response {
    match grants::revoke_as(&state, &action.viewer.caller, id.clone()).await {
        Ok(_) => see(format!("/grants/{id}")),
        Err(e) => views::failure(e),
    }
}

/// `POST /sessions/{id}/kill`: back to the overview, where it disappears.
pub(super) async fn kill(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    action: Action<NoFields>,
) -> Response {
    match sessions::kill_as(&state, &action.viewer.caller, &id).await {
        Ok(_) => see("/#sessions".to_owned()),
        Err(e) => views::failure(e),
    }
}
