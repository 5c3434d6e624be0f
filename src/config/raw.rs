//! The configuration file's shape exactly as TOML gives it, before any
//! check: field names are the file's keys, durations and paths are still
//! strings, and an unknown key is refused by the parser (its error lists the
//! known keys in the order declared here). Validation turns this into the
//! [`Config`](super::Config) the rest of jitgate reads.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Protocol;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) data_dir: String,
    pub(super) listen: RawListen,
    pub(super) tls: RawTls,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) audit: RawAudit,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) identities: Vec<RawIdentity>,
    pub(super) oidc: Option<RawOidc>,
    #[serde(default)]
    pub(super) targets: Vec<RawTarget>,
    #[serde(default)]
    pub(super) policies: Vec<RawPolicy>,
    #[serde(default)]
    pub(super) requests: RawRequests,
    #[serde(default)]
    pub(super) webhooks: Vec<RawWebhook>,
    #[serde(default)]
    pub(super) store: RawStore,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) kind: Option<String>,
    pub(super) url_env: Option<String>,
    pub(super) url_file: Option<String>,
    pub(super) proxy_name: Option<String>,
    pub(super) fail_closed_after: Option<String>,
    pub(super) tls: Option<String>,
    pub(super) tls_ca_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) name: String,
    pub(super) targets: Vec<String>,
    pub(super) levels: Vec<String>,
    pub(super) requesters: Vec<String>,
    pub(super) max_duration: String,
    #[serde(default = "one")]
    pub(super) approvals: u32,
    #[serde(default)]
    pub(super) approvers: Vec<String>,
    pub(super) auto_approve: Option<RawAutoApprove>,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAutoApprove {
    pub(super) groups: Vec<String>,
    pub(super) max_duration: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRequests {
    pub(super) pending_timeout: Option<String>,
    pub(super) max_reason_chars: Option<usize>,
    pub(super) max_pending_per_identity: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    pub(super) url: String,
    pub(super) timeout: Option<String>,
    pub(super) retries: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    pub(super) postgres: Option<String>,
    pub(super) mysql: Option<String>,
    pub(super) mysql_server_version: Option<String>,
    pub(super) admin: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) url: Option<String>,
    pub(super) tls_cert: Option<String>,
    pub(super) tls_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: String,
    pub(super) key: String,
    #[serde(default = "yes")]
    pub(super) require: bool,
    #[serde(default)]
    pub(super) self_signed_if_missing: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub(super) path: Option<String>,
    pub(super) fsync: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) handshake_timeout: Option<String>,
    pub(super) first_message_timeout: Option<String>,
    pub(super) max_pending_handshakes: Option<usize>,
    pub(super) max_pending_handshakes_per_address: Option<usize>,
    pub(super) max_sessions: Option<usize>,
    pub(super) max_message_bytes: Option<usize>,
    pub(super) max_classified_statement_bytes: Option<usize>,
    pub(super) max_login_failures: Option<u32>,
    pub(super) login_failure_window: Option<String>,
    pub(super) session_threads: Option<usize>,
    pub(super) admin_max_connections: Option<usize>,
    pub(super) admin_header_read_timeout: Option<String>,
    pub(super) admin_idle_timeout: Option<String>,
    pub(super) admin_request_timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOidc {
    pub(super) issuer: String,
    pub(super) client_id: String,
    pub(super) client_secret_env: Option<String>,
    pub(super) client_secret_file: Option<String>,
    pub(super) username_claim: Option<String>,
    pub(super) groups_claim: Option<String>,
    pub(super) scopes: Option<Vec<String>>,
    pub(super) credential_ttl: Option<String>,
    pub(super) clock_skew: Option<String>,
    pub(super) max_credentials_per_person: Option<usize>,
    pub(super) ca_file: Option<String>,
    pub(super) device_flow: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    pub(super) name: String,
    #[serde(default)]
    pub(super) groups: Vec<String>,
    pub(super) secret: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) name: String,
    pub(super) protocol: Protocol,
    pub(super) address: String,
    pub(super) database: String,
    #[serde(default)]
    pub(super) tls: Option<String>,
    pub(super) tls_ca_file: Option<String>,
    pub(super) tls_server_name: Option<String>,
    pub(super) connect_timeout: Option<String>,
    pub(super) levels: BTreeMap<String, RawLevel>,
    pub(super) demo_create_read_accounts_with: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLevel {
    pub(super) user: String,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<String>,
    #[serde(default)]
    pub(super) read_only: bool,
    #[serde(default)]
    pub(super) allow_privileged_read_account: bool,
}
