//! A read grant on MariaDB cannot hide a statement from the classifier by
//! changing how the server reads text (`sql_mode`, `SET NAMES`) or inside an
//! executable comment the server runs (`/*M! … */`); on a write level the
//! audit record never calls such a statement a read.
//!
//! The witness is the server's own general log (every statement it received,
//! with the account that sent it) and its rows.

mod support;

use mysql_async::prelude::*;
use support::*;

/// With `NO_BACKSLASH_ESCAPES`, `'a\'` is a whole string and the DELETE
/// runs; read with backslash escapes (the default) it is all one string.
const BACKSLASH_ATTACK: &str = r"SELECT 'a\' ; DELETE FROM items; -- '";

/// "丁\" is E4 B8 81 5C in UTF-8; in GBK, E4 B8 and 81 5C are two
/// characters, so the backslash is gone and the quote after it ends the string.
const GBK_ATTACK: &str = r"SELECT '丁\' ; DELETE FROM items; -- '";

fn setup() -> MariaDb {
    let db = MariaDb::start();
    db.root_query("SET GLOBAL log_output = 'TABLE'; SET GLOBAL general_log = 1");
    db
}

/// Statements the server received from `account` that mention `needle`.
fn server_received(db: &MariaDb, account: &str, needle: &str) -> usize {
    db.root_query(&format!(
        "SELECT count(*) FROM mysql.general_log WHERE user_host LIKE '{account}[%' \
         AND command_type = 'Query' AND argument LIKE '%{needle}%'"
    ))
    .trim()
    .parse()
    .expect("a count")
}

fn items(db: &MariaDb) -> usize {
    db.root_query("SELECT count(*) FROM app.items")
        .trim()
        .parse()
        .expect("a count")
}

async fn assert_refused(conn: &mut mysql_async::Conn, sql: &str, why: &str) {
    let err = conn
        .query_drop(sql)
        .await
        .expect_err(&format!("`{sql}` must be refused on a read grant"));
    let mysql_async::Error::Server(e) = &err else {
        panic!("`{sql}`: not a server error: {err}");
    };
    assert_eq!(e.code, 1290, "`{sql}`: {}", e.message);
    assert!(e.message.contains(why), "`{sql}`: {}", e.message);
}

async fn connect(jg: &Jitgate) -> mysql_async::Conn {
    mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
        .await
        .unwrap_or_else(|e| panic!("login: {e}\n{}", jg.log()))
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_executable_comments_are_code() {
    let db = setup();
    let jg = Jitgate::start(&db, JitgateOptions::default()).await;
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let mut conn = connect(&jg).await;
    for sql in [
        "/*M! DELETE FROM items */",
        "SELECT 1 /*M! ; DELETE FROM items */",
        "SELECT 1 /*M!100000 ; DELETE FROM items */",
        "SELECT 1 /*!50000 ; DELETE FROM items */",
    ] {
        assert_refused(&mut conn, sql, "can change data").await;
    }
    assert_refused(
        &mut conn,
        "SELECT 1 /*m! ; DELETE FROM items */",
        "could not classify",
    )
    .await;
    // What mysqldump sends still reads.
    let n: Option<i64> = conn
        .query_first("SELECT /*!40001 SQL_NO_CACHE */ count(*) FROM items")
        .await
        .expect("a versioned comment around a hint");
    assert_eq!(n, Some(3));
    conn.disconnect().await.expect("disconnect");
    assert_eq!(server_received(&db, "jg_read", "DELETE"), 0);
    assert_eq!(items(&db), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_backslash_escapes_cannot_hide_a_statement() {
    let db = setup();
    let jg = Jitgate::start(&db, JitgateOptions::default()).await;
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let mut conn = connect(&jg).await;
    // A mode change and a statement in one text: MariaDB lexes the second
    // under the new mode.
    let one_text = format!("SET sql_mode = 'NO_BACKSLASH_ESCAPES'; {BACKSLASH_ATTACK}");
    assert_refused(&mut conn, &one_text, "could not classify").await;
    conn.query_drop("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'")
        .await
        .expect("changing sql_mode is housekeeping");
    assert_refused(&mut conn, BACKSLASH_ATTACK, "could not classify").await;
    // Text without a backslash reads the same in either mode.
    let n: Option<i64> = conn
        .query_first("SELECT count(*) FROM items")
        .await
        .expect("a plain read");
    assert_eq!(n, Some(3));
    // Back to the default: backslash texts are read again.
    conn.query_drop("SET SESSION sql_mode = DEFAULT")
        .await
        .expect("sql_mode back to the server's default");
    let s: Option<String> = conn
        .query_first(r"SELECT 'a\'b'")
        .await
        .expect("a backslash read under the default mode");
    assert_eq!(s.as_deref(), Some("a'b"));
    // A mode computed on the server is not followed: backslash texts stay
    // unknown.
    conn.query_drop("SET SESSION sql_mode = CONCAT('NO_BACKSLASH', '_ESCAPES')")
        .await
        .expect("a computed mode");
    assert_refused(&mut conn, r"SELECT 'a\'b'", "could not classify").await;
    conn.disconnect().await.expect("disconnect");
    assert_eq!(server_received(&db, "jg_read", "DELETE"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_servers_own_sql_mode_is_read_at_login() {
    let db = setup();
    db.root_query("SET GLOBAL sql_mode = 'NO_BACKSLASH_ESCAPES,ANSI_QUOTES'");
    let jg = Jitgate::start(&db, JitgateOptions::default()).await;
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let mut conn = connect(&jg).await;
    assert_refused(&mut conn, BACKSLASH_ATTACK, "could not classify").await;
    assert_refused(
        &mut conn,
        r#"SELECT "a\" ; DELETE FROM items; -- ""#,
        "could not classify",
    )
    .await;
    conn.disconnect().await.expect("disconnect");
    assert_eq!(server_received(&db, "jg_read", "DELETE"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multibyte_charset_that_swallows_backslashes_makes_non_ascii_text_unknown() {
    let db = setup();
    let jg = Jitgate::start(&db, JitgateOptions::default()).await;
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let mut conn = connect(&jg).await;
    conn.query_drop("SET NAMES gbk")
        .await
        .expect("SET NAMES is housekeeping");
    assert_refused(&mut conn, GBK_ATTACK, "could not classify").await;
    let n: Option<i64> = conn
        .query_first(r"SELECT count(*) FROM items WHERE name <> 'a\'b'")
        .await
        .expect("ASCII text reads the same in every charset");
    assert_eq!(n, Some(3));
    conn.query_drop("SET NAMES utf8mb4")
        .await
        .expect("back to utf8mb4");
    let s: Option<String> = conn
        .query_first("SELECT '丁'")
        .await
        .expect("non-ASCII text in utf8mb4");
    assert_eq!(s.as_deref(), Some("丁"));
    conn.disconnect().await.expect("disconnect");
    assert_eq!(server_received(&db, "jg_read", "DELETE"), 0);
}

/// On a write level the hidden DELETE runs, as the grant allows, and its
/// audit record does not call it a read.
#[tokio::test(flavor = "multi_thread")]
async fn a_hidden_write_on_a_write_level_is_not_audited_as_a_read() {
    let db = setup();
    let jg = Jitgate::start(&db, JitgateOptions::default()).await;
    jg.grant("alice", MYSQL_TARGET, "write", "10m").await;
    let mut conn = connect(&jg).await;
    conn.query_drop("SET NAMES gbk").await.expect("SET NAMES");
    let attack = GBK_ATTACK.replace("FROM items", "FROM items WHERE id = 1");
    conn.query_drop(&attack)
        .await
        .expect("the write level runs it");
    conn.query_drop("SET NAMES utf8mb4")
        .await
        .expect("SET NAMES");
    let comment = "/*M! DELETE FROM items WHERE id = 2 */";
    conn.query_drop(comment)
        .await
        .expect("the write level runs it");
    conn.disconnect().await.expect("disconnect");
    assert_eq!(items(&db), 1, "the server ran both hidden DELETEs");
    for (sql, kind) in [(attack.as_str(), "unknown"), (comment, "write")] {
        let record = jg
            .wait_for_audit("the statement record", |v| {
                v["event"] == "statement" && v["statement"].as_str() == Some(sql)
            })
            .await;
        assert_eq!(record["kind"], kind, "{record}");
    }
}

async fn current_database(conn: &mut mysql_async::Conn) -> Option<String> {
    conn.query_first::<Option<String>, _>("SELECT DATABASE()")
        .await
        .expect("SELECT DATABASE()")
        .flatten()
}

/// `USE` of another database is refused wherever it sits in the text
/// (behind a comment or a line break, as a second statement, inside an
/// executable comment MariaDB runs), though the account could use it; `USE`
/// of the target's own database passes, comments and all. The server's
/// general log and its `DATABASE()` are the witnesses.
#[tokio::test(flavor = "multi_thread")]
async fn use_of_another_database_is_refused_wherever_it_hides() {
    let db = setup();
    db.root_query("CREATE DATABASE other; GRANT SELECT ON other.* TO jg_read@'%'");
    let jg = Jitgate::start(&db, JitgateOptions::default()).await;
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let mut conn = connect(&jg).await;
    for sql in [
        "/* c */ USE other",
        "\nUSE other",
        "SELECT 1; USE other",
        "/*M! USE other */",
        "USE `other`",
    ] {
        let err = conn
            .query_drop(sql)
            .await
            .expect_err(&format!("`{sql}` must be refused"));
        let mysql_async::Error::Server(e) = &err else {
            panic!("`{sql}`: not a server error: {err}");
        };
        assert_eq!(e.code, 1044, "`{sql}`: {}", e.message);
        assert!(
            e.message.contains("may only use database 'app'"),
            "{}",
            e.message
        );
        assert_eq!(
            current_database(&mut conn).await.as_deref(),
            Some("app"),
            "after `{sql}`"
        );
    }
    for sql in ["USE app /* c */", "USE app"] {
        conn.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("`{sql}` stays in the target's database: {e}"));
        assert_eq!(current_database(&mut conn).await.as_deref(), Some("app"));
    }
    conn.disconnect().await.expect("disconnect");
    // The CLI's own `use` sends COM_INIT_DB; its outcome is audited.
    let run = jg
        .mariadb(ALICE_SECRET, true, "use app\nselect database()")
        .await;
    assert!(run.stdout.contains("app"), "{}{}", run.stdout, run.stderr);
    let init_db = jg
        .wait_for_audit("the CLI's use", |v| {
            v["event"] == "statement" && v["statement"] == "USE `app`"
        })
        .await;
    jg.wait_for_audit("its outcome", |v| {
        v["event"] == "statement_end"
            && v["session"] == init_db["session"]
            && v["seq"] == init_db["seq"]
            && v["outcome"] == "OK"
    })
    .await;
    assert_eq!(server_received(&db, "jg_read", "other"), 0);
    assert_eq!(server_received(&db, "jg_read", "USE app /* c */"), 1);
    let refused = jg
        .wait_for_audit("the refusal of the second statement", |v| {
            v["event"] == "statement_refused" && v["statement"] == "SELECT 1; USE other"
        })
        .await;
    assert_eq!(refused["outcome"], "1044", "{refused}");
}

/// SQL run from a string (`EXECUTE IMMEDIATE`) is no text jitgate can read
/// before it runs; afterwards jitgate asks the server where the session
/// is, and a session the server has moved to another database ends with
/// an error that says why at its next command.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_moved_to_another_database_by_dynamic_sql_is_ended() {
    let db = setup();
    db.root_query("CREATE DATABASE other; GRANT SELECT ON other.* TO jg_write@'%'");
    let jg = Jitgate::start(&db, JitgateOptions::default()).await;
    jg.grant("alice", MYSQL_TARGET, "write", "10m").await;
    let mut conn = connect(&jg).await;
    // Dynamic SQL that stays: the session goes on.
    conn.query_drop("EXECUTE IMMEDIATE 'SELECT 1'")
        .await
        .expect("dynamic SQL that stays in the database");
    assert_eq!(current_database(&mut conn).await.as_deref(), Some("app"));
    conn.query_drop("EXECUTE IMMEDIATE 'USE other'")
        .await
        .expect("the server runs the USE");
    let err = conn
        .query_drop("SELECT 1")
        .await
        .expect_err("the session left its database");
    let mysql_async::Error::Server(e) = &err else {
        panic!("not a server error: {err}");
    };
    assert_eq!(e.code, 1044, "{}", e.message);
    assert!(
        e.message.contains("now in database 'other'") && e.message.contains("reconnect"),
        "{}",
        e.message
    );
    let end = jg
        .wait_for_audit("the session's end", |v| v["event"] == "session_end")
        .await;
    assert!(
        end["detail"]
            .as_str()
            .is_some_and(|d| d.contains("left database 'app'")),
        "{end}"
    );
    // The witness: the server answered jitgate's question after the switch.
    assert_eq!(server_received(&db, "jg_write", "SELECT DATABASE()"), 3);
}

/// A stored function named like a built-in is what the server calls when the
/// name is quoted, qualified, or (for built-ins of its grammar) spaced from
/// its `(`: none of those is a read, even where the read account may run it.
#[tokio::test(flavor = "multi_thread")]
async fn a_stored_function_behind_a_built_in_name_is_not_a_read() {
    let db = setup();
    db.root_query(
        "DELIMITER //\n\
         CREATE FUNCTION app.`count`(x INT) RETURNS INT MODIFIES SQL DATA \
         BEGIN INSERT INTO app.items (name) VALUES ('stored count'); RETURN 42; END //",
    );
    db.root_query("GRANT EXECUTE ON app.* TO jg_read@'%'");
    let jg = Jitgate::start(
        &db,
        JitgateOptions {
            allow_privileged_read_account: true,
            ..JitgateOptions::default()
        },
    )
    .await;
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let mut conn = connect(&jg).await;
    for sql in [
        "SELECT count (1)",
        "SELECT count/* a comment */(1)",
        "SELECT `count`(1)",
        "SELECT app.count(1)",
        "SELECT no_such_builtin(1)",
    ] {
        assert_refused(&mut conn, sql, "could not classify").await;
    }
    let n: Option<i64> = conn
        .query_first("SELECT count(1) FROM items")
        .await
        .expect("the built-in count");
    assert_eq!(n, Some(3));
    conn.disconnect().await.expect("disconnect");
    assert_eq!(server_received(&db, "jg_read", "count (1)"), 0);
    assert_eq!(server_received(&db, "jg_read", "count`"), 0);
    assert_eq!(items(&db), 3);
}
