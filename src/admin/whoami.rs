//! `/v1/whoami` and `/v1/info`: who the token belongs to, and where to connect.
//!
//! The CLI uses both to print a ready-to-paste connection command once a
//! request is approved: the identity is the database user, the proxy's
//! listener for the target's protocol is the host and port. Neither says
//! anything secret.

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
    /// The issued credential this call was made with (absent for an
    /// identity from the config).
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<&'a str>,
    /// Every live credential of the caller, with its expiry.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    credentials: Vec<crate::identity::issued::CredentialInfo>,
}

#[derive(Serialize)]
struct Info<'a> {
    version: &'static str,
    /// The address the postgres listener is bound to (`null` when there is none).
    postgres: Option<SocketAddr>,
    /// The address the MySQL/MariaDB listener is bound to (`null` when there is none).
    mysql: Option<SocketAddr>,
    /// Every database listener by protocol name, with its address.
    listeners: std::collections::BTreeMap<&'static str, SocketAddr>,
    /// Whether clients must start TLS (`sslmode=require`, `--ssl`).
    tls_required: bool,
    /// Every target, with the protocol (and so the listener) it is reached by.
    targets: Vec<TargetInfo<'a>>,
}

#[derive(Serialize)]
struct TargetInfo<'a> {
    name: &'a str,
    protocol: &'static str,
}

async fn whoami(State(state): State<Arc<AdminState>>, caller: Caller) -> Response {
    let credentials = match &caller.identity.credential {
        Some(_) => state
            .shared
            .identities
            .credentials_of(&caller.identity.name),
        None => Vec::new(),
    };
    Json(WhoAmI {
        identity: &caller.identity.name,
        groups: &caller.identity.groups,
        credential: caller.identity.credential.as_ref().map(|c| c.id.as_str()),
        credentials,
    })
    .into_response()
}

async fn info(State(state): State<Arc<AdminState>>, _caller: Caller) -> Response {
    // The targets in force (a reload may have added some).
    let config = state.shared.access.config();
    let listeners: std::collections::BTreeMap<_, _> =
        state.shared.listeners.iter().copied().collect();
    Json(Info {
        version: env!("CARGO_PKG_VERSION"),
        postgres: listeners.get("postgres").copied(),
        mysql: listeners.get("mysql").copied(),
        listeners: listeners.clone(),
        tls_required: config.tls.require,
        targets: config
            .targets
            .iter()
            .map(|t| TargetInfo {
                name: &t.name,
                protocol: crate::wire::listener_for(t.protocol).map_or("unknown", |l| l.name),
            })
            .collect(),
    })
    .into_response()
}
