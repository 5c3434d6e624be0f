//! The configuration jitgate runs with, as the rest of the code reads it.
//!
//! One TOML file describes listeners, TLS, the audit log, limits,
//! identities, targets, policies, requests and webhooks. Loading it either
//! yields a fully validated [`Config`] or one [`ConfigError`] that names the
//! file, the key and what is wrong, so an operator can fix it without
//! reading code. Relative paths are resolved against the directory of the
//! config file.
//!
//! This file holds the validated types and how to load them; the file's raw
//! shape is in `raw`, the checks (one function per table) in `validate`, and
//! where upstream passwords come from in `secret`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod raw;
mod secret;
#[cfg(test)]
mod tests;
mod validate;

use raw::RawConfig;
pub(crate) use secret::SecretSource;
pub(crate) use validate::oidc::issuer_scheme_ok;

/// Where a TOML error is and what it says, without the offending line: the
/// parser quotes it, and a line that should not be there may hold a secret
/// (a store URL with its password where a `url_env` belongs, say).
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

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
    pub(crate) source: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) listen: Listen,
    pub(crate) tls: TlsConfig,
    /// The admin listener's address as people reach it, and its TLS.
    pub(crate) admin: AdminConfig,
    pub(crate) audit: AuditConfig,
    pub limits: Limits,
    pub identities: Vec<IdentityConfig>,
    /// The identity provider people sign on through, if any.
    pub(crate) oidc: Option<OidcConfig>,
    pub targets: Vec<TargetConfig>,
    pub(crate) policies: Vec<PolicyConfig>,
    pub(crate) requests: RequestsConfig,
    pub(crate) webhooks: Vec<WebhookConfig>,
    pub(crate) store: StoreConfig,
}

/// The config in force: read whole by whoever needs it, swapped whole by
/// a reload (`jitgate reload`, SIGHUP), never half of one and half of another.
#[derive(Debug)]
pub struct Current(std::sync::RwLock<std::sync::Arc<Config>>);

impl Current {
    pub fn new(config: std::sync::Arc<Config>) -> Current {
        Current(std::sync::RwLock::new(config))
    }

    pub fn get(&self) -> std::sync::Arc<Config> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, config: std::sync::Arc<Config>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    }
}

/// Where requests, grants and the fleet's sessions are kept (`[store]`).
#[derive(Debug, Clone)]
pub(crate) struct StoreConfig {
    pub(crate) kind: StoreKind,
    /// This proxy's name: shown with its sessions, written with its events.
    pub(crate) proxy_name: String,
}

#[derive(Debug, Clone)]
pub(crate) enum StoreKind {
    /// The journal in `data_dir`: one proxy.
    File,
    /// A PostgreSQL database shared by every proxy of a fleet.
    Postgres(PgStoreConfig),
}

#[derive(Debug, Clone)]
pub(crate) struct PgStoreConfig {
    /// Where the connection URL (with its password) is read at start; the
    /// URL itself never enters the config model.
    pub(crate) url: SecretSource,
    /// With no contact for this long, the proxy ends its sessions and
    /// refuses logins until the store is back.
    pub(crate) fail_closed_after: Duration,
    /// `Some(ca)`: TLS, the server's certificate checked against the CA
    /// file and the URL's host name (verify-full). `None`: plain TCP.
    pub(crate) tls_ca_file: Option<PathBuf>,
}

/// The OpenID Connect provider people sign on through (`[oidc]`).
#[derive(Debug, Clone)]
pub(crate) struct OidcConfig {
    /// Exactly as the provider's discovery document names itself.
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    /// Read when talking to the provider; never part of the model.
    pub(crate) client_secret: SecretSource,
    /// The ID token claim that is a person's jitgate name (`email`, say).
    pub(crate) username_claim: String,
    /// The claim listing a person's groups, which the policies read.
    pub(crate) groups_claim: String,
    pub(crate) scopes: Vec<String>,
    /// How long an issued credential lives.
    pub(crate) credential_ttl: Duration,
    /// Leeway for the ID token's `exp` and `iat` against jitgate's clock.
    pub(crate) clock_skew: Duration,
    /// Live credentials one person may hold; a sign-on beyond it ends the oldest.
    pub(crate) max_credentials_per_person: usize,
    /// CA of the provider's TLS certificate, when the public roots do not do.
    pub(crate) ca_file: Option<PathBuf>,
    /// Offer `jitgate login --device` (RFC 8628).
    pub(crate) device_flow: bool,
}

/// Who may request which targets and levels, for how long, and who approves.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub(crate) name: String,
    /// Target names; `"*"` matches every target.
    pub(crate) targets: Vec<String>,
    /// Level names; `"*"` matches every level.
    pub(crate) levels: Vec<String>,
    /// Groups whose members may request under this policy.
    pub(crate) requesters: Vec<String>,
    pub(crate) max_duration: Duration,
    /// Distinct approvals needed (at least 1).
    pub(crate) approvals: u32,
    /// Groups whose members may approve or deny.
    pub(crate) approvers: Vec<String>,
    pub(crate) auto_approve: Option<AutoApprove>,
}

/// Requests from these groups up to `max_duration` are approved at once
/// (on-call break-glass); still audited and announced.
#[derive(Debug, Clone)]
pub(crate) struct AutoApprove {
    pub(crate) groups: Vec<String>,
    pub(crate) max_duration: Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct RequestsConfig {
    /// A pending request that nobody decides within this time expires.
    pub(crate) pending_timeout: Duration,
    /// Longest reason (of a request or a direct grant) or decision comment,
    /// in characters: they are copied into the journal, the audit log, every
    /// listing and every webhook.
    pub(crate) max_reason_chars: usize,
    /// Pending requests one identity may have at once.
    pub(crate) max_pending_per_identity: usize,
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL that receives a JSON event (with a Slack-compatible `text`).
    pub(crate) url: String,
    pub(crate) timeout: Duration,
    /// Further attempts after a failed one.
    pub(crate) retries: u32,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub(crate) postgres: Option<SocketAddr>,
    /// MySQL/MariaDB clients (`mariadb -h … -P <port> <target>`).
    pub(crate) mysql: Option<SocketAddr>,
    /// The server version the MySQL listener announces; by default the
    /// first MySQL target's own (see `wire/mysql/announce.rs`).
    pub(crate) mysql_server_version: Option<String>,
    pub(crate) admin: Option<SocketAddr>,
}

/// `[admin]`: how people and webhooks reach the admin listener (the API
/// and the approver page).
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// `http(s)://host[:port]` as browsers and chat reach it, no trailing
    /// slash: the page's sign-on redirect and webhook links start with it.
    /// Without it, `http(s)://<listen.admin>` when that is one address.
    pub(crate) url: Option<String>,
    /// The admin listener serves TLS with this certificate and key.
    pub(crate) tls: Option<AdminTls>,
}

#[derive(Debug, Clone)]
pub struct AdminTls {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl Config {
    /// Where people reach the admin listener: `admin.url`, or the listener's
    /// own address when it is a single one (not 0.0.0.0 or ::).
    pub(crate) fn admin_url(&self) -> Option<String> {
        if let Some(url) = &self.admin.url {
            return Some(url.clone());
        }
        let addr = self.listen.admin.filter(|a| !a.ip().is_unspecified())?;
        let scheme = if self.admin.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Some(format!("{scheme}://{addr}"))
    }

    /// People reach the admin listener over HTTPS (its own TLS, or a TLS
    /// proxy in front of it): the page's cookies are then `Secure`.
    pub(crate) fn admin_over_https(&self) -> bool {
        self.admin.tls.is_some()
            || self
                .admin
                .url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
    }
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    /// Refuse clients that do not start TLS.
    pub(crate) require: bool,
    /// Create a self-signed pair at `cert`/`key` when they do not exist (dev only).
    pub(crate) self_signed_if_missing: bool,
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
    pub(crate) handshake_timeout: Duration,
    /// A client's first message (PostgreSQL startup or SSLRequest, MySQL
    /// handshake response or SSLRequest) must arrive within this time; until
    /// it does, the connection holds only a slot of its address.
    pub(crate) first_message_timeout: Duration,
    /// Handshakes in progress, counted from the client's first message, so
    /// silent connections cannot take the slots of clients that speak.
    pub(crate) max_pending_handshakes: usize,
    /// Handshakes in progress from one client address (IPv6: one /64),
    /// silent or not, across the PostgreSQL and MySQL listeners.
    pub(crate) max_pending_handshakes_per_address: usize,
    pub(crate) max_sessions: usize,
    pub max_message_bytes: usize,
    /// The longest statement text the classifier reads; a longer one is
    /// unknown (refused on read levels). Texts over 8 KiB are classified on
    /// a bounded blocking pool, not on the session threads.
    pub(crate) max_classified_statement_bytes: usize,
    /// Failed logins allowed per identity and per client address in `login_failure_window`.
    pub(crate) max_login_failures: u32,
    pub(crate) login_failure_window: Duration,
    /// Threads that run the proxied sessions (see `wire::workers`); by
    /// default half the CPUs the process may use, at least one.
    pub(crate) session_threads: usize,
    /// Open admin-API connections; more are answered 503 and closed, so
    /// the API cannot take the descriptors the database listeners need.
    pub(crate) admin_max_connections: usize,
    /// An admin-API client must send a request's headers within this time
    /// (also while a kept-alive connection waits for its next request).
    pub(crate) admin_header_read_timeout: Duration,
    /// An admin-API connection with no bytes either way for this long is closed.
    pub(crate) admin_idle_timeout: Duration,
    /// An admin-API request must be read (body included) and answered
    /// within this time, or it gets 408.
    pub(crate) admin_request_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub(crate) name: String,
    pub(crate) groups: Vec<String>,
    /// SCRAM-SHA-256 verifier in PostgreSQL's format
    /// (`SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`).
    pub(crate) secret: String,
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
    pub(crate) protocol: Protocol,
    /// `host:port` as given; resolved at connect time.
    pub(crate) address: String,
    pub(crate) database: String,
    pub(crate) tls: UpstreamTls,
    /// Host name checked against the server certificate with `verify-full`.
    pub(crate) tls_server_name: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub levels: BTreeMap<String, LevelConfig>,
    /// DEMO ONLY (`demo_create_read_accounts_with`): at start, log in as
    /// this level's account and create the account of every `read_only`
    /// level on the server (read-only, no password), if missing. Only for a
    /// loopback address.
    pub(crate) demo_create_read_accounts_with: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LevelConfig {
    pub user: String,
    pub(crate) password: SecretSource,
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
    pub(crate) fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: parse_message(text, &e),
        })?;
        validate::validate(raw, path)
    }

    pub(crate) fn target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.name == name)
    }

    pub(crate) fn identity(&self, name: &str) -> Option<&IdentityConfig> {
        self.identities.iter().find(|i| i.name == name)
    }
}
