//! Serving the admin API's connections, with the limits `axum::serve` lacks.
//!
//! `axum::serve` keeps every connection as long as the client likes and
//! accepts as many as the process has descriptors: a few thousand idle
//! sockets on the admin port would leave the database listeners none. So the
//! API runs its own accept loop (hyper's HTTP/1 server, as axum does):
//!
//! - at most `limits.admin_max_connections` at once; one more is answered
//!   `503` with the usual JSON error and closed at once;
//! - a request's headers must arrive within `limits.admin_header_read_timeout`
//!   (hyper's own timer, which also runs while a kept-alive connection waits
//!   for its next request), so a slow trickle of header bytes does not hold
//!   a slot;
//! - a connection with no bytes either way for `limits.admin_idle_timeout`
//!   is closed (a stalled body upload, a client that stopped reading);
//! - a request must be read, body included, and answered within
//!   `limits.admin_request_timeout`, or it gets `408` (a body that trickles
//!   in a byte at a time is never idle);
//! - with `[admin] tls_cert`, each connection starts with a TLS handshake,
//!   which must finish within `limits.admin_header_read_timeout`;
//! - a request hyper cannot parse (a bad request line, a malformed header or
//!   `Content-Length`, too many or too large headers) never reaches the
//!   router: hyper answers it itself, with an empty body. [`Watched`] puts
//!   the API's JSON error in place of that answer (see `protocol_error`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use super::error::ApiError;
use crate::config::Limits;

/// Accept and serve connections until the listener fails for good, over
/// TLS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    tls: Option<TlsAcceptor>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.admin_max_connections));
    let timeouts = Timeouts {
        header_read: limits.admin_header_read_timeout,
        idle: limits.admin_idle_timeout,
        request: limits.admin_request_timeout,
    };
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: never a reason to stop the API.
                tracing::warn!(error = %e, "admin API: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // A TLS client could not read a plain answer: it is just closed.
            if tls.is_none() {
                refuse_over_cap(&tcp);
            }
            tracing::warn!(%peer, "admin API: connection refused, limits.admin_max_connections reached");
            continue;
        };
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            match tls {
                None => serve_one(tcp, peer, router, timeouts).await,
                Some(tls) => {
                    match tokio::time::timeout(timeouts.header_read, tls.accept(tcp)).await {
                        Ok(Ok(stream)) => serve_one(stream, peer, router, timeouts).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "admin API: TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "admin API: TLS handshake not done in time; closing");
                        }
                    }
                }
            }
            drop(slot);
        });
    }
}

/// One best-effort write of a `503` (the socket buffer of a fresh
/// connection takes it whole); the accept loop never waits on this client.
fn refuse_over_cap(tcp: &TcpStream) {
    let refusal = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many connections",
        "the jitgate admin API has reached limits.admin_max_connections open connections; close idle ones (or wait a few seconds) and try again",
    )
    .retry_after(5);
    let _ = tcp.try_write(&refusal.to_http1_bytes());
}

#[derive(Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    idle: Duration,
    request: Duration,
}

async fn serve_one<S>(stream: S, peer: SocketAddr, router: Router, timeouts: Timeouts)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watched = Watched::new(stream);
    let last_active = watched.last_active.clone();
    let started = watched.started;
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        // The failed-login limit counts by client address (see `auth.rs`).
        req.extensions_mut().insert(ConnectInfo(peer));
        let answer = router.clone().call(req);
        async move {
            match tokio::time::timeout(timeouts.request, answer).await {
                Ok(answered) => answered,
                Err(_) => Ok(too_slow(timeouts.request).into_response()),
            }
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    let conn = http.serve_connection(TokioIo::new(watched), service);
    tokio::pin!(conn);
    loop {
        let idle_since = started + Duration::from_millis(last_active.load(Ordering::Relaxed));
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "admin API connection ended");
                }
                return;
            }
            _ = tokio::time::sleep_until(idle_since + timeouts.idle) => {
                let now_idle_since =
                    started + Duration::from_millis(last_active.load(Ordering::Relaxed));
                if now_idle_since == idle_since {
                    tracing::debug!(%peer, "admin API connection idle too long; closing it");
                    return;
                }
            }
        }
    }
}

fn too_slow(limit: Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request timeout",
        format!(
            "the request was not received and answered within {} (limits.admin_request_timeout); send the whole request at once and try again",
            humantime::format_duration(limit)
        ),
    )
}

/// hyper's own answers to requests it cannot parse: these status lines with
/// an empty body. The router never answers so (every `ApiError` has a body).
const HYPER_PARSE_ERRORS: [(&str, StatusCode); 3] = [
    ("HTTP/1.1 400 Bad Request\r\n", StatusCode::BAD_REQUEST),
    (
        "HTTP/1.1 431 Request Header Fields Too Large\r\n",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    ),
    ("HTTP/1.1 414 URI Too Long\r\n", StatusCode::URI_TOO_LONG),
];

/// If `head` is hyper's empty answer to a request it could not parse, the
/// API's JSON answer for the same status, to send instead. hyper writes its
/// answer in one piece at the start of a response (the socket takes no
/// vectored writes, so hyper flattens each response into one buffer).
fn protocol_error(head: &[u8]) -> Option<Vec<u8>> {
    let (_, status) = HYPER_PARSE_ERRORS
        .iter()
        .find(|(line, _)| head.starts_with(line.as_bytes()))?;
    let text = std::str::from_utf8(head).ok()?;
    let (fields, body) = text.split_once("\r\n\r\n")?;
    let empty = body.is_empty()
        && fields
            .lines()
            .any(|l| l.eq_ignore_ascii_case("content-length: 0"));
    if !empty {
        return None;
    }
    let error = match *status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ApiError::new(
            *status,
            "headers too large",
            "the request's headers are too many or too large; send fewer and shorter headers (the API needs only Authorization and Content-Type)",
        ),
        StatusCode::URI_TOO_LONG => ApiError::new(
            *status,
            "path too long",
            "the request's path is longer than any the API has; GET /v1/openapi.json lists the endpoints",
        ),
        _ => ApiError::bad_request(
            "bad request",
            "jitgate could not read this as an HTTP/1.1 request: its request line, a header or its Content-Length is malformed; send a well-formed request (the jitgate CLI and curl do)",
        ),
    };
    Some(error.to_http1_bytes())
}

/// A socket that notes when bytes last moved either way, for the idle
/// timeout, and swaps hyper's empty parse-error answers for JSON ones.
struct Watched<S> {
    tcp: S,
    started: Instant,
    /// Milliseconds after `started`.
    last_active: Arc<AtomicU64>,
    /// The JSON answer sent in place of hyper's, and how much of it is out.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<S> Watched<S> {
    fn new(tcp: S) -> Watched<S> {
        Watched {
            tcp,
            started: Instant::now(),
            last_active: Arc::new(AtomicU64::new(0)),
            replacement: None,
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active.store(ms, Ordering::Relaxed);
    }
}

impl<S: AsyncWrite + Unpin> Watched<S> {
    /// Write out what is left of a replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((bytes, sent)) = &mut self.replacement {
            if *sent == bytes.len() {
                self.replacement = None;
                break;
            }
            match Pin::new(&mut self.tcp).poll_write(cx, &bytes[*sent..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    *sent += n;
                    self.touch();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.replacement.is_some() {
            std::task::ready!(self.poll_replacement(cx))?;
        }
        if let Some(answer) = protocol_error(buf) {
            // hyper counts its answer as written; flush and shutdown send ours.
            self.replacement = Some((answer, 0));
            if let Poll::Ready(Err(e)) = self.poll_replacement(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        let polled = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
