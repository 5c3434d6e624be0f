//! `GET /events`: tells an open page that something it shows changed.
//!
//! A server-sent event stream per open page. It carries no data, only
//! `changed` — a request, grant or credential changed (on this proxy or,
//! through the store, on another of its fleet), or a session started or
//! ended — and the page fetches itself again to redraw its live sections,
//! under the same rules as any page load. Bursts are merged (one event per
//! `SETTLE`), statement counts refresh every `SESSIONS_REFRESH` while
//! sessions run, and a comment every `KEEP_ALIVE` keeps the connection
//! inside the admin listener's idle timeout.
//!
//! Each stream holds an admin connection for as long as the page is open,
//! so they are capped: `MAX_PER_ADDRESS` per client address and half of
//! `limits.admin_max_connections` in all, so the API always has room. A
//! page over the cap gets `429` and stays a page that reloads by hand.
//! The stream ends when the sign-in does (`signedout`), checked at each
//! event and every `SIGN_IN_CHECK` while quiet.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use serde::Deserialize;
use tokio::sync::watch;

use super::signin::Viewer;
use super::views;
use crate::admin::AdminState;
use crate::admin::auth::ClientIp;
use crate::admin::error::ApiError;

/// Open streams from one client address. A page left behind may hold its
/// stream until the next keep-alive finds it gone, so this allows for a few
/// people behind one address clicking around quickly.
const MAX_PER_ADDRESS: usize = 32;
/// Changes closer together than this are one event.
const SETTLE: Duration = Duration::from_millis(250);
/// While sessions run, their statement counts are redrawn this often.
const SESSIONS_REFRESH: Duration = Duration::from_secs(15);
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// A quiet stream checks this often that its sign-in still holds.
const SIGN_IN_CHECK: Duration = Duration::from_secs(30);

/// The streams open now, by client address.
#[derive(Default)]
pub(crate) struct Streams {
    by_address: DashMap<IpAddr, usize>,
}

/// One open stream; closing it frees its place.
struct Slot {
    state: Arc<AdminState>,
    client: IpAddr,
}

impl Streams {
    fn open(state: &Arc<AdminState>, client: IpAddr) -> Option<Slot> {
        let cap = state.shared.config.limits.admin_max_connections / 2;
        let streams = &state.page.streams;
        let total: usize = streams.by_address.iter().map(|e| *e.value()).sum();
        if total >= cap {
            return None;
        }
        let mut here = streams.by_address.entry(client).or_default();
        if *here >= MAX_PER_ADDRESS {
            return None;
        }
        *here += 1;
        Some(Slot {
            state: state.clone(),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let by_address = &self.state.page.streams.by_address;
        by_address.alter(&self.client, |_, n| n.saturating_sub(1));
        by_address.remove_if(&self.client, |_, n| *n == 0);
    }
}

/// The change counts now, as a page notes them (`<access>.<sessions>`).
pub(super) fn seen(state: &AdminState) -> String {
    format!(
        "{}.{}",
        state.shared.access.change_count(),
        state.shared.sessions.change_count()
    )
}

#[derive(Deserialize)]
pub(super) struct Since {
    /// What the page saw when it was made; a change since is sent at once.
    seen: Option<String>,
}

/// What the stream waits on between events.
struct Watching {
    state: Arc<AdminState>,
    viewer: Viewer,
    access: watch::Receiver<u64>,
    sessions: watch::Receiver<u64>,
    ended: bool,
    /// Something changed between the page's making and this stream.
    news: bool,
    _slot: Slot,
}

pub(super) async fn stream(
    State(state): State<Arc<AdminState>>,
    ClientIp(client): ClientIp,
    viewer: Viewer,
    Query(since): Query<Since>,
) -> Response {
    let Some(slot) = Streams::open(&state, client) else {
        tracing::warn!(%client, "approver page: live updates refused, too many open pages from this address");
        return views::failure(
            ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too many open pages",
                "too many jitgate pages are open from this address; close some tabs (this one still works, reload it by hand)",
            )
            .retry_after(60),
        );
    };
    let mut access = state.shared.access.changes();
    let mut sessions = state.shared.sessions.changes();
    access.mark_unchanged();
    sessions.mark_unchanged();
    let news = since.seen.is_some_and(|s| s != seen(&state));
    tracing::debug!(identity = %viewer.caller.name(), news, "approver page: live updates opened");
    let watching = Watching {
        state: state.clone(),
        viewer,
        access,
        sessions,
        ended: false,
        news,
        _slot: slot,
    };
    let events = futures_util::stream::unfold(watching, |mut w| async move {
        if w.ended {
            return None;
        }
        let event = next_event(&mut w).await;
        Some((Ok::<_, Infallible>(event), w))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// Returns once the stream's sign-in has ended (checked every `SIGN_IN_CHECK`).
async fn signed_out(viewer: &Viewer, state: &AdminState) {
    loop {
        tokio::time::sleep(SIGN_IN_CHECK).await;
        if !viewer.still_signed_in(state) {
            return;
        }
    }
}

async fn next_event(w: &mut Watching) -> Event {
    let refresh = async {
        if w.state.shared.sessions.is_empty() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(SESSIONS_REFRESH).await;
    };
    let open = if std::mem::take(&mut w.news) {
        true
    } else {
        tokio::select! {
            c = w.access.changed() => c.is_ok(),
            c = w.sessions.changed() => c.is_ok(),
            _ = refresh => true,
            _ = signed_out(&w.viewer, &w.state) => false,
        }
    };
    if open {
        tokio::time::sleep(SETTLE).await;
        w.access.mark_unchanged();
        w.sessions.mark_unchanged();
    }
    if !open || !w.viewer.still_signed_in(&w.state) {
        w.ended = true;
        return Event::default().event("signedout").data("-");
    }
    tracing::debug!(identity = %w.viewer.caller.name(), "approver page: telling a page that something changed");
    Event::default().event("changed").data("-")
}
