//! Wire protocol fronts. Each one authenticates a client, passes the gate
//! (`gate.rs`: limits, `AccessModel::authorize`, login records, session
//! registration), logs in upstream and relays, writing every statement to
//! the audit log. Fronts do not know each other; [`LISTENERS`] lists them.

pub mod admission;
pub mod ending;
pub mod gate;
pub mod handshakes;
pub mod mysql;
pub mod pg;
pub mod quiet;
pub mod read_account;
pub mod stream;
pub mod upstream;
pub mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use crate::access::{EndReason, Grant};
use crate::config::{Config, Listen, Protocol};

/// One database protocol jitgate listens for. A new protocol adds its
/// folder, one entry in [`LISTENERS`] and a `sql` dialect.
pub struct Listener {
    /// The name in logs, errors and `/v1/info` ("postgres").
    pub name: &'static str,
    pub protocol: Protocol,
    /// Its address in `[listen]`, when it is configured.
    pub address: fn(&Listen) -> Option<SocketAddr>,
    /// Serve connections on a bound listener until it fails.
    pub serve: fn(Serving) -> ServeFuture,
}

/// What a listener is started with.
pub struct Serving {
    pub listener: TcpListener,
    pub workers: Arc<workers::Workers>,
    pub gate: Arc<gate::Gate>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Read while the front is built, never after.
    pub config: Arc<Config>,
}

pub type ServeFuture = std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

pub const LISTENERS: &[Listener] = &[pg::LISTENER, mysql::LISTENER];

/// The protocol's listener (every protocol has one).
pub fn listener_for(protocol: Protocol) -> Option<&'static Listener> {
    LISTENERS.iter().find(|l| l.protocol == protocol)
}

/// When a grant ends, how long a session waits for the grant's other
/// sessions to tell their clients before it ends its upstream side anyway
/// (see `SessionInfo::grant_clients_told`).
pub const TELL_CLIENTS_FIRST_FOR: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a session's end waits for the upstream's running statement to
/// be stopped (PostgreSQL: the cancel request; MySQL: the side connection's
/// `KILL`) before it goes on without.
pub const STOP_UPSTREAM_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Statement text from the wire as a `str`, invalid UTF-8 replaced by U+FFFD.
///
/// The same as `String::from_utf8_lossy`, which checks byte by byte; valid
/// text (nearly all of it) takes `str::from_utf8`'s word-at-a-time path.
/// A statement as the relays keep it: its text (decoded lossily if it is
/// not UTF-8) and, only then, its exact bytes in base64 for the audit
/// record. UTF-8 is checked once.
pub struct StatementText<'a> {
    pub text: std::borrow::Cow<'a, str>,
    pub exact: Option<String>,
}

impl<'a> StatementText<'a> {
    pub fn new(bytes: &'a [u8]) -> StatementText<'a> {
        use base64::Engine;
        match std::str::from_utf8(bytes) {
            Ok(text) => StatementText {
                text: std::borrow::Cow::Borrowed(text),
                exact: None,
            },
            Err(_) => StatementText {
                text: String::from_utf8_lossy(bytes),
                exact: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            },
        }
    }

    /// The statement's kind as `reading`'s server reads it: unknown when
    /// it is not UTF-8.
    pub fn classify(&self, reading: &crate::sql::Reading) -> crate::sql::StatementKind {
        match (&self.text, &self.exact) {
            (text, None) => crate::sql::classify_text(reading, text),
            (_, Some(_)) => crate::sql::StatementKind::Unknown,
        }
    }
}

pub fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Accept connections until the listener fails; each one becomes a task
/// `handle(front, tcp, peer)` on one of the session threads. An accept error
/// (out of file descriptors, say) is logged and retried after a short
/// pause; it never stops the listener.
pub async fn accept_loop<T, H, Fut>(
    listener: TcpListener,
    workers: &workers::Workers,
    front: Arc<T>,
    handle: H,
) -> std::io::Result<()>
where
    T: Send + Sync + 'static,
    H: Fn(Arc<T>, TcpStream, SocketAddr) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                let front = front.clone();
                workers.spawn_session(tcp, move |tcp| handle(front, tcp, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Why a proxy that lost its store ends sessions and refuses logins.
pub(crate) const STORE_LOST: &str = "this jitgate proxy has lost contact with its store for longer than store.fail_closed_after, \
     and the store may hold a revoke it has not seen, so it ends its sessions and accepts no logins until the store is back";
pub(crate) const STORE_LOST_HINT: &str =
    "connect again in a moment, or through another jitgate proxy of the fleet";

/// How a proxied session ended, whatever its protocol.
#[derive(Debug)]
pub enum SessionEnd {
    ClientClosed,
    UpstreamClosed,
    GrantEnded(EndReason),
    /// An operator ended it (`POST /v1/sessions/{id}/kill`).
    Killed,
    /// The same identity ended it from another of its connections (MySQL
    /// `KILL CONNECTION`); says where from.
    KilledByOwner(String),
    ClientError(String),
    UpstreamError(String),
    /// The audit log could not be written: what the client sent last was
    /// not forwarded, and nothing more will be (jitgate fails closed).
    AuditFailed,
    /// The fleet's store did not answer for `store.fail_closed_after`: it may
    /// hold a revoke this proxy has not seen (jitgate fails closed).
    StoreLost,
    /// The issued credential the client logged in with ended.
    CredentialEnded(CredentialEnd),
    /// A reload of the config removed the session's identity, target or
    /// level (what, in words for the client).
    AccessRemoved(String),
}

/// How an issued credential ended under a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialEnd {
    /// Its holder (or an admin) logged it out.
    LoggedOut,
    /// It reached its `expires_at`.
    Expired,
}

impl SessionEnd {
    /// The proxy ended the session (not the client, not the target).
    pub fn proxy_ended(&self) -> bool {
        matches!(
            self,
            SessionEnd::GrantEnded(_)
                | SessionEnd::Killed
                | SessionEnd::KilledByOwner(_)
                | SessionEnd::AuditFailed
                | SessionEnd::StoreLost
                | SessionEnd::CredentialEnded(_)
                | SessionEnd::AccessRemoved(_)
        )
    }

    /// The `reason` of the `session_end` audit record.
    pub fn reason(&self) -> &'static str {
        match self {
            SessionEnd::ClientClosed => "client_closed",
            SessionEnd::UpstreamClosed => "upstream_closed",
            SessionEnd::GrantEnded(EndReason::Expired) => "grant_expired",
            SessionEnd::GrantEnded(EndReason::Revoked) => "grant_revoked",
            SessionEnd::Killed | SessionEnd::KilledByOwner(_) => "killed",
            SessionEnd::ClientError(_) => "client_error",
            SessionEnd::UpstreamError(_) => "upstream_error",
            SessionEnd::AuditFailed => "audit_failed",
            SessionEnd::StoreLost => "store_lost",
            SessionEnd::CredentialEnded(CredentialEnd::LoggedOut) => "logged_out",
            SessionEnd::CredentialEnded(CredentialEnd::Expired) => "credential_expired",
            SessionEnd::AccessRemoved(_) => "config_removed",
        }
    }

    pub fn detail(&self) -> Option<&str> {
        match self {
            SessionEnd::ClientError(d)
            | SessionEnd::UpstreamError(d)
            | SessionEnd::KilledByOwner(d)
            | SessionEnd::AccessRemoved(d) => Some(d),
            _ => None,
        }
    }

    /// What the person at the client can do next, after an end the proxy
    /// caused: the same for both protocols (PostgreSQL sends it as the
    /// error's hint, MySQL after the message).
    pub fn hint_to_user(&self) -> Option<&'static str> {
        match self {
            SessionEnd::GrantEnded(_) => {
                Some("request a new grant with `jitgate request` to continue")
            }
            SessionEnd::Killed | SessionEnd::KilledByOwner(_) => Some(
                "connect again while your grant lasts, or request a new one with `jitgate request`",
            ),
            SessionEnd::StoreLost => Some(STORE_LOST_HINT),
            SessionEnd::CredentialEnded(_) => {
                Some("sign in again with `jitgate login`, then connect again")
            }
            SessionEnd::AccessRemoved(_) => Some("ask jitgate's operators why it changed"),
            _ => None,
        }
    }

    /// Why the proxy ended the session, in words for the person at the
    /// client ("your grant g_… for prod-pg was revoked"); `None` when the
    /// proxy did not end it. Each protocol wraps it in its own error.
    pub fn told_to_user(&self, grant: &Grant) -> Option<String> {
        Some(match self {
            SessionEnd::GrantEnded(EndReason::Expired) => format!(
                "your grant {} for {} expired at {}",
                grant.id,
                grant.target,
                humantime::format_rfc3339_seconds(grant.expires_at)
            ),
            SessionEnd::GrantEnded(EndReason::Revoked) => {
                format!("your grant {} for {} was revoked", grant.id, grant.target)
            }
            SessionEnd::Killed => "an administrator ended this session".to_owned(),
            SessionEnd::KilledByOwner(by) => by.clone(),
            SessionEnd::AuditFailed => admission::AUDIT_DOWN_SESSION.to_owned(),
            SessionEnd::StoreLost => STORE_LOST.to_owned(),
            SessionEnd::CredentialEnded(CredentialEnd::LoggedOut) => {
                "the jitgate credential you logged in with was logged out".to_owned()
            }
            SessionEnd::CredentialEnded(CredentialEnd::Expired) => {
                "the jitgate credential you logged in with expired".to_owned()
            }
            SessionEnd::AccessRemoved(what) => what.clone(),
            _ => return None,
        })
    }

    /// The `outcome` label of `jitgate_sessions_total` for this end.
    pub fn metric_outcome(&self) -> &'static str {
        match self {
            SessionEnd::GrantEnded(EndReason::Expired) => "killed_expired",
            SessionEnd::GrantEnded(EndReason::Revoked) => "killed_revoked",
            SessionEnd::Killed | SessionEnd::KilledByOwner(_) => "killed",
            SessionEnd::StoreLost => "killed_store_lost",
            SessionEnd::CredentialEnded(CredentialEnd::LoggedOut) => "killed_logged_out",
            SessionEnd::CredentialEnded(CredentialEnd::Expired) => "killed_credential_expired",
            SessionEnd::AccessRemoved(_) => "killed_config_removed",
            _ => "closed",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    #[test]
    fn text_is_what_from_utf8_lossy_gives() {
        let samples: [&[u8]; 5] = [
            b"SELECT 1",
            b"SELECT 'caf\xc3\xa9'",
            b"bad \xff\xfe end",
            b"cut short \xe2\x82",
            b"",
        ];
        for bytes in samples {
            assert_eq!(
                super::text(bytes),
                String::from_utf8_lossy(bytes),
                "{bytes:?}"
            );
        }
        assert!(matches!(super::text(b"SELECT 1"), Cow::Borrowed(_)));
    }
}
