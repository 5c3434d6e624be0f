//! What the relay does with each client command: classify and admit a
//! statement, carry out a `KILL`, keep the session in its database, refuse
//! what a level or jitgate does not allow, and write the audit records
//! that go with each decision.

use std::sync::Arc;

use bytes::Bytes;

use super::*;

impl Relay<'_> {
    /// The kind of a command's statement text too long to classify on the
    /// session thread (which serves other sessions meanwhile), classified
    /// off it; `None` for every other command. (The `USE` and `sql_mode`
    /// follow-ups do not parse a long text at all: see
    /// `sql::mysql_database_switch` and `sql::mysql_lexing_after`.)
    pub(super) async fn long_text_kind(&self, m: &Message) -> Option<StatementKind> {
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

    pub(super) fn command(&mut self, m: &Message) -> Action {
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
    pub(super) fn end_outside_database(&mut self, cmd: u8, now_in: &str, answer_seq: u8) -> Action {
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
    pub(super) fn query(
        &mut self,
        args: &[u8],
        last_seq: u8,
        long_kind: Option<StatementKind>,
    ) -> Action {
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
    pub(super) fn prepare(
        &mut self,
        args: &[u8],
        last_seq: u8,
        long_kind: Option<StatementKind>,
    ) -> Action {
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
    pub(super) fn execute(
        &mut self,
        args: &[u8],
        last_seq: u8,
        long_kind: Option<StatementKind>,
    ) -> Action {
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
    pub(super) fn init_db(&mut self, args: &[u8], last_seq: u8) -> Action {
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
    pub(super) fn kill_statement(
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
    pub(super) fn kill_done(&mut self, result: KillResult, order: &KillOrder) -> Bytes {
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
    pub(super) fn admit(
        &mut self,
        sql: &str,
        kind: StatementKind,
        answer_seq: u8,
    ) -> Result<Pending, Bytes> {
        self.admit_with(sql, kind, None, answer_seq)
    }

    pub(super) fn admit_with(
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

    pub(super) fn record_refusal(&self, sql: &str, kind: StatementKind, code: u16) {
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
    pub(super) fn refuse_command(
        &self,
        cmd: u8,
        answer_seq: u8,
        code: (u16, &str),
        message: &str,
    ) -> Bytes {
        self.record_command_refusal(&format!("{} (0x{cmd:02x})", command::name(cmd)), code.0);
        frame(answer_seq, &packet::err(code, message))
    }

    /// Audit a client command jitgate refused that carries no statement
    /// (`what` names it): a `statement_refused` record whose `detail` names
    /// the command, as the PostgreSQL relay does for a refused FunctionCall.
    pub(super) fn record_command_refusal(&self, what: &str, code: u16) {
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
    pub(super) fn refusal(&self, sql: &str, kind: StatementKind, answer_seq: u8) -> Bytes {
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
    pub(super) fn leaves_database(
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

    pub(super) fn wrong_database(
        &self,
        sql: &str,
        kind: StatementKind,
        db: &str,
        answer_seq: u8,
    ) -> Bytes {
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
}

/// MySQL's own answer for a connection id that is not (one of yours).
fn unknown_thread(answer_seq: u8, id: &str) -> Bytes {
    frame(
        answer_seq,
        &packet::err(code::UNKNOWN_THREAD, &format!("Unknown thread id: {id}")),
    )
}
