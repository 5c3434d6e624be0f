//! `demo_create_read_accounts_with`: the demo's shortcut that creates the
//! read-only accounts on a local server at start. It runs SQL with a
//! writing account, so the config must show it is safe: a server on this
//! machine, a level that may create roles, and read accounts that are plain
//! names without passwords.

use std::collections::BTreeMap;

use super::Validator;
use crate::config::{ConfigError, LevelConfig, SecretSource};

impl Validator<'_> {
    /// `demo_create_read_accounts_with` names a level of the target that may
    /// write, the target is on this machine, and each read level's account is
    /// a plain name without a password that is not the creating account.
    pub(super) fn check_demo_setup(
        &self,
        key: &str,
        address: &str,
        with: &str,
        levels: &BTreeMap<String, LevelConfig>,
    ) -> Result<(), ConfigError> {
        let dkey = format!("{key}.demo_create_read_accounts_with");
        let Some(creator) = levels.get(with) else {
            return Err(self.invalid(dkey, format!("the target has no level named `{with}`")));
        };
        if creator.read_only {
            return Err(self.invalid(
                dkey,
                format!("level `{with}` is read-only; name a level whose account may create roles"),
            ));
        }
        if !is_loopback_address(address) {
            return Err(self.invalid(
                dkey,
                format!(
                    "is for a demo server on this machine only, and `{address}` is not a \
                     loopback address (127.0.0.1, ::1 or localhost)"
                ),
            ));
        }
        for (name, level) in levels.iter().filter(|(_, l)| l.read_only) {
            let lkey = format!("{key}.levels.{name}");
            if !is_plain_account_name(&level.user) {
                return Err(self.invalid(
                    format!("{lkey}.user"),
                    "a demo read account is created by name: use letters, digits and _ only",
                ));
            }
            if level.user == creator.user {
                return Err(self.invalid(
                    format!("{lkey}.user"),
                    format!(
                        "is the account of level `{with}`, which creates it; give the read \
                         level its own account, e.g. \"jitgate_demo_read\""
                    ),
                ));
            }
            if level.password != SecretSource::None {
                return Err(self.invalid(
                    lkey,
                    "a demo read account is created without a password: remove password_env / \
                     password_file, or remove demo_create_read_accounts_with and create the \
                     account yourself",
                ));
            }
        }
        Ok(())
    }
}

/// Is the host of `host:port` this machine (a loopback IP or `localhost`)?
fn is_loopback_address(address: &str) -> bool {
    let host = address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_matches(['[', ']']);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A name that needs no quoting in SQL on either server (and at most 32
/// characters, MySQL's limit).
fn is_plain_account_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
