//! Checking an ID token: its signature against the provider's keys, and
//! its claims against what jitgate asked for.
//!
//! Written on ring (already under rustls) rather than taken from a JWT
//! crate, so that every rule is here to read: only the algorithms both the
//! provider announces and jitgate knows (never `none`, never an HMAC keyed
//! with a public key), a key found by its id whose type and use fit the
//! algorithm, then `iss`, `aud`/`azp`, `exp`/`iat` with the configured
//! leeway, and `nonce`. An error names at most the algorithm or issuer the
//! token claims (cut short), never the token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::Value;

/// Signature algorithms jitgate checks (a provider's announced list is
/// intersected with these).
pub(crate) const KNOWN_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// The longest ID token read.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Why a token was refused, in words for the person signing on and the
/// audit record's `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("the ID token is not a signed JWT")]
    Malformed,
    #[error(
        "the ID token is signed with {0}, which the provider does not announce or jitgate does not accept"
    )]
    Algorithm(String),
    #[error("the ID token is signed with a key the provider does not publish")]
    UnknownKey,
    #[error("the ID token's signature does not verify")]
    Signature,
    #[error("the ID token was issued by {0}, not by the configured provider")]
    Issuer(String),
    #[error("the ID token was issued to another client, not to jitgate's client id")]
    Audience,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token was issued in the future (check the clocks)")]
    IssuedInFuture,
    #[error("the ID token's nonce is not the one this sign-on sent")]
    Nonce,
    #[error("the ID token has no {0} claim")]
    MissingClaim(String),
    #[error("the ID token's {0} claim is not usable as a jitgate name")]
    BadName(String),
}

impl TokenError {
    /// The audit record's `reason`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed_token",
            TokenError::Algorithm(_) => "bad_algorithm",
            TokenError::UnknownKey => "unknown_key",
            TokenError::Signature => "bad_signature",
            TokenError::Issuer(_) => "wrong_issuer",
            TokenError::Audience => "wrong_audience",
            TokenError::Expired => "expired_token",
            TokenError::IssuedInFuture => "token_from_the_future",
            TokenError::Nonce => "wrong_nonce",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::BadName(_) => "bad_name",
        }
    }
}

/// One of the provider's public keys (a JWK), parsed.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    kid: Option<String>,
    /// The algorithm the JWK is for, when it says.
    alg: Option<String>,
    material: Material,
}

#[derive(Debug, Clone)]
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed point (0x04 || x || y) on P-256 or P-384.
    Ec {
        curve: &'static str,
        point: Vec<u8>,
    },
    Ed25519(Vec<u8>),
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// The signing keys of a JWKS document; keys jitgate cannot use (for
/// encryption, of an unknown type) are left out.
pub(crate) fn parse_jwks(doc: &Value) -> Vec<Key> {
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Vec::new();
    };
    keys.iter()
        .filter_map(|k| serde_json::from_value::<RawJwk>(k.clone()).ok())
        .filter(|k| k.use_.as_deref().is_none_or(|u| u == "sig"))
        .filter_map(|k| {
            let b = |s: &Option<String>| s.as_deref().and_then(|s| B64URL.decode(s).ok());
            let material = match (k.kty.as_str(), k.crv.as_deref()) {
                ("RSA", _) => Material::Rsa {
                    n: b(&k.n)?,
                    e: b(&k.e)?,
                },
                ("EC", Some(crv @ ("P-256" | "P-384"))) => {
                    let (x, y) = (b(&k.x)?, b(&k.y)?);
                    let size = if crv == "P-256" { 32 } else { 48 };
                    if x.len() != size || y.len() != size {
                        return None;
                    }
                    let mut point = vec![4];
                    point.extend(x);
                    point.extend(y);
                    Material::Ec {
                        curve: if crv == "P-256" { "P-256" } else { "P-384" },
                        point,
                    }
                }
                ("OKP", Some("Ed25519")) => Material::Ed25519(b(&k.x)?),
                _ => return None,
            };
            Some(Key {
                kid: k.kid,
                alg: k.alg,
                material,
            })
        })
        .collect()
}

/// A token split and decoded, before its signature is checked.
pub(crate) struct Unverified {
    pub(crate) alg: String,
    pub(crate) kid: Option<String>,
    signed: Vec<u8>,
    signature: Vec<u8>,
    claims: serde_json::Map<String, Value>,
}

impl Unverified {
    pub(crate) fn parse(token: &str) -> Result<Unverified, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |part: &str| B64URL.decode(part).map_err(|_| TokenError::Malformed);
        let header: serde_json::Map<String, Value> =
            serde_json::from_slice(&decode(h)?).map_err(|_| TokenError::Malformed)?;
        // A header asking for something jitgate does not understand
        // (`crit`) cannot be honoured; nor can an encrypted token.
        if header.contains_key("crit") || header.contains_key("enc") {
            return Err(TokenError::Malformed);
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(TokenError::Malformed)?
            .chars()
            .take(16)
            .collect();
        let kid = header.get("kid").and_then(Value::as_str).map(str::to_owned);
        let claims = serde_json::from_slice(&decode(p)?).map_err(|_| TokenError::Malformed)?;
        Ok(Unverified {
            alg,
            kid,
            signed: format!("{h}.{p}").into_bytes(),
            signature: decode(s)?,
            claims,
        })
    }

    /// The keys this token's signature may be checked with: the one its
    /// `kid` names (or every key, when it names none) that fits its algorithm.
    pub(crate) fn candidates<'k>(&self, keys: &'k [Key]) -> Vec<&'k Key> {
        keys.iter()
            .filter(|k| self.kid.is_none() || k.kid == self.kid)
            .filter(|k| k.alg.as_deref().is_none_or(|a| a == self.alg))
            .collect()
    }

    /// Is the token signed with an algorithm both the provider announces
    /// (`announced`) and jitgate knows? Asked before any key is looked for.
    pub(crate) fn check_algorithm(&self, announced: &[String]) -> Result<(), TokenError> {
        if announced.contains(&self.alg) && KNOWN_ALGORITHMS.contains(&&*self.alg) {
            Ok(())
        } else {
            Err(TokenError::Algorithm(self.alg.clone()))
        }
    }

    /// Check the signature with `key`; `announced` are the algorithms the
    /// provider signs ID tokens with.
    pub(crate) fn verify_with(
        self,
        key: &Key,
        announced: &[String],
    ) -> Result<serde_json::Map<String, Value>, TokenError> {
        self.check_algorithm(announced)?;
        if verify_signature(&self.alg, &key.material, &self.signed, &self.signature) {
            Ok(self.claims)
        } else {
            Err(TokenError::Signature)
        }
    }
}

fn verify_signature(alg: &str, key: &Material, message: &[u8], sig: &[u8]) -> bool {
    let rsa = |params: &'static signature::RsaParameters| match key {
        Material::Rsa { n, e } => RsaPublicKeyComponents { n, e }
            .verify(params, message, sig)
            .is_ok(),
        _ => false,
    };
    let ec = |curve: &str, params: &'static signature::EcdsaVerificationAlgorithm| match key {
        Material::Ec { curve: c, point } if *c == curve => UnparsedPublicKey::new(params, point)
            .verify(message, sig)
            .is_ok(),
        _ => false,
    };
    match alg {
        "RS256" => rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
        "RS384" => rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
        "RS512" => rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
        "PS256" => rsa(&signature::RSA_PSS_2048_8192_SHA256),
        "PS384" => rsa(&signature::RSA_PSS_2048_8192_SHA384),
        "PS512" => rsa(&signature::RSA_PSS_2048_8192_SHA512),
        "ES256" => ec("P-256", &signature::ECDSA_P256_SHA256_FIXED),
        "ES384" => ec("P-384", &signature::ECDSA_P384_SHA384_FIXED),
        "EdDSA" => match key {
            Material::Ed25519(x) => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, sig)
                .is_ok(),
            _ => false,
        },
        _ => false,
    }
}

/// What the claims must say.
pub(crate) struct Expected<'a> {
    pub(crate) issuer: &'a str,
    pub(crate) client_id: &'a str,
    /// The nonce the sign-on sent (`None` for the device flow, which has none).
    pub(crate) nonce: Option<&'a str>,
    pub(crate) clock_skew: Duration,
    pub(crate) now: SystemTime,
    pub(crate) username_claim: &'a str,
    pub(crate) groups_claim: &'a str,
}

/// Who the token says signed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignedOn {
    pub(crate) name: String,
    pub(crate) groups: Vec<String>,
    pub(crate) subject: String,
}

/// The longest jitgate name a provider may give.
const MAX_NAME_CHARS: usize = 128;
/// Groups read from one token, at most.
const MAX_GROUPS: usize = 256;

/// Characters that change how a name looks without showing (zero-width
/// spaces and joiners, direction marks and overrides, the BOM): a name with
/// one could pass for another in the audit log and on an approver's screen.
fn invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}'
        | '\u{17B4}' | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// Check verified `claims` against `want`.
pub(crate) fn check_claims(
    claims: &serde_json::Map<String, Value>,
    want: &Expected<'_>,
) -> Result<SignedOn, TokenError> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let iss = text("iss").ok_or_else(|| TokenError::MissingClaim("iss".into()))?;
    if iss != want.issuer {
        return Err(TokenError::Issuer(iss.chars().take(200).collect()));
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == want.client_id,
        Some(Value::Array(list)) => {
            list.iter().any(|a| a.as_str() == Some(want.client_id))
                && (list.len() == 1 || text("azp") == Some(want.client_id))
        }
        _ => false,
    };
    if !audience_ok || text("azp").is_some_and(|azp| azp != want.client_id) {
        return Err(TokenError::Audience);
    }
    let seconds = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| TokenError::MissingClaim(name.into()))
    };
    let now = want.now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let skew = want.clock_skew.as_secs_f64();
    if seconds("exp")? + skew <= now.as_secs_f64() {
        return Err(TokenError::Expired);
    }
    if seconds("iat")? - skew > now.as_secs_f64() {
        return Err(TokenError::IssuedInFuture);
    }
    if let Some(nonce) = want.nonce
        && text("nonce") != Some(nonce)
    {
        return Err(TokenError::Nonce);
    }
    let subject = text("sub")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| TokenError::MissingClaim("sub".into()))?;
    let name = text(want.username_claim)
        .ok_or_else(|| TokenError::MissingClaim(want.username_claim.into()))?;
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || invisible(c))
    {
        return Err(TokenError::BadName(want.username_claim.into()));
    }
    // An email is a name only when the provider says it checked it: many
    // let people type any address into their profile.
    let verified = matches!(claims.get("email_verified"), Some(Value::Bool(true)))
        || matches!(claims.get("email_verified"), Some(Value::String(s)) if s == "true");
    if want.username_claim == "email" && !verified {
        return Err(TokenError::BadName(
            "email (not verified by the provider)".into(),
        ));
    }
    let groups = match claims.get(want.groups_claim) {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .take(MAX_GROUPS)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };
    Ok(SignedOn {
        name: name.to_owned(),
        groups,
        subject: subject.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn want(now: SystemTime) -> Expected<'static> {
        Expected {
            issuer: "https://idp.example/",
            client_id: "jitgate",
            nonce: Some("n-1"),
            clock_skew: Duration::from_secs(30),
            now,
            username_claim: "email",
            groups_claim: "groups",
        }
    }

    fn claims(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn claims_are_checked_one_by_one() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let good = json!({"iss": "https://idp.example/", "aud": "jitgate", "exp": 1_000_100,
            "iat": 999_990, "nonce": "n-1", "sub": "u1", "email": "ann@example.com", "email_verified": true,
            "groups": ["dev", "oncall"]});
        let signed_on = check_claims(&claims(good.clone()), &want(now)).unwrap();
        assert_eq!(signed_on.name, "ann@example.com");
        assert_eq!(signed_on.groups, ["dev", "oncall"]);
        let with = |k: &str, v: Value| {
            let mut c = claims(good.clone());
            c.insert(k.into(), v);
            check_claims(&c, &want(now)).unwrap_err()
        };
        assert_eq!(
            with("iss", json!("https://evil/")),
            TokenError::Issuer("https://evil/".into())
        );
        assert_eq!(with("aud", json!("other")), TokenError::Audience);
        assert_eq!(
            with("aud", json!(["other", "jitgate"])),
            TokenError::Audience
        );
        assert_eq!(with("azp", json!("other")), TokenError::Audience);
        assert_eq!(with("exp", json!(999_960)), TokenError::Expired);
        assert_eq!(with("iat", json!(1_000_040)), TokenError::IssuedInFuture);
        assert_eq!(with("nonce", json!("n-2")), TokenError::Nonce);
        assert_eq!(
            with("email", json!("a b")),
            TokenError::BadName("email".into())
        );
        for (claim, value) in [
            ("email_verified", json!(false)),
            ("email_verified", json!("no")),
            ("email", json!("ann\u{200B}@example.com")),
            ("email", json!("\u{202E}moc.elpmaxe@nna")),
        ] {
            assert!(matches!(with(claim, value), TokenError::BadName(_)));
        }
        let mut unverified = claims(good.clone());
        unverified.remove("email_verified");
        assert!(
            check_claims(&unverified, &want(now)).is_err(),
            "no email_verified at all"
        );
        // Within the leeway.
        let mut c = claims(good.clone());
        c.insert("exp".into(), json!(999_980));
        assert!(check_claims(&c, &want(now)).is_ok());
    }

    /// A P-256 key pair and its JWK, as a provider publishes it.
    fn es256_key(kid: &str) -> (ring::signature::EcdsaKeyPair, Value) {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let public = pair.public_key().as_ref().to_vec();
        let jwk = json!({"kty": "EC", "crv": "P-256", "use": "sig", "kid": kid,
            "x": B64URL.encode(&public[1..33]), "y": B64URL.encode(&public[33..])});
        (pair, jwk)
    }

    fn sign(pair: &ring::signature::EcdsaKeyPair, header: Value, claims: Value) -> String {
        let signed = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let sig = pair
            .sign(&ring::rand::SystemRandom::new(), signed.as_bytes())
            .unwrap();
        format!("{signed}.{}", B64URL.encode(sig.as_ref()))
    }

    #[test]
    fn a_signature_checks_only_with_the_key_that_made_it_and_untouched_bytes() {
        let (pair, jwk) = es256_key("k1");
        let (_, other) = es256_key("k2");
        let keys = parse_jwks(&json!({"keys": [jwk, other, {"kty": "oct", "k": "c2VjcmV0"}]}));
        assert_eq!(
            keys.len(),
            2,
            "the symmetric key is no signing key of a provider"
        );
        let announced = vec!["ES256".to_owned()];
        let token = sign(
            &pair,
            json!({"alg": "ES256", "kid": "k1"}),
            json!({"sub": "u1"}),
        );
        let parsed = Unverified::parse(&token).unwrap();
        let candidates = parsed.candidates(&keys);
        assert_eq!(candidates.len(), 1);
        assert_eq!(
            Unverified::parse(&token)
                .unwrap()
                .verify_with(candidates[0], &announced)
                .unwrap()["sub"],
            "u1"
        );
        // Signed by k1 but claiming k2: k2 does not verify it.
        let liar = sign(
            &pair,
            json!({"alg": "ES256", "kid": "k2"}),
            json!({"sub": "u1"}),
        );
        let parsed = Unverified::parse(&liar).unwrap();
        let k2 = parsed.candidates(&keys)[0];
        assert_eq!(
            parsed.verify_with(k2, &announced).unwrap_err(),
            TokenError::Signature
        );
        // Claims changed after signing.
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64URL.encode(r#"{"sub":"root"}"#),
            parts[2]
        );
        let parsed = Unverified::parse(&forged).unwrap();
        let k1 = parsed.candidates(&keys)[0];
        assert_eq!(
            parsed.verify_with(k1, &announced).unwrap_err(),
            TokenError::Signature
        );
        // An unknown key id has no candidate.
        let unknown = sign(&pair, json!({"alg": "ES256", "kid": "k9"}), json!({}));
        assert!(
            Unverified::parse(&unknown)
                .unwrap()
                .candidates(&keys)
                .is_empty()
        );
        // An RSA algorithm named over an EC key never verifies.
        let confused = sign(&pair, json!({"alg": "RS256", "kid": "k1"}), json!({}));
        let parsed = Unverified::parse(&confused).unwrap();
        let k1 = parsed.candidates(&keys)[0];
        assert!(parsed.verify_with(k1, &["RS256".to_owned()]).is_err());
    }

    #[test]
    fn none_and_hmac_and_unannounced_algorithms_are_refused() {
        let header = |alg: &str| B64URL.encode(format!(r#"{{"alg":"{alg}"}}"#));
        let body = B64URL.encode(r#"{"sub":"x"}"#);
        let key = Key {
            kid: None,
            alg: None,
            material: Material::Rsa {
                n: vec![1; 256],
                e: vec![1, 0, 1],
            },
        };
        let announced = vec!["RS256".to_owned(), "none".to_owned(), "HS256".to_owned()];
        for alg in ["none", "HS256", "RS512"] {
            let token = Unverified::parse(&format!("{}.{body}.", header(alg))).unwrap();
            assert_eq!(
                token.verify_with(&key, &announced).unwrap_err(),
                TokenError::Algorithm(alg.into())
            );
        }
        assert!(Unverified::parse("a.b").is_err());
        assert!(Unverified::parse(&format!("{}.{body}.x.y", header("RS256"))).is_err());
    }
}
