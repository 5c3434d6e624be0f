//! `GET /v1/openapi.json`: the API's own description, served as kept in the repo.
//!
//! The document is a file next to this one (`openapi.json`) so it can be
//! read, diffed and fed to generators without running jitgate; a test checks
//! that it names every route the router has and nothing else.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AdminState;

/// The OpenAPI 3.0 document.
pub const DOCUMENT: &str = include_str!("openapi.json");

pub(super) fn routes() -> Router<Arc<AdminState>> {
    Router::new().route("/v1/openapi.json", get(document))
}

async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}
