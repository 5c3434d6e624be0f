//! Credentials jitgate issues to people who signed on through the identity
//! provider.
//!
//! A credential is a random secret (256 bits) that is both the person's API
//! token and their database password until it expires or they log out.
//! jitgate keeps only its SCRAM verifier, like a config identity's secret,
//! and keeps it in the store (`CredentialIssued`), so every proxy of a fleet
//! accepts it and a logout reaches them all. The secret's text starts with
//! `jgc_` and the credential's public id, so an API call finds its one
//! verifier without trying every other.
//!
//! The credentials of one name share their salt and iteration count: a
//! SCRAM login shows those before the client proves anything, and must be
//! able to accept any of the name's credentials (see `keys.rs`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::{Deserialize, Serialize};

use super::keys::LoginKeys;
use super::{CredentialRef, Identity, ScramVerifier, VerifierShape};

/// How an issued secret's text starts.
pub const TOKEN_PREFIX: &str = "jgc_";
/// Hex digits of a credential's public id.
const ID_HEX: usize = 16;

/// One issued credential as the store keeps it: no secret, only its verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCredential {
    pub id: String,
    pub identity: String,
    /// The groups the provider named at sign-on; the policies read them
    /// while the credential lives.
    pub groups: Vec<String>,
    /// SCRAM-SHA-256 verifier of the secret, in PostgreSQL's format.
    pub verifier: String,
    #[serde(with = "crate::access::requests::rfc3339_serde")]
    pub issued_at: SystemTime,
    #[serde(with = "crate::access::requests::rfc3339_serde")]
    pub expires_at: SystemTime,
    /// The provider (`iss`) and the person's id there (`sub`).
    pub issuer: String,
    pub subject: String,
}

/// What a listing shows of a credential (never its verifier).
#[derive(Debug, Clone, Serialize)]
pub struct CredentialInfo {
    pub id: String,
    #[serde(serialize_with = "crate::access::grants::rfc3339")]
    pub issued_at: SystemTime,
    #[serde(serialize_with = "crate::access::grants::rfc3339")]
    pub expires_at: SystemTime,
}

/// A new credential and its secret, which is shown once (to the person
/// who signed on) and never kept.
pub struct NewCredential {
    pub credential: IssuedCredential,
    pub secret: String,
}

impl std::fmt::Debug for NewCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCredential")
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

/// What a new credential is for.
pub struct Holder<'a> {
    pub identity: &'a str,
    pub groups: &'a [String],
    pub issuer: &'a str,
    pub subject: &'a str,
}

impl NewCredential {
    /// A fresh secret for `holder`, valid from `now` to `expires_at`, its
    /// verifier made with `shape`'s salt and iteration count (the name's
    /// other live credentials') or fresh ones.
    pub fn generate(
        holder: &Holder<'_>,
        now: SystemTime,
        expires_at: SystemTime,
        shape: Option<(Vec<u8>, u32)>,
    ) -> NewCredential {
        let id = hex::encode(rand::random::<[u8; ID_HEX / 2]>());
        let secret = format!(
            "{TOKEN_PREFIX}{id}_{}",
            B64URL.encode(rand::random::<[u8; 32]>())
        );
        let (salt, iterations) = shape.unwrap_or_else(|| {
            (
                rand::random::<[u8; 16]>().to_vec(),
                VerifierShape::DEFAULT.iterations,
            )
        });
        let verifier = ScramVerifier::with_salt(&secret, &salt, iterations).to_string();
        NewCredential {
            credential: IssuedCredential {
                id,
                identity: holder.identity.to_owned(),
                groups: holder.groups.to_vec(),
                verifier,
                issued_at: now,
                expires_at,
                issuer: holder.issuer.to_owned(),
                subject: holder.subject.to_owned(),
            },
            secret,
        }
    }
}

/// The credential id an issued secret names (not a proof of anything).
pub fn token_id(secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix(TOKEN_PREFIX)?;
    let (id, _) = rest.split_once('_')?;
    (id.len() == ID_HEX && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

struct Live {
    verifier: ScramVerifier,
    identity: Arc<Identity>,
    issued_at: SystemTime,
    /// The provider that vouched for it: only the configured one's count.
    issuer: String,
}

impl Live {
    fn id(&self) -> &str {
        self.credential().id.as_str()
    }

    fn credential(&self) -> &CredentialRef {
        self.identity
            .credential
            .as_ref()
            .expect("an issued credential's identity names it")
    }

    fn alive(&self, now: SystemTime) -> bool {
        now < self.credential().expires_at
    }
}

/// Every live issued credential, by name. Written by the access model as
/// it applies the store's changes; read by every login.
#[derive(Default)]
pub struct Issued {
    by_name: RwLock<HashMap<String, Vec<Live>>>,
    /// The provider account (issuer, subject) each name was first issued
    /// to: a name is one person, whatever its claim says later.
    subjects: RwLock<HashMap<String, (String, String)>>,
    /// The provider in force (`oidc.issuer`): a credential another one
    /// vouched for proves nothing (none when no provider is configured).
    issuer: RwLock<Option<String>>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Issued(..)")
    }
}

impl Issued {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Vec<Live>>> {
        self.by_name
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Vec<Live>>> {
        self.by_name
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Put `issuer` in force (at start, and by a reload).
    pub fn set_issuer(&self, issuer: Option<String>) {
        *self
            .issuer
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = issuer;
    }

    /// Live, and vouched for by the provider in force.
    fn usable(&self, l: &Live, now: SystemTime) -> bool {
        l.alive(now)
            && self
                .issuer
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_deref()
                == Some(l.issuer.as_str())
    }

    /// Take in a stored credential, and bind its name to its provider
    /// account if nothing bound it yet. One that has expired by `now` is
    /// not kept (it can prove nothing). The name's credentials it ends come
    /// back, for their sessions to end: those expired by now, and those
    /// with another salt (a proxy whose clock ran behind kept one this
    /// proxy's had let expire), which no login could prove any more.
    pub fn insert(&self, c: &IssuedCredential, now: SystemTime) -> Result<Vec<String>, String> {
        let verifier = ScramVerifier::parse(&c.verifier)
            .ok_or_else(|| format!("credential {} has no valid verifier", c.id))?;
        {
            // Bound to the first account; a credential from another
            // provider (the config switched providers) binds anew.
            let mut subjects = self
                .subjects
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let bound = subjects
                .entry(c.identity.clone())
                .or_insert_with(|| (c.issuer.clone(), c.subject.clone()));
            if bound.0 != c.issuer {
                *bound = (c.issuer.clone(), c.subject.clone());
            }
        }
        let mut by_name = self.write();
        let live = by_name.entry(c.identity.clone()).or_default();
        if live.iter().any(|l| l.id() == c.id) {
            return Err(format!("credential {} is issued twice", c.id));
        }
        let mut ended = Vec::new();
        live.retain(|l| {
            let keep = l.alive(now)
                && l.verifier.salt == verifier.salt
                && l.verifier.iterations == verifier.iterations;
            if !keep {
                ended.push(l.id().to_owned());
            }
            keep
        });
        if now < c.expires_at {
            live.push(Live {
                verifier,
                identity: Arc::new(Identity {
                    name: c.identity.clone(),
                    groups: c.groups.clone(),
                    credential: Some(CredentialRef {
                        id: c.id.clone(),
                        expires_at: c.expires_at,
                    }),
                }),
                issued_at: c.issued_at,
                issuer: c.issuer.clone(),
            });
        }
        if live.is_empty() {
            by_name.remove(&c.identity);
        }
        Ok(ended)
    }

    /// The provider account `name` is bound to, once issued a credential.
    pub fn subject_of(&self, name: &str) -> Option<(String, String)> {
        self.subjects
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Free `name` for another provider account (an admin's logout of the
    /// person, when someone left and the name is to be someone else's).
    pub fn unbind(&self, name: &str) {
        self.subjects
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
    }

    /// End `identity`'s credential `id`, or all of them; the ids ended.
    pub fn remove(&self, identity: &str, id: Option<&str>) -> Vec<String> {
        let mut by_name = self.write();
        let Some(live) = by_name.get_mut(identity) else {
            return Vec::new();
        };
        let mut ended = Vec::new();
        live.retain(|l| {
            let end = id.is_none_or(|id| l.id() == id);
            if end {
                ended.push(l.id().to_owned());
            }
            !end
        });
        if live.is_empty() {
            by_name.remove(identity);
        }
        ended
    }

    /// The login keys of `name`'s live credentials; `None` when it has none.
    pub fn keys_for(&self, name: &str, now: SystemTime) -> Option<LoginKeys> {
        let by_name = self.read();
        let mut live = by_name
            .get(name)?
            .iter()
            .filter(|l| self.usable(l, now))
            .peekable();
        let mut keys = LoginKeys::empty(&live.peek()?.verifier);
        for l in live {
            keys.push(&l.verifier, Some(l.identity.clone()));
        }
        Some(keys)
    }

    /// The verifier and identity of the live credential `secret` names.
    pub fn by_secret(
        &self,
        secret: &str,
        now: SystemTime,
    ) -> Option<(ScramVerifier, Arc<Identity>)> {
        let id = token_id(secret)?;
        self.read()
            .values()
            .flatten()
            .find(|l| l.id() == id && self.usable(l, now))
            .map(|l| (l.verifier.clone(), l.identity.clone()))
    }

    /// The salt and iteration count a new credential of `name` must share.
    pub fn shape_for(&self, name: &str, now: SystemTime) -> Option<(Vec<u8>, u32)> {
        self.read()
            .get(name)?
            .iter()
            .find(|l| self.usable(l, now))
            .map(|l| (l.verifier.salt.clone(), l.verifier.iterations))
    }

    /// `name`'s live credentials, oldest first.
    pub fn list(&self, name: &str, now: SystemTime) -> Vec<CredentialInfo> {
        let by_name = self.read();
        let mut list: Vec<CredentialInfo> = by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter(|l| self.usable(l, now))
            .map(|l| CredentialInfo {
                id: l.id().to_owned(),
                issued_at: l.issued_at,
                expires_at: l.credential().expires_at,
            })
            .collect();
        list.sort_by_key(|c| c.issued_at);
        list
    }

    /// Every live credential, as the identity it proves.
    pub fn all_live(&self, now: SystemTime) -> Vec<Arc<Identity>> {
        self.read()
            .values()
            .flatten()
            .filter(|l| self.usable(l, now))
            .map(|l| l.identity.clone())
            .collect()
    }

    /// Does `name` hold a live credential with this `id`?
    pub fn is_live(&self, name: &str, id: &str, now: SystemTime) -> bool {
        self.read()
            .get(name)
            .is_some_and(|live| live.iter().any(|l| l.id() == id && self.usable(l, now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn holder(name: &str) -> Holder<'_> {
        Holder {
            identity: name,
            groups: &[],
            issuer: "https://idp.example",
            subject: name,
        }
    }

    #[test]
    fn every_live_credential_of_a_name_logs_in_and_an_ended_one_does_not() {
        let issued = Issued::default();
        issued.set_issuer(Some("https://idp.example".into()));
        let now = SystemTime::now();
        let later = now + Duration::from_secs(3600);
        let first = NewCredential::generate(&holder("ann"), now, later, None);
        issued.insert(&first.credential, now).unwrap();
        let shape = issued.shape_for("ann", now);
        assert!(shape.is_some());
        let second = NewCredential::generate(&holder("ann"), now, later, shape);
        issued.insert(&second.credential, now).unwrap();
        let keys = issued.keys_for("ann", now).unwrap();
        for (secret, id) in [
            (&first.secret, &first.credential.id),
            (&second.secret, &second.credential.id),
        ] {
            let proven = keys.match_password(secret).unwrap();
            assert_eq!(proven.identity.credential.as_ref().unwrap().id, *id);
            assert_eq!(token_id(secret), Some(id.as_str()));
            assert!(issued.by_secret(secret, now).is_some());
        }
        assert!(keys.match_password("jgc_0000000000000000_nope").is_none());
        assert_eq!(
            issued.remove("ann", Some(&first.credential.id)),
            std::slice::from_ref(&first.credential.id)
        );
        let keys = issued.keys_for("ann", now).unwrap();
        assert!(keys.match_password(&first.secret).is_none());
        assert!(keys.match_password(&second.secret).is_some());
        assert!(issued.by_secret(&second.secret, later).is_none(), "expired");
        assert!(issued.keys_for("ann", later).is_none());
    }

    #[test]
    fn a_credential_with_another_salt_ends_the_names_older_ones() {
        let issued = Issued::default();
        issued.set_issuer(Some("https://idp.example".into()));
        let now = SystemTime::now();
        let later = now + Duration::from_secs(60);
        let a = NewCredential::generate(&holder("ann"), now, later, None);
        let b = NewCredential::generate(&holder("ann"), now, later, None);
        assert!(issued.insert(&a.credential, now).unwrap().is_empty());
        assert!(issued.insert(&a.credential, now).is_err(), "twice");
        // Another salt: the older one can no longer be proven, so it ends.
        assert_eq!(
            issued.insert(&b.credential, now).unwrap(),
            std::slice::from_ref(&a.credential.id)
        );
        let keys = issued.keys_for("ann", now).unwrap();
        assert!(keys.match_password(&a.secret).is_none());
        assert!(keys.match_password(&b.secret).is_some());
        assert_eq!(
            issued.subject_of("ann"),
            Some(("https://idp.example".to_owned(), "ann".to_owned()))
        );
    }

    #[test]
    fn secrets_carry_256_random_bits_and_a_findable_id() {
        let now = SystemTime::now();
        let c = NewCredential::generate(&holder("ann"), now, now, None);
        let (_, random) = c.secret[TOKEN_PREFIX.len()..].split_once('_').unwrap();
        assert_eq!(B64URL.decode(random).unwrap().len(), 32);
        assert!(token_id("jgc_xyz_abc").is_none());
        assert!(token_id("s3cret").is_none());
        assert!(!format!("{c:?}").contains(random));
    }
}
