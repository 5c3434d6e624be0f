//! `KILL [QUERY | CONNECTION] <id>` through jitgate: the MySQL counterpart of
//! the Postgres cancel keys.
//!
//! A client sees two ids for its connection: the one jitgate announced in its
//! greeting (before the target, and so the upstream, is known), which
//! drivers report as their connection id and the `mariadb` CLI kills with on
//! Ctrl-C; and its upstream thread's, which `CONNECTION_ID()` and `SHOW
//! PROCESSLIST` show. This registry maps both to the session they name: its
//! identity, its upstream thread and the level account that can reach it
//! (a thread id only on the same target, since two servers may hand out the
//! same one). The relay answers a `KILL` itself: when the id
//! is one of the *same identity's* connections, jitgate stops the upstream
//! query through a side connection (`KILL QUERY <thread>`), or ends that
//! jitgate session (`KILL CONNECTION`); for any other id it answers MySQL's
//! own ERR 1094 "Unknown thread id" and does nothing upstream.
//!
//! A `KILL` is never forwarded: the sessions of one level share one upstream
//! account, and the server lets an account kill any of its own threads, so a
//! forwarded `KILL <raw thread id>` could stop somebody else's query. Any
//! text that uses `KILL` as a keyword outside the exact form above (several
//! statements, `KILL HARD`, `KILL QUERY ID`, `KILL USER`, an expression, an
//! executable comment, a prepared `KILL`) is refused. This is a statement
//! guard, not the wall: dynamic SQL (`PREPARE s FROM @text`, `EXECUTE
//! IMMEDIATE`, a stored routine) hides the keyword in data, which is why a
//! shared upstream account is still the boundary of what a level may do.
//!
//! The `mariadb` CLI sends its Ctrl-C `KILL QUERY` on a fresh connection
//! that names no database, i.e. no target; the front lets such a login in,
//! only while the identity has a live session, as a connection that can do
//! nothing but this (see `front.rs`).

use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use crate::config::{LevelConfig, TargetConfig};
use crate::session::{SessionInfo, Sessions};

use super::upstream::{self, KillScope};
use crate::sql::mysql_lex::{self, Lexer, Rules, Tok};

/// What a client-visible connection id stands for.
pub struct KillEntry {
    pub identity: String,
    /// The jitgate session (for `KILL CONNECTION` and the audit record).
    pub session: String,
    pub grant: String,
    pub target: Arc<TargetConfig>,
    pub level_name: String,
    pub level: Arc<LevelConfig>,
    /// The upstream server's thread id of the session's connection.
    pub thread_id: u32,
    /// Set when another connection of the same identity ends this session
    /// with `KILL CONNECTION`: says who, for the session's end record.
    ended_by: Mutex<Option<String>>,
}

impl KillEntry {
    pub fn new(
        session: &SessionInfo,
        target: Arc<TargetConfig>,
        level: Arc<LevelConfig>,
        thread_id: u32,
    ) -> KillEntry {
        KillEntry {
            identity: session.identity.clone(),
            session: session.id.clone(),
            grant: session.grant.clone(),
            target,
            level_name: session.level.clone(),
            level,
            thread_id,
            ended_by: Mutex::new(None),
        }
    }

    /// Who ended this session with `KILL CONNECTION`, if anybody did.
    pub fn take_ended_by(&self) -> Option<String> {
        self.ended_by.lock().ok()?.take()
    }
}

/// Client-visible connection id → the session it names. An id is reserved
/// when the greeting announces it (so no two live connections share one)
/// and bound once the session exists; the entry goes away with its guard.
pub struct KillRegistry {
    by_id: DashMap<u32, Option<Arc<KillEntry>>>,
    sessions: Arc<Sessions>,
}

impl KillRegistry {
    pub fn new(sessions: Arc<Sessions>) -> KillRegistry {
        KillRegistry {
            by_id: DashMap::new(),
            sessions,
        }
    }

    /// A fresh connection id for a greeting. The high bit is always set, so
    /// it can never be mistaken for a (small) upstream thread id.
    pub fn reserve(self: &Arc<Self>) -> ConnectionId {
        loop {
            let id = rand::random::<u32>() | 0x8000_0000;
            if let dashmap::Entry::Vacant(v) = self.by_id.entry(id) {
                v.insert(None);
                return ConnectionId {
                    registry: self.clone(),
                    id,
                };
            }
        }
    }

    /// The session behind connection `id`, if it belongs to `identity`.
    /// Another identity's connection looks exactly like an unknown one.
    pub fn find(&self, id: u32, identity: &str) -> Option<Arc<KillEntry>> {
        let e = self.by_id.get(&id)?;
        let entry = e.value().as_ref()?;
        (entry.identity == identity).then(|| entry.clone())
    }

    /// The session of `identity` on `target` whose upstream thread is
    /// `thread_id`: the id `CONNECTION_ID()` and `SHOW PROCESSLIST` show
    /// the client. Threads of other targets' servers, and other
    /// identities', look exactly like unknown ones.
    pub fn find_thread(
        &self,
        thread_id: u32,
        identity: &str,
        target: &str,
    ) -> Option<Arc<KillEntry>> {
        self.by_id.iter().find_map(|e| {
            let entry = e.value().as_ref()?;
            (entry.thread_id == thread_id
                && entry.identity == identity
                && entry.target.name == target)
                .then(|| entry.clone())
        })
    }

    /// Does `identity` have a live session on this listener?
    pub fn has_session_of(&self, identity: &str) -> bool {
        self.by_id
            .iter()
            .any(|e| e.value().as_ref().is_some_and(|k| k.identity == identity))
    }

    /// Carry out `KILL <scope> <id>` for a connection [`find`](Self::find)
    /// returned. `by` names the killer for the victim's end record.
    pub async fn kill(&self, entry: &KillEntry, scope: KillScope, by: &str) -> KillResult {
        match scope {
            KillScope::Connection => {
                // Like an operator's kill: the session stops its upstream
                // thread, tells its client and ends.
                if let Ok(mut b) = entry.ended_by.lock() {
                    *b = Some(by.to_owned());
                }
                match self.sessions.kill(&entry.session) {
                    Some(_) => KillResult::Done,
                    None => KillResult::Gone,
                }
            }
            KillScope::Query => {
                match upstream::kill(
                    &entry.target,
                    &entry.level_name,
                    &entry.level,
                    entry.thread_id,
                    KillScope::Query,
                )
                .await
                {
                    Ok(()) => KillResult::Done,
                    // The thread ended in the meantime.
                    Err(e) if e.is_refused_with("1094") => KillResult::Gone,
                    Err(e) => KillResult::Failed(e.to_string()),
                }
            }
        }
    }
}

/// How a KILL that jitgate carried out went.
#[derive(Debug)]
pub enum KillResult {
    Done,
    /// The session or its upstream thread ended before the kill arrived.
    Gone,
    /// The side connection failed (never carries an upstream secret).
    Failed(String),
}

/// A connection id announced in a greeting; dropping it frees the id and
/// forgets the session bound to it.
pub struct ConnectionId {
    registry: Arc<KillRegistry>,
    id: u32,
}

impl ConnectionId {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The session now exists: make the id killable.
    pub fn bind(&self, entry: KillEntry) -> Arc<KillEntry> {
        let entry = Arc::new(entry);
        self.registry.by_id.insert(self.id, Some(entry.clone()));
        entry
    }
}

impl Drop for ConnectionId {
    fn drop(&mut self) {
        self.registry.by_id.remove(&self.id);
    }
}

// ---- recognising KILL ---------------------------------------------------------

/// `KILL <id>` / `KILL CONNECTION <id>` / `KILL QUERY <id>`, exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillStatement {
    pub scope: KillScope,
    /// The id if it can be one jitgate handed out (fits 32 bits).
    pub id: Option<u32>,
    /// The id as written (without leading zeros), for error messages.
    pub id_text: String,
}

/// Is `sql` exactly `KILL [QUERY | CONNECTION] <decimal id>`, with any
/// whitespace or ordinary comments around the words and one optional
/// trailing `;`? Case-insensitive; never panics.
pub fn parse_exact(sql: &[u8]) -> Option<KillStatement> {
    let mut lx = Lexer::new(sql, Rules::default());
    let Some(Tok::Word(w)) = lx.next() else {
        return None;
    };
    if !w.eq_ignore_ascii_case(b"kill") {
        return None;
    }
    let mut t = lx.next()?;
    let mut scope = KillScope::Connection;
    if let Tok::Word(w) = t {
        if w.eq_ignore_ascii_case(b"query") {
            scope = KillScope::Query;
            t = lx.next()?;
        } else if w.eq_ignore_ascii_case(b"connection") {
            t = lx.next()?;
        }
    }
    let Tok::Word(digits) = t else {
        return None;
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    match lx.next() {
        None => {}
        Some(Tok::Semi) if lx.next().is_none() => {}
        _ => return None,
    }
    let trimmed = match digits.iter().position(|&d| d != b'0') {
        Some(i) => &digits[i..],
        None => b"0",
    };
    // Digits only: ASCII, so this is the text as written.
    let id_text = String::from_utf8_lossy(trimmed).into_owned();
    Some(KillStatement {
        scope,
        id: id_text.parse().ok(),
        id_text,
    })
}

/// Does `sql` (the raw bytes the client sent) use `KILL` as a keyword
/// anywhere: outside string literals, quoted identifiers and ordinary
/// comments (inside an executable `/*! */` comment counts)? Checked under
/// every lexing the server could be using — with and without backslash
/// escapes, `"` as a string or an identifier, single-byte or multi-byte
/// client character sets (in GBK, Big5 or SJIS a `\` or a backtick can be
/// the second byte of a character) — so neither `sql_mode` nor `SET NAMES`
/// can hide one. Errs towards yes.
pub fn mentions_kill(sql: &[u8]) -> bool {
    mysql_lex::has_word(sql, b"kill")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(sql: &str) -> Option<(KillScope, Option<u32>)> {
        parse_exact(sql.as_bytes()).map(|k| (k.scope, k.id))
    }

    #[test]
    fn the_exact_forms_parse() {
        use KillScope::*;
        assert_eq!(exact("KILL 42"), Some((Connection, Some(42))));
        assert_eq!(exact("kill query 42"), Some((Query, Some(42))));
        assert_eq!(
            exact("  Kill Connection\t42 ;  \n"),
            Some((Connection, Some(42)))
        );
        assert_eq!(
            exact("KILL QUERY 2147483650;"),
            Some((Query, Some(2147483650)))
        );
        assert_eq!(
            exact("KILL /* me */ QUERY 7 -- ctrl-c\n"),
            Some((Query, Some(7)))
        );
        let huge = parse_exact(b"KILL 99999999999999999999999").unwrap();
        assert_eq!(
            (huge.id, huge.id_text.as_str()),
            (None, "99999999999999999999999")
        );
        assert_eq!(parse_exact(b"KILL 007").unwrap().id_text, "7");
    }

    #[test]
    fn other_forms_do_not() {
        for sql in [
            "KILL",
            "KILL QUERY",
            "KILL QUERY ID 5",
            "KILL HARD 5",
            "KILL SOFT QUERY 5",
            "KILL USER jg_write",
            "KILL 1+1",
            "KILL @id",
            "KILL ?",
            "KILL 0x10",
            "KILL -5",
            "KILL 5; SELECT 1",
            "KILL 5;;",
            "SELECT 1; KILL 5",
            "/*!KILL 5*/",
            "KILL QUERY5",
            "KILLQUERY 5",
            "KILL '5'",
            "",
            "SELECT 1",
        ] {
            assert_eq!(parse_exact(sql.as_bytes()), None, "{sql}");
        }
    }

    #[test]
    fn kill_is_found_wherever_it_is_code() {
        for sql in [
            "KILL 5",
            "select 1; kill 5",
            "/*!50000 KILL 5 */",
            "/*M!100000 KILL 5 */",
            "BEGIN NOT ATOMIC KILL 5; END",
            "SELECT 1 --1\nKILL 5",
            // With NO_BACKSLASH_ESCAPES the string ends at the backslash.
            "SELECT 'a\\'; KILL 5; -- '",
            // Without it, the quote is escaped and the string goes on.
            "SELECT 'a\\''; KILL 5; -- '",
            "SELECT \"\\\"; KILL 5; -- \"",
            "prepare s from 'x'; kill 5",
        ] {
            assert!(mentions_kill(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn multibyte_and_non_ascii_bytes_cannot_hide_kill() {
        for sql in [
            // SJIS/GBK: 0x95 0x60 is one character, not an opening backtick.
            &b"SELECT 1 AS \x95`; KILL 5; -- `"[..],
            // …and 0x95 0x5c is one character, not an escape.
            b"SELECT '\x95\\'; KILL 5; -- '",
            b"SELECT 1;\xffKILL 5",
            b"SELECT 1;\xc3\xa9KILL\xc3\xa9 5",
            // Valid UTF-8 whose last byte leads a GBK character that eats the backtick.
            "SELECT 1 AS \u{3042}`; KILL 5; -- `".as_bytes(),
        ] {
            assert!(mentions_kill(sql), "{}", String::from_utf8_lossy(sql));
        }
        // A quote is never a second byte: UTF-8 text before one does not
        // turn the rest inside out.
        assert!(!mentions_kill(
            "INSERT INTO t VALUES ('\u{3042}', 'kill switch')".as_bytes()
        ));
    }

    #[test]
    fn kill_in_data_and_comments_is_not_a_kill() {
        for sql in [
            "SELECT 'KILL 5'",
            "SELECT `kill` FROM t",
            "SELECT \"kill\"",
            "SELECT 1 /* KILL 5 */",
            "SELECT 1 -- KILL 5",
            "SELECT 1 # KILL 5",
            "SELECT skill, killer, kill_count FROM t",
            "SELECT 1",
        ] {
            assert!(!mentions_kill(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let alphabet: &[u8] = b"kilKIL '\"`\\/*!M-#;\n 0123456789qQcC\x95\xff\x80";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let len = (state % 24) as usize;
            let mut s = Vec::with_capacity(len);
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            let _ = parse_exact(&s);
            let _ = mentions_kill(&s);
        }
    }
}
