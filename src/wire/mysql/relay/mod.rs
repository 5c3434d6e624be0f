//! The relay: a client command goes up after inspection and audit, the
//! server's response packets stream down and close its audit record, until
//! the session or its grant ends.
//!
//! MySQL is strictly request/response, so one task serves both directions:
//! it reads a whole command from the client (within the size cap), decides
//! and audits it, forwards its original bytes, then streams the response
//! packet by packet (nothing is buffered beyond one packet and one write
//! batch), watching only enough of it to know where it ends. Every wait —
//! reads and writes alike — also watches the grant's end and an operator's
//! kill, so a session never outlives its grant because a peer is slow.
//!
//! `KILL [QUERY | CONNECTION] <id>` is never forwarded: the relay answers it
//! itself through the [`KillRegistry`] (see `kill.rs`). Its audit record has
//! kind `session`: it stops a statement or a session of the caller's own
//! identity, changes no data, and must work on read levels (Ctrl-C).
//!
//! A session stays in its target's database: a text with a `USE` of another
//! one (anywhere in it, see `sql::mysql_database_switch`) and COM_INIT_DB of
//! another one are refused. SQL run from a string (`EXECUTE`, MariaDB's
//! `EXECUTE IMMEDIATE`) is no text jitgate can judge first, so once such a
//! command is done the relay asks the server `SELECT DATABASE()` itself
//! (the answer goes to no client); a session found elsewhere is ended, with
//! an error that says why, at its next command. Only those rare commands
//! pay the extra round trip.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::kill::{self, KillEntry, KillRegistry, KillResult};
use super::packet::{
    self, Cursor, Message, Packet, PacketError, PacketReader, code, command, frame, parse_eof,
    parse_err, parse_ok, status,
};
use super::upstream::{self, KillScope, Upstream};
use crate::access::Lease;
use crate::audit::{AuditEvent, Sealed};
use crate::config::{LevelConfig, TargetConfig};
use crate::sql::{self, DatabaseSwitch, Lexing, Mentions, Reading, StatementKind};
pub use crate::wire::SessionEnd;
use crate::wire::admission;
use crate::wire::ending::{self, SessionEnding};
use crate::wire::gate::RelayCtx;
use crate::wire::quiet::Quiet;
use crate::wire::stream::Stream;

/// Write to the client once this much is batched.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// While a response is streaming, read at most this much ahead from the
/// client (only to notice that it hung up).
const READ_AHEAD_BYTES: usize = 64 * 1024;

pub struct SessionCtx {
    pub session: RelayCtx,
    pub target: Arc<TargetConfig>,
    pub level: Arc<LevelConfig>,
    /// Connection id → session, for `KILL` (shared by the listener's sessions).
    pub kills: Arc<KillRegistry>,
    /// This session's own entry in `kills`.
    pub connection: Arc<KillEntry>,
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
    started: Instant,
}

/// What the response to the command in flight looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// OK, ERR, or the column count of a result set (text or binary).
    First,
    /// Column definitions still to come.
    Columns(u64),
    /// The EOF after the column definitions.
    ColumnsEof,
    /// Rows until EOF or ERR.
    Rows,
    /// PREPARE_OK or ERR.
    PrepareFirst,
    /// Parameter and column definitions (with their EOFs) of a PREPARE_OK.
    Definitions(u64),
    /// COM_FIELD_LIST: definitions until EOF or ERR.
    FieldList,
    /// Any one packet.
    Single,
}

struct InFlight {
    stage: Stage,
    pending: Option<Pending>,
    /// SQL of a COM_STMT_PREPARE, kept once the server names the statement.
    prepare_sql: Option<Arc<[u8]>>,
    /// The last packet was full size: the next one continues it, unparsed.
    continuation: bool,
    /// Sequence id a packet of ours would carry next in this exchange.
    next_seq: u8,
    rows: u64,
    outcome: String,
    /// How the server reads text once this command succeeds, if that changes.
    lexing_after: Option<Lexing>,
    /// Once it is done, ask the server which database the session is in:
    /// the command may have run SQL jitgate never saw as text.
    probe_after: bool,
    /// jitgate's own `SELECT DATABASE()`: its answer goes to no client.
    ours: bool,
    /// The row of that answer.
    probe_row: Option<Vec<u8>>,
}

impl InFlight {
    fn new(stage: Stage, pending: Option<Pending>, last_client_seq: u8) -> InFlight {
        InFlight {
            stage,
            pending,
            prepare_sql: None,
            continuation: false,
            next_seq: last_client_seq.wrapping_add(1),
            rows: 0,
            outcome: String::new(),
            lexing_after: None,
            probe_after: false,
            ours: false,
            probe_row: None,
        }
    }
}

enum Observed {
    More,
    Done,
    /// The server broke the protocol (or asked for a client file).
    Violation(&'static str),
}

/// Per-session relay state.
struct Relay<'a> {
    ctx: &'a SessionCtx,
    /// Prepared statement id -> its SQL text (to audit COM_STMT_EXECUTE as
    /// SQL), and the guard words it mentions (found once, not per execute).
    statements: HashMap<u32, (Arc<[u8]>, Mentions)>,
    in_flight: Option<InFlight>,
    seq: u64,
    /// The server's status flags as of its last OK/EOF (for OKs of our own).
    status: u16,
    /// The audit record of the command about to go up, sealed into the
    /// chain: it goes up only once that is written (`AuditLog::write_sealed`).
    unwritten: Option<Sealed>,
    /// How the server reads this session's text now.
    reading: Reading,
    /// How it read it right after login (what COM_RESET_CONNECTION restores).
    login_lexing: Lexing,
    /// The command's statement bytes, base64, when they are not UTF-8 (for
    /// its audit records; see `wire::exact_bytes`).
    exact: Option<String>,
    /// A command that may have switched the database is done: ask the
    /// server before reading the next one.
    probe_due: bool,
    /// The server said the session is no longer in the target's database
    /// (what it said): the next command ends the session.
    left_database: Option<String>,
    /// The kind of the next command's text, when it was too long to
    /// classify on the session thread (see `long_text_kind`).
    long_kind: Option<StatementKind>,
    /// Some prepared statement's text is too long to classify inline (so a
    /// COM_STMT_EXECUTE may need `long_text_kind`).
    long_statements: bool,
}

/// What to do with one client command.
enum Action {
    Forward,
    /// Answer the client ourselves (a refusal); the session goes on.
    Answer(Bytes),
    /// Answer, then end the session.
    AnswerAndEnd(Bytes, SessionEnd),
    /// Forward COM_QUIT's meaning: end the session.
    End(SessionEnd),
    /// `KILL` of another connection of this identity: jitgate carries it
    /// out (the statement is audited and in flight), then answers.
    Kill(KillOrder),
}

struct KillOrder {
    entry: Arc<KillEntry>,
    scope: KillScope,
    id_text: String,
}

/// Where a `KILL` is refused, the client learns what does work.
const KILL_FORMS: &str = "through jitgate, KILL works only as `KILL [QUERY | CONNECTION] <id>` on its own, where <id> is the connection id jitgate gave one of your connections (what your client reports as its connection or thread id, e.g. Ctrl-C in the mariadb CLI); upstream thread ids, other KILL forms and KILL inside other statements are refused";

/// The end of a session that an operator, or its owner, killed.
fn killed_end(ctx: &SessionCtx) -> SessionEnd {
    match ctx.connection.take_ended_by() {
        Some(by) => SessionEnd::KilledByOwner(by),
        None => ctx.info.kill_end(),
    }
}

/// A wait interrupted by the end of the session.
enum Interrupted {
    Io(std::io::Error),
    Ended(SessionEnd),
}

/// Relay until something ends the session, then end it properly.
pub async fn run(
    ctx: &SessionCtx,
    mut client: PacketReader<Stream>,
    up: Upstream,
    mut lease: Lease,
) -> SessionEnd {
    let Upstream {
        reader: mut up_r,
        thread_id,
        status: login_status,
        server,
        lexing,
        facts: _,
    } = up;
    let mut relay = Relay {
        ctx,
        statements: HashMap::new(),
        in_flight: None,
        seq: 0,
        status: login_status,
        unwritten: None,
        reading: Reading::mysql(lexing, server),
        login_lexing: lexing,
        exact: None,
        probe_due: false,
        left_database: None,
        long_kind: None,
        long_statements: false,
    };

    // The grant's end and an operator's kill, waited on once for the whole
    // session and polled only when one of them fires (`wire::quiet`),
    // rather than set up afresh around every packet.
    let mut stop = Quiet::new(async {
        tokio::select! {
            biased;
            r = lease.ended() => SessionEnd::GrantEnded(r),
            _ = ctx.info.killed() => killed_end(ctx),
        }
    });

    let mut pipes = Pipes {
        client: &mut client,
        up_r: &mut up_r,
        out: BytesMut::with_capacity(16 * 1024),
    };
    let Stop {
        end,
        client_mid_write,
    } = pipes.relay(&mut relay, &mut stop).await;
    // It borrows the lease, which what follows reads.
    drop(stop);

    let ending = MysqlEnding {
        busy: relay.in_flight.is_some(),
        answer_seq: relay.in_flight.as_ref().map_or(1, |f| f.next_seq),
        unfinished: relay.in_flight.take(),
        relay: &relay,
        mid_write: client_mid_write,
        upstream: up_r.into_parts().0,
        thread_id,
    };
    ending::end_session(&end, &ctx.info, &lease, client.get_mut(), ending).await;
    end
}

/// How a MySQL session ends (see `wire::ending`): a statement still
/// running is stopped by `KILL CONNECTION` on a side connection as the
/// level's account; the connection ends with `COM_QUIT`.
struct MysqlEnding<'a> {
    relay: &'a Relay<'a>,
    busy: bool,
    /// The statement in flight, for its closing record.
    unfinished: Option<InFlight>,
    /// The sequence id the client expects next.
    answer_seq: u8,
    /// A packet to the client was cut off: nothing of ours may follow.
    mid_write: bool,
    upstream: Stream,
    thread_id: u32,
}

impl SessionEnding for MysqlEnding<'_> {
    fn farewell(&self, told: &str, hint: Option<&str>) -> Bytes {
        if self.mid_write {
            return Bytes::new();
        }
        let message = match hint {
            Some(hint) => format!("Connection was killed: {told}; {hint}"),
            None => format!("Connection was killed: {told}"),
        };
        frame(
            self.answer_seq,
            &packet::err(code::CONNECTION_KILLED, &message),
        )
    }

    fn upstream_lost(&self) -> Bytes {
        if self.mid_write {
            return Bytes::new();
        }
        let message = "Lost connection to server: the target database closed the connection";
        frame(self.answer_seq, &packet::err(code::SERVER_LOST, message))
    }

    fn record_unfinished(&mut self, end: &SessionEnd) {
        if let Some(f) = self.unfinished.take()
            && let Some(p) = &f.pending
        {
            self.relay.audit_end(p, end.reason(), f.rows);
        }
    }

    async fn stop_running(&mut self, _end: &SessionEnd) {
        if !self.busy {
            return;
        }
        let ctx = self.relay.ctx;
        let kill =
            upstream::kill_connection(&ctx.target, &ctx.info.level, &ctx.level, self.thread_id);
        if let Some(Err(e)) = ending::within_stop_limit(kill).await {
            tracing::warn!(session = %ctx.info.id, error = %e, "could not kill the upstream thread");
        }
    }

    async fn close_upstream(&mut self) {
        upstream::quit(&mut self.upstream).await;
    }
}

/// Why the relay loop stops: the session's end, and whether a message to
/// the client was cut off (then no packet of ours may follow it).
struct Stop {
    end: SessionEnd,
    client_mid_write: bool,
}

impl From<SessionEnd> for Stop {
    fn from(end: SessionEnd) -> Stop {
        Stop {
            end,
            client_mid_write: false,
        }
    }
}

impl Stop {
    /// The end came while a message to the client was being written, or
    /// that message was the last word.
    fn after_cut(end: SessionEnd) -> Stop {
        Stop {
            end,
            client_mid_write: true,
        }
    }

    /// A write to the client that did not finish.
    fn client_write(e: Interrupted) -> Stop {
        match e {
            Interrupted::Io(_) => SessionEnd::ClientClosed.into(),
            Interrupted::Ended(end) => Stop::after_cut(end),
        }
    }

    /// A write upstream that did not finish.
    fn upstream_write(e: Interrupted) -> Stop {
        match e {
            Interrupted::Io(e) => SessionEnd::UpstreamError(e.to_string()).into(),
            Interrupted::Ended(end) => end.into(),
        }
    }
}

/// The two connections of a session and the batch on its way down.
struct Pipes<'a> {
    client: &'a mut PacketReader<Stream>,
    up_r: &'a mut PacketReader<Stream>,
    out: BytesMut,
}

impl Pipes<'_> {
    /// Relay until the session ends. Each turn: jitgate's own probe when
    /// due, the client's commands while nothing is in flight, a batch of the
    /// response, or a wait for more bytes (or the session's end). One loop
    /// in one future: a future per turn costs the hot path measurably.
    async fn relay<F: Future<Output = SessionEnd>>(
        &mut self,
        relay: &mut Relay<'_>,
        stop: &mut Quiet<F>,
    ) -> Stop {
        loop {
            if relay.in_flight.is_none() && relay.probe_due {
                relay.probe_due = false;
                let mut f = InFlight::new(Stage::First, None, 0);
                f.ours = true;
                relay.in_flight = Some(f);
                let probe = frame(0, b"\x03SELECT DATABASE()");
                if let Err(e) = guarded_write(self.up_r.get_mut(), &probe, stop).await {
                    return Stop::upstream_write(e);
                }
            }
            // Commands, one at a time, only while nothing is in flight.
            while relay.in_flight.is_none() {
                let message = match self.client.try_message() {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => return self.refuse_packet(e).await,
                };
                // The rare waits (a long text's classification, a KILL)
                // are futures of their own; the common path stays here.
                relay.long_kind = None;
                if is_long(relay, &message) {
                    match long_kind(relay, &message, stop).await {
                        Ok(kind) => relay.long_kind = kind,
                        Err(stop) => return stop,
                    }
                }
                let action = relay.command(&message);
                // Nothing audited goes up, or is carried out (a KILL),
                // before its record is written.
                if let Some(sealed) = relay.unwritten.take()
                    && let Err(e) = relay.ctx.audit.write_sealed(sealed).await
                {
                    return audit_failed(relay, e);
                }
                let (bytes_up, answer, end) = match action {
                    Action::Forward => (Some(message.raw), None, None),
                    Action::Answer(a) => (None, Some(a), None),
                    Action::AnswerAndEnd(a, e) => (None, Some(a), Some(e)),
                    Action::End(e) => (None, None, Some(e)),
                    Action::Kill(order) => match carry_out_kill(relay, &order, stop).await {
                        Ok(answer) => (None, Some(answer), None),
                        Err(stop) => return stop,
                    },
                };
                if let Some(raw) = bytes_up {
                    relay.ctx.metrics.bytes_up.inc_by(raw.len() as u64);
                    if let Err(e) = guarded_write(self.up_r.get_mut(), &raw, stop).await {
                        return Stop::upstream_write(e);
                    }
                }
                if let Some(a) = answer
                    && let Err(e) = guarded_write(self.client.get_mut(), &a, stop).await
                {
                    return Stop::client_write(e);
                }
                if let Some(e) = end {
                    // The answer was the last word: nothing of ours may follow it.
                    return Stop::after_cut(e);
                }
            }
            // Response packets, streamed through in batches.
            if let Err(stop) = self.collect_responses(relay) {
                return stop;
            }
            if !self.out.is_empty() {
                relay.ctx.metrics.bytes_down.inc_by(self.out.len() as u64);
                if let Err(e) = guarded_write(self.client.get_mut(), &self.out, stop).await {
                    return Stop::client_write(e);
                }
                self.out.clear();
                continue;
            }
            // A finished response may have left a client command waiting.
            if relay.in_flight.is_none() && self.client.has_message() {
                continue;
            }
            let idle = relay.in_flight.is_none();
            let (up_r, client) = (&mut *self.up_r, &mut *self.client);
            let waited: Result<(), Stop> = tokio::select! {
                biased;
                e = stop.woken() => Err(e.into()),
                r = up_r.fill(), if !idle || up_r.buffered() < READ_AHEAD_BYTES => match r {
                    Ok(true) => Ok(()),
                    Ok(false) | Err(PacketError::Io(_)) | Err(PacketError::Truncated) => {
                        Err(SessionEnd::UpstreamClosed.into())
                    }
                    Err(e) => Err(SessionEnd::UpstreamError(e.to_string()).into()),
                },
                r = client.fill(), if idle || client.buffered() < READ_AHEAD_BYTES => match r {
                    Ok(true) => Ok(()),
                    Ok(false) | Err(PacketError::Io(_)) | Err(PacketError::Truncated) => {
                        Err(SessionEnd::ClientClosed.into())
                    }
                    Err(e) => Err(SessionEnd::ClientError(e.to_string()).into()),
                },
            };
            if let Err(stop) = waited {
                return stop;
            }
        }
    }

    /// A client packet jitgate cannot take: say why, and end the session.
    async fn refuse_packet(&mut self, e: PacketError) -> Stop {
        let code = match e {
            PacketError::TooLarge { .. } => code::NET_PACKET_TOO_LARGE,
            _ => code::UNKNOWN_COM,
        };
        let detail = e.to_string();
        if let PacketError::TooLarge { .. } = e {
            self.client
                .discard_incoming(std::time::Duration::from_secs(2))
                .await;
        }
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            self.client
                .get_mut()
                .write_all(&frame(1, &packet::err(code, &detail))),
        )
        .await;
        SessionEnd::ClientError(detail).into()
    }

    /// Take the response packets that are in, up to a write batch, into
    /// `out` (jitgate's own probe's are kept from the client).
    fn collect_responses(&mut self, relay: &mut Relay<'_>) -> Result<(), Stop> {
        loop {
            let p = match self.up_r.try_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => return Err(SessionEnd::UpstreamError(e.to_string()).into()),
            };
            let ours = relay.in_flight.as_ref().is_some_and(|f| f.ours);
            match relay.observe(&p) {
                Some(Observed::Violation(why)) => {
                    return Err(SessionEnd::UpstreamError(why.to_owned()).into());
                }
                Some(Observed::Done) => {
                    if !ours {
                        self.out.extend_from_slice(&p.bytes);
                    }
                    relay.finish();
                    return Ok(());
                }
                Some(Observed::More) if ours => {}
                Some(Observed::More) => self.out.extend_from_slice(&p.bytes),
                None => {
                    // Nothing was asked: a server closing on its own says why first.
                    if let Some((code, _, message)) = parse_err(p.payload()) {
                        tracing::info!(session = %relay.ctx.info.id, code, %message, "upstream sent an unsolicited error");
                    }
                }
            }
            if self.out.len() >= WRITE_BATCH_BYTES {
                return Ok(());
            }
        }
    }
}

/// Is this command's statement text too long to classify on the session
/// thread (see [`Relay::long_text_kind`])?
fn is_long(relay: &Relay<'_>, message: &Message) -> bool {
    !sql::classifies_inline(message.payload.len())
        || (relay.long_statements && message.payload.first() == Some(&command::STMT_EXECUTE))
}

/// A long text's kind, classified off the session thread; a grant's end or
/// a kill is not held up by the wait for a classification slot.
async fn long_kind<F: Future<Output = SessionEnd>>(
    relay: &Relay<'_>,
    message: &Message,
    stop: &mut Quiet<F>,
) -> Result<Option<StatementKind>, Stop> {
    tokio::select! {
        biased;
        e = stop.woken() => Err(e.into()),
        kind = relay.long_text_kind(message) => Ok(kind),
    }
}

/// The command's record could not be written: it was neither forwarded nor
/// carried out, and the session fails closed. Nothing runs upstream (one
/// command at a time), so there is no thread to kill.
fn audit_failed(relay: &mut Relay<'_>, e: crate::audit::AuditError) -> Stop {
    tracing::error!(error = %e, "audit log write failed; ending the session unforwarded");
    relay.in_flight = None;
    SessionEnd::AuditFailed.into()
}

/// Carry out a `KILL` of another connection of this identity; its answer.
async fn carry_out_kill<F: Future<Output = SessionEnd>>(
    relay: &mut Relay<'_>,
    order: &KillOrder,
    stop: &mut Quiet<F>,
) -> Result<Bytes, Stop> {
    let ctx = relay.ctx;
    let by = format!(
        "KILL CONNECTION {} from session {}",
        order.id_text, ctx.info.id
    );
    let result = tokio::select! {
        biased;
        e = stop.woken() => return Err(e.into()),
        r = ctx.kills.kill(&order.entry, order.scope, &by) => r,
    };
    Ok(relay.kill_done(result, order))
}

/// Write all of `bytes`, unless the grant ends or an operator kills the
/// session first (a peer that stops reading cannot hold the session open).
async fn guarded_write<F: Future<Output = SessionEnd>>(
    w: &mut Stream,
    bytes: &[u8],
    stop: &mut Quiet<F>,
) -> Result<(), Interrupted> {
    tokio::select! {
        biased;
        e = stop.woken() => Err(Interrupted::Ended(e)),
        r = crate::wire::stream::send(w, bytes) => r.map_err(Interrupted::Io),
    }
}

mod commands;
mod responses;
