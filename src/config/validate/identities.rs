//! `[[identities]]`: the people and robots jitgate knows, each with a
//! unique name and a SCRAM verifier (never a password).

use super::Validator;
use crate::config::raw::RawIdentity;
use crate::config::{ConfigError, IdentityConfig};

impl Validator<'_> {
    pub(super) fn identities(
        &self,
        raw: Vec<RawIdentity>,
    ) -> Result<Vec<IdentityConfig>, ConfigError> {
        let mut identities = Vec::new();
        for (i, id) in raw.into_iter().enumerate() {
            let key = format!("identities[{i}]");
            if id.name.is_empty() {
                return Err(self.invalid(format!("{key}.name"), "must not be empty"));
            }
            if identities
                .iter()
                .any(|x: &IdentityConfig| x.name == id.name)
            {
                return Err(self.invalid(
                    format!("{key}.name"),
                    format!("identity `{}` is defined twice", id.name),
                ));
            }
            if crate::identity::ScramVerifier::parse(&id.secret).is_none() {
                return Err(self.invalid(
                    format!("{key}.secret"),
                    "must be a SCRAM-SHA-256 verifier (generate one with `jitgate passwd`)",
                ));
            }
            identities.push(IdentityConfig {
                name: id.name,
                groups: id.groups,
                secret: id.secret,
            });
        }
        Ok(identities)
    }
}
