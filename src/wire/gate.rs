//! The gate every database connection passes, whatever its protocol.
//!
//! A front brings the bytes: its framing, its authentication exchange, and
//! how it renders a [`Refusal`] (a PostgreSQL `ErrorResponse`, a MySQL
//! `ERR` packet). Everything else about letting a client in lives here
//! once: the handshake slot, the one login limiter (shared with the admin
//! API), the identity's verifier, `authorize` and the checks on the lease it
//! returns, the `login_failed`/`login_ok`/`session_refused` records and
//! their metrics, the session cap, the read-account check, the bookkeeping
//! of the upstream dial, and the session's registration with its
//! `session_start`/`session_end` records.
//!
//! The order of the steps is part of the contract: nothing reaches the
//! upstream before the client has proved its identity and holds an active
//! grant (invariant 1), and a login is audited before its session starts.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::admission::AUDIT_DOWN_LOGIN;
use super::handshakes::{Handshakes, PendingHandshake};
use super::read_account::ReadAccounts;
use super::{STORE_LOST_HINT, SessionEnd};
use crate::access::{AccessModel, AuthorizeError, Grant, Lease};
use crate::audit::{AuditEvent, AuditLog, SessionMembers, client_name};
use crate::config::{Limits, Protocol};
use crate::identity::{CredentialRef, Identities, Identity, LoginAttempt, LoginKeys, LoginLimiter};
use crate::metrics::{METRICS, Metrics, SessionMetrics};
use crate::session::{KillCause, NewSession, SessionGuard, SessionInfo, Sessions};

/// What the gate needs from the rest of jitgate; built once by the server.
pub struct GateParts {
    pub identities: Arc<Identities>,
    pub access: Arc<AccessModel>,
    pub audit: Arc<AuditLog>,
    /// The one failed-login budget, also charged by the admin API.
    pub logins: Arc<LoginLimiter>,
    pub sessions: Arc<Sessions>,
    pub read_accounts: Arc<ReadAccounts>,
}

/// The timeouts and sizes of a login, from `[limits]` and `[tls]`.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    pub handshake_timeout: Duration,
    pub first_message_timeout: Duration,
    /// The largest message a logged-in session may send or receive.
    pub max_message_bytes: usize,
    pub tls_required: bool,
}

pub struct Gate {
    parts: GateParts,
    handshakes: Arc<Handshakes>,
    /// `limits.max_sessions`, across every listener.
    session_slots: Arc<Semaphore>,
    limits: LoginLimits,
}

/// Why a connection gets no session, in words for the person at the client;
/// each front renders it in its own protocol.
#[derive(Debug)]
pub struct Refusal {
    pub cause: Cause,
    pub message: String,
    /// What to do about it, when there is something to say.
    pub hint: Option<&'static str>,
}

/// The kind of a [`Refusal`]: what a front maps to its error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// No handshake slot, or jitgate is at its session cap.
    Busy,
    RateLimited,
    BadSecret,
    /// The authentication messages made no sense.
    Malformed,
    /// The target does not exist, or is served by another listener.
    NoSuchTarget,
    /// No active grant (at the named level), or the grant's level is gone.
    NoGrant,
    /// A startup option a read-only level refuses.
    ReadOnly,
    AuditDown,
    /// The proxy lost its fleet's store and fails closed.
    StoreLost,
    /// The level's upstream account failed jitgate's read-only check.
    ReadAccount,
    UpstreamDown,
}

impl Refusal {
    pub fn new(cause: Cause, message: impl Into<String>, hint: Option<&'static str>) -> Refusal {
        Refusal {
            cause,
            message: message.into(),
            hint,
        }
    }

    fn audit_down() -> Refusal {
        Refusal::new(Cause::AuditDown, AUDIT_DOWN_LOGIN, None)
    }
}

impl Gate {
    pub fn new(parts: GateParts, limits: &Limits, tls_required: bool) -> Gate {
        Gate {
            parts,
            handshakes: Arc::new(Handshakes::from_limits(limits)),
            session_slots: Arc::new(Semaphore::new(limits.max_sessions)),
            limits: LoginLimits {
                handshake_timeout: limits.handshake_timeout,
                first_message_timeout: limits.first_message_timeout,
                max_message_bytes: limits.max_message_bytes,
                tls_required,
            },
        }
    }

    pub fn limits(&self) -> LoginLimits {
        self.limits
    }

    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.parts.audit
    }

    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.parts.sessions
    }

    /// A connection was accepted: take a handshake slot of its address.
    pub fn admit_handshake(&self, client: IpAddr) -> Result<PendingHandshake, Refusal> {
        self.handshakes
            .admit(client)
            .map_err(|full| Refusal::new(Cause::Busy, full.to_string(), None))
    }

    /// A client said who it is and which target it wants (`target` as the
    /// client named it, possibly `target@level`, possibly empty).
    pub fn login<'g>(
        &'g self,
        protocol: Protocol,
        user: &str,
        target: &str,
        peer: SocketAddr,
    ) -> Login<'g> {
        Login {
            gate: self,
            protocol,
            user: user.to_owned(),
            target: target.to_owned(),
            peer,
            peer_s: peer.to_string(),
        }
    }
}

/// One login in progress, from the name the client gave to its session.
pub struct Login<'g> {
    gate: &'g Gate,
    protocol: Protocol,
    user: String,
    target: String,
    peer: SocketAddr,
    peer_s: String,
}

impl<'g> Login<'g> {
    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// A `login_failed` record, with the names the client chose bounded.
    pub fn failed(&self, reason: &str) {
        let _ = self.gate.parts.audit.record(&AuditEvent {
            identity: Some(&client_name(&self.user)),
            target: Some(&client_name(&self.target)),
            client_addr: Some(&self.peer_s),
            reason: Some(reason),
            ..AuditEvent::new("login_failed")
        });
    }

    /// A cheap early no, before any authentication work; the limit itself
    /// is charged by [`Login::charge`].
    pub fn not_blocked(&self) -> Result<(), Refusal> {
        match self
            .gate
            .parts
            .logins
            .blocked_for(Some(&self.user), self.peer.ip())
        {
            Some(wait) => Err(self.rate_limited(wait)),
            None => Ok(()),
        }
    }

    /// Charge one attempt before a secret is checked; the front refunds it
    /// once the secret matched.
    pub fn charge(&self) -> Result<LoginAttempt<'g>, Refusal> {
        self.gate
            .parts
            .logins
            .charge(Some(&self.user), self.peer.ip())
            .map_err(|wait| self.rate_limited(wait))
    }

    fn rate_limited(&self, wait: Duration) -> Refusal {
        self.failed("rate_limited");
        METRICS.auth_failure("rate_limited");
        METRICS.session_outcome(&self.target, "auth_failed");
        Refusal::new(
            Cause::RateLimited,
            format!(
                "too many failed logins for \"{}\" or from {}; try again in {} s",
                self.user,
                self.peer.ip(),
                wait.as_secs() + 1
            ),
            None,
        )
    }

    /// The secrets the name the client gave may log in with: a decoy for
    /// an unknown name, so that the exchange cannot tell the two apart.
    pub fn keys(&self) -> LoginKeys {
        self.gate.parts.identities.keys_for(&self.user)
    }

    /// The client's authentication messages made no sense; it has been
    /// told, or is told with the front's own wording.
    pub fn malformed(&self) {
        self.failed("malformed_auth");
        METRICS.auth_failure("malformed");
        METRICS.session_outcome(&self.target, "auth_failed");
    }

    /// A wrong secret, or a name that does not exist; `message` in the
    /// protocol's own words.
    pub fn bad_secret(&self, message: String) -> Refusal {
        self.failed("bad_secret");
        METRICS.auth_failure("bad_secret");
        METRICS.session_outcome(&self.target, "auth_failed");
        Refusal::new(Cause::BadSecret, message, None)
    }

    /// Ask the access model for a lease on the target the client named, on
    /// this listener's protocol; refusals are audited and counted.
    pub fn authorize(&self, identity: &Identity) -> Result<Lease, Refusal> {
        let lease = match self
            .gate
            .parts
            .access
            .authorize(&identity.name, &self.target)
        {
            Ok(lease) => lease,
            Err(e) => {
                let (cause, reason, outcome) = match e {
                    AuthorizeError::UnknownTarget(_) => (
                        Cause::NoSuchTarget,
                        "unknown_target",
                        Some("refused_unknown_target"),
                    ),
                    AuthorizeError::NoGrant { .. } | AuthorizeError::NoGrantAtLevel { .. } => {
                        (Cause::NoGrant, "no_grant", Some("refused_no_grant"))
                    }
                    AuthorizeError::LevelGone { .. } => (Cause::NoGrant, "unknown_level", None),
                    AuthorizeError::StoreLost => {
                        (Cause::StoreLost, "store_lost", Some("refused_store_lost"))
                    }
                };
                self.failed(reason);
                if let Some(outcome) = outcome {
                    METRICS.session_outcome(e.known_target().unwrap_or("unknown"), outcome);
                }
                let hint = matches!(e, AuthorizeError::StoreLost).then_some(STORE_LOST_HINT);
                return Err(Refusal::new(cause, e.to_string(), hint));
            }
        };
        if lease.target.protocol != self.protocol {
            self.failed("wrong_protocol");
            let (other, listener) = match self.protocol {
                Protocol::Postgres => ("PostgreSQL", "MySQL"),
                Protocol::Mysql => ("MySQL", "PostgreSQL"),
            };
            return Err(Refusal::new(
                Cause::NoSuchTarget,
                format!(
                    "target \"{}\" is not a {other} target; use the {listener} listener",
                    lease.grant.target
                ),
                None,
            ));
        }
        Ok(lease)
    }

    /// A login this front refuses for a reason of its own (a startup
    /// option, say), after `authorize`: audited and counted.
    pub fn refuse(&self, reason: &str, outcome: &'static str, refusal: Refusal) -> Refusal {
        self.failed(reason);
        METRICS.session_outcome(&self.target, outcome);
        refusal
    }

    /// The login succeeded: record it, take a session slot, and check the
    /// level's upstream account. What comes back may dial the upstream.
    pub async fn admit(&self, identity: &Identity, lease: Lease) -> Result<Admitted, Refusal> {
        let grant = lease.grant.clone();
        let parts = &self.gate.parts;
        let login_ok = parts.audit.record(&AuditEvent {
            identity: Some(&identity.name),
            target: Some(&grant.target),
            grant: Some(&grant.id),
            level: Some(&grant.level),
            client_addr: Some(&self.peer_s),
            ..AuditEvent::new("login_ok")
        });
        if login_ok.is_err() {
            return Err(Refusal::audit_down());
        }
        let Ok(permit) = self.gate.session_slots.clone().try_acquire_owned() else {
            return Err(Refusal::new(
                Cause::Busy,
                "jitgate has reached its limit of live sessions",
                Some("try again later or ask an admin to raise limits.max_sessions"),
            ));
        };
        let admitted = Admitted {
            lease,
            identity: identity.name.clone(),
            credential: identity.credential.clone(),
            peer: self.peer,
            permit,
        };
        let checked = parts
            .read_accounts
            .admit(
                &admitted.lease.target,
                &grant.level,
                &admitted.lease.level,
                self.gate.limits.max_message_bytes,
            )
            .await;
        if let Err(e) = checked {
            METRICS.session_outcome(&grant.target, "refused_read_account");
            self.session_refused(&admitted, Some(&grant.level), e.reason(), &e.to_string());
            return Err(Refusal::new(
                Cause::ReadAccount,
                e.to_string(),
                Some("tell jitgate's operators; the proxy log says more"),
            ));
        }
        Ok(admitted)
    }

    /// Log in upstream with `connect`, timing it; a failure is logged,
    /// audited and counted, and becomes the client's refusal.
    pub async fn dial<U, E: std::fmt::Display>(
        &self,
        admitted: &Admitted,
        connect: impl std::future::Future<Output = Result<U, E>>,
    ) -> Result<U, Refusal> {
        let target = &admitted.lease.grant.target;
        let started = Instant::now();
        let connected = connect.await;
        METRICS
            .upstream_connect_seconds
            .get_or_create(&crate::metrics::TargetLabel {
                target: target.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        connected.map_err(|e| {
            tracing::warn!(target = %target, protocol = ?self.protocol, error = %e, "upstream login failed");
            METRICS.session_outcome(target, "upstream_failed");
            self.session_refused(admitted, None, "upstream_unavailable", &e.to_string());
            Refusal::new(
                Cause::UpstreamDown,
                e.to_string(),
                Some(
                    "jitgate itself is fine; the target database is down or refused jitgate's login. Tell its owners.",
                ),
            )
        })
    }

    fn session_refused(
        &self,
        admitted: &Admitted,
        level: Option<&str>,
        reason: &str,
        detail: &str,
    ) {
        let grant = &admitted.lease.grant;
        let _ = self.gate.parts.audit.record(&AuditEvent {
            identity: Some(&admitted.identity),
            target: Some(&grant.target),
            grant: Some(&grant.id),
            level,
            client_addr: Some(&self.peer_s),
            reason: Some(reason),
            detail: Some(detail),
            ..AuditEvent::new("session_refused")
        });
    }
}

/// A login that passed the gate: its lease (grant, target and level), its
/// session slot. The front logs in upstream and opens the session.
pub struct Admitted {
    pub lease: Lease,
    pub identity: String,
    /// The issued credential the client proved, if any.
    credential: Option<CredentialRef>,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
}

impl Admitted {
    /// Register the session and write its `session_start` record. The lease
    /// comes back for the relay to watch; the session's end goes to
    /// [`LiveSession::run`].
    pub fn open(self, gate: &Gate) -> Result<(LiveSession, Lease), Refusal> {
        let Admitted {
            lease,
            identity,
            credential,
            peer,
            permit,
        } = self;
        let grant = lease.grant.clone();
        let guard = gate.parts.sessions.register(NewSession {
            identity: &identity,
            target: &grant.target,
            level: &grant.level,
            grant: &grant.id,
            credential: credential.as_ref().map(|c| c.id.as_str()),
            client_addr: peer,
        });
        let info = guard.info.clone();
        // Checked once registered: a logout, an expiry or a reload from
        // now on ends the session through the registry, one before it is
        // seen here.
        if let Some(c) = &credential
            && !gate.parts.identities.credential_live(&identity, &c.id)
        {
            info.kill_for(if crate::access::clock::now() >= c.expires_at {
                KillCause::CredentialExpired
            } else {
                KillCause::LoggedOut
            });
        }
        let config = gate.parts.access.config();
        let shape = crate::session::SessionShape {
            identity: &identity,
            issued: credential.is_some(),
            target: &grant.target,
            level: &grant.level,
            was: Some((&lease.target, &lease.level)),
        };
        if let Some(what) = crate::session::removed_under(&config, &shape) {
            info.end_removed(what);
        }
        let started = gate.parts.audit.record(&AuditEvent {
            session: Some(&info.id),
            identity: Some(&identity),
            grant: Some(&grant.id),
            target: Some(&grant.target),
            level: Some(&grant.level),
            client_addr: Some(&peer.to_string()),
            expires_at: Some(grant.expires_at),
            ..AuditEvent::new("session_start")
        });
        if started.is_err() {
            return Err(Refusal::audit_down());
        }
        let live = LiveSession {
            audit: gate.parts.audit.clone(),
            read_only: lease.level.read_only,
            info,
            grant,
            _guard: guard,
            _permit: permit,
        };
        Ok((live, lease))
    }
}

/// A registered session, from its `session_start` record to its end.
pub struct LiveSession {
    pub info: Arc<SessionInfo>,
    pub audit: Arc<AuditLog>,
    pub read_only: bool,
    grant: Arc<Grant>,
    _guard: SessionGuard,
    _permit: OwnedSemaphorePermit,
}

/// What every relay needs of its session, whatever the protocol.
pub struct RelayCtx {
    pub info: Arc<SessionInfo>,
    pub audit: Arc<AuditLog>,
    /// `info`'s members of every audit record, encoded once.
    pub members: SessionMembers,
    pub read_only: bool,
    pub metrics: SessionMetrics,
}

impl RelayCtx {
    /// A statement's answer is complete: count it and queue its
    /// `statement_end` record (`failed`: the server answered with an error).
    pub fn statement_end(
        &self,
        seq: u64,
        kind: crate::sql::StatementKind,
        started: Instant,
        outcome: &str,
        rows: u64,
        failed: bool,
    ) {
        let took = started.elapsed().as_secs_f64();
        self.metrics.duration.observe(took);
        self.metrics
            .statement(kind.as_str(), if failed { "error" } else { "ok" });
        let _ = self.audit.record_later(&AuditEvent {
            seq: Some(seq),
            outcome: Some(outcome),
            rows: Some(rows),
            duration_ms: Some((took * 1_000_000.0).round() / 1000.0),
            ..self.members.event("statement_end")
        });
    }
}

impl LiveSession {
    /// The relay's view of this session.
    pub fn relay_ctx(&self) -> RelayCtx {
        RelayCtx {
            members: self.info.audit_members(),
            info: self.info.clone(),
            audit: self.audit.clone(),
            read_only: self.read_only,
            metrics: SessionMetrics::new(&self.info.target),
        }
    }

    /// Run the relay, counted as a live session in the metrics, then
    /// record how it ended. The session slot and the registry entry are
    /// given back when this returns.
    pub async fn run(self, relay: impl std::future::Future<Output = SessionEnd>) {
        let info = &self.info;
        METRICS.session_outcome(&info.target, "started");
        let active = METRICS
            .sessions_active
            .get_or_create_owned(&Metrics::target_level(&info.target, &info.level));
        active.inc();
        let end = relay.await;
        active.dec();
        METRICS.session_outcome(&info.target, end.metric_outcome());
        let _ = self.audit.record(&AuditEvent {
            session: Some(&info.id),
            identity: Some(&info.identity),
            grant: Some(&self.grant.id),
            target: Some(&info.target),
            level: Some(&info.level),
            reason: Some(end.reason()),
            detail: end.detail(),
            ..AuditEvent::new("session_end")
        });
        if let SessionEnd::GrantEnded(r) = end {
            tracing::info!(session = %info.id, grant = %self.grant.id, reason = r.as_str(), at = %humantime::format_rfc3339_millis(SystemTime::now()), "session ended with its grant");
        }
    }
}
