//! The TOML configuration model and its validation.
//!
//! One file describes listeners, TLS, the audit log, limits, identities and
//! targets. Loading it either yields a fully validated [`Config`] or one
//! [`ConfigError`] that names the file, the key and what is wrong, so an
//! operator can fix it without reading code. Relative paths are resolved
//! against the directory of the config file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod raw;
mod secret;
#[cfg(test)]
mod tests;

use raw::RawConfig;
pub use secret::{SecretError, SecretSource};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: `{key}`: {why}")]
    Invalid {
        path: PathBuf,
        key: String,
        why: String,
    },
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config file was read from (for messages).
    pub source: PathBuf,
    pub data_dir: PathBuf,
    pub listen: Listen,
    pub tls: TlsConfig,
    pub audit: AuditConfig,
    pub limits: Limits,
    pub identities: Vec<IdentityConfig>,
    pub targets: Vec<TargetConfig>,
    pub policies: Vec<PolicyConfig>,
    pub requests: RequestsConfig,
    pub webhooks: Vec<WebhookConfig>,
}

/// Who may request which targets and levels, for how long, and who approves.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub name: String,
    /// Target names; `"*"` matches every target.
    pub targets: Vec<String>,
    /// Level names; `"*"` matches every level.
    pub levels: Vec<String>,
    /// Groups whose members may request under this policy.
    pub requesters: Vec<String>,
    pub max_duration: Duration,
    /// Distinct approvals needed (at least 1).
    pub approvals: u32,
    /// Groups whose members may approve or deny.
    pub approvers: Vec<String>,
    pub auto_approve: Option<AutoApprove>,
}

/// Requests from these groups up to `max_duration` are approved at once
/// (on-call break-glass); still audited and announced.
#[derive(Debug, Clone)]
pub struct AutoApprove {
    pub groups: Vec<String>,
    pub max_duration: Duration,
}

#[derive(Debug, Clone)]
pub struct RequestsConfig {
    /// A pending request that nobody decides within this time expires.
    pub pending_timeout: Duration,
    /// Longest reason (of a request or a direct grant) or decision comment,
    /// in characters: they are copied into the journal, the audit log, every
    /// listing and every webhook.
    pub max_reason_chars: usize,
    /// Pending requests one identity may have at once.
    pub max_pending_per_identity: usize,
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL that receives a JSON event (with a Slack-compatible `text`).
    pub url: String,
    pub timeout: Duration,
    /// Further attempts after a failed one.
    pub retries: u32,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub postgres: Option<SocketAddr>,
    /// MySQL/MariaDB clients (`mariadb -h … -P <port> <target>`).
    pub mysql: Option<SocketAddr>,
    /// The server version the MySQL listener announces; by default the
    /// first MySQL target's own (see `wire/mysql/announce.rs`).
    pub mysql_server_version: Option<String>,
    pub admin: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Refuse clients that do not start TLS.
    pub require: bool,
    /// Create a self-signed pair at `cert`/`key` when they do not exist (dev only).
    pub self_signed_if_missing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync after every record before the statement is forwarded.
    Always,
    /// fsync in groups, at most this long after a record was written.
    Interval(Duration),
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub fsync: FsyncPolicy,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub handshake_timeout: Duration,
    /// A client's first message (PostgreSQL startup or SSLRequest, MySQL
    /// handshake response or SSLRequest) must arrive within this time; until
    /// it does, the connection holds only a slot of its address.
    pub first_message_timeout: Duration,
    /// Handshakes in progress, counted from the client's first message, so
    /// silent connections cannot take the slots of clients that speak.
    pub max_pending_handshakes: usize,
    /// Handshakes in progress from one client address (IPv6: one /64),
    /// silent or not, across the PostgreSQL and MySQL listeners.
    pub max_pending_handshakes_per_address: usize,
    pub max_sessions: usize,
    pub max_message_bytes: usize,
    /// The longest statement text the classifier reads; a longer one is
    /// unknown (refused on read levels). Texts over 8 KiB are classified on
    /// a bounded blocking pool, not on the session threads.
    pub max_classified_statement_bytes: usize,
    /// Failed logins allowed per identity and per client address in `login_failure_window`.
    pub max_login_failures: u32,
    pub login_failure_window: Duration,
    /// Threads that run the proxied sessions (see `wire::workers`); by
    /// default half the CPUs the process may use, at least one.
    pub session_threads: usize,
    /// Open admin-API connections; more are answered 503 and closed, so
    /// the API cannot take the descriptors the database listeners need.
    pub admin_max_connections: usize,
    /// An admin-API client must send a request's headers within this time
    /// (also while a kept-alive connection waits for its next request).
    pub admin_header_read_timeout: Duration,
    /// An admin-API connection with no bytes either way for this long is closed.
    pub admin_idle_timeout: Duration,
    /// An admin-API request must be read (body included) and answered
    /// within this time, or it gets 408.
    pub admin_request_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub name: String,
    pub groups: Vec<String>,
    /// SCRAM-SHA-256 verifier in PostgreSQL's format
    /// (`SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`).
    pub secret: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Postgres,
    Mysql,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTls {
    Disable,
    Require,
    VerifyFull { ca_file: PathBuf },
}

#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub name: String,
    pub protocol: Protocol,
    /// `host:port` as given; resolved at connect time.
    pub address: String,
    pub database: String,
    pub tls: UpstreamTls,
    /// Host name checked against the server certificate with `verify-full`.
    pub tls_server_name: Option<String>,
    pub connect_timeout: Duration,
    pub levels: BTreeMap<String, LevelConfig>,
    /// DEMO ONLY (`demo_create_read_accounts_with`): at start, log in as
    /// this level's account and create the account of every `read_only`
    /// level on the server (read-only, no password), if missing. Only for a
    /// loopback address.
    pub demo_create_read_accounts_with: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LevelConfig {
    pub user: String,
    pub password: SecretSource,
    pub read_only: bool,
    /// Let a `read_only` level log in upstream with an account that can
    /// write (its privileges are still checked and logged, with a warning at
    /// every start); only the proxy's classifier then keeps the level
    /// read-only.
    pub allow_privileged_read_account: bool,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parse and validate `text` as if it were read from `path`.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Validator { path, base }.validate(raw)
    }

    pub fn target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.name == name)
    }

    pub fn identity(&self, name: &str) -> Option<&IdentityConfig> {
        self.identities.iter().find(|i| i.name == name)
    }
}

/// Half the CPUs this process may use, at least one: the database, the
/// clients and jitgate's own control plane usually share the machine, and on
/// two cores one session thread gave more throughput than two (see
/// `wire::workers`).
fn default_session_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Is the host of `host:port` this machine (a loopback IP or `localhost`)?
pub fn is_loopback_address(address: &str) -> bool {
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

/// More session threads than this is a typo, not a machine.
const MAX_SESSION_THREADS: usize = 1024;

/// The longest duration a policy or the request timeout may name.
const LONGEST_SPAN: Duration = Duration::from_secs(365 * 24 * 3600);

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

    /// A policy duration: at least 1s (requests are whole seconds), at most
    /// [`LONGEST_SPAN`] (so no deadline overflows the clock).
    fn check_span(&self, key: &str, d: Duration) -> Result<(), ConfigError> {
        if d < Duration::from_secs(1) || d > LONGEST_SPAN {
            return Err(self.invalid(key, "must be between 1s and 365 days"));
        }
        Ok(())
    }

    /// `demo_create_read_accounts_with` names a level of the target that may
    /// write, the target is on this machine, and each read level's account is
    /// a plain name without a password that is not the creating account.
    fn check_demo_setup(
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

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let data_dir = self.resolve(&raw.data_dir);
        let listen = Listen {
            postgres: self.addr("listen.postgres", raw.listen.postgres.as_deref())?,
            mysql: self.addr("listen.mysql", raw.listen.mysql.as_deref())?,
            mysql_server_version: raw
                .listen
                .mysql_server_version
                .map(|version| {
                    let fits = !version.is_empty()
                        && version.len() <= 60
                        && version.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
                    if fits {
                        Ok(version)
                    } else {
                        Err(self.invalid(
                            "listen.mysql_server_version",
                            "must be 1 to 60 printable ASCII characters, like \"10.11.19-MariaDB\""
                                .to_owned(),
                        ))
                    }
                })
                .transpose()?,
            admin: self.addr("listen.admin", raw.listen.admin.as_deref())?,
        };
        let tls = TlsConfig {
            cert: self.resolve(&raw.tls.cert),
            key: self.resolve(&raw.tls.key),
            require: raw.tls.require,
            self_signed_if_missing: raw.tls.self_signed_if_missing,
        };
        let fsync = match raw.audit.fsync.as_deref() {
            None => FsyncPolicy::Interval(Duration::from_millis(100)),
            Some("always") => FsyncPolicy::Always,
            Some(v) => FsyncPolicy::Interval(
                self.duration("audit.fsync", Some(v), Duration::ZERO)
                    .map_err(|_| {
                        self.invalid(
                            "audit.fsync",
                            format!("`{v}` must be \"always\" or an interval like \"100ms\""),
                        )
                    })?,
            ),
        };
        let audit = AuditConfig {
            path: raw
                .audit
                .path
                .map(|p| self.resolve(&p))
                .unwrap_or_else(|| data_dir.join("audit.log")),
            fsync,
        };
        let l = raw.limits;
        let limits = Limits {
            handshake_timeout: self.duration(
                "limits.handshake_timeout",
                l.handshake_timeout.as_deref(),
                Duration::from_secs(10),
            )?,
            first_message_timeout: self.duration(
                "limits.first_message_timeout",
                l.first_message_timeout.as_deref(),
                Duration::from_secs(3),
            )?,
            max_pending_handshakes: l.max_pending_handshakes.unwrap_or(256),
            max_pending_handshakes_per_address: l.max_pending_handshakes_per_address.unwrap_or(32),
            max_sessions: l.max_sessions.unwrap_or(10_000),
            max_message_bytes: l.max_message_bytes.unwrap_or(64 << 20),
            max_classified_statement_bytes: l
                .max_classified_statement_bytes
                .unwrap_or(crate::sql::DEFAULT_MAX_CLASSIFIED_SQL_BYTES),
            max_login_failures: l.max_login_failures.unwrap_or(10),
            login_failure_window: self.duration(
                "limits.login_failure_window",
                l.login_failure_window.as_deref(),
                Duration::from_secs(60),
            )?,
            session_threads: l.session_threads.unwrap_or_else(default_session_threads),
            admin_max_connections: l.admin_max_connections.unwrap_or(128),
            admin_header_read_timeout: self.duration(
                "limits.admin_header_read_timeout",
                l.admin_header_read_timeout.as_deref(),
                Duration::from_secs(10),
            )?,
            admin_idle_timeout: self.duration(
                "limits.admin_idle_timeout",
                l.admin_idle_timeout.as_deref(),
                Duration::from_secs(60),
            )?,
            admin_request_timeout: self.duration(
                "limits.admin_request_timeout",
                l.admin_request_timeout.as_deref(),
                Duration::from_secs(30),
            )?,
        };
        if !(1..=MAX_SESSION_THREADS).contains(&limits.session_threads) {
            return Err(self.invalid(
                "limits.session_threads",
                format!("must be between 1 and {MAX_SESSION_THREADS}"),
            ));
        }
        if limits.max_pending_handshakes == 0
            || limits.max_pending_handshakes_per_address == 0
            || limits.max_sessions == 0
        {
            return Err(self.invalid(
                "limits",
                "max_pending_handshakes, max_pending_handshakes_per_address and max_sessions must be at least 1",
            ));
        }
        for (key, d) in [
            ("limits.first_message_timeout", limits.first_message_timeout),
            (
                "limits.admin_header_read_timeout",
                limits.admin_header_read_timeout,
            ),
            ("limits.admin_idle_timeout", limits.admin_idle_timeout),
            ("limits.admin_request_timeout", limits.admin_request_timeout),
        ] {
            if d.is_zero() {
                return Err(self.invalid(key, "must be more than 0s"));
            }
        }
        if limits.admin_max_connections == 0 {
            return Err(self.invalid("limits.admin_max_connections", "must be at least 1"));
        }
        if limits.max_classified_statement_bytes < 1024 {
            return Err(self.invalid(
                "limits.max_classified_statement_bytes",
                "must be at least 1024",
            ));
        }
        if limits.max_message_bytes < 1024 {
            return Err(self.invalid("limits.max_message_bytes", "must be at least 1024"));
        }

        let mut identities = Vec::new();
        for (i, id) in raw.identities.into_iter().enumerate() {
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

        let mut targets = Vec::new();
        for (i, t) in raw.targets.into_iter().enumerate() {
            let key = format!("targets[{i}]");
            if targets.iter().any(|x: &TargetConfig| x.name == t.name) {
                return Err(self.invalid(
                    format!("{key}.name"),
                    format!("target `{}` is defined twice", t.name),
                ));
            }
            let tls = match t.tls.as_deref().unwrap_or("disable") {
                "disable" => UpstreamTls::Disable,
                "require" => UpstreamTls::Require,
                "verify-full" => match &t.tls_ca_file {
                    Some(ca) => UpstreamTls::VerifyFull {
                        ca_file: self.resolve(ca),
                    },
                    None => {
                        return Err(self.invalid(
                            format!("{key}.tls_ca_file"),
                            "is required with tls = \"verify-full\"",
                        ));
                    }
                },
                other => {
                    return Err(self.invalid(
                        format!("{key}.tls"),
                        format!(
                            "`{other}` must be one of \"disable\", \"require\", \"verify-full\""
                        ),
                    ));
                }
            };
            if t.levels.is_empty() {
                return Err(
                    self.invalid(format!("{key}.levels"), "a target needs at least one level")
                );
            }
            let mut levels = BTreeMap::new();
            for (name, lv) in t.levels {
                let lkey = format!("{key}.levels.{name}");
                let password = match (lv.password_env, lv.password_file) {
                    (Some(_), Some(_)) => {
                        return Err(
                            self.invalid(lkey, "set password_env or password_file, not both")
                        );
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
                levels.insert(
                    name,
                    LevelConfig {
                        user: lv.user,
                        password,
                        read_only: lv.read_only,
                        allow_privileged_read_account: lv.allow_privileged_read_account,
                    },
                );
            }
            if let Some(with) = &t.demo_create_read_accounts_with {
                self.check_demo_setup(&key, &t.address, with, &levels)?;
            }
            targets.push(TargetConfig {
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
            });
        }

        let mut policies = Vec::new();
        for (i, p) in raw.policies.into_iter().enumerate() {
            let key = format!("policies[{i}]");
            if policies.iter().any(|x: &PolicyConfig| x.name == p.name) {
                return Err(self.invalid(
                    format!("{key}.name"),
                    format!("policy `{}` is defined twice", p.name),
                ));
            }
            if p.name.trim().is_empty() {
                return Err(self.invalid(format!("{key}.name"), "must not be empty"));
            }
            if p.targets.is_empty() {
                return Err(self.invalid(
                    format!("{key}.targets"),
                    "name at least one target (or \"*\" for all)",
                ));
            }
            for t in &p.targets {
                if t != "*" && !targets.iter().any(|x| &x.name == t) {
                    return Err(self.invalid(
                        format!("{key}.targets"),
                        format!("no target is named `{t}`"),
                    ));
                }
            }
            if p.levels.is_empty() {
                return Err(self.invalid(
                    format!("{key}.levels"),
                    "name at least one level (or \"*\" for all)",
                ));
            }
            let covered = |t: &TargetConfig| p.targets.iter().any(|x| x == "*" || *x == t.name);
            for l in &p.levels {
                if l != "*"
                    && !targets
                        .iter()
                        .any(|t| covered(t) && t.levels.contains_key(l))
                {
                    return Err(self.invalid(
                        format!("{key}.levels"),
                        format!("none of the policy's targets has a level named `{l}`"),
                    ));
                }
            }
            if p.requesters.is_empty() {
                return Err(self.invalid(
                    format!("{key}.requesters"),
                    "name at least one group that may request",
                ));
            }
            let max_duration = self.duration(
                &format!("{key}.max_duration"),
                Some(&p.max_duration),
                Duration::ZERO,
            )?;
            self.check_span(&format!("{key}.max_duration"), max_duration)?;
            let auto_approve = match p.auto_approve {
                None => None,
                Some(a) => {
                    let akey = format!("{key}.auto_approve");
                    if a.groups.is_empty() {
                        return Err(self.invalid(
                            format!("{akey}.groups"),
                            "name at least one group whose requests are approved at once",
                        ));
                    }
                    let auto_max = self.duration(
                        &format!("{akey}.max_duration"),
                        Some(&a.max_duration),
                        Duration::ZERO,
                    )?;
                    self.check_span(&format!("{akey}.max_duration"), auto_max)?;
                    if auto_max > max_duration {
                        return Err(self.invalid(
                            format!("{akey}.max_duration"),
                            format!(
                                "`{}` is longer than the policy's max_duration `{}`",
                                a.max_duration, p.max_duration
                            ),
                        ));
                    }
                    Some(AutoApprove {
                        groups: a.groups,
                        max_duration: auto_max,
                    })
                }
            };
            if p.approvals == 0 {
                return Err(self.invalid(
                    format!("{key}.approvals"),
                    "must be at least 1 (use auto_approve for requests that need no approver)",
                ));
            }
            if p.approvers.is_empty() {
                return Err(self.invalid(
                    format!("{key}.approvers"),
                    "name at least one group that may approve",
                ));
            }
            policies.push(PolicyConfig {
                max_duration,
                name: p.name,
                targets: p.targets,
                levels: p.levels,
                requesters: p.requesters,
                approvals: p.approvals,
                approvers: p.approvers,
                auto_approve,
            });
        }
        let requests = RequestsConfig {
            pending_timeout: self.duration(
                "requests.pending_timeout",
                raw.requests.pending_timeout.as_deref(),
                Duration::from_secs(3600),
            )?,
            max_reason_chars: raw.requests.max_reason_chars.unwrap_or(1000),
            max_pending_per_identity: raw.requests.max_pending_per_identity.unwrap_or(10),
        };
        if requests.max_reason_chars == 0 || requests.max_pending_per_identity == 0 {
            return Err(self.invalid(
                "requests",
                "max_reason_chars and max_pending_per_identity must be at least 1",
            ));
        }
        if requests.pending_timeout.is_zero() || requests.pending_timeout > LONGEST_SPAN {
            return Err(self.invalid(
                "requests.pending_timeout",
                "must be more than 0s and at most 365 days",
            ));
        }
        let mut webhooks = Vec::new();
        for (i, w) in raw.webhooks.into_iter().enumerate() {
            let key = format!("webhooks[{i}]");
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(
                    self.invalid(format!("{key}.url"), "must be an http:// or https:// URL")
                );
            }
            webhooks.push(WebhookConfig {
                url: w.url,
                timeout: self.duration(
                    &format!("{key}.timeout"),
                    w.timeout.as_deref(),
                    Duration::from_secs(2),
                )?,
                retries: w.retries.unwrap_or(3),
            });
        }

        Ok(Config {
            source: self.path.to_owned(),
            data_dir,
            listen,
            tls,
            audit,
            limits,
            identities,
            targets,
            policies,
            requests,
            webhooks,
        })
    }
}
