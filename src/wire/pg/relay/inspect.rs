//! What the upward direction does with each client message: classify a
//! statement (a long text off the session thread), admit it or refuse it
//! the way the server would, remember prepared statements and portals,
//! and seal the audit record a statement goes up with.

use super::*;

/// The kind of a Query's or Parse's text too long to classify on the
/// session thread (which serves other sessions meanwhile), classified off
/// it; `None` for every other frame, which [`inspect`] classifies itself.
pub(super) async fn long_text_kind(
    shared: &Shared<'_>,
    st: &Upward,
    f: &Frame,
) -> Option<StatementKind> {
    if st.discarding {
        return None;
    }
    let mut b = f.body();
    let text = match f.tag() {
        b'Q' => take_cstr_bytes(&mut b)?,
        b'P' => {
            take_cstr_bytes(&mut b)?;
            take_cstr_bytes(&mut b)?
        }
        _ => return None,
    };
    if crate::sql::classifies_inline(text.len()) {
        return None;
    }
    // Not UTF-8: unknown at once, without parsing (see `StatementText`).
    let text = std::str::from_utf8(text).ok()?.to_owned();
    Some(crate::sql::classify_text_off_thread(shared.reading(), text).await)
}

/// Decide what to do with one client frame; may append an injected Sync to
/// `out`. `long_kind`: the kind [`long_text_kind`] found for this frame's text.
pub(super) fn inspect(
    shared: &Shared<'_>,
    st: &mut Upward,
    f: &Frame,
    out: &mut BytesMut,
    long_kind: Option<StatementKind>,
) -> Verdict {
    let tag = f.tag();
    if st.discarding {
        return match tag {
            b'S' => {
                st.discarding = false;
                queue_local(shared, None, true);
                Verdict::Drop
            }
            b'X' => Verdict::Terminate,
            _ => Verdict::Drop,
        };
    }
    match tag {
        b'Q' => query(shared, st, f, long_kind),
        b'P' => parse(shared, st, f, out, long_kind),
        b'B' => {
            let mut b = f.body();
            let portal = take_cstr_bytes(&mut b).unwrap_or(b"");
            let stmt = take_cstr_bytes(&mut b).unwrap_or(b"");
            match st.statements.get(stmt) {
                Some(prepared) => {
                    st.portals
                        .insert(Bytes::copy_from_slice(portal), prepared.clone());
                }
                None => {
                    st.portals.remove(portal);
                }
            }
            st.unsynced = true;
            Verdict::Forward
        }
        b'E' => execute(shared, st, f, out),
        b'S' => {
            st.unsynced = false;
            push_expect(
                shared,
                Expect::Sync {
                    forward_ready: true,
                },
            );
            Verdict::Forward
        }
        b'F' => function_call(shared, st, f),
        b'X' => Verdict::Terminate,
        b'D' | b'C' | b'H' => {
            st.unsynced = true;
            Verdict::Forward
        }
        // CopyData, CopyDone, CopyFail, and anything else: the server judges it.
        _ => Verdict::Forward,
    }
}

/// A simple Query: classified (a long text was classified off the
/// session thread), admitted or refused with an answer of jitgate's own.
fn query(
    shared: &Shared<'_>,
    st: &mut Upward,
    f: &Frame,
    long_kind: Option<StatementKind>,
) -> Verdict {
    let mut b = f.body();
    let sql_bytes = take_cstr_bytes(&mut b).unwrap_or(b"");
    let statement = crate::wire::StatementText::new(sql_bytes);
    let kind = match (long_kind, &statement.exact) {
        (Some(kind), _) => kind,
        (None, None) => {
            let parsed = &st.statements;
            st.prepared
                .classify(&shared.reading(), &statement.text, |name| {
                    parsed.get(name.as_bytes()).map(|p| p.kind)
                })
        }
        (None, Some(_)) => statement.classify(&shared.reading()),
    };
    let sql = &statement.text;
    let exact = statement.exact.as_deref();
    admit_as_query(shared, st, (sql, exact, kind, None), sql)
}

/// Admit what is answered like a simple Query (`what`: its text, exact
/// bytes, kind and detail, see [`admit_with`]): forwarded and expected
/// (`pending_text` for its closing record), or refused with an answer of
/// jitgate's own.
fn admit_as_query(
    shared: &Shared<'_>,
    st: &mut Upward,
    what: (&str, Option<&str>, StatementKind, Option<&str>),
    pending_text: &str,
) -> Verdict {
    let (sql, exact, kind, detail) = what;
    match admit_with(shared, st, sql, exact, kind, detail) {
        Ok(seq) => {
            let pending = shared.pending(seq, kind, pending_text);
            push_expect(shared, Expect::Query(pending));
            Verdict::Forward
        }
        Err(error) => {
            queue_local(shared, Some(error), true);
            Verdict::Drop
        }
    }
}

/// Parse: classified once here; refused at once on a level that may not
/// run it, otherwise remembered for its Binds and audited at Execute.
fn parse(
    shared: &Shared<'_>,
    st: &mut Upward,
    f: &Frame,
    out: &mut BytesMut,
    long_kind: Option<StatementKind>,
) -> Verdict {
    let mut b = f.body();
    let name = take_cstr_bytes(&mut b).unwrap_or(b"");
    let sql_bytes = take_cstr_bytes(&mut b).unwrap_or(b"");
    let statement = crate::wire::StatementText::new(sql_bytes);
    let kind = long_kind.unwrap_or_else(|| statement.classify(&shared.reading()));
    let sql: Arc<str> = Arc::from(statement.text);
    let exact: Option<Arc<str>> = statement.exact.map(Arc::from);
    if !admission::may_run(shared.ctx.read_only, kind) {
        let error = refusal(shared, &sql, exact.as_deref(), kind);
        refuse_extended(shared, st, error, out);
        return Verdict::Drop;
    }
    st.statements
        .insert(Bytes::copy_from_slice(name), Prepared { sql, exact, kind });
    st.unsynced = true;
    Verdict::Forward
}

/// Execute: the portal's statement as parsed is what is admitted and
/// audited; a portal jitgate did not see bound is unknown.
fn execute(shared: &Shared<'_>, st: &mut Upward, f: &Frame, out: &mut BytesMut) -> Verdict {
    let mut b = f.body();
    let portal = take_cstr_bytes(&mut b).unwrap_or(b"");
    let prepared = st.portals.get(portal).cloned();
    let (text, exact, kind): (&str, _, _) = match &prepared {
        Some(p) => (&p.sql, p.exact.as_deref(), p.kind),
        None => (
            "-- execute of a statement jitgate did not see prepared",
            None,
            StatementKind::Unknown,
        ),
    };
    match admit(shared, st, text, exact, kind) {
        Ok(seq) => {
            push_expect(shared, Expect::Execute(shared.pending(seq, kind, text)));
            st.unsynced = true;
            Verdict::Forward
        }
        Err(error) => {
            refuse_extended(shared, st, error, out);
            Verdict::Drop
        }
    }
}

/// FunctionCall runs a function by OID: nothing to classify, so it is
/// refused on read-only levels and audited as unknown elsewhere, with the
/// OID it calls.
fn function_call(shared: &Shared<'_>, st: &mut Upward, f: &Frame) -> Verdict {
    let oid = f
        .body()
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let of = match oid {
        Some(oid) => format!("of function OID {oid}"),
        None => "without a function OID".to_owned(),
    };
    let call = format!("-- fastpath function call {of}");
    let detail = format!("command FunctionCall (F) {of}");
    let what = (
        call.as_str(),
        None,
        StatementKind::Unknown,
        Some(detail.as_str()),
    );
    admit_as_query(shared, st, what, "")
}

/// Check a statement against the level and seal its audit record into the
/// chain; the statement may be forwarded only if this returns `Ok` (its
/// sequence number), and only once `st.unwritten` is written.
fn admit(
    shared: &Shared<'_>,
    st: &mut Upward,
    sql: &str,
    exact: Option<&str>,
    kind: StatementKind,
) -> Result<u64, Bytes> {
    admit_with(shared, st, sql, exact, kind, None)
}

/// [`admit`], with a `detail` for both its `statement` and its
/// `statement_refused` record (what a non-statement message was).
fn admit_with(
    shared: &Shared<'_>,
    st: &mut Upward,
    sql: &str,
    exact: Option<&str>,
    kind: StatementKind,
    detail: Option<&str>,
) -> Result<u64, Bytes> {
    let ctx = shared.ctx;
    if !admission::may_run(ctx.read_only, kind) {
        return Err(refusal_with(shared, sql, exact, kind, detail));
    }
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let info = &ctx.info;
    let sealed = ctx.audit.seal(&AuditEvent {
        seq: Some(seq),
        statement: Some(sql),
        statement_base64: exact,
        kind: Some(kind.as_str()),
        detail,
        ..ctx.members.event("statement")
    });
    match sealed {
        Ok(sealed) => {
            st.unwritten = Some(sealed);
            info.count_statement();
            Ok(seq)
        }
        Err(e) => {
            tracing::error!(error = %e, "audit log write failed; refusing to forward");
            Err(messages::error(
                Severity::Error,
                sqlstate::IO_ERROR,
                admission::AUDIT_DOWN_STATEMENT,
                Some(admission::AUDIT_DOWN_STATEMENT_HINT),
            ))
        }
    }
}

/// Audit a refused statement and build the error the client gets.
fn refusal(shared: &Shared<'_>, sql: &str, exact: Option<&str>, kind: StatementKind) -> Bytes {
    refusal_with(shared, sql, exact, kind, None)
}

fn refusal_with(
    shared: &Shared<'_>,
    sql: &str,
    exact: Option<&str>,
    kind: StatementKind,
    detail: Option<&str>,
) -> Bytes {
    let info = &shared.ctx.info;
    shared.ctx.metrics.statement(kind.as_str(), "refused");
    let _ = shared.ctx.audit.record(&AuditEvent {
        statement: Some(sql),
        statement_base64: exact,
        kind: Some(kind.as_str()),
        outcome: Some(sqlstate::READ_ONLY_TRANSACTION),
        detail,
        ..shared.ctx.members.event("statement_refused")
    });
    let refusal = admission::Refusal::read_only(kind, &info.target, &info.level);
    messages::error(
        Severity::Error,
        sqlstate::READ_ONLY_TRANSACTION,
        &refusal.message,
        Some(refusal.hint),
    )
}

/// Refuse an extended-protocol message: like the server, answer with an
/// error and ignore everything up to the client's Sync. If earlier messages
/// of this batch already went up, a Sync is sent after them so their answers
/// arrive before the error (the server's ReadyForQuery for it is swallowed).
fn refuse_extended(shared: &Shared<'_>, st: &mut Upward, error: Bytes, out: &mut BytesMut) {
    if st.unsynced {
        out.extend_from_slice(&[b'S', 0, 0, 0, 4]);
        push_expect(
            shared,
            Expect::Sync {
                forward_ready: false,
            },
        );
        st.unsynced = false;
    }
    queue_local(shared, Some(error), false);
    st.discarding = true;
}
