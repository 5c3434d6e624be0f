//! What calling a function does, by its name.
//!
//! A SELECT can change the database through the functions it calls:
//! `nextval`, `pg_advisory_lock`, `pg_notify`, `pg_terminate_backend`,
//! large-object writes, `pg_reload_conf`… and any user-defined function may do
//! anything its owner may. A list of the writing ones is never complete, so
//! on PostgreSQL the classifier works from an allow-list instead: a function
//! is a read only if jitgate knows it is one — every built-in that is STABLE
//! or IMMUTABLE (PostgreSQL forbids data changes inside those), plus the
//! VOLATILE built-ins that only read. A known writer is a write; anything
//! else, including every user-defined function, is unknown. Functions that
//! run SQL text (`query_to_xml`) are judged by that text, when it is a
//! literal.
//!
//! MySQL and MariaDB work the same way, from `mysql_functions.txt`: the
//! built-ins that only read, per flavour, with the spellings under which the
//! server's grammar hands a built-in's name to a stored function instead (a
//! quoted name, `COUNT (x)` with a space, `POINT(x)` with one argument).
//!
//! PostgreSQL names are resolved the way an unqualified call resolves on a
//! server whose `search_path` starts with `pg_catalog` (the default):
//! unqualified or `pg_catalog.`-qualified names are the built-ins. What the
//! name alone cannot tell: a user's function of a built-in's name taking
//! other argument types (`public.lower(my_type)`), which the server picks by
//! the types of the arguments. The read-only account and read-only
//! transaction of a read level are the wall there.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use sqlparser::ast::{
    Function, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName,
};

use super::{Dialect, MysqlServer, StatementKind};

/// Built-in functions whose every overload is STABLE or IMMUTABLE.
static POSTGRES_NON_VOLATILE: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("postgres_functions.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter(|name| !POSTGRES_ASSIGN_XID.contains(name))
        .collect()
});

/// Built-ins with a VOLATILE overload: what a field name may call that is
/// not known to read.
static POSTGRES_VOLATILE_NAMES: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("postgres_volatile_functions.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
});

/// STABLE, but they assign the transaction an id: a write in the server's
/// own bookkeeping, refused by a read-only standby.
const POSTGRES_ASSIGN_XID: &[&str] = &["txid_current", "pg_current_xact_id"];

/// VOLATILE built-ins that only read (the clock, random numbers, sizes,
/// replication positions, lock and wait information, sequence values already
/// handed out) or only wait.
const POSTGRES_VOLATILE_READS: &[&str] = &[
    "clock_timestamp",
    "timeofday",
    "random",
    "gen_random_uuid",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    "currval",
    "lastval",
    "current_query",
    "pg_is_in_recovery",
    "pg_is_wal_replay_paused",
    "pg_get_wal_replay_pause_state",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_database_size",
    "pg_relation_size",
    "pg_table_size",
    "pg_indexes_size",
    "pg_total_relation_size",
    "pg_tablespace_size",
    "pg_blocking_pids",
    "pg_safe_snapshot_blocking_pids",
    "pg_lock_status",
    "pg_jit_available",
    "pg_partition_tree",
    "pg_partition_ancestors",
    "pg_notification_queue_usage",
    "pg_stat_have_stats",
    "pg_xact_status",
    "txid_status",
    "pg_collation_actual_version",
    "pg_database_collation_actual_version",
];

/// SQL syntax that sqlparser represents as a function call but PostgreSQL
/// does not look up as one (`COALESCE (…)`, `CURRENT_DATE`, `ROW (…)`…).
const POSTGRES_SYNTAX: &[&str] = &[
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "current_user",
    "current_role",
    "session_user",
    "user",
    "current_catalog",
    "row",
    "array",
];

/// Built-ins that change something: data, locks, sessions, server state,
/// files, replication, statistics. Their calls are writes.
const POSTGRES_WRITERS: &[&str] = &[
    "nextval",
    "setval",
    "set_config",
    "txid_current",
    "pg_current_xact_id",
    "lo_import",
    "lo_export",
    "lo_unlink",
    "lo_create",
    "lo_creat",
    "lo_from_bytea",
    "lo_put",
    "lowrite",
    "lo_truncate",
    "lo_truncate64",
    "pg_notify",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_all",
    "pg_advisory_unlock_shared",
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    "pg_cancel_backend",
    "pg_terminate_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_rotate_logfile_old",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_promote",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_replication_slot_advance",
    "pg_logical_slot_get_changes",
    "pg_logical_slot_get_binary_changes",
    "pg_logical_emit_message",
    "pg_replication_origin_create",
    "pg_replication_origin_drop",
    "pg_replication_origin_advance",
    "pg_replication_origin_session_setup",
    "pg_replication_origin_session_reset",
    "pg_replication_origin_xact_setup",
    "pg_replication_origin_xact_reset",
    "pg_stat_reset",
    "pg_stat_reset_shared",
    "pg_stat_reset_single_table_counters",
    "pg_stat_reset_single_function_counters",
    "pg_stat_reset_slru",
    "pg_stat_reset_replication_slot",
    "pg_stat_reset_subscription_stats",
    "pg_import_system_collations",
    "pg_log_backend_memory_contexts",
    "brin_summarize_new_values",
    "brin_summarize_range",
    "brin_desummarize_range",
    "gin_clean_pending_list",
];

/// Built-ins that run their first argument as SQL.
const POSTGRES_RUN_SQL_TEXT: &[&str] = &[
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
];

/// MySQL/MariaDB functions that change something: user-level locks and
/// sequences.
const MYSQL_WRITERS: &[&str] = &[
    "get_lock",
    "release_lock",
    "release_all_locks",
    "nextval",
    "setval",
];

/// Whose built-in functions an unqualified call reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Catalog {
    Postgres,
    MariaDb,
    Mysql,
    /// A MySQL-family server of unknown flavour: only the names built in on
    /// both count.
    MysqlFamily,
}

impl Catalog {
    pub(crate) fn dialect(self) -> Dialect {
        match self {
            Catalog::Postgres => Dialect::Postgres,
            Catalog::MariaDb | Catalog::Mysql | Catalog::MysqlFamily => Dialect::Mysql,
        }
    }

    /// The catalog of a dialect when nothing more is known about the server.
    pub(crate) fn of_dialect(dialect: Dialect) -> Catalog {
        match dialect {
            Dialect::Postgres => Catalog::Postgres,
            Dialect::Mysql => Catalog::MysqlFamily,
        }
    }

    /// The catalog of a MySQL-family server, from its greeting.
    pub(crate) fn of_mysql(server: MysqlServer) -> Catalog {
        match (server.version_id, server.mariadb) {
            (0, _) => Catalog::MysqlFamily,
            (_, true) => Catalog::MariaDb,
            (_, false) => Catalog::Mysql,
        }
    }
}

/// One line of `mysql_functions.txt`.
#[derive(Debug, Clone, Copy, Default)]
struct MysqlBuiltin {
    mariadb_only: bool,
    mysql_only: bool,
    /// A space or comment before `(` reaches a stored function instead.
    spaced_is_stored: bool,
    /// The number of arguments the built-in takes, where another number
    /// reaches a stored function.
    arguments: Arguments,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Arguments {
    #[default]
    Any,
    AtLeastOne,
    Two,
}

/// Built-in MySQL and MariaDB functions that only read, by lower-case name.
static MYSQL_READS: LazyLock<HashMap<&'static str, MysqlBuiltin>> = LazyLock::new(|| {
    include_str!("mysql_functions.txt")
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next().unwrap_or_default();
            let mut builtin = MysqlBuiltin::default();
            for flag in words {
                match flag {
                    "mariadb" => builtin.mariadb_only = true,
                    "mysql" => builtin.mysql_only = true,
                    "spaced" => builtin.spaced_is_stored = true,
                    "args>0" => builtin.arguments = Arguments::AtLeastOne,
                    "args=2" => builtin.arguments = Arguments::Two,
                    // A flag this code does not know could loosen nothing it
                    // does know; the list's unit test rejects it.
                    _ => {}
                }
            }
            (name, builtin)
        })
        .collect()
});

/// What calling `name` does. `arguments` is the number of arguments
/// written (`None` where there is no argument list), `sql` the whole text,
/// searched for the way a MySQL call is written.
pub(crate) fn function_kind(
    catalog: Catalog,
    name: &ObjectName,
    arguments: Option<usize>,
    sql: &str,
) -> StatementKind {
    let mut parts = Vec::with_capacity(name.0.len());
    for part in &name.0 {
        // A computed name could be anything.
        let Some(ident) = part.as_ident() else {
            return StatementKind::Unknown;
        };
        parts.push(ident);
    }
    match catalog {
        Catalog::Postgres => {
            // A quoted name keeps its case: `"ABS"` is not `abs`.
            let names: Vec<String> = parts
                .iter()
                .map(|ident| match ident.quote_style {
                    Some(_) => ident.value.clone(),
                    None => ident.value.to_ascii_lowercase(),
                })
                .collect();
            let syntax = parts.len() == 1 && parts[0].quote_style.is_none();
            postgres_function_kind(&names, syntax)
        }
        Catalog::MariaDb | Catalog::Mysql | Catalog::MysqlFamily => {
            mysql_function_kind(catalog, &parts, arguments, sql)
        }
    }
}

/// A MySQL-family call. A qualified name is a stored function. So may be a
/// quoted name, or a built-in's name written with a space before its `(` or
/// with another number of arguments than the built-in takes: the server's
/// grammar knows those built-ins by their exact spelling, and hands any
/// other call of the name to the stored function of the session's database.
fn mysql_function_kind(
    catalog: Catalog,
    parts: &[&Ident],
    arguments: Option<usize>,
    sql: &str,
) -> StatementKind {
    let [ident] = parts else {
        return StatementKind::Unknown;
    };
    if ident.quote_style.is_some() || ident.value.is_empty() {
        return StatementKind::Unknown;
    }
    let name = ident.value.to_ascii_lowercase();
    if MYSQL_WRITERS.contains(&name.as_str()) {
        return StatementKind::Write;
    }
    let Some(builtin) = MYSQL_READS.get(name.as_str()) else {
        return StatementKind::Unknown;
    };
    let built_in_here = match catalog {
        Catalog::MariaDb => !builtin.mysql_only,
        Catalog::Mysql => !builtin.mariadb_only,
        _ => !builtin.mysql_only && !builtin.mariadb_only,
    };
    let arguments_fit = match builtin.arguments {
        Arguments::Any => true,
        Arguments::AtLeastOne => arguments.is_some_and(|n| n > 0),
        Arguments::Two => arguments == Some(2),
    };
    if !built_in_here
        || !arguments_fit
        || (builtin.spaced_is_stored && written_with_a_gap(sql, &name))
    {
        return StatementKind::Unknown;
    }
    StatementKind::Read
}

/// Is `name` (lower case) written anywhere in `sql` as a word followed by
/// whitespace or a comment and then `(`? Occurrences inside literals count
/// too, which can only make a call unknown that was not one.
pub(crate) fn written_with_a_gap(sql: &str, name: &str) -> bool {
    let bytes = sql.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
    let mut from = 0;
    while let Some(at) = find_ignoring_case(&bytes[from..], name.as_bytes()) {
        let start = from + at;
        let end = start + name.len();
        from = start + 1;
        let whole_word =
            (start == 0 || !word(bytes[start - 1])) && bytes.get(end).is_none_or(|b| !word(*b));
        if !whole_word {
            continue;
        }
        let after = skip_spaces_and_comments(bytes, end);
        if after > end && bytes.get(after) == Some(&b'(') {
            return true;
        }
    }
    false
}

fn find_ignoring_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window.eq_ignore_ascii_case(needle))
}

/// The first position at or after `at` that is neither MySQL whitespace nor
/// inside a comment.
fn skip_spaces_and_comments(bytes: &[u8], mut at: usize) -> usize {
    loop {
        match &bytes[at.min(bytes.len())..] {
            [b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c, ..] => at += 1,
            [b'/', b'*', rest @ ..] => {
                at += 2 + rest
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map_or(rest.len(), |end| end + 2);
            }
            [b'#', rest @ ..] | [b'-', b'-', rest @ ..] => {
                let skipped = bytes.len() - at - rest.len();
                at += skipped + rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            }
            _ => return at,
        }
    }
}

/// A PostgreSQL field name, which the server calls as a one-argument
/// function when the value has no such field (`(x).f`, or `t.f` where `t`
/// has no column `f`): a built-in writer's name is a write, and a built-in
/// that is not known to read is unknown. Any other name is taken for the
/// field or column it almost always is (`(information_schema._pg_expandarray(
/// i.indkey)).n` in JDBC's metadata queries, `(address).street`); the
/// read-only account and transaction are the wall for a user's function
/// called this way.
pub(crate) fn field_kind(field: &Ident) -> StatementKind {
    let name = match field.quote_style {
        Some(_) => field.value.clone(),
        None => field.value.to_ascii_lowercase(),
    };
    match postgres_function_kind(std::slice::from_ref(&name), false) {
        StatementKind::Write => StatementKind::Write,
        StatementKind::Unknown if POSTGRES_VOLATILE_NAMES.contains(name.as_str()) => {
            StatementKind::Unknown
        }
        _ => StatementKind::Read,
    }
}

/// `syntax`: the name may be SQL syntax that looks like a call (unqualified
/// and unquoted: `COALESCE(…)`; a quoted `"coalesce"(…)` is a function of
/// that name, which pg_catalog does not have).
fn postgres_function_kind(parts: &[String], syntax: bool) -> StatementKind {
    let builtin = match parts {
        [name] => name.as_str(),
        [schema, name] if schema == "pg_catalog" => name.as_str(),
        [schema, name] if schema == "information_schema" => {
            let qualified = format!("information_schema.{name}");
            return if POSTGRES_NON_VOLATILE.contains(qualified.as_str()) {
                StatementKind::Read
            } else {
                StatementKind::Unknown
            };
        }
        _ => return StatementKind::Unknown,
    };
    if POSTGRES_WRITERS.contains(&builtin) {
        StatementKind::Write
    } else if POSTGRES_NON_VOLATILE.contains(builtin)
        || POSTGRES_VOLATILE_READS.contains(&builtin)
        || (syntax && POSTGRES_SYNTAX.contains(&builtin))
    {
        StatementKind::Read
    } else {
        StatementKind::Unknown
    }
}

/// Does `name` call PostgreSQL's built-in `builtin` (lower case)? Unqualified
/// or qualified with `pg_catalog`, each part unquoted or quoted as the
/// server stores it; any other schema or spelling is someone else's function.
pub(crate) fn is_postgres_builtin(name: &ObjectName, builtin: &str) -> bool {
    let is = |part: &sqlparser::ast::ObjectNamePart, word: &str| {
        part.as_ident()
            .is_some_and(|ident| match ident.quote_style {
                Some(_) => ident.value == word,
                None => ident.value.eq_ignore_ascii_case(word),
            })
    };
    match name.0.as_slice() {
        [function] => is(function, builtin),
        [schema, function] => is(schema, "pg_catalog") && is(function, builtin),
        _ => false,
    }
}

/// For a function that runs SQL text: the text, when it is a literal.
/// `None` if `function` is not such a function; `Some(None)` if it is and
/// its text is computed.
pub(crate) fn sql_text_argument(dialect: Dialect, function: &Function) -> Option<Option<&str>> {
    if dialect != Dialect::Postgres
        || !POSTGRES_RUN_SQL_TEXT
            .iter()
            .any(|builtin| is_postgres_builtin(&function.name, builtin))
    {
        return None;
    }
    let FunctionArguments::List(list) = &function.args else {
        return Some(None);
    };
    let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(sqlparser::ast::Expr::Value(value)))) =
        list.args.first()
    else {
        return Some(None);
    };
    match &value.value {
        // An E'…' string is left out: the server decodes its escapes
        // (`\052` is `*`), and sqlparser need not decode them alike.
        sqlparser::ast::Value::SingleQuotedString(text)
        | sqlparser::ast::Value::DollarQuotedString(sqlparser::ast::DollarQuotedString {
            value: text,
            ..
        }) => Some(Some(text.as_str())),
        _ => Some(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{Lexing, Reading, classify_for};

    const MARIADB: MysqlServer = MysqlServer::MARIADB_10_11;
    const MYSQL: MysqlServer = MysqlServer::MYSQL_8_0;

    fn on(server: MysqlServer, sql: &str) -> StatementKind {
        classify_for(&Reading::mysql(Lexing::DEFAULT, server), sql.as_bytes())
    }

    #[test]
    fn the_mysql_list_is_well_formed() {
        let text = include_str!("mysql_functions.txt");
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let mut words = line.split_whitespace();
            let name = words.next().unwrap();
            assert_eq!(name, name.to_ascii_lowercase(), "{line}");
            assert!(!MYSQL_WRITERS.contains(&name), "{line}");
            for flag in words {
                assert!(
                    ["mariadb", "mysql", "spaced", "args>0", "args=2"].contains(&flag),
                    "unknown flag in: {line}"
                );
            }
        }
        assert!(MYSQL_READS.len() > 400);
    }

    #[test]
    fn built_in_reads_are_reads_and_everything_else_is_not() {
        for server in [MARIADB, MYSQL, MysqlServer::default()] {
            for sql in [
                "SELECT ABS(-1), concat('a', 'b'), NOW(), count(*) FROM t",
                "SELECT JSON_EXTRACT(j, '$.a'), IFNULL(a, 0), DATABASE() FROM t",
                "SELECT POINT(1, 2), LineString(POINT(1, 2), POINT(3, 4))",
            ] {
                assert_eq!(on(server, sql), StatementKind::Read, "{server:?}: {sql}");
            }
            for sql in [
                "SELECT app.f(1)",
                "SELECT my_function(1)",
                "SELECT `abs`(1)",
                "SELECT count (1)",
                "SELECT count/**/(1)",
                "SELECT SUM\t(a) FROM t",
                "SELECT now\x0b()",
                "SELECT point(1)",
                "SELECT polygon()",
                "SELECT LOAD_FILE('/etc/passwd')",
            ] {
                assert_eq!(on(server, sql), StatementKind::Unknown, "{server:?}: {sql}");
            }
            assert_eq!(on(server, "SELECT GET_LOCK('x', 0)"), StatementKind::Write);
        }
        // Built in on one flavour only: a stored function's name on the other.
        assert_eq!(on(MARIADB, "SELECT NVL(a, 0) FROM t"), StatementKind::Read);
        assert_eq!(on(MYSQL, "SELECT NVL(a, 0) FROM t"), StatementKind::Unknown);
        assert_eq!(on(MYSQL, "SELECT ANY_VALUE(a) FROM t"), StatementKind::Read);
        assert_eq!(
            on(MARIADB, "SELECT ANY_VALUE(a) FROM t"),
            StatementKind::Unknown
        );
        let unknown_flavour = MysqlServer::default();
        assert_eq!(
            on(unknown_flavour, "SELECT NVL(a, 0)"),
            StatementKind::Unknown
        );
        // A space is harmless where the server's grammar does not care.
        assert_eq!(
            on(MARIADB, "SELECT abs (1), concat ('a')"),
            StatementKind::Read
        );
    }

    #[test]
    fn a_quoted_postgres_name_keeps_its_case() {
        let pg = |sql: &str| crate::sql::classify(Dialect::Postgres, sql);
        assert_eq!(pg("SELECT \"abs\"(1)"), StatementKind::Read);
        assert_eq!(pg("SELECT \"ABS\"(1)"), StatementKind::Unknown);
        assert_eq!(pg("SELECT ABS(1)"), StatementKind::Read);
    }
}
