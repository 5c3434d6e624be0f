//! The admin HTTP API: requests and approvals, grants, sessions, health;
//! and the approver page, a browser's way to the same (`page/`).
//!
//! JSON over HTTP with a bearer token per identity (see `auth.rs`). Each
//! resource keeps its routes in its own file and adds them here with one
//! `merge`, and documents them in `openapi.json` (a test keeps the two in
//! step). Every failure, including unknown routes, wrong methods and bad
//! bodies, is the JSON of `error::ApiError`.

mod auth;
mod connections;
mod error;
mod grants;
mod json;
mod login;
mod openapi;
mod page;
mod reload;
mod requests;
mod sessions;
#[cfg(test)]
mod tests;
mod whoami;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use self::auth::Authenticator;
use self::error::ApiError;
use crate::access::AccessModel;
use crate::audit::AuditLog;
use crate::config::Config;
use crate::identity::{Identities, LoginLimiter};
use crate::session::Sessions;

/// Largest request body accepted; every body here is a small JSON object.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the admin API needs of the running proxy.
pub struct ApiParts {
    pub config: Arc<Config>,
    pub identities: Arc<Identities>,
    pub access: Arc<AccessModel>,
    pub sessions: Arc<Sessions>,
    pub audit: Arc<AuditLog>,
    /// The one failed-login budget, shared with the database listeners.
    pub logins: Arc<LoginLimiter>,
    /// Where each database listener is bound: (protocol name, address).
    pub listeners: Vec<(&'static str, std::net::SocketAddr)>,
    /// The identity provider people sign on through, if one is configured.
    pub(crate) provider: Arc<crate::identity::oidc::ProviderSlot>,
    /// Reloads the config (`POST /v1/reload`); `None` where nothing can.
    pub reloader: Option<Arc<crate::reload::Reloader>>,
}

/// What the handlers share: the proxy's state and the API's own caches.
struct AdminState {
    shared: Arc<ApiParts>,
    auth: Authenticator,
    /// The approver page's sign-ins and live streams.
    page: page::PageState,
}

impl AdminState {
    fn new(shared: Arc<ApiParts>) -> AdminState {
        let auth = Authenticator::new(shared.identities.clone(), shared.logins.clone());
        AdminState {
            shared,
            auth,
            page: page::PageState::default(),
        }
    }

    /// Ask the access model, off the runtime's workers: a change waits for
    /// the store (an fsync, or a round trip to the fleet's PostgreSQL), and
    /// a read for the lock a change holds meanwhile.
    async fn access<T: Send + 'static>(
        &self,
        ask: impl FnOnce(&Arc<AccessModel>) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let access = self.shared.access.clone();
        tokio::task::spawn_blocking(move || ask(&access))
            .await
            .map_err(|_| ApiError::internal("the access model's answer was lost; try again"))
    }
}

pub fn router(state: Arc<ApiParts>) -> Router {
    let state = Arc::new(AdminState::new(state));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(requests::routes())
        .merge(grants::routes())
        .merge(sessions::routes())
        .merge(whoami::routes())
        .merge(login::routes())
        .merge(reload::routes())
        .merge(openapi::routes())
        .merge(page::routes())
        .fallback(unknown_route)
        // Applies to the routes added above, so it stays after the merges.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serve the API on `listener` until the listener fails, within the
/// connection limits of `limits` (see `connections.rs`), over TLS when
/// `tls` is given (`[admin] tls_cert`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiParts>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    let limits = state.config.limits.clone();
    connections::serve(listener, router(state), &limits, tls).await
}

/// Prometheus scrape endpoint (OpenMetrics text). Unauthenticated, as
/// Prometheus expects; it carries no identities, statements or secrets.
async fn metrics() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::METRICS.encode(),
    )
        .into_response()
}

/// Ready or not, for a load balancer: `200 {"status":"ok"}`, or `503` once
/// this proxy has lost its fleet's store for `store.fail_closed_after` (it
/// refuses logins then). With a fleet's store, says how the store is doing.
async fn healthz(axum::extract::State(state): axum::extract::State<Arc<AdminState>>) -> Response {
    let access = &state.shared.access;
    let Some((up, silent)) = access.store_health() else {
        return Json(json!({ "status": "ok" })).into_response();
    };
    let store = json!({
        "kind": "postgres",
        "proxy": state.shared.config.store.proxy_name,
        "reachable": up,
        "seconds_since_contact": (silent.as_secs_f64() * 1000.0).round() / 1000.0,
    });
    if access.failed_closed() {
        let body = json!({
            "status": "store unreachable",
            "detail": crate::wire::STORE_LOST,
            "store": store,
        });
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(json!({ "status": "ok", "store": store })).into_response()
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(
        "no such endpoint",
        format!(
            "there is no {method} {}; GET /v1/openapi.json lists the endpoints",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
        format!("{} does not accept {method}", uri.path()),
    )
}
