//! The approver page's screens, as HTML.
//!
//! Every screen is whole without JavaScript: forms post and the answer is a
//! new page. `page.js` adds what needs it — sections marked `data-live`
//! replaced when the server says something changed, countdowns that tick,
//! a level picker that follows the target — and nothing else. maud escapes
//! everything interpolated, so names, reasons and statements are text.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::signin::Viewer;
use super::statements::{self, StatementPage};
use crate::access::store::pg::SessionRow;
use crate::access::{Grant, Request, RequestState};
use crate::admin::AdminState;
use crate::admin::auth::Caller;
use crate::admin::error::ApiError;
use crate::admin::{grants, sessions};

/// A whole page: header, navigation, the viewer's name and sign-out.
fn layout(title: &str, viewer: Option<&Viewer>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · jitgate" }
                link rel="stylesheet" href=(super::CSS_PATH);
                script src=(super::JS_PATH) defer {}
            }
            body data-events=[viewer.map(|v| format!("/events?seen={}", v.seen))] {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "jitgate" }
                    @if let Some(v) = viewer {
                        nav aria-label="Main" {
                            a href="/" { "Overview" }
                            a href="/requests/new" { "Request access" }
                        }
                        div.who {
                            span title=(v.caller.identity.groups.join(", ")) { (v.caller.name()) }
                            form method="post" action="/signout" {
                                input type="hidden" name="csrf" value=(v.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    (body)
                    @if viewer.is_some() {
                        noscript {
                            p.note { "Live updates need JavaScript: reload the page to see what changed." }
                        }
                    }
                }
            }
        }
    }
}

fn respond(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// The API's refusal, as a page: its status, its words, a way back.
pub(super) fn failure(e: ApiError) -> Response {
    let (status, error, detail) = e.parts();
    let markup = layout(
        error,
        None,
        html! {
            h1 { (error) }
            p.error role="alert" { (detail) }
            p { a href="/" { "Back to the overview" } }
        },
    );
    let mut response = respond(status, markup);
    if status == StatusCode::TOO_MANY_REQUESTS {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("60"),
        );
    }
    response
}

/// A page that loads `path` again from this page itself, so the browser
/// sends the `SameSite=Strict` cookie it left out on a link from elsewhere
/// (a chat message), or the one it was just given on the provider's redirect.
pub(super) fn reload_here(path: &str) -> Response {
    let refresh = format!("0; url={path}");
    respond(
        StatusCode::OK,
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta http-equiv="refresh" content=(refresh);
                    title { "jitgate" }
                }
                body { p { a href=(path) { "Continue to jitgate" } } }
            }
        },
    )
}

/// The sign-in screen, with `error` above the forms when there is one.
pub(super) fn sign_in(
    state: &AdminState,
    next: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let provider = state.shared.provider.get();
    let to_provider = format!(
        "/signin/provider?next={}",
        url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
    );
    let markup = layout(
        "Sign in",
        None,
        html! {
            h1 { "Sign in to jitgate" }
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            @if let Some(provider) = &provider {
                p { a.button.primary href=(to_provider) { "Sign in with your identity provider" } }
                p.muted { "Through " (provider.config().issuer) "." }
            }
            @let secret_form = html! {
                form.stack method="post" action="/signin" {
                    input type="hidden" name="next" value=(next);
                    label for="secret" { "Your jitgate secret" }
                    input #secret type="password" name="secret" autocomplete="current-password" required autofocus[provider.is_none()];
                    button.primary type="submit" { "Sign in" }
                }
            };
            @if provider.is_some() {
                details {
                    summary { "Sign in with a jitgate secret instead" }
                    (secret_form)
                }
            } @else {
                (secret_form)
            }
        },
    );
    respond(status, markup)
}

/// What the overview shows a viewer.
struct Overview {
    requests: Vec<Request>,
    grants: Vec<Arc<Grant>>,
    sessions: Vec<SessionRow>,
    sessions_incomplete: Option<String>,
}

async fn gather(state: &AdminState, caller: &Caller) -> Result<Overview, ApiError> {
    let identity = caller.identity.clone();
    let requests = state
        .access(move |a| {
            a.catch_up_for_reading();
            a.requests_for(&identity, None)
        })
        .await?;
    let grants = grants::visible(state, caller).await;
    let (sessions, sessions_incomplete) = sessions::visible(state, caller).await;
    Ok(Overview {
        requests,
        grants,
        sessions,
        sessions_incomplete,
    })
}

/// `GET /`: what waits for a decision, active grants, live sessions, and
/// the viewer's own recent requests.
pub(super) async fn overview(
    State(state): State<Arc<AdminState>>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Response {
    let o = match gather(&state, &viewer.caller).await {
        Ok(o) => o,
        Err(e) => return failure(e),
    };
    let me = viewer.caller.name();
    let pending: Vec<&Request> = o
        .requests
        .iter()
        .filter(|r| r.state == RequestState::Pending)
        .collect();
    let mut mine: Vec<&Request> = o
        .requests
        .iter()
        .filter(|r| r.requested_by == me && r.state != RequestState::Pending)
        .collect();
    mine.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    mine.truncate(10);
    let host = page_host(&headers);
    let body = html! {
        h1.visually-hidden { "Overview" }
        section #pending data-live aria-labelledby="pending-h" {
            h2 #pending-h { "Waiting for a decision " span.count { (pending.len()) } }
            @if pending.is_empty() {
                p.muted { "Nothing is waiting." }
            }
            @for r in &pending {
                (request_card(&state, &viewer, r, true))
            }
        }
        section #grants data-live aria-labelledby="grants-h" {
            h2 #grants-h { "Active grants " span.count { (o.grants.len()) } }
            @if o.grants.is_empty() {
                p.muted { "No active grants." }
            }
            @for g in &o.grants {
                (grant_card(&state, &viewer, g, &o.sessions, host.as_deref()))
            }
        }
        section #sessions data-live aria-labelledby="sessions-h" {
            h2 #sessions-h { "Live sessions " span.count { (o.sessions.len()) } }
            (session_table(&state, &viewer, &o.sessions, o.sessions_incomplete.as_deref()))
        }
        section #mine data-live aria-labelledby="mine-h" {
            h2 #mine-h { "Your recent requests" }
            @if mine.is_empty() {
                p.muted { "None yet. " a href="/requests/new" { "Request access" } "." }
            }
            @for r in &mine {
                (request_card(&state, &viewer, r, false))
            }
        }
    };
    respond(StatusCode::OK, layout("Overview", Some(&viewer), body))
}

/// The host name the browser used, for connection commands.
fn page_host(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let url = url::Url::parse(&format!("http://{host}")).ok()?;
    Some(url.host_str()?.trim_matches(['[', ']']).to_owned())
}

fn request_card(state: &AdminState, viewer: &Viewer, r: &Request, full: bool) -> Markup {
    let me = viewer.caller.name();
    let own = r.requested_by == me;
    let approved_by_me = r.approvals.iter().any(|d| d.by == me);
    let pending = r.state == RequestState::Pending;
    let link = format!("/requests/{}", r.id);
    html! {
        article.card.request id=(r.id) {
            header {
                h3 {
                    a href=(link) { (r.requested_by) " → " (r.target) " · " (r.level) }
                }
                span class={"state " (r.state.as_str())} { (r.state.as_str()) }
            }
            dl.facts {
                dt { "For" } dd { (crate::access::policy::format_duration(r.duration())) }
                dt { "Reason" } dd.reason { (r.reason) }
                dt { "Approvals" } dd { (r.approvals.len()) " of " (r.approvals_required) }
                @if pending {
                    dt { "Times out" } dd { (countdown(r.expires_at)) }
                } @else {
                    dt { "Asked" } dd { (ago(r.created_at)) }
                }
                @for d in &r.approvals {
                    dt { "Approved by" } dd { (d.by) @if let Some(c) = &d.comment { ": " q { (c) } } }
                }
                @if let Some(d) = &r.denial {
                    dt { "Denied by" } dd { (d.by) @if let Some(c) = &d.comment { ": " q { (c) } } }
                }
            }
            @if pending && !own && !approved_by_me {
                form.decide method="post" action={(link) "/approve"} {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    label for={"comment-" (r.id)} { "Comment (optional)" }
                    textarea id={"comment-" (r.id)} name="comment" rows="2" maxlength=(state.shared.access.config().requests.max_reason_chars) {}
                    div.buttons {
                        button.primary type="submit" { "Approve" }
                        button.danger type="submit" formaction={(link) "/deny"} { "Deny" }
                    }
                }
            }
            @if pending && approved_by_me {
                p.muted { "You approved; waiting for " ((r.approvals_required as usize).saturating_sub(r.approvals.len())) " more." }
            }
            @if pending && own {
                p.muted { "Your request: someone else decides it." }
                form method="post" action={(link) "/cancel"} {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    button type="submit" { "Cancel request" }
                }
            }
            @if let (Some(grant), true) = (&r.grant, full || own) {
                p { a href={"/grants/" (grant)} { "Grant " (grant) } }
            }
        }
    }
}

fn grant_card(
    state: &AdminState,
    viewer: &Viewer,
    g: &Grant,
    sessions: &[SessionRow],
    host: Option<&str>,
) -> Markup {
    let live = sessions.iter().filter(|s| s.grant == g.id).count();
    let may_revoke = state.shared.access.may_revoke(&viewer.caller.identity, g);
    let own = g.identity == viewer.caller.name();
    html! {
        article.card.grant id=(g.id) {
            header {
                h3 { a href={"/grants/" (g.id)} { (g.identity) " → " (g.target) " · " (g.level) } }
                span.state.active { "active" }
            }
            dl.facts {
                dt { "Ends" } dd { (countdown(g.expires_at)) }
                dt { "Granted by" } dd { (g.granted_by) }
                @if !g.approved_by.is_empty() {
                    dt { "Approved by" } dd { (g.approved_by.join(", ")) }
                }
                dt { "Reason" } dd.reason { (g.reason) }
                dt { "Sessions" } dd { (live) }
            }
            @if own {
                (connect_commands(state, g, host))
            }
            div.buttons {
                a.button href={"/grants/" (g.id)} { "Statements" }
                @if may_revoke {
                    a.button.danger href={"/grants/" (g.id) "/revoke"} { "Revoke…" }
                }
            }
        }
    }
}

/// What the grantee pastes to connect: `jitgate connect`, and the client's
/// own command line (never with a password).
fn connect_commands(state: &AdminState, g: &Grant, host: Option<&str>) -> Markup {
    let config = state.shared.access.config();
    let listener = config
        .target(&g.target)
        .and_then(|t| crate::wire::listener_for(t.protocol))
        .and_then(|l| {
            let addr = state
                .shared
                .listeners
                .iter()
                .find(|(name, _)| *name == l.name)?
                .1;
            Some((l.name == "mysql", addr))
        });
    let jitgate = format!("jitgate connect {} --level {}", g.target, g.level);
    let client = listener.map(|(mysql, addr)| {
        let host = match host {
            Some(h) if addr.ip().is_unspecified() => h.to_owned(),
            _ => addr.ip().to_string(),
        };
        crate::cli::client_command(mysql, &host, addr.port(), &g.identity, &g.target)
    });
    html! {
        div.connect {
            p { "Connect:" }
            pre { code { (jitgate) } }
            @if let Some(client) = client {
                pre { code { (client) } }
            }
        }
    }
}

fn session_table(
    state: &AdminState,
    viewer: &Viewer,
    sessions: &[SessionRow],
    incomplete: Option<&str>,
) -> Markup {
    let fleet = state.shared.access.fleet.is_some();
    html! {
        @if let Some(why) = incomplete {
            p.error role="status" { (why) }
        }
        @if sessions.is_empty() {
            p.muted { "No live sessions." }
        } @else {
            div.scroll {
                table {
                    thead {
                        tr {
                            th scope="col" { "Who" }
                            th scope="col" { "Target · level" }
                            th scope="col" { "Client" }
                            th scope="col" { "Started" }
                            th scope="col" { "Statements" }
                            @if fleet { th scope="col" { "Proxy" } }
                            th scope="col" { span.visually-hidden { "Actions" } }
                        }
                    }
                    tbody {
                        @for s in sessions {
                            tr id=(s.id) {
                                td { (s.identity) }
                                td { a href={"/grants/" (s.grant)} { (s.target) " · " (s.level) } }
                                td { (s.client_addr) }
                                td { (ago(s.started_at)) }
                                td.num { (s.statements) }
                                @if fleet { td { (s.proxy) } }
                                td {
                                    form method="post" action={"/sessions/" (s.id) "/kill"} {
                                        input type="hidden" name="csrf" value=(viewer.csrf);
                                        button.danger type="submit" aria-label={"Kill the session of " (s.identity) " on " (s.target)} { "Kill" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `2026-12-04 17:30:05 UTC`.
fn clock(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} UTC", s.trim_end_matches('Z').replacen('T', " ", 1))
}

/// `1h 05m`, `29m 41s`, `41s`.
fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

/// A time still to come, counting down with JavaScript.
fn countdown(t: SystemTime) -> Markup {
    let left = t.duration_since(SystemTime::now()).unwrap_or_default();
    html! {
        time datetime=(humantime::format_rfc3339_seconds(t)) data-countdown title=(clock(t)) {
            "in " (span(left))
        }
    }
}

fn ago(t: SystemTime) -> Markup {
    let since = SystemTime::now().duration_since(t).unwrap_or_default();
    html! {
        time datetime=(humantime::format_rfc3339_seconds(t)) title=(clock(t)) { (span(since)) " ago" }
    }
}

/// `GET /requests/{id}`: one request, with its decision forms (the page a
/// webhook message links to).
pub(super) async fn request(
    State(state): State<Arc<AdminState>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    let identity = viewer.caller.identity.clone();
    let found = state
        .access(move |a| {
            a.catch_up_for_reading();
            a.request_seen_by(&identity, &id)
        })
        .await;
    let r = match found {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return failure(e.into()),
        Err(e) => return failure(e),
    };
    let title = format!("{}'s request for {}", r.requested_by, r.target);
    let body = html! {
        p.crumbs { a href="/" { "Overview" } " / request " (r.id) }
        h1 { (title) }
        section #request data-live aria-label="The request" {
            (request_card(&state, &viewer, &r, true))
        }
    };
    respond(StatusCode::OK, layout(&title, Some(&viewer), body))
}

/// One target and level the viewer may request, and the longest any policy
/// lets them ask for.
struct Choice {
    target: String,
    level: String,
    max: Duration,
}

fn choices(state: &AdminState, caller: &Caller) -> Vec<Choice> {
    let config = state.shared.access.config();
    let mut out = Vec::new();
    for t in &config.targets {
        for level in t.levels.keys() {
            let max = config
                .policies
                .iter()
                .filter(|p| p.covers(&t.name, level) && p.lets_request(&caller.identity))
                .map(|p| p.max_duration)
                .max();
            if let Some(max) = max {
                out.push(Choice {
                    target: t.name.clone(),
                    level: level.clone(),
                    max,
                });
            }
        }
    }
    out
}

/// Durations offered, up to the policy's cap.
const DURATIONS: [u64; 9] = [
    15 * 60,
    30 * 60,
    3600,
    2 * 3600,
    4 * 3600,
    8 * 3600,
    12 * 3600,
    24 * 3600,
    7 * 24 * 3600,
];

/// What the request form was filled with (kept when it is refused).
#[derive(Deserialize, Default)]
pub(super) struct RequestForm {
    #[serde(default)]
    pub(super) target: String,
    #[serde(default)]
    pub(super) level: String,
    #[serde(default)]
    pub(super) duration: String,
    #[serde(default)]
    pub(super) reason: String,
}

/// `GET /requests/new`: ask for access.
pub(super) async fn new_request(
    State(state): State<Arc<AdminState>>,
    viewer: Viewer,
    Query(filled): Query<RequestForm>,
) -> Response {
    request_form(&state, &viewer, &filled, None, StatusCode::OK)
}

/// The request form, filled as it was, with the refusal's words on top.
pub(super) fn request_form(
    state: &AdminState,
    viewer: &Viewer,
    filled: &RequestForm,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let choices = choices(state, &viewer.caller);
    let mut targets: Vec<&str> = choices.iter().map(|c| c.target.as_str()).collect();
    targets.dedup();
    let mut levels: Vec<&str> = choices.iter().map(|c| c.level.as_str()).collect();
    levels.sort_unstable();
    levels.dedup();
    let longest = choices.iter().map(|c| c.max).max().unwrap_or_default();
    let max_reason = state.shared.access.config().requests.max_reason_chars;
    let body = html! {
        p.crumbs { a href="/" { "Overview" } " / request access" }
        h1 { "Request access" }
        @if let Some(error) = error {
            p.error role="alert" { (error) }
        }
        @if choices.is_empty() {
            p { "No policy lets " (viewer.caller.name()) " request access. Ask an admin for a policy that names one of your groups ("
                (viewer.caller.identity.groups.join(", ")) ")." }
        } @else {
            form.stack method="post" action="/requests" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                label for="target" { "Target" }
                select #target name="target" required {
                    @for t in &targets {
                        option value=(t) selected[filled.target == *t] { (t) }
                    }
                }
                label for="level" { "Level" }
                select #level name="level" required {
                    @for l in &levels {
                        option value=(l) selected[filled.level == *l]
                            data-targets=(choices.iter().filter(|c| c.level == *l).map(|c| c.target.as_str()).collect::<Vec<_>>().join(" ")) { (l) }
                    }
                }
                p.hint #limits {
                    @for c in &choices {
                        span data-target=(c.target) data-level=(c.level) {
                            (c.target) " · " (c.level) ": up to " (crate::access::policy::format_duration(c.max)) ". "
                        }
                    }
                }
                label for="duration" { "For how long" }
                select #duration name="duration" required {
                    @for secs in DURATIONS.iter().filter(|s| Duration::from_secs(**s) <= longest) {
                        @let d = crate::access::policy::format_duration(Duration::from_secs(*secs));
                        option value=(d) selected[filled.duration == d] data-secs=(secs) { (d) }
                    }
                }
                label for="reason" { "Reason" }
                textarea #reason name="reason" rows="3" required maxlength=(max_reason)
                    placeholder="What you will do, and the ticket it is for" { (filled.reason) }
                button.primary type="submit" { "Request" }
            }
        }
    };
    respond(status, layout("Request access", Some(viewer), body))
}

#[derive(Deserialize)]
pub(super) struct PageQuery {
    page: Option<usize>,
}

/// `GET /grants/{id}`: one grant, its live sessions and the statements
/// run under it (from this proxy's audit log), newest first.
pub(super) async fn grant(
    State(state): State<Arc<AdminState>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let page = q.page.unwrap_or(1).clamp(1, statements::MAX_PAGE);
    // Not active (ended, or not the viewer's to see) is not a failure here;
    // a store that cannot be asked is.
    let active = match grants::active_seen_by(&state, &viewer.caller, &id).await {
        Ok(g) => Some(g),
        Err(e) if e.parts().0 == StatusCode::NOT_FOUND => None,
        Err(e) => return failure(e),
    };
    // An ended grant: its request tells whose it was, if the viewer may see that.
    let ended_request = if active.is_none() {
        let identity = viewer.caller.identity.clone();
        let wanted = id.clone();
        state
            .access(move |a| {
                a.requests_for(&identity, None)
                    .into_iter()
                    .find(|r| r.grant.as_deref() == Some(wanted.as_str()))
            })
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let (who, target) = match (&active, &ended_request) {
        (Some(g), _) => (g.identity.clone(), g.target.clone()),
        (None, Some(r)) => (r.requested_by.clone(), r.target.clone()),
        (None, None) if viewer.caller.oversees_everyone() => (String::new(), String::new()),
        (None, None) => {
            return failure(ApiError::not_found(
                "grant not found",
                format!("grant \"{id}\" does not exist, or is not one you may see"),
            ));
        }
    };
    let since = active
        .as_ref()
        .map(|g| g.created_at)
        .or(ended_request.as_ref().map(|r| r.created_at));
    // A live redraw replaces the grant and its sessions, never the
    // statements: it need not read the log.
    let statements = if headers.contains_key(super::LIVE_HEADER) {
        StatementPage::default()
    } else {
        match read_statements(&state, &id, page, since).await {
            Ok(s) => s,
            Err(e) => return failure(e),
        }
    };
    let (sessions, incomplete) = sessions::visible(&state, &viewer.caller).await;
    let sessions: Vec<SessionRow> = sessions.into_iter().filter(|s| s.grant == id).collect();
    let title = if who.is_empty() {
        format!("Grant {id}")
    } else {
        format!("{who}'s grant on {target}")
    };
    let host = page_host(&headers);
    let body = html! {
        p.crumbs { a href="/" { "Overview" } " / grant " (id) }
        h1 { (title) }
        section #grant data-live aria-label="The grant" {
            @if let Some(g) = &active {
                (grant_card(&state, &viewer, g, &sessions, host.as_deref()))
            } @else {
                p.note { "This grant has ended." }
                @if let Some(r) = &ended_request {
                    (request_card(&state, &viewer, r, true))
                }
            }
        }
        section #grant-sessions data-live aria-labelledby="gs-h" {
            h2 #gs-h { "Its live sessions" }
            (session_table(&state, &viewer, &sessions, incomplete.as_deref()))
        }
        section #statements aria-labelledby="st-h" {
            h2 #st-h { "Statements " span.count { (statements.total) } }
            p.muted { "From this proxy's audit log, newest first." }
            @if statements.cut_short {
                p.note { "Only the newest part of the audit log was read; older statements of this grant are in the log itself." }
            }
            (statement_table(&statements))
            nav.pager aria-label="Statement pages" {
                @if page > 1 {
                    a href={"/grants/" (id) "?page=" (page - 1)} { "← Newer" }
                }
                @if statements.more {
                    a href={"/grants/" (id) "?page=" (page + 1)} { "Older →" }
                }
            }
        }
    };
    respond(StatusCode::OK, layout(&title, Some(&viewer), body))
}

/// A page of a grant's statements, read off the runtime, `READERS` at once.
async fn read_statements(
    state: &AdminState,
    grant: &str,
    page: usize,
    since: Option<SystemTime>,
) -> Result<StatementPage, ApiError> {
    let Ok(_reading) = state.page.readers.try_acquire() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "other pages are reading the audit log just now; try again in a moment",
        )
        .retry_after(2));
    };
    let path = state.shared.config.audit.path.clone();
    let wanted = grant.to_owned();
    tokio::task::spawn_blocking(move || statements::for_grant(&path, &wanted, page, since))
        .await
        .map_err(|_| std::io::Error::other("the audit log reader stopped"))
        .and_then(|r| r)
        .map_err(|e| {
            tracing::warn!(error = %e, "approver page: cannot read the audit log");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit log unreadable",
                "the audit log could not be read just now; try again (the proxy's log says why)",
            )
        })
}

fn statement_table(page: &StatementPage) -> Markup {
    html! {
        @if page.rows.is_empty() {
            p.muted { "No statements." }
        } @else {
            div.scroll {
                table.statements {
                    thead {
                        tr {
                            th scope="col" { "Time" }
                            th scope="col" { "Statement" }
                            th scope="col" { "Kind" }
                            th scope="col" { "Outcome" }
                            th scope="col" { "Rows" }
                            th scope="col" { "Duration" }
                        }
                    }
                    tbody {
                        @for s in &page.rows {
                            tr.refused[s.refused] {
                                td { time datetime=(s.time) { (s.time.replace('T', " ")) } }
                                td { code.sql { (s.statement) } }
                                td { (s.kind) }
                                td {
                                    @if s.refused {
                                        strong { "refused" }
                                        @if let Some(r) = &s.reason { " (" (r) ")" }
                                    } @else {
                                        (s.outcome.as_deref().unwrap_or("running"))
                                    }
                                }
                                td.num { @if let Some(n) = s.rows { (n) } }
                                td.num { @if let Some(ms) = s.duration_ms { (format!("{ms:.1} ms")) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /grants/{id}/revoke`: are you sure? Names the person, the target
/// and what ends.
pub(super) async fn confirm_revoke(
    State(state): State<Arc<AdminState>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Response {
    let g = match grants::active_seen_by(&state, &viewer.caller, &id).await {
        Ok(g) => g,
        Err(e) => return failure(e),
    };
    let live = state
        .shared
        .sessions
        .list()
        .iter()
        .filter(|s| s.grant == g.id)
        .count();
    let title = format!(
        "Revoke {}'s {} access to {}?",
        g.identity, g.level, g.target
    );
    let body = html! {
        p.crumbs { a href="/" { "Overview" } " / grant " (g.id) }
        h1 { (title) }
        p { "The grant ends now instead of " (countdown(g.expires_at)) ". "
            @if live > 0 { "Its " (live) " live session" @if live > 1 { "s" } " on this proxy end, and running queries are cancelled." }
            @else { "It has no live session on this proxy." } }
        form method="post" action={"/grants/" (g.id) "/revoke"} {
            input type="hidden" name="csrf" value=(viewer.csrf);
            div.buttons {
                button.danger type="submit" { "Revoke " (g.identity) "'s grant on " (g.target) }
                a.button href={"/grants/" (g.id)} { "Keep it" }
            }
        }
    };
    respond(StatusCode::OK, layout(&title, Some(&viewer), body))
}
