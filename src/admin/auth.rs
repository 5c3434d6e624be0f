//! Who is calling: bearer-token authentication for the admin API.
//!
//! An identity's one secret is both its database password and its API token,
//! and it is stored only as a SCRAM verifier. Checking a token therefore means
//! PBKDF2 (4096 rounds) against every identity — milliseconds of CPU, far too
//! much per request and a gift to anyone guessing tokens. So:
//!
//! - tokens that already matched are remembered in a small bounded cache,
//!   keyed by an HMAC of the token under a per-process random key (the token
//!   itself is never stored, logged or echoed);
//! - the slow check runs on the blocking pool, not on a runtime worker;
//! - a token check is charged to the client address's login budget before
//!   it runs (refunded if the token matched), in the one limiter the
//!   database listeners charge too; an address with no attempts left gets
//!   `429` without any PBKDF2 work until its window passes. A token names no
//!   identity before it is checked, so only the address is charged.
//!
//! Handlers take a [`Caller`] argument; its extraction answers `401` (no or
//! bad token, with `WWW-Authenticate: Bearer`) or `429` before the handler runs.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use dashmap::DashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use super::AdminState;
use super::error::ApiError;
use crate::access::ADMIN_GROUP;
use crate::identity::{Identities, Identity, LoginLimiter, Proven};

/// Group whose members see and act on everyone's grants and sessions.
pub const APPROVER_GROUP: &str = "approver";

/// Tokens remembered before the cache is emptied and starts over.
const TOKEN_CACHE_CAPACITY: usize = 1024;

/// The authenticated identity behind a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Arc<Identity>,
}

impl Caller {
    pub fn name(&self) -> &str {
        &self.identity.name
    }

    pub fn is_admin(&self) -> bool {
        self.identity.in_group(ADMIN_GROUP)
    }

    pub fn is_approver(&self) -> bool {
        self.identity.in_group(APPROVER_GROUP)
    }

    /// Admins and approvers see and act on everyone's grants and sessions;
    /// everyone else only on their own.
    pub fn oversees_everyone(&self) -> bool {
        self.is_admin() || self.is_approver()
    }

    /// May the caller act on something that belongs to `owner`?
    pub fn may_act_for(&self, owner: &str) -> bool {
        self.oversees_everyone() || self.name() == owner
    }

    /// `403` unless the caller is in the admin group; `action` completes
    /// "only members of group `admin` may …".
    pub fn require_admin(&self, action: &str) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "only members of group `{ADMIN_GROUP}` may {action}; {} is not one",
                self.name()
            )))
        }
    }
}

impl FromRequestParts<Arc<AdminState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AdminState>,
    ) -> Result<Caller, ApiError> {
        let token = bearer_token(&parts.headers)?;
        state.auth.authenticate(token, client_ip(parts)).await
    }
}

/// The client's address, which the login budget is charged to.
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ClientIp, Self::Rejection> {
        Ok(ClientIp(client_ip(parts)))
    }
}

/// Without connection info (a router driven in-process) every caller
/// shares one bucket, which keeps the limit rather than dropping it.
fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The token from `Authorization: Bearer <token>`.
fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "missing token",
            "send your jitgate secret as `Authorization: Bearer <secret>`",
        ));
    };
    let malformed = || {
        ApiError::unauthorized(
            "malformed authorization header",
            "the Authorization header must be `Bearer <secret>`",
        )
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(token)
}

/// Checks bearer tokens against the identities, with the cache and the
/// per-address failure limit described in the module doc.
pub struct Authenticator {
    identities: Arc<Identities>,
    known_tokens: TokenCache,
    logins: Arc<LoginLimiter>,
}

impl Authenticator {
    pub fn new(identities: Arc<Identities>, logins: Arc<LoginLimiter>) -> Authenticator {
        Authenticator {
            identities,
            known_tokens: TokenCache::new(TOKEN_CACHE_CAPACITY),
            logins,
        }
    }

    pub async fn authenticate(&self, token: &str, client: IpAddr) -> Result<Caller, ApiError> {
        let proven = self.prove(token, client).await?;
        Ok(Caller {
            identity: proven.identity,
        })
    }

    /// Who `token` proves to be, and the stored key of the secret it is
    /// (the approver page keeps that to check its sign-in again later).
    pub async fn prove(&self, token: &str, client: IpAddr) -> Result<Proven, ApiError> {
        let key = self.known_tokens.key(token);
        // A token proven before counts while its secret is still the
        // name's: not logged out, expired or changed in the config.
        if let Some(proven) = self.known_tokens.get(&key).and_then(|(name, stored_key)| {
            self.identities
                .keys_for(&name)
                .match_stored_key(&stored_key)
        }) {
            return Ok(proven);
        }
        let attempt = match self.logins.charge(None, client) {
            Ok(attempt) => attempt,
            Err(wait) => {
                tracing::warn!(%client, "admin API: too many failed logins from this address");
                return Err(ApiError::too_many_failed_logins(wait.as_secs().max(1)));
            }
        };
        let identities = self.identities.clone();
        let candidate = token.to_owned();
        let found = tokio::task::spawn_blocking(move || identities.check_token(&candidate))
            .await
            .map_err(|_| ApiError::internal("checking the token failed; try again"))?;
        match found {
            Some(proven) => {
                attempt.refund();
                self.known_tokens
                    .insert(key, &proven.identity.name, proven.stored_key);
                Ok(proven)
            }
            None => {
                tracing::warn!(%client, "admin API: bearer token matches no identity");
                Err(ApiError::unauthorized(
                    "invalid token",
                    "the bearer token matches no identity; check the secret you send (JITGATE_TOKEN or --token)",
                ))
            }
        }
    }
}

/// Tokens that matched an identity, by keyed hash, bounded by emptying
/// when full: the name, and the stored key of the secret the token was.
struct TokenCache {
    hash_key: [u8; 32],
    by_hash: DashMap<[u8; 32], (String, [u8; 32])>,
    capacity: usize,
}

impl TokenCache {
    fn new(capacity: usize) -> TokenCache {
        TokenCache {
            hash_key: rand::random(),
            by_hash: DashMap::new(),
            capacity,
        }
    }

    /// Keyed rather than a bare SHA-256 so a memory dump does not allow a
    /// fast offline guess of weak secrets.
    fn key(&self, token: &str) -> [u8; 32] {
        crate::identity::hmac(&self.hash_key, token.as_bytes())
    }

    fn get(&self, key: &[u8; 32]) -> Option<(String, [u8; 32])> {
        self.by_hash.get(key).map(|found| found.clone())
    }

    fn insert(&self, key: [u8; 32], identity: &str, stored_key: [u8; 32]) {
        if self.by_hash.len() >= self.capacity {
            self.by_hash.clear();
        }
        self.by_hash.insert(key, (identity.to_owned(), stored_key));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_hash.len()
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_cache_is_bounded_and_keyed_by_hash_not_token() {
        let cache = TokenCache::new(3);
        for i in 0..3 {
            cache.insert(cache.key(&format!("secret-{i}")), "alice", [0; 32]);
        }
        assert_eq!(cache.len(), 3);
        cache.insert(cache.key("secret-3"), "bob", [1; 32]);
        assert_eq!(cache.len(), 1, "a full cache starts over");
        assert_eq!(
            cache.get(&cache.key("secret-3")),
            Some(("bob".to_owned(), [1; 32]))
        );
        assert_ne!(&cache.key("secret-3")[..8], b"secret-3");
    }

    #[test]
    fn authorization_header_must_be_bearer() {
        let mut h = HeaderMap::new();
        assert!(bearer_token(&h).is_err());
        for bad in ["Basic abc", "Bearer", "Bearer   ", "bearertoken"] {
            h.insert(AUTHORIZATION, bad.parse().unwrap());
            assert!(bearer_token(&h).is_err(), "{bad}");
        }
        h.insert(AUTHORIZATION, "bearer  s3cret ".parse().unwrap());
        assert_eq!(bearer_token(&h).unwrap(), "s3cret");
    }
}
