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

/// Where an upstream password comes from. The value itself is only read at
/// connect time and never stored in the config model, so it cannot be printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// No password (trust authentication upstream).
    None,
    Env(String),
    File(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SecretSource {
    /// Read the secret now. `Ok(None)` means there is none (trust).
    pub fn read(&self) -> Result<Option<String>, SecretError> {
        match self {
            SecretSource::None => Ok(None),
            SecretSource::Env(var) => std::env::var(var)
                .map(Some)
                .map_err(|_| SecretError::MissingEnv(var.clone())),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                }),
        }
    }
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

// ---- the raw TOML shape -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: String,
    listen: RawListen,
    tls: RawTls,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    identities: Vec<RawIdentity>,
    #[serde(default)]
    targets: Vec<RawTarget>,
    #[serde(default)]
    policies: Vec<RawPolicy>,
    #[serde(default)]
    requests: RawRequests,
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: String,
    targets: Vec<String>,
    levels: Vec<String>,
    requesters: Vec<String>,
    max_duration: String,
    #[serde(default = "one")]
    approvals: u32,
    #[serde(default)]
    approvers: Vec<String>,
    auto_approve: Option<RawAutoApprove>,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAutoApprove {
    groups: Vec<String>,
    max_duration: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRequests {
    pending_timeout: Option<String>,
    max_reason_chars: Option<usize>,
    max_pending_per_identity: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    timeout: Option<String>,
    retries: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    postgres: Option<String>,
    mysql: Option<String>,
    mysql_server_version: Option<String>,
    admin: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: String,
    key: String,
    #[serde(default = "yes")]
    require: bool,
    #[serde(default)]
    self_signed_if_missing: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    path: Option<String>,
    fsync: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    handshake_timeout: Option<String>,
    first_message_timeout: Option<String>,
    max_pending_handshakes: Option<usize>,
    max_pending_handshakes_per_address: Option<usize>,
    max_sessions: Option<usize>,
    max_message_bytes: Option<usize>,
    max_classified_statement_bytes: Option<usize>,
    max_login_failures: Option<u32>,
    login_failure_window: Option<String>,
    session_threads: Option<usize>,
    admin_max_connections: Option<usize>,
    admin_header_read_timeout: Option<String>,
    admin_idle_timeout: Option<String>,
    admin_request_timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    name: String,
    #[serde(default)]
    groups: Vec<String>,
    secret: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: String,
    protocol: Protocol,
    address: String,
    database: String,
    #[serde(default)]
    tls: Option<String>,
    tls_ca_file: Option<String>,
    tls_server_name: Option<String>,
    connect_timeout: Option<String>,
    levels: BTreeMap<String, RawLevel>,
    demo_create_read_accounts_with: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLevel {
    user: String,
    password_env: Option<String>,
    password_file: Option<String>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    allow_privileged_read_account: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest config that loads, with `listen` keys and further tables added.
    fn config_with(listen: &str, tables: &str) -> String {
        format!(
            "data_dir = \"data\"\n[listen]\npostgres = \"127.0.0.1:6432\"\n{listen}\n\
             [tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n{tables}\n"
        )
    }

    /// Why `config_with(listen, tables)` is refused, without the file name.
    fn refusal(listen: &str, tables: &str) -> String {
        let path = Path::new("/etc/jitgate/jitgate.toml");
        let e = Config::from_toml(&config_with(listen, tables), path)
            .expect_err(&format!("{listen} {tables} must be refused"))
            .to_string();
        e.strip_prefix("/etc/jitgate/jitgate.toml: ")
            .unwrap_or(&e)
            .to_owned()
    }

    const TARGET: &str = "[[targets]]\nname = \"t\"\nprotocol = \"postgres\"\n\
        address = \"db:5432\"\ndatabase = \"d\"\n";
    const LEVELS: &str = "[targets.levels.read]\nuser = \"r\"\nread_only = true\n\
        [targets.levels.write]\nuser = \"w\"\n";
    const POLICY: &str = "name = \"p\"\ntargets = [\"t\"]\nlevels = [\"read\"]\n\
        requesters = [\"dev\"]\nmax_duration = \"1h\"\napprovers = [\"lead\"]\n";

    /// Target `t` (levels `read` and `write`) and one policy of `fields`.
    fn policy(fields: &str) -> String {
        format!("{TARGET}{LEVELS}[[policies]]\n{fields}\n")
    }

    fn identity(name: &str, secret: &str) -> String {
        format!("[[identities]]\nname = \"{name}\"\nsecret = \"{secret}\"\n")
    }

    #[test]
    fn every_refusal_names_its_key_and_why() {
        let verifier = crate::identity::ScramVerifier::generate("s3cret");
        let levels_of_zero = "[limits]\nmax_pending_handshakes = 0";
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "mysql = \"localhost:3306\"",
                String::new(),
                "`listen.mysql`: `localhost:3306` is not an address like \"127.0.0.1:6432\"",
            ),
            (
                "admin = \"127.0.0.1\"",
                String::new(),
                "`listen.admin`: `127.0.0.1` is not an address like \"127.0.0.1:6432\"",
            ),
            (
                "mysql_server_version = \"10.11\\t\"",
                String::new(),
                "`listen.mysql_server_version`: must be 1 to 60 printable ASCII characters, \
                 like \"10.11.19-MariaDB\"",
            ),
            (
                "",
                "[audit]\nfsync = \"sometimes\"".into(),
                "`audit.fsync`: `sometimes` must be \"always\" or an interval like \"100ms\"",
            ),
            (
                "",
                levels_of_zero.into(),
                "`limits`: max_pending_handshakes, max_pending_handshakes_per_address and \
                 max_sessions must be at least 1",
            ),
            (
                "",
                "[limits]\nmax_pending_handshakes_per_address = 0".into(),
                "`limits`: max_pending_handshakes, max_pending_handshakes_per_address and \
                 max_sessions must be at least 1",
            ),
            (
                "",
                "[limits]\nmax_sessions = 0".into(),
                "`limits`: max_pending_handshakes, max_pending_handshakes_per_address and \
                 max_sessions must be at least 1",
            ),
            (
                "",
                "[limits]\nfirst_message_timeout = \"0s\"".into(),
                "`limits.first_message_timeout`: must be more than 0s",
            ),
            (
                "",
                "[limits]\nadmin_header_read_timeout = \"0s\"".into(),
                "`limits.admin_header_read_timeout`: must be more than 0s",
            ),
            (
                "",
                "[limits]\nadmin_idle_timeout = \"0s\"".into(),
                "`limits.admin_idle_timeout`: must be more than 0s",
            ),
            (
                "",
                "[limits]\nadmin_request_timeout = \"0s\"".into(),
                "`limits.admin_request_timeout`: must be more than 0s",
            ),
            (
                "",
                "[limits]\nadmin_max_connections = 0".into(),
                "`limits.admin_max_connections`: must be at least 1",
            ),
            (
                "",
                "[limits]\nmax_classified_statement_bytes = 1023".into(),
                "`limits.max_classified_statement_bytes`: must be at least 1024",
            ),
            (
                "",
                "[limits]\nmax_message_bytes = 1023".into(),
                "`limits.max_message_bytes`: must be at least 1024",
            ),
            (
                "",
                identity("", &verifier),
                "`identities[0].name`: must not be empty",
            ),
            (
                "",
                identity("a", &verifier) + &identity("a", &verifier),
                "`identities[1].name`: identity `a` is defined twice",
            ),
            (
                "",
                identity("a", "hunter2"),
                "`identities[0].secret`: must be a SCRAM-SHA-256 verifier (generate one with \
                 `jitgate passwd`)",
            ),
            (
                "",
                format!("{TARGET}{LEVELS}{TARGET}{LEVELS}"),
                "`targets[1].name`: target `t` is defined twice",
            ),
            (
                "",
                format!("{TARGET}tls = \"verify-full\"\n{LEVELS}"),
                "`targets[0].tls_ca_file`: is required with tls = \"verify-full\"",
            ),
            (
                "",
                format!("{TARGET}tls = \"prefer\"\n{LEVELS}"),
                "`targets[0].tls`: `prefer` must be one of \"disable\", \"require\", \
                 \"verify-full\"",
            ),
            (
                "",
                format!("{TARGET}levels = {{}}\n"),
                "`targets[0].levels`: a target needs at least one level",
            ),
            (
                "",
                format!("{TARGET}{LEVELS}password_env = \"P\"\npassword_file = \"p\"\n"),
                "`targets[0].levels.write`: set password_env or password_file, not both",
            ),
            (
                "",
                policy(&format!("{POLICY}[[policies]]\n{POLICY}")),
                "`policies[1].name`: policy `p` is defined twice",
            ),
            (
                "",
                policy(&POLICY.replace("\"p\"", "\" \"")),
                "`policies[0].name`: must not be empty",
            ),
            (
                "",
                policy(&POLICY.replace("[\"t\"]", "[]")),
                "`policies[0].targets`: name at least one target (or \"*\" for all)",
            ),
            (
                "",
                policy(&POLICY.replace("[\"t\"]", "[\"u\"]")),
                "`policies[0].targets`: no target is named `u`",
            ),
            (
                "",
                policy(&POLICY.replace("[\"read\"]", "[]")),
                "`policies[0].levels`: name at least one level (or \"*\" for all)",
            ),
            (
                "",
                policy(&POLICY.replace("[\"read\"]", "[\"admin\"]")),
                "`policies[0].levels`: none of the policy's targets has a level named `admin`",
            ),
            (
                "",
                policy(&POLICY.replace("[\"dev\"]", "[]")),
                "`policies[0].requesters`: name at least one group that may request",
            ),
            (
                "",
                policy(&POLICY.replace("\"1h\"", "\"500ms\"")),
                "`policies[0].max_duration`: must be between 1s and 365 days",
            ),
            (
                "",
                policy(&POLICY.replace("\"1h\"", "\"366days\"")),
                "`policies[0].max_duration`: must be between 1s and 365 days",
            ),
            (
                "",
                policy(&format!(
                    "{POLICY}auto_approve = {{ groups = [], max_duration = \"15m\" }}"
                )),
                "`policies[0].auto_approve.groups`: name at least one group whose requests \
                 are approved at once",
            ),
            (
                "",
                policy(&format!(
                    "{POLICY}auto_approve = {{ groups = [\"oncall\"], max_duration = \"0s\" }}"
                )),
                "`policies[0].auto_approve.max_duration`: must be between 1s and 365 days",
            ),
            (
                "",
                policy(&format!(
                    "{POLICY}auto_approve = {{ groups = [\"oncall\"], max_duration = \"2h\" }}"
                )),
                "`policies[0].auto_approve.max_duration`: `2h` is longer than the policy's \
                 max_duration `1h`",
            ),
            (
                "",
                policy(&format!("{POLICY}approvals = 0")),
                "`policies[0].approvals`: must be at least 1 (use auto_approve for requests \
                 that need no approver)",
            ),
            (
                "",
                policy(&POLICY.replace("approvers = [\"lead\"]", "")),
                "`policies[0].approvers`: name at least one group that may approve",
            ),
            (
                "",
                "[requests]\nmax_reason_chars = 0".into(),
                "`requests`: max_reason_chars and max_pending_per_identity must be at least 1",
            ),
            (
                "",
                "[requests]\nmax_pending_per_identity = 0".into(),
                "`requests`: max_reason_chars and max_pending_per_identity must be at least 1",
            ),
            (
                "",
                "[requests]\npending_timeout = \"0s\"".into(),
                "`requests.pending_timeout`: must be more than 0s and at most 365 days",
            ),
            (
                "",
                "[requests]\npending_timeout = \"366days\"".into(),
                "`requests.pending_timeout`: must be more than 0s and at most 365 days",
            ),
            (
                "",
                "[[webhooks]]\nurl = \"ftp://x\"".into(),
                "`webhooks[0].url`: must be an http:// or https:// URL",
            ),
        ];
        for (listen, tables, want) in cases {
            assert_eq!(refusal(listen, &tables), want, "{listen} {tables}");
        }
    }

    #[test]
    fn a_value_that_is_not_a_duration_is_refused_by_key() {
        let not_a_duration = "is not a duration like \"10s\" or \"250ms\": ";
        let cases: Vec<(String, &str)> = vec![
            (
                "[limits]\nhandshake_timeout = \"10\"".into(),
                "limits.handshake_timeout",
            ),
            (
                "[limits]\nfirst_message_timeout = \"x\"".into(),
                "limits.first_message_timeout",
            ),
            (
                "[limits]\nlogin_failure_window = \"x\"".into(),
                "limits.login_failure_window",
            ),
            (
                "[limits]\nadmin_header_read_timeout = \"x\"".into(),
                "limits.admin_header_read_timeout",
            ),
            (
                "[limits]\nadmin_idle_timeout = \"x\"".into(),
                "limits.admin_idle_timeout",
            ),
            (
                "[limits]\nadmin_request_timeout = \"x\"".into(),
                "limits.admin_request_timeout",
            ),
            (
                format!("{TARGET}connect_timeout = \"x\"\n{LEVELS}"),
                "targets[0].connect_timeout",
            ),
            (
                policy(&POLICY.replace("\"1h\"", "\"x\"")),
                "policies[0].max_duration",
            ),
            (
                policy(&format!(
                    "{POLICY}auto_approve = {{ groups = [\"oncall\"], max_duration = \"x\" }}"
                )),
                "policies[0].auto_approve.max_duration",
            ),
            (
                "[requests]\npending_timeout = \"x\"".into(),
                "requests.pending_timeout",
            ),
            (
                "[[webhooks]]\nurl = \"https://x\"\ntimeout = \"x\"".into(),
                "webhooks[0].timeout",
            ),
        ];
        for (tables, key) in cases {
            let e = refusal("", &tables);
            let value = if key == "limits.handshake_timeout" {
                "10"
            } else {
                "x"
            };
            assert!(
                e.starts_with(&format!("`{key}`: `{value}` {not_a_duration}")),
                "{tables}: {e}"
            );
        }
    }

    /// Where one value has several faults, or several tables do, the
    /// operator hears of them in the order they appear in the file.
    #[test]
    fn the_first_fault_in_file_order_is_the_one_reported() {
        let verifier = crate::identity::ScramVerifier::generate("s3cret");
        let first_key = |listen: &str, tables: &str| {
            let e = refusal(listen, tables);
            e[1..].split_once('`').expect(&e).0.to_owned()
        };
        assert_eq!(
            first_key("mysql = \"x\"\nadmin = \"x\"", ""),
            "listen.mysql"
        );
        assert_eq!(
            first_key(
                "",
                "[limits]\nhandshake_timeout = \"x\"\nsession_threads = 0"
            ),
            "limits.handshake_timeout"
        );
        assert_eq!(
            first_key("", "[limits]\nsession_threads = 0\nmax_sessions = 0"),
            "limits.session_threads"
        );
        assert_eq!(
            first_key(
                "",
                "[limits]\nmax_sessions = 0\nfirst_message_timeout = \"0s\""
            ),
            "limits"
        );
        assert_eq!(
            first_key(
                "",
                "[limits]\nadmin_request_timeout = \"0s\"\nadmin_max_connections = 0"
            ),
            "limits.admin_request_timeout"
        );
        assert_eq!(
            first_key("", &identity("", "hunter2")),
            "identities[0].name"
        );
        assert_eq!(
            first_key("", &format!("{TARGET}tls = \"prefer\"\nlevels = {{}}\n")),
            "targets[0].tls"
        );
        assert_eq!(
            first_key(
                "",
                &format!(
                    "{TARGET}connect_timeout = \"x\"\n{LEVELS}password_env = \"P\"\n\
                     password_file = \"p\"\n"
                )
            ),
            "targets[0].levels.write"
        );
        assert_eq!(
            first_key(
                "",
                &format!(
                    "{TARGET}connect_timeout = \"x\"\ndemo_create_read_accounts_with = \"nope\"\n{LEVELS}"
                )
            ),
            "targets[0].demo_create_read_accounts_with"
        );
        assert_eq!(
            first_key(
                "",
                &policy(
                    &POLICY
                        .replace("[\"t\"]", "[\"u\"]")
                        .replace("[\"read\"]", "[]")
                )
            ),
            "policies[0].targets"
        );
        assert_eq!(
            first_key(
                "",
                &policy(&format!(
                    "{POLICY}approvals = 0\nauto_approve = {{ groups = [], max_duration = \"1m\" }}"
                ))
            ),
            "policies[0].auto_approve.groups"
        );
        assert_eq!(
            first_key(
                "",
                "[requests]\npending_timeout = \"0s\"\nmax_reason_chars = 0"
            ),
            "requests"
        );

        // Every table broken at once: mend them one by one in file order.
        let mut listen = "admin = \"x\"".to_owned();
        let mut tables = [
            ("audit.fsync", "[audit]\nfsync = \"x\"\n".to_owned()),
            (
                "limits.max_message_bytes",
                "[limits]\nmax_message_bytes = 1\n".to_owned(),
            ),
            ("identities[0].secret", identity("a", "hunter2")),
            ("targets[0].levels", format!("{TARGET}levels = {{}}\n")),
            (
                "requests.pending_timeout",
                "[requests]\npending_timeout = \"0s\"\n".to_owned(),
            ),
            ("webhooks[0].url", "[[webhooks]]\nurl = \"x\"\n".to_owned()),
        ];
        let all =
            |tables: &[(&str, String)]| tables.iter().map(|(_, t)| t.as_str()).collect::<String>();
        assert_eq!(first_key(&listen, &all(&tables)), "listen.admin");
        listen.clear();
        for i in 0..tables.len() {
            assert_eq!(first_key(&listen, &all(&tables)), tables[i].0);
            tables[i].1 = match i {
                2 => identity("a", &verifier),
                3 => format!("{TARGET}{LEVELS}"),
                _ => String::new(),
            };
        }
        Config::from_toml(&config_with(&listen, &all(&tables)), Path::new("j.toml")).unwrap();
    }

    #[test]
    fn tables_left_out_take_their_defaults_and_paths_are_relative_to_the_file() {
        let c = Config::from_toml(
            &config_with(
                "",
                &format!("{TARGET}{LEVELS}[[webhooks]]\nurl = \"https://x\""),
            ),
            Path::new("/etc/jitgate/jitgate.toml"),
        )
        .unwrap();
        assert_eq!(c.source, Path::new("/etc/jitgate/jitgate.toml"));
        assert_eq!(c.data_dir, Path::new("/etc/jitgate/data"));
        assert_eq!(c.listen.postgres, Some("127.0.0.1:6432".parse().unwrap()));
        assert_eq!((c.listen.mysql, c.listen.admin), (None, None));
        assert_eq!(c.listen.mysql_server_version, None);
        assert_eq!(c.tls.cert, Path::new("/etc/jitgate/c.pem"));
        assert_eq!(c.tls.key, Path::new("/etc/jitgate/k.pem"));
        assert!(c.tls.require && !c.tls.self_signed_if_missing);
        assert_eq!(c.audit.path, Path::new("/etc/jitgate/data/audit.log"));
        assert_eq!(
            c.audit.fsync,
            FsyncPolicy::Interval(Duration::from_millis(100))
        );
        let l = &c.limits;
        assert_eq!(l.handshake_timeout, Duration::from_secs(10));
        assert_eq!(l.first_message_timeout, Duration::from_secs(3));
        assert_eq!(l.max_pending_handshakes, 256);
        assert_eq!(l.max_pending_handshakes_per_address, 32);
        assert_eq!(l.max_sessions, 10_000);
        assert_eq!(l.max_message_bytes, 64 << 20);
        assert_eq!(
            l.max_classified_statement_bytes,
            crate::sql::DEFAULT_MAX_CLASSIFIED_SQL_BYTES
        );
        assert_eq!(l.max_login_failures, 10);
        assert_eq!(l.login_failure_window, Duration::from_secs(60));
        assert_eq!(l.admin_max_connections, 128);
        assert_eq!(l.admin_header_read_timeout, Duration::from_secs(10));
        assert_eq!(l.admin_idle_timeout, Duration::from_secs(60));
        assert_eq!(l.admin_request_timeout, Duration::from_secs(30));
        assert!(c.identities.is_empty() && c.policies.is_empty());
        let t = c.target("t").unwrap();
        assert_eq!(t.tls, UpstreamTls::Disable);
        assert_eq!(t.connect_timeout, Duration::from_secs(5));
        assert_eq!(t.levels["write"].password, SecretSource::None);
        assert!(!t.levels["write"].read_only);
        assert_eq!(c.requests.pending_timeout, Duration::from_secs(3600));
        assert_eq!(c.requests.max_reason_chars, 1000);
        assert_eq!(c.requests.max_pending_per_identity, 10);
        assert_eq!(c.webhooks[0].timeout, Duration::from_secs(2));
        assert_eq!(c.webhooks[0].retries, 3);
    }

    #[test]
    fn every_key_set_is_read_as_given() {
        let verifier = crate::identity::ScramVerifier::generate("s3cret");
        let listen = "mysql = \"127.0.0.1:3307\"\nmysql_server_version = \"10.11.19-MariaDB\"\n\
                      admin = \"[::1]:8080\"";
        let tables = format!(
            "require = false\nself_signed_if_missing = true\n\
             [audit]\npath = \"/var/log/audit.log\"\nfsync = \"always\"\n\
             [limits]\nhandshake_timeout = \"1s\"\nfirst_message_timeout = \"2s\"\n\
             max_pending_handshakes = 3\nmax_pending_handshakes_per_address = 4\n\
             max_sessions = 5\nmax_message_bytes = 6000\n\
             max_classified_statement_bytes = 7000\nmax_login_failures = 8\n\
             login_failure_window = \"9s\"\nsession_threads = 2\nadmin_max_connections = 11\n\
             admin_header_read_timeout = \"12s\"\nadmin_idle_timeout = \"13s\"\n\
             admin_request_timeout = \"14s\"\n\
             {identity}\
             groups = [\"dev\"]\n\
             {TARGET}tls = \"verify-full\"\ntls_ca_file = \"ca.pem\"\n\
             tls_server_name = \"db.internal\"\nconnect_timeout = \"15s\"\n\
             [targets.levels.read]\nuser = \"r\"\nread_only = true\npassword_env = \"R\"\n\
             [targets.levels.write]\nuser = \"w\"\npassword_file = \"/run/w\"\n\
             [[targets]]\nname = \"m\"\nprotocol = \"mysql\"\naddress = \"db:3306\"\n\
             database = \"d\"\ntls = \"require\"\n[targets.levels.all]\nuser = \"a\"\n\
             password_file = \"secrets/a\"\n\
             [[policies]]\n{POLICY}approvals = 2\n\
             auto_approve = {{ groups = [\"oncall\"], max_duration = \"15m\" }}\n\
             [[policies]]\nname = \"any\"\ntargets = [\"*\"]\nlevels = [\"*\"]\n\
             requesters = [\"ops\"]\nmax_duration = \"365days\"\napprovers = [\"ops\"]\n\
             [requests]\npending_timeout = \"16m\"\nmax_reason_chars = 17\n\
             max_pending_per_identity = 18\n\
             [[webhooks]]\nurl = \"http://hook\"\ntimeout = \"19s\"\nretries = 0\n",
            identity = identity("alice", &verifier),
        );
        let c = Config::from_toml(&config_with(listen, &tables), Path::new("j.toml")).unwrap();
        assert_eq!(c.data_dir, Path::new("./data"));
        assert_eq!(c.listen.mysql, Some("127.0.0.1:3307".parse().unwrap()));
        assert_eq!(
            c.listen.mysql_server_version.as_deref(),
            Some("10.11.19-MariaDB")
        );
        assert_eq!(c.listen.admin, Some("[::1]:8080".parse().unwrap()));
        assert!(!c.tls.require && c.tls.self_signed_if_missing);
        assert_eq!(c.audit.path, Path::new("/var/log/audit.log"));
        assert_eq!(c.audit.fsync, FsyncPolicy::Always);
        let l = &c.limits;
        let secs = Duration::from_secs;
        assert_eq!(
            (
                l.handshake_timeout,
                l.first_message_timeout,
                l.login_failure_window
            ),
            (secs(1), secs(2), secs(9))
        );
        assert_eq!(
            (
                l.max_pending_handshakes,
                l.max_pending_handshakes_per_address,
                l.max_sessions
            ),
            (3, 4, 5)
        );
        assert_eq!(
            (l.max_message_bytes, l.max_classified_statement_bytes),
            (6000, 7000)
        );
        assert_eq!(
            (
                l.max_login_failures,
                l.session_threads,
                l.admin_max_connections
            ),
            (8, 2, 11)
        );
        assert_eq!(
            (
                l.admin_header_read_timeout,
                l.admin_idle_timeout,
                l.admin_request_timeout
            ),
            (secs(12), secs(13), secs(14))
        );
        let alice = c.identity("alice").unwrap();
        assert_eq!(
            (alice.groups.as_slice(), alice.secret.as_str()),
            (&["dev".to_owned()][..], verifier.as_str())
        );
        let t = c.target("t").unwrap();
        assert_eq!(t.protocol, Protocol::Postgres);
        assert_eq!((t.address.as_str(), t.database.as_str()), ("db:5432", "d"));
        assert_eq!(
            t.tls,
            UpstreamTls::VerifyFull {
                ca_file: "./ca.pem".into()
            }
        );
        assert_eq!(t.tls_server_name.as_deref(), Some("db.internal"));
        assert_eq!(t.connect_timeout, secs(15));
        assert_eq!(t.levels["read"].password, SecretSource::Env("R".into()));
        assert_eq!(
            t.levels["write"].password,
            SecretSource::File("/run/w".into())
        );
        let m = c.target("m").unwrap();
        assert_eq!(
            (m.protocol, &m.tls),
            (Protocol::Mysql, &UpstreamTls::Require)
        );
        assert_eq!(
            m.levels["all"].password,
            SecretSource::File("./secrets/a".into())
        );
        let p = &c.policies[0];
        assert_eq!((p.max_duration, p.approvals), (secs(3600), 2));
        let auto = p.auto_approve.as_ref().unwrap();
        assert_eq!(
            (auto.groups.as_slice(), auto.max_duration),
            (&["oncall".to_owned()][..], secs(900))
        );
        assert_eq!(c.policies[1].max_duration, secs(365 * 24 * 3600));
        assert_eq!(c.requests.pending_timeout, secs(960));
        assert_eq!(
            (
                c.requests.max_reason_chars,
                c.requests.max_pending_per_identity
            ),
            (17, 18)
        );
        assert_eq!(
            (
                c.webhooks[0].url.as_str(),
                c.webhooks[0].timeout,
                c.webhooks[0].retries
            ),
            ("http://hook", secs(19), 0)
        );
    }

    #[test]
    fn a_missing_file_and_unknown_keys_are_refused_with_the_parser_s_words() {
        let e = Config::load(Path::new("/nonexistent/jitgate.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot read config file /nonexistent/jitgate.toml: "),
            "{e}"
        );
        let e = refusal("", "[limits]\nsessions = 1");
        assert!(
            e.contains("unknown field `sessions`, expected one of `handshake_timeout`, "),
            "{e}"
        );
        let e = refusal("", "[[targets]]\nname = \"t\"\nprotocol = \"oracle\"");
        assert!(
            e.contains("unknown variant `oracle`, expected `postgres` or `mysql`"),
            "{e}"
        );
    }

    fn with_limits(limits: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "data_dir = \"data\"\n[listen]\npostgres = \"127.0.0.1:6432\"\n\
             [tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[limits]\n{limits}\n"
        );
        Config::from_toml(&text, Path::new("/etc/jitgate/jitgate.toml"))
    }

    fn with_target(address: &str, target: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "data_dir = \"data\"\n[listen]\npostgres = \"127.0.0.1:6432\"\n\
             [tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
             [[targets]]\nname = \"demo\"\nprotocol = \"postgres\"\naddress = \"{address}\"\n\
             database = \"postgres\"\n{target}\n"
        );
        Config::from_toml(&text, Path::new("/etc/jitgate/jitgate.toml"))
    }

    const DEMO_LEVELS: &str = "demo_create_read_accounts_with = \"write\"\n\
        [targets.levels.read]\nuser = \"jitgate_demo_read\"\nread_only = true\n\
        [targets.levels.write]\nuser = \"postgres\"\n";

    #[test]
    fn demo_read_accounts_are_only_created_on_this_machine() {
        for address in [
            "127.0.0.1:5432",
            "localhost:5432",
            "[::1]:5432",
            "127.0.0.2:1",
        ] {
            let c = with_target(address, DEMO_LEVELS).expect(address);
            assert_eq!(
                c.targets[0].demo_create_read_accounts_with.as_deref(),
                Some("write")
            );
        }
        for address in ["db.example.com:5432", "10.0.0.5:5432"] {
            let e = with_target(address, DEMO_LEVELS)
                .expect_err(address)
                .to_string();
            assert!(e.contains("not a loopback address"), "{e}");
        }
    }

    #[test]
    fn demo_read_accounts_need_a_writing_level_and_a_plain_name_of_their_own() {
        let e = |levels: &str| {
            with_target("127.0.0.1:5432", levels)
                .unwrap_err()
                .to_string()
        };
        assert!(
            e(&DEMO_LEVELS.replace("= \"write\"", "= \"admin\""))
                .contains("no level named `admin`")
        );
        assert!(e(&DEMO_LEVELS.replace("= \"write\"", "= \"read\"")).contains("is read-only"));
        assert!(
            e(&DEMO_LEVELS.replace("jitgate_demo_read", "postgres"))
                .contains("is the account of level `write`")
        );
        assert!(
            e(&DEMO_LEVELS.replace("jitgate_demo_read", "x'; DROP ROLE y; --"))
                .contains("letters, digits and _ only")
        );
        assert!(
            e(&DEMO_LEVELS.replace("read_only = true", "read_only = true\npassword_env = \"P\""))
                .contains("created without a password")
        );
    }

    #[test]
    fn allow_privileged_read_account_is_for_read_levels_only() {
        let read = "[targets.levels.read]\nuser = \"r\"\nread_only = true\n\
                    allow_privileged_read_account = true\n";
        let c = with_target("db:5432", read).unwrap();
        assert!(c.targets[0].levels["read"].allow_privileged_read_account);
        let write = "[targets.levels.write]\nuser = \"w\"\nallow_privileged_read_account = true\n";
        let e = with_target("db:5432", write).unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc/jitgate/jitgate.toml: `targets[0].levels.write.allow_privileged_read_account`: \
             only applies to a level with read_only = true"
        );
    }

    #[test]
    fn session_threads_default_to_half_the_cpus_and_can_be_set() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let c = with_limits("").unwrap();
        assert_eq!(c.limits.session_threads, (cpus / 2).max(1));
        let c = with_limits("session_threads = 3").unwrap();
        assert_eq!(c.limits.session_threads, 3);
    }

    #[test]
    fn zero_or_absurd_session_threads_are_refused_by_key() {
        for bad in ["session_threads = 0", "session_threads = 100000"] {
            let e = with_limits(bad).expect_err(bad).to_string();
            assert_eq!(
                e,
                "/etc/jitgate/jitgate.toml: `limits.session_threads`: must be between 1 and 1024",
                "{bad}"
            );
        }
    }
}
