//! The client-facing side: accept, TLS, startup, SCRAM, grant check,
//! upstream login, then hand over to the relay.
//!
//! Nothing reaches the upstream before the client has proved its identity
//! and holds an active grant (invariant 1). Every handshake runs under a
//! timeout and a cap on pending handshakes; sessions are capped too.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::cancel::{CancelKeys, UpstreamKey};
use super::framing::{FrameError, FrameReader, StartupPacket, read_startup, take_cstr_bytes};
use super::messages::{self, Severity, sqlstate};
use super::relay;
use super::scram::{MECHANISM, ScramError, ScramServer};
use super::upstream;
use crate::config::Protocol;
use crate::wire::gate::{Admitted, Cause, Gate, Login, Refusal};
use crate::wire::handshakes::PendingHandshake;
use crate::wire::stream::Stream;

/// Auth messages are small; a client cannot make us buffer more than this before login.
const MAX_AUTH_MESSAGE_BYTES: usize = 8 * 1024;

pub struct PgFront {
    gate: Arc<Gate>,
    tls: Option<TlsAcceptor>,
    cancel_keys: Arc<CancelKeys>,
    reapers: super::reaper::Reapers,
}

/// A client that finished the handshake: authenticated, granted, logged in upstream.
struct Established {
    client_r: FrameReader<ReadHalf<Stream>>,
    client_w: WriteHalf<Stream>,
    upstream: upstream::Upstream,
    admitted: Admitted,
    reaper: Option<super::reaper::Reaper>,
}

/// Why a handshake stopped without a session; the client has been told.
struct Refused;

impl PgFront {
    pub fn new(gate: Arc<Gate>, tls: Option<TlsAcceptor>) -> Arc<PgFront> {
        Arc::new(PgFront {
            gate,
            tls,
            cancel_keys: Arc::default(),
            reapers: Default::default(),
        })
    }

    /// One accepted connection, from first byte to the session's end
    /// (run by `wire::accept_loop` on a session thread).
    pub async fn handle(self: Arc<Self>, mut tcp: TcpStream, peer: SocketAddr) {
        let mut pending = match self.gate.admit_handshake(peer.ip()) {
            Ok(p) => p,
            Err(refusal) => {
                let _ = tcp.write_all(&render(&refusal)).await;
                return;
            }
        };
        let limit = self.gate.limits().handshake_timeout;
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
        self.run_session(established).await;
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        pending: &mut PendingHandshake,
    ) -> Result<Option<Established>, Refused> {
        let Some((mut stream, major, minor, params)) = self.negotiate(tcp, peer, pending).await?
        else {
            return Ok(None);
        };
        if self.gate.limits().tls_required && !stream.is_tls() {
            return Err(fail_stream(
                &mut stream,
                sqlstate::INVALID_AUTHORIZATION,
                "jitgate requires TLS; this connection is not encrypted",
                Some("connect with sslmode=require (or verify-full)"),
            )
            .await);
        }
        let (user, target) = match check_startup(&mut stream, major, minor, &params).await {
            Ok(named) => named,
            Err(Some((code, message, hint))) => {
                return Err(fail_stream(&mut stream, code, &message, hint).await);
            }
            Err(None) => return Err(Refused),
        };
        let (r, mut w) = tokio::io::split(stream);
        let mut r = FrameReader::new(r, MAX_AUTH_MESSAGE_BYTES);
        let login = self.gate.login(Protocol::Postgres, &user, &target, peer);
        match self.log_in(&login, &mut r, &mut w, &params).await {
            Ok(Some((admitted, up))) => {
                let r = r.with_max(self.gate.limits().max_message_bytes);
                let reaper = up.local_port.map(|_| {
                    let lease = &admitted.lease;
                    self.reapers.for_level(
                        &lease.target,
                        &lease.grant.level,
                        &lease.level,
                        self.gate.limits().max_message_bytes,
                    )
                });
                Ok(Some(Established {
                    reaper,
                    client_r: r,
                    client_w: w,
                    upstream: up,
                    admitted,
                }))
            }
            Ok(None) => Err(Refused),
            Err(refusal) => Err(fail(&mut w, &refusal).await),
        }
    }

    /// The requests before the startup message: TLS (or not), GSSAPI
    /// encryption (declined), a cancel request (forwarded, and the
    /// connection is done: `None`). The first message takes the handshake
    /// slot of a client that speaks.
    async fn negotiate(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        pending: &mut PendingHandshake,
    ) -> Result<Option<(Stream, u16, u16, Vec<(String, String)>)>, Refused> {
        let mut stream = Stream::Plain(tcp);
        let first_message_timeout = self.gate.limits().first_message_timeout;
        let mut first = true;
        loop {
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
                    let why = e.to_string();
                    return Err(
                        fail_stream(&mut stream, sqlstate::PROTOCOL_VIOLATION, &why, None).await,
                    );
                }
            };
            // A cancel request is over at once and needs no handshake slot.
            if first
                && !matches!(packet, StartupPacket::Cancel { .. })
                && let Err(full) = pending.spoke()
            {
                let why = full.to_string();
                return Err(
                    fail_stream(&mut stream, sqlstate::TOO_MANY_CONNECTIONS, &why, None).await,
                );
            }
            first = false;
            match packet {
                StartupPacket::SslRequest => stream = self.start_tls(stream, peer).await?,
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
                } => return Ok(Some((stream, major, minor, params))),
            }
        }
    }

    /// Answer an SSLRequest: TLS when this listener has it, `N` otherwise.
    async fn start_tls(&self, stream: Stream, peer: SocketAddr) -> Result<Stream, Refused> {
        match (stream, &self.tls) {
            (Stream::Plain(mut tcp), Some(acceptor)) => {
                tcp.write_all(b"S").await.map_err(|_| Refused)?;
                let tls = acceptor.accept(tcp).await.map_err(|e| {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    Refused
                })?;
                Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))))
            }
            (Stream::Plain(mut tcp), None) => {
                tcp.write_all(b"N").await.map_err(|_| Refused)?;
                Ok(Stream::Plain(tcp))
            }
            (mut s @ Stream::Tls(_), _) => Err(fail_stream(
                &mut s,
                sqlstate::PROTOCOL_VIOLATION,
                "SSLRequest inside TLS",
                None,
            )
            .await),
        }
    }

    /// From the SCRAM exchange to the upstream login. `Ok(None)` when the
    /// client went away mid-exchange (nobody to tell).
    async fn log_in(
        &self,
        login: &Login<'_>,
        r: &mut FrameReader<ReadHalf<Stream>>,
        w: &mut WriteHalf<Stream>,
        params: &[(String, String)],
    ) -> Result<Option<(Admitted, upstream::Upstream)>, Refusal> {
        login.not_blocked()?;
        // SCRAM-SHA-256, against a decoy verifier for unknown names.
        let scram = self.scram_exchange(login, r, w, login.keys()).await;
        let identity = match scram {
            Ok(identity) => identity,
            Err(ScramFailure::Io) => return Ok(None),
            Err(ScramFailure::RateLimited(refusal)) => return Err(refusal),
            Err(ScramFailure::Malformed(why)) => {
                login.malformed();
                return Err(Refusal::new(Cause::Malformed, why, None));
            }
            Err(ScramFailure::BadPassword) => {
                return Err(login.bad_secret(format!(
                    "password authentication failed for user \"{}\"",
                    login.user()
                )));
            }
        };
        let lease = login.authorize(&identity)?;
        if lease.level.read_only
            && let Some(name) = upstream::refused_on_read_only(params)
        {
            let why = format!(
                "startup parameter \"{name}\" is not allowed on your read-only grant for {} (level {}): it does what SET {name} does, which a read-only grant refuses",
                lease.grant.target, lease.grant.level
            );
            return Err(login.refuse(
                "read_only_startup_parameter",
                "refused_startup_parameter",
                Refusal::new(
                    Cause::ReadOnly,
                    why,
                    Some("leave it out of the connection string and PGOPTIONS, or request a level that allows writes with `jitgate request`"),
                ),
            ));
        }
        let admitted = login.admit(&identity, lease).await?;
        let lease = &admitted.lease;
        let up = login
            .dial(
                &admitted,
                upstream::connect(
                    &lease.target,
                    &lease.grant.level,
                    &lease.level,
                    params,
                    self.gate.limits().max_message_bytes,
                ),
            )
            .await?;
        Ok(Some((admitted, up)))
    }

    async fn scram_exchange(
        &self,
        login: &Login<'_>,
        r: &mut FrameReader<ReadHalf<Stream>>,
        w: &mut WriteHalf<Stream>,
        keys: crate::identity::LoginKeys,
    ) -> Result<Arc<crate::identity::Identity>, ScramFailure> {
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
        let (server, server_first) = ScramServer::start(keys, b).map_err(ScramFailure::from)?;
        w.write_all(&messages::auth_sasl_continue(&server_first))
            .await
            .map_err(|_| ScramFailure::Io)?;
        let last = read_password_message(r).await?;
        // Charged before the proof is checked, refunded only if it matched.
        let attempt = login.charge().map_err(ScramFailure::RateLimited)?;
        let (identity, server_final) = server.finish(&last).map_err(ScramFailure::from)?;
        attempt.refund();
        w.write_all(&messages::auth_sasl_final(&server_final))
            .await
            .map_err(|_| ScramFailure::Io)?;
        Ok(identity)
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

    async fn run_session(&self, e: Established) {
        let Established {
            client_r,
            mut client_w,
            upstream,
            admitted,
            reaper,
        } = e;
        let (session, lease) = match admitted.open(&self.gate) {
            Ok(opened) => opened,
            Err(refusal) => {
                let _ = client_w.write_all(&render(&refusal)).await;
                return;
            }
        };
        let key_guard = self.cancel_keys.issue(UpstreamKey {
            address: upstream.cancel_address.clone(),
            pid: upstream.pid,
            key: upstream.key.clone(),
        });
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
            session: session.relay_ctx(),
            reaper,
        };
        session
            .run(relay::run(&ctx, client_r, client_w, upstream, lease))
            .await;
        drop(key_guard);
    }
}

/// What the startup message asks for, checked: the protocol version
/// (3.0; a newer minor or `_pq_.` options are negotiated down), the user
/// and the target (the database, the user's name if none). `Err(None)`:
/// the client went away.
async fn check_startup(
    stream: &mut Stream,
    major: u16,
    minor: u16,
    params: &[(String, String)],
) -> Result<(String, String), Option<(&'static str, String, Option<&'static str>)>> {
    if major != 3 {
        return Err(Some((
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("unsupported frontend protocol {major}.{minor}: jitgate speaks 3.0"),
            None,
        )));
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
            .map_err(|_| None)?;
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(user) = param("user").filter(|u| !u.is_empty()).map(str::to_owned) else {
        return Err(Some((
            sqlstate::INVALID_AUTHORIZATION,
            "no user name in the startup packet".to_owned(),
            None,
        )));
    };
    let target = param("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user)
        .to_owned();
    if param("replication").is_some_and(|r| r != "false" && r != "0" && r != "off") {
        return Err(Some((
            sqlstate::FEATURE_NOT_SUPPORTED,
            "replication connections are not supported through jitgate".to_owned(),
            None,
        )));
    }
    Ok((user, target))
}

enum ScramFailure {
    Io,
    Malformed(String),
    BadPassword,
    /// No login attempts left for this identity or address.
    RateLimited(Refusal),
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

/// A refusal of the gate as a FATAL `ErrorResponse`.
fn render(refusal: &Refusal) -> Bytes {
    let code = match refusal.cause {
        Cause::Busy => sqlstate::TOO_MANY_CONNECTIONS,
        Cause::RateLimited | Cause::NoGrant => sqlstate::INVALID_AUTHORIZATION,
        Cause::BadSecret => sqlstate::INVALID_PASSWORD,
        Cause::Malformed => sqlstate::PROTOCOL_VIOLATION,
        Cause::NoSuchTarget => sqlstate::INVALID_CATALOG_NAME,
        Cause::ReadOnly => sqlstate::READ_ONLY_TRANSACTION,
        Cause::AuditDown => sqlstate::IO_ERROR,
        Cause::StoreLost => sqlstate::CANNOT_CONNECT_NOW,
        Cause::ReadAccount => sqlstate::INSUFFICIENT_PRIVILEGE,
        Cause::UpstreamDown => sqlstate::CONNECTION_FAILURE,
    };
    messages::error(Severity::Fatal, code, &refusal.message, refusal.hint)
}

/// Send the refusal and close (TLS is closed with close_notify).
async fn fail(w: &mut WriteHalf<Stream>, refusal: &Refusal) -> Refused {
    let _ = w.write_all(&render(refusal)).await;
    let _ = w.shutdown().await;
    Refused
}

/// Send a FATAL error before the login proper and close.
async fn fail_stream(s: &mut Stream, code: &str, message: &str, hint: Option<&str>) -> Refused {
    let _ = s
        .write_all(&messages::error(Severity::Fatal, code, message, hint))
        .await;
    let _ = s.shutdown().await;
    Refused
}
