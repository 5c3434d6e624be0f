//! The secrets one login name may prove, as a login checks them.
//!
//! A config identity has one secret. A person signed on through the
//! identity provider may hold several issued credentials at once (a laptop
//! and a build machine, say), and a database login does not say which one
//! it uses. SCRAM shows the client a salt and an iteration count before it
//! proves anything, so all of one name's credentials are made with the same
//! two (see `issued.rs`), and the proof is checked against each
//! credential's keys: two HMACs and a hash per credential, no PBKDF2. A
//! MySQL full authentication (the password itself over TLS) runs PBKDF2
//! once and compares the result with every credential's stored key.
//!
//! Every candidate is compared, in constant time, whichever matches, so the
//! time taken does not say which one did.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Identity, ScramVerifier, hmac, salted_password};

/// One secret a name may prove, and who proving it makes the caller:
/// `None` for the decoy of a name jitgate does not know.
#[derive(Clone)]
struct Candidate {
    stored_key: [u8; 32],
    server_key: [u8; 32],
    identity: Option<Arc<Identity>>,
}

/// The salt, the iteration count and the candidate secrets of one name.
#[derive(Clone)]
pub struct LoginKeys {
    pub iterations: u32,
    pub salt: Vec<u8>,
    candidates: Vec<Candidate>,
}

impl std::fmt::Debug for LoginKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoginKeys({} candidates)", self.candidates.len())
    }
}

/// A candidate that matched: who the caller is, and what the SCRAM server's
/// final message is signed with.
pub struct Proven {
    pub identity: Arc<Identity>,
    pub server_key: [u8; 32],
    /// The matched secret's stored key, which names it in the caches of
    /// logins already proven (MySQL's fast path, the API's tokens).
    pub stored_key: [u8; 32],
}

impl LoginKeys {
    /// The keys of one known secret.
    pub fn single(verifier: &ScramVerifier, identity: Arc<Identity>) -> LoginKeys {
        let mut keys = LoginKeys::empty(verifier);
        keys.push(verifier, Some(identity));
        keys
    }

    /// A name nobody may log in as: a verifier no password matches.
    pub fn decoy(verifier: &ScramVerifier) -> LoginKeys {
        let mut keys = LoginKeys::empty(verifier);
        keys.push(verifier, None);
        keys
    }

    /// No candidate yet, with `shape`'s salt and iteration count.
    pub(super) fn empty(shape: &ScramVerifier) -> LoginKeys {
        LoginKeys {
            iterations: shape.iterations,
            salt: shape.salt.clone(),
            candidates: Vec::new(),
        }
    }

    /// Add a candidate; its salt and iteration count must be this set's
    /// (the caller made it so), or no login could ever prove it.
    pub(super) fn push(&mut self, verifier: &ScramVerifier, identity: Option<Arc<Identity>>) {
        debug_assert_eq!(verifier.salt, self.salt);
        self.candidates.push(Candidate {
            stored_key: verifier.stored_key,
            server_key: verifier.server_key,
            identity,
        });
    }

    /// The candidate whose key a SCRAM client proof over `auth_message`
    /// proves.
    pub fn match_proof(&self, auth_message: &[u8], proof: &[u8; 32]) -> Option<Proven> {
        self.first_match(|c| {
            let signature = hmac(&c.stored_key, auth_message);
            let mut client_key = [0u8; 32];
            for (k, (p, s)) in client_key.iter_mut().zip(proof.iter().zip(signature)) {
                *k = p ^ s;
            }
            let stored: [u8; 32] = Sha256::digest(client_key).into();
            stored.ct_eq(&c.stored_key).into()
        })
    }

    /// The candidate `password` is the secret of (PBKDF2 once: slow, keep
    /// it off the async workers).
    pub fn match_password(&self, password: &str) -> Option<Proven> {
        let salted = salted_password(password.as_bytes(), &self.salt, self.iterations);
        let stored: [u8; 32] = Sha256::digest(hmac(&salted, b"Client Key")).into();
        self.match_stored_key(&stored)
    }

    /// The candidate with this stored key: a login proven before, if its
    /// secret is still one of this name's.
    pub fn match_stored_key(&self, stored: &[u8; 32]) -> Option<Proven> {
        self.first_match(|c| stored.ct_eq(&c.stored_key).into())
    }

    /// Every candidate is tried; the first that matches and is not a decoy wins.
    fn first_match(&self, mut matches: impl FnMut(&Candidate) -> bool) -> Option<Proven> {
        let mut found = None;
        for c in &self.candidates {
            if matches(c) && found.is_none() {
                found = Some(c);
            }
        }
        let c = found?;
        Some(Proven {
            identity: c.identity.clone()?,
            server_key: c.server_key,
            stored_key: c.stored_key,
        })
    }
}
