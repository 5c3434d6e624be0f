//! The classifier against the server's own reading, on PostgreSQL.
//!
//! Each statement of `tests/corpus/postgres.sql`, and variants of them made
//! by a small mutation fuzzer, runs on a real server as a superuser in every
//! session reading the test knows (default settings, `standard_conforming_
//! strings = off`, `client_encoding = SJIS`), inside a read-only transaction
//! that is rolled back. The server is the oracle: a statement "changed
//! something" if the server refused it as a write in a read-only transaction
//! (25006), assigned a transaction id, took an advisory lock, ended the
//! session, or left the table's rows or the catalog different. Whenever it
//! did, jitgate's verdict for that session reading must not be `read` or
//! `session`.
//!
//! CI runs the corpus and a few hundred fuzzed variants. For a long run:
//! `JITGATE_ORACLE_CASES=20000 JITGATE_ORACLE_SEED=7 cargo test --test
//! classifier_oracle_pg -- --nocapture`.

mod support;

use jitgate::sql::{Lexing, Reading, classify_for};
use support::*;

/// A session reading: the SET that puts the server in it, and the same
/// reading as jitgate learns it from the server's ParameterStatus.
struct Setting {
    name: &'static str,
    set: Option<&'static str>,
    parameter: Option<(&'static str, &'static str)>,
}

const SETTINGS: [Setting; 3] = [
    Setting {
        name: "default",
        set: None,
        parameter: None,
    },
    Setting {
        name: "standard_conforming_strings off",
        set: Some("SET standard_conforming_strings = off"),
        parameter: Some(("standard_conforming_strings", "off")),
    },
    Setting {
        name: "client_encoding SJIS",
        set: Some("SET client_encoding = 'SJIS'"),
        parameter: Some(("client_encoding", "SJIS")),
    },
];

fn corpus() -> Vec<String> {
    oracle::statements(include_str!("corpus/postgres.sql"))
}

/// Pieces that change how text is read: quotes, escapes, comment marks,
/// characters whose SJIS encoding swallows a backslash, statement breaks.
const PIECES: &[&str] = &[
    "\\",
    "'",
    "E'",
    "$$",
    "$a$",
    "/*",
    "*/",
    "--",
    "\n",
    ";",
    "ā",
    "丁",
    "\"",
    "U&'",
    " ",
    "; DELETE FROM items; ",
    "; SELECT pg_advisory_lock(7); ",
    "\\'",
    "''",
];

/// Texts built to disagree: an opening that some reading takes for the
/// start or end of a literal or comment, a separator, a hidden statement, and
/// a closing that hides the rest from the other reading.
const OPENINGS: &[&str] = &[
    r"SELECT 'x\' ",
    r"SELECT E'x\' ",
    r"SELECT 'ā\' ",
    r"SELECT E'ā\' ",
    r"SELECT E'丁\' ",
    r"SELECT 'x\\' ",
    r"SELECT E'x\\' ",
    r"SELECT $$ ",
    r"SELECT 1 /* ",
    r"SELECT 1 /* /* */ ",
    r"SELECT 1 -- ",
    r"SELECT U&'x\' ",
    r"SELECT 'x''' ",
    r#"SELECT "x\" "#,
    r"SELECT 1 ",
];
const MIDDLES: &[&str] = &[
    ", $$' ",
    "; ",
    "' ; ",
    " */ ; ",
    "\n; ",
    "$$ ; ",
    "\" ; ",
    ", '$$' ; ",
];
const HIDDEN: &[&str] = &[
    "DELETE FROM items",
    "SELECT pg_advisory_lock(7)",
    "SELECT txid_current()",
];
const CLOSINGS: &[&str] = &[
    " -- $$",
    " -- '",
    "; -- '",
    " -- */",
    "",
    " -- \"",
    "; SELECT '",
    " $$",
];

const PARTS: oracle::Parts = oracle::Parts {
    openings: OPENINGS,
    middles: MIDDLES,
    hidden: HIDDEN,
    closings: CLOSINGS,
};

/// A variant of `sql`: one to three pieces inserted at random places.
fn mutate(rng: &mut oracle::Rng, sql: &str) -> String {
    let mut text: Vec<char> = sql.chars().collect();
    for _ in 0..=rng.below(3) {
        let at = rng.below(text.len() + 1);
        let piece = PIECES[rng.below(PIECES.len())];
        for (k, c) in piece.chars().enumerate() {
            text.insert(at + k, c);
        }
    }
    text.into_iter().collect()
}

fn jitgate_reading(setting: &Setting) -> Reading {
    let mut lexing = Lexing::DEFAULT;
    if let Some((name, value)) = setting.parameter {
        lexing.postgres_parameter(name.as_bytes(), value.as_bytes());
    }
    Reading::postgres(lexing)
}

/// What the server holds that a statement could change: rows and relations.
async fn state(pg: &PgServer) -> (i64, i64) {
    let su = pg.superuser_client("app").await;
    let row = su
        .query_one(
            "SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM pg_class)",
            &[],
        )
        .await
        .expect("read the server's state");
    (row.get(0), row.get(1))
}

/// Did running `sql` in this reading change anything on the server, or try to?
async fn server_changed(pg: &PgServer, setting: &Setting, sql: &str) -> bool {
    let before = state(pg).await;
    let client = pg.superuser_client("app").await;
    for setup in ["SET statement_timeout = '3s'", "SET lock_timeout = '1s'"]
        .into_iter()
        .chain(setting.set)
        .chain(["BEGIN READ ONLY"])
    {
        client.simple_query(setup).await.expect("session setup");
    }
    let result = client.simple_query(sql).await;
    let mut changed = match &result {
        Err(e) => sqlstate(e).as_deref() == Some("25006"),
        Ok(_) => false,
    };
    if result.is_ok()
        && let Ok(row) = client
            .query_one("SELECT pg_current_xact_id_if_assigned() IS NOT NULL", &[])
            .await
    {
        changed |= row.get::<_, bool>(0);
    }
    let _ = client.simple_query("ROLLBACK").await;
    match client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
            &[],
        )
        .await
    {
        Ok(row) => changed |= row.get::<_, i64>(0) > 0,
        // The statement ended its own session.
        Err(_) => changed = true,
    }
    changed || state(pg).await != before
}

async fn check(pg: &PgServer, statements: &[String]) -> oracle::Outcome {
    let mut outcome = oracle::Outcome::default();
    for sql in statements {
        for setting in &SETTINGS {
            let verdict = classify_for(&jitgate_reading(setting), sql.as_bytes());
            let changed = server_changed(pg, setting, sql).await;
            outcome.record(setting.name, sql, changed, verdict);
        }
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_corpus_statement_that_changes_the_server_classifies_as_a_read() {
    let pg = PgServer::start().await;
    check(&pg, &corpus()).await.report("corpus", 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_fuzzed_statement_that_changes_the_server_classifies_as_a_read() {
    let (cases, seed) = oracle::cases_and_seed(150, 0x5eed_1234_abcd_0001);
    let pg = PgServer::start().await;
    let corpus = corpus();
    let mut rng = oracle::Rng::new(seed);
    let statements: Vec<String> = (0..cases)
        .map(|_| {
            if rng.below(2) == 0 {
                PARTS.compose(&mut rng)
            } else {
                let base = rng.below(corpus.len());
                mutate(&mut rng, &corpus[base])
            }
        })
        .collect();
    check(&pg, &statements)
        .await
        .report(&format!("fuzz (seed {seed})"), 0);
}
