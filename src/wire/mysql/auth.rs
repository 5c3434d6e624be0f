//! Client authentication with `caching_sha2_password`, checked against the
//! identity's SCRAM verifier (the only secret jitgate stores).
//!
//! The first login of an identity needs the plugin's *full authentication*:
//! over TLS the client sends its password, which is checked with
//! [`ScramVerifier::matches_password`](crate::identity::ScramVerifier::matches_password).
//! Then, as MySQL itself does, jitgate keeps SHA256(SHA256(password)) in
//! memory, so later logins of that identity can use the *fast path*: the
//! client proves it knows the password with a scramble over the per-connection
//! nonce, and no password crosses the wire. The cache lives as long as the
//! process; nothing of it is written anywhere.
//!
//! A scramble that does not match the cache is not refused outright: as in
//! MySQL, the client is asked for full authentication, exactly as a name that
//! never logged in (or that jitgate does not know) is. Otherwise a wrong
//! scramble would tell anyone which identities have logged in since the start.
//! A login asked for full authentication that does not succeed is charged to
//! the login limiter whatever the client does next (see `front.rs`), so
//! guessing scrambles costs attempts like guessing passwords, for every
//! name alike.
//!
//! Clients that start with `mysql_native_password` (the `mariadb` CLI's
//! default) are switched to `caching_sha2_password` with an AuthSwitchRequest.

use dashmap::DashMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const CACHING_SHA2: &str = "caching_sha2_password";

/// `caching_sha2_password`'s one-byte AuthMoreData answers.
pub const FAST_AUTH_OK: u8 = 0x03;
pub const PERFORM_FULL_AUTH: u8 = 0x04;
/// A client asking for the server's RSA key (it has no TLS).
pub const REQUEST_PUBLIC_KEY: u8 = 0x02;

/// Per identity, SHA256(SHA256(password)) of its last successful full
/// login, and the SCRAM stored key of the secret it proved: the fast path
/// counts only while that secret is still one the name may log in with.
#[derive(Default)]
pub struct Sha2Cache {
    by_identity: DashMap<String, ([u8; 32], [u8; 32])>,
}

impl Sha2Cache {
    pub fn remember(&self, identity: &str, password: &[u8], stored_key: [u8; 32]) {
        self.by_identity
            .insert(identity.to_owned(), (double_sha256(password), stored_key));
    }

    /// The stored key of the secret the fast-path `scramble` proves; `None`
    /// when nothing is cached for the name as when the scramble is wrong:
    /// either way the client is asked for full authentication.
    pub fn proves_password(
        &self,
        identity: &str,
        nonce: &[u8],
        scramble: &[u8],
    ) -> Option<[u8; 32]> {
        let (stored, key) = self.by_identity.get(identity).map(|s| *s)?;
        fast_path_matches(&stored, nonce, scramble).then_some(key)
    }
}

pub fn double_sha256(password: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(password)).into()
}

/// The client sent XOR(SHA256(pw), SHA256(SHA256(SHA256(pw)) || nonce)); undo
/// the XOR with what we know and check the result hashes to the stored value.
pub fn fast_path_matches(stored: &[u8; 32], nonce: &[u8], scramble: &[u8]) -> bool {
    if scramble.len() != 32 {
        return false;
    }
    let mut h = Sha256::new();
    h.update(stored);
    h.update(nonce);
    let mask: [u8; 32] = h.finalize().into();
    let mut candidate = [0u8; 32];
    for (i, c) in candidate.iter_mut().enumerate() {
        *c = scramble[i] ^ mask[i];
    }
    let check: [u8; 32] = Sha256::digest(candidate).into();
    check.ct_eq(stored).into()
}

/// The password of a full authentication: the client sends it NUL-terminated.
pub fn cleartext_password(data: &[u8]) -> Option<&str> {
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    std::str::from_utf8(data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_accepts_the_clients_scramble_only() {
        let nonce: [u8; 20] = *b"abcdefghijklmnopqrst";
        let good =
            mysql_common::auth::plugins::caching_sha2_password::scramble_sha256(&nonce, b"s3cret")
                .unwrap();
        let cache = Sha2Cache::default();
        assert!(cache.proves_password("alice", &nonce, &good).is_none());
        cache.remember("alice", b"s3cret", [7; 32]);
        assert_eq!(cache.proves_password("alice", &nonce, &good), Some([7; 32]));
        let bad =
            mysql_common::auth::plugins::caching_sha2_password::scramble_sha256(&nonce, b"s3creT")
                .unwrap();
        assert!(cache.proves_password("alice", &nonce, &bad).is_none());
        assert!(
            cache
                .proves_password("alice", &nonce, &good[..31])
                .is_none()
        );
    }
}
