//! `[oidc]`: the company's OpenID Connect provider, through which people
//! sign on (`jitgate login`) and get short-lived credentials.

use std::time::Duration;

use super::Validator;
use crate::config::raw::RawOidc;
use crate::config::{ConfigError, OidcConfig, SecretSource};

/// The shortest and longest life an issued credential may be given.
const SHORTEST_TTL: Duration = Duration::from_secs(10);
const LONGEST_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl Validator<'_> {
    pub(super) fn oidc(&self, raw: Option<RawOidc>) -> Result<Option<OidcConfig>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let issuer = url::Url::parse(&raw.issuer).map_err(|e| {
            self.invalid("oidc.issuer", format!("`{}` is not a URL: {e}", raw.issuer))
        })?;
        if !issuer_scheme_ok(&issuer) {
            return Err(self.invalid(
                "oidc.issuer",
                "must be an https:// URL (http:// only for a provider on this machine: \
                 127.0.0.1, [::1] or localhost)",
            ));
        }
        if raw.client_id.is_empty() {
            return Err(self.invalid("oidc.client_id", "must not be empty"));
        }
        let client_secret = match (raw.client_secret_env, raw.client_secret_file) {
            (None, None) => SecretSource::None,
            (Some(var), None) => SecretSource::Env(var),
            (None, Some(file)) => SecretSource::File(self.resolve(&file)),
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    "oidc",
                    "name at most one of client_secret_env and client_secret_file",
                ));
            }
        };
        let credential_ttl = self.duration(
            "oidc.credential_ttl",
            raw.credential_ttl.as_deref(),
            Duration::from_secs(12 * 3600),
        )?;
        if !(SHORTEST_TTL..=LONGEST_TTL).contains(&credential_ttl) {
            return Err(self.invalid("oidc.credential_ttl", "must be between 10s and 30d"));
        }
        let clock_skew = self.duration(
            "oidc.clock_skew",
            raw.clock_skew.as_deref(),
            Duration::from_secs(30),
        )?;
        if clock_skew > Duration::from_secs(300) {
            return Err(self.invalid("oidc.clock_skew", "must be at most 5m"));
        }
        let scopes = raw
            .scopes
            .unwrap_or_else(|| ["openid", "email", "profile"].map(str::to_owned).to_vec());
        if !scopes.iter().any(|s| s == "openid") {
            return Err(self.invalid(
                "oidc.scopes",
                "must include \"openid\" (without it the provider sends no ID token)",
            ));
        }
        if let Some(bad) = scopes
            .iter()
            .find(|s| s.is_empty() || s.bytes().any(|b| b <= b' ' || b == b'"' || b == b'\\'))
        {
            return Err(self.invalid(
                "oidc.scopes",
                format!("`{bad}` is not a scope (no spaces, quotes or backslashes)"),
            ));
        }
        let max_credentials_per_person = raw.max_credentials_per_person.unwrap_or(10);
        if !(1..=100).contains(&max_credentials_per_person) {
            return Err(self.invalid(
                "oidc.max_credentials_per_person",
                "must be between 1 and 100",
            ));
        }
        Ok(Some(OidcConfig {
            issuer: raw.issuer,
            client_id: raw.client_id,
            client_secret,
            username_claim: raw.username_claim.unwrap_or_else(|| "email".to_owned()),
            groups_claim: raw.groups_claim.unwrap_or_else(|| "groups".to_owned()),
            scopes,
            credential_ttl,
            clock_skew,
            max_credentials_per_person,
            ca_file: raw.ca_file.map(|f| self.resolve(&f)),
            device_flow: raw.device_flow.unwrap_or(true),
        }))
    }
}

/// https, or http to a provider on this machine (a test or a local one).
pub(crate) fn issuer_scheme_ok(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        },
        _ => false,
    }
}
