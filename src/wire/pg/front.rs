//! The client-facing side: accept, TLS, startup, SCRAM, grant check,
//! upstream login, then hand over to the relay.
//!
//! Nothing reaches the upstream before the client has proved its identity
//! and holds an active grant (invariant 1). Every handshake runs under a
//! timeout and a cap on pending handshakes; sessions are capped too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::cancel::{CancelKeys, UpstreamKey};
use super::framing::{FrameError, FrameReader, StartupPacket, read_startup, take_cstr_bytes};
use super::messages::{self, Severity, sqlstate};
use super::relay::{self, SessionEnd};
use super::scram::{MECHANISM, ScramError, ScramServer};
use super::upstream;
use crate::access::AuthorizeError;
use crate::audit::{AuditEvent, client_name};
use crate::config::Protocol;
use crate::metrics::{METRICS, Metrics, SessionMetrics};
use crate::server::Shared;
use crate::session::NewSession;
use crate::wire::handshakes::PendingHandshake;
use crate::wire::stream::Stream;

/// Auth messages are small; a client cannot make us buffer more than this before login.
const MAX_AUTH_MESSAGE_BYTES: usize = 8 * 1024;

pub struct PgFront {
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    cancel_keys: Arc<CancelKeys>,
    reapers: super::reaper::Reapers,
    sessions: Arc<Semaphore>,
}

/// A client that finished the handshake: authenticated, granted, logged in upstream.
struct Established {
    client_r: FrameReader<ReadHalf<Stream>>,
    client_w: WriteHalf<Stream>,
    upstream: upstream::Upstream,
    lease: crate::access::Lease,
    identity: String,
    target: String,
    level: String,
    read_only: bool,
    session_permit: tokio::sync::OwnedSemaphorePermit,
    reaper: Option<super::reaper::Reaper>,
}

/// Why a handshake stopped without a session; the client has been told.
struct Refused;

impl PgFront {
    pub fn new(shared: Arc<Shared>, tls: Option<TlsAcceptor>) -> Arc<PgFront> {
        let limits = &shared.config.limits;
        Arc::new(PgFront {
            tls,
            cancel_keys: Arc::default(),
            reapers: Default::default(),
            sessions: Arc::new(Semaphore::new(limits.max_sessions)),
            shared,
        })
    }

    /// One accepted connection, from first byte to the session's end
    /// (run by `wire::accept_loop` on a session thread).
    pub async fn handle(self: Arc<Self>, mut tcp: TcpStream, peer: SocketAddr) {
        let mut pending = match self.shared.handshakes.admit(peer.ip()) {
            Ok(p) => p,
            Err(full) => {
                let msg = messages::error(
                    Severity::Fatal,
                    sqlstate::TOO_MANY_CONNECTIONS,
                    &full.to_string(),
                    None,
                );
                let _ = tcp.write_all(&msg).await;
                return;
            }
        };
        let limit = self.shared.config.limits.handshake_timeout;
        let handshake = self.handshake(tcp, peer, &mut pending);
        let established = match tokio::time::timeout(limit, handshake).await {
            Ok(Ok(Some(e))) => e,
            Ok(Ok(None)) | Ok(Err(Refused)) => return,
            Err(_) => {
                tracing::debug!(%peer, "handshake timed out");
                return;
            }
        };
        drop(pending);
        self.run_session(established, peer).await;
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        pending: &mut PendingHandshake,
    ) -> Result<Option<Established>, Refused> {
        let mut stream = Stream::Plain(tcp);
        let first_message_timeout = self.shared.config.limits.first_message_timeout;
        let mut first = true;
        let (major, minor, params) = loop {
            let read = if first {
                match tokio::time::timeout(first_message_timeout, read_startup(&mut stream)).await {
                    Ok(read) => read,
                    Err(_) => {
                        tracing::debug!(%peer, "no startup message in time");
                        return Ok(None);
                    }
                }
            } else {
                read_startup(&mut stream).await
            };
            let packet = match read {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(fail_stream(
                        &mut stream,
                        sqlstate::PROTOCOL_VIOLATION,
                        &e.to_string(),
                        None,
                    )
                    .await);
                }
            };
            // A cancel request is over at once and needs no handshake slot.
            if first
                && !matches!(packet, StartupPacket::Cancel { .. })
                && let Err(full) = pending.spoke()
            {
                return Err(fail_stream(
                    &mut stream,
                    sqlstate::TOO_MANY_CONNECTIONS,
                    &full.to_string(),
                    None,
                )
                .await);
            }
            first = false;
            match packet {
                StartupPacket::SslRequest => match (stream, &self.tls) {
                    (Stream::Plain(mut tcp), Some(acceptor)) => {
                        tcp.write_all(b"S").await.map_err(|_| Refused)?;
                        let tls = acceptor.accept(tcp).await.map_err(|e| {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            Refused
                        })?;
                        stream = Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls)));
                    }
                    (Stream::Plain(mut tcp), None) => {
                        tcp.write_all(b"N").await.map_err(|_| Refused)?;
                        stream = Stream::Plain(tcp);
                    }
                    (mut s @ Stream::Tls(_), _) => {
                        return Err(fail_stream(
                            &mut s,
                            sqlstate::PROTOCOL_VIOLATION,
                            "SSLRequest inside TLS",
                            None,
                        )
                        .await);
                    }
                },
                StartupPacket::GssEncRequest => {
                    stream.write_all(b"N").await.map_err(|_| Refused)?;
                }
                StartupPacket::Cancel { pid, key } => {
                    self.forward_cancel(pid, &key).await;
                    return Ok(None);
                }
                StartupPacket::Startup {
                    major,
                    minor,
                    params,
                } => break (major, minor, params),
            }
        };

        if self.shared.config.tls.require && !stream.is_tls() {
            return Err(fail_stream(
                &mut stream,
                sqlstate::INVALID_AUTHORIZATION,
                "jitgate requires TLS; this connection is not encrypted",
                Some("connect with sslmode=require (or verify-full)"),
            )
            .await);
        }
        if major != 3 {
            return Err(fail_stream(
                &mut stream,
                sqlstate::FEATURE_NOT_SUPPORTED,
                &format!("unsupported frontend protocol {major}.{minor}: jitgate speaks 3.0"),
                None,
            )
            .await);
        }
        let unsupported: Vec<String> = params
            .iter()
            .filter(|(k, _)| k.starts_with("_pq_."))
            .map(|(k, _)| k.clone())
            .collect();
        if minor > 0 || !unsupported.is_empty() {
            stream
                .write_all(&messages::negotiate_protocol_version(unsupported))
                .await
                .map_err(|_| Refused)?;
        }
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let Some(user) = param("user").filter(|u| !u.is_empty()).map(str::to_owned) else {
            return Err(fail_stream(
                &mut stream,
                sqlstate::INVALID_AUTHORIZATION,
                "no user name in the startup packet",
                None,
            )
            .await);
        };
        let target = param("database")
            .filter(|d| !d.is_empty())
            .unwrap_or(&user)
            .to_owned();
        if param("replication").is_some_and(|r| r != "false" && r != "0" && r != "off") {
            return Err(fail_stream(
                &mut stream,
                sqlstate::FEATURE_NOT_SUPPORTED,
                "replication connections are not supported through jitgate",
                None,
            )
            .await);
        }

        let (r, mut w) = tokio::io::split(stream);
        let mut r = FrameReader::new(r, MAX_AUTH_MESSAGE_BYTES);
        let audit = &self.shared.audit;
        let peer_s = peer.to_string();
        // Names the client chose, bounded in the records of failed logins.
        let (user_named, target_named) = (client_name(&user), client_name(&target));
        let login_failed = |reason: &str| {
            let _ = audit.record(&AuditEvent {
                identity: Some(&user_named),
                target: Some(&target_named),
                client_addr: Some(&peer_s),
                reason: Some(reason),
                ..AuditEvent::new("login_failed")
            });
        };
        let rate_limited = |wait: std::time::Duration| {
            login_failed("rate_limited");
            METRICS.auth_failure("rate_limited");
            METRICS.session_outcome(&target, "auth_failed");
            format!(
                "too many failed logins for \"{user}\" or from {}; try again in {} s",
                peer.ip(),
                wait.as_secs() + 1
            )
        };
        // A cheap early no; the limit itself is charged in the exchange.
        if let Some(wait) = self.shared.logins.blocked_for(Some(&user), peer.ip()) {
            let why = rate_limited(wait);
            return Err(fail(&mut w, sqlstate::INVALID_AUTHORIZATION, &why, None).await);
        }

        // SCRAM-SHA-256, against a decoy verifier for unknown names.
        let (identity, verifier) = self.shared.identities.verifier_for(&user);
        let scram = self
            .scram_exchange(&mut r, &mut w, verifier, &user, peer)
            .await;
        let identity = match (scram, identity) {
            (Ok(()), Some(identity)) => identity,
            (Err(ScramFailure::Io), _) => return Err(Refused),
            (Err(ScramFailure::RateLimited(wait)), _) => {
                let why = rate_limited(wait);
                return Err(fail(&mut w, sqlstate::INVALID_AUTHORIZATION, &why, None).await);
            }
            (Err(ScramFailure::Malformed(why)), _) => {
                login_failed("malformed_auth");
                METRICS.auth_failure("malformed");
                METRICS.session_outcome(&target, "auth_failed");
                return Err(fail(&mut w, sqlstate::PROTOCOL_VIOLATION, &why, None).await);
            }
            (Ok(()), None) | (Err(ScramFailure::BadPassword), _) => {
                login_failed("bad_secret");
                METRICS.auth_failure("bad_secret");
                METRICS.session_outcome(&target, "auth_failed");
                return Err(fail(
                    &mut w,
                    sqlstate::INVALID_PASSWORD,
                    &format!("password authentication failed for user \"{user}\""),
                    None,
                )
                .await);
            }
        };

        let lease = match self.shared.access.authorize(&identity.name, &target) {
            Ok(l) => l,
            Err(e) => {
                let (code, reason) = match e {
                    AuthorizeError::UnknownTarget(_) => {
                        (sqlstate::INVALID_CATALOG_NAME, "unknown_target")
                    }
                    AuthorizeError::NoGrant { .. } | AuthorizeError::NoGrantAtLevel { .. } => {
                        (sqlstate::INVALID_AUTHORIZATION, "no_grant")
                    }
                };
                login_failed(reason);
                METRICS.session_outcome(
                    e.known_target().unwrap_or("unknown"),
                    if reason == "no_grant" {
                        "refused_no_grant"
                    } else {
                        "refused_unknown_target"
                    },
                );
                return Err(fail(&mut w, code, &e.to_string(), None).await);
            }
        };
        let grant = lease.grant.clone();
        // The target's own name, without a `@level` the client added.
        let target = grant.target.clone();
        let config = &self.shared.config;
        let Some(target_cfg) = config
            .target(&target)
            .filter(|t| t.protocol == Protocol::Postgres)
        else {
            login_failed("wrong_protocol");
            return Err(fail(
                &mut w,
                sqlstate::INVALID_CATALOG_NAME,
                &format!("target \"{target}\" is not a PostgreSQL target; use the MySQL listener"),
                None,
            )
            .await);
        };
        let Some(level) = target_cfg.levels.get(&grant.level) else {
            login_failed("unknown_level");
            return Err(fail(
                &mut w,
                sqlstate::INVALID_AUTHORIZATION,
                &format!(
                    "level \"{}\" of your grant is no longer configured on {target}",
                    grant.level
                ),
                None,
            )
            .await);
        };
        if level.read_only
            && let Some(name) = upstream::refused_on_read_only(&params)
        {
            login_failed("read_only_startup_parameter");
            METRICS.session_outcome(&target, "refused_startup_parameter");
            return Err(fail(
                &mut w,
                sqlstate::READ_ONLY_TRANSACTION,
                &format!(
                    "startup parameter \"{name}\" is not allowed on your read-only grant for {target} (level {}): it does what SET {name} does, which a read-only grant refuses",
                    grant.level
                ),
                Some("leave it out of the connection string and PGOPTIONS, or request a level that allows writes with `jitgate request`"),
            )
            .await);
        }
        if audit
            .record(&AuditEvent {
                identity: Some(&identity.name),
                target: Some(&target),
                grant: Some(&grant.id),
                level: Some(&grant.level),
                client_addr: Some(&peer_s),
                ..AuditEvent::new("login_ok")
            })
            .is_err()
        {
            return Err(fail(
                &mut w,
                sqlstate::IO_ERROR,
                crate::wire::admission::AUDIT_DOWN_LOGIN,
                None,
            )
            .await);
        }
        let Ok(session_permit) = self.sessions.clone().try_acquire_owned() else {
            return Err(fail(
                &mut w,
                sqlstate::TOO_MANY_CONNECTIONS,
                "jitgate has reached its limit of live sessions",
                Some("try again later or ask an admin to raise limits.max_sessions"),
            )
            .await);
        };

        if let Err(e) = self
            .shared
            .read_accounts
            .admit(
                target_cfg,
                &grant.level,
                level,
                config.limits.max_message_bytes,
            )
            .await
        {
            METRICS.session_outcome(&target, "refused_read_account");
            let _ = audit.record(&AuditEvent {
                identity: Some(&identity.name),
                target: Some(&target),
                grant: Some(&grant.id),
                level: Some(&grant.level),
                client_addr: Some(&peer_s),
                reason: Some(e.reason()),
                detail: Some(&e.to_string()),
                ..AuditEvent::new("session_refused")
            });
            return Err(fail(
                &mut w,
                sqlstate::INSUFFICIENT_PRIVILEGE,
                &e.to_string(),
                Some("tell jitgate's operators; the proxy log says more"),
            )
            .await);
        }
        let connect_started = std::time::Instant::now();
        let connected = upstream::connect(
            target_cfg,
            &grant.level,
            level,
            &params,
            config.limits.max_message_bytes,
        )
        .await;
        METRICS
            .upstream_connect_seconds
            .get_or_create(&crate::metrics::TargetLabel {
                target: target.clone(),
            })
            .observe(connect_started.elapsed().as_secs_f64());
        let up = match connected {
            Ok(up) => up,
            Err(e) => {
                tracing::warn!(target = %target, error = %e, "upstream login failed");
                METRICS.session_outcome(&target, "upstream_failed");
                let _ = audit.record(&AuditEvent {
                    identity: Some(&identity.name),
                    target: Some(&target),
                    grant: Some(&grant.id),
                    client_addr: Some(&peer_s),
                    reason: Some("upstream_unavailable"),
                    detail: Some(&e.to_string()),
                    ..AuditEvent::new("session_refused")
                });
                return Err(fail(
                    &mut w,
                    sqlstate::CONNECTION_FAILURE,
                    &e.to_string(),
                    Some("jitgate itself is fine; the target database is down or refused jitgate's login. Tell its owners."),
                )
                .await);
            }
        };
        let r = r.with_max(config.limits.max_message_bytes);
        let reaper = up.local_port.map(|_| {
            self.reapers.for_level(
                target_cfg,
                &grant.level,
                level,
                config.limits.max_message_bytes,
            )
        });
        Ok(Some(Established {
            reaper,
            client_r: r,
            client_w: w,
            upstream: up,
            lease,
            identity: identity.name.clone(),
            target,
            level: grant.level.clone(),
            read_only: level.read_only,
            session_permit,
        }))
    }

    async fn scram_exchange(
        &self,
        r: &mut FrameReader<ReadHalf<Stream>>,
        w: &mut WriteHalf<Stream>,
        verifier: crate::identity::ScramVerifier,
        user: &str,
        peer: SocketAddr,
    ) -> Result<(), ScramFailure> {
        w.write_all(&messages::auth_sasl(MECHANISM))
            .await
            .map_err(|_| ScramFailure::Io)?;
        let first = read_password_message(r).await?;
        let mut b = first.as_ref();
        let mechanism = take_cstr_bytes(&mut b).ok_or(ScramFailure::malformed(
            "SASLInitialResponse without a mechanism",
        ))?;
        if mechanism != MECHANISM.as_bytes() {
            return Err(ScramFailure::malformed("only SCRAM-SHA-256 is supported"));
        }
        if b.len() < 4 {
            return Err(ScramFailure::malformed("SASLInitialResponse too short"));
        }
        let len = b.get_i32();
        if len < 0 || len as usize != b.len() {
            return Err(ScramFailure::malformed(
                "SASLInitialResponse length does not match",
            ));
        }
        let (server, server_first) = ScramServer::start(verifier, b).map_err(ScramFailure::from)?;
        w.write_all(&messages::auth_sasl_continue(&server_first))
            .await
            .map_err(|_| ScramFailure::Io)?;
        let last = read_password_message(r).await?;
        // Charged before the proof is checked, refunded only if it matched.
        let attempt = self
            .shared
            .logins
            .charge(Some(user), peer.ip())
            .map_err(ScramFailure::RateLimited)?;
        let server_final = server.finish(&last).map_err(ScramFailure::from)?;
        attempt.refund();
        w.write_all(&messages::auth_sasl_final(&server_final))
            .await
            .map_err(|_| ScramFailure::Io)?;
        Ok(())
    }

    async fn forward_cancel(&self, pid: u32, key: &[u8]) {
        match self.cancel_keys.lookup(pid, key) {
            Some(up) => {
                if let Err(e) = upstream::send_cancel(&up.address, up.pid, &up.key).await {
                    tracing::warn!(error = %e, "could not forward a cancel request");
                }
            }
            None => tracing::debug!("cancel request for an unknown key dropped"),
        }
    }

    async fn run_session(&self, e: Established, peer: SocketAddr) {
        let Established {
            client_r,
            mut client_w,
            upstream,
            lease,
            identity,
            target,
            level,
            read_only,
            session_permit,
            reaper,
        } = e;
        let grant = lease.grant.clone();
        let audit = &self.shared.audit;
        let guard = self.shared.sessions.register(NewSession {
            identity: &identity,
            target: &target,
            level: &level,
            grant: &grant.id,
            client_addr: peer,
        });
        let info = guard.info.clone();
        let key_guard = self.cancel_keys.issue(UpstreamKey {
            address: upstream.cancel_address.clone(),
            pid: upstream.pid,
            key: upstream.key.clone(),
        });
        let started = audit.record(&AuditEvent {
            session: Some(&info.id),
            identity: Some(&identity),
            grant: Some(&grant.id),
            target: Some(&target),
            level: Some(&level),
            client_addr: Some(&peer.to_string()),
            expires_at: Some(grant.expires_at),
            ..AuditEvent::new("session_start")
        });
        if started.is_err() {
            let _ = client_w
                .write_all(&messages::error(
                    Severity::Fatal,
                    sqlstate::IO_ERROR,
                    crate::wire::admission::AUDIT_DOWN_LOGIN,
                    None,
                ))
                .await;
            return;
        }
        // Greet the client: login done, the server's parameters, our own cancel key.
        let mut hello = bytes::BytesMut::new();
        hello.extend_from_slice(&messages::auth_ok());
        for p in upstream
            .parameter_status
            .iter()
            .chain(upstream.notices.iter())
        {
            hello.extend_from_slice(p);
        }
        hello.extend_from_slice(&messages::backend_key_data(key_guard.pid, key_guard.key));
        hello.extend_from_slice(&messages::ready_for_query(upstream.status));
        if crate::wire::stream::send(&mut client_w, &hello)
            .await
            .is_err()
        {
            return;
        }

        let ctx = relay::SessionCtx {
            members: info.audit_members(),
            info: info.clone(),
            audit: audit.clone(),
            read_only,
            metrics: SessionMetrics::new(&target),
            reaper,
        };
        METRICS.session_outcome(&target, "started");
        let active = METRICS
            .sessions_active
            .get_or_create_owned(&Metrics::target_level(&target, &level));
        active.inc();
        let end = relay::run(&ctx, client_r, client_w, upstream, lease).await;
        active.dec();
        METRICS.session_outcome(&target, end.metric_outcome());
        let reason = end.reason();
        let _ = audit.record(&AuditEvent {
            session: Some(&info.id),
            identity: Some(&identity),
            grant: Some(&grant.id),
            target: Some(&target),
            level: Some(&level),
            reason: Some(reason),
            detail: end.detail(),
            ..AuditEvent::new("session_end")
        });
        if let SessionEnd::GrantEnded(r) = end {
            tracing::info!(session = %info.id, grant = %grant.id, reason = r.as_str(), at = %humantime::format_rfc3339_millis(SystemTime::now()), "session ended with its grant");
        }
        drop(key_guard);
        drop(guard);
        drop(session_permit);
    }
}

enum ScramFailure {
    Io,
    Malformed(String),
    BadPassword,
    /// No login attempts left for this identity or address; wait this long.
    RateLimited(std::time::Duration),
}

impl ScramFailure {
    fn malformed(why: &str) -> ScramFailure {
        ScramFailure::Malformed(why.to_owned())
    }
}

impl From<ScramError> for ScramFailure {
    fn from(e: ScramError) -> Self {
        match e {
            ScramError::BadProof => ScramFailure::BadPassword,
            other => ScramFailure::Malformed(other.to_string()),
        }
    }
}

/// Read a PasswordMessage-family ('p') message body during authentication.
async fn read_password_message(
    r: &mut FrameReader<ReadHalf<Stream>>,
) -> Result<Bytes, ScramFailure> {
    match r.next().await {
        Ok(Some(f)) if f.tag() == b'p' => Ok(f.bytes.slice(5..)),
        Ok(Some(_)) => Err(ScramFailure::malformed("expected a SASL response")),
        Ok(None) | Err(FrameError::Io(_)) | Err(FrameError::Truncated) => Err(ScramFailure::Io),
        Err(e) => Err(ScramFailure::Malformed(e.to_string())),
    }
}

/// Send a FATAL error and close (TLS is closed with close_notify).
async fn fail(w: &mut WriteHalf<Stream>, code: &str, message: &str, hint: Option<&str>) -> Refused {
    let _ = w
        .write_all(&messages::error(Severity::Fatal, code, message, hint))
        .await;
    let _ = w.shutdown().await;
    Refused
}

async fn fail_stream(s: &mut Stream, code: &str, message: &str, hint: Option<&str>) -> Refused {
    let _ = s
        .write_all(&messages::error(Severity::Fatal, code, message, hint))
        .await;
    let _ = s.shutdown().await;
    Refused
}
