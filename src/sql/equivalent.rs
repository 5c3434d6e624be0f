//! What a text sqlparser cannot parse is, where jitgate knows anyway: the
//! same statement spelled as one it parses, or its kind from its first word.

use super::mysql_lex;
use super::{Dialect, StatementKind, first_word};

/// What a text sqlparser cannot parse is, where jitgate knows anyway.
pub(super) enum Equivalent {
    /// The same statement, spelled so that sqlparser parses it.
    Text(String),
    /// Its kind, from its first word alone.
    Kind(StatementKind),
}

pub(super) fn equivalent(dialect: Dialect, sql: &str) -> Option<Equivalent> {
    match dialect {
        Dialect::Postgres => postgres_equivalent(dialect, sql).map(Equivalent::Text),
        Dialect::Mysql => mysql_equivalent(sql),
    }
}

/// MySQL/MariaDB statements sqlparser does not parse:
/// - `DO expr, …` evaluates its expressions as `SELECT expr, …` does;
/// - `HELP '…'` and `CHECKSUM TABLE …` only read;
/// - a text that starts with a word that creates, changes or drops schema
///   objects or privileges (`CREATE PROCEDURE …` with a body sqlparser does
///   not know) is DDL, and one that starts with a data change is a write:
///   whatever else it holds, it is at least that dangerous, and a read level
///   refuses it for that reason;
/// - otherwise, a quoted user variable (`` @`x.y` ``, `@'x'`) is spelled as
///   a plain one.
fn mysql_equivalent(sql: &str) -> Option<Equivalent> {
    let (first, rest) = first_word(sql);
    let first = first.to_ascii_lowercase();
    let kind = match first.as_str() {
        "do" => return Some(Equivalent::Text(format!("SELECT{rest}"))),
        "help" => StatementKind::Read,
        "checksum" if rest.trim_start().to_ascii_lowercase().starts_with("table") => {
            StatementKind::Read
        }
        "create" | "alter" | "drop" | "rename" | "grant" | "revoke" => StatementKind::Ddl,
        "insert" | "update" | "delete" | "replace" | "truncate" | "load" | "call" => {
            StatementKind::Write
        }
        _ => return mysql_plain_user_variables(sql).map(Equivalent::Text),
    };
    // `HELP` and `CHECKSUM` are reads only as one statement of their own.
    if kind == StatementKind::Read && sql.trim_end().trim_end_matches(';').contains(';') {
        return None;
    }
    Some(Equivalent::Kind(kind))
}

/// `sql` with every quoted user variable (`` @`x.y` ``, `@'x'`, `@"x"`)
/// replaced by a plain one, found with MySQL's own quoting rules; `None` if
/// there is none.
fn mysql_plain_user_variables(sql: &str) -> Option<String> {
    use mysql_lex::{Lexer, Rules, Tok};
    let bytes = sql.as_bytes();
    if !bytes
        .windows(2)
        .any(|w| w[0] == b'@' && matches!(w[1], b'`' | b'\'' | b'"'))
    {
        return None;
    }
    let mut lexer = Lexer::new(bytes, Rules::default());
    let mut spans = Vec::new();
    // Where the last token ended, if it was a lone `@` (not the second of
    // `@@`, a system variable: `` @@`sql_mode` `` stays as it is).
    let mut at_sign_end = None;
    let mut previous_end = None;
    let mut previous_at = false;
    let mut previous_name = false;
    while let Some(token) = lexer.next() {
        let span = lexer.token_span();
        let follows = previous_end == Some(span.start);
        match token {
            // Not after `@` (`@@x`, a system variable) nor right after a
            // name (`'u'@'%'`, an account).
            Tok::Punct(b'@') => {
                at_sign_end = if follows && (previous_at || previous_name) {
                    None
                } else {
                    Some(span.end)
                };
            }
            Tok::Quoted if at_sign_end == Some(span.start) => {
                spans.push(span.clone());
                at_sign_end = None;
            }
            _ => at_sign_end = None,
        }
        previous_at = matches!(token, Tok::Punct(b'@')) && !(previous_at && follows);
        previous_name = matches!(token, Tok::Quoted | Tok::Word(_));
        previous_end = Some(span.end);
    }
    if spans.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    for span in spans {
        out.push_str(&sql[copied..span.start]);
        out.push_str("jitgate_user_variable");
        copied = span.end;
    }
    out.push_str(&sql[copied..]);
    Some(out)
}

/// PostgreSQL statements sqlparser does not parse, spelled as ones it does
/// that the server treats the same way: `TABLE t` is `SELECT * FROM t`,
/// `MOVE … FROM c` repositions a cursor as `FETCH … FROM c` does without
/// returning its rows, and `[NOT] DEFERRABLE` in a transaction's modes only
/// changes when a serializable read-only transaction starts.
///
/// Only the first word is replaced, or (for DEFERRABLE) a text of nothing
/// but words, commas and a final semicolon is rewritten, so the rest of the
/// text reads exactly as the client wrote it.
fn postgres_equivalent(dialect: Dialect, sql: &str) -> Option<String> {
    if dialect != Dialect::Postgres {
        return None;
    }
    let (first, rest) = first_word(sql);
    if first.eq_ignore_ascii_case("table") {
        return Some(format!("SELECT * FROM{rest}"));
    }
    if first.eq_ignore_ascii_case("move") {
        return Some(format!("FETCH{rest}"));
    }
    let transaction = ["begin", "start", "set"]
        .iter()
        .any(|word| first.eq_ignore_ascii_case(word));
    let body = sql.trim_end().trim_end_matches(';');
    let plain = body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b',' || b.is_ascii_whitespace());
    if !transaction || !plain {
        return None;
    }
    let words: Vec<&str> = body
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|word| !word.is_empty())
        .collect();
    if !words
        .iter()
        .any(|word| word.eq_ignore_ascii_case("deferrable"))
    {
        return None;
    }
    let mut kept: Vec<&str> = Vec::with_capacity(words.len());
    for word in words {
        if word.eq_ignore_ascii_case("deferrable") {
            if kept
                .last()
                .is_some_and(|last| last.eq_ignore_ascii_case("not"))
            {
                kept.pop();
            }
        } else {
            kept.push(word);
        }
    }
    Some(kept.join(" "))
}
