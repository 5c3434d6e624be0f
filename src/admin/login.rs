//! `/v1/login…` and `/v1/logout`: sign-on through the identity provider,
//! and the end of the credentials it gives.
//!
//! The sign-on endpoints take no token (they are how a person gets one).
//! Each failed sign-on is audited (`login_failed` with its reason, never a
//! token or code) and charged to the client address's login budget, the
//! one the database listeners and bearer tokens charge, as is each device
//! sign-on started; an address with none left gets `429` before jitgate
//! calls the provider. What jitgate checks of the
//! provider's answer is in `identity::oidc`; a signed-on person gets a
//! credential from the access model, which stores it for every proxy.
//!
//! The answer to a successful sign-on is the one place the API sends a
//! secret: the new credential, once, to the person it is for, with
//! `Cache-Control: no-store`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::AdminState;
use super::auth::{Caller, ClientIp};
use super::error::ApiError;
use super::json::{JsonBody, OptionalJsonBody};
use crate::access::Logout;
use crate::audit::AuditEvent;
use crate::identity::issued::{CredentialInfo, Holder};
use crate::identity::oidc::id_token::SignedOn;
use crate::identity::oidc::{Authorize, DevicePoll, Provider, SignOnError, loopback_redirect};

pub(super) fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/v1/login/start", post(start))
        .route("/v1/login/code", post(code))
        .route("/v1/login/device", post(device_start))
        .route("/v1/login/device/token", post(device_token))
        .route("/v1/logout", post(logout))
        .route("/v1/identities/{name}/logout", post(logout_identity))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Start {
    redirect_uri: String,
    state: String,
    nonce: String,
    code_challenge: String,
}

#[derive(Serialize)]
struct Started {
    authorization_url: String,
    /// The provider, which the redirect's `iss` must name (RFC 9207).
    issuer: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Code {
    code: String,
    redirect_uri: String,
    code_verifier: String,
    nonce: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceToken {
    device_code: String,
}

#[derive(Serialize)]
struct Pending {
    status: &'static str,
    /// Seconds to wait before polling again.
    interval: u64,
}

/// What a sign-on gives: who the person is to jitgate, and the credential.
#[derive(Serialize)]
struct SignedOnAnswer {
    identity: String,
    groups: Vec<String>,
    credential: CredentialInfo,
    /// The credential's secret: the API token and the database password.
    secret: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogoutBody {
    /// End every credential of the caller, not only the one it called with.
    #[serde(default)]
    all: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogoutIdentityBody {
    /// Free the name for another account at the identity provider (it must
    /// hold no active grant or pending request).
    #[serde(default)]
    free_name: bool,
}

#[derive(Serialize)]
struct LoggedOut {
    identity: String,
    ended: Vec<CredentialInfo>,
}

/// The provider, or `404` when none is configured.
pub(super) fn provider(state: &AdminState) -> Result<Arc<Provider>, ApiError> {
    state.shared.provider.get().ok_or_else(|| {
        ApiError::not_found(
            "no identity provider",
            "this jitgate has no [oidc] provider configured; sign in with your jitgate secret instead",
        )
    })
}

/// A value the CLI made up (state, nonce): 16 to 512 URL-safe characters.
fn opaque_ok(v: &str) -> bool {
    (16..=512).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

async fn start(
    State(state): State<Arc<AdminState>>,
    body: Result<JsonBody<Start>, ApiError>,
) -> Result<Response, ApiError> {
    let provider = provider(&state)?;
    let JsonBody(body) = body?;
    if !loopback_redirect(&body.redirect_uri) {
        return Err(ApiError::bad_request(
            "bad redirect_uri",
            "redirect_uri must be an http:// loopback address with a port, like http://127.0.0.1:53121/callback (RFC 8252)",
        ));
    }
    if !opaque_ok(&body.state) || !opaque_ok(&body.nonce) {
        return Err(ApiError::bad_request(
            "bad state or nonce",
            "state and nonce must each be 16 to 512 URL-safe characters, fresh for every sign-on",
        ));
    }
    if body.code_challenge.len() != 43 || !opaque_ok(&body.code_challenge) {
        return Err(ApiError::bad_request(
            "bad code_challenge",
            "code_challenge must be the S256 PKCE challenge: 43 base64url characters",
        ));
    }
    let url = provider
        .authorization_url(&Authorize {
            redirect_uri: &body.redirect_uri,
            state: &body.state,
            nonce: &body.nonce,
            code_challenge: &body.code_challenge,
        })
        .await
        .map_err(sign_on_refusal)?;
    Ok(Json(Started {
        authorization_url: url,
        issuer: provider.config().issuer.clone(),
    })
    .into_response())
}

async fn code(
    State(state): State<Arc<AdminState>>,
    ClientIp(client): ClientIp,
    body: Result<JsonBody<Code>, ApiError>,
) -> Result<Response, ApiError> {
    let provider = provider(&state)?;
    let JsonBody(body) = body?;
    let attempt = charge(&state, client)?;
    let signed_on = provider
        .redeem_code(
            &body.code,
            &body.redirect_uri,
            &body.code_verifier,
            &body.nonce,
        )
        .await;
    let signed_on = sign_on(
        &state,
        &provider,
        client,
        attempt,
        "authorization_code",
        signed_on,
    );
    Ok(answer(signed_on.await?))
}

/// Starting a device sign-on costs the address one attempt of its login
/// budget, never given back: a started flow is a code someone could be
/// talked into approving (device-code phishing), so they are not free.
async fn device_start(
    State(state): State<Arc<AdminState>>,
    ClientIp(client): ClientIp,
) -> Result<Response, ApiError> {
    let provider = provider(&state)?;
    let _attempt = charge(&state, client)?;
    let started = provider.start_device().await.map_err(sign_on_refusal)?;
    let client_addr = client.to_string();
    let _ = state.shared.audit.record(&AuditEvent {
        client_addr: Some(&client_addr),
        detail: Some("a device sign-on was started; its code is valid until the provider's expiry"),
        ..AuditEvent::new("device_sign_in_started")
    });
    Ok(Json(started).into_response())
}

async fn device_token(
    State(state): State<Arc<AdminState>>,
    ClientIp(client): ClientIp,
    body: Result<JsonBody<DeviceToken>, ApiError>,
) -> Result<Response, ApiError> {
    let provider = provider(&state)?;
    let JsonBody(body) = body?;
    let attempt = charge(&state, client)?;
    let signed_on = match provider.poll_device(&body.device_code).await {
        Ok(DevicePoll::Pending { slow_down }) => {
            attempt.refund();
            let pending = Pending {
                status: if slow_down {
                    "slow_down"
                } else {
                    "authorization_pending"
                },
                interval: if slow_down { 10 } else { 5 },
            };
            return Ok((StatusCode::ACCEPTED, Json(pending)).into_response());
        }
        Ok(DevicePoll::Done(signed_on)) => Ok(signed_on),
        Err(e) => Err(e),
    };
    let signed_on = sign_on(&state, &provider, client, attempt, "device", signed_on);
    Ok(answer(signed_on.await?))
}

/// Charge one sign-on to `client`'s login budget (refunded on success).
pub(super) fn charge(
    state: &AdminState,
    client: IpAddr,
) -> Result<crate::identity::LoginAttempt<'_>, ApiError> {
    state.shared.logins.charge(None, client).map_err(|wait| {
        tracing::warn!(%client, "sign-on: too many failed logins from this address");
        ApiError::too_many_failed_logins(wait.as_secs().max(1))
    })
}

/// The person signed on and their new credential, as the API answers
/// them (once, not to be cached).
fn answer((person, new): (SignedOn, crate::identity::issued::NewCredential)) -> Response {
    let answer = SignedOnAnswer {
        identity: person.name,
        groups: person.groups,
        credential: CredentialInfo {
            id: new.credential.id.clone(),
            issued_at: new.credential.issued_at,
            expires_at: new.credential.expires_at,
        },
        secret: new.secret,
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(answer)).into_response()
}

/// After the provider answered: audit a failure, or sign the person on
/// and issue their credential; the sign-on's `attempt` is given back to
/// the address's login budget only when it succeeded. The CLI's and the
/// approver page's one way to sign someone on.
pub(super) async fn sign_on(
    state: &AdminState,
    provider: &Provider,
    client: IpAddr,
    attempt: crate::identity::LoginAttempt<'_>,
    flow: &'static str,
    signed_on: Result<SignedOn, SignOnError>,
) -> Result<(SignedOn, crate::identity::issued::NewCredential), ApiError> {
    let client_addr = client.to_string();
    let failed = |reason: &str, detail: &str, identity: Option<&str>| {
        let _ = state.shared.audit.record(&AuditEvent {
            identity,
            client_addr: Some(&client_addr),
            reason: Some(reason),
            detail: Some(detail),
            ..AuditEvent::new("login_failed")
        });
    };
    let person = match signed_on {
        Ok(person) => person,
        Err(e) => {
            failed(e.reason(), &e.to_string(), None);
            tracing::warn!(%client, reason = e.reason(), "sign-on refused: {e}");
            return Err(sign_on_refusal(e));
        }
    };
    if state.shared.identities.in_config(&person.name) {
        let why = format!(
            "\"{}\" is the name of an identity in jitgate's config; a name cannot be both, so it cannot sign on through the provider",
            person.name
        );
        failed("config_identity", &why, Some(&person.name));
        return Err(ApiError::new(StatusCode::CONFLICT, "name taken", why));
    }
    let config = provider.config();
    let detail = format!(
        "{flow} flow at {}; subject {}",
        config.issuer, person.subject
    );
    let (ttl, max) = (config.credential_ttl, config.max_credentials_per_person);
    let issuer = config.issuer.clone();
    let holder_person = person.clone();
    let new = state
        .access(move |a| {
            a.issue_credential(
                &Holder {
                    identity: &holder_person.name,
                    groups: &holder_person.groups,
                    issuer: &issuer,
                    subject: &holder_person.subject,
                },
                ttl,
                max,
            )
        })
        .await?;
    let new = match new {
        Ok(new) => new,
        Err(e) => {
            if let crate::access::AccessError::NameBound { .. } = e {
                failed("name_bound", &detail, Some(&person.name));
            }
            return Err(e.into());
        }
    };
    // After the credential's own record: the sign-on it came from.
    let _ = state.shared.audit.record(&AuditEvent {
        identity: Some(&person.name),
        client_addr: Some(&client_addr),
        detail: Some(&detail),
        credential: Some(&new.credential.id),
        ..AuditEvent::new("sign_in")
    });
    attempt.refund();
    tracing::info!(identity = %person.name, credential = %new.credential.id, flow, "signed on through the identity provider");
    Ok((person, new))
}

/// A sign-on failure as the API answers it.
pub(super) fn sign_on_refusal(e: SignOnError) -> ApiError {
    let status = match e {
        SignOnError::Unreachable => StatusCode::BAD_GATEWAY,
        SignOnError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        SignOnError::NoDeviceFlow => StatusCode::NOT_IMPLEMENTED,
        SignOnError::Refused(_) | SignOnError::Token(_) => StatusCode::UNAUTHORIZED,
    };
    let error = match e {
        SignOnError::Token(_) => "invalid id token",
        SignOnError::Refused(_) => "sign-on refused",
        SignOnError::Unreachable => "identity provider unreachable",
        SignOnError::Busy => "busy",
        SignOnError::NoDeviceFlow => "no device flow",
    };
    ApiError::new(status, error, e.to_string())
}

/// End the credential the caller called with, or all of theirs.
async fn logout(
    State(state): State<Arc<AdminState>>,
    caller: Caller,
    body: Result<OptionalJsonBody<LogoutBody>, ApiError>,
) -> Result<Response, ApiError> {
    let OptionalJsonBody(body) = body?;
    let Some(credential) = caller.identity.credential.clone() else {
        return Err(ApiError::bad_request(
            "no credential",
            format!(
                "{} is an identity from jitgate's config, whose secret does not log out; an admin changes it in the config",
                caller.name()
            ),
        ));
    };
    let name = caller.name().to_owned();
    let ended = state
        .access(move |a| {
            a.logout(&Logout {
                identity: &name,
                id: (!body.all).then_some(credential.id.as_str()),
                by: &name,
                unbind: false,
            })
        })
        .await??;
    tracing::info!(identity = %caller.name(), ended = ended.len(), "logged out");
    Ok(Json(LoggedOut {
        identity: caller.name().to_owned(),
        ended,
    })
    .into_response())
}

/// An admin ends every credential of a person, and with them their sessions.
async fn logout_identity(
    State(state): State<Arc<AdminState>>,
    caller: Caller,
    name: Result<Path<String>, PathRejection>,
    body: Result<OptionalJsonBody<LogoutIdentityBody>, ApiError>,
) -> Result<Response, ApiError> {
    caller.require_admin("log other people out")?;
    let Path(name) = name?;
    let OptionalJsonBody(body) = body?;
    let by = caller.name().to_owned();
    let who = name.clone();
    let ended = state
        .access(move |a| {
            a.logout(&Logout {
                identity: &who,
                id: None,
                by: &by,
                unbind: body.free_name,
            })
        })
        .await??;
    tracing::info!(identity = %name, by = %caller.name(), ended = ended.len(), "admin API: credentials logged out");
    Ok(Json(LoggedOut {
        identity: name,
        ended,
    })
    .into_response())
}
