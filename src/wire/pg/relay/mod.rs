//! The relay: client frames go up after inspection and audit, server frames
//! come down and close the audit records, until the session or its grant ends.
//!
//! The two directions run concurrently (so neither side's backpressure can
//! deadlock the other) and share one ordered queue of what the client is
//! waiting for. The queue is what lets the proxy answer a refused statement
//! itself without breaking the order of responses: its error is queued
//! behind the answers the server still owes, and written when it reaches the
//! front.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{ReadHalf, WriteHalf};

use super::framing::{Frame, FrameError, FrameReader, take_cstr_bytes};
use super::messages::{self, Severity, sqlstate};
use super::upstream::{self, Upstream};
use crate::access::Lease;
use crate::audit::{AuditEvent, Sealed};
use crate::sql::{self, Lexing, Reading, StatementKind};
pub use crate::wire::SessionEnd;
use crate::wire::admission;
use crate::wire::ending::{self, SessionEnding};
use crate::wire::gate::RelayCtx;
use crate::wire::quiet::Quiet;
use crate::wire::stream::Stream;

/// Write to the peer once this much is batched, even if more frames are buffered.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

pub struct SessionCtx {
    pub session: RelayCtx,
    /// Ends this level's busy backends in batches when a grant ends.
    pub reaper: Option<super::reaper::Reaper>,
}

impl std::ops::Deref for SessionCtx {
    type Target = RelayCtx;
    fn deref(&self) -> &RelayCtx {
        &self.session
    }
}

/// A statement whose outcome the server still owes.
struct Pending {
    seq: u64,
    kind: StatementKind,
    /// Not a plain read: it may change how the server reads later text
    /// (`SET standard_conforming_strings`, `DISCARD ALL`, a procedure…).
    unsettling: bool,
    started: Instant,
    rows: u64,
    outcome: Option<String>,
}

/// What the client is waiting for, in order.
enum Expect {
    /// A simple Query: results until ReadyForQuery.
    Query(Pending),
    /// An Execute: ends with CommandComplete, EmptyQuery, PortalSuspended or an error.
    Execute(Pending),
    /// A FunctionCall or other message answered up to ReadyForQuery, not audited as SQL.
    Sync { forward_ready: bool },
    /// An answer jitgate gives itself: an error and/or a ReadyForQuery.
    Local { error: Option<Bytes>, ready: bool },
}

#[derive(Default)]
struct Pipeline {
    expect: VecDeque<Expect>,
    /// Transaction status from the server's last ReadyForQuery.
    status: u8,
    /// Unsettling statements that finished since the last ReadyForQuery:
    /// they settle at the next one, since the server reports changed
    /// settings (ParameterStatus) just before ReadyForQuery, after the
    /// statement's CommandComplete.
    settled_at_ready: usize,
}

struct Shared<'a> {
    ctx: &'a SessionCtx,
    pipe: Mutex<Pipeline>,
    /// A Local answer was queued since the downward direction last looked.
    /// Only the upward direction queues them, and `run` polls the downward
    /// one right after it whenever this is set, so a flag is enough: no
    /// waker, no lock.
    local_queued: AtomicBool,
    /// Local answers in the queue: `drain_locals` takes the lock only if
    /// there are any.
    locals: AtomicUsize,
    /// True while a write to the client is in progress (a FATAL must not be spliced into it).
    writing_to_client: AtomicBool,
    seq: AtomicU64,
    /// How the server reads text now, as it last reported (`Lexing` bits).
    lexing: AtomicU8,
    /// Forwarded statements that may change how the server reads text and
    /// whose ReadyForQuery has not come back yet. While there are any, a
    /// pipelined text's reading is not known.
    unsettled: AtomicUsize,
    /// The client sent Terminate while statements were still running (see
    /// `client_to_upstream`).
    terminated: AtomicBool,
}

impl Shared<'_> {
    /// How the server will read the next text the client sends.
    fn reading(&self) -> Reading {
        // The count first: a statement settles only after its
        // ParameterStatus was taken in, so seeing it settled means seeing
        // what it reported.
        let in_flux = self.unsettled.load(Ordering::Acquire) > 0;
        let lexing = Lexing::from_bits(self.lexing.load(Ordering::Acquire));
        Reading::postgres(if in_flux {
            lexing.either(Lexing::POSTGRES_IN_FLUX)
        } else {
            lexing
        })
    }

    /// A statement about to be forwarded, to be waited for.
    fn pending(&self, seq: u64, kind: StatementKind, text: &str) -> Pending {
        let unsettling = sql::postgres_may_change_settings(kind, text);
        if unsettling {
            self.unsettled.fetch_add(1, Ordering::AcqRel);
        }
        Pending {
            seq,
            kind,
            unsettling,
            started: Instant::now(),
            rows: 0,
            outcome: None,
        }
    }

    /// Take in a ParameterStatus the server sent.
    fn parameter_status(&self, body: &[u8]) {
        let mut lexing = Lexing::from_bits(self.lexing.load(Ordering::Acquire));
        take_in_parameter(&mut lexing, body);
        self.lexing.store(lexing.bits(), Ordering::Release);
    }

    fn audit_end(&self, p: &Pending, outcome: &str) {
        let failed = is_sqlstate(outcome);
        self.ctx
            .statement_end(p.seq, p.kind, p.started, outcome, p.rows, failed);
    }
}

/// Relay until something ends the session, then end it properly.
pub async fn run(
    ctx: &SessionCtx,
    client_r: FrameReader<ReadHalf<Stream>>,
    mut client_w: WriteHalf<Stream>,
    up: Upstream,
    mut lease: Lease,
) -> SessionEnd {
    let Upstream {
        reader,
        parameter_status,
        pid,
        key,
        cancel_address,
        status,
        local_port,
        server,
        ..
    } = up;
    let (up_stream, up_buf) = reader.into_parts();
    // The upstream reader uses the same cap as the client reader.
    let max = client_r.max_message_bytes();
    let (up_r, mut up_w) = tokio::io::split(up_stream);
    let mut up_r = FrameReader::from_parts(up_r, up_buf, max);
    let mut client_r = client_r;
    let shared = Shared {
        ctx,
        pipe: Mutex::new(Pipeline {
            expect: VecDeque::new(),
            status,
            settled_at_ready: 0,
        }),
        local_queued: AtomicBool::new(false),
        locals: AtomicUsize::new(0),
        writing_to_client: AtomicBool::new(false),
        seq: AtomicU64::new(0),
        lexing: AtomicU8::new(initial_lexing(&parameter_status).bits()),
        unsettled: AtomicUsize::new(0),
        terminated: AtomicBool::new(false),
    };

    let end = {
        // Each branch is polled only when its own waker fired (see
        // `wire::quiet`), in this order: the upward direction first, then
        // the downward one, which is also polled whenever the upward one
        // has just queued a Local answer for it to write (`LocalQueued`).
        let mut upward = Quiet::new(client_to_upstream(&shared, &mut client_r, &mut up_w));
        let mut downward = Quiet::new(upstream_to_client(&shared, &mut up_r, &mut client_w));
        let mut ended = Quiet::new(lease.ended());
        let mut killed = Quiet::new(ctx.info.killed());
        std::future::poll_fn(|cx| {
            if let Poll::Ready(e) = upward.poll_woken(cx, false) {
                return Poll::Ready(e);
            }
            let local = shared.local_queued.load(Ordering::Acquire);
            if let Poll::Ready(e) = downward.poll_woken(cx, local) {
                return Poll::Ready(e);
            }
            if let Poll::Ready(r) = ended.poll_woken(cx, false) {
                return Poll::Ready(SessionEnd::GrantEnded(r));
            }
            killed.poll_woken(cx, false).map(|()| ctx.info.kill_end())
        })
        .await
    };

    // After a Terminate the server closing the connection is the end the
    // client asked for.
    let end = match end {
        SessionEnd::UpstreamClosed if shared.terminated.load(Ordering::Acquire) => {
            SessionEnd::ClientClosed
        }
        end => end,
    };
    let unfinished: Vec<Expect> = shared
        .pipe
        .lock()
        .map(|mut p| p.expect.drain(..).collect())
        .unwrap_or_default();
    let mut client = client_r.into_parts().0.unsplit(client_w);
    let ending = PgEnding {
        in_flight: unfinished
            .iter()
            .any(|e| !matches!(e, Expect::Local { .. })),
        unfinished,
        shared: &shared,
        mid_write: shared.writing_to_client.load(Ordering::Acquire),
        upstream: up_r.into_parts().0.unsplit(up_w),
        server,
        local_port,
        pid,
        key,
        cancel_address,
    };
    ending::end_session(&end, &ctx.info, &lease, &mut client, ending).await;
    end
}

/// How a PostgreSQL session ends (see `wire::ending`). An idle backend
/// ends on our Terminate; only a busy one needs to be stopped: when a grant
/// ends, by the level's reaper (one statement for all the grant's busy
/// backends), otherwise, or if the reaper could not, by a cancel request
/// (a new connection and a process on the server).
struct PgEnding<'a> {
    shared: &'a Shared<'a>,
    /// What the client was still waiting for.
    unfinished: Vec<Expect>,
    /// Some of it runs on the server.
    in_flight: bool,
    /// A message to the client was cut off: nothing of ours may follow.
    mid_write: bool,
    upstream: Stream,
    server: Option<std::net::SocketAddr>,
    local_port: Option<u16>,
    pid: u32,
    key: Vec<u8>,
    cancel_address: String,
}

impl SessionEnding for PgEnding<'_> {
    fn farewell(&self, told: &str, hint: Option<&str>) -> Bytes {
        if self.mid_write {
            return Bytes::new();
        }
        let message = format!("terminating connection: {told}");
        messages::error(Severity::Fatal, sqlstate::ADMIN_SHUTDOWN, &message, hint)
    }

    fn upstream_lost(&self) -> Bytes {
        if self.mid_write {
            return Bytes::new();
        }
        messages::error(
            Severity::Fatal,
            sqlstate::CONNECTION_FAILURE,
            "the target database closed the connection",
            None,
        )
    }

    fn grant_ending(&mut self) {
        if let (true, Some(reaper)) = (self.in_flight, &self.shared.ctx.reaper) {
            reaper.prepare();
        }
    }

    fn record_unfinished(&mut self, end: &SessionEnd) {
        for e in &self.unfinished {
            if let Expect::Query(p) | Expect::Execute(p) = e {
                self.shared.audit_end(p, end.reason());
            }
        }
    }

    async fn stop_running(&mut self, end: &SessionEnd) {
        if !self.in_flight || !end.proxy_ended() {
            return;
        }
        let reaped = match (end, &self.shared.ctx.reaper, self.server, self.local_port) {
            (SessionEnd::GrantEnded(_), Some(reaper), Some(server), Some(port)) => {
                reaper.end_backend(server, self.pid, port).await
            }
            _ => false,
        };
        if reaped {
            return;
        }
        let cancel = upstream::send_cancel(&self.cancel_address, self.pid, &self.key);
        if !matches!(ending::within_stop_limit(cancel).await, Some(Ok(()))) {
            tracing::warn!(session = %self.shared.ctx.info.id, "could not deliver the cancel request upstream");
        }
    }

    async fn close_upstream(&mut self) {
        terminate_upstream(&mut self.upstream).await;
    }
}

async fn terminate_upstream(upstream: &mut Stream) {
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        upstream.finish(TERMINATE),
    )
    .await;
}

/// State of the upward direction that only it touches.
#[derive(Default)]
struct Upward {
    /// Prepared statement name -> SQL text (for auditing Execute as SQL)
    /// and its kind, classified once at Parse.
    statements: HashMap<Bytes, Prepared>,
    /// Portal name -> its statement.
    portals: HashMap<Bytes, Prepared>,
    /// The kinds of the named statements, for SQL's `EXECUTE name`.
    prepared: crate::sql::PreparedStatements,
    /// Extended-protocol messages were forwarded since the last Sync.
    unsynced: bool,
    /// After a refused extended-protocol message: drop everything until Sync.
    discarding: bool,
    /// The last audit record sealed for the batch being read: the batch goes
    /// up only once it is written (see `AuditLog::write_sealed`).
    unwritten: Option<Sealed>,
}

/// A prepared statement (or a portal bound to one): its text for the audit
/// record of each Execute, and its kind, classified once at Parse.
#[derive(Clone)]
struct Prepared {
    sql: Arc<str>,
    /// The exact bytes, base64, when `sql` is not them (not UTF-8).
    exact: Option<Arc<str>>,
    kind: StatementKind,
}

enum Verdict {
    Forward,
    Drop,
    Terminate,
}

async fn client_to_upstream(
    shared: &Shared<'_>,
    client_r: &mut FrameReader<ReadHalf<Stream>>,
    up_w: &mut WriteHalf<Stream>,
) -> SessionEnd {
    let mut st = Upward::default();
    let mut out = BytesMut::with_capacity(16 * 1024);
    loop {
        let first = match client_r.next().await {
            Ok(Some(f)) => f,
            Ok(None) => return SessionEnd::ClientClosed,
            Err(FrameError::Io(_)) | Err(FrameError::Truncated) => return SessionEnd::ClientClosed,
            Err(e) => return refuse_client(shared, e).await,
        };
        let mut frame = Some(first);
        let mut terminate = false;
        let mut bad = None;
        while let Some(f) = frame.take() {
            // Only a frame longer than the inline limit can hold such a text.
            let long_kind = if crate::sql::classifies_inline(f.bytes.len()) {
                None
            } else {
                long_text_kind(shared, &st, &f).await
            };
            match inspect(shared, &mut st, &f, &mut out, long_kind) {
                Verdict::Forward => out.extend_from_slice(&f.bytes),
                Verdict::Drop => {}
                Verdict::Terminate => {
                    terminate = true;
                    break;
                }
            }
            if out.len() >= WRITE_BATCH_BYTES {
                break;
            }
            frame = match client_r.try_frame() {
                Ok(f) => f,
                Err(e) => {
                    // What came before the bad frame was audited as
                    // forwarded: it still goes up, and its answers come
                    // back before the error.
                    bad = Some(e);
                    None
                }
            };
        }
        if let Some(sealed) = st.unwritten.take()
            && let Err(e) = shared.ctx.audit.write_sealed(sealed).await
        {
            // Its statements were not forwarded: fail closed.
            tracing::error!(error = %e, "audit log write failed; ending the session unforwarded");
            return SessionEnd::AuditFailed;
        }
        if !out.is_empty() {
            shared.ctx.metrics.bytes_up.inc_by(out.len() as u64);
            if let Err(e) = crate::wire::stream::send(up_w, &out).await {
                return SessionEnd::UpstreamError(e.to_string());
            }
            out.clear();
        }
        if let Some(e) = bad {
            return refuse_client(shared, e).await;
        }
        if terminate {
            // PostgreSQL reads a Terminate only once the running statement
            // is done: until then its results still go to the client, and
            // the connection closes when the backend exits. So with
            // statements in flight the Terminate goes up behind them and
            // jitgate reads no more from the client (as the server reads
            // nothing after it), while the downward direction goes on
            // until the server closes. What is not the same: a client that
            // has closed its socket makes jitgate's next write fail, and
            // jitgate then ends the session at once; the server would
            // notice only at its own next write (or its
            // client_connection_check_interval).
            let busy = shared
                .pipe
                .lock()
                .is_ok_and(|p| p.expect.iter().any(|e| !matches!(e, Expect::Local { .. })));
            if !busy {
                return SessionEnd::ClientClosed;
            }
            shared.terminated.store(true, Ordering::Release);
            if let Err(e) = crate::wire::stream::send(up_w, TERMINATE).await {
                return SessionEnd::UpstreamError(e.to_string());
            }
            return std::future::pending().await;
        }
    }
}

const TERMINATE: &[u8] = &[b'X', 0, 0, 0, 4];

/// A client frame broke the protocol or a limit: say so, then end the session.
async fn refuse_client(shared: &Shared<'_>, e: FrameError) -> SessionEnd {
    let code = match e {
        FrameError::TooLarge { .. } => sqlstate::PROGRAM_LIMIT_EXCEEDED,
        _ => sqlstate::PROTOCOL_VIOLATION,
    };
    let detail = e.to_string();
    queue_local(
        shared,
        Some(messages::error(Severity::Fatal, code, &detail, None)),
        false,
    );
    // Give the downward direction a moment to deliver the error in order.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    SessionEnd::ClientError(detail)
}

fn queue_local(shared: &Shared<'_>, error: Option<Bytes>, ready: bool) {
    if let Ok(mut p) = shared.pipe.lock() {
        p.expect.push_back(Expect::Local { error, ready });
        shared.locals.fetch_add(1, Ordering::AcqRel);
    }
    shared.local_queued.store(true, Ordering::Release);
}

fn push_expect(shared: &Shared<'_>, e: Expect) {
    if let Ok(mut p) = shared.pipe.lock() {
        p.expect.push_back(e);
    }
}

/// An outcome that is a SQLSTATE (five characters, digits and capitals) rather than a command tag.
fn is_sqlstate(outcome: &str) -> bool {
    outcome.len() == 5
        && outcome
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        && outcome.bytes().any(|b| b.is_ascii_digit())
}

/// The server's reading of text at login, from its ParameterStatus messages.
fn initial_lexing(parameter_status: &[Bytes]) -> Lexing {
    let mut lexing = Lexing::DEFAULT;
    for frame in parameter_status {
        // After the tag and length.
        take_in_parameter(&mut lexing, frame.get(5..).unwrap_or_default());
    }
    lexing
}

/// Apply one ParameterStatus body (name, value) to a session's reading.
fn take_in_parameter(lexing: &mut Lexing, mut body: &[u8]) {
    if let (Some(name), Some(value)) = (take_cstr_bytes(&mut body), take_cstr_bytes(&mut body)) {
        lexing.postgres_parameter(name, value);
    }
}

async fn upstream_to_client(
    shared: &Shared<'_>,
    up_r: &mut FrameReader<ReadHalf<Stream>>,
    client_w: &mut WriteHalf<Stream>,
) -> SessionEnd {
    let mut out = BytesMut::with_capacity(16 * 1024);
    loop {
        drain_locals(shared, &mut out);
        loop {
            let frame = match up_r.try_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return SessionEnd::UpstreamError(e.to_string()),
            };
            if observe(shared, &frame) {
                out.extend_from_slice(&frame.bytes);
            }
            drain_locals(shared, &mut out);
            if out.len() >= WRITE_BATCH_BYTES {
                break;
            }
        }
        if !out.is_empty() {
            shared.ctx.metrics.bytes_down.inc_by(out.len() as u64);
            shared.writing_to_client.store(true, Ordering::Release);
            let r = crate::wire::stream::send(client_w, &out).await;
            shared.writing_to_client.store(false, Ordering::Release);
            if r.is_err() {
                return SessionEnd::ClientClosed;
            }
            out.clear();
            // More frames may already be buffered: handle them before reading.
            if up_r.buffered() > 0 {
                continue;
            }
        }
        tokio::select! {
            biased;
            _ = LocalQueued(&shared.local_queued) => {}
            r = up_r.fill() => match r {
                Ok(true) => {}
                Ok(false) => return SessionEnd::UpstreamClosed,
                Err(FrameError::Io(_)) | Err(FrameError::Truncated) => return SessionEnd::UpstreamClosed,
                Err(e) => return SessionEnd::UpstreamError(e.to_string()),
            },
        }
    }
}

/// Ready once a Local answer was queued (and clears the flag).
///
/// It registers no waker: the flag is only set by the upward direction,
/// and `run` polls the downward one right after it whenever the flag is
/// set. So a queued answer is seen in the same poll that queued it, or, if
/// the downward direction is in the middle of a write to the client, when
/// that write is done (it then drains the queue before waiting again).
struct LocalQueued<'a>(&'a AtomicBool);

impl std::future::Future for LocalQueued<'_> {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0.swap(false, Ordering::AcqRel) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

/// Write queued Local answers that have reached the front of the queue.
fn drain_locals(shared: &Shared<'_>, out: &mut BytesMut) {
    if shared.locals.load(Ordering::Acquire) == 0 {
        return;
    }
    let Ok(mut p) = shared.pipe.lock() else {
        return;
    };
    while let Some(Expect::Local { .. }) = p.expect.front() {
        if let Some(Expect::Local { error, ready }) = p.expect.pop_front() {
            shared.locals.fetch_sub(1, Ordering::AcqRel);
            if let Some(e) = error {
                out.extend_from_slice(&e);
            }
            if ready {
                out.extend_from_slice(&messages::ready_for_query(p.status));
            }
        }
    }
}

mod inspect;
mod observe;

use inspect::{inspect, long_text_kind};
use observe::observe;
