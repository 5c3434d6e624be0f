//! The one login limiter, shared by every listener and the admin API.
//!
//! Guessing secrets must be slow however many connections one opens and
//! whichever door one knocks on, so there is one budget per identity and one
//! per client address, counted in a fixed window (invariant 7). An attempt is
//! *charged* before its secret is checked and refunded only if the secret
//! matched: counting failures afterwards let a burst of parallel handshakes
//! all pass the check at once and get dozens of guesses through. The charge
//! is taken right before the comparison, not at the start of the handshake,
//! so honest logins that happen to run in parallel (a pool filling up) are
//! not in flight long enough to count against each other: PostgreSQL charges
//! as the SCRAM proof arrives, MySQL as its scramble exchange starts, the
//! admin API as it runs the token check.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use sha2::{Digest, Sha256};

use crate::config::Limits;

/// Keys (identities and addresses) tracked at once. When that many are
/// failing within one window, the table starts over: memory stays bounded,
/// and each guess still costs the attacker a handshake.
const TRACKED_KEYS_CAPACITY: usize = 100_000;

/// Whose budget an attempt is charged to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Key {
    /// An identity name by its SHA-256: client-chosen names may be long, and
    /// every tracked key should cost the same few bytes.
    Identity([u8; 32]),
    /// A client address, as [`client_of`] groups them.
    Address(IpAddr),
}

impl Key {
    fn identity(name: &str) -> Key {
        Key::Identity(Sha256::digest(name.as_bytes()).into())
    }

    fn address(addr: IpAddr) -> Key {
        Key::Address(client_of(addr))
    }
}

/// The client an address stands for in per-address limits: an IPv4
/// address itself (also when IPv4-mapped), an IPv6 address's /64, which one
/// host usually owns whole.
pub fn client_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
        },
    }
}

#[derive(Clone, Copy)]
struct Window {
    attempts: u32,
    started: Instant,
}

/// Attempts per identity and per client address in a fixed window.
pub struct LoginLimiter {
    max_attempts: u32,
    window: Duration,
    windows: DashMap<Key, Window>,
}

/// An attempt charged to its identity and address. It stays charged (a
/// failed login) unless [`LoginAttempt::refund`] gives it back.
#[must_use = "an attempt is given back only by `refund`"]
pub struct LoginAttempt<'a> {
    limiter: &'a LoginLimiter,
    charged: Vec<(Key, Instant)>,
}

impl LoginAttempt<'_> {
    /// The secret matched, or was never checked: give the attempt back to
    /// each budget it was charged to (unless that window has started over).
    pub fn refund(self) {
        for (key, started) in &self.charged {
            if let Some(mut w) = self.limiter.windows.get_mut(key)
                && w.started == *started
            {
                w.attempts = w.attempts.saturating_sub(1);
            }
        }
    }
}

impl LoginLimiter {
    /// `max_attempts` failed logins per identity and per address in `window`.
    pub fn new(max_attempts: u32, window: Duration) -> LoginLimiter {
        LoginLimiter {
            max_attempts: max_attempts.max(1),
            window,
            windows: DashMap::new(),
        }
    }

    pub fn from_limits(limits: &Limits) -> LoginLimiter {
        LoginLimiter::new(limits.max_login_failures, limits.login_failure_window)
    }

    /// How long to wait, if `identity` (when named) or `addr` has no
    /// attempts left now. Charges nothing: a cheap early refusal before any
    /// handshake work; [`LoginLimiter::charge`] is what enforces the limit.
    pub fn blocked_for(&self, identity: Option<&str>, addr: IpAddr) -> Option<Duration> {
        keys(identity, addr).into_iter().flatten().find_map(|key| {
            let w = *self.windows.get(&key)?;
            let elapsed = w.started.elapsed();
            (w.attempts >= self.max_attempts && elapsed < self.window)
                .then(|| self.window - elapsed)
        })
    }

    /// Charge one attempt to `identity` (when the login names one; a bearer
    /// token does not) and to `addr`, right before the secret is checked.
    /// Refused, with how long to wait, when either has no attempts left; a
    /// refused attempt charges nothing.
    pub fn charge(
        &self,
        identity: Option<&str>,
        addr: IpAddr,
    ) -> Result<LoginAttempt<'_>, Duration> {
        let mut attempt = LoginAttempt {
            limiter: self,
            charged: Vec::with_capacity(2),
        };
        for key in keys(identity, addr).into_iter().flatten() {
            match self.charge_one(key) {
                Ok(started) => attempt.charged.push((key, started)),
                Err(wait) => {
                    // Give back what this attempt took from the other budget.
                    attempt.refund();
                    return Err(wait);
                }
            }
        }
        Ok(attempt)
    }

    /// Check and count under the key's map entry lock, so parallel attempts
    /// cannot all see room for one more.
    fn charge_one(&self, key: Key) -> Result<Instant, Duration> {
        let now = Instant::now();
        if self.windows.len() >= TRACKED_KEYS_CAPACITY && !self.windows.contains_key(&key) {
            self.windows
                .retain(|_, w| now.duration_since(w.started) < self.window);
            if self.windows.len() >= TRACKED_KEYS_CAPACITY {
                tracing::warn!(
                    tracked = TRACKED_KEYS_CAPACITY,
                    "login limiter: more identities and addresses than it tracks are failing at once; starting over"
                );
                self.windows.clear();
            }
        }
        let mut w = self.windows.entry(key).or_insert(Window {
            attempts: 0,
            started: now,
        });
        let elapsed = now.duration_since(w.started);
        if elapsed >= self.window {
            *w = Window {
                attempts: 0,
                started: now,
            };
        } else if w.attempts >= self.max_attempts {
            return Err(self.window - elapsed);
        }
        w.attempts += 1;
        Ok(w.started)
    }
}

fn keys(identity: Option<&str>, addr: IpAddr) -> [Option<Key>; 2] {
    [identity.map(Key::identity), Some(Key::address(addr))]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn attempts_past_the_limit_are_refused_until_the_window_passes() {
        let l = LoginLimiter::new(2, Duration::from_millis(50));
        let addr = ip("192.0.2.1");
        assert!(l.charge(Some("alice"), addr).is_ok());
        assert!(l.charge(Some("alice"), addr).is_ok());
        assert!(l.blocked_for(Some("alice"), addr).is_some());
        assert!(l.charge(Some("alice"), addr).is_err());
        assert!(
            l.charge(Some("bob"), ip("192.0.2.2")).is_ok(),
            "another identity from another address has its own budget"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(l.charge(Some("alice"), addr).is_ok());
    }

    #[test]
    fn an_attempt_is_charged_before_it_is_checked_and_refunded_on_success() {
        let l = LoginLimiter::new(1, Duration::from_secs(60));
        let addr = ip("192.0.2.1");
        let in_flight = l.charge(Some("alice"), addr).unwrap();
        assert!(
            l.charge(Some("alice"), ip("192.0.2.9")).is_err(),
            "a second attempt while the first is being checked finds no budget left"
        );
        in_flight.refund();
        assert!(l.charge(Some("alice"), addr).is_ok());
    }

    #[test]
    fn identity_and_address_budgets_are_separate_and_a_refusal_costs_nothing() {
        let l = LoginLimiter::new(1, Duration::from_secs(60));
        let _spent = l.charge(None, ip("192.0.2.1")).unwrap();
        assert!(l.charge(Some("alice"), ip("192.0.2.1")).is_err());
        // The refusal above gave back what it took from alice's budget.
        assert!(l.charge(Some("alice"), ip("192.0.2.2")).is_ok());
        assert!(l.charge(Some("alice"), ip("192.0.2.3")).is_err());
    }

    #[test]
    fn ipv6_addresses_share_their_64_and_mapped_ipv4_is_ipv4() {
        let l = LoginLimiter::new(1, Duration::from_secs(60));
        let _spent = l.charge(None, ip("2001:db8::1")).unwrap();
        assert!(l.charge(None, ip("2001:db8::ffff:2")).is_err());
        assert!(l.charge(None, ip("2001:db8:0:1::1")).is_ok());
        let _spent = l.charge(None, ip("192.0.2.7")).unwrap();
        assert!(l.charge(None, ip("::ffff:192.0.2.7")).is_err());
    }
}
