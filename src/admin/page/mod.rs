//! The approver page: jitgate's admin listener serving people in a browser.
//!
//! Approvers decide requests, watch grants and sessions, revoke and kill;
//! developers request access and find how to connect. The page is one more
//! client of the API's rules: its forms call what the API's endpoints call
//! (see `actions.rs`), as the signed-in person, and the access model writes
//! the audit records. HTML is made on the server (`views.rs`) and works
//! without JavaScript; `page.js` only makes it live (`events.rs`).
//!
//! Everything it serves is in the binary (`assets/`), with a strict
//! Content-Security-Policy: scripts and styles from this origin's files
//! only, never inline; no framing; forms post only here. Sign-in, cookie
//! and CSRF: `signin.rs`. Statements of a grant: `statements.rs`.

mod actions;
mod events;
mod signin;
mod statements;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::AdminState;

/// What the page keeps between requests.
pub(crate) struct PageState {
    sign_ins: signin::SignIns,
    streams: events::Streams,
    /// Pages reading the audit log at once (`statements.rs`); more are
    /// asked to try again.
    readers: tokio::sync::Semaphore,
}

impl Default for PageState {
    fn default() -> PageState {
        PageState {
            sign_ins: signin::SignIns::default(),
            streams: events::Streams::default(),
            readers: tokio::sync::Semaphore::new(READERS),
        }
    }
}

/// Audit log readers at once (each on the blocking pool).
const READERS: usize = 2;

/// Sent by `page.js` when it fetches a page to redraw its live sections.
const LIVE_HEADER: &str = "x-jitgate-live";

/// The assets, named with jitgate's version so a browser may keep them a
/// day and an upgrade still never pairs an old script with a new page.
const CSS: &str = include_str!("assets/page.css");
const JS: &str = include_str!("assets/page.js");
const CSS_PATH: &str = concat!("/assets/page.css?v=", env!("CARGO_PKG_VERSION"));
const JS_PATH: &str = concat!("/assets/page.js?v=", env!("CARGO_PKG_VERSION"));

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(super) fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/", get(views::overview))
        .route("/requests/new", get(views::new_request))
        .route("/requests", post(actions::create_request))
        .route("/requests/{id}", get(views::request))
        .route("/requests/{id}/approve", post(actions::approve))
        .route("/requests/{id}/deny", post(actions::deny))
        .route("/requests/{id}/cancel", post(actions::cancel))
        .route("/grants/{id}", get(views::grant))
        .route(
            "/grants/{id}/revoke",
            get(views::confirm_revoke).post(actions::revoke),
        )
        .route("/sessions/{id}/kill", post(actions::kill))
        .route("/signin", get(signin::page).post(signin::with_secret))
        .route("/signin/provider", get(signin::start_provider))
        .route("/signin/callback", get(signin::callback))
        .route("/signout", post(signin::sign_out))
        .route("/events", get(events::stream))
        .route("/assets/page.css", get(css))
        .route("/assets/page.js", get(js))
        .layer(axum::middleware::map_response(guard))
}

/// The headers every answer of the page carries.
async fn guard(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}
