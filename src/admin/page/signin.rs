//! Who is looking at the approver page: its sign-ins, their cookie, and
//! the forms' CSRF token.
//!
//! A sign-in proves a secret once — a jitgate secret typed into the page, or
//! the credential jitgate issues itself after the identity provider's
//! authorization code flow (PKCE, redeemed by jitgate with its client
//! secret, like `jitgate login`) — and keeps, on the server, only the name
//! and the stored key of that secret, exactly as the API's token cache does.
//! Every request checks that stored key against the name's live secrets
//! again, so a secret changed in the config, a logout or an expired
//! credential ends the page's sign-in too, on the next click.
//!
//! The browser holds a random 256-bit cookie (`HttpOnly`, `SameSite=Strict`,
//! `Secure` and `__Host-` when `admin.url` is https) that names the sign-in; the server keeps
//! only its keyed hash. Each sign-in has its own CSRF token, which every form
//! carries and every state-changing request must send back (compared in
//! constant time), and state-changing requests from another origin are
//! refused before that (`Origin`, `Sec-Fetch-Site`).
//!
//! Sign-ins live in this proxy's memory: a restart, or another proxy of a
//! fleet, asks people to sign in again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, RequestPartsExt};
use base64::Engine;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::views;
use crate::access::Logout;
use crate::admin::AdminState;
use crate::admin::auth::{Caller, ClientIp};
use crate::admin::error::ApiError;
use crate::admin::login;
use crate::audit::AuditEvent;
use crate::identity::oidc::Authorize;

/// How long a sign-in lasts at most (a provider's credential may end it sooner).
const SIGN_IN_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sign-ins kept at once; past this the oldest is forgotten.
const MAX_SIGN_INS: usize = 4096;
/// How long a provider sign-on may take between leaving and coming back.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// Provider sign-ons in progress at once, and from one client address.
const MAX_PENDING: usize = 1024;
const MAX_PENDING_PER_ADDRESS: usize = 16;

/// The cookie that names a sign-in (`__Host-` where it can be: TLS).
const COOKIE: &str = "jitgate_page";
const COOKIE_TLS: &str = "__Host-jitgate_page";
/// The cookie that ties a provider sign-on's return to the browser that left.
const FLOW_COOKIE: &str = "jitgate_signin";

/// Who signed in to the page, by keyed hash of their cookie.
pub(crate) struct SignIns {
    hash_key: [u8; 32],
    by_hash: Mutex<HashMap<[u8; 32], SignIn>>,
    pending: Mutex<HashMap<String, PendingSignOn>>,
}

#[derive(Clone)]
struct SignIn {
    name: String,
    /// The stored key of the secret proven at sign-in.
    stored_key: [u8; 32],
    csrf: String,
    /// The credential issued for this sign-in (provider sign-ons), which
    /// signing out ends.
    credential: Option<String>,
    since: Instant,
}

/// A provider sign-on that left for the provider and has not come back.
struct PendingSignOn {
    nonce: String,
    verifier: String,
    /// Keyed hash of the flow cookie's value.
    binding: [u8; 32],
    next: String,
    client: IpAddr,
    since: Instant,
}

impl Default for SignIns {
    fn default() -> SignIns {
        SignIns {
            hash_key: rand::random(),
            by_hash: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        }
    }
}

/// 256 random bits, base64url.
fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

impl SignIns {
    fn key(&self, cookie: &str) -> [u8; 32] {
        crate::identity::hmac(&self.hash_key, cookie.as_bytes())
    }

    /// Remember a new sign-in; the cookie value that names it.
    fn insert(&self, name: &str, stored_key: [u8; 32], credential: Option<String>) -> String {
        let cookie = random_token();
        let mut map = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.since.elapsed() < SIGN_IN_TTL);
        if map.len() >= MAX_SIGN_INS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.since).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            self.key(&cookie),
            SignIn {
                name: name.to_owned(),
                stored_key,
                csrf: random_token(),
                credential,
                since: Instant::now(),
            },
        );
        cookie
    }

    fn get(&self, cookie: &str) -> Option<SignIn> {
        let key = self.key(cookie);
        let mut map = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        let found = map.get(&key)?.clone();
        if found.since.elapsed() >= SIGN_IN_TTL {
            map.remove(&key);
            return None;
        }
        Some(found)
    }

    fn remove(&self, cookie: &str) -> Option<SignIn> {
        let key = self.key(cookie);
        self.by_hash
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
    }

    /// Note a provider sign-on leaving: its state, and the flow cookie
    /// value that must come back with it. `None` when too many are pending
    /// (from `client`, or at all).
    fn start(
        &self,
        client: IpAddr,
        nonce: &str,
        verifier: &str,
        next: String,
    ) -> Option<(String, String)> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, p| p.since.elapsed() < PENDING_TTL);
        let from_client = pending.values().filter(|p| p.client == client).count();
        if pending.len() >= MAX_PENDING || from_client >= MAX_PENDING_PER_ADDRESS {
            return None;
        }
        let (state, binding) = (random_token(), random_token());
        pending.insert(
            state.clone(),
            PendingSignOn {
                nonce: nonce.to_owned(),
                verifier: verifier.to_owned(),
                binding: self.key(&binding),
                next,
                client,
                since: Instant::now(),
            },
        );
        Some((state, binding))
    }

    /// The pending sign-on `state` names, once, if the flow cookie matches.
    fn finish(&self, state: &str, binding: Option<&str>) -> Option<PendingSignOn> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let found = pending.remove(state)?;
        let fresh = found.since.elapsed() < PENDING_TTL;
        let same_browser = binding.is_some_and(|b| bool::from(self.key(b).ct_eq(&found.binding)));
        (fresh && same_browser).then_some(found)
    }
}

/// The signed-in person behind a page request, and their forms' token.
pub(super) struct Viewer {
    pub(super) caller: Caller,
    pub(super) csrf: String,
    /// The change counts before the page read anything (`events.rs`):
    /// a change after them is news to this page.
    pub(super) seen: String,
    /// The sign-in's cookie value (signing out forgets it).
    cookie: String,
}

impl FromRequestParts<Arc<AdminState>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AdminState>,
    ) -> Result<Viewer, Response> {
        let cookie = cookie(&parts.headers, cookie_name(state));
        let seen = super::events::seen(state);
        let viewer = cookie.and_then(|cookie| {
            let sign_in = state.page.sign_ins.get(&cookie)?;
            // Still a live secret of the name (not changed, logged out or expired)?
            let proven = state
                .shared
                .identities
                .keys_for(&sign_in.name)
                .match_stored_key(&sign_in.stored_key)?;
            Some(Viewer {
                caller: Caller {
                    identity: proven.identity,
                },
                csrf: sign_in.csrf,
                seen,
                cookie,
            })
        });
        match viewer {
            Some(viewer) => Ok(viewer),
            None => Err(signed_out(parts)),
        }
    }
}

impl Viewer {
    /// Is the sign-in behind this viewer still there and its secret live?
    pub(super) fn still_signed_in(&self, state: &AdminState) -> bool {
        state.page.sign_ins.get(&self.cookie).is_some_and(|s| {
            state
                .shared
                .identities
                .keys_for(&s.name)
                .match_stored_key(&s.stored_key)
                .is_some()
        })
    }
}

/// Not signed in: a page goes to the sign-in form (and comes back after);
/// a form's post or the live stream gets `401`.
fn signed_out(parts: &Parts) -> Response {
    let here = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if parts.method != Method::GET || parts.uri.path() == "/events" {
        return views::failure(ApiError::unauthorized(
            "signed out",
            "you are not signed in to this page (or your sign-in ended); sign in again",
        ));
    }
    // A link followed from another site (a chat message) arrives without
    // the SameSite=Strict cookie; a reload from this page itself has it.
    let cross_site = parts
        .headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site");
    if cross_site {
        return views::reload_here(&here);
    }
    let to = format!(
        "/signin?next={}",
        url::form_urlencoded::byte_serialize(here.as_bytes()).collect::<String>()
    );
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

/// A state-changing form: the signed-in viewer, whose own CSRF token the
/// form carried, from this page's own origin.
pub(super) struct Action<T> {
    pub(super) viewer: Viewer,
    pub(super) form: T,
}

#[derive(Deserialize)]
struct WithCsrf<T> {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    fields: T,
}

impl<T: DeserializeOwned + Send> FromRequest<Arc<AdminState>> for Action<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Arc<AdminState>) -> Result<Action<T>, Response> {
        let (mut parts, body) = req.into_parts();
        same_origin(&parts.headers).map_err(views::failure)?;
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let ClientIp(client) = parts
            .extract::<ClientIp>()
            .await
            .unwrap_or(ClientIp(IpAddr::from([0, 0, 0, 0])));
        let form = Form::<WithCsrf<T>>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|e| {
                views::failure(ApiError::bad_request(
                    "bad form",
                    format!("the form could not be read ({e}); reload the page and try again"),
                ))
            })?;
        let Form(WithCsrf { csrf, fields }) = form;
        if !bool::from(csrf.as_bytes().ct_eq(viewer.csrf.as_bytes())) {
            let client_addr = client.to_string();
            let _ = state.shared.audit.record(&AuditEvent {
                identity: Some(viewer.caller.name()),
                client_addr: Some(&client_addr),
                reason: Some("csrf"),
                detail: Some("a form posted to the approver page without this sign-in's CSRF token was refused"),
                ..AuditEvent::new("page_request_refused")
            });
            tracing::warn!(identity = %viewer.caller.name(), %client, "approver page: form without its CSRF token refused");
            return Err(views::failure(ApiError::forbidden(
                "this form did not carry the page's CSRF token, so it was not sent by this page; nothing was changed. Reload the page and try again",
            )));
        }
        Ok(Action {
            viewer,
            form: fields,
        })
    }
}

/// Refuse a state-changing request that a browser says came from another
/// origin. Browsers send `Sec-Fetch-Site` (and `Origin` on posts); a
/// client that sends neither (curl) still needs the cookie and the token.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let refused = || {
        ApiError::forbidden(
            "this form was sent from another site; nothing was changed. Use the jitgate page itself",
        )
    };
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(refused());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, h)| h.as_bytes());
        if origin_host.is_none() || origin_host != host {
            return Err(refused());
        }
    }
    Ok(())
}

/// The value of cookie `name`, if the request has one.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Browsers reach the page over HTTPS (`admin.url`).
fn tls(state: &AdminState) -> bool {
    state.shared.config.admin_over_https()
}

fn cookie_name(state: &AdminState) -> &'static str {
    if tls(state) { COOKIE_TLS } else { COOKIE }
}

/// `Set-Cookie` for a sign-in (or, with `None`, its removal).
fn session_cookie(state: &AdminState, value: Option<&str>) -> String {
    let secure = if tls(state) { "; Secure" } else { "" };
    match value {
        Some(v) => format!(
            "{}={v}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            cookie_name(state),
            SIGN_IN_TTL.as_secs()
        ),
        None => format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
            cookie_name(state)
        ),
    }
}

/// Where to go after signing in: a path of this page, nothing else.
pub(super) fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[derive(Deserialize)]
pub(super) struct Next {
    next: Option<String>,
}

/// `GET /signin`: the provider's button and the secret's form.
pub(super) async fn page(
    State(state): State<Arc<AdminState>>,
    Query(next): Query<Next>,
) -> Response {
    let next = local_path(next.next.as_deref());
    views::sign_in(&state, &next, None, StatusCode::OK)
}

#[derive(Deserialize)]
pub(super) struct SecretForm {
    #[serde(default)]
    secret: String,
    next: Option<String>,
}

/// `POST /signin`: sign in with a jitgate secret, checked as the API checks
/// a bearer token (same cache, same per-address failure budget).
pub(super) async fn with_secret(
    State(state): State<Arc<AdminState>>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    Form(form): Form<SecretForm>,
) -> Response {
    let next = local_path(form.next.as_deref());
    if let Err(e) = same_origin(&headers) {
        return views::failure(e);
    }
    let proven = match state.auth.prove(form.secret.trim(), client).await {
        Ok(proven) => proven,
        Err(e) => {
            let (status, _, detail) = e.parts();
            let detail = if status == StatusCode::UNAUTHORIZED {
                "that secret matches no identity; check it and try again".to_owned()
            } else {
                detail.to_owned()
            };
            return views::sign_in(&state, &next, Some(&detail), status);
        }
    };
    let name = proven.identity.name.clone();
    let credential = proven.identity.credential.as_ref().map(|c| c.id.clone());
    let cookie = state.page.sign_ins.insert(&name, proven.stored_key, None);
    let client_addr = client.to_string();
    let _ = state.shared.audit.record(&AuditEvent {
        identity: Some(&name),
        client_addr: Some(&client_addr),
        credential: credential.as_deref(),
        detail: Some("approver page, with a jitgate secret"),
        ..AuditEvent::new("sign_in")
    });
    tracing::info!(identity = %name, %client, "approver page: signed in with a secret");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, session_cookie(&state, Some(&cookie))),
            (header::LOCATION, next),
        ],
    )
        .into_response()
}

/// Where the provider sends people back to.
fn callback_url(state: &AdminState) -> Result<String, ApiError> {
    let base = state.shared.config.admin_url().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no admin.url",
            "signing in through the identity provider needs the address people reach this page at: set admin.url in jitgate's config (listen.admin listens on every address)",
        )
    })?;
    Ok(format!("{base}/signin/callback"))
}

/// `GET /signin/provider`: off to the identity provider (authorization code
/// flow with PKCE; jitgate keeps the verifier and the nonce).
pub(super) async fn start_provider(
    State(state): State<Arc<AdminState>>,
    ClientIp(client): ClientIp,
    Query(next): Query<Next>,
) -> Response {
    let next = local_path(next.next.as_deref());
    let started = async {
        let provider = login::provider(&state)?;
        let redirect_uri = callback_url(&state)?;
        let (nonce, verifier) = (random_token(), random_token());
        let (flow_state, binding) = state
            .page
            .sign_ins
            .start(client, &nonce, &verifier, next)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many sign-ons",
                    "too many sign-ons are in progress from this address; finish one, or wait ten minutes",
                )
                .retry_after(60)
            })?;
        let url = provider
            .authorization_url(&Authorize {
                redirect_uri: &redirect_uri,
                state: &flow_state,
                nonce: &nonce,
                code_challenge: &crate::identity::oidc_code_challenge(&verifier),
            })
            .await
            .map_err(login::sign_on_refusal)?;
        Ok::<_, ApiError>((url, binding))
    }
    .await;
    match started {
        Ok((url, binding)) => {
            let secure = if tls(&state) { "; Secure" } else { "" };
            // Lax, not Strict: it must come back on the provider's redirect.
            let flow = format!(
                "{FLOW_COOKIE}={binding}; Path=/signin/callback; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
                PENDING_TTL.as_secs()
            );
            (
                StatusCode::SEE_OTHER,
                [(header::SET_COOKIE, flow), (header::LOCATION, url)],
            )
                .into_response()
        }
        Err(e) => views::failure(e),
    }
}

#[derive(Deserialize)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /signin/callback`: back from the provider. jitgate redeems the code
/// itself, checks the ID token and issues a credential, as for `jitgate
/// login`; the page keeps it and the browser gets only the cookie.
pub(super) async fn callback(
    State(state): State<Arc<AdminState>>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    Query(back): Query<Callback>,
) -> Response {
    match signed_on(&state, client, &headers, back).await {
        Ok((cookie, next)) => {
            let clear_flow =
                format!("{FLOW_COOKIE}=; Path=/signin/callback; HttpOnly; SameSite=Lax; Max-Age=0");
            let mut page = views::reload_here(&next);
            let h = page.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&session_cookie(&state, Some(&cookie))) {
                h.append(header::SET_COOKIE, v);
            }
            if let Ok(v) = HeaderValue::from_str(&clear_flow) {
                h.append(header::SET_COOKIE, v);
            }
            page
        }
        Err(e) => {
            let (status, _, detail) = e.parts();
            views::sign_in(&state, "/", Some(detail), status)
        }
    }
}

async fn signed_on(
    state: &AdminState,
    client: IpAddr,
    headers: &HeaderMap,
    back: Callback,
) -> Result<(String, String), ApiError> {
    let provider = login::provider(state)?;
    let refused = |why: String| ApiError::unauthorized("sign-on refused", why);
    let pending = back
        .state
        .as_deref()
        .and_then(|s| state.page.sign_ins.finish(s, cookie(headers, FLOW_COOKIE).as_deref()))
        .ok_or_else(|| {
            refused("this sign-on was not started by this browser, or took longer than ten minutes; start again".into())
        })?;
    if let Some(error) = back.error {
        let said = back.error_description.unwrap_or_default();
        return Err(refused(format!(
            "the identity provider said {error}: {said}"
        )));
    }
    if back
        .iss
        .as_deref()
        .is_some_and(|iss| iss != provider.config().issuer)
    {
        return Err(refused(
            "the answer came from another issuer than jitgate's identity provider".into(),
        ));
    }
    let code = back
        .code
        .ok_or_else(|| refused("the identity provider sent no code back; start again".into()))?;
    let attempt = login::charge(state, client)?;
    let redirect_uri = callback_url(state)?;
    let answer = provider
        .redeem_code(&code, &redirect_uri, &pending.verifier, &pending.nonce)
        .await;
    let (person, new) = login::sign_on(
        state,
        &provider,
        client,
        attempt,
        "approver page authorization_code",
        answer,
    )
    .await?;
    let identities = state.shared.identities.clone();
    let secret = new.secret;
    let proven = tokio::task::spawn_blocking(move || identities.check_token(&secret))
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
            ApiError::internal("the new credential could not be checked; sign in again")
        })?;
    let cookie = state.page.sign_ins.insert(
        &person.name,
        proven.stored_key,
        Some(new.credential.id.clone()),
    );
    Ok((cookie, pending.next))
}

#[derive(Deserialize)]
pub(super) struct NoFields {}

/// `POST /signout`: forget the sign-in; a provider sign-on's credential ends.
pub(super) async fn sign_out(
    State(state): State<Arc<AdminState>>,
    ClientIp(client): ClientIp,
    action: Action<NoFields>,
) -> Response {
    let viewer = action.viewer;
    let name = viewer.caller.name().to_owned();
    if let Some(sign_in) = state.page.sign_ins.remove(&viewer.cookie)
        && let Some(id) = sign_in.credential
    {
        let who = name.clone();
        let ended = state
            .access(move |a| {
                a.logout(&Logout {
                    identity: &who,
                    id: Some(&id),
                    by: &who,
                    unbind: false,
                })
            })
            .await;
        if !matches!(ended, Ok(Ok(_))) {
            tracing::warn!(identity = %name, "approver page: the sign-in's credential could not be ended; it runs out on its own");
        }
    }
    let client_addr = client.to_string();
    let _ = state.shared.audit.record(&AuditEvent {
        identity: Some(&name),
        client_addr: Some(&client_addr),
        detail: Some("approver page"),
        ..AuditEvent::new("sign_out")
    });
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, session_cookie(&state, None)),
            (header::LOCATION, "/signin".to_owned()),
        ],
    )
        .into_response()
}
