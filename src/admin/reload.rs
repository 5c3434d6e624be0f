//! `POST /v1/reload`: read the config file again and put it in force, as
//! `SIGHUP` does (admins only). The answer says what changed, or why the
//! config was refused (`422`, the config in force unchanged).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::AdminState;
use super::auth::Caller;
use super::error::ApiError;
use crate::reload::ReloadError;

pub(super) fn routes() -> Router<Arc<AdminState>> {
    Router::new().route("/v1/reload", post(reload))
}

async fn reload(
    State(state): State<Arc<AdminState>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require_admin("reload the config")?;
    let Some(reloader) = state.shared.reloader.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no reload",
            "this jitgate cannot reload its config",
        ));
    };
    match reloader.reload(caller.name()).await {
        Ok(report) => Ok(Json(report).into_response()),
        Err(ReloadError::AuditDown) => {
            Err(ApiError::audit_unavailable(&"the config reload's record"))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "config refused",
            e.to_string(),
        )),
    }
}
