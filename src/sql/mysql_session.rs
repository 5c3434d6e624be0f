//! How a MySQL/MariaDB session reads text after a statement: the
//! `sql_mode` and character set it assigns, followed from the text itself.

use sqlparser::ast::{ContextModifier, Expr, ObjectName, Set, Statement, Value};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::Reading;
use super::lexing::{self, Lexing};

/// Does this MySQL text, run successfully, leave the session reading text
/// differently? The session's [`Lexing`] after it: the settings it assigns
/// from literals are applied, and a change jitgate cannot follow (a value
/// computed on the server, a form sqlparser does not parse such as `SET
/// CHARACTER SET`, an `EXECUTE` of a prepared text) makes the reading
/// [`Lexing::OPAQUE`].
///
/// `SET sql_mode = DEFAULT` returns to `login`'s mode: the session's default
/// is the server's global mode, which jitgate read at login. The text is read
/// as `reading`'s server reads it, executable comments opened as it opens
/// them: a SET in a comment the server runs counts, one in a comment it
/// skips does not.
pub fn mysql_lexing_after(text: &[u8], reading: &Reading, login: Lexing) -> Lexing {
    let before = reading.lexing;
    const WORDS: [&[u8]; 5] = [b"sql_mode", b"names", b"character", b"charset", b"execute"];
    let mentions = |word: &[u8]| {
        text.windows(word.len())
            .any(|window| window.eq_ignore_ascii_case(word))
    };
    if !WORDS.iter().any(|word| mentions(word)) {
        return before;
    }
    let Ok(text) = std::str::from_utf8(text) else {
        return Lexing::OPAQUE;
    };
    // Parsed here on the session thread's stack, so only as long as that
    // is safe (a long `1+1+…` chain builds a tree whose drop recurses once
    // per level); after a longer one the reading is not known.
    if before.reads_differently(text.as_bytes()) || !super::classifies_inline(text.len()) {
        return Lexing::OPAQUE;
    }
    let Some(code) = lexing::open_executable_comments(text, reading.mysql_server) else {
        return Lexing::OPAQUE;
    };
    let Ok(statements) = Parser::parse_sql(&MySqlDialect {}, &code) else {
        return Lexing::OPAQUE;
    };
    let mut after = before;
    for statement in &statements {
        // A prepared text may set anything.
        if matches!(statement, Statement::Execute { .. }) {
            return Lexing::OPAQUE;
        }
        let Statement::Set(set) = statement else {
            continue;
        };
        let assignments: Vec<(Option<ContextModifier>, &ObjectName, &[Expr])> = match set {
            Set::SingleAssignment {
                scope,
                variable,
                values,
                ..
            } => vec![(*scope, variable, values.as_slice())],
            Set::MultipleAssignments { assignments } => assignments
                .iter()
                .map(|a| (a.scope, &a.name, std::slice::from_ref(&a.value)))
                .collect(),
            Set::SetNames { charset_name, .. } => {
                after.mysql_client_charset(&charset_name.value);
                continue;
            }
            // Back to the server's default character set: not known here.
            Set::SetNamesDefault {} => {
                after = after.with_unknown_charset();
                continue;
            }
            _ => continue,
        };
        for (scope, name, values) in assignments {
            let Some(setting) = mysql_session_setting(scope, name) else {
                continue;
            };
            let literal = match values {
                [Expr::Value(v)] => match &v.value {
                    Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.as_str()),
                    _ => None,
                },
                [Expr::Identifier(ident)] if !ident.value.starts_with('@') => {
                    Some(ident.value.as_str())
                }
                _ => None,
            };
            match (setting.as_str(), literal) {
                ("sql_mode", Some(mode)) if mode.eq_ignore_ascii_case("default") => {
                    after = after.with_sql_mode_of(login)
                }
                ("sql_mode", Some(mode)) => after.mysql_sql_mode(mode),
                ("character_set_client", Some(charset))
                    if !charset.eq_ignore_ascii_case("default") =>
                {
                    after.mysql_client_charset(charset)
                }
                ("character_set_client", _) => after = after.with_unknown_charset(),
                ("sql_mode", _) => return Lexing::OPAQUE,
                _ => {}
            }
        }
    }
    after
}

/// The lower-case name of a session setting assigned by `SET`, or `None`
/// for a global one (which does not change this session) or a user variable.
fn mysql_session_setting(scope: Option<ContextModifier>, name: &ObjectName) -> Option<String> {
    if scope == Some(ContextModifier::Global) {
        return None;
    }
    let parts: Vec<&str> = name
        .0
        .iter()
        .map(|part| part.as_ident().map_or("", |ident| ident.value.as_str()))
        .collect();
    let (setting, qualifiers) = parts.split_last()?;
    if qualifiers
        .iter()
        .any(|q| !q.eq_ignore_ascii_case("@@session") && !q.eq_ignore_ascii_case("@@local"))
    {
        return None;
    }
    if setting.starts_with('@') && !setting.starts_with("@@") {
        return None;
    }
    Some(setting.trim_start_matches('@').to_ascii_lowercase())
}

/// A MySQL statement after which the server reads the rest of the same text
/// differently: MySQL parses a multi-statement text one statement at a time,
/// so a `SET sql_mode`/`SET NAMES` changes how the statements after it are
/// lexed, which a parse of the whole text up front cannot know.
pub(super) fn changes_mysql_lexing(statement: &Statement) -> bool {
    let Statement::Set(set) = statement else {
        return false;
    };
    let touches = |scope: Option<ContextModifier>, name: &ObjectName| {
        mysql_session_setting(scope, name)
            .is_some_and(|s| s == "sql_mode" || s.starts_with("character_set") || s == "names")
    };
    match set {
        Set::SingleAssignment {
            scope, variable, ..
        } => touches(*scope, variable),
        Set::MultipleAssignments { assignments } => {
            assignments.iter().any(|a| touches(a.scope, &a.name))
        }
        Set::SetNames { .. } | Set::SetNamesDefault {} => true,
        _ => false,
    }
}
