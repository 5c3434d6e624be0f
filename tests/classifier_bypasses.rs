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
        "SELECT (t).my_volatile_function FROM t",
    ] {
        refused(pg(sql), sql);
    }
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
