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
//!   in a byte at a time is never idle).

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
use tower_service::Service;

use super::error::ApiError;
use crate::config::Limits;

/// What a connection over the cap is told before it is closed.
const OVER_CAP: &str = "{\"error\":\"too many connections\",\"detail\":\"the jitgate admin API has reached limits.admin_max_connections open connections; close idle ones (or wait a few seconds) and try again\"}";

/// Accept and serve connections until the listener fails for good.
pub async fn serve(listener: TcpListener, router: Router, limits: &Limits) -> std::io::Result<()> {
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
            refuse_over_cap(&tcp);
            tracing::warn!(%peer, "admin API: connection refused, limits.admin_max_connections reached");
            continue;
        };
        let router = router.clone();
        tokio::spawn(async move {
            serve_one(tcp, peer, router, timeouts).await;
            drop(slot);
        });
    }
}

/// One best-effort write of a `503` (the socket buffer of a fresh
/// connection takes it whole); the accept loop never waits on this client.
fn refuse_over_cap(tcp: &TcpStream) {
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{OVER_CAP}",
        OVER_CAP.len()
    );
    let _ = tcp.try_write(response.as_bytes());
}

#[derive(Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    idle: Duration,
    request: Duration,
}

async fn serve_one(tcp: TcpStream, peer: SocketAddr, router: Router, timeouts: Timeouts) {
    let _ = tcp.set_nodelay(true);
    let watched = Watched::new(tcp);
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

/// A socket that notes when bytes last moved either way, for the idle timeout.
struct Watched {
    tcp: TcpStream,
    started: Instant,
    /// Milliseconds after `started`.
    last_active: Arc<AtomicU64>,
}

impl Watched {
    fn new(tcp: TcpStream) -> Watched {
        Watched {
            tcp,
            started: Instant::now(),
            last_active: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
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

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
