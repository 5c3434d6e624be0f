//! A read grant on PostgreSQL cannot hide a statement from the classifier by
//! changing how the server reads text: `standard_conforming_strings`, client
//! encodings whose characters swallow a backslash, startup parameters.
//!
//! The hidden statement in each attack is a `set_config` with a marker only
//! that test uses, and the server logs every statement it receives
//! (`log_statement = all`): the witness that nothing hidden reached it is
//! the server's own log, not jitgate's word.

mod support;

use std::time::Duration;

use support::*;

const READ: &str = "read";
const WRITE: &str = "write";

/// Under `standard_conforming_strings = off`, `'x\'` does not end the
/// string, so the server runs the `set_config`; read with it on (jitgate's
/// default reading) the `set_config` sits inside a dollar-quoted string.
fn backslash_attack(marker: &str) -> String {
    format!(r"SELECT 'x\' , $$' ; SELECT set_config('application_name', '{marker}', false); -- $$")
}

async fn setup() -> (PgServer, Jitgate) {
    let pg = PgServer::start().await;
    let su = pg.superuser_client("postgres").await;
    for sql in [
        "ALTER SYSTEM SET log_statement = 'all'",
        "SELECT pg_reload_conf()",
    ] {
        su.simple_query(sql).await.expect("log every statement");
    }
    let jg = Jitgate::start(&pg, JitgateOptions::default()).await;
    (pg, jg)
}

/// Alice through jitgate with `options` in her startup packet.
async fn connect_with_options(
    jg: &Jitgate,
    options: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = Login::alice().config(jg.pg_port());
    config.options(options);
    let (client, connection) = config.connect(AnyCertTls::new()).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The statement was refused by jitgate as one it cannot classify.
fn assert_refused_unknown(
    jg: &Jitgate,
    result: Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error>,
    what: &str,
) {
    let err = result.expect_err(&format!("{what} must be refused on a read grant"));
    assert_sqlstate(&err, "25006");
    assert!(
        describe_error(&err).contains("could not classify"),
        "{what}: {}",
        describe_error(&err)
    );
    let refused = jg
        .audit_lines()
        .into_iter()
        .filter(|v| v["event"] == "statement_refused")
        .count();
    assert!(refused > 0, "{what}: no statement_refused record");
}

/// The server never saw the marker: it logs every statement it receives.
async fn assert_server_never_saw(pg: &PgServer, marker: &str) {
    // Let the log catch up with anything already sent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pg.log().contains(marker),
        "the server received the hidden statement `{marker}`:\n{}",
        pg.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_conforming_strings_off_cannot_hide_a_statement() {
    let (pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let client = jg.connect_ok(&Login::alice()).await;

    client
        .simple_query("SET standard_conforming_strings = off")
        .await
        .expect("changing the setting is housekeeping");
    let attack = backslash_attack("pwned-scs-set");
    let result = client.simple_query(&attack).await;
    assert_refused_unknown(
        &jg,
        result,
        "a backslash text with standard_conforming_strings off",
    );
    // Text without a backslash reads the same either way, and still runs.
    let rows = client
        .simple_query("SELECT 'plain', 1")
        .await
        .expect("a plain read");
    assert!(!rows.is_empty());
    assert_server_never_saw(&pg, "pwned-scs-set").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_setting_change_makes_the_next_text_unknown() {
    let (pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let client = jg.connect_ok(&Login::alice()).await;

    // Both queries leave the client before the server answers the first:
    // when jitgate reads the second, the server has not yet said that the
    // setting changed.
    let attack = backslash_attack("pwned-scs-pipelined");
    let (set, hidden) = tokio::join!(
        client.simple_query("SET standard_conforming_strings = off"),
        client.simple_query(&attack),
    );
    set.expect("the SET itself runs");
    assert_refused_unknown(&jg, hidden, "a pipelined backslash text");
    assert_server_never_saw(&pg, "pwned-scs-pipelined").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_conforming_strings_off_from_the_startup_packet_is_followed() {
    let (pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let client = connect_with_options(&jg, "-c standard_conforming_strings=off")
        .await
        .expect("standard_conforming_strings is a harmless startup parameter");
    let result = client
        .simple_query(&backslash_attack("pwned-scs-startup"))
        .await;
    assert_refused_unknown(
        &jg,
        result,
        "a backslash text after a startup -c standard_conforming_strings=off",
    );
    assert_server_never_saw(&pg, "pwned-scs-startup").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_encoding_that_swallows_backslashes_makes_non_ascii_text_unknown() {
    let (pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let client = jg.connect_ok(&Login::alice()).await;

    client
        .simple_query("SET client_encoding = 'SJIS'")
        .await
        .expect("changing the encoding is housekeeping");
    // "ā\" is C4 81 5C in UTF-8, valid to jitgate; in SJIS 81 5C is one
    // character, so the server sees E'ﾄ―' end at the next quote and runs
    // the set_config.
    // The hidden statement quotes with dollars: to jitgate it is inside
    // the E'' string.
    let attack =
        "SELECT E'ā\\' ; SELECT set_config($a$application_name$a$, $b$pwned-sjis$b$, false); -- '";
    let result = client.simple_query(attack).await;
    assert_refused_unknown(&jg, result, "non-ASCII text in SJIS");
    client
        .simple_query("SELECT 'ascii only'")
        .await
        .expect("ASCII text reads the same in every encoding");
    assert_server_never_saw(&pg, "pwned-sjis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_parameter_gets_the_verdict_of_its_set() {
    let (pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    for options in [
        "-c role=postgres",
        "-c default_transaction_read_only=off",
        "-e",
    ] {
        let err = match connect_with_options(&jg, options).await {
            Ok(_) => panic!("startup options `{options}` must be refused on a read grant"),
            Err(e) => e,
        };
        assert_sqlstate(&err, "25006");
        assert!(
            describe_error(&err).contains("startup parameter \"options\""),
            "{options}: {}",
            describe_error(&err)
        );
    }
    // Never logged in upstream.
    assert!(pg.backends_of("jg_read").await.is_empty());
    // Harmless options still pass, and reach the server.
    let client = connect_with_options(&jg, "-c statement_timeout=4321")
        .await
        .expect("harmless options");
    let row = client
        .query_one(
            "SELECT current_setting('statement_timeout'), current_user",
            &[],
        )
        .await
        .expect("read the settings");
    assert_eq!(row.get::<_, String>(0), "4321ms");
    assert_eq!(row.get::<_, String>(1), "jg_read");
}

/// On a write level the statement runs (the grant allows writes), and the
/// audit record must say what the server ran: not a read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_write_on_a_write_level_is_not_audited_as_a_read() {
    let (pg, jg) = setup().await;
    jg.grant("bob", PG_TARGET, WRITE, "2m").await;
    let client = jg.connect_ok(&Login::new("bob", BOB_SECRET)).await;
    let attack = r"SELECT 'x\' , $$' ; DELETE FROM items WHERE id = 1; -- $$";
    let (set, hidden) = tokio::join!(
        client.simple_query("SET standard_conforming_strings = off"),
        client.simple_query(attack),
    );
    set.expect("SET");
    hidden.expect("the write level runs it");
    let su = pg.superuser_client("app").await;
    let left: i64 = su
        .query_one("SELECT count(*) FROM items WHERE id = 1", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "the server ran the hidden DELETE");
    let record = jg
        .wait_for_audit("the attack's statement record", |v| {
            v["event"] == "statement" && v["statement"].as_str() == Some(attack)
        })
        .await;
    assert_eq!(record["kind"], "unknown", "{record}");
}

/// Text in another client encoding is not UTF-8: jitgate cannot classify it
/// (a read level refuses it), and the audit record keeps its exact bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_that_is_not_utf8_is_audited_byte_for_byte() {
    use base64::Engine;
    let (_pg, jg) = setup().await;
    jg.grant("bob", PG_TARGET, WRITE, "2m").await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let statement: &[u8] = b"SELECT 'caf\xe9' AS latin1";
    let file = jg.dir().join("latin1.sql");
    let mut script = b"\\encoding LATIN1\n".to_vec();
    script.extend_from_slice(statement);
    script.extend_from_slice(b";\n");
    std::fs::write(&file, &script).expect("write the script");
    let path = file.to_str().expect("a UTF-8 path");

    let bob = jg
        .psql_as(&Login::new("bob", BOB_SECRET), &["-f", path], None)
        .await;
    bob.assert_ok(&jg);
    let mut sent = statement.to_vec();
    sent.push(b';');
    let exact = base64::engine::general_purpose::STANDARD.encode(&sent);
    let record = jg
        .wait_for_audit("the LATIN1 statement", |v| {
            v["event"] == "statement" && v["statement_base64"] == exact.as_str()
        })
        .await;
    assert_eq!(record["kind"], "unknown", "{record}");

    let alice = jg.psql_as(&Login::alice(), &["-f", path], None).await;
    alice.assert_failed();
    assert!(
        alice.stderr.contains("could not classify"),
        "{}",
        alice.stderr
    );
    jg.wait_for_audit("the refused LATIN1 statement", |v| {
        v["event"] == "statement_refused" && v["statement_base64"] == exact.as_str()
    })
    .await;
}

/// Drivers send BEGIN in the same batch as the first statement: a BEGIN
/// cannot change how the server reads text, so the statement behind it is
/// classified as usual, non-ASCII text and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_begin_does_not_make_the_next_text_unknown() {
    let (_pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let client = jg.connect_ok(&Login::alice()).await;
    let (begin, read) = tokio::join!(
        client.simple_query("BEGIN READ ONLY"),
        client.simple_query("SELECT count(*) FROM items WHERE name <> 'café'"),
    );
    begin.expect("BEGIN");
    read.expect("a non-ASCII read pipelined behind BEGIN");
    client.simple_query("COMMIT").await.expect("COMMIT");
}
