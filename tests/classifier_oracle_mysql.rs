//! The classifier against the server's own reading, on MariaDB.
//!
//! Each statement of `tests/corpus/mysql.sql`, and variants of them made by a
//! small generator, runs on a real MariaDB (as an account with every
//! privilege on the test database) in every session reading the test knows
//! (default, `NO_BACKSLASH_ESCAPES`, `ANSI_QUOTES`, `SET NAMES gbk`), inside
//! a read-only transaction that is rolled back. The server is the oracle: a
//! statement "changed something" if the server refused it as a write in a
//! read-only transaction (1792), took a user lock, or left the rows or the
//! tables different. Whenever it did, jitgate's verdict for that reading —
//! with the server's own `sql_mode` and `character_set_client`, read as
//! jitgate reads them at login — must not be `read` or `session`.
//!
//! For a long run: `JITGATE_ORACLE_CASES=5000 JITGATE_ORACLE_SEED=7 cargo
//! test --test classifier_oracle_mysql -- --nocapture`.

mod support;

use jitgate::sql::{Lexing, MysqlServer, Reading, classify_for};
use mysql_async::prelude::*;
use support::*;

const SETTINGS: [(&str, Option<&str>); 4] = [
    ("default", None),
    (
        "NO_BACKSLASH_ESCAPES",
        Some("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')"),
    ),
    (
        "ANSI_QUOTES",
        Some("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')"),
    ),
    ("gbk", Some("SET NAMES gbk")),
];

fn corpus() -> Vec<String> {
    oracle::statements(include_str!("corpus/mysql.sql"))
}

/// Texts built to disagree between readings: an opening, a separator, a
/// hidden statement and a closing.
const OPENINGS: &[&str] = &[
    r"SELECT 'a\' ",
    r#"SELECT "a\" "#,
    r"SELECT '丁\' ",
    r"SELECT 'ā\' ",
    r"SELECT 'a\\' ",
    r"SELECT 1 /*M! ",
    r"SELECT 1 /*!50000 ",
    r"SELECT 1 /*!999999 ",
    r"SELECT 1 /* ",
    r"SELECT 1 # ",
    r"SELECT 1 -- ",
    r"SELECT 1 --",
    r"SELECT `a\` FROM (SELECT 1 AS `a\`) s ",
    r"SELECT 1 ",
];
const MIDDLES: &[&str] = &["; ", "' ; ", "\" ; ", " */ ; ", "\n; ", ", ", "` ; "];
const HIDDEN: &[&str] = &["DELETE FROM items", "SELECT GET_LOCK('jitgate-oracle', 0)"];
const CLOSINGS: &[&str] = &[" -- '", " -- \"", " */", "", " # '", "; -- `", " -- */"];

const PARTS: oracle::Parts = oracle::Parts {
    openings: OPENINGS,
    middles: MIDDLES,
    hidden: HIDDEN,
    closings: CLOSINGS,
};

/// Rows and tables of the test database.
async fn state(db: &MariaDb) -> (i64, i64) {
    let mut conn = mysql_async::Conn::new(db.write_opts())
        .await
        .expect("connect");
    let row: Option<(i64, i64)> = conn
        .query_first(
            "SELECT (SELECT count(*) FROM items), \
             (SELECT count(*) FROM information_schema.tables WHERE table_schema = 'app')",
        )
        .await
        .expect("read the state");
    let _ = conn.disconnect().await;
    row.expect("a row")
}

/// Run `sql` in a fresh session of this reading; answers whether the server
/// changed something or tried to, and jitgate's reading of that session.
async fn run(db: &MariaDb, setting: Option<&str>, sql: &str) -> (bool, Reading) {
    let before = state(db).await;
    let mut conn = mysql_async::Conn::new(db.write_opts())
        .await
        .expect("connect");
    let version: Option<String> = conn.query_first("SELECT VERSION()").await.expect("version");
    for setup in ["SET SESSION max_statement_time = 3"]
        .into_iter()
        .chain(setting)
        .chain(["SET SESSION TRANSACTION READ ONLY"])
    {
        conn.query_drop(setup).await.expect("session setup");
    }
    let reading: Option<(String, String)> = conn
        .query_first("SELECT @@SESSION.sql_mode, @@SESSION.character_set_client")
        .await
        .expect("the session's reading");
    let (mode, charset) = reading.expect("a row");
    let mut lexing = Lexing::DEFAULT;
    lexing.mysql_sql_mode(&mode);
    lexing.mysql_client_charset(&charset);
    let server = MysqlServer::from_version(&version.unwrap_or_default());

    conn.query_drop("START TRANSACTION READ ONLY")
        .await
        .expect("begin");
    // Every result set is read; an error in any of them ends the text.
    let result = conn.query_drop(sql).await;
    let mut changed = matches!(&result, Err(mysql_async::Error::Server(s)) if s.code == 1792);
    let _ = conn.query_drop("ROLLBACK").await;
    match conn
        .query_first::<Option<i64>, _>("SELECT RELEASE_ALL_LOCKS()")
        .await
    {
        Ok(Some(Some(released))) => changed |= released > 0,
        Ok(_) => {}
        Err(_) => changed = true,
    }
    let _ = conn.disconnect().await;
    changed |= state(db).await != before;
    (changed, Reading::mysql(lexing, server))
}

async fn check(db: &MariaDb, statements: &[String]) -> oracle::Outcome {
    let mut outcome = oracle::Outcome::default();
    for sql in statements {
        for (name, setting) in SETTINGS {
            let (changed, reading) = run(db, setting, sql).await;
            let verdict = classify_for(&reading, sql.as_bytes());
            outcome.record(name, sql, changed, verdict);
        }
    }
    outcome
}

#[tokio::test(flavor = "multi_thread")]
async fn no_corpus_statement_that_changes_the_server_classifies_as_a_read() {
    let db = MariaDb::start();
    check(&db, &corpus()).await.report("corpus", 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_generated_statement_that_changes_the_server_classifies_as_a_read() {
    let (cases, seed) = oracle::cases_and_seed(100, 0x5eed_4321_dcba_0001);
    let db = MariaDb::start();
    let mut rng = oracle::Rng::new(seed);
    let statements: Vec<String> = (0..cases).map(|_| PARTS.compose(&mut rng)).collect();
    check(&db, &statements)
        .await
        .report(&format!("generated (seed {seed})"), 0);
}
