//! A test proxy's `jitgate.toml`: the kit's identities, the listeners on
//! free ports, and whatever targets, limits and policies the test or bench
//! describes. It is written once the ports are known, in the proxy's own
//! directory, and kept, so a restart runs the same file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

pub const ADMIN_SECRET: &str = "admin-secret";
pub const ALICE_SECRET: &str = "alice-secret";
pub const BOB_SECRET: &str = "bob-secret";
/// A second approver, for policies that need two distinct approvals.
pub const CAROL_SECRET: &str = "carol-secret";

/// What goes into a test proxy's `jitgate.toml`, and how `jitgate serve`
/// runs. [`super::JitgateOptions`] makes one for a proxy in front of one
/// throwaway server; a test or bench with other needs fills one in itself.
#[derive(Debug, Clone)]
pub struct JitgateConfig {
    /// A PostgreSQL listener (`listen.postgres`) on a free port.
    pub postgres_listener: bool,
    /// A MySQL listener (`listen.mysql`) on a free port.
    pub mysql_listener: bool,
    /// `listen.mysql_server_version`.
    pub mysql_server_version: Option<String>,
    /// `tls.require`.
    pub tls_require: bool,
    /// `audit.path`, instead of `data/audit.log` in jitgate's directory.
    pub audit_path: Option<PathBuf>,
    /// `audit.fsync`: "always" or an interval.
    pub audit_fsync: String,
    /// The `[limits]` table's lines (`max_sessions = 10`, say).
    pub limits: String,
    /// `[[targets]]` tables.
    pub targets: String,
    /// Whether a target has a read level: jitgate checks its upstream
    /// account at start, and the kit waits for the verdict.
    pub has_read_level: bool,
    /// TOML after the targets: `[[policies]]`, `[[webhooks]]`, `[requests]`.
    pub extra: String,
    /// The environment `jitgate serve` runs with (the upstream passwords).
    pub env: Vec<(String, String)>,
    /// The upstream passwords jitgate holds; no client may ever see them.
    pub upstream_secrets: Vec<String>,
    /// The binary: this build's, unless a bench measures another.
    pub exe: PathBuf,
    /// `RUST_LOG` for the proxy; `None` keeps the caller's (a bench's
    /// figures must not pay for debug logging).
    pub log_filter: Option<String>,
    /// How long the kit waits for an answer of the admin API.
    pub admin_timeout: Duration,
    /// The admin listener serves TLS (`[admin] tls_cert`), with the proxy's
    /// own self-signed certificate.
    pub admin_tls: bool,
}

impl Default for JitgateConfig {
    fn default() -> Self {
        JitgateConfig {
            postgres_listener: false,
            mysql_listener: false,
            mysql_server_version: None,
            tls_require: true,
            audit_path: None,
            audit_fsync: "100ms".to_owned(),
            limits: String::new(),
            targets: String::new(),
            has_read_level: false,
            extra: String::new(),
            env: Vec::new(),
            upstream_secrets: Vec::new(),
            exe: PathBuf::from(env!("CARGO_BIN_EXE_jitgate")),
            log_filter: Some("info,jitgate=debug".to_owned()),
            admin_timeout: Duration::from_secs(10),
            admin_tls: false,
        }
    }
}

/// The ports a proxy listens on; `None` where it has no such listener.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub postgres: Option<u16>,
    pub mysql: Option<u16>,
    pub admin: u16,
}

impl JitgateConfig {
    /// The file's text, for a proxy on `ports` whose audit log is `audit_path`.
    pub fn render(&self, ports: Ports, audit_path: &Path) -> String {
        let mut listen = String::new();
        if let Some(port) = ports.postgres {
            listen.push_str(&format!("postgres = \"127.0.0.1:{port}\"\n"));
        }
        if let Some(port) = ports.mysql {
            listen.push_str(&format!("mysql = \"127.0.0.1:{port}\"\n"));
        }
        if let Some(version) = &self.mysql_server_version {
            listen.push_str(&format!("mysql_server_version = \"{version}\"\n"));
        }
        let mut identities = String::new();
        for (name, group, verifier) in identity_verifiers() {
            identities.push_str(&format!(
                "[[identities]]\nname = \"{name}\"\ngroups = [\"{group}\"]\nsecret = \"{verifier}\"\n\n"
            ));
        }
        let admin_table = if self.admin_tls {
            "\n[admin]\ntls_cert = \"tls/cert.pem\"\ntls_key = \"tls/key.pem\"\n"
        } else {
            ""
        };
        format!(
            "data_dir = \"data\"\n\
             \n[listen]\n{listen}admin = \"127.0.0.1:{admin}\"\n\
             \n[tls]\ncert = \"tls/cert.pem\"\nkey = \"tls/key.pem\"\nrequire = {require}\nself_signed_if_missing = true\n\
             {admin_table}\
             \n[audit]\npath = \"{audit}\"\nfsync = \"{fsync}\"\n\
             \n[limits]\n{limits}\n\
             {identities}\
             {targets}\n\
             {extra}",
            admin = ports.admin,
            require = self.tls_require,
            audit = audit_path.display(),
            fsync = self.audit_fsync,
            limits = self.limits,
            targets = self.targets,
            extra = self.extra,
        )
    }
}

/// The kit's identities with their SCRAM verifiers, computed once per
/// process (PBKDF2 is slow in a debug build): alice the developer, bob and
/// carol the approvers, admin.
fn identity_verifiers() -> &'static [(String, String, String); 4] {
    static VERIFIERS: OnceLock<[(String, String, String); 4]> = OnceLock::new();
    VERIFIERS.get_or_init(|| {
        [
            ("alice", "developer", ALICE_SECRET),
            ("bob", "approver", BOB_SECRET),
            ("carol", "approver", CAROL_SECRET),
            ("admin", "admin", ADMIN_SECRET),
        ]
        .map(|(name, group, secret)| {
            (
                name.to_owned(),
                group.to_owned(),
                jitgate::identity::ScramVerifier::generate(secret),
            )
        })
    })
}
