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
/// Sign-ins kept at once; past this new ones are refused until some end.
const MAX_SIGN_INS: usize = 4096;
/// One person's sign-ins; a new one pushes out their oldest (never anyone
/// else's), so nobody can sign others out by signing in over and over.
const MAX_SIGN_INS_PER_PERSON: usize = 16;
/// How long a provider sign-on may take between leaving and coming back.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// Provider sign-ons in progress at once, and from one client address.
const MAX_PENDING: usize = 1024;
const MAX_PENDING_PER_ADDRESS: usize = 16;

/// The cookie that names a sign-in (`__Host-` where it can be: TLS).
const COOKIE: &str = "jitgate_page";
const COOKIE_TLS: &str = "__Host-jitgate_page";
/// The cookie that ties a provider sign-on's return to the browser that
/// left (`__Host-` on TLS too, so a sibling host cannot plant its own).
const FLOW_COOKIE: &str = "jitgate_signin";
const FLOW_COOKIE_TLS: &str = "__Host-jitgate_signin";

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

    /// Remember a new sign-in: the cookie value that names it, and the
    /// person's oldest sign-in it pushed out, if they had too many. `None`
    /// when the page holds as many sign-ins as it keeps.
    fn insert(
        &self,
        name: &str,
        stored_key: [u8; 32],
        credential: Option<String>,
    ) -> Option<(String, Option<SignIn>)> {
        let cookie = random_token();
        let mut map = self.by_hash.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.since.elapsed() < SIGN_IN_TTL);
        let theirs = map.iter().filter(|(_, s)| s.name == name);
        let mut pushed_out = None;
        if theirs.clone().count() >= MAX_SIGN_INS_PER_PERSON {
            let oldest = theirs.min_by_key(|(_, s)| s.since).map(|(k, _)| *k);
            pushed_out = oldest.and_then(|k| map.remove(&k));
        } else if map.len() >= MAX_SIGN_INS {
            return None;
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
        Some((cookie, pushed_out))
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
    /// value that must come back with it. Refused when too many are pending
    /// from `client` (an IPv6 /64 counts as one), or at all.
    fn start(
        &self,
        client: IpAddr,
        nonce: &str,
        verifier: &str,
        next: String,
    ) -> Result<(String, String), ApiError> {
        let client = crate::identity::client_of(client);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, p| p.since.elapsed() < PENDING_TTL);
        let from_client = pending.values().filter(|p| p.client == client).count();
        let busy = |detail: &str| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many sign-ons",
                detail.to_owned(),
            )
            .retry_after(60)
        };
        if from_client >= MAX_PENDING_PER_ADDRESS {
            return Err(busy(
                "too many sign-ons are in progress from this address; finish one, or wait ten minutes",
            ));
        }
        if pending.len() >= MAX_PENDING {
            return Err(busy(
                "too many sign-ons are in progress on this jitgate; try again in a minute, or sign in with your jitgate secret",
            ));
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
        Ok((state, binding))
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
            let (sign_in, proven) = signed_in(state, &cookie)?;
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
        signed_in(state, &self.cookie).is_some()
    }
}

/// The sign-in `cookie` names, while its secret is still a live one of the
/// name (not changed in the config, logged out or expired).
fn signed_in(state: &AdminState, cookie: &str) -> Option<(SignIn, crate::identity::Proven)> {
    let sign_in = state.page.sign_ins.get(cookie)?;
    let proven = state
        .shared
        .identities
        .keys_for(&sign_in.name)
        .match_stored_key(&sign_in.stored_key)?;
    Some((sign_in, proven))
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
    let max_age = value.map_or(0, |_| SIGN_IN_TTL.as_secs());
    set_cookie(state, cookie_name(state), value, "/", "Strict", max_age)
}

fn flow_cookie_name(state: &AdminState) -> &'static str {
    if tls(state) {
        FLOW_COOKIE_TLS
    } else {
        FLOW_COOKIE
    }
}

/// `Set-Cookie` for a provider sign-on under way (or its removal). Lax, not
/// Strict: it must come back on the provider's redirect.
fn flow_cookie(state: &AdminState, value: Option<&str>) -> String {
    // `__Host-` cookies must have Path=/.
    let path = if tls(state) { "/" } else { "/signin/callback" };
    let max_age = value.map_or(0, |_| PENDING_TTL.as_secs());
    set_cookie(state, flow_cookie_name(state), value, path, "Lax", max_age)
}

fn set_cookie(
    state: &AdminState,
    name: &str,
    value: Option<&str>,
    path: &str,
    same_site: &str,
    max_age: u64,
) -> String {
    let secure = if tls(state) { "; Secure" } else { "" };
    let value = value.unwrap_or_default();
    format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}"
    )
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
    let cookie = match remember(&state, &name, proven.stored_key, None).await {
        Ok(cookie) => cookie,
        Err(e) => {
            let (status, _, detail) = e.parts();
            return views::sign_in(&state, &next, Some(detail), status);
        }
    };
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
    headers: HeaderMap,
    Query(next): Query<Next>,
) -> Response {
    let next = local_path(next.next.as_deref());
    // Started by a person following the link, not by an image or a script
    // of another page spending this address's sign-ons in progress.
    let fetched = headers.get("sec-fetch-mode");
    if fetched.is_some_and(|m| m.as_bytes() != b"navigate") {
        return views::failure(ApiError::bad_request(
            "not a navigation",
            "a sign-on starts when you follow the sign-in link; open /signin",
        ));
    }
    let started = async {
        let provider = login::provider(&state)?;
        let redirect_uri = callback_url(&state)?;
        let (nonce, verifier) = (random_token(), random_token());
        let (flow_state, binding) = state.page.sign_ins.start(client, &nonce, &verifier, next)?;
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
            let flow = flow_cookie(&state, Some(&binding));
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
            let clear_flow = flow_cookie(&state, None);
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
        .and_then(|s| {
            let binding = cookie(headers, flow_cookie_name(state));
            state.page.sign_ins.finish(s, binding.as_deref())
        })
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
    let credential = new.credential.id.clone();
    let cookie = remember(state, &person.name, proven.stored_key, Some(credential)).await?;
    Ok((cookie, pending.next))
}

/// Keep a new sign-in; the cookie value that names it. A sign-in it pushes
/// out, and a provider credential it could not keep, are ended.
async fn remember(
    state: &AdminState,
    name: &str,
    stored_key: [u8; 32],
    credential: Option<String>,
) -> Result<String, ApiError> {
    match state
        .page
        .sign_ins
        .insert(name, stored_key, credential.clone())
    {
        Some((cookie, pushed_out)) => {
            if let Some(id) = pushed_out.and_then(|s| s.credential) {
                end_credential(state, name, id).await;
            }
            Ok(cookie)
        }
        None => {
            if let Some(id) = credential {
                end_credential(state, name, id).await;
            }
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many sign-ins",
                "this jitgate's page holds as many sign-ins as it keeps; try again later, or use the jitgate CLI",
            )
            .retry_after(60))
        }
    }
}

/// End the credential a page sign-in held (its sign-out, or its eviction).
async fn end_credential(state: &AdminState, name: &str, id: String) {
    let who = name.to_owned();
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
        tracing::warn!(identity = %name, "approver page: a sign-in's credential could not be ended; it runs out on its own");
    }
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
        end_credential(&state, &name, id).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_in_again_and_again_pushes_out_only_ones_own_sign_ins() {
        let sign_ins = SignIns::default();
        let (bob, _) = sign_ins.insert("bob", [2; 32], None).unwrap();
        let (first, _) = sign_ins
            .insert("alice", [1; 32], Some("c_first".into()))
            .unwrap();
        for _ in 1..MAX_SIGN_INS_PER_PERSON {
            let (_, pushed_out) = sign_ins.insert("alice", [1; 32], None).unwrap();
            assert!(pushed_out.is_none());
        }
        let (_, pushed_out) = sign_ins.insert("alice", [1; 32], None).unwrap();
        assert_eq!(
            pushed_out.and_then(|s| s.credential).as_deref(),
            Some("c_first"),
            "alice's oldest goes, with its credential to end"
        );
        assert!(sign_ins.get(&first).is_none());
        for _ in 0..10 * MAX_SIGN_INS_PER_PERSON {
            sign_ins.insert("alice", [1; 32], None).unwrap();
        }
        assert_eq!(sign_ins.get(&bob).map(|s| s.name), Some("bob".to_owned()));
    }

    #[test]
    fn a_full_page_refuses_new_sign_ins_rather_than_dropping_others() {
        let sign_ins = SignIns::default();
        let names: Vec<String> = (0..MAX_SIGN_INS).map(|i| format!("p{i}")).collect();
        let cookies: Vec<String> = names
            .iter()
            .map(|n| sign_ins.insert(n, [0; 32], None).unwrap().0)
            .collect();
        assert!(sign_ins.insert("late", [0; 32], None).is_none());
        assert!(cookies.iter().all(|c| sign_ins.get(c).is_some()));
    }

    #[test]
    fn sign_ons_in_progress_are_capped_per_address_and_ipv6_prefix() {
        let sign_ins = SignIns::default();
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        for i in 0..MAX_PENDING_PER_ADDRESS {
            sign_ins.start(v6(i as u16), "n", "v", "/".into()).unwrap();
        }
        let refused = sign_ins.start(v6(999), "n", "v", "/".into()).unwrap_err();
        assert!(refused.parts().2.contains("from this address"));
        assert!(
            sign_ins
                .start(IpAddr::from([10, 0, 0, 1]), "n", "v", "/".into())
                .is_ok(),
            "another address still starts"
        );
    }

    #[test]
    fn only_local_paths_are_followed_after_signing_in() {
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "",
            "x",
            "/a\nb",
        ] {
            assert_eq!(local_path(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(local_path(Some("/requests/r_1?x=1")), "/requests/r_1?x=1");
        assert_eq!(local_path(None), "/");
    }
}
