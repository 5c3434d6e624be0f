//! The server side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it.
//!
//! Written here rather than taken from pgwire because pgwire 0.42's SASL
//! decoders panic on some malformed input; every byte the client sends is
//! checked here before use. Channel binding is not offered (no `-PLUS`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::sync::Arc;

use crate::identity::{Identity, LoginKeys, hmac};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported; connect without it (channel_binding=disable)")]
    ChannelBinding,
    #[error("password authentication failed")]
    BadProof,
}

pub const MECHANISM: &str = "SCRAM-SHA-256";

/// State after the client-first message: what the final check needs.
pub struct ScramServer {
    keys: LoginKeys,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ScramServer {
    /// Handle client-first-message; returns the state and server-first-message.
    pub fn start(
        keys: LoginKeys,
        client_first: &[u8],
    ) -> Result<(ScramServer, String), ScramError> {
        let msg =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = msg
            .split_once(',')
            .ok_or(ScramError::Malformed("no gs2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no gs2 header"))?;
        if !authzid.is_empty() {
            return Err(ScramError::Malformed("authzid is not supported"));
        }
        let gs2_header = format!("{flag},{authzid},");
        let client_nonce = bare
            .split(',')
            .find_map(|attr| attr.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|c| (0x21..=0x7e).contains(&c) && c != b','))
            .ok_or(ScramError::Malformed("no client nonce"))?;
        if bare.starts_with("m=") {
            return Err(ScramError::Malformed(
                "mandatory extensions are not supported",
            ));
        }
        let server_nonce: [u8; 18] = rand::random();
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&keys.salt),
            keys.iterations
        );
        Ok((
            ScramServer {
                keys,
                gs2_header,
                client_first_bare: bare.to_owned(),
                server_first: server_first.clone(),
                nonce,
            },
            server_first,
        ))
    }

    /// Handle client-final-message; on success, the identity whose secret
    /// the proof proved and the server-final-message.
    pub fn finish(self, client_final: &[u8]) -> Result<(Arc<Identity>, String), ScramError> {
        let msg =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut attrs = without_proof.split(',');
        let cbind = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("no channel binding attribute"))?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        if B64.decode(cbind).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::Malformed("channel binding does not match"));
        }
        if nonce != self.nonce {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?
            .try_into()
            .map_err(|_| ScramError::Malformed("proof has the wrong length"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let proven = self
            .keys
            .match_proof(auth_message.as_bytes(), &proof)
            .ok_or(ScramError::BadProof)?;
        let server_signature = hmac(&proven.server_key, auth_message.as_bytes());
        Ok((
            proven.identity,
            format!("v={}", B64.encode(server_signature)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    use crate::identity::ScramVerifier;

    fn keys(password: &str) -> LoginKeys {
        let verifier = ScramVerifier::parse(&ScramVerifier::generate(password)).unwrap();
        let identity = Identity {
            name: "alice".into(),
            groups: vec![],
            credential: None,
        };
        LoginKeys::single(&verifier, Arc::new(identity))
    }

    fn exchange(stored_pw: &str, client_pw: &str) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(client_pw.as_bytes(), ChannelBinding::unsupported());
        let (server, server_first) = ScramServer::start(keys(stored_pw), client.message())?;
        client.update(server_first.as_bytes()).unwrap();
        let (identity, server_final) = server.finish(client.message())?;
        assert_eq!(identity.name, "alice");
        client.finish(server_final.as_bytes()).unwrap();
        Ok(())
    }

    #[test]
    fn right_password_completes_the_exchange() {
        exchange("alice-demo", "alice-demo").unwrap();
    }

    #[test]
    fn wrong_password_is_a_bad_proof() {
        assert_eq!(
            exchange("alice-demo", "alice-dem0"),
            Err(ScramError::BadProof)
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for input in [
            &b""[..],
            b",",
            b"n,,",
            b"n,,r=",
            b"q,,r=abc",
            b"\xff\xfe",
            b"n,a=x,r=abc",
        ] {
            assert!(ScramServer::start(keys("x"), input).is_err(), "{input:?}");
        }
        let (s, _) = ScramServer::start(keys("x"), b"n,,n=,r=abc").unwrap();
        assert!(s.finish(b"c=biws,r=abc,p=!!").is_err());
    }
}
