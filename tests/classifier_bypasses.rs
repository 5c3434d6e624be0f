//! Texts that once got past the classifier, one test per class: each is an
//! input for which a read level must not run what the server would run as a
//! change, a lock, a kill or a database switch (checked on MariaDB 10.11 and
//! PostgreSQL 15; the same texts are in the oracle corpora, which run them
//! on real servers). Each assertion states the verdict the classifier must
//! give.

use jitgate::sql::{
    DatabaseSwitch, Lexing, MysqlServer, Reading, StatementKind, classify_for,
    mysql_database_switch, mysql_lexing_after,
};

fn mariadb() -> MysqlServer {
    MysqlServer::from_version("5.5.5-10.11.19-MariaDB-0+deb12u1")
}

fn my(lexing: Lexing, sql: &str) -> StatementKind {
    classify_for(&Reading::mysql(lexing, mariadb()), sql.as_bytes())
}

fn pg(sql: &str) -> StatementKind {
    classify_for(&Reading::postgres(Lexing::DEFAULT), sql.as_bytes())
}

#[track_caller]
fn refused(kind: StatementKind, sql: &str) {
    assert!(
        !kind.allowed_read_only(),
        "`{sql}` is {kind:?}: a read level would run it"
    );
}

/// MariaDB skips `/*!NNNNN … */` for 50700 <= NNNNN <= 99999 (MySQL-5.7+
/// versions it does not claim), unless the comment is `/*M!`. jitgate
/// opens it as code, so the server's code after the first `*/` looks like
/// the inside of a string.
#[test]
fn mariadb_skips_mysql_57_to_99999_version_comments() {
    for sql in [
        "SELECT 1 /*!50700 '*/ ; DELETE FROM t; #' */",
        "SELECT 1 /*!80000 '*/ ; DELETE FROM t; #' */",
        "SELECT 1 /*!99999 '*/ ; DELETE FROM t; #' */",
        "SELECT 1 /*!99999 `*/ ; DELETE FROM t; #` */",
        "SELECT 1 /*!99999 \"*/ ; DELETE FROM t; #\" */",
        "SELECT 1 /*!99999 '*/ ; KILL 12345; #' */",
    ] {
        refused(my(Lexing::DEFAULT, sql), sql);
    }
    let sql = "SELECT 1 /*!99999 '*/ ; USE other; #' */";
    assert_ne!(
        mysql_database_switch(&Reading::mysql(Lexing::DEFAULT, mariadb()), sql.as_bytes()),
        DatabaseSwitch::Stays,
        "MariaDB switches to `other`"
    );
}

/// sqlparser's MySQL tokenizer starts a `--` comment before any Unicode
/// white space (U+00A0, U+3000, U+2028…); MariaDB only before ASCII space
/// or a control byte, and reads U+00A0 as an identifier character.
#[test]
fn dash_dash_before_unicode_space_is_not_a_mysql_comment() {
    for space in ["\u{a0}", "\u{3000}", "\u{2028}", "\u{85}"] {
        let sql = format!("SELECT 1--{space} FROM (SELECT 1 AS `{space}`) d; DELETE FROM t");
        refused(my(Lexing::DEFAULT, &sql), &sql);
    }
    let sql = "SELECT 1--\u{a0} FROM (SELECT 1 AS `\u{a0}`) d; USE other";
    assert_ne!(
        mysql_database_switch(&Reading::mysql(Lexing::DEFAULT, mariadb()), sql.as_bytes()),
        DatabaseSwitch::Stays,
        "MariaDB switches to `other`"
    );
}

/// `mysql_lexing_after` parses the raw text, without opening executable
/// comments as the server does: a `/*M!` SET is missed, and a `/*!99999`
/// SET MariaDB skips is taken as run.
#[test]
fn lexing_changes_inside_executable_comments_are_followed() {
    let mut nbe = Lexing::DEFAULT;
    nbe.mysql_sql_mode("NO_BACKSLASH_ESCAPES");
    let mut gbk = Lexing::DEFAULT;
    gbk.mysql_client_charset("gbk");
    let cases: [(&str, Lexing, Lexing); 5] = [
        (
            "/*M! SET sql_mode='NO_BACKSLASH_ESCAPES' */",
            Lexing::DEFAULT,
            nbe,
        ),
        (
            "/*M!100000 SET sql_mode='NO_BACKSLASH_ESCAPES' */",
            Lexing::DEFAULT,
            nbe,
        ),
        ("/*M! SET NAMES gbk */", Lexing::DEFAULT, gbk),
        // Not run by MariaDB: the session stays in NO_BACKSLASH_ESCAPES.
        ("/*!99999 SET sql_mode='' */", nbe, nbe),
        ("/*!50700 SET sql_mode=DEFAULT */", nbe, nbe),
    ];
    for (text, before, server_after) in cases {
        let after = mysql_lexing_after(
            text.as_bytes(),
            &Reading::mysql(before, mariadb()),
            Lexing::DEFAULT,
        );
        // What matters: the attack text that follows is not a read.
        let attack = if server_after == gbk {
            "SELECT '丁\\'; DELETE FROM t; #'"
        } else {
            "SELECT '\\'; DELETE FROM t; #'"
        };
        refused(my(after, attack), &format!("{text} then {attack}"));
    }
}

/// PostgreSQL reads `ANALYSE` as `ANALYZE` in an EXPLAIN option list.
#[test]
fn explain_analyse_runs_the_statement() {
    for sql in [
        "EXPLAIN (ANALYSE) DELETE FROM t",
        "EXPLAIN (ANALYSE, COSTS OFF) DELETE FROM t",
        "EXPLAIN (ANALYSE) SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
        "EXPLAIN (ANALYSE) CREATE TABLE x AS SELECT 1",
    ] {
        refused(pg(sql), sql);
    }
}

/// `(expr).f` is PostgreSQL's field notation for the call `f(expr)`; the
/// function allow-list never sees it.
#[test]
fn field_notation_calls_functions() {
    for sql in [
        "SELECT ('s'::regclass).nextval",
        "SELECT (42::bigint).pg_advisory_lock",
        "SELECT (42).pg_advisory_lock",
        "SELECT (pid).pg_terminate_backend FROM pg_stat_activity",
        "SELECT ('bgwriter'::text).pg_stat_reset_shared",
        "SELECT (now()).pg_stat_clear_snapshot",
    ] {
        refused(pg(sql), sql);
    }
    // A name that is no built-in is taken for a field, as JDBC's metadata
    // queries need (`(information_schema._pg_expandarray(i.indkey)).n`); a
    // user's function reached this way meets the read-only account.
    assert!(pg("SELECT (t).street FROM t").allowed_read_only());
}

/// The SQL text of `query_to_xml` is classified after the cache's number
/// shaping (`\052` becomes `\1`) and sqlparser's unescaping; PostgreSQL
/// reads `\052` as `*`, which closes the comment.
#[test]
fn query_to_xml_text_is_read_as_the_server_decodes_it() {
    for sql in [
        r"SELECT query_to_xml(E'SELECT 1 /* \052/ , nextval(''s'') --*/', true, false, '')",
        r"SELECT query_to_xml(E'SELECT 1 /* \52/ , nextval(''s'') --*/', true, false, '')",
    ] {
        refused(pg(sql), sql);
    }
}

/// MySQL's `RESET MASTER` / `RESET SLAVE` / `RESET REPLICA` parse as a
/// PostgreSQL-style `RESET <setting>` and come out as housekeeping.
#[test]
fn mysql_reset_statements_are_not_session() {
    for sql in [
        "RESET MASTER",
        "RESET SLAVE",
        "RESET REPLICA",
        "RESET PERSIST",
    ] {
        refused(my(Lexing::DEFAULT, sql), sql);
    }
}

/// The cache key rewrites every standalone number to `1` and classifies
/// the rewritten text: `= 0` becomes `= 1`, which `turns_read_only_on`
/// takes for "on". PostgreSQL turns read-only mode off.
#[test]
fn turning_read_only_off_with_zero_is_not_housekeeping() {
    for sql in [
        "SET default_transaction_read_only = 0",
        "SET default_transaction_read_only TO '0'",
        "SET SESSION default_transaction_read_only = 0",
        "SET transaction_read_only = 0",
    ] {
        refused(pg(sql), sql);
    }
}

fn mysql8() -> MysqlServer {
    MysqlServer::from_version("8.0.36")
}

fn my_on(server: MysqlServer, sql: &str) -> StatementKind {
    classify_for(&Reading::mysql(Lexing::DEFAULT, server), sql.as_bytes())
}

/// The classification cache replaces every standalone number of a text
/// that starts with SELECT/WITH/VALUES/… by `1`, and classifies the shaped
/// text. The first word decides, but a number inside a later statement or a
/// string literal can be the whole meaning: `'0'` becomes `'1'`, `= 0`
/// becomes `= 1`, and "lift read-only" becomes "turn read-only on".
#[test]
fn number_shaping_turns_lifting_read_only_into_housekeeping() {
    for sql in [
        // pg_dump's shape (set_config_of_one_setting), with a value of 0.
        "SELECT set_config(name, '0', false) FROM pg_settings WHERE name = 'default_transaction_read_only'",
        "SELECT set_config(name, '0', false) FROM pg_settings WHERE name = 'transaction_read_only'",
        // A SET after a SELECT in one simple-query text.
        "SELECT 1; SET default_transaction_read_only = 0",
        "SELECT 1; SET default_transaction_read_only TO '0'",
        "SELECT 1; SET transaction_read_only = 0",
        "VALUES (1); SET default_transaction_read_only = 0",
    ] {
        assert_eq!(pg(sql), StatementKind::Write, "{sql}");
    }
}

/// `set_config` and `query_to_xml` are recognised by the last part of the
/// name only, before the function allow-list is asked: `public.set_config`,
/// `"SET_CONFIG"` (a quoted name keeps its case) or `"PG_CATALOG".set_config`
/// is a user's function, which the server calls.
#[test]
fn set_config_and_query_to_xml_of_another_schema_or_case_are_users_functions() {
    for sql in [
        "SELECT public.set_config('application_name', 'x', false)",
        "SELECT \"SET_CONFIG\"('application_name', 'x', false)",
        "SELECT \"SET_CONFIG\"(name, 'x', false) FROM pg_settings WHERE name = 'application_name'",
        "SELECT \"PG_CATALOG\".set_config(name, 'x', false) FROM pg_settings WHERE name = 'application_name'",
        "SELECT public.query_to_xml('SELECT 1', true, false, '')",
        "SELECT \"QUERY_TO_XML\"('SELECT 1', true, false, '')",
    ] {
        refused(pg(sql), sql);
    }
}

/// COALESCE, NULLIF, GREATEST, LEAST, ROW, ARRAY… are syntax only when
/// written as keywords. Quoted, they are ordinary function names, and
/// pg_catalog has no function of those names: the call reaches the first
/// schema of the search path that has one (checked: `SELECT "coalesce"(1)`
/// runs `public."coalesce"(integer)`).
#[test]
fn quoted_syntax_words_are_function_calls() {
    for sql in [
        "SELECT \"coalesce\"(1)",
        "SELECT \"nullif\"(1, 2)",
        "SELECT \"greatest\"(1, 2)",
        "SELECT \"least\"(1, 2)",
        "SELECT \"row\"(1)",
        "SELECT \"array\"(1)",
        "SELECT \"user\"()",
        "SELECT \"current_date\"()",
    ] {
        refused(pg(sql), sql);
    }
}

/// sqlparser turns SUBSTR/SUBSTRING/TRIM calls into `Expr::Substring` /
/// `Expr::Trim`, never `Expr::Function`, so the `spaced` rule of
/// mysql_functions.txt is never applied to them. With a space, tab, comment
/// or newline-comment before `(`, MariaDB (and MySQL) call the stored
/// function of that name in the current database.
#[test]
fn spaced_substr_substring_and_trim_reach_stored_functions() {
    for server in [mariadb(), mysql8(), MysqlServer::default()] {
        for sql in [
            "SELECT substr (1)",
            "SELECT substr ('abc', 2)",
            "SELECT SUBSTRING\t('abc', 2)",
            "SELECT substring/**/('abc', 2)",
            "SELECT substring#c\n('abc', 2)",
            "SELECT trim ('a')",
            "SELECT trim/**/('a')",
        ] {
            refused(my_on(server, sql), sql);
        }
    }
}

/// PostgreSQL ends a `--` comment at `\r` as well as `\n` (scan.l:
/// `newline [\n\r]`), and so does sqlparser; the operator scan
/// (operators.rs) skips to `\n` only, so an operator after a `\r` is never
/// looked at. Checked: `SELECT 2 --x\r%%% 3` runs the user operator
/// `public.%%%` (its function inserted a row).
#[test]
fn an_operator_after_a_carriage_return_ending_a_comment_is_seen() {
    for sql in [
        "SELECT 2 --x\r%%% 3",
        "SELECT 2 --\r@+ 3",
        "SELECT 1 FROM t WHERE a -- c\r<=> b",
    ] {
        refused(pg(sql), sql);
    }
}
