//! `SET`, `RESET` and `set_config`: which settings a read level may change
//! (ordinary ones are housekeeping; those that lift read-only mode, change
//! who the session is, or put a schema before `pg_catalog` are not), and
//! which texts may change how the server reads the next one; and PostgreSQL
//! startup parameters, which get the verdict of the `SET` of the same setting.

use sqlparser::ast::{ContextModifier, Expr, ObjectName, Set};
use sqlparser::dialect::MySqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::functions;
use super::{
    Dialect, StatementKind, classify, demotes_pg_catalog, transaction_modes_kind,
    turns_read_only_on,
};

pub(super) fn set_kind(dialect: Dialect, sql: &str, set: &Set) -> StatementKind {
    match set {
        Set::SingleAssignment {
            scope,
            variable,
            values,
            ..
        } => {
            if dialect == Dialect::Postgres && turns_read_only_on(variable, values) {
                StatementKind::Session
            } else if dialect == Dialect::Postgres && demotes_pg_catalog(variable, values) {
                StatementKind::Unknown
            } else {
                setting_kind(*scope, variable)
            }
        }
        Set::MultipleAssignments { assignments } => assignments
            .iter()
            .map(|assignment| setting_kind(assignment.scope, &assignment.name))
            .reduce(StatementKind::most_dangerous)
            .unwrap_or(StatementKind::Unknown),
        Set::ParenthesizedAssignments { variables, .. } => variables
            .iter()
            .map(|variable| setting_kind(None, variable))
            .reduce(StatementKind::most_dangerous)
            .unwrap_or(StatementKind::Unknown),
        // Acting as someone else is a change of privileges.
        Set::SetSessionAuthorization(_) | Set::SetRole { .. } => StatementKind::Write,
        Set::SetTimeZone { .. } | Set::SetNames { .. } | Set::SetNamesDefault {} => {
            StatementKind::Session
        }
        Set::SetTransaction { modes, .. } => {
            // sqlparser 0.64 drops the scope of MySQL's `SET GLOBAL
            // TRANSACTION …`, which changes every future session; look for
            // the keyword in the tokens instead.
            if dialect == Dialect::Mysql && mentions_global_keyword(sql) {
                StatementKind::Write
            } else {
                transaction_modes_kind(modes)
            }
        }
        // SQL Server session options; not a dialect we speak.
        Set::SetSessionParam(_) => StatementKind::Unknown,
    }
}

/// Settings whose change is more than housekeeping: they lift read-only mode,
/// switch identity, stop replication/binlogging or change a password. Matched
/// without regard to case, as both servers do.
const GUARDED_SETTINGS: &[&str] = &[
    // PostgreSQL
    "default_transaction_read_only",
    "transaction_read_only",
    "session_authorization",
    "role",
    "session_replication_role",
    // MySQL / MariaDB
    "tx_read_only",
    "read_only",
    "super_read_only",
    "sql_log_bin",
    "password",
    // Session settings that only a privileged account may change, and that
    // change what reaches the logs and the replicas.
    "sql_log_off",
    "log_slow_query",
    "slow_query_log",
    "skip_replication",
    "server_id",
    "gtid_domain_id",
    "gtid_seq_no",
    "gtid_next",
    "pseudo_thread_id",
    "pseudo_slave_mode",
    "wsrep_on",
];

/// SET or RESET of one named setting (`search_path`, `@@session.autocommit`,
/// `@user_var`…).
pub(super) fn setting_kind(scope: Option<ContextModifier>, name: &ObjectName) -> StatementKind {
    if scope == Some(ContextModifier::Global) {
        return StatementKind::Write;
    }
    let Some((setting, qualifiers)) = name.0.split_last() else {
        return StatementKind::Unknown;
    };
    let Some(setting) = setting.as_ident() else {
        return StatementKind::Unknown;
    };
    // MySQL's `@@global.x`, `@@persist.x` and `@@persist_only.x` outlive the
    // session; `@@session.x` and `@@local.x` do not.
    let global = qualifiers.iter().any(|qualifier| {
        qualifier.as_ident().is_none_or(|qualifier| {
            ["@@global", "@@persist", "@@persist_only"]
                .iter()
                .any(|scope| qualifier.value.eq_ignore_ascii_case(scope))
        })
    });
    let setting = setting.value.strip_prefix("@@").unwrap_or(&setting.value);
    let guarded = GUARDED_SETTINGS
        .iter()
        .any(|guarded| setting.eq_ignore_ascii_case(guarded));
    if global || guarded {
        StatementKind::Write
    } else {
        StatementKind::Session
    }
}

/// Whether the text holds a GLOBAL keyword outside literals and comments. An
/// untokenizable text (which would not have parsed) counts as yes.
fn mentions_global_keyword(sql: &str) -> bool {
    match Tokenizer::new(&MySqlDialect {}, sql).tokenize() {
        Ok(tokens) => tokens
            .iter()
            .any(|token| matches!(token, Token::Word(word) if word.keyword == Keyword::GLOBAL)),
        Err(_) => true,
    }
}

/// `set_config('search_path', '', false)` and the like, with a literal
/// setting name that is not guarded: what `pg_dump` sends first, and no more
/// than a `SET`. Anything computed stays a write.
pub(super) fn is_harmless_set_config(function: &sqlparser::ast::Function) -> bool {
    use sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments, Value};
    if !functions::is_postgres_builtin(&function.name, "set_config") {
        return false;
    }
    let FunctionArguments::List(list) = &function.args else {
        return false;
    };
    let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(first)))) = list.args.first()
    else {
        return false;
    };
    let Value::SingleQuotedString(setting) = &first.value else {
        return false;
    };
    // The settings that change lexing are followed from the server's reports,
    // but a read is not waited for before the next pipelined text is read.
    let changes_lexing = ["standard_conforming_strings", "client_encoding"]
        .iter()
        .any(|lexing| setting.eq_ignore_ascii_case(lexing));
    let search_path_ok = !setting.eq_ignore_ascii_case("search_path")
        || matches!(
            list.args.get(1),
            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(value))))
                if matches!(&value.value, Value::SingleQuotedString(path)
                    if !search_path_demotes_pg_catalog([path.as_str()]))
        );
    search_path_ok
        && !changes_lexing
        && !GUARDED_SETTINGS
            .iter()
            .any(|guarded| setting.eq_ignore_ascii_case(guarded))
}

/// Does a `search_path` put a schema before `pg_catalog`? Then an
/// unqualified call could reach a user function that shadows a built-in the
/// function allow-list trusts. (Without `pg_catalog` in the path, the server
/// searches it first.) Each part may itself be a comma-separated list, as
/// in `SET search_path = 'a, pg_catalog'`.
pub(super) fn search_path_demotes_pg_catalog<'a>(parts: impl IntoIterator<Item = &'a str>) -> bool {
    let schemas: Vec<String> = parts
        .into_iter()
        .flat_map(|part| part.split(','))
        .map(|schema| schema.trim().trim_matches('"').to_ascii_lowercase())
        .filter(|schema| !schema.is_empty())
        .collect();
    schemas
        .iter()
        .position(|schema| schema == "pg_catalog")
        .is_some_and(|at| at > 0)
}

/// May this PostgreSQL statement, forwarded, change how the server reads
/// the texts after it (a SET, RESET, DISCARD, the end of a transaction that
/// undoes a SET LOCAL, a procedure…)? A read cannot; neither can a lone
/// BEGIN, START TRANSACTION, SAVEPOINT, SHOW, or cursor statement, which
/// drivers pipeline in front of the statements they send.
pub fn postgres_may_change_settings(kind: StatementKind, text: &str) -> bool {
    if kind == StatementKind::Read {
        return false;
    }
    if kind != StatementKind::Session {
        return true;
    }
    let body = text.trim().trim_end_matches(';');
    if body.contains(';') || body.contains("--") || body.contains("/*") {
        return true;
    }
    let first = body
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    ![
        "begin",
        "start",
        "savepoint",
        "show",
        "listen",
        "unlisten",
        "declare",
        "fetch",
        "move",
        "close",
        "deallocate",
    ]
    .iter()
    .any(|safe| first.eq_ignore_ascii_case(safe))
}

/// The kind of a PostgreSQL startup parameter: the same as the `SET` of the
/// same setting, since the server applies it as one. `options` holds
/// command-line switches; each `-c name=value` / `--name=value` in it is
/// judged as that `SET`, and any other switch is unknown.
pub fn postgres_startup_parameter_kind(name: &str, value: &str) -> StatementKind {
    if name.eq_ignore_ascii_case("options") {
        return postgres_options_kind(value);
    }
    let sql = format!(
        "SET \"{}\" TO '{}'",
        name.replace('"', "\"\""),
        value.replace('\'', "''")
    );
    classify(Dialect::Postgres, &sql)
}

/// The `options` startup parameter, split as the server splits it
/// (whitespace separates words; a backslash takes the next byte literally).
fn postgres_options_kind(options: &str) -> StatementKind {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        if c.is_ascii_whitespace() {
            if in_word {
                words.push(std::mem::take(&mut word));
                in_word = false;
            }
            continue;
        }
        in_word = true;
        if c == '\\' {
            if let Some(next) = chars.next() {
                word.push(next);
            }
        } else {
            word.push(c);
        }
    }
    if in_word {
        words.push(word);
    }
    let mut kind = StatementKind::Session;
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let setting = if word == "-c" {
            words.next()
        } else {
            word.strip_prefix("-c")
                .or_else(|| word.strip_prefix("--"))
                .map(str::to_owned)
        };
        let this = match setting.as_deref().and_then(|s| s.split_once('=')) {
            Some((name, value)) if !name.is_empty() => {
                // The server reads `-` in a switch's name as `_`.
                postgres_startup_parameter_kind(&name.replace('-', "_"), value)
            }
            _ => StatementKind::Unknown,
        };
        kind = kind.most_dangerous(this);
    }
    kind
}
