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
//! - failed tokens are counted per client address, and an address that keeps
//!   failing gets `429` without any PBKDF2 work until its window passes.
//!
//! Handlers take a [`Caller`] argument; its extraction answers `401` (no or
//! bad token, with `WWW-Authenticate: Bearer`) or `429` before the handler runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use dashmap::DashMap;

use super::AdminState;
use super::error::ApiError;
use crate::identity::{Identities, Identity};

/// Group whose members may grant directly and act on anyone's grants and sessions.
pub const ADMIN_GROUP: &str = "admin";
/// Group whose members see and act on everyone's grants and sessions.
pub const APPROVER_GROUP: &str = "approver";

/// Tokens remembered before the cache is emptied and starts over.
const TOKEN_CACHE_CAPACITY: usize = 1024;
/// Client addresses whose failures are tracked at once (see [`FailedLogins::charge`]).
const TRACKED_ADDRESSES_CAPACITY: usize = 4096;

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
        // Without connection info (a router driven in-process) every caller
        // shares one bucket, which keeps the limit rather than dropping it.
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        state.auth.authenticate(token, client).await
    }
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
    failures: FailedLogins,
}

impl Authenticator {
    pub fn new(identities: Arc<Identities>, max_failures: u32, window: Duration) -> Authenticator {
        Authenticator {
            identities,
            known_tokens: TokenCache::new(TOKEN_CACHE_CAPACITY),
            failures: FailedLogins::new(max_failures, window),
        }
    }

    pub async fn authenticate(&self, token: &str, client: IpAddr) -> Result<Caller, ApiError> {
        let key = self.known_tokens.key(token);
        if let Some(identity) = self
            .known_tokens
            .get(&key)
            .and_then(|name| self.identities.get(&name))
        {
            return Ok(Caller { identity });
        }
        if let Some(wait) = self.failures.charge(client) {
            tracing::warn!(%client, "admin API: too many invalid bearer tokens from this address");
            return Err(ApiError::too_many_failed_logins(wait.as_secs().max(1)));
        }
        let identities = self.identities.clone();
        let candidate = token.to_owned();
        let found = tokio::task::spawn_blocking(move || identities.check_token(&candidate))
            .await
            .map_err(|_| ApiError::internal("checking the token failed; try again"))?;
        match found {
            Some(identity) => {
                self.failures.refund(client);
                self.known_tokens.insert(key, &identity.name);
                Ok(Caller { identity })
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

/// Tokens that matched an identity, by keyed hash, bounded by emptying when full.
struct TokenCache {
    hash_key: [u8; 32],
    by_hash: DashMap<[u8; 32], String>,
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

    fn get(&self, key: &[u8; 32]) -> Option<String> {
        self.by_hash.get(key).map(|name| name.clone())
    }

    fn insert(&self, key: [u8; 32], identity: &str) {
        if self.by_hash.len() >= self.capacity {
            self.by_hash.clear();
        }
        self.by_hash.insert(key, identity.to_owned());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_hash.len()
    }
}

/// Failed token checks per client address in a fixed window.
struct FailedLogins {
    by_addr: DashMap<IpAddr, Window>,
    max_failures: u32,
    window: Duration,
}

#[derive(Clone, Copy)]
struct Window {
    failures: u32,
    started: Instant,
}

impl FailedLogins {
    fn new(max_failures: u32, window: Duration) -> FailedLogins {
        FailedLogins {
            by_addr: DashMap::new(),
            max_failures: max_failures.max(1),
            window,
        }
    }

    /// Count an attempt as failed before it is checked, so a burst of
    /// concurrent guesses cannot all slip in under the limit; a success is
    /// refunded. Returns how long to wait if `addr` is already over the limit.
    fn charge(&self, addr: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        if self.by_addr.len() >= TRACKED_ADDRESSES_CAPACITY && !self.by_addr.contains_key(&addr) {
            self.by_addr
                .retain(|_, w| now.duration_since(w.started) < self.window);
            // Still full: more addresses than we track are failing at once.
            // Starting over keeps memory bounded; each guess still costs a request.
            if self.by_addr.len() >= TRACKED_ADDRESSES_CAPACITY {
                self.by_addr.clear();
            }
        }
        let mut entry = self.by_addr.entry(addr).or_insert(Window {
            failures: 0,
            started: now,
        });
        let elapsed = now.duration_since(entry.started);
        if elapsed >= self.window {
            *entry = Window {
                failures: 0,
                started: now,
            };
        } else if entry.failures >= self.max_failures {
            return Some(self.window - elapsed);
        }
        entry.failures += 1;
        None
    }

    fn refund(&self, addr: IpAddr) {
        if let Some(mut w) = self.by_addr.get_mut(&addr) {
            w.failures = w.failures.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_cache_is_bounded_and_keyed_by_hash_not_token() {
        let cache = TokenCache::new(3);
        for i in 0..3 {
            cache.insert(cache.key(&format!("secret-{i}")), "alice");
        }
        assert_eq!(cache.len(), 3);
        cache.insert(cache.key("secret-3"), "bob");
        assert_eq!(cache.len(), 1, "a full cache starts over");
        assert_eq!(cache.get(&cache.key("secret-3")).as_deref(), Some("bob"));
        assert_ne!(&cache.key("secret-3")[..8], b"secret-3");
    }

    #[test]
    fn failures_past_the_limit_are_refused_until_the_window_passes() {
        let limits = FailedLogins::new(2, Duration::from_millis(50));
        let addr: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limits.charge(addr).is_none());
        assert!(limits.charge(addr).is_none());
        assert!(limits.charge(addr).is_some());
        assert!(
            limits.charge(other).is_none(),
            "another address has its own count"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(limits.charge(addr).is_none());
    }

    #[test]
    fn a_successful_check_is_refunded() {
        let limits = FailedLogins::new(1, Duration::from_secs(60));
        let addr: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limits.charge(addr).is_none());
        limits.refund(addr);
        assert!(limits.charge(addr).is_none());
        assert!(limits.charge(addr).is_some());
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
