//! The usual test proxy: jitgate in front of one throwaway server, with the
//! server's two accounts as the target's `read` and `write` levels, and the
//! few knobs the tests turn ([`JitgateOptions`]).

use std::path::PathBuf;

use super::config::JitgateConfig;

/// The target a proxy in front of a [`super::super::PgServer`] serves.
pub const PG_TARGET: &str = "demo-pg";
/// The target a proxy in front of a [`super::super::MariaDb`] serves.
pub const MYSQL_TARGET: &str = "demo-mysql";

/// The protocol of a throwaway server, and so of its target and listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Postgres,
    Mysql,
}

impl Protocol {
    /// The target's name in the config.
    pub fn target(self) -> &'static str {
        match self {
            Protocol::Postgres => PG_TARGET,
            Protocol::Mysql => MYSQL_TARGET,
        }
    }

    /// `protocol = …` in a `[[targets]]` table.
    fn name(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
        }
    }
}

/// A throwaway server jitgate can stand in front of. Both kinds hold
/// database `app` with table `items`, a read-only account `jg_read` and an
/// account `jg_write` that may change `app`.
pub trait Upstream {
    fn protocol(&self) -> Protocol;
    fn port(&self) -> u16;
    fn read_password(&self) -> &str;
    fn write_password(&self) -> &str;
}

/// What to vary in a test's jitgate config.
#[derive(Debug, Clone)]
pub struct JitgateOptions {
    pub tls_require: bool,
    /// `limits.handshake_timeout`, e.g. "1s".
    pub handshake_timeout: Option<String>,
    pub max_message_bytes: Option<usize>,
    /// Point the target at this port instead of the server's (a dead port, say).
    pub upstream_port: Option<u16>,
    /// `audit.fsync`: "always" or an interval.
    pub audit_fsync: Option<String>,
    /// Give jitgate this password for the `write` level instead of the real one.
    pub write_password_override: Option<String>,
    pub max_pending_handshakes: Option<usize>,
    pub max_sessions: Option<usize>,
    /// `limits.max_login_failures`; the harness default is high, so tests that
    /// fail logins on purpose do not lock each other out.
    pub max_login_failures: Option<u32>,
    /// `limits.login_failure_window`, e.g. "3s".
    pub login_failure_window: Option<String>,
    /// `limits.first_message_timeout`, e.g. "2s".
    pub first_message_timeout: Option<String>,
    /// `limits.max_pending_handshakes_per_address`.
    pub max_pending_handshakes_per_address: Option<usize>,
    /// Raw TOML lines appended to `[limits]` (`admin_max_connections = 4`, say).
    pub extra_limits: String,
    /// Raw TOML appended to the config: `[[policies]]` tables, say.
    pub policies: String,
    /// `requests.pending_timeout`, e.g. "2s".
    pub pending_timeout: Option<String>,
    /// One `[[webhooks]]` table per URL.
    pub webhooks: Vec<String>,
    /// `audit.path`, instead of `data/audit.log` in jitgate's directory.
    pub audit_path: Option<PathBuf>,
    /// `allow_privileged_read_account` on the `read` level.
    pub allow_privileged_read_account: bool,
    /// `listen.mysql_server_version`.
    pub mysql_server_version: Option<String>,
}

impl Default for JitgateOptions {
    fn default() -> Self {
        JitgateOptions {
            tls_require: true,
            handshake_timeout: None,
            max_message_bytes: None,
            upstream_port: None,
            audit_fsync: None,
            write_password_override: None,
            max_pending_handshakes: None,
            max_sessions: None,
            max_login_failures: None,
            login_failure_window: None,
            first_message_timeout: None,
            max_pending_handshakes_per_address: None,
            extra_limits: String::new(),
            policies: String::new(),
            pending_timeout: None,
            webhooks: Vec::new(),
            audit_path: None,
            allow_privileged_read_account: false,
            mysql_server_version: None,
        }
    }
}

impl JitgateOptions {
    /// The config of a proxy in front of `upstream` with these options.
    pub fn config(&self, upstream: &impl Upstream) -> JitgateConfig {
        let protocol = upstream.protocol();
        let write_password = self
            .write_password_override
            .clone()
            .unwrap_or_else(|| upstream.write_password().to_owned());
        let read_password = upstream.read_password().to_owned();
        JitgateConfig {
            postgres_listener: protocol == Protocol::Postgres,
            mysql_listener: protocol == Protocol::Mysql,
            mysql_server_version: self.mysql_server_version.clone(),
            tls_require: self.tls_require,
            audit_path: self.audit_path.clone(),
            audit_fsync: self
                .audit_fsync
                .clone()
                .unwrap_or_else(|| "100ms".to_owned()),
            limits: self.limits(),
            targets: self.target(protocol, self.upstream_port.unwrap_or(upstream.port())),
            has_read_level: true,
            extra: self.extra(),
            env: vec![
                ("JG_TEST_READ_PW".to_owned(), read_password.clone()),
                ("JG_TEST_WRITE_PW".to_owned(), write_password.clone()),
            ],
            upstream_secrets: vec![read_password, write_password],
            ..JitgateConfig::default()
        }
    }

    fn limits(&self) -> String {
        let mut limits = format!(
            "handshake_timeout = \"{}\"\n\
             max_pending_handshakes = {}\n\
             max_sessions = {}\n\
             max_message_bytes = {}\n\
             max_login_failures = {}\n\
             login_failure_window = \"{}\"\n",
            self.handshake_timeout.as_deref().unwrap_or("10s"),
            self.max_pending_handshakes.unwrap_or(256),
            self.max_sessions.unwrap_or(10_000),
            self.max_message_bytes.unwrap_or(64 << 20),
            self.max_login_failures.unwrap_or(1000),
            self.login_failure_window.as_deref().unwrap_or("1m"),
        );
        if let Some(t) = &self.first_message_timeout {
            limits.push_str(&format!("first_message_timeout = \"{t}\"\n"));
        }
        if let Some(n) = self.max_pending_handshakes_per_address {
            limits.push_str(&format!("max_pending_handshakes_per_address = {n}\n"));
        }
        limits.push_str(&self.extra_limits);
        limits
    }

    /// The one target: the server's database `app`, its two accounts as the
    /// `read` and `write` levels, their passwords in the environment.
    fn target(&self, protocol: Protocol, port: u16) -> String {
        format!(
            "[[targets]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\naddress = \"127.0.0.1:{port}\"\n\
             database = \"app\"\ntls = \"require\"\n\
             \n[targets.levels.read]\nuser = \"jg_read\"\npassword_env = \"JG_TEST_READ_PW\"\nread_only = true\n\
             allow_privileged_read_account = {allow}\n\
             \n[targets.levels.write]\nuser = \"jg_write\"\npassword_env = \"JG_TEST_WRITE_PW\"\n",
            name = protocol.target(),
            protocol = protocol.name(),
            allow = self.allow_privileged_read_account,
        )
    }

    fn extra(&self) -> String {
        let mut extra = String::new();
        if let Some(timeout) = &self.pending_timeout {
            extra.push_str(&format!("\n[requests]\npending_timeout = \"{timeout}\"\n"));
        }
        for url in &self.webhooks {
            extra.push_str(&format!("\n[[webhooks]]\nurl = \"{url}\"\n"));
        }
        extra.push('\n');
        extra.push_str(&self.policies);
        extra
    }
}
