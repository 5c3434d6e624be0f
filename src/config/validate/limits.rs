//! `[limits]`: timeouts, caps and thread counts, each with a default that
//! suits one proxy on a small machine, and a floor below which the proxy
//! could not work.

use std::time::Duration;

use super::Validator;
use crate::config::raw::RawLimits;
use crate::config::{ConfigError, Limits};

/// More session threads than this is a typo, not a machine.
const MAX_SESSION_THREADS: usize = 1024;

/// Half the CPUs this process may use, at least one: the database, the
/// clients and jitgate's own control plane usually share the machine, and on
/// two cores one session thread gave more throughput than two (see
/// `wire::workers`).
fn default_session_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

impl Validator<'_> {
    pub(super) fn limits(&self, l: RawLimits) -> Result<Limits, ConfigError> {
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
        self.check_limits(&limits)?;
        Ok(limits)
    }

    /// The floors (and the one ceiling) of the limits, once they are read.
    fn check_limits(&self, limits: &Limits) -> Result<(), ConfigError> {
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
        Ok(())
    }
}
