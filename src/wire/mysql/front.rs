//! The client-facing side: accept, greeting, TLS, `caching_sha2_password`
//! against the identity's verifier, grant check, upstream login, then hand
//! over to the relay.
//!
//! Nothing reaches the upstream before the client has proved its identity
//! and holds an active grant (invariant 1). Every handshake runs under a
//! timeout and a cap on pending handshakes; sessions are capped too. The
//! database a client names at login (`mariadb … demo-mysql`) is the target;
//! the session lands in the target's configured database.
//!
//! The connection id in the greeting is jitgate's own (see `kill.rs`). A
//! login that names no target is refused, except while the identity has a
//! live session here: the `mariadb` CLI sends its Ctrl-C `KILL QUERY` on
//! such a connection. That connection reaches no upstream by itself, may
//! only `KILL` its identity's own connections, and lives at most
//! `limits.handshake_timeout` under the pending-handshake cap.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::announce::Announced;
use super::auth::{self, CACHING_SHA2, Sha2Cache};
use super::kill::{self, ConnectionId, KillEntry, KillRegistry, KillResult, KillStatement};
use super::packet::{
    self, ClientHello, HandshakeResponse, PacketError, PacketReader, caps, code, command, frame,
    status,
};
use super::relay::{self, SessionCtx};
use super::upstream::{self, ClientTerms, KillScope};
use crate::audit::AuditEvent;
use crate::config::{Config, Protocol};
use crate::identity::{Identity, LoginKeys};
use crate::metrics::METRICS;
use crate::wire::admission::AUDIT_DOWN_LOGIN;
use crate::wire::gate::{Admitted, Cause, Gate, Login, Refusal};
use crate::wire::handshakes::PendingHandshake;
use crate::wire::stream::Stream;

/// Login packets are small; a client cannot make us buffer more than this before login.
const MAX_AUTH_PACKET_BYTES: usize = 8 * 1024;

pub struct MysqlFront {
    gate: Arc<Gate>,
    tls: Option<TlsAcceptor>,
    sha2_cache: Sha2Cache,
    kills: Arc<KillRegistry>,
    announced: Arc<Announced>,
}

/// A client that finished the handshake: authenticated, granted, logged in upstream.
struct Established {
    client: PacketReader<Stream>,
    upstream: upstream::Upstream,
    /// The lease carries the target and level, resolved once at login.
    admitted: Admitted,
    connection: ConnectionId,
}

/// A login that named no target while the identity had a live session: it
/// may only `KILL` that identity's connections (the `mariadb` CLI's Ctrl-C).
struct KillOnly {
    client: PacketReader<Stream>,
    identity: String,
    _connection: ConnectionId,
}

enum LoggedIn {
    Session(Box<Established>),
    KillOnly(KillOnly),
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

    /// Send the gate's refusal as an ERR and close.
    async fn refuse(&mut self, refusal: &Refusal) -> Refused {
        self.fail_with(&render(refusal)).await
    }

    /// Send an ERR of jitgate's own wording and close.
    async fn fail(&mut self, code: (u16, &str), message: &str) -> Refused {
        self.fail_with(&packet::err(code, message)).await
    }

    /// Send an ERR payload and close (TLS is closed with close_notify).
    async fn fail_with(&mut self, err: &[u8]) -> Refused {
        let _ = self.send(err).await;
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
    Ok(Arc<Identity>),
    BadSecret,
    /// No login attempts left for this identity or address.
    RateLimited(Refusal),
    /// Already told the client why.
    Refused,
}

impl MysqlFront {
    pub fn new(gate: Arc<Gate>, tls: Option<TlsAcceptor>, config: &Config) -> Arc<MysqlFront> {
        let announced = Arc::new(Announced::new(
            config.listen.mysql_server_version.clone(),
            &config.targets,
        ));
        // The targets' greetings, read in the background: until they are
        // in, clients are greeted with jitgate's fallback version.
        let learning = announced.clone();
        let targets = config.targets.clone();
        tokio::spawn(async move { learning.learn_all(&targets).await });
        Arc::new(MysqlFront {
            tls,
            sha2_cache: Sha2Cache::default(),
            kills: Arc::new(KillRegistry::new(gate.sessions().clone())),
            announced,
            gate,
        })
    }

    /// One accepted connection, from first byte to the session's end
    /// (run by `wire::accept_loop` on a session thread).
    pub async fn handle(self: Arc<Self>, mut tcp: TcpStream, peer: SocketAddr) {
        let mut pending = match self.gate.admit_handshake(peer.ip()) {
            Ok(p) => p,
            Err(refusal) => {
                let _ = tcp.write_all(&frame(0, &render(&refusal))).await;
                return;
            }
        };
        let limit = self.gate.limits().handshake_timeout;
        let handshake = self.handshake(tcp, peer, &mut pending);
        let established = match tokio::time::timeout(limit, handshake).await {
            Ok(Ok(LoggedIn::Session(e))) => e,
            Ok(Ok(LoggedIn::KillOnly(k))) => {
                // Still under the handshake cap, and as short-lived.
                let _ = tokio::time::timeout(limit, self.run_kill_only(k, peer)).await;
                return;
            }
            Ok(Err(Refused)) => return,
            Err(_) => {
                tracing::debug!(%peer, "mysql handshake timed out");
                return;
            }
        };
        drop(pending);
        self.run_session(*established).await;
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        pending: &mut PendingHandshake,
    ) -> Result<LoggedIn, Refused> {
        let nonce = fresh_nonce();
        let connection = self.kills.reserve();
        let announced = self
            .announced
            .announcement(caps::OFFERED | if self.tls.is_some() { caps::SSL } else { 0 });
        let offered = announced.capabilities;
        let mut conv = Conversation {
            r: PacketReader::new(Stream::Plain(tcp), MAX_AUTH_PACKET_BYTES),
            seq: 0,
        };
        conv.send(&packet::greeting(
            &announced.version,
            connection.id(),
            &nonce,
            offered,
            announced.collation,
            CACHING_SHA2,
        ))
        .await?;

        let first_message_timeout = self.gate.limits().first_message_timeout;
        let Ok(hello) = tokio::time::timeout(
            first_message_timeout,
            self.receive_hello(&mut conv, offered),
        )
        .await
        else {
            tracing::debug!(%peer, "no handshake response in time");
            return Err(Refused);
        };
        let mut hello = hello?;
        if let Err(full) = pending.spoke() {
            return Err(conv.fail(code::CON_COUNT, &full.to_string()).await);
        }
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
        if self.gate.limits().tls_required && !secure {
            return Err(conv
                .fail(
                    code::SECURE_TRANSPORT_REQUIRED,
                    "Connections using insecure transport are prohibited: jitgate requires TLS; connect with --ssl (mariadb) or --ssl-mode=REQUIRED (mysql)",
                )
                .await);
        }
        self.login(conv, resp, &nonce, secure, peer, connection)
            .await
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
        connection: ConnectionId,
    ) -> Result<LoggedIn, Refused> {
        let target = resp.database.clone().unwrap_or_default();
        let login = self.gate.login(Protocol::Mysql, &resp.user, &target, peer);
        let identity = match self
            .authenticate(&login, &mut conv, &resp, nonce, secure)
            .await
        {
            Ok(identity) => identity,
            Err(Some(refusal)) => return Err(conv.refuse(&refusal).await),
            Err(None) => return Err(Refused),
        };
        if target.is_empty() {
            return self
                .kill_only_or_refuse(&login, conv, &identity, connection)
                .await;
        }
        let (admitted, up) = match self.admit(&login, &identity, &resp).await {
            Ok(admitted) => admitted,
            Err(refusal) => return Err(conv.refuse(&refusal).await),
        };
        // Login done: the client gets OK with the server's status flags.
        if conv.send(&packet::ok(0, up.status)).await.is_err() {
            upstream::quit(&mut up.reader.into_parts().0).await;
            return Err(Refused);
        }
        let mut client = conv.r;
        client.set_max(self.gate.limits().max_message_bytes);
        Ok(LoggedIn::Session(Box::new(Established {
            client,
            upstream: up,
            admitted,
            connection,
        })))
    }

    /// Check the client's secret. `Err(None)`: the client went away or has
    /// been told already.
    async fn authenticate(
        &self,
        login: &Login<'_>,
        conv: &mut Conversation,
        resp: &HandshakeResponse,
        nonce: &[u8; 20],
        secure: bool,
    ) -> Result<Arc<Identity>, Option<Refusal>> {
        login.not_blocked()?;
        let outcome = self
            .charged_exchange(login, conv, resp, nonce, secure, login.keys())
            .await
            .map_err(|Refused| None)?;
        match outcome {
            AuthOutcome::Ok(identity) => Ok(identity),
            AuthOutcome::RateLimited(refusal) => Err(Some(refusal)),
            AuthOutcome::Refused => {
                login.malformed();
                Err(None)
            }
            AuthOutcome::BadSecret => Err(Some(login.bad_secret(format!(
                "Access denied for user '{}' (using password: {})",
                login.user(),
                if resp.auth_response.is_empty() {
                    "NO"
                } else {
                    "YES"
                }
            )))),
        }
    }

    /// A login that names no target: a kill-only connection while the
    /// identity has a live session here, refused otherwise.
    async fn kill_only_or_refuse(
        &self,
        login: &Login<'_>,
        mut conv: Conversation,
        identity: &Identity,
        connection: ConnectionId,
    ) -> Result<LoggedIn, Refused> {
        if !self.kills.has_session_of(&identity.name) {
            login.failed("no_target");
            return Err(conv
                .fail(
                    code::BAD_DB,
                    "name the target as the database when you connect, e.g. `mariadb -h <jitgate> -P 3307 -u alice -p --ssl demo-mysql`",
                )
                .await);
        }
        let recorded = self.gate.audit().record(&AuditEvent {
            identity: Some(&identity.name),
            client_addr: Some(&login.peer().to_string()),
            reason: Some("kill_only"),
            detail: Some(
                "no target named while a session of this identity is live: the connection may only KILL the identity's own connections",
            ),
            ..AuditEvent::new("login_ok")
        });
        if recorded.is_err() {
            return Err(conv.fail(code::UNKNOWN_ERROR, AUDIT_DOWN_LOGIN).await);
        }
        conv.send(&packet::ok(0, status::AUTOCOMMIT)).await?;
        Ok(LoggedIn::KillOnly(KillOnly {
            client: conv.r,
            identity: identity.name.clone(),
            _connection: connection,
        }))
    }

    /// From the grant check to the upstream login.
    async fn admit(
        &self,
        login: &Login<'_>,
        identity: &Identity,
        resp: &HandshakeResponse,
    ) -> Result<(Admitted, upstream::Upstream), Refusal> {
        let lease = login.authorize(identity)?;
        let admitted = login.admit(identity, lease).await?;
        let terms = ClientTerms {
            capabilities: resp.capabilities,
            max_packet_size: resp.max_packet_size,
            collation: if resp.collation == 0 {
                45
            } else {
                resp.collation
            },
        };
        let lease = &admitted.lease;
        let connect = upstream::connect(&lease.target, &lease.grant.level, &lease.level, terms);
        let up = login.dial(&admitted, connect).await?;
        self.announced.learn(&lease.grant.target, &up.facts);
        Ok((admitted, up))
    }

    /// The `caching_sha2_password` exchange, charged to the login limiter:
    /// the attempt is charged before the client's scramble is checked and
    /// stays charged if a secret was checked and did not match, or if the
    /// client was asked for its password and did not log in, whatever it did
    /// instead (went away, sent garbage, asked for an RSA key, had no TLS).
    /// For a name in the fast-path cache that request follows a wrong
    /// scramble, which was a password check; charging it for every name
    /// alike keeps the limiter from telling cached names apart, and a
    /// scramble guess from ever going uncounted.
    async fn charged_exchange(
        &self,
        login: &Login<'_>,
        conv: &mut Conversation,
        resp: &HandshakeResponse,
        nonce: &[u8; 20],
        secure: bool,
        keys: LoginKeys,
    ) -> Result<AuthOutcome, Refused> {
        let attempt = match login.charge() {
            Ok(attempt) => attempt,
            Err(refusal) => return Ok(AuthOutcome::RateLimited(refusal)),
        };
        let user = login.user();
        let mut asked_for_password = false;
        let outcome = self
            .check_secret(
                conv,
                resp,
                nonce,
                secure,
                user,
                keys,
                &mut asked_for_password,
            )
            .await;
        let charged = match outcome {
            Ok(AuthOutcome::Ok(_)) => false,
            Ok(AuthOutcome::BadSecret) => true,
            _ => asked_for_password,
        };
        if !charged {
            attempt.refund();
        }
        outcome
    }

    /// The `caching_sha2_password` exchange proper (after switching the
    /// client to it if it started with another plugin).
    #[allow(clippy::too_many_arguments)]
    async fn check_secret(
        &self,
        conv: &mut Conversation,
        resp: &HandshakeResponse,
        nonce: &[u8; 20],
        secure: bool,
        user: &str,
        keys: LoginKeys,
        asked_for_password: &mut bool,
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
        // The fast path answers only a scramble that proves the password. A
        // wrong one goes on to full authentication, as for a name that never
        // logged in or does not exist: a caller without the password cannot
        // tell which names are cached (have logged in since the start).
        // The cache names the secret proven before; it counts only while
        // that secret is still one of the name's (not logged out, expired,
        // or changed in the config).
        if let Some(identity) = self
            .sha2_cache
            .proves_password(user, nonce, &scramble)
            .and_then(|stored_key| keys.match_stored_key(&stored_key))
        {
            conv.send(&packet::auth_more_data(&[auth::FAST_AUTH_OK]))
                .await?;
            return Ok(AuthOutcome::Ok(identity.identity));
        }
        // Full authentication: the client sends its password, so only over TLS.
        *asked_for_password = true;
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
        let pw = password.to_owned();
        let proven = tokio::task::spawn_blocking(move || keys.match_password(&pw))
            .await
            .ok()
            .flatten();
        let Some(proven) = proven else {
            return Ok(AuthOutcome::BadSecret);
        };
        self.sha2_cache
            .remember(user, password.as_bytes(), proven.stored_key);
        Ok(AuthOutcome::Ok(proven.identity))
    }

    async fn run_session(&self, e: Established) {
        let Established {
            mut client,
            upstream,
            admitted,
            connection,
        } = e;
        let (session, lease) = match admitted.open(&self.gate) {
            Ok(opened) => opened,
            Err(refusal) => {
                let _ = client
                    .get_mut()
                    .write_all(&frame(1, &render(&refusal)))
                    .await;
                let _ = client.get_mut().shutdown().await;
                upstream::quit(&mut upstream.reader.into_parts().0).await;
                return;
            }
        };
        // From here on, KILL from this identity's other connections finds it.
        let own_entry = connection.bind(KillEntry::new(
            &session.info,
            lease.target.clone(),
            lease.level.clone(),
            upstream.thread_id,
        ));
        let ctx = SessionCtx {
            session: session.relay_ctx(),
            target: lease.target.clone(),
            level: lease.level.clone(),
            kills: self.kills.clone(),
            connection: own_entry,
        };
        session.run(relay::run(&ctx, client, upstream, lease)).await;
        drop(connection);
    }

    /// A connection without a target: answer `KILL`s of the identity's own
    /// connections, refuse everything else, until the client quits.
    async fn run_kill_only(&self, k: KillOnly, peer: SocketAddr) {
        let KillOnly {
            mut client,
            identity,
            _connection,
        } = k;
        let id = format!("k_{:016x}", rand::random::<u64>());
        let mut seq = 0u64;
        loop {
            let m = match client.try_message() {
                Ok(Some(m)) => m,
                Ok(None) => match client.fill().await {
                    Ok(true) => continue,
                    _ => break,
                },
                Err(e) => {
                    let answer = frame(1, &packet::err(code::UNKNOWN_COM, &e.to_string()));
                    let _ = client.get_mut().write_all(&answer).await;
                    break;
                }
            };
            let answer_seq = m.last_seq.wrapping_add(1);
            let reply = match m.payload.split_first() {
                Some((&command::QUIT, _)) => break,
                Some((&command::PING, _)) => packet::ok(0, status::AUTOCOMMIT),
                Some((&command::QUERY, raw)) => match kill::parse_exact(raw) {
                    Some(k) => {
                        seq += 1;
                        let sql = crate::wire::text(raw);
                        self.kill_without_target(&identity, &id, seq, &sql, &k, peer)
                            .await
                    }
                    None => {
                        seq += 1;
                        let sql = crate::wire::text(raw);
                        self.refuse_without_target(&identity, &id, seq, Some(&sql), None, peer)
                    }
                },
                Some((&other, _)) => {
                    seq += 1;
                    let detail = format!("command {} (0x{other:02x})", command::name(other));
                    self.refuse_without_target(&identity, &id, seq, None, Some(&detail), peer)
                }
                None => packet::err(code::BAD_DB, NO_TARGET_KILL_ONLY),
            };
            if crate::wire::stream::send(client.get_mut(), &frame(answer_seq, &reply))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            client.get_mut().shutdown(),
        )
        .await;
    }

    /// Anything but a `KILL` on a connection without a target: refused, and
    /// audited like a refused statement.
    fn refuse_without_target(
        &self,
        identity: &str,
        conn: &str,
        seq: u64,
        sql: Option<&str>,
        detail: Option<&str>,
        peer: SocketAddr,
    ) -> bytes::BytesMut {
        let outcome = code::BAD_DB.0.to_string();
        let peer_s = peer.to_string();
        let _ = self.gate.audit().record(&AuditEvent {
            session: Some(conn),
            seq: Some(seq),
            identity: Some(identity),
            client_addr: Some(&peer_s),
            statement: sql,
            detail,
            reason: Some("no_target"),
            outcome: Some(&outcome),
            ..AuditEvent::new("statement_refused")
        });
        packet::err(code::BAD_DB, NO_TARGET_KILL_ONLY)
    }

    /// One `KILL` on a connection without a target, audited like a statement.
    async fn kill_without_target(
        &self,
        identity: &str,
        conn: &str,
        seq: u64,
        sql: &str,
        k: &KillStatement,
        peer: SocketAddr,
    ) -> bytes::BytesMut {
        let audit = &self.gate.audit();
        let peer_s = peer.to_string();
        let kind = crate::sql::StatementKind::Session.as_str();
        let Some(entry) = k.id.and_then(|id| self.kills.find(id, identity)) else {
            let outcome = code::UNKNOWN_THREAD.0.to_string();
            let _ = audit.record(&AuditEvent {
                session: Some(conn),
                identity: Some(identity),
                client_addr: Some(&peer_s),
                statement: Some(sql),
                kind: Some(kind),
                outcome: Some(&outcome),
                ..AuditEvent::new("statement_refused")
            });
            return packet::err(
                code::UNKNOWN_THREAD,
                &format!("Unknown thread id: {}", k.id_text),
            );
        };
        let what = match k.scope {
            KillScope::Query => "KILL QUERY",
            KillScope::Connection => "KILL CONNECTION",
        };
        let detail = format!(
            "{what} of jitgate connection {} (session {}), sent on a connection without a target",
            k.id_text, entry.session
        );
        let event = |name: &'static str| AuditEvent {
            session: Some(conn),
            identity: Some(identity),
            grant: Some(&entry.grant),
            target: Some(&entry.target.name),
            level: Some(&entry.level_name),
            client_addr: Some(&peer_s),
            seq: Some(seq),
            ..AuditEvent::new(name)
        };
        let started = std::time::Instant::now();
        if audit
            .record(&AuditEvent {
                statement: Some(sql),
                kind: Some(kind),
                detail: Some(&detail),
                ..event("statement")
            })
            .is_err()
        {
            return packet::err(code::UNKNOWN_ERROR, AUDIT_DOWN_LOGIN);
        }
        let by = format!("KILL CONNECTION {} from connection {conn}", k.id_text);
        let result = self.kills.kill(&entry, k.scope, &by).await;
        let (outcome, reply) = match result {
            KillResult::Done => ("OK".to_owned(), packet::ok(0, status::AUTOCOMMIT)),
            KillResult::Gone => (
                format!(
                    "ERR {} ({})",
                    code::UNKNOWN_THREAD.0,
                    code::UNKNOWN_THREAD.1
                ),
                packet::err(
                    code::UNKNOWN_THREAD,
                    &format!("Unknown thread id: {}", k.id_text),
                ),
            ),
            KillResult::Failed(why) => {
                tracing::warn!(victim = %entry.session, error = %why, "KILL QUERY through a side connection failed");
                (
                    format!("ERR {} ({})", code::UNKNOWN_ERROR.0, code::UNKNOWN_ERROR.1),
                    packet::err(
                        code::UNKNOWN_ERROR,
                        &format!("jitgate could not stop that query: {why}"),
                    ),
                )
            }
        };
        let took = started.elapsed().as_secs_f64();
        let _ = audit.record(&AuditEvent {
            outcome: Some(&outcome),
            rows: Some(0),
            duration_ms: Some((took * 1_000_000.0).round() / 1000.0),
            ..event("statement_end")
        });
        reply
    }
}

/// A refusal of the gate as an `ERR` payload.
fn render(refusal: &Refusal) -> bytes::BytesMut {
    let code = match refusal.cause {
        Cause::Busy => code::CON_COUNT,
        Cause::RateLimited | Cause::BadSecret => code::ACCESS_DENIED,
        Cause::Malformed => code::HANDSHAKE,
        Cause::NoSuchTarget => code::BAD_DB,
        Cause::NoGrant | Cause::ReadOnly | Cause::ReadAccount => code::DB_ACCESS_DENIED,
        Cause::AuditDown | Cause::StoreLost => code::UNKNOWN_ERROR,
        Cause::UpstreamDown => code::CONN_HOST_ERROR,
    };
    match refusal.hint {
        Some(hint) => packet::err(code, &format!("{}; {hint}", refusal.message)),
        None => packet::err(code, &refusal.message),
    }
}

const NO_TARGET_KILL_ONLY: &str = "this connection names no target, so it can only run `KILL [QUERY | CONNECTION] <id>` for your own jitgate connections; name the target as the database to do anything else, e.g. `mariadb -h <jitgate> -P 3307 -u alice -p --ssl demo-mysql`";

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
