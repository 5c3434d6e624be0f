//! Following the server's answers: where each response ends (the stages
//! of a result set, a prepared statement's definitions), its outcome and
//! rows for the closing audit record, and what it changed that the relay
//! must know (sql_mode and character set, the current database).

use super::*;

impl Relay<'_> {
    pub(super) fn audit_end(&self, p: &Pending, outcome: &str, rows: u64) {
        let failed = outcome.starts_with("ERR");
        self.ctx
            .statement_end(p.seq, p.kind, p.started, outcome, rows, failed);
    }

    /// How the server reads text after `text` runs, where that changes.
    pub(super) fn lexing_after(&self, text: &[u8], mentions: Mentions) -> Option<Lexing> {
        if !mentions.lexing_setting() && !mentions.execute() {
            return None;
        }
        let after = sql::mysql_lexing_after(text, &self.reading, self.login_lexing);
        (after != self.reading.lexing).then_some(after)
    }

    /// The response in flight is complete.
    pub(super) fn finish(&mut self) {
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
    pub(super) fn database_left(&self, f: &InFlight) -> Option<String> {
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
    pub(super) fn observe(&mut self, p: &Packet) -> Option<Observed> {
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
