//! `[store]`: where requests and grants are kept — the journal in
//! `data_dir` (one proxy), or a PostgreSQL database a fleet shares — and
//! this proxy's name in the fleet.

use std::time::Duration;

use super::Validator;
use crate::config::raw::RawStore;
use crate::config::{ConfigError, PgStoreConfig, SecretSource, StoreConfig, StoreKind};

/// Longest proxy name; it is a label in metrics and a column in the store.
const MAX_PROXY_NAME: usize = 64;

impl Validator<'_> {
    pub(super) fn store(&self, mut raw: RawStore) -> Result<StoreConfig, ConfigError> {
        let fleet = raw.kind.as_deref() == Some("postgres");
        let proxy_name = match raw.proxy_name.take() {
            Some(name) => name,
            // A proxy on its own only shows its name with its sessions: a
            // host name that would not do as a fleet's name is no reason to
            // refuse a config that loaded before fleets existed.
            None if !fleet => host_name()
                .filter(|n| proxy_name_ok(n))
                .unwrap_or_else(|| "jitgate".to_owned()),
            None => host_name().ok_or_else(|| {
                self.invalid(
                    "store.proxy_name",
                    "the host name cannot be read; name this proxy, e.g. proxy_name = \"jitgate-a\"",
                )
            })?,
        };
        if !proxy_name_ok(&proxy_name) {
            return Err(self.invalid(
                "store.proxy_name",
                format!(
                    "`{proxy_name}` must be 1 to {MAX_PROXY_NAME} letters, digits, '.', '_' or '-'{}",
                    if fleet { "; it defaults to the host name" } else { "" }
                ),
            ));
        }
        let kind = match raw.kind.as_deref().unwrap_or("file") {
            "file" => {
                let postgres_only = [
                    ("url_env", raw.url_env.is_some()),
                    ("url_file", raw.url_file.is_some()),
                    ("fail_closed_after", raw.fail_closed_after.is_some()),
                    ("tls", raw.tls.is_some()),
                    ("tls_ca_file", raw.tls_ca_file.is_some()),
                ];
                if let Some((key, _)) = postgres_only.iter().find(|(_, set)| *set) {
                    return Err(self.invalid(
                        format!("store.{key}"),
                        "applies to kind = \"postgres\" only; the file store keeps its journal in data_dir",
                    ));
                }
                StoreKind::File
            }
            "postgres" => StoreKind::Postgres(self.pg_store(raw)?),
            other => {
                return Err(self.invalid(
                    "store.kind",
                    format!("`{other}` is not a store; use \"file\" (the default) or \"postgres\""),
                ));
            }
        };
        Ok(StoreConfig { kind, proxy_name })
    }

    fn pg_store(&self, raw: RawStore) -> Result<PgStoreConfig, ConfigError> {
        let url = match (raw.url_env, raw.url_file) {
            (Some(var), None) => SecretSource::Env(var),
            (None, Some(file)) => SecretSource::File(self.resolve(&file)),
            _ => {
                return Err(self.invalid(
                    "store",
                    "kind = \"postgres\" needs exactly one of url_env or url_file: where the \
                     connection URL (with its password) is read; never the URL itself",
                ));
            }
        };
        let fail_closed_after = self.duration(
            "store.fail_closed_after",
            raw.fail_closed_after.as_deref(),
            Duration::from_secs(15),
        )?;
        if fail_closed_after < Duration::from_secs(1)
            || fail_closed_after > Duration::from_secs(3600)
        {
            return Err(self.invalid("store.fail_closed_after", "must be between 1s and 1h"));
        }
        let tls_ca_file = match (raw.tls.as_deref().unwrap_or("disable"), raw.tls_ca_file) {
            ("disable", None) => None,
            ("verify-full", Some(ca)) => Some(self.resolve(&ca)),
            ("verify-full", None) => {
                return Err(self.invalid(
                    "store.tls_ca_file",
                    "tls = \"verify-full\" needs the CA that signed the store's certificate",
                ));
            }
            ("disable", Some(_)) => {
                return Err(self.invalid(
                    "store.tls_ca_file",
                    "is only read with tls = \"verify-full\"",
                ));
            }
            (other, _) => {
                return Err(self.invalid(
                    "store.tls",
                    format!("`{other}` must be \"disable\" or \"verify-full\""),
                ));
            }
        };
        Ok(PgStoreConfig {
            url,
            fail_closed_after,
            tls_ca_file,
        })
    }
}

fn proxy_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PROXY_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// This machine's host name, as `hostname` prints it.
fn host_name() -> Option<String> {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_str().ok()?;
    (!name.is_empty()).then(|| name.to_owned())
}
