//! From the raw TOML to a [`Config`], one table at a time.
//!
//! Each table has its own function in its own file, and [`validate`] calls
//! them in the order the tables appear in a config file, so the first fault
//! an operator hears of is the first in the file. Every refusal is one
//! [`ConfigError::Invalid`] naming the file, the key and why; the helpers
//! here word the faults all tables share (a duration, an address) once.

mod audit;
mod demo;
mod identities;
mod limits;
mod listen;
pub(crate) mod oidc;
mod policies;
mod requests;
mod store;
mod targets;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::RawConfig;
use super::{Config, ConfigError};

/// The longest duration a policy or the request timeout may name.
const LONGEST_SPAN: Duration = Duration::from_secs(365 * 24 * 3600);

/// Check `raw`, read from `path`, and build the [`Config`] it describes.
pub(super) fn validate(raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let v = Validator { path, base };
    let data_dir = v.resolve(&raw.data_dir);
    let listen = v.listen(raw.listen)?;
    let tls = v.tls(raw.tls);
    let admin = v.admin(raw.admin)?;
    let store = v.store(raw.store)?;
    let audit = v.audit(raw.audit, &data_dir, &store)?;
    let limits = v.limits(raw.limits)?;
    let identities = v.identities(raw.identities)?;
    let oidc = v.oidc(raw.oidc)?;
    let targets = v.targets(raw.targets)?;
    let policies = v.policies(raw.policies, &targets)?;
    let requests = v.requests(raw.requests)?;
    let webhooks = v.webhooks(raw.webhooks)?;
    Ok(Config {
        source: path.to_owned(),
        data_dir,
        listen,
        tls,
        admin,
        audit,
        limits,
        identities,
        oidc,
        targets,
        policies,
        requests,
        webhooks,
        store,
    })
}

/// What every table's check needs: the file (for messages) and its
/// directory (for relative paths).
struct Validator<'a> {
    path: &'a Path,
    base: &'a Path,
}

impl Validator<'_> {
    fn invalid(&self, key: impl Into<String>, why: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key: key.into(),
            why: why.into(),
        }
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    fn duration(
        &self,
        key: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => humantime::parse_duration(v).map_err(|e| {
                self.invalid(
                    key,
                    format!("`{v}` is not a duration like \"10s\" or \"250ms\": {e}"),
                )
            }),
        }
    }

    fn addr(&self, key: &str, value: Option<&str>) -> Result<Option<SocketAddr>, ConfigError> {
        value
            .map(|v| {
                v.parse().map_err(|_| {
                    self.invalid(
                        key,
                        format!("`{v}` is not an address like \"127.0.0.1:6432\""),
                    )
                })
            })
            .transpose()
    }
}
