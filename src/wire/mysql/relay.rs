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
        None => SessionEnd::Killed,
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
    } = loop {
        if let Err(stop) = pipes.turn(&mut relay, &mut stop).await {
            break stop;
        }
    };
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
    /// One turn of the relay: jitgate's own probe when due, the client's
    /// commands while nothing is in flight, a batch of the response, or a
    /// wait for more bytes (or the session's end).
    async fn turn<F: Future<Output = SessionEnd>>(
        &mut self,
        relay: &mut Relay<'_>,
        stop: &mut Quiet<F>,
    ) -> Result<(), Stop> {
        if relay.in_flight.is_none() && relay.probe_due {
            relay.probe_due = false;
            let mut f = InFlight::new(Stage::First, None, 0);
            f.ours = true;
            relay.in_flight = Some(f);
            let probe = frame(0, b"\x03SELECT DATABASE()");
            guarded_write(self.up_r.get_mut(), &probe, stop)
                .await
                .map_err(Stop::upstream_write)?;
        }
        // Commands, one at a time, only while nothing is in flight.
        while relay.in_flight.is_none() {
            let message = match self.client.try_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => return Err(self.refuse_packet(e).await),
            };
            self.command(relay, message, stop).await?;
        }
        if self.responses(relay, stop).await? {
            return Ok(());
        }
        // A finished response may have left a client command waiting.
        if relay.in_flight.is_none() && self.client.has_message() {
            return Ok(());
        }
        self.wait(relay.in_flight.is_none(), stop).await
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

    /// One whole client command: decided, audited, then forwarded,
    /// answered or carried out.
    async fn command<F: Future<Output = SessionEnd>>(
        &mut self,
        relay: &mut Relay<'_>,
        message: Message,
        stop: &mut Quiet<F>,
    ) -> Result<(), Stop> {
        let ctx = relay.ctx;
        let long = !sql::classifies_inline(message.payload.len())
            || (relay.long_statements && message.payload.first() == Some(&command::STMT_EXECUTE));
        relay.long_kind = if long {
            // A grant's end or a kill is not held up by the wait for a
            // classification slot.
            tokio::select! {
                biased;
                e = stop.woken() => return Err(e.into()),
                kind = relay.long_text_kind(&message) => kind,
            }
        } else {
            None
        };
        let action = relay.command(&message);
        // Nothing audited goes up, or is carried out (a KILL), before its
        // record is written.
        if let Some(sealed) = relay.unwritten.take()
            && let Err(e) = ctx.audit.write_sealed(sealed).await
        {
            // The command was neither forwarded nor carried out: fail
            // closed. Nothing runs upstream (one command at a time), so
            // there is no thread to kill.
            tracing::error!(error = %e, "audit log write failed; ending the session unforwarded");
            relay.in_flight = None;
            return Err(SessionEnd::AuditFailed.into());
        }
        let (bytes_up, answer, end) = match action {
            Action::Forward => (Some(message.raw), None, None),
            Action::Answer(a) => (None, Some(a), None),
            Action::AnswerAndEnd(a, e) => (None, Some(a), Some(e)),
            Action::End(e) => (None, None, Some(e)),
            Action::Kill(order) => {
                let by = format!(
                    "KILL CONNECTION {} from session {}",
                    order.id_text, ctx.info.id
                );
                let result = tokio::select! {
                    biased;
                    e = stop.woken() => return Err(e.into()),
                    r = ctx.kills.kill(&order.entry, order.scope, &by) => r,
                };
                (None, Some(relay.kill_done(result, &order)), None)
            }
        };
        if let Some(raw) = bytes_up {
            ctx.metrics.bytes_up.inc_by(raw.len() as u64);
            guarded_write(self.up_r.get_mut(), &raw, stop)
                .await
                .map_err(Stop::upstream_write)?;
        }
        if let Some(a) = answer {
            guarded_write(self.client.get_mut(), &a, stop)
                .await
                .map_err(Stop::client_write)?;
        }
        match end {
            // The answer was the last word: nothing of ours may follow it.
            Some(e) => Err(Stop::after_cut(e)),
            None => Ok(()),
        }
    }

    /// Response packets, streamed through in batches; `true` if a batch
    /// went to the client.
    async fn responses<F: Future<Output = SessionEnd>>(
        &mut self,
        relay: &mut Relay<'_>,
        stop: &mut Quiet<F>,
    ) -> Result<bool, Stop> {
        loop {
            let p = match self.up_r.try_packet() {
                Ok(Some(p)) => p,
                Ok(None) => break,
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
                    break;
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
                break;
            }
        }
        if self.out.is_empty() {
            return Ok(false);
        }
        relay.ctx.metrics.bytes_down.inc_by(self.out.len() as u64);
        guarded_write(self.client.get_mut(), &self.out, stop)
            .await
            .map_err(Stop::client_write)?;
        self.out.clear();
        Ok(true)
    }

    /// Wait for bytes from either side (reading ahead a little), or the end.
    async fn wait<F: Future<Output = SessionEnd>>(
        &mut self,
        idle: bool,
        stop: &mut Quiet<F>,
    ) -> Result<(), Stop> {
        let (up_r, client) = (&mut *self.up_r, &mut *self.client);
        tokio::select! {
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
        }
    }
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

impl Relay<'_> {
    /// Decide what to do with one whole client command.
    /// The kind of a command's statement text too long to classify on the
    /// session thread (which serves other sessions meanwhile), classified
    /// off it; `None` for every other command. (The `USE` and `sql_mode`
    /// follow-ups do not parse a long text at all: see
    /// `sql::mysql_database_switch` and `sql::mysql_lexing_after`.)
    async fn long_text_kind(&self, m: &Message) -> Option<StatementKind> {
        let (&cmd, args) = m.payload.split_first()?;
        let text: &[u8] = match cmd {
            command::QUERY | command::STMT_PREPARE => args,
            command::STMT_EXECUTE => &self.statements.get(&Cursor(args).u32()?)?.0,
            _ => return None,
        };
        if sql::classifies_inline(text.len()) {
            return None;
        }
        let text = std::str::from_utf8(text).ok()?.to_owned();
        Some(sql::classify_text_off_thread(self.reading, text).await)
    }

    fn command(&mut self, m: &Message) -> Action {
        let answer_seq = m.last_seq.wrapping_add(1);
        let body = &m.payload[..];
        let Some((&cmd, args)) = body.split_first() else {
            self.record_command_refusal("an empty command packet", code::UNKNOWN_COM.0);
            let refused = packet::err(code::UNKNOWN_COM, "empty command packet");
            return Action::Answer(frame(answer_seq, &refused));
        };
        let ctx = self.ctx;
        self.exact = None;
        let long_kind = self.long_kind.take();
        if cmd != command::QUIT
            && let Some(now_in) = self.left_database.take()
        {
            return self.end_outside_database(cmd, &now_in, answer_seq);
        }
        match cmd {
            command::QUIT => Action::End(SessionEnd::ClientClosed),
            command::QUERY => self.query(args, m.last_seq, long_kind),
            command::STMT_PREPARE => self.prepare(args, m.last_seq, long_kind),
            command::STMT_EXECUTE => self.execute(args, m.last_seq, long_kind),
            command::STMT_FETCH => {
                self.in_flight = Some(InFlight::new(Stage::Rows, None, m.last_seq));
                Action::Forward
            }
            command::STMT_CLOSE => {
                if let Some(id) = Cursor(args).u32() {
                    self.statements.remove(&id);
                }
                Action::Forward
            }
            command::STMT_SEND_LONG_DATA => Action::Forward,
            command::RESET_CONNECTION if ctx.read_only => Action::Answer(self.refuse_command(
                cmd,
                answer_seq,
                code::OPTION_PREVENTS_STATEMENT,
                "COM_RESET_CONNECTION would lift the read-only mode of your read-only grant; reconnect instead",
            )),
            command::RESET_CONNECTION => {
                self.statements.clear();
                let mut f = InFlight::new(Stage::Single, None, m.last_seq);
                f.lexing_after = Some(self.login_lexing);
                self.in_flight = Some(f);
                Action::Forward
            }
            command::STMT_RESET | command::SET_OPTION | command::PING | command::STATISTICS => {
                self.in_flight = Some(InFlight::new(Stage::Single, None, m.last_seq));
                Action::Forward
            }
            command::INIT_DB => self.init_db(args, m.last_seq),
            command::FIELD_LIST => {
                self.in_flight = Some(InFlight::new(Stage::FieldList, None, m.last_seq));
                Action::Forward
            }
            // Refused, and the session goes on as it was: a session is bound
            // to one identity's grant (as MySQL leaves the user unchanged
            // after a change-user that fails).
            command::CHANGE_USER => Action::Answer(self.refuse_command(
                cmd,
                answer_seq,
                code::NOT_SUPPORTED_YET,
                &format!(
                    "COM_CHANGE_USER is not supported through jitgate: this session stays {}'s, on its grant; to work as another identity, open a new connection",
                    ctx.info.identity
                ),
            )),
            other => Action::Answer(self.refuse_command(
                other,
                answer_seq,
                code::UNKNOWN_COM,
                &format!(
                    "{} (0x{other:02x}) is not supported through jitgate; send the SQL statement instead, or ask the jitgate operators",
                    command::name(other)
                ),
            )),
        }
    }

    /// The session was seen in another database (after dynamic SQL): the
    /// next command is refused and the session ends.
    fn end_outside_database(&mut self, cmd: u8, now_in: &str, answer_seq: u8) -> Action {
        let ctx = self.ctx;
        let detail = format!(
            "the session left database '{}' for {now_in} (seen after a statement that ran dynamic SQL)",
            ctx.target.database
        );
        self.record_command_refusal(
            &format!(
                "{} (0x{cmd:02x}) after the session left its database",
                command::name(cmd)
            ),
            code::DB_ACCESS_DENIED.0,
        );
        let message = format!(
            "this session is now in {now_in}, but sessions on {} may only use database '{}', so jitgate ended it; reconnect, and switch databases only with `USE {}`",
            ctx.info.target, ctx.target.database, ctx.target.database
        );
        Action::AnswerAndEnd(
            frame(answer_seq, &packet::err(code::DB_ACCESS_DENIED, &message)),
            SessionEnd::ClientError(detail),
        )
    }

    /// `COM_QUERY`: a `KILL` is jitgate's to carry out; anything else is
    /// classified, checked against the level and the database, and audited.
    fn query(&mut self, args: &[u8], last_seq: u8, long_kind: Option<StatementKind>) -> Action {
        let answer_seq = last_seq.wrapping_add(1);
        let statement = crate::wire::StatementText::new(args);
        self.exact = statement.exact.clone();
        let sql = &statement.text;
        let mentions = Mentions::of(args);
        if mentions.kill() && kill::mentions_kill(args) {
            return self.kill_statement(sql, last_seq, long_kind);
        }
        let kind = long_kind.unwrap_or_else(|| statement.classify(&self.reading));
        if mentions.use_()
            && let Some(refused) = self.leaves_database(sql, args, kind, answer_seq)
        {
            return Action::Answer(refused);
        }
        match self.admit(sql, kind, answer_seq) {
            Ok(pending) => {
                let mut f = InFlight::new(Stage::First, Some(pending), last_seq);
                f.lexing_after = self.lexing_after(args, mentions);
                f.probe_after = mentions.execute() && sql::mysql_may_run_dynamic_sql(args);
                self.in_flight = Some(f);
                Action::Forward
            }
            Err(e) => Action::Answer(e),
        }
    }

    /// `COM_STMT_PREPARE`: checked like a query (a prepared `KILL` never
    /// goes up); audited when it is executed.
    fn prepare(&mut self, args: &[u8], last_seq: u8, long_kind: Option<StatementKind>) -> Action {
        let answer_seq = last_seq.wrapping_add(1);
        let statement = crate::wire::StatementText::new(args);
        let kind = long_kind.unwrap_or_else(|| statement.classify(&self.reading));
        self.exact = statement.exact.clone();
        let sql = &statement.text;
        let mentions = Mentions::of(args);
        if mentions.kill() && kill::mentions_kill(args) {
            // A prepared KILL would run with a raw id: never.
            self.record_refusal(sql, kind, code::NOT_SUPPORTED_YET.0);
            let refused = packet::err(code::NOT_SUPPORTED_YET, KILL_FORMS);
            return Action::Answer(frame(answer_seq, &refused));
        }
        if mentions.use_()
            && let Some(refused) = self.leaves_database(sql, args, kind, answer_seq)
        {
            return Action::Answer(refused);
        }
        if !admission::may_run(self.ctx.read_only, kind) {
            return Action::Answer(self.refusal(sql, kind, answer_seq));
        }
        let mut f = InFlight::new(Stage::PrepareFirst, None, last_seq);
        f.prepare_sql = Some(Arc::from(args));
        self.in_flight = Some(f);
        Action::Forward
    }

    /// `COM_STMT_EXECUTE`: the statement's text as prepared is what is
    /// checked and audited; one jitgate did not see prepared is unknown.
    fn execute(&mut self, args: &[u8], last_seq: u8, long_kind: Option<StatementKind>) -> Action {
        let answer_seq = last_seq.wrapping_add(1);
        let Some(id) = Cursor(args).u32() else {
            return Action::Answer(self.refuse_command(
                command::STMT_EXECUTE,
                answer_seq,
                code::UNKNOWN_COM,
                "malformed COM_STMT_EXECUTE",
            ));
        };
        let prepared = self.statements.get(&id).cloned();
        let (sql, mentions) = match prepared {
            Some((sql, mentions)) => (Some(sql), Some(mentions)),
            None => (None, None),
        };
        let statement = sql.as_deref().map(crate::wire::StatementText::new);
        let shown = statement.as_ref().map(|s| &*s.text);
        self.exact = statement.as_ref().and_then(|s| s.exact.clone());
        let text: &str = shown.unwrap_or("-- execute of a statement jitgate did not see prepared");
        let kind = match (&statement, long_kind) {
            (Some(_), Some(kind)) => kind,
            (Some(s), None) => s.classify(&self.reading),
            (None, _) => StatementKind::Unknown,
        };
        match self.admit(text, kind, answer_seq) {
            Ok(pending) => {
                let mut f = InFlight::new(Stage::First, Some(pending), last_seq);
                f.lexing_after = match (&sql, mentions) {
                    (Some(s), Some(mentions)) => self.lexing_after(s, mentions),
                    _ => Some(Lexing::OPAQUE),
                };
                f.probe_after = match (&sql, mentions) {
                    (Some(s), Some(mentions)) => {
                        mentions.execute() && sql::mysql_may_run_dynamic_sql(s)
                    }
                    _ => true,
                };
                self.in_flight = Some(f);
                Action::Forward
            }
            Err(e) => Action::Answer(e),
        }
    }

    /// `COM_INIT_DB`: only the target's own database, audited as a `USE`.
    fn init_db(&mut self, args: &[u8], last_seq: u8) -> Action {
        let answer_seq = last_seq.wrapping_add(1);
        let db = String::from_utf8_lossy(args).into_owned();
        let sql = format!("USE `{}`", db.replace('`', "``"));
        if db != self.ctx.target.database {
            return Action::Answer(self.wrong_database(
                &sql,
                StatementKind::Session,
                &db,
                answer_seq,
            ));
        }
        match self.admit(&sql, StatementKind::Session, answer_seq) {
            Ok(pending) => {
                self.in_flight = Some(InFlight::new(Stage::Single, Some(pending), last_seq));
                Action::Forward
            }
            Err(e) => Action::Answer(e),
        }
    }

    /// A query text that uses `KILL`: carried out by jitgate if it is
    /// exactly `KILL [QUERY | CONNECTION] <id>` naming a connection of this
    /// identity, answered "Unknown thread id" if the id is not such a
    /// connection, refused in any other form. Never forwarded.
    /// `long_kind`: the text's kind when it was classified off the session
    /// thread (a long text), so that it is not parsed again here.
    fn kill_statement(
        &mut self,
        sql: &str,
        last_seq: u8,
        long_kind: Option<StatementKind>,
    ) -> Action {
        let ctx = self.ctx;
        let answer_seq = last_seq.wrapping_add(1);
        let Some(k) = kill::parse_exact(sql.as_bytes()) else {
            let kind =
                long_kind.unwrap_or_else(|| sql::classify_for(&self.reading, sql.as_bytes()));
            self.record_refusal(sql, kind, code::NOT_SUPPORTED_YET.0);
            return Action::Answer(frame(
                answer_seq,
                &packet::err(code::NOT_SUPPORTED_YET, KILL_FORMS),
            ));
        };
        let Some(entry) = k.id.and_then(|id| {
            ctx.kills.find(id, &ctx.info.identity).or_else(|| {
                ctx.kills
                    .find_thread(id, &ctx.info.identity, &ctx.target.name)
            })
        }) else {
            self.record_refusal(sql, StatementKind::Session, code::UNKNOWN_THREAD.0);
            return Action::Answer(unknown_thread(answer_seq, &k.id_text));
        };
        let detail = format!(
            "{} of connection {} (session {})",
            match k.scope {
                KillScope::Query => "KILL QUERY",
                KillScope::Connection => "KILL CONNECTION",
            },
            k.id_text,
            entry.session
        );
        let pending = match self.admit_with(sql, StatementKind::Session, Some(&detail), answer_seq)
        {
            Ok(p) => p,
            Err(e) => return Action::Answer(e),
        };
        if Arc::ptr_eq(&entry, &ctx.connection) {
            // This connection: the only statement it runs is this KILL.
            let (code, message, end) = match k.scope {
                KillScope::Query => (
                    code::QUERY_INTERRUPTED,
                    "Query execution was interrupted",
                    None,
                ),
                KillScope::Connection => (
                    code::CONNECTION_KILLED,
                    "Connection was killed",
                    Some(SessionEnd::KilledByOwner(format!(
                        "KILL CONNECTION {} of its own connection",
                        k.id_text
                    ))),
                ),
            };
            self.audit_end(&pending, &format!("ERR {} ({})", code.0, code.1), 0);
            let a = frame(answer_seq, &packet::err(code, message));
            return match end {
                Some(e) => Action::AnswerAndEnd(a, e),
                None => Action::Answer(a),
            };
        }
        self.in_flight = Some(InFlight::new(Stage::Single, Some(pending), last_seq));
        Action::Kill(KillOrder {
            entry,
            scope: k.scope,
            id_text: k.id_text,
        })
    }

    /// A KILL jitgate carried out: close its audit record, build the answer.
    fn kill_done(&mut self, result: KillResult, order: &KillOrder) -> Bytes {
        let f = self.in_flight.take();
        let answer_seq = f.as_ref().map_or(1, |f| f.next_seq);
        let (outcome, answer) = match &result {
            KillResult::Done => (
                "OK".to_owned(),
                frame(
                    answer_seq,
                    &packet::ok(0, self.status & !status::MORE_RESULTS_EXISTS),
                ),
            ),
            KillResult::Gone => (
                format!(
                    "ERR {} ({})",
                    code::UNKNOWN_THREAD.0,
                    code::UNKNOWN_THREAD.1
                ),
                unknown_thread(answer_seq, &order.id_text),
            ),
            KillResult::Failed(why) => {
                tracing::warn!(session = %self.ctx.info.id, victim = %order.entry.session, error = %why, "KILL QUERY through a side connection failed");
                (
                    format!("ERR {} ({})", code::UNKNOWN_ERROR.0, code::UNKNOWN_ERROR.1),
                    frame(
                        answer_seq,
                        &packet::err(
                            code::UNKNOWN_ERROR,
                            &format!("jitgate could not stop that query: {why}"),
                        ),
                    ),
                )
            }
        };
        if let Some(p) = f.as_ref().and_then(|f| f.pending.as_ref()) {
            self.audit_end(p, &outcome, 0);
        }
        answer
    }

    /// Check a statement against the level and seal its audit record into
    /// the chain; it may be forwarded only if this returns `Ok`, and only
    /// once `self.unwritten` is written.
    fn admit(&mut self, sql: &str, kind: StatementKind, answer_seq: u8) -> Result<Pending, Bytes> {
        self.admit_with(sql, kind, None, answer_seq)
    }

    fn admit_with(
        &mut self,
        sql: &str,
        kind: StatementKind,
        detail: Option<&str>,
        answer_seq: u8,
    ) -> Result<Pending, Bytes> {
        let ctx = self.ctx;
        if !admission::may_run(ctx.read_only, kind) {
            return Err(self.refusal(sql, kind, answer_seq));
        }
        self.seq += 1;
        let info = &ctx.info;
        let sealed = ctx.audit.seal(&AuditEvent {
            seq: Some(self.seq),
            statement: Some(sql),
            statement_base64: self.exact.as_deref(),
            kind: Some(kind.as_str()),
            detail,
            ..ctx.members.event("statement")
        });
        match sealed {
            Ok(sealed) => {
                self.unwritten = Some(sealed);
                info.count_statement();
                Ok(Pending {
                    seq: self.seq,
                    kind,
                    started: Instant::now(),
                })
            }
            Err(e) => {
                tracing::error!(error = %e, "audit log write failed; refusing to forward");
                Err(frame(
                    answer_seq,
                    &packet::err(
                        code::UNKNOWN_ERROR,
                        &format!(
                            "{}; {}",
                            admission::AUDIT_DOWN_STATEMENT,
                            admission::AUDIT_DOWN_STATEMENT_HINT
                        ),
                    ),
                ))
            }
        }
    }

    fn record_refusal(&self, sql: &str, kind: StatementKind, code: u16) {
        self.ctx.metrics.statement(kind.as_str(), "refused");
        let code = code.to_string();
        let _ = self.ctx.audit.record(&AuditEvent {
            statement: Some(sql),
            statement_base64: self.exact.as_deref(),
            kind: Some(kind.as_str()),
            outcome: Some(&code),
            ..self.ctx.members.event("statement_refused")
        });
    }

    /// Refuse a client command with an error of jitgate's own, audited.
    fn refuse_command(&self, cmd: u8, answer_seq: u8, code: (u16, &str), message: &str) -> Bytes {
        self.record_command_refusal(&format!("{} (0x{cmd:02x})", command::name(cmd)), code.0);
        frame(answer_seq, &packet::err(code, message))
    }

    /// Audit a client command jitgate refused that carries no statement
    /// (`what` names it): a `statement_refused` record whose `detail` names
    /// the command, as the PostgreSQL relay does for a refused FunctionCall.
    fn record_command_refusal(&self, what: &str, code: u16) {
        let kind = StatementKind::Unknown;
        self.ctx.metrics.statement(kind.as_str(), "refused");
        let code = code.to_string();
        let statement = format!("-- {what}");
        let detail = format!("command {what}");
        let _ = self.ctx.audit.record(&AuditEvent {
            statement: Some(&statement),
            kind: Some(kind.as_str()),
            outcome: Some(&code),
            detail: Some(&detail),
            ..self.ctx.members.event("statement_refused")
        });
    }

    /// Audit a statement refused on a read-only level and build the error.
    fn refusal(&self, sql: &str, kind: StatementKind, answer_seq: u8) -> Bytes {
        let info = &self.ctx.info;
        self.record_refusal(sql, kind, code::OPTION_PREVENTS_STATEMENT.0);
        let refusal = admission::Refusal::read_only(kind, &info.target, &info.level);
        frame(
            answer_seq,
            &packet::err(code::OPTION_PREVENTS_STATEMENT, &refusal.one_line()),
        )
    }

    /// The refusal of a text that would leave the target's database (a
    /// `USE` of another one anywhere in it, or one jitgate cannot read);
    /// `None` if it stays.
    fn leaves_database(
        &self,
        sql: &str,
        text: &[u8],
        kind: StatementKind,
        answer_seq: u8,
    ) -> Option<Bytes> {
        let database = &self.ctx.target.database;
        match sql::mysql_database_switch(&self.reading, text) {
            DatabaseSwitch::Stays => None,
            DatabaseSwitch::To(dbs) => dbs
                .iter()
                .find(|db| *db != database)
                .map(|db| self.wrong_database(sql, kind, db, answer_seq)),
            DatabaseSwitch::Unknown => {
                self.record_refusal(sql, kind, code::DB_ACCESS_DENIED.0);
                Some(frame(
                    answer_seq,
                    &packet::err(
                        code::DB_ACCESS_DENIED,
                        &format!(
                            "jitgate cannot tell which database this text's USE switches to, and sessions on {} may only use database '{database}'; send `USE {database}` on its own, or leave USE out",
                            self.ctx.info.target
                        ),
                    ),
                ))
            }
        }
    }

    fn wrong_database(&self, sql: &str, kind: StatementKind, db: &str, answer_seq: u8) -> Bytes {
        self.record_refusal(sql, kind, code::DB_ACCESS_DENIED.0);
        frame(
            answer_seq,
            &packet::err(
                code::DB_ACCESS_DENIED,
                &format!(
                    "Access denied to database '{db}': sessions on {} may only use database '{}'",
                    self.ctx.info.target, self.ctx.target.database
                ),
            ),
        )
    }

    fn audit_end(&self, p: &Pending, outcome: &str, rows: u64) {
        let ctx = self.ctx;
        let took = p.started.elapsed().as_secs_f64();
        ctx.metrics.duration.observe(took);
        ctx.metrics.statement(
            p.kind.as_str(),
            if outcome.starts_with("ERR") {
                "error"
            } else {
                "ok"
            },
        );
        let _ = ctx.audit.record_later(&AuditEvent {
            seq: Some(p.seq),
            outcome: Some(outcome),
            rows: Some(rows),
            duration_ms: Some((took * 1_000_000.0).round() / 1000.0),
            ..ctx.members.event("statement_end")
        });
    }

    /// How the server reads text after `text` runs, where that changes.
    fn lexing_after(&self, text: &[u8], mentions: Mentions) -> Option<Lexing> {
        if !mentions.lexing_setting() && !mentions.execute() {
            return None;
        }
        let after = sql::mysql_lexing_after(text, &self.reading, self.login_lexing);
        (after != self.reading.lexing).then_some(after)
    }

    /// The response in flight is complete.
    fn finish(&mut self) {
        if let Some(after) = self.in_flight.as_ref().and_then(|f| f.lexing_after) {
            let failed = self
                .in_flight
                .as_ref()
                .is_some_and(|f| f.outcome.starts_with("ERR"));
            // A failed multi-statement text may have run its SET before the
            // error: either reading may hold.
            self.reading.lexing = if failed {
                self.reading.lexing.either(after)
            } else {
                after
            };
        }
        let Some(f) = self.in_flight.take() else {
            return;
        };
        if let Some(p) = &f.pending {
            self.audit_end(p, &f.outcome, f.rows);
        }
        if f.ours {
            self.left_database = self.database_left(&f);
        } else if f.probe_after {
            self.probe_due = true;
        }
    }

    /// From the answer to jitgate's `SELECT DATABASE()`: where the session
    /// is, if that is not the target's database (or cannot be told).
    fn database_left(&self, f: &InFlight) -> Option<String> {
        if f.outcome.starts_with("ERR") {
            return Some(format!(
                "a database the server would not name ({})",
                f.outcome
            ));
        }
        let row = f.probe_row.as_deref().unwrap_or_default();
        if row.first() == Some(&0xfb) {
            return Some("no database".to_owned());
        }
        let mut c = Cursor(row);
        let name = c
            .lenenc_int()
            .and_then(|n| usize::try_from(n).ok())
            .and_then(|n| c.0.get(..n));
        match name {
            Some(name) if name == self.ctx.target.database.as_bytes() => None,
            Some(name) => Some(format!("database '{}'", String::from_utf8_lossy(name))),
            None => Some("a database the server's answer did not name".to_owned()),
        }
    }

    /// Follow one server packet; `None` if no response was expected.
    fn observe(&mut self, p: &Packet) -> Option<Observed> {
        let f = self.in_flight.as_mut()?;
        f.next_seq = p.seq().wrapping_add(1);
        if f.continuation {
            f.continuation = p.continues();
            return Some(Observed::More);
        }
        f.continuation = p.continues();
        let b = p.payload();
        let Some(&first) = b.first() else {
            return Some(Observed::Violation("empty packet from the server"));
        };
        let done_unless_more = |status_flags: u16| {
            if status_flags & status::MORE_RESULTS_EXISTS != 0 {
                None
            } else {
                Some(Observed::Done)
            }
        };
        let mut stage = f.stage;
        let result = match stage {
            Stage::Single => {
                f.outcome = match first {
                    0x00 => "OK".to_owned(),
                    0xff => match parse_err(b) {
                        Some((code, state, _)) => format!("ERR {code} ({state})"),
                        None => "ERR".to_owned(),
                    },
                    _ => String::new(),
                };
                Observed::Done
            }
            Stage::First if first == 0x00 => {
                let (affected, flags) = parse_ok(b).unwrap_or((0, self.status));
                self.status = flags;
                f.rows += affected;
                f.outcome = "OK".to_owned();
                done_unless_more(flags).unwrap_or(Observed::More)
            }
            Stage::First
            | Stage::ColumnsEof
            | Stage::Rows
            | Stage::FieldList
            | Stage::PrepareFirst
                if first == 0xff =>
            {
                f.outcome = match parse_err(b) {
                    Some((code, state, _)) => format!("ERR {code} ({state})"),
                    None => "ERR".to_owned(),
                };
                Observed::Done
            }
            Stage::First if first == 0xfb => {
                return Some(Observed::Violation(
                    "the server asked for a local file (LOCAL INFILE), which jitgate never allows",
                ));
            }
            Stage::First => match Cursor(b).lenenc_int() {
                Some(n) if n > 0 => {
                    f.outcome = "RESULT_SET".to_owned();
                    stage = Stage::Columns(n);
                    Observed::More
                }
                _ => return Some(Observed::Violation("bad column count from the server")),
            },
            Stage::Columns(n) => {
                stage = if n <= 1 {
                    Stage::ColumnsEof
                } else {
                    Stage::Columns(n - 1)
                };
                Observed::More
            }
            Stage::ColumnsEof => match parse_eof(b) {
                // A cursor was opened: rows come with COM_STMT_FETCH.
                Some(flags) if flags & status::CURSOR_EXISTS != 0 => Observed::Done,
                Some(_) => {
                    stage = Stage::Rows;
                    Observed::More
                }
                None => return Some(Observed::Violation("missing EOF after column definitions")),
            },
            Stage::Rows => match parse_eof(b) {
                Some(flags) => {
                    self.status = flags;
                    match done_unless_more(flags) {
                        Some(done) => done,
                        None => {
                            stage = Stage::First;
                            Observed::More
                        }
                    }
                }
                None => {
                    f.rows += 1;
                    if f.ours {
                        f.probe_row = Some(b.to_vec());
                    }
                    Observed::More
                }
            },
            Stage::PrepareFirst => {
                let mut c = Cursor(b);
                let parsed = (|| {
                    c.u8()?;
                    Some((c.u32()?, c.u16()?, c.u16()?))
                })();
                let Some((id, columns, params)) = parsed else {
                    return Some(Observed::Violation("bad PREPARE_OK from the server"));
                };
                if let Some(sql) = f.prepare_sql.take() {
                    let mentions = Mentions::of(&sql);
                    self.long_statements |= !sql::classifies_inline(sql.len());
                    self.statements.insert(id, (sql, mentions));
                }
                let defs = |n: u16| if n > 0 { n as u64 + 1 } else { 0 };
                match defs(columns) + defs(params) {
                    0 => Observed::Done,
                    n => {
                        stage = Stage::Definitions(n);
                        Observed::More
                    }
                }
            }
            Stage::Definitions(n) => {
                if n <= 1 {
                    Observed::Done
                } else {
                    stage = Stage::Definitions(n - 1);
                    Observed::More
                }
            }
            Stage::FieldList => match parse_eof(b) {
                Some(_) => Observed::Done,
                None => Observed::More,
            },
        };
        if let Some(f) = self.in_flight.as_mut() {
            f.stage = stage;
        }
        Some(result)
    }
}

/// MySQL's own answer for a connection id that is not (one of yours).
fn unknown_thread(answer_seq: u8, id: &str) -> Bytes {
    frame(
        answer_seq,
        &packet::err(code::UNKNOWN_THREAD, &format!("Unknown thread id: {id}")),
    )
}
