//! `[[targets]]` and their `levels`: the upstream databases, how jitgate
//! reaches each one, and the account behind every access level.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Validator;
use crate::config::raw::{RawLevel, RawTarget};
use crate::config::{ConfigError, LevelConfig, SecretSource, TargetConfig, UpstreamTls};

impl Validator<'_> {
    pub(super) fn targets(&self, raw: Vec<RawTarget>) -> Result<Vec<TargetConfig>, ConfigError> {
        let mut targets = Vec::new();
        for (i, t) in raw.into_iter().enumerate() {
            let key = format!("targets[{i}]");
            if targets.iter().any(|x: &TargetConfig| x.name == t.name) {
                return Err(self.invalid(
                    format!("{key}.name"),
                    format!("target `{}` is defined twice", t.name),
                ));
            }
            targets.push(self.target(&key, t)?);
        }
        Ok(targets)
    }

    fn target(&self, key: &str, t: RawTarget) -> Result<TargetConfig, ConfigError> {
        let tls = self.upstream_tls(key, t.tls.as_deref(), t.tls_ca_file.as_deref())?;
        let levels = self.levels(key, t.levels)?;
        if let Some(with) = &t.demo_create_read_accounts_with {
            self.check_demo_setup(key, &t.address, with, &levels)?;
        }
        Ok(TargetConfig {
            name: t.name,
            protocol: t.protocol,
            address: t.address,
            database: t.database,
            tls,
            tls_server_name: t.tls_server_name,
            connect_timeout: self.duration(
                &format!("{key}.connect_timeout"),
                t.connect_timeout.as_deref(),
                Duration::from_secs(5),
            )?,
            levels,
            demo_create_read_accounts_with: t.demo_create_read_accounts_with,
        })
    }

    fn upstream_tls(
        &self,
        key: &str,
        tls: Option<&str>,
        ca_file: Option<&str>,
    ) -> Result<UpstreamTls, ConfigError> {
        match tls.unwrap_or("disable") {
            "disable" => Ok(UpstreamTls::Disable),
            "require" => Ok(UpstreamTls::Require),
            "verify-full" => match ca_file {
                Some(ca) => Ok(UpstreamTls::VerifyFull {
                    ca_file: self.resolve(ca),
                }),
                None => Err(self.invalid(
                    format!("{key}.tls_ca_file"),
                    "is required with tls = \"verify-full\"",
                )),
            },
            other => Err(self.invalid(
                format!("{key}.tls"),
                format!("`{other}` must be one of \"disable\", \"require\", \"verify-full\""),
            )),
        }
    }

    fn levels(
        &self,
        key: &str,
        raw: BTreeMap<String, RawLevel>,
    ) -> Result<BTreeMap<String, LevelConfig>, ConfigError> {
        if raw.is_empty() {
            return Err(self.invalid(format!("{key}.levels"), "a target needs at least one level"));
        }
        let mut levels = BTreeMap::new();
        for (name, lv) in raw {
            let lkey = format!("{key}.levels.{name}");
            let password = match (lv.password_env, lv.password_file) {
                (Some(_), Some(_)) => {
                    return Err(self.invalid(lkey, "set password_env or password_file, not both"));
                }
                (Some(v), None) => SecretSource::Env(v),
                (None, Some(f)) => SecretSource::File(self.resolve(&f)),
                (None, None) => SecretSource::None,
            };
            if lv.allow_privileged_read_account && !lv.read_only {
                return Err(self.invalid(
                    format!("{lkey}.allow_privileged_read_account"),
                    "only applies to a level with read_only = true",
                ));
            }
            let level = LevelConfig {
                user: lv.user,
                password,
                read_only: lv.read_only,
                allow_privileged_read_account: lv.allow_privileged_read_account,
            };
            levels.insert(name, level);
        }
        Ok(levels)
    }
}
