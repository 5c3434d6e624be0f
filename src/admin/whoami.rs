//! `/v1/whoami` and `/v1/info`: who the token belongs to, and where to connect.
//!
//! The CLI uses both to print a ready-to-paste connection string once a
//! request is approved: the identity is the database user, the proxy's
//! postgres listener is the host and port. Neither says anything secret.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::AdminState;
use super::auth::Caller;

pub(super) fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/info", get(info))
}

#[derive(Serialize)]
struct WhoAmI<'a> {
    identity: &'a str,
    groups: &'a [String],
}

#[derive(Serialize)]
struct Info {
    version: &'static str,
    /// The address the postgres listener is bound to (`null` when there is none).
    postgres: Option<SocketAddr>,
    /// Whether clients must start TLS (`sslmode=require`).
    tls_required: bool,
}

async fn whoami(caller: Caller) -> Response {
    Json(WhoAmI {
        identity: &caller.identity.name,
        groups: &caller.identity.groups,
    })
    .into_response()
}

async fn info(State(state): State<Arc<AdminState>>, _caller: Caller) -> Response {
    let config = &state.shared.config;
    Json(Info {
        version: env!("CARGO_PKG_VERSION"),
        postgres: config.listen.postgres,
        tls_required: config.tls.require,
    })
    .into_response()
}
