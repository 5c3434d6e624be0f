//! Which database a MySQL text may switch the session to.
//!
//! A MySQL/MariaDB session through jitgate stays in its target's database:
//! `USE` of another one is refused (COM_INIT_DB is checked by the relay).
//! Matching the first bytes of the text is not enough: a leading comment, a
//! line break, a second statement (`SELECT 1; USE other`) or an executable
//! comment the server runs (`/*M! USE other */`) all switch the database
//! just the same, and `USE app /* c */` does not leave it. So the answer
//! comes from the parsed statements, after opening executable comments
//! exactly as the server does; where the text does not parse (or the
//! session reads text in a way the classifier does not model), a lexed
//! `USE` word outside strings and ordinary comments makes the answer
//! [`DatabaseSwitch::Unknown`], which the relay refuses.
//!
//! `USE` cannot be prepared and is not allowed inside stored programs, so
//! a text's own statements are the only place a client can write one.

use sqlparser::ast::{Statement, Use};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::mysql_lex::{Tok, has_word, under_some_reading};
use super::{Reading, changes_mysql_lexing, classifies_inline, lexing};

/// What a MySQL text does to the session's current database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseSwitch {
    /// Nothing in it switches the database.
    Stays,
    /// Its `USE` statements, with the database each names, in order.
    To(Vec<String>),
    /// It may switch, to a database jitgate cannot tell: a `USE` in a text
    /// that does not parse, of a qualified name, or read in a way the
    /// classifier does not model.
    Unknown,
}

/// Which databases the `USE` statements in `bytes` name, as this session's
/// server will read the text.
pub fn mysql_database_switch(reading: &Reading, bytes: &[u8]) -> DatabaseSwitch {
    // Every way of writing USE has these three letters in a row; and a text
    // in which no reading finds the word USE as code (`users`, `'use'`)
    // switches nothing, so only the rare rest is parsed.
    if !bytes.windows(3).any(|w| w.eq_ignore_ascii_case(b"use")) || !lexes_a_use(bytes) {
        return DatabaseSwitch::Stays;
    }
    let parsed = std::str::from_utf8(bytes)
        .ok()
        .filter(|_| !reading.lexing.reads_differently(bytes))
        // Parsed here on the session thread's stack, so only as long as
        // that is safe (a long `1+1+…` chain builds a tree whose drop
        // recurses once per level); a longer text that uses USE is refused.
        .filter(|text| classifies_inline(text.len()))
        .and_then(|text| lexing::open_executable_comments(text, reading.mysql_server))
        .and_then(|code| {
            std::panic::catch_unwind(|| Parser::parse_sql(&MySqlDialect {}, &code).ok())
                .ok()
                .flatten()
        })
        // The server lexes what follows a `SET sql_mode`/`SET NAMES` anew.
        .filter(|statements| !statements.iter().rev().skip(1).any(changes_mysql_lexing));
    match parsed {
        Some(statements) => switches_in(&statements),
        None => DatabaseSwitch::Unknown,
    }
}

fn switches_in(statements: &[Statement]) -> DatabaseSwitch {
    let mut databases = Vec::new();
    for statement in statements {
        let Statement::Use(target) = statement else {
            continue;
        };
        let Use::Object(name) = target else {
            return DatabaseSwitch::Unknown;
        };
        let [part] = &name.0[..] else {
            return DatabaseSwitch::Unknown;
        };
        let Some(ident) = part.as_ident() else {
            return DatabaseSwitch::Unknown;
        };
        databases.push(ident.value.clone());
    }
    if databases.is_empty() {
        DatabaseSwitch::Stays
    } else {
        DatabaseSwitch::To(databases)
    }
}

/// Is there a `USE` word in the text, read as code under any lexing the
/// server could be using (the bodies of executable comments count as code,
/// whether or not this server runs them)? An index hint (`USE INDEX`,
/// `USE KEY`) is not a switch: both words are reserved, so neither can be a
/// database name unquoted. Errs towards yes.
fn lexes_a_use(bytes: &[u8]) -> bool {
    under_some_reading(bytes, |lexer| {
        let mut tokens = std::iter::from_fn(|| lexer.next()).peekable();
        while let Some(token) = tokens.next() {
            if !matches!(token, Tok::Word(w) if w.eq_ignore_ascii_case(b"use")) {
                continue;
            }
            let hint = matches!(tokens.peek(), Some(Tok::Word(w))
                if w.eq_ignore_ascii_case(b"index") || w.eq_ignore_ascii_case(b"key"));
            if !hint {
                return true;
            }
        }
        false
    })
}

/// Could this text run SQL that jitgate never sees as text (MariaDB's
/// `EXECUTE IMMEDIATE`, or `EXECUTE` of a statement prepared from a
/// variable)? Such SQL may switch the database, so the relay asks the
/// server where the session is once it has run. Errs towards yes.
pub fn mysql_may_run_dynamic_sql(bytes: &[u8]) -> bool {
    has_word(bytes, b"execute")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{Lexing, MysqlServer};

    fn switch(text: &str) -> DatabaseSwitch {
        let mariadb = MysqlServer::from_version("5.5.5-10.11.19-MariaDB");
        mysql_database_switch(&Reading::mysql(Lexing::DEFAULT, mariadb), text.as_bytes())
    }

    fn to(db: &str) -> DatabaseSwitch {
        DatabaseSwitch::To(vec![db.to_owned()])
    }

    #[test]
    fn use_statements_anywhere_in_the_text_name_their_database() {
        assert_eq!(switch("USE app"), to("app"));
        assert_eq!(switch("  use `my``db`;"), to("my`db"));
        assert_eq!(switch("USE app /* c */"), to("app"));
        assert_eq!(switch("/* c */ USE other"), to("other"));
        assert_eq!(switch("\nUSE other"), to("other"));
        assert_eq!(switch("-- c\nUSE other"), to("other"));
        assert_eq!(
            switch("SELECT 1; USE other"),
            DatabaseSwitch::To(vec!["other".to_owned()])
        );
        assert_eq!(
            switch("USE app; USE other"),
            DatabaseSwitch::To(vec!["app".to_owned(), "other".to_owned()])
        );
    }

    #[test]
    fn executable_comments_are_opened_first() {
        assert_eq!(switch("/*M! USE other */"), to("other"));
        assert_eq!(switch("SELECT 1 /*! ; USE other */"), to("other"));
        // Not run by this server: no switch.
        assert_eq!(
            switch("SELECT 1 /*!999999 ; USE other */"),
            DatabaseSwitch::Stays
        );
        // A reading jitgate cannot settle: refused if it holds a USE.
        assert_eq!(
            switch("SELECT 1 /*m! ; USE other */"),
            DatabaseSwitch::Unknown
        );
    }

    #[test]
    fn strings_comments_and_index_hints_are_not_switches() {
        for text in [
            "SELECT 'USE other'",
            "SELECT 1 /* USE other */",
            "SELECT 1 -- USE other",
            "SELECT `use` FROM t",
            "SELECT * FROM t USE INDEX (i)",
            "SELECT user FROM mysql.user",
        ] {
            assert_eq!(switch(text), DatabaseSwitch::Stays, "{text}");
        }
    }

    #[test]
    fn unreadable_texts_with_a_use_may_switch() {
        assert_eq!(switch("USE other.x"), DatabaseSwitch::Unknown);
        assert_eq!(switch("HANDLER t OPEN; USE other"), DatabaseSwitch::Unknown);
        assert_eq!(
            switch("SET sql_mode = 'ANSI_QUOTES'; USE other"),
            DatabaseSwitch::Unknown
        );
        // Unparseable, but the only USE is an index hint.
        assert_eq!(
            switch("HANDLER t OPEN; SELECT * FROM t USE KEY (k)"),
            DatabaseSwitch::Stays
        );
        let mut gbk = Lexing::DEFAULT;
        gbk.mysql_client_charset("gbk");
        let reading = Reading::mysql(gbk, MysqlServer::default());
        assert_eq!(
            mysql_database_switch(&reading, "SELECT '丁\\' ; USE other; -- '".as_bytes()),
            DatabaseSwitch::Unknown
        );
    }
}
