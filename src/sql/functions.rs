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
//! Names are resolved the way an unqualified call resolves on a server whose
//! `search_path` starts with `pg_catalog` (the default): unqualified or
//! `pg_catalog.`-qualified names are the built-ins. A session that puts
//! another schema before `pg_catalog` could reach a user function of the
//! same name and argument types; the read-only account and read-only
//! transaction of a read level are the wall there.

use std::collections::HashSet;
use std::sync::LazyLock;

use sqlparser::ast::{Function, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName};

use super::{Dialect, StatementKind};

/// Built-in functions whose every overload is STABLE or IMMUTABLE.
static POSTGRES_NON_VOLATILE: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("postgres_functions.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter(|name| !POSTGRES_ASSIGN_XID.contains(name))
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
/// sequences. (MySQL's built-ins are not yet on an allow-list: its other
/// calls count as reads, and the read-only account and `SET SESSION
/// TRANSACTION READ ONLY` of a read level are the wall for stored functions.)
const MYSQL_WRITERS: &[&str] = &[
    "get_lock",
    "release_lock",
    "release_all_locks",
    "nextval",
    "setval",
];

/// What calling `name` does, arguments aside.
pub(crate) fn function_kind(dialect: Dialect, name: &ObjectName) -> StatementKind {
    let parts: Vec<&str> = name
        .0
        .iter()
        .map(|part| part.as_ident().map_or("", |ident| ident.value.as_str()))
        .collect();
    // A computed name could be anything.
    if parts.iter().any(|part| part.is_empty()) {
        return StatementKind::Unknown;
    }
    let lower: Vec<String> = parts.iter().map(|part| part.to_ascii_lowercase()).collect();
    match dialect {
        Dialect::Postgres => postgres_function_kind(&lower),
        Dialect::Mysql => {
            let last = lower.last().map_or("", String::as_str);
            if MYSQL_WRITERS.contains(&last) {
                StatementKind::Write
            } else {
                StatementKind::Read
            }
        }
    }
}

fn postgres_function_kind(parts: &[String]) -> StatementKind {
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
        || (parts.len() == 1 && POSTGRES_SYNTAX.contains(&builtin))
    {
        StatementKind::Read
    } else {
        StatementKind::Unknown
    }
}

/// For a function that runs SQL text: the text, when it is a literal.
/// `None` if `function` is not such a function; `Some(None)` if it is and
/// its text is computed.
pub(crate) fn sql_text_argument(dialect: Dialect, function: &Function) -> Option<Option<&str>> {
    if dialect != Dialect::Postgres {
        return None;
    }
    let name = function
        .name
        .0
        .last()?
        .as_ident()?
        .value
        .to_ascii_lowercase();
    if !POSTGRES_RUN_SQL_TEXT.contains(&name.as_str()) {
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
        sqlparser::ast::Value::SingleQuotedString(text)
        | sqlparser::ast::Value::EscapedStringLiteral(text)
        | sqlparser::ast::Value::DollarQuotedString(sqlparser::ast::DollarQuotedString {
            value: text,
            ..
        }) => Some(Some(text.as_str())),
        _ => Some(None),
    }
}
