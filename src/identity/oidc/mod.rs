//! Sign-on through the company's OpenID Connect provider.
//!
//! jitgate is the provider's client. `jitgate login` drives the person's
//! browser through the authorization code flow with PKCE (S256 always) to
//! a loopback redirect on their machine (RFC 8252), then hands jitgate the
//! code with its verifier and the nonce it sent; `jitgate login --device`
//! uses the device authorization grant (RFC 8628). Either way jitgate
//! itself redeems the code at the provider's token endpoint (with its
//! client secret, when it has one), so the ID token it checks comes
//! straight from the provider, never from the caller. The check is in
//! `id_token.rs`; what a person gets for it, a credential, in `issued.rs`.
//!
//! The provider's discovery document and keys are fetched when first
//! needed and kept; the keys are fetched again only for a key id jitgate
//! has not seen, at most every [`KEY_REFETCH_INTERVAL`]. Calls to the
//! provider are bounded in number ([`MAX_PROVIDER_CALLS`]), time and
//! answer size, and never follow redirects. Nothing here is on a database
//! login's path: a provider that is down stops new sign-ons only.

pub(crate) mod id_token;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, Semaphore};
use url::Url;

use crate::config::{OidcConfig, issuer_scheme_ok};
use id_token::{Expected, Key, SignedOn, TokenError, Unverified};

/// Calls to the provider in flight at once; more get "busy".
pub(crate) const MAX_PROVIDER_CALLS: usize = 32;
/// The longest a call to the provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from the provider.
const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// Keys are fetched again for an unknown key id at most this often.
const KEY_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// The discovery document is fetched again after this long (the old one
/// stays in use while the provider cannot be reached).
const DISCOVERY_MAX_AGE: Duration = Duration::from_secs(3600);
/// With no document yet, a fetch that failed is not tried again for this
/// long: sign-ons fail at once instead of each waiting out a timeout.
const DISCOVERY_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Why a sign-on did not succeed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignOnError {
    /// The provider cannot be reached or answered nonsense; the details
    /// are in the proxy's log.
    #[error(
        "the identity provider cannot be reached or gave an answer jitgate cannot use; try again, and tell jitgate's operators if it persists"
    )]
    Unreachable,
    /// The provider refused (a used or expired code, a wrong verifier, a
    /// denied device login…), in its own words.
    #[error("the identity provider refused the sign-on: {0}")]
    Refused(String),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(
        "this jitgate does not offer the device flow (oidc.device_flow, or the provider has none); use `jitgate login` in a browser"
    )]
    NoDeviceFlow,
    #[error("too many sign-ons are in progress; try again in a moment")]
    Busy,
}

impl SignOnError {
    /// The audit record's `reason`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            SignOnError::Unreachable => "provider_unreachable",
            SignOnError::Refused(_) => "provider_refused",
            SignOnError::Token(e) => e.reason(),
            SignOnError::NoDeviceFlow => "no_device_flow",
            SignOnError::Busy => "busy",
        }
    }
}

/// What the provider's discovery document says jitgate needs.
#[derive(Debug, Clone)]
struct Discovery {
    authorization_endpoint: Url,
    token_endpoint: Url,
    jwks_uri: Url,
    device_authorization_endpoint: Option<Url>,
    /// `id_token_signing_alg_values_supported`.
    algorithms: Vec<String>,
    /// `token_endpoint_auth_methods_supported`.
    auth_methods: Vec<String>,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Key>,
    fetched: Option<Instant>,
}

/// A device sign-on started: what the person is shown, and what the CLI
/// polls with.
#[derive(Debug, serde::Serialize)]
pub(crate) struct DeviceStart {
    pub(crate) device_code: String,
    pub(crate) user_code: String,
    pub(crate) verification_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) verification_uri_complete: Option<String>,
    pub(crate) expires_in: u64,
    pub(crate) interval: u64,
}

/// A device sign-on polled.
#[derive(Debug)]
pub(crate) enum DevicePoll {
    /// Not approved yet; `slow_down`: poll less often.
    Pending {
        slow_down: bool,
    },
    Done(SignedOn),
}

/// What `jitgate login` sends to start: where the provider sends the
/// browser back, and the values only the CLI keeps.
pub(crate) struct Authorize<'a> {
    pub(crate) redirect_uri: &'a str,
    pub(crate) state: &'a str,
    pub(crate) nonce: &'a str,
    pub(crate) code_challenge: &'a str,
}

/// The provider in force, if one is configured (a reload may change it).
#[derive(Default)]
pub(crate) struct ProviderSlot(std::sync::RwLock<Option<std::sync::Arc<Provider>>>);

impl ProviderSlot {
    pub(crate) fn get(&self) -> Option<std::sync::Arc<Provider>> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, provider: Option<std::sync::Arc<Provider>>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = provider;
    }
}

/// jitgate as the provider's client.
pub(crate) struct Provider {
    config: OidcConfig,
    http: reqwest::Client,
    discovery: Mutex<Option<(Discovery, Instant)>>,
    /// When the last fetch of the discovery document failed.
    discovery_failed: std::sync::Mutex<Option<Instant>>,
    keys: Mutex<KeySet>,
    calls: Semaphore,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

/// Why a provider client cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ProviderSetupError {
    #[error("oidc.ca_file {path}: {why}")]
    CaFile {
        path: std::path::PathBuf,
        why: String,
    },
    #[error("cannot make the identity provider's HTTP client: {0}")]
    Client(String),
}

impl Provider {
    pub(crate) fn new(config: &OidcConfig) -> Result<Provider, ProviderSetupError> {
        let mut http = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("jitgate/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            let ca_error = |why: String| ProviderSetupError::CaFile {
                path: path.clone(),
                why,
            };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_error("holds no certificate".into()));
            }
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .map_err(|e| ProviderSetupError::Client(e.to_string()))?;
        Ok(Provider {
            config: config.clone(),
            http,
            discovery: Mutex::new(None),
            discovery_failed: std::sync::Mutex::new(None),
            keys: Mutex::new(KeySet::default()),
            calls: Semaphore::new(MAX_PROVIDER_CALLS),
        })
    }

    pub(crate) fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// The URL the person's browser is sent to.
    pub(crate) async fn authorization_url(&self, a: &Authorize<'_>) -> Result<String, SignOnError> {
        let d = self.discovery().await?;
        let mut url = d.authorization_endpoint;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", a.redirect_uri)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", a.state)
            .append_pair("nonce", a.nonce)
            .append_pair("code_challenge", a.code_challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    /// Redeem an authorization code and check the ID token it brings.
    pub(crate) async fn redeem_code(
        &self,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
        nonce: &str,
    ) -> Result<SignedOn, SignOnError> {
        let d = self.discovery().await?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", code_verifier),
        ];
        let (status, answer) = self.post_form(&d, &d.token_endpoint, &form).await?;
        if !status.is_success() {
            return Err(refused(&answer));
        }
        self.check_token_answer(&d, &answer, Some(nonce)).await
    }

    /// Start a device sign-on.
    pub(crate) async fn start_device(&self) -> Result<DeviceStart, SignOnError> {
        if !self.config.device_flow {
            return Err(SignOnError::NoDeviceFlow);
        }
        let d = self.discovery().await?;
        let endpoint = d
            .device_authorization_endpoint
            .clone()
            .ok_or(SignOnError::NoDeviceFlow)?;
        let scope = self.config.scopes.join(" ");
        let (status, answer) = self
            .post_form(&d, &endpoint, &[("scope", scope.as_str())])
            .await?;
        if !status.is_success() {
            return Err(refused(&answer));
        }
        let text = |k: &str| answer.get(k).and_then(Value::as_str).map(str::to_owned);
        let (Some(device_code), Some(user_code), Some(verification_uri)) = (
            text("device_code"),
            text("user_code"),
            text("verification_uri"),
        ) else {
            tracing::warn!("the identity provider's device authorization answer lacks a field");
            return Err(SignOnError::Unreachable);
        };
        Ok(DeviceStart {
            device_code,
            user_code,
            verification_uri,
            verification_uri_complete: text("verification_uri_complete"),
            expires_in: answer
                .get("expires_in")
                .and_then(Value::as_u64)
                .unwrap_or(600)
                .clamp(1, 3600),
            interval: answer
                .get("interval")
                .and_then(Value::as_u64)
                .unwrap_or(5)
                .clamp(1, 60),
        })
    }

    /// Ask the provider once whether a device sign-on was approved.
    pub(crate) async fn poll_device(&self, device_code: &str) -> Result<DevicePoll, SignOnError> {
        let d = self.discovery().await?;
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
        ];
        let (status, answer) = self.post_form(&d, &d.token_endpoint, &form).await?;
        if !status.is_success() {
            return match answer.get("error").and_then(Value::as_str) {
                Some("authorization_pending") => Ok(DevicePoll::Pending { slow_down: false }),
                Some("slow_down") => Ok(DevicePoll::Pending { slow_down: true }),
                _ => Err(refused(&answer)),
            };
        }
        self.check_token_answer(&d, &answer, None)
            .await
            .map(DevicePoll::Done)
    }

    async fn check_token_answer(
        &self,
        d: &Discovery,
        answer: &Value,
        nonce: Option<&str>,
    ) -> Result<SignedOn, SignOnError> {
        let Some(token) = answer.get("id_token").and_then(Value::as_str) else {
            return Err(SignOnError::Refused(
                "the token endpoint sent no ID token (is \"openid\" among oidc.scopes?)".into(),
            ));
        };
        let claims = self.verify_signature(d, token).await?;
        let want = Expected {
            issuer: &self.config.issuer,
            client_id: &self.config.client_id,
            nonce,
            clock_skew: self.config.clock_skew,
            now: crate::access::clock::now(),
            username_claim: &self.config.username_claim,
            groups_claim: &self.config.groups_claim,
        };
        Ok(id_token::check_claims(&claims, &want)?)
    }

    /// The token's claims, once its signature checks with one of the
    /// provider's keys (fetched again once for a key id not seen yet).
    async fn verify_signature(
        &self,
        d: &Discovery,
        token: &str,
    ) -> Result<serde_json::Map<String, Value>, SignOnError> {
        let parsed = Unverified::parse(token)?;
        parsed.check_algorithm(&d.algorithms)?;
        let mut keys = self.keys.lock().await;
        let stale = keys
            .fetched
            .is_none_or(|at| at.elapsed() >= KEY_REFETCH_INTERVAL);
        if parsed.candidates(&keys.keys).is_empty() && stale {
            let (status, doc) = self.get(&d.jwks_uri).await?;
            if !status.is_success() {
                tracing::warn!(%status, "the identity provider's keys (jwks_uri) cannot be read");
                return Err(SignOnError::Unreachable);
            }
            keys.keys = id_token::parse_jwks(&doc);
            keys.fetched = Some(Instant::now());
        }
        let candidates = parsed.candidates(&keys.keys);
        let mut last = TokenError::UnknownKey;
        for key in candidates {
            match Unverified::parse(token)?.verify_with(key, &d.algorithms) {
                Ok(claims) => return Ok(claims),
                Err(e) => last = e,
            }
        }
        Err(last.into())
    }

    /// The discovery document, fetched when first needed and again after
    /// [`DISCOVERY_MAX_AGE`] (the old one serves while the provider is away).
    async fn discovery(&self) -> Result<Discovery, SignOnError> {
        let failed_recently = || {
            self.discovery_failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some_and(|at| at.elapsed() < DISCOVERY_RETRY_AFTER)
        };
        let mut cached = self.discovery.lock().await;
        if let Some((d, at)) = cached.as_ref()
            && (at.elapsed() < DISCOVERY_MAX_AGE || failed_recently())
        {
            return Ok(d.clone());
        }
        if cached.is_none() && failed_recently() {
            return Err(SignOnError::Unreachable);
        }
        match self.fetch_discovery().await {
            Ok(d) => {
                *cached = Some((d.clone(), Instant::now()));
                Ok(d)
            }
            // Too many sign-ons at once says nothing of the provider.
            Err(SignOnError::Busy) => Err(SignOnError::Busy),
            Err(e) => {
                *self
                    .discovery_failed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
                match cached.as_ref() {
                    Some((d, _)) => Ok(d.clone()),
                    None => Err(e),
                }
            }
        }
    }

    async fn fetch_discovery(&self) -> Result<Discovery, SignOnError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let url = Url::parse(&url).map_err(|_| SignOnError::Unreachable)?;
        let (status, doc) = self.get(&url).await?;
        let bad = |why: &str| {
            tracing::warn!(issuer = %self.config.issuer, why, "the identity provider's discovery document cannot be used");
            SignOnError::Unreachable
        };
        if !status.is_success() {
            return Err(bad(&format!("HTTP {status}")));
        }
        if doc.get("issuer").and_then(Value::as_str) != Some(self.config.issuer.as_str()) {
            return Err(bad(
                "its issuer is not oidc.issuer, character for character",
            ));
        }
        let endpoint = |k: &str| -> Result<Option<Url>, SignOnError> {
            match doc.get(k).and_then(Value::as_str) {
                None => Ok(None),
                Some(s) => match Url::parse(s) {
                    Ok(u) if issuer_scheme_ok(&u) => Ok(Some(u)),
                    _ => Err(bad(&format!("{k} is not an https URL"))),
                },
            }
        };
        let required = |k: &str| endpoint(k)?.ok_or_else(|| bad(&format!("it has no {k}")));
        let list = |k: &str| -> Option<Vec<String>> {
            doc.get(k)?.as_array().map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
        };
        Ok(Discovery {
            authorization_endpoint: required("authorization_endpoint")?,
            token_endpoint: required("token_endpoint")?,
            jwks_uri: required("jwks_uri")?,
            device_authorization_endpoint: endpoint("device_authorization_endpoint")?,
            algorithms: list("id_token_signing_alg_values_supported")
                .unwrap_or_else(|| vec!["RS256".to_owned()]),
            auth_methods: list("token_endpoint_auth_methods_supported")
                .unwrap_or_else(|| vec!["client_secret_basic".to_owned()]),
        })
    }

    async fn get(&self, url: &Url) -> Result<(reqwest::StatusCode, Value), SignOnError> {
        let _call = self.calls.try_acquire().map_err(|_| SignOnError::Busy)?;
        let sent = self.http.get(url.clone()).send().await;
        read_answer(url, sent).await
    }

    /// POST a form to the provider as jitgate's client: with its secret
    /// (HTTP Basic, or in the form when the provider takes only that),
    /// or as a public client naming its `client_id`.
    async fn post_form(
        &self,
        d: &Discovery,
        url: &Url,
        form: &[(&str, &str)],
    ) -> Result<(reqwest::StatusCode, Value), SignOnError> {
        let _call = self.calls.try_acquire().map_err(|_| SignOnError::Busy)?;
        let secret = self.config.client_secret.read().map_err(|e| {
            tracing::error!(error = %e, "the OIDC client secret cannot be read");
            SignOnError::Unreachable
        })?;
        let client_id = self.config.client_id.as_str();
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        let mut request = self.http.post(url.clone());
        match &secret {
            Some(secret)
                if d.auth_methods.iter().any(|m| m == "client_secret_basic")
                    || !d.auth_methods.iter().any(|m| m == "client_secret_post") =>
            {
                // RFC 6749 2.3.1: both parts form-urlencoded before Basic.
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                request = request.basic_auth(enc(client_id), Some(enc(secret)));
            }
            Some(secret) => {
                fields.push(("client_id", client_id));
                fields.push(("client_secret", secret));
            }
            None => fields.push(("client_id", client_id)),
        }
        let sent = request.form(&fields).send().await;
        read_answer(url, sent).await
    }
}

/// Read a JSON answer of at most [`MAX_ANSWER_BYTES`].
async fn read_answer(
    url: &Url,
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<(reqwest::StatusCode, Value), SignOnError> {
    let unusable = |why: String| {
        tracing::warn!(url = %without_query(url), why, "a call to the identity provider failed");
        SignOnError::Unreachable
    };
    let mut response = sent.map_err(|e| unusable(e.without_url().to_string()))?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| unusable(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(unusable(format!("answer over {MAX_ANSWER_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    let value =
        serde_json::from_slice(&body).map_err(|_| unusable(format!("HTTP {status}, not JSON")))?;
    Ok((status, value))
}

fn without_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

/// The provider's OAuth error, in its words (bounded, printable only).
fn refused(answer: &Value) -> SignOnError {
    let text = |k: &str| {
        answer.get(k).and_then(Value::as_str).map(|s| {
            s.chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect::<String>()
        })
    };
    SignOnError::Refused(match (text("error"), text("error_description")) {
        (Some(e), Some(d)) => format!("{e} ({d})"),
        (Some(e), None) => e,
        _ => "no reason given".into(),
    })
}

/// PKCE's S256 challenge for `verifier` (RFC 7636 4.2).
pub fn code_challenge(verifier: &str) -> String {
    B64URL.encode(Sha256::digest(verifier.as_bytes()))
}

/// Is `uri` a loopback redirect a native app may use (RFC 8252 7.3): http
/// to a loopback IP literal (not `localhost`, which a name service could
/// send elsewhere, 8.3) with a port, and no user part or fragment?
pub(crate) fn loopback_redirect(uri: &str) -> bool {
    match Url::parse(uri) {
        Ok(u) => {
            u.scheme() == "http"
                && u.port().is_some()
                && u.fragment().is_none()
                && u.username().is_empty()
                && u.password().is_none()
                && match u.host() {
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    _ => false,
                }
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_http_redirects_with_a_port_are_taken() {
        assert!(loopback_redirect("http://127.0.0.1:53121/callback"));
        assert!(loopback_redirect("http://[::1]:53121/callback"));
        for bad in [
            "http://localhost:8000/",
            "http://me@127.0.0.1:5/callback",
            "http://127.0.0.1:5@evil.example/callback",
            "https://127.0.0.1:5/callback",
            "http://127.0.0.1/callback",
            "http://evil.example:80/",
            "http://127.0.0.1:5/#x",
            "not a url",
        ] {
            assert!(!loopback_redirect(bad), "{bad}");
        }
    }

    #[test]
    fn the_s256_challenge_is_rfc_7636s() {
        // RFC 7636 appendix B.
        assert_eq!(
            code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
