//! Identities and their secrets.
//!
//! A secret is stored only as a SCRAM-SHA-256 verifier in PostgreSQL's format,
//! so the config file never holds anything that logs in by itself. The same
//! verifier checks a database login (the SCRAM exchange in `wire::pg`) and an
//! admin-API bearer token ([`Identities::check_token`]). All comparisons of
//! secret-derived bytes are constant time.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::IdentityConfig;

mod limiter;

pub use limiter::{LoginAttempt, LoginLimiter, client_of};

type HmacSha256 = Hmac<Sha256>;

/// A parsed `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` verifier.
#[derive(Clone)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramVerifier(..)")
    }
}

impl ScramVerifier {
    pub fn parse(s: &str) -> Option<ScramVerifier> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iter, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let iterations: u32 = iter.parse().ok().filter(|i| *i >= 1)?;
        let salt = B64.decode(salt).ok()?;
        let stored_key = B64.decode(stored).ok()?.try_into().ok()?;
        let server_key = B64.decode(server).ok()?.try_into().ok()?;
        Some(ScramVerifier {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// Make a verifier for `password` with a fresh random salt.
    pub fn generate(password: &str) -> String {
        postgres_protocol::password::scram_sha_256(password.as_bytes())
    }

    /// A verifier no password matches, stable for a given `name`, used for
    /// unknown identities so a login attempt cannot tell them from known ones.
    pub fn decoy(name: &str, server_secret: &[u8; 32]) -> ScramVerifier {
        let mut mac = HmacSha256::new_from_slice(server_secret).expect("hmac takes any key length");
        mac.update(name.as_bytes());
        let salt = mac.finalize().into_bytes()[..16].to_vec();
        ScramVerifier {
            iterations: 4096,
            salt,
            stored_key: rand::random(),
            server_key: rand::random(),
        }
    }

    /// Does `password` match this verifier? Constant time in the comparison.
    pub fn matches_password(&self, password: &str) -> bool {
        let salted = salted_password(password.as_bytes(), &self.salt, self.iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        stored.ct_eq(&self.stored_key).into()
    }
}

pub fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
    out
}

pub fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// One known identity.
#[derive(Debug)]
pub struct Identity {
    pub name: String,
    pub groups: Vec<String>,
    pub verifier: ScramVerifier,
}

impl Identity {
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// All identities from the config, by name.
#[derive(Debug)]
pub struct Identities {
    by_name: HashMap<String, Arc<Identity>>,
    /// Keys the decoy verifiers of unknown names; random per process.
    decoy_secret: [u8; 32],
}

impl Identities {
    /// Build from validated config (verifiers were checked by `Config::load`).
    pub fn from_config(list: &[IdentityConfig]) -> Identities {
        let by_name = list
            .iter()
            .filter_map(|c| {
                let verifier = ScramVerifier::parse(&c.secret)?;
                Some((
                    c.name.clone(),
                    Arc::new(Identity {
                        name: c.name.clone(),
                        groups: c.groups.clone(),
                        verifier,
                    }),
                ))
            })
            .collect();
        Identities {
            by_name,
            decoy_secret: rand::random(),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Identity>> {
        self.by_name.get(name).cloned()
    }

    /// The verifier to run a SCRAM exchange against: the identity's own, or a
    /// decoy for unknown names (the exchange then fails like a wrong password).
    pub fn verifier_for(&self, name: &str) -> (Option<Arc<Identity>>, ScramVerifier) {
        match self.get(name) {
            Some(id) => {
                let v = id.verifier.clone();
                (Some(id), v)
            }
            None => (None, ScramVerifier::decoy(name, &self.decoy_secret)),
        }
    }

    /// Find the identity whose secret is `token` (admin API bearer tokens).
    /// Checks every identity so the time taken does not depend on which one matches.
    pub fn check_token(&self, token: &str) -> Option<Arc<Identity>> {
        let mut found = None;
        for id in self.by_name.values() {
            if id.verifier.matches_password(token) && found.is_none() {
                found = Some(id.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_verifier_matches_only_its_password() {
        let v = ScramVerifier::parse(&ScramVerifier::generate("s3cret")).unwrap();
        assert!(v.matches_password("s3cret"));
        assert!(!v.matches_password("s3creT"));
    }

    #[test]
    fn malformed_verifiers_are_rejected() {
        for bad in [
            "",
            "md5abc",
            "SCRAM-SHA-256$0:AAAA$AAAA:AAAA",
            "SCRAM-SHA-256$4096:!!$x:y",
        ] {
            assert!(ScramVerifier::parse(bad).is_none(), "{bad}");
        }
    }
}
