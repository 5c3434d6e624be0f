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

mod decoy;
mod limiter;

pub use decoy::{DECOY_KEY_FILE, DecoyKey, DecoyKeyError};
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

    /// A verifier no password matches, for an unknown `name`, so a login
    /// attempt cannot tell it from a known one: its salt is `salt_len` bytes
    /// of HMAC(key, name), the same for the name on every attempt and after
    /// every restart, and its iteration count is the one real verifiers use.
    pub fn decoy(name: &str, key: &DecoyKey, shape: VerifierShape) -> ScramVerifier {
        let mut salt = Vec::with_capacity(shape.salt_len);
        let mut block = 0u32;
        while salt.len() < shape.salt_len {
            let mut mac =
                HmacSha256::new_from_slice(key.bytes()).expect("hmac takes any key length");
            mac.update(b"jitgate decoy salt\0");
            mac.update(&block.to_be_bytes());
            mac.update(name.as_bytes());
            salt.extend_from_slice(&mac.finalize().into_bytes());
            block += 1;
        }
        salt.truncate(shape.salt_len);
        ScramVerifier {
            iterations: shape.iterations,
            salt,
            stored_key: rand::random(),
            server_key: rand::random(),
        }
    }

    fn shape(&self) -> VerifierShape {
        VerifierShape {
            iterations: self.iterations,
            salt_len: self.salt.len(),
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

/// What a client sees of a verifier before it proves anything: the
/// iteration count and the salt's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerifierShape {
    pub iterations: u32,
    pub salt_len: usize,
}

impl VerifierShape {
    /// What `ScramVerifier::generate` (and PostgreSQL) make: 4096 rounds, 16 bytes.
    pub const DEFAULT: VerifierShape = VerifierShape {
        iterations: 4096,
        salt_len: 16,
    };

    /// The most common shape among `verifiers` (ties go to the larger), so
    /// decoys look like most real verifiers; the default if there are none.
    fn most_common<'a>(verifiers: impl Iterator<Item = &'a ScramVerifier>) -> VerifierShape {
        let mut counts: HashMap<VerifierShape, usize> = HashMap::new();
        for v in verifiers {
            *counts.entry(v.shape()).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by_key(|(shape, n)| (*n, shape.iterations, shape.salt_len))
            .map_or(VerifierShape::DEFAULT, |(shape, _)| shape)
    }
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
    /// Keys the decoy verifiers of unknown names; kept in the data_dir.
    decoy_key: DecoyKey,
    /// The iteration count and salt length decoys get.
    decoy_shape: VerifierShape,
}

impl Identities {
    /// Build from validated config (verifiers were checked by `Config::load`).
    pub fn from_config(list: &[IdentityConfig], decoy_key: DecoyKey) -> Identities {
        let by_name: HashMap<String, Arc<Identity>> = list
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
        let decoy_shape = VerifierShape::most_common(by_name.values().map(|id| &id.verifier));
        Identities {
            by_name,
            decoy_key,
            decoy_shape,
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
            None => (
                None,
                ScramVerifier::decoy(name, &self.decoy_key, self.decoy_shape),
            ),
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

    fn identity(name: &str, secret: &str) -> IdentityConfig {
        IdentityConfig {
            name: name.to_owned(),
            groups: vec![],
            secret: secret.to_owned(),
        }
    }

    #[test]
    fn a_decoy_salt_is_stable_per_name_and_key_and_shaped_like_real_ones() {
        let real = ScramVerifier::generate("s3cret");
        let key = DecoyKey::ephemeral();
        let ids = Identities::from_config(&[identity("alice", &real)], key.clone());
        let (known, alice) = ids.verifier_for("alice");
        assert!(known.is_some());
        assert_eq!(alice.salt, ScramVerifier::parse(&real).unwrap().salt);

        let (unknown, mallory) = ids.verifier_for("mallory");
        assert!(unknown.is_none());
        assert_eq!(mallory.shape(), alice.shape());
        assert_eq!(ids.verifier_for("mallory").1.salt, mallory.salt);
        assert_ne!(ids.verifier_for("mallory2").1.salt, mallory.salt);
        let same_key = Identities::from_config(&[identity("alice", &real)], key);
        assert_eq!(same_key.verifier_for("mallory").1.salt, mallory.salt);
        let other_key = Identities::from_config(&[], DecoyKey::ephemeral());
        assert_ne!(other_key.verifier_for("mallory").1.salt, mallory.salt);
        assert!(!mallory.matches_password(""));
    }

    #[test]
    fn decoys_take_the_shape_most_real_verifiers_have() {
        let odd = "SCRAM-SHA-256$10000:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA$\
                   AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert!(ScramVerifier::parse(odd).is_some());
        let list = [
            identity("a", odd),
            identity("b", odd),
            identity("c", &ScramVerifier::generate("x")),
        ];
        let ids = Identities::from_config(&list, DecoyKey::ephemeral());
        let decoy = ids.verifier_for("nobody").1;
        assert_eq!(decoy.iterations, 10000);
        assert_eq!(decoy.salt.len(), 24);
        let none = Identities::from_config(&[], DecoyKey::ephemeral());
        assert_eq!(
            none.verifier_for("nobody").1.shape(),
            VerifierShape::DEFAULT
        );
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
