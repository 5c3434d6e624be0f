//! `[listen]` and `[tls]`: where clients reach jitgate and the certificate
//! it shows them.

use super::Validator;
use crate::config::raw::{RawAdmin, RawListen, RawTls};
use crate::config::{AdminConfig, AdminTls, ConfigError, Listen, TlsConfig};

impl Validator<'_> {
    pub(super) fn listen(&self, raw: RawListen) -> Result<Listen, ConfigError> {
        Ok(Listen {
            postgres: self.addr("listen.postgres", raw.postgres.as_deref())?,
            mysql: self.addr("listen.mysql", raw.mysql.as_deref())?,
            mysql_server_version: raw
                .mysql_server_version
                .map(|version| self.mysql_server_version(version))
                .transpose()?,
            admin: self.addr("listen.admin", raw.admin.as_deref())?,
        })
    }

    /// The version the MySQL listener announces goes into every greeting:
    /// short, printable, one line.
    fn mysql_server_version(&self, version: String) -> Result<String, ConfigError> {
        let fits = !version.is_empty()
            && version.len() <= 60
            && version.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
        if fits {
            Ok(version)
        } else {
            Err(self.invalid(
                "listen.mysql_server_version",
                "must be 1 to 60 printable ASCII characters, like \"10.11.19-MariaDB\"",
            ))
        }
    }

    /// `[admin]`: a URL of scheme and authority only (links and the
    /// sign-on redirect add their paths), https when the listener serves
    /// TLS; a certificate with its key, or neither.
    pub(super) fn admin(&self, raw: RawAdmin) -> Result<AdminConfig, ConfigError> {
        let tls = match (raw.tls_cert, raw.tls_key) {
            (Some(cert), Some(key)) => Some(AdminTls {
                cert: self.resolve(&cert),
                key: self.resolve(&key),
            }),
            (None, None) => None,
            _ => {
                return Err(self.invalid(
                    "admin.tls_cert",
                    "admin.tls_cert and admin.tls_key go together: give both to serve the admin listener over TLS, or neither",
                ));
            }
        };
        let url = raw
            .url
            .map(|url| {
                let bad = |why: &str| self.invalid("admin.url", why.to_owned());
                let parsed = url::Url::parse(&url)
                    .map_err(|_| bad("must be a URL like \"https://jitgate.example.com\""))?;
                if !matches!(parsed.scheme(), "http" | "https")
                    || parsed.host_str().is_none()
                    || !parsed.username().is_empty()
                    || parsed.password().is_some()
                    || parsed.path() != "/"
                    || parsed.query().is_some()
                    || parsed.fragment().is_some()
                {
                    return Err(bad(
                        "must be http:// or https:// with a host and port only, no path, query or user, like \"https://jitgate.example.com\"",
                    ));
                }
                if tls.is_some() && parsed.scheme() != "https" {
                    return Err(bad(
                        "must start with https:// since the admin listener serves TLS (admin.tls_cert)",
                    ));
                }
                Ok(url.trim_end_matches('/').to_owned())
            })
            .transpose()?;
        Ok(AdminConfig { url, tls })
    }

    pub(super) fn tls(&self, raw: RawTls) -> TlsConfig {
        TlsConfig {
            cert: self.resolve(&raw.cert),
            key: self.resolve(&raw.key),
            require: raw.require,
            self_signed_if_missing: raw.self_signed_if_missing,
        }
    }
}
