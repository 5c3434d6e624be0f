//! Identities and their secrets.
//!
//! An identity comes from the config (robots, break-glass admins: a name,
//! groups and a secret) or from a sign-on through the company's identity
//! provider, which gets it an issued credential (`issued.rs`) that lives in
//! the store. Either way a secret is kept only as a SCRAM-SHA-256 verifier
//! in PostgreSQL's format, so neither the config file nor the store holds
//! anything that logs in by itself. The same verifier checks a database
//! login (the SCRAM exchange in `wire::pg`, MySQL's full authentication)
//! and an admin-API bearer token ([`Identities::check_token`]). All
//! comparisons of secret-derived bytes are constant time.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::IdentityConfig;

mod decoy;
pub(crate) mod issued;
mod keys;
mod limiter;
pub(crate) mod oidc;

pub use decoy::{DECOY_KEY_FILE, DecoyKey, DecoyKeyError};
pub use issued::Issued;
pub use keys::{LoginKeys, Proven};
pub use limiter::{LoginAttempt, LoginLimiter, client_of};
/// PKCE's S256 challenge (the CLI's sign-on, and the tests that drive one).
pub use oidc::code_challenge as oidc_code_challenge;

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

    /// Make a verifier for `password` with this salt and iteration count.
    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> ScramVerifier {
        let salted = salted_password(password.as_bytes(), salt, iterations);
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(hmac(&salted, b"Client Key")).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
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

/// PostgreSQL's text form, which [`ScramVerifier::parse`] reads back.
impl std::fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
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

/// One known identity, as a login or an API call proved it.
#[derive(Debug)]
pub struct Identity {
    pub name: String,
    pub groups: Vec<String>,
    /// The issued credential the caller proved (`None`: a config identity).
    pub credential: Option<CredentialRef>,
}

/// Which issued credential a caller proved, and when it ends: a session
/// opened with it ends then too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRef {
    pub id: String,
    pub expires_at: std::time::SystemTime,
}

impl Identity {
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// Everyone who may log in: the config's identities by name, and the
/// credentials issued after sign-ons.
#[derive(Debug)]
pub struct Identities {
    /// The config's, swapped whole by a reload.
    configured: std::sync::RwLock<Arc<Configured>>,
    issued: Arc<Issued>,
    /// Keys the decoy verifiers of unknown names; kept in the data_dir.
    decoy_key: DecoyKey,
}

/// The config's identities, and the shape decoys take after them.
#[derive(Debug)]
struct Configured {
    by_name: HashMap<String, (Arc<Identity>, ScramVerifier)>,
    /// The iteration count and salt length decoys get.
    decoy_shape: VerifierShape,
}

impl Configured {
    fn from_config(list: &[IdentityConfig]) -> Configured {
        let by_name: HashMap<String, (Arc<Identity>, ScramVerifier)> = list
            .iter()
            .filter_map(|c| {
                let verifier = ScramVerifier::parse(&c.secret)?;
                let identity = Arc::new(Identity {
                    name: c.name.clone(),
                    groups: c.groups.clone(),
                    credential: None,
                });
                Some((c.name.clone(), (identity, verifier)))
            })
            .collect();
        let decoy_shape = VerifierShape::most_common(by_name.values().map(|(_, v)| v));
        Configured {
            by_name,
            decoy_shape,
        }
    }
}

impl Identities {
    /// Build from validated config (verifiers were checked by `Config::load`);
    /// `issued` is the access model's table of issued credentials.
    pub fn from_config(
        list: &[IdentityConfig],
        decoy_key: DecoyKey,
        issued: Arc<Issued>,
    ) -> Identities {
        Identities {
            configured: std::sync::RwLock::new(Arc::new(Configured::from_config(list))),
            issued,
            decoy_key,
        }
    }

    fn configured(&self) -> Arc<Configured> {
        self.configured
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Put a reloaded config's identities in force. A login or token
    /// proven with a secret that is gone no longer counts (the caches
    /// check the secret again); sessions are the reload's to end.
    pub fn replace_config(&self, list: &[IdentityConfig]) {
        let new = Arc::new(Configured::from_config(list));
        *self
            .configured
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
    }

    /// Put the identity provider in force (a reload): credentials another
    /// provider vouched for prove nothing from now on.
    pub fn set_issuer(&self, issuer: Option<String>) {
        self.issued.set_issuer(issuer);
    }

    /// Has `name` ever been issued a credential that still binds it to a
    /// provider account (until an admin frees it)?
    pub fn is_bound(&self, name: &str) -> bool {
        self.issued.subject_of(name).is_some()
    }

    /// Is `name` one of the config's identities (which no sign-on may take)?
    pub fn in_config(&self, name: &str) -> bool {
        self.configured().by_name.contains_key(name)
    }

    /// Does `name` hold a live issued credential?
    pub fn has_credentials(&self, name: &str) -> bool {
        !self.credentials_of(name).is_empty()
    }

    /// The secrets `name` may log in with: its config secret, or its live
    /// issued credentials, or a decoy no secret matches (so the exchange
    /// fails like a wrong password and cannot tell an unknown name).
    pub fn keys_for(&self, name: &str) -> LoginKeys {
        let configured = self.configured();
        if let Some((identity, verifier)) = configured.by_name.get(name) {
            return LoginKeys::single(verifier, identity.clone());
        }
        if let Some(keys) = self.issued.keys_for(name, crate::access::clock::now()) {
            return keys;
        }
        LoginKeys::decoy(&ScramVerifier::decoy(
            name,
            &self.decoy_key,
            configured.decoy_shape,
        ))
    }

    /// `name`'s live issued credentials, oldest first.
    pub fn credentials_of(&self, name: &str) -> Vec<issued::CredentialInfo> {
        self.issued.list(name, crate::access::clock::now())
    }

    /// Is `identity`'s issued credential `id` still live?
    pub fn credential_live(&self, identity: &str, id: &str) -> bool {
        self.issued
            .is_live(identity, id, crate::access::clock::now())
    }

    /// Find whose secret `token` is (admin API bearer tokens). An issued
    /// credential's secret names its credential, whose one verifier is
    /// checked; any other token is checked against every config identity,
    /// so the time taken does not depend on which one matches.
    pub fn check_token(&self, token: &str) -> Option<Proven> {
        if issued::token_id(token).is_some() {
            let (verifier, identity) = self.issued.by_secret(token, crate::access::clock::now())?;
            // A config identity's name is its own, whatever was issued before.
            if self.in_config(&identity.name) {
                return None;
            }
            return LoginKeys::single(&verifier, identity).match_password(token);
        }
        let mut found = None;
        for (identity, verifier) in self.configured().by_name.values() {
            let keys = LoginKeys::single(verifier, identity.clone());
            if let Some(proven) = keys.match_password(token)
                && found.is_none()
            {
                found = Some(proven);
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
        let ids = identities(&[identity("alice", &real)], key.clone());
        let alice = ids.keys_for("alice");
        assert!(alice.match_password("s3cret").is_some());
        assert_eq!(alice.salt, ScramVerifier::parse(&real).unwrap().salt);

        let mallory = ids.keys_for("mallory");
        assert_eq!(
            (mallory.iterations, mallory.salt.len()),
            (alice.iterations, alice.salt.len())
        );
        assert_eq!(ids.keys_for("mallory").salt, mallory.salt);
        assert_ne!(ids.keys_for("mallory2").salt, mallory.salt);
        let same_key = identities(&[identity("alice", &real)], key);
        assert_eq!(same_key.keys_for("mallory").salt, mallory.salt);
        let other_key = identities(&[], DecoyKey::ephemeral());
        assert_ne!(other_key.keys_for("mallory").salt, mallory.salt);
        assert!(mallory.match_password("").is_none());
    }

    fn identities(list: &[IdentityConfig], key: DecoyKey) -> Identities {
        Identities::from_config(list, key, Arc::default())
    }

    #[test]
    fn a_verifier_written_with_a_given_salt_reads_back_and_matches() {
        let v = ScramVerifier::with_salt("pw", b"0123456789abcdef", 4096);
        let back = ScramVerifier::parse(&v.to_string()).unwrap();
        assert_eq!(back.stored_key, v.stored_key);
        assert!(back.matches_password("pw"));
        let pg = ScramVerifier::parse(&ScramVerifier::generate("pw")).unwrap();
        let same = ScramVerifier::with_salt("pw", &pg.salt, pg.iterations);
        assert_eq!(same.stored_key, pg.stored_key);
        assert_eq!(same.server_key, pg.server_key);
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
        let ids = identities(&list, DecoyKey::ephemeral());
        let decoy = ids.keys_for("nobody");
        assert_eq!(decoy.iterations, 10000);
        assert_eq!(decoy.salt.len(), 24);
        let none = identities(&[], DecoyKey::ephemeral());
        let decoy = none.keys_for("nobody");
        assert_eq!(
            (decoy.iterations, decoy.salt.len()),
            (
                VerifierShape::DEFAULT.iterations,
                VerifierShape::DEFAULT.salt_len
            )
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
