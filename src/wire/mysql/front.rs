//! The client-facing side: accept, greeting, TLS, `caching_sha2_password`
//! against the identity's verifier, grant check, upstream login, then hand
//! over to the relay.
//!
//! Nothing reaches the upstream before the client has proved its identity
//! and holds an active grant (invariant 1). Every handshake runs under a
//! timeout and a cap on pending handshakes; sessions are capped too. The
//! database a client names at login (`mariadb … demo-mysql`) is the target;
//! the session lands in the target's configured database.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::auth::{self, CACHING_SHA2, Sha2Cache};
use super::packet::{
    self, ClientHello, HandshakeResponse, PacketError, PacketReader, caps, code, frame,
};
use super::relay::{self, SessionCtx, SessionEnd};
use super::upstream::{self, ClientTerms};
use crate::access::AuthorizeError;
use crate::audit::AuditEvent;
use crate::config::Protocol;
use crate::identity::LoginLimiter;
use crate::metrics::{METRICS, Metrics, SessionMetrics};
use crate::server::Shared;
use crate::session::NewSession;
use crate::wire::stream::Stream;

/// Login packets are small; a client cannot make us buffer more than this before login.
const MAX_AUTH_PACKET_BYTES: usize = 8 * 1024;

/// The version jitgate announces. Clients only use it for display and
/// feature guesses; the real server's version is not known before login.
const SERVER_VERSION: &str = concat!("8.0.99-jitgate-", env!("CARGO_PKG_VERSION"));

pub struct MysqlFront {
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    handshakes: Arc<Semaphore>,
    sessions: Arc<Semaphore>,
    limiter: LoginLimiter,
    sha2_cache: Sha2Cache,
}

/// A client that finished the handshake: authenticated, granted, logged in upstream.
struct Established {
    client: PacketReader<Stream>,
    upstream: upstream::Upstream,
    lease: crate::access::Lease,
    identity: String,
    target: String,
    level: String,
    session_permit: tokio::sync::OwnedSemaphorePermit,
}

/// Why a handshake stopped without a session; the client has been told.
struct Refused;

/// The login conversation with one client: its stream and the next sequence id.
struct Conversation {
    r: PacketReader<Stream>,
    seq: u8,
}

impl Conversation {
    async fn send(&mut self, payload: &[u8]) -> Result<(), Refused> {
        let bytes = frame(self.seq, payload);
        self.seq = self.seq.wrapping_add(1);
        self.r
            .get_mut()
            .write_all(&bytes)
            .await
            .map_err(|_| Refused)
    }

    async fn receive(&mut self) -> Result<Bytes, LoginError> {
        let p = packet::read_expected(&mut self.r, self.seq)
            .await
            .map_err(LoginError::from)?;
        self.seq = self.seq.wrapping_add(1);
        Ok(p.bytes.slice(packet::HEADER..))
    }

    /// Send an ERR and close (TLS is closed with close_notify).
    async fn fail(&mut self, code: (u16, &str), message: &str) -> Refused {
        let _ = self.send(&packet::err(code, message)).await;
        let _ = self.r.get_mut().shutdown().await;
        Refused
    }
}

enum LoginError {
    /// The client went away: nobody to tell.
    Gone,
    Malformed(String),
    TooLarge(String),
}

impl From<PacketError> for LoginError {
    fn from(e: PacketError) -> Self {
        match e {
            PacketError::Io(_) | PacketError::Truncated => LoginError::Gone,
            PacketError::TooLarge { .. } => LoginError::TooLarge(e.to_string()),
            other => LoginError::Malformed(other.to_string()),
        }
    }
}

enum AuthOutcome {
    Ok,
    BadSecret,
    /// Already told the client why.
    Refused,
}

impl MysqlFront {
    pub fn new(shared: Arc<Shared>, tls: Option<TlsAcceptor>) -> Arc<MysqlFront> {
        let limits = &shared.config.limits;
        Arc::new(MysqlFront {
            tls,
            handshakes: Arc::new(Semaphore::new(limits.max_pending_handshakes)),
            sessions: Arc::new(Semaphore::new(limits.max_sessions)),
            limiter: LoginLimiter::new(limits.max_login_failures, limits.login_failure_window),
            sha2_cache: Sha2Cache::default(),
            shared,
        })
    }

    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(self.clone().handle(tcp, peer));
                }
                // Out of file descriptors and the like: back off, keep serving.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn handle(self: Arc<Self>, mut tcp: TcpStream, peer: SocketAddr) {
        let Ok(permit) = self.handshakes.clone().try_acquire_owned() else {
            let msg = packet::err(
                code::CON_COUNT,
                "too many connections are logging in to jitgate right now; try again in a moment",
            );
            let _ = tcp.write_all(&frame(0, &msg)).await;
            return;
        };
        let limit = self.shared.config.limits.handshake_timeout;
        let established = match tokio::time::timeout(limit, self.handshake(tcp, peer)).await {
            Ok(Ok(e)) => e,
            Ok(Err(Refused)) => return,
            Err(_) => {
                tracing::debug!(%peer, "mysql handshake timed out");
                return;
            }
        };
        drop(permit);
        self.run_session(established, peer).await;
    }

    async fn handshake(&self, tcp: TcpStream, peer: SocketAddr) -> Result<Established, Refused> {
        let nonce = fresh_nonce();
        let connection_id = rand::random::<u32>() | 0x8000_0000;
        let offered = caps::OFFERED | if self.tls.is_some() { caps::SSL } else { 0 };
        let mut conv = Conversation {
            r: PacketReader::new(Stream::Plain(tcp), MAX_AUTH_PACKET_BYTES),
            seq: 0,
        };
        conv.send(&packet::greeting(
            SERVER_VERSION,
            connection_id,
            &nonce,
            offered,
            CACHING_SHA2,
        ))
        .await?;

        let mut hello = self.receive_hello(&mut conv, offered).await?;
        if let ClientHello::SslRequest { .. } = hello {
            let Some(acceptor) = &self.tls else {
                return Err(conv
                    .fail(
                        code::HANDSHAKE,
                        "jitgate did not offer TLS on this listener",
                    )
                    .await);
            };
            let seq = conv.seq;
            let (stream, leftover) = conv.r.into_parts();
            let Stream::Plain(tcp) = stream else {
                return Err(Refused);
            };
            if !leftover.is_empty() {
                // Bytes after the SSLRequest would be plaintext smuggled past TLS.
                return Err(Refused);
            }
            let tls = acceptor.accept(tcp).await.map_err(|e| {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                Refused
            })?;
            conv = Conversation {
                r: PacketReader::new(
                    Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))),
                    MAX_AUTH_PACKET_BYTES,
                ),
                seq,
            };
            hello = self.receive_hello(&mut conv, offered).await?;
            if let ClientHello::SslRequest { .. } = hello {
                return Err(conv.fail(code::HANDSHAKE, "SSLRequest inside TLS").await);
            }
        }
        let ClientHello::Response(resp) = hello else {
            return Err(Refused);
        };
        let secure = conv.r.get_mut().is_tls();
        if self.shared.config.tls.require && !secure {
            return Err(conv
                .fail(
                    code::SECURE_TRANSPORT_REQUIRED,
                    "Connections using insecure transport are prohibited: jitgate requires TLS; connect with --ssl (mariadb) or --ssl-mode=REQUIRED (mysql)",
                )
                .await);
        }
        self.login(conv, resp, &nonce, secure, peer).await
    }

    async fn receive_hello(
        &self,
        conv: &mut Conversation,
        offered: u32,
    ) -> Result<ClientHello, Refused> {
        let payload = match conv.receive().await {
            Ok(p) => p,
            Err(LoginError::Gone) => return Err(Refused),
            Err(LoginError::Malformed(why)) | Err(LoginError::TooLarge(why)) => {
                return Err(conv.fail(code::HANDSHAKE, &why).await);
            }
        };
        match packet::parse_client_hello(&payload, offered) {
            Ok(h) => Ok(h),
            Err(e) => {
                METRICS.auth_failure("malformed");
                Err(conv
                    .fail(code::HANDSHAKE, &format!("bad handshake: {e}"))
                    .await)
            }
        }
    }

    async fn login(
        &self,
        mut conv: Conversation,
        resp: HandshakeResponse,
        nonce: &[u8; 20],
        secure: bool,
        peer: SocketAddr,
    ) -> Result<Established, Refused> {
        let user = resp.user.clone();
        let audit = &self.shared.audit;
        let peer_s = peer.to_string();
        let target_hint = resp.database.clone().unwrap_or_default();
        let login_failed = |reason: &str| {
            let _ = audit.record(&AuditEvent {
                identity: Some(&user),
                target: Some(&target_hint),
                client_addr: Some(&peer_s),
                reason: Some(reason),
                ..AuditEvent::new("login_failed")
            });
        };
        let denied = format!(
            "Access denied for user '{user}' (using password: {})",
            if resp.auth_response.is_empty() {
                "NO"
            } else {
                "YES"
            }
        );
        let ip_key = format!("ip:{}", peer.ip());
        let id_key = format!("id:{user}");
        if let Some(wait) = self
            .limiter
            .blocked_for(&id_key)
            .or_else(|| self.limiter.blocked_for(&ip_key))
        {
            login_failed("rate_limited");
            METRICS.auth_failure("rate_limited");
            METRICS.session_outcome(&target_hint, "auth_failed");
            return Err(conv
                .fail(
                    code::ACCESS_DENIED,
                    &format!(
                        "too many failed logins for '{user}' or from {}; try again in {} s",
                        peer.ip(),
                        wait.as_secs() + 1
                    ),
                )
                .await);
        }

        let (identity, verifier) = self.shared.identities.verifier_for(&user);
        let outcome = self
            .authenticate(
                &mut conv,
                &resp,
                nonce,
                secure,
                &user,
                identity.is_some(),
                &verifier,
            )
            .await?;
        let identity = match (outcome, identity) {
            (AuthOutcome::Ok, Some(identity)) => identity,
            (AuthOutcome::Refused, _) => {
                login_failed("malformed_auth");
                METRICS.auth_failure("malformed");
                METRICS.session_outcome(&target_hint, "auth_failed");
                return Err(Refused);
            }
            (AuthOutcome::Ok, None) | (AuthOutcome::BadSecret, _) => {
                self.limiter.record_failure(&id_key);
                self.limiter.record_failure(&ip_key);
                login_failed("bad_secret");
                METRICS.auth_failure("bad_secret");
                METRICS.session_outcome(&target_hint, "auth_failed");
                return Err(conv.fail(code::ACCESS_DENIED, &denied).await);
            }
        };
        self.limiter.record_success(&id_key);

        let Some(target) = resp.database.clone() else {
            login_failed("no_target");
            return Err(conv
                .fail(
                    code::BAD_DB,
                    "name the target as the database when you connect, e.g. `mariadb -h <jitgate> -P 3307 -u alice -p --ssl demo-mysql`",
                )
                .await);
        };
        let lease = match self.shared.access.authorize(&identity.name, &target) {
            Ok(l) => l,
            Err(e) => {
                let (code, reason, outcome_target, outcome) = match e {
                    AuthorizeError::UnknownTarget(_) => (
                        code::BAD_DB,
                        "unknown_target",
                        "unknown",
                        "refused_unknown_target",
                    ),
                    AuthorizeError::NoGrant { .. } => (
                        code::DB_ACCESS_DENIED,
                        "no_grant",
                        target.as_str(),
                        "refused_no_grant",
                    ),
                };
                login_failed(reason);
                METRICS.session_outcome(outcome_target, outcome);
                return Err(conv.fail(code, &e.to_string()).await);
            }
        };
        let grant = lease.grant.clone();
        let config = &self.shared.config;
        let Some(target_cfg) = config
            .target(&target)
            .filter(|t| t.protocol == Protocol::Mysql)
        else {
            login_failed("wrong_protocol");
            return Err(conv
                .fail(
                    code::BAD_DB,
                    &format!(
                        "target \"{target}\" is not a MySQL target; use the PostgreSQL listener"
                    ),
                )
                .await);
        };
        let Some(level) = target_cfg.levels.get(&grant.level) else {
            login_failed("unknown_level");
            return Err(conv
                .fail(
                    code::DB_ACCESS_DENIED,
                    &format!(
                        "level \"{}\" of your grant is no longer configured on {target}",
                        grant.level
                    ),
                )
                .await);
        };
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
            return Err(conv.fail(code::UNKNOWN_ERROR, AUDIT_DOWN).await);
        }
        let Ok(session_permit) = self.sessions.clone().try_acquire_owned() else {
            return Err(conv
                .fail(
                    code::CON_COUNT,
                    "jitgate has reached its limit of live sessions; try again later or ask an admin to raise limits.max_sessions",
                )
                .await);
        };

        let connect_started = std::time::Instant::now();
        let terms = ClientTerms {
            capabilities: resp.capabilities,
            max_packet_size: resp.max_packet_size,
            collation: if resp.collation == 0 {
                45
            } else {
                resp.collation
            },
        };
        let connected = upstream::connect(target_cfg, &grant.level, level, terms).await;
        METRICS
            .upstream_connect_seconds
            .get_or_create(&crate::metrics::TargetLabel {
                target: target.clone(),
            })
            .observe(connect_started.elapsed().as_secs_f64());
        let up = match connected {
            Ok(up) => up,
            Err(e) => {
                tracing::warn!(target = %target, error = %e, "mysql upstream login failed");
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
                return Err(conv
                    .fail(
                        code::CONN_HOST_ERROR,
                        &format!(
                            "{e}. jitgate itself is fine; the target database is down or refused jitgate's login. Tell its owners."
                        ),
                    )
                    .await);
            }
        };
        // Login done: the client gets OK with the server's status flags.
        if conv.send(&packet::ok(0, up.status)).await.is_err() {
            upstream::quit(&mut up.reader.into_parts().0).await;
            return Err(Refused);
        }
        let mut client = conv.r;
        client.set_max(config.limits.max_message_bytes);
        Ok(Established {
            client,
            upstream: up,
            lease,
            identity: identity.name.clone(),
            target,
            level: grant.level.clone(),
            session_permit,
        })
    }

    /// The `caching_sha2_password` exchange (after switching the client to it
    /// if it started with another plugin).
    #[allow(clippy::too_many_arguments)]
    async fn authenticate(
        &self,
        conv: &mut Conversation,
        resp: &HandshakeResponse,
        nonce: &[u8; 20],
        secure: bool,
        user: &str,
        known: bool,
        verifier: &crate::identity::ScramVerifier,
    ) -> Result<AuthOutcome, Refused> {
        let mut scramble = resp.auth_response.clone();
        if resp.auth_plugin.as_deref() != Some(CACHING_SHA2) {
            let mut data = nonce.to_vec();
            data.push(0);
            conv.send(&packet::auth_switch(CACHING_SHA2, &data)).await?;
            scramble = match conv.receive().await {
                Ok(p) => p.to_vec(),
                Err(LoginError::Gone) => return Err(Refused),
                Err(LoginError::Malformed(why)) | Err(LoginError::TooLarge(why)) => {
                    conv.fail(code::HANDSHAKE, &why).await;
                    return Ok(AuthOutcome::Refused);
                }
            };
        }
        if scramble.is_empty() || scramble == [0] {
            return Ok(AuthOutcome::BadSecret);
        }
        if known && let Some(ok) = self.sha2_cache.check_fast(user, nonce, &scramble) {
            if !ok {
                return Ok(AuthOutcome::BadSecret);
            }
            conv.send(&packet::auth_more_data(&[auth::FAST_AUTH_OK]))
                .await?;
            return Ok(AuthOutcome::Ok);
        }
        // Full authentication: the client sends its password, so only over TLS.
        conv.send(&packet::auth_more_data(&[auth::PERFORM_FULL_AUTH]))
            .await?;
        let answer = match conv.receive().await {
            Ok(p) => p,
            Err(LoginError::Gone) => return Err(Refused),
            Err(LoginError::Malformed(why)) | Err(LoginError::TooLarge(why)) => {
                conv.fail(code::HANDSHAKE, &why).await;
                return Ok(AuthOutcome::Refused);
            }
        };
        if !secure {
            // A client without TLS asks for an RSA key (or, worse, sends the
            // password in clear); jitgate has no RSA key and reads no password
            // off a plaintext connection.
            conv.fail(
                code::NOT_SUPPORTED_AUTH_MODE,
                "jitgate needs TLS for the first login of an identity (caching_sha2_password full authentication); connect with --ssl",
            )
            .await;
            return Ok(AuthOutcome::Refused);
        }
        if answer.as_ref() == [auth::REQUEST_PUBLIC_KEY] {
            conv.fail(
                code::NOT_SUPPORTED_AUTH_MODE,
                "jitgate does not hand out an RSA key; the connection is already TLS, send the password",
            )
            .await;
            return Ok(AuthOutcome::Refused);
        }
        let Some(password) = auth::cleartext_password(&answer) else {
            return Ok(AuthOutcome::BadSecret);
        };
        // PBKDF2 is deliberately slow: keep it off the async workers.
        let verifier = verifier.clone();
        let pw = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || verifier.matches_password(&pw))
            .await
            .unwrap_or(false);
        if !matches || !known {
            return Ok(AuthOutcome::BadSecret);
        }
        self.sha2_cache.remember(user, password.as_bytes());
        Ok(AuthOutcome::Ok)
    }

    async fn run_session(&self, e: Established, peer: SocketAddr) {
        let Established {
            client,
            upstream,
            lease,
            identity,
            target,
            level,
            session_permit,
        } = e;
        let grant = lease.grant.clone();
        let audit = &self.shared.audit;
        let Some(target_cfg) = self.shared.config.target(&target).cloned() else {
            return;
        };
        let Some(level_cfg) = target_cfg.levels.get(&level).cloned() else {
            return;
        };
        let guard = self.shared.sessions.register(NewSession {
            identity: &identity,
            target: &target,
            level: &level,
            grant: &grant.id,
            client_addr: peer,
        });
        let info = guard.info.clone();
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
        let mut client = client;
        if started.is_err() {
            let _ = client
                .get_mut()
                .write_all(&frame(1, &packet::err(code::UNKNOWN_ERROR, AUDIT_DOWN)))
                .await;
            let _ = client.get_mut().shutdown().await;
            upstream::quit(&mut upstream.reader.into_parts().0).await;
            return;
        }
        let ctx = SessionCtx {
            info: info.clone(),
            audit: audit.clone(),
            read_only: level_cfg.read_only,
            metrics: SessionMetrics::new(&target),
            target: target_cfg,
            level: level_cfg,
        };
        METRICS.session_outcome(&target, "started");
        let active = METRICS
            .sessions_active
            .get_or_create_owned(&Metrics::target_level(&target, &level));
        active.inc();
        let end = relay::run(&ctx, client, upstream, lease).await;
        active.dec();
        METRICS.session_outcome(
            &target,
            match &end {
                SessionEnd::GrantEnded(crate::access::EndReason::Expired) => "killed_expired",
                SessionEnd::GrantEnded(crate::access::EndReason::Revoked) => "killed_revoked",
                SessionEnd::Killed => "killed",
                _ => "closed",
            },
        );
        let _ = audit.record(&AuditEvent {
            session: Some(&info.id),
            identity: Some(&identity),
            grant: Some(&grant.id),
            target: Some(&target),
            level: Some(&level),
            reason: Some(end.reason()),
            detail: end.detail(),
            ..AuditEvent::new("session_end")
        });
        if let SessionEnd::GrantEnded(r) = end {
            tracing::info!(session = %info.id, grant = %grant.id, reason = r.as_str(), "mysql session ended with its grant");
        }
        drop(guard);
        drop(session_permit);
    }
}

pub(super) const AUDIT_DOWN: &str =
    "jitgate cannot write its audit log, so it forwards nothing; tell the jitgate operators";

/// A fresh 20-byte nonce of printable characters (clients treat it as a C string).
fn fresh_nonce() -> [u8; 20] {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let mut n = [0u8; 20];
    for b in &mut n {
        *b = rng.gen_range(0x21..=0x7e);
    }
    n
}
