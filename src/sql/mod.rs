//! Statement classification: what would this query string do to the database?
//!
//! The relay asks [`classify`] (or [`classify_cached`] on the hot path) about
//! every query text before forwarding it. The answer is written to the audit
//! record and, on a read-only level, decides whether the statement may run at
//! all. It is a policy and audit layer, not the wall: the upstream account of a
//! read-only level has read-only privileges of its own (DESIGN.md, invariant 5),
//! and `SELECT pg_terminate_backend(…)` still parses as a read.
//!
//! So the classifier is conservative: what it cannot parse, or parses but does
//! not know, is [`StatementKind::Unknown`], never [`StatementKind::Read`].

mod database_switch;
mod functions;
use functions::Catalog;
mod cache;
mod effects;
mod equivalent;
mod lexing;
pub(crate) mod mysql_lex;
mod mysql_session;
mod operators;
mod prepared;
mod settings;

use cache::classify_cached_in;
pub use cache::{CACHE_MAX_ENTRIES, CACHE_MAX_SQL_BYTES, classify_cached};
use effects::side_effects;
use equivalent::{Equivalent, equivalent};
use mysql_session::changes_mysql_lexing;
pub use mysql_session::mysql_lexing_after;
use settings::{is_harmless_set_config, search_path_demotes_pg_catalog, set_kind, setting_kind};
pub use settings::{postgres_may_change_settings, postgres_startup_parameter_kind};

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlparser::ast::{
    CopyTarget, DeclareType, Expr, ObjectName, Reset, Statement, TransactionAccessMode,
    TransactionMode, UtilityOption, Value,
};
use sqlparser::dialect::{MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementKind {
    /// Reads only (SELECT, SHOW, EXPLAIN without ANALYZE of a write...).
    Read,
    /// Session housekeeping that cannot change data (SET of ordinary settings, BEGIN, COMMIT...).
    Session,
    /// Changes data (INSERT/UPDATE/DELETE/MERGE, COPY FROM, SELECT ... FOR UPDATE, writable CTEs,
    /// settings that lift read-only mode...).
    Write,
    /// Changes schema or privileges.
    Ddl,
    /// Could not be parsed or is not understood.
    Unknown,
}

impl StatementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Read => "read",
            StatementKind::Session => "session",
            StatementKind::Write => "write",
            StatementKind::Ddl => "ddl",
            StatementKind::Unknown => "unknown",
        }
    }

    /// May a statement of this kind run on a read-only level?
    pub fn allowed_read_only(self) -> bool {
        matches!(self, StatementKind::Read | StatementKind::Session)
    }

    /// How much harm a statement of this kind can do, for combining the
    /// statements of one query string. Spelled out rather than taken from the
    /// derived `Ord`, so reordering the variants can never let a write hide
    /// behind a read; `Unknown` ranks highest because nothing vouches for it.
    fn danger(self) -> u8 {
        match self {
            StatementKind::Read => 0,
            StatementKind::Session => 1,
            StatementKind::Write => 2,
            StatementKind::Ddl => 3,
            StatementKind::Unknown => 4,
        }
    }

    /// The more dangerous of two kinds.
    fn most_dangerous(self, other: StatementKind) -> StatementKind {
        if other.danger() > self.danger() {
            other
        } else {
            self
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Mysql,
}

pub use database_switch::{DatabaseSwitch, mysql_database_switch, mysql_may_run_dynamic_sql};
pub use lexing::{Lexing, MysqlServer};
pub use mysql_lex::Mentions;
pub use prepared::PreparedStatements;

/// How one session's server will read the text it is sent: the dialect, the
/// session's lexing settings, and for MySQL-family servers which executable
/// comments they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub dialect: Dialect,
    pub lexing: Lexing,
    pub mysql_server: MysqlServer,
}

impl Reading {
    pub fn postgres(lexing: Lexing) -> Reading {
        Reading {
            dialect: Dialect::Postgres,
            lexing,
            mysql_server: MysqlServer::default(),
        }
    }

    pub fn mysql(lexing: Lexing, server: MysqlServer) -> Reading {
        Reading {
            dialect: Dialect::Mysql,
            lexing,
            mysql_server: server,
        }
    }
}

/// Classify the exact bytes a client sent, as this session's server will
/// read them: what the relays call for every statement.
///
/// Text that is not UTF-8 is [`StatementKind::Unknown`] (sqlparser reads
/// UTF-8 only, and a lossy decoding would classify other text than the
/// server runs), and so is text whose reading depends on a session setting
/// the classifier does not model (see [`Lexing`]). Executable comments are
/// opened as the MySQL-family server opens them before parsing.
pub fn classify_for(reading: &Reading, bytes: &[u8]) -> StatementKind {
    match std::str::from_utf8(bytes) {
        Ok(text) => classify_text(reading, text),
        Err(_) => StatementKind::Unknown,
    }
}

/// [`classify_for`] of a text already known to be UTF-8 (the relays decode
/// each statement once, for its audit record).
pub fn classify_text(reading: &Reading, text: &str) -> StatementKind {
    if reading.lexing.reads_differently(text.as_bytes()) {
        return StatementKind::Unknown;
    }
    match reading.dialect {
        Dialect::Postgres => classify_cached_in(Catalog::Postgres, text),
        Dialect::Mysql => match lexing::open_executable_comments(text, reading.mysql_server) {
            Some(code) => classify_cached_in(Catalog::of_mysql(reading.mysql_server), &code),
            None => StatementKind::Unknown,
        },
    }
}

/// Classify a query string, which may hold several statements: the result is
/// the most dangerous kind among them.
///
/// A string with no statement at all (empty, only comments, only semicolons)
/// is [`StatementKind::Session`]: PostgreSQL answers it with
/// EmptyQueryResponse and nothing happens. If any statement fails to parse,
/// the whole string is [`StatementKind::Unknown`], since we cannot tell what
/// the server will make of the rest. So is a text longer than
/// [`max_classified_bytes`].
///
/// This runs synchronously, and parsing is roughly linear in the text: a few
/// microseconds for a short statement, a few hundred milliseconds for a text
/// near the size limit. Callers on an async runtime hand long texts to
/// [`classify_text_off_thread`].
pub fn classify(dialect: Dialect, sql: &str) -> StatementKind {
    classify_in(Catalog::of_dialect(dialect), sql)
}

/// [`classify`], with the functions of `catalog` built in.
fn classify_in(catalog: Catalog, sql: &str) -> StatementKind {
    if sql.len() <= INLINE_SQL_BYTES {
        // The parser returns errors rather than panicking on anything we have
        // found; this is the second line, so that a parser bug costs one
        // statement its classification instead of a session.
        std::panic::catch_unwind(|| parse_and_classify(catalog, sql))
            .unwrap_or(StatementKind::Unknown)
    } else if sql.len() <= max_classified_bytes() {
        classify_on_own_stack(catalog, sql)
    } else {
        StatementKind::Unknown
    }
}

/// Longer texts are not parsed at all (they classify as
/// [`StatementKind::Unknown`], so a read-only level refuses them): parsing
/// time and memory grow with the text (64 KiB parses in about 20 ms in the
/// worst case measured, so 1 MiB in about a third of a second). The default
/// of `limits.max_classified_statement_bytes`; see [`set_max_classified_bytes`].
pub const DEFAULT_MAX_CLASSIFIED_SQL_BYTES: usize = 1024 * 1024;

static MAX_CLASSIFIED_SQL_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_CLASSIFIED_SQL_BYTES);

/// The longest text the classifier parses, from the config at start.
pub fn set_max_classified_bytes(bytes: usize) {
    MAX_CLASSIFIED_SQL_BYTES.store(bytes, Ordering::Relaxed);
}

pub fn max_classified_bytes() -> usize {
    MAX_CLASSIFIED_SQL_BYTES.load(Ordering::Relaxed)
}

/// Does a text of `len` bytes classify quickly enough for a session thread?
/// Longer ones go through [`classify_text_off_thread`].
pub fn classifies_inline(len: usize) -> bool {
    len <= INLINE_SQL_BYTES
}

/// Long texts classified at once, at most: each takes a blocking thread and
/// memory in proportion to its length, so a flood of them waits here rather
/// than exhausting either.
const OFF_THREAD_SLOTS: usize = 2;

/// [`classify_text`] on tokio's blocking pool, for a text too long to parse
/// on a session thread (which serves other sessions meanwhile).
pub async fn classify_text_off_thread(reading: Reading, text: String) -> StatementKind {
    static SLOTS: LazyLock<std::sync::Arc<tokio::sync::Semaphore>> =
        LazyLock::new(|| std::sync::Arc::new(tokio::sync::Semaphore::new(OFF_THREAD_SLOTS)));
    let Ok(slot) = SLOTS.clone().acquire_owned().await else {
        return StatementKind::Unknown;
    };
    // The slot goes with the job: a session that ends while waiting for
    // the answer does not free it before the parse is over.
    tokio::task::spawn_blocking(move || {
        let kind = classify_text(&reading, &text);
        drop(slot);
        kind
    })
    .await
    .unwrap_or(StatementKind::Unknown)
}

/// Texts up to this length are parsed on the caller's stack.
///
/// The parser's recursion limit bounds nesting, but not left-deep chains like
/// `SELECT 1+1+1+…` or `x::int::int…`, which it builds in a loop: their syntax
/// tree is as deep as the chain is long, and dropping it recurses once per
/// level (about 100 bytes of stack each in a debug build). A 2 MiB stack,
/// tokio's default, overflows near 40 KiB of such text, and a stack overflow
/// aborts the whole proxy. 8 KiB is at most ~4k levels, well inside any
/// worker stack.
const INLINE_SQL_BYTES: usize = 8 * 1024;

/// Helper-thread stack per byte of text. A tree level costs about 100 bytes of
/// stack and at least two bytes of text; budgeting a level per byte leaves
/// room to spare. Only the pages actually touched are ever committed.
const STACK_BYTES_PER_SQL_BYTE: usize = 128;

/// Classify a text too long for [`INLINE_SQL_BYTES`] on a thread whose stack
/// grows with the text, so no input can overflow it. The thread costs some
/// tens of microseconds, small beside parsing that much SQL.
fn classify_on_own_stack(catalog: Catalog, sql: &str) -> StatementKind {
    let stack_bytes = 256 * 1024 + sql.len() * STACK_BYTES_PER_SQL_BYTE;
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("jitgate-classify".to_owned())
            .stack_size(stack_bytes)
            .spawn_scoped(scope, || parse_and_classify(catalog, sql))
            .ok()
            // A join error is a panic in the parser: fail closed, as above.
            .and_then(|thread| thread.join().ok())
            .unwrap_or(StatementKind::Unknown)
    })
}

fn parse_and_classify(catalog: Catalog, sql: &str) -> StatementKind {
    parse_and_classify_as(catalog, sql, true)
}

/// `or_equivalent`: on a parse error, try the [`equivalent`] spelling (once).
fn parse_and_classify_as(catalog: Catalog, sql: &str, or_equivalent: bool) -> StatementKind {
    let dialect = catalog.dialect();
    if dialect == Dialect::Postgres && operators::unknown_operator(sql).is_some() {
        return StatementKind::Unknown;
    }
    let parsed = match dialect {
        Dialect::Postgres => Parser::parse_sql(&PostgreSqlDialect {}, sql),
        Dialect::Mysql => Parser::parse_sql(&MySqlDialect {}, sql),
    };
    match parsed {
        Ok(statements)
            if dialect == Dialect::Mysql
                && statements.iter().rev().skip(1).any(changes_mysql_lexing) =>
        {
            StatementKind::Unknown
        }
        Ok(statements) => statements
            .iter()
            .map(|statement| classify_statement(catalog, sql, statement))
            .reduce(StatementKind::most_dangerous)
            .unwrap_or(StatementKind::Session),
        Err(_) if or_equivalent => match equivalent(dialect, sql) {
            Some(Equivalent::Text(text)) => parse_and_classify_as(catalog, &text, false),
            Some(Equivalent::Kind(kind)) => kind,
            None => StatementKind::Unknown,
        },
        Err(_) => StatementKind::Unknown,
    }
}

/// One parsed statement: its own kind, raised to `Write` if anything inside it
/// (a locking clause, a data-modifying CTE, a `nextval` call…) writes.
fn classify_statement(catalog: Catalog, sql: &str, statement: &Statement) -> StatementKind {
    let dialect = catalog.dialect();
    match statement {
        // EXPLAIN only plans the statement; EXPLAIN ANALYZE runs it.
        Statement::Explain {
            analyze,
            options,
            statement: explained,
            ..
        } => {
            let explained_kind = classify_statement(catalog, sql, explained);
            if *analyze || options_request_analyze(options.as_deref()) {
                explained_kind
            } else if explained_kind == StatementKind::Unknown {
                // Not understood is not understood, EXPLAIN or not.
                StatementKind::Unknown
            } else {
                StatementKind::Read
            }
        }
        // PREPARE does nothing by itself, but the prepared statement is what
        // the client means to run, and its EXECUTE cannot be judged later.
        Statement::Prepare {
            statement: prepared,
            ..
        } => classify_statement(catalog, sql, prepared),
        // LOCK … IN ACCESS SHARE MODE takes the lock every SELECT takes
        // (pg_dump locks each table it dumps); stronger modes block writers.
        Statement::Lock(lock)
            if dialect == Dialect::Postgres
                && lock.lock_mode == Some(sqlparser::ast::LockTableMode::AccessShare) =>
        {
            StatementKind::Read
        }
        _ if dialect == Dialect::Postgres && set_config_of_one_setting(statement).is_some() => {
            set_config_of_one_setting(statement).unwrap_or(StatementKind::Unknown)
        }
        _ => {
            own_kind(dialect, sql, statement).most_dangerous(side_effects(catalog, sql, statement))
        }
    }
}

/// pg_dump's `SELECT set_config(name, 'v', false) FROM pg_settings WHERE
/// name = 's'`: the setting is the literal `s` (the filter leaves only its
/// row), so the statement is the `SET` of `s` to `v`. `None` for any other
/// shape.
fn set_config_of_one_setting(statement: &Statement) -> Option<StatementKind> {
    use sqlparser::ast::{
        BinaryOperator, FunctionArg, FunctionArgExpr, FunctionArguments, SelectItem, SetExpr,
        TableFactor,
    };
    let Statement::Query(query) = statement else {
        return None;
    };
    if query.with.is_some() || query.order_by.is_some() || query.limit_clause.is_some() {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let [SelectItem::UnnamedExpr(Expr::Function(function))] = select.projection.as_slice() else {
        return None;
    };
    let is_name = |expr: &Expr| {
        matches!(expr, Expr::Identifier(ident) if ident.value == "name"
            || (ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("name")))
    };
    let literal = |expr: &Expr| match expr {
        Expr::Value(value) => match &value.value {
            Value::SingleQuotedString(text) => Some(text.clone()),
            _ => None,
        },
        _ => None,
    };
    if !functions::is_postgres_builtin(&function.name, "set_config") {
        return None;
    }
    let FunctionArguments::List(list) = &function.args else {
        return None;
    };
    let [
        FunctionArg::Unnamed(FunctionArgExpr::Expr(first)),
        FunctionArg::Unnamed(FunctionArgExpr::Expr(value)),
        FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(is_local))),
    ] = list.args.as_slice()
    else {
        return None;
    };
    let value = literal(value)?;
    if !is_name(first) || !matches!(is_local.value, Value::Boolean(_)) {
        return None;
    }
    let [from] = select.from.as_slice() else {
        return None;
    };
    let TableFactor::Table {
        name, args: None, ..
    } = &from.relation
    else {
        return None;
    };
    let table: Vec<&str> = name
        .0
        .iter()
        .filter_map(|part| part.as_ident().map(|i| i.value.as_str()))
        .collect();
    if !from.joins.is_empty()
        || !matches!(
            table.as_slice(),
            ["pg_settings"] | ["pg_catalog", "pg_settings"]
        )
    {
        return None;
    }
    let Some(Expr::BinaryOp {
        left,
        op: BinaryOperator::Eq,
        right,
    }) = &select.selection
    else {
        return None;
    };
    let setting = literal(right)?;
    // Nothing else in the statement: no other clause, lock or set operation
    // (any would show in its rendering).
    let bare = format!(
        "SELECT {}({first}, {}, {is_local}) FROM {name} WHERE {left} = {right}",
        function.name, list.args[1],
    );
    if !is_name(left) || statement.to_string() != bare {
        return None;
    }
    Some(postgres_startup_parameter_kind(&setting, &value))
}

/// Does a parenthesised EXPLAIN option list turn ANALYZE on? The server
/// reads `ANALYSE` as `ANALYZE`; only an explicit false value turns it off.
/// An option that is not one of the planning-only ones counts as on too:
/// anything PostgreSQL might read as ANALYZE (a prefix, a new spelling).
fn options_request_analyze(options: Option<&[UtilityOption]>) -> bool {
    const PLANNING_ONLY: &[&str] = &[
        "costs",
        "verbose",
        "buffers",
        "format",
        "settings",
        "summary",
        "timing",
        "wal",
        "generic_plan",
        "memory",
        "serialize",
    ];
    options.into_iter().flatten().any(|option| {
        let name = option.name.value.to_ascii_lowercase();
        if name == "analyze" || name == "analyse" {
            !option.arg.as_ref().is_some_and(is_false_literal)
        } else {
            !PLANNING_ONLY.contains(&name.as_str())
        }
    })
}

/// `SET default_transaction_read_only = on` (or `transaction_read_only`):
/// what jitgate itself sets on a read-only level, so no more than
/// housekeeping.
fn turns_read_only_on(variable: &ObjectName, values: &[Expr]) -> bool {
    let [name] = &variable.0[..] else {
        return false;
    };
    let read_only_setting = name.as_ident().is_some_and(|ident| {
        ident
            .value
            .eq_ignore_ascii_case("default_transaction_read_only")
            || ident.value.eq_ignore_ascii_case("transaction_read_only")
    });
    read_only_setting && matches!(values, [value] if is_true_literal(value))
}

/// `SET search_path` to a list that puts a schema before `pg_catalog`.
fn demotes_pg_catalog(variable: &ObjectName, values: &[Expr]) -> bool {
    let [name] = &variable.0[..] else {
        return false;
    };
    if !name
        .as_ident()
        .is_some_and(|ident| ident.value.eq_ignore_ascii_case("search_path"))
    {
        return false;
    }
    let mut parts: Vec<&str> = Vec::with_capacity(values.len());
    for value in values {
        match value {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => parts.push(s),
                // An E'…' string (`E'pg_catal\157g'`) or anything else the
                // server may decode to a schema name: assume the worst.
                _ => return true,
            },
            Expr::Identifier(ident) => parts.push(&ident.value),
            _ => return true,
        }
    }
    search_path_demotes_pg_catalog(parts)
}

fn is_true_literal(expr: &Expr) -> bool {
    let word = match expr {
        Expr::Value(value) => match &value.value {
            Value::Boolean(b) => return *b,
            Value::Number(n, _) => n.as_str(),
            Value::SingleQuotedString(s) => s.as_str(),
            _ => return false,
        },
        Expr::Identifier(ident) => ident.value.as_str(),
        _ => return false,
    };
    ["true", "on", "yes", "1"]
        .iter()
        .any(|truthy| word.eq_ignore_ascii_case(truthy))
}

fn is_false_literal(expr: &Expr) -> bool {
    let word = match expr {
        Expr::Value(value) => match &value.value {
            Value::Boolean(b) => return !b,
            Value::Number(n, _) => n.as_str(),
            Value::SingleQuotedString(s) => s.as_str(),
            _ => return false,
        },
        Expr::Identifier(ident) => ident.value.as_str(),
        _ => return false,
    };
    ["false", "off", "no", "0"]
        .iter()
        .any(|falsy| word.eq_ignore_ascii_case(falsy))
}

/// The kind a statement has by what it is, before looking inside it.
fn own_kind(dialect: Dialect, sql: &str, statement: &Statement) -> StatementKind {
    use StatementKind::*;
    match statement {
        Statement::Query(_)
        | Statement::ExplainTable { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowProcessList { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowObjects(_)
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. } => Read,
        // `FETCH … INTO` is another dialect's variable assignment.
        Statement::Fetch { into, .. } => {
            if into.is_none() {
                Read
            } else {
                Unknown
            }
        }
        // A cursor reads what its query reads; the query itself is checked
        // for side effects like any other.
        Statement::Declare { stmts, .. } => {
            let all_cursors = stmts.iter().all(|declare| {
                declare.declare_type == Some(DeclareType::Cursor) && declare.for_query.is_some()
            });
            if all_cursors { Read } else { Unknown }
        }

        Statement::StartTransaction {
            modes,
            statements,
            exception,
            ..
        } => {
            // BEGIN … END blocks of other dialects carry statements of their own.
            if !statements.is_empty() || exception.is_some() {
                Unknown
            } else {
                transaction_modes_kind(modes)
            }
        }
        Statement::Set(set) => set_kind(dialect, sql, set),
        // MySQL's RESET MASTER / SLAVE / REPLICA / QUERY CACHE / PERSIST
        // reach sqlparser as the reset of a setting.
        Statement::Reset(_) if dialect == Dialect::Mysql => Write,
        Statement::Reset(reset) => match &reset.reset {
            Reset::ALL | Reset::SessionAuthorization => Write,
            Reset::ConfigurationParameter(name) => setting_kind(None, name),
        },
        Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Close { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::LISTEN { .. }
        | Statement::UNLISTEN { .. }
        | Statement::Use(_)
        | Statement::UnlockTables => Session,

        // COPY TO STDOUT hands rows to the client; to a file or a program it
        // writes on the server.
        Statement::Copy { to, target, .. } => {
            if *to && matches!(target, CopyTarget::Stdout) {
                Read
            } else {
                Write
            }
        }
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_)
        | Statement::Truncate(_)
        | Statement::Directory { .. }
        | Statement::CopyIntoSnowflake { .. }
        | Statement::Unload { .. }
        | Statement::ExportData(_)
        | Statement::LoadData { .. }
        | Statement::Lock(_)
        | Statement::LockTables { .. }
        // Procedures can do anything their owner may.
        | Statement::Call(_)
        | Statement::Kill { .. }
        | Statement::NOTIFY { .. }
        | Statement::Vacuum(_)
        | Statement::Analyze(_)
        | Statement::OptimizeTable { .. }
        | Statement::RefreshMaterializedView(_)
        | Statement::Flush { .. } => Write,

        Statement::CreateView(_)
        | Statement::CreateTable(_)
        | Statement::CreateVirtualTable { .. }
        | Statement::CreateIndex(_)
        | Statement::CreateRole(_)
        | Statement::CreateSecret { .. }
        | Statement::CreateServer(_)
        | Statement::CreateForeignTable(_)
        | Statement::CreateForeignDataWrapper(_)
        | Statement::CreateUserMapping(_)
        | Statement::CreatePolicy(_)
        | Statement::CreateRule(_)
        | Statement::CreateConnector(_)
        | Statement::CreateOperator(_)
        | Statement::CreateOperatorFamily(_)
        | Statement::CreateOperatorClass(_)
        | Statement::CreateTextSearch(_)
        | Statement::CreateAggregate(_)
        | Statement::CreateExtension(_)
        | Statement::CreateCollation(_)
        | Statement::CreateSchema { .. }
        | Statement::CreateDatabase { .. }
        | Statement::CreateFunction(_)
        | Statement::CreateTrigger(_)
        | Statement::CreateProcedure { .. }
        | Statement::CreateMacro { .. }
        | Statement::CreateStage { .. }
        | Statement::CreateFileFormat { .. }
        | Statement::CreateWarehouse(_)
        | Statement::CreateSequence { .. }
        | Statement::CreateDomain(_)
        | Statement::CreateType { .. }
        | Statement::CreateUser(_)
        | Statement::AlterTable(_)
        | Statement::AlterSchema(_)
        | Statement::AlterIndex { .. }
        | Statement::AlterView(_)
        | Statement::AlterFunction(_)
        | Statement::AlterType(_)
        | Statement::AlterCollation(_)
        | Statement::AlterOperator(_)
        | Statement::AlterOperatorFamily(_)
        | Statement::AlterOperatorClass(_)
        | Statement::AlterTextSearch(_)
        | Statement::AlterRole { .. }
        | Statement::AlterPolicy(_)
        | Statement::AlterTrigger(_)
        | Statement::AlterConnector { .. }
        | Statement::AlterUser(_)
        | Statement::Drop { .. }
        | Statement::DropFunction(_)
        | Statement::DropDomain(_)
        | Statement::DropProcedure { .. }
        | Statement::DropSecret { .. }
        | Statement::DropPolicy(_)
        | Statement::DropRule(_)
        | Statement::DropConnector { .. }
        | Statement::DropExtension(_)
        | Statement::DropOperator(_)
        | Statement::DropOperatorFamily(_)
        | Statement::DropOperatorClass(_)
        | Statement::DropTrigger(_)
        | Statement::RenameTable(_)
        | Statement::Comment { .. }
        | Statement::Grant(_)
        | Statement::GrantRole(_)
        | Statement::Deny(_)
        | Statement::Revoke(_)
        | Statement::RevokeRole(_)
        | Statement::AlterDefaultPrivileges(_) => Ddl,

        // EXECUTE runs a prepared statement whose text we may never have
        // seen (it may have been prepared before the grant, or by PREPARE
        // hidden in a function), so it cannot be vouched for.
        Statement::Execute { .. } => Unknown,
        // Other dialects' statements, and whatever a newer sqlparser adds.
        _ => Unknown,
    }
}

/// BEGIN / START TRANSACTION / SET TRANSACTION: READ WRITE explicitly lifts a
/// read-only default, so it is a write; other modes are housekeeping.
fn transaction_modes_kind(modes: &[TransactionMode]) -> StatementKind {
    let read_write = modes.iter().any(|mode| {
        matches!(
            mode,
            TransactionMode::AccessMode(TransactionAccessMode::ReadWrite)
        )
    });
    if read_write {
        StatementKind::Write
    } else {
        StatementKind::Session
    }
}

/// A text's first word (ASCII letters after leading white space) and what
/// follows it: how the statement-specific rules recognise a statement
/// before, or without, parsing it.
fn first_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    let end = text
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    text.split_at(end)
}

#[cfg(test)]
mod tests;
