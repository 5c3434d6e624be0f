//! MySQL/MariaDB through jitgate, end to end.
//!
//! Each test starts its own throwaway MariaDB and its own jitgate (see
//! `support`), drives them with the real `mariadb` CLI, mysql_async, or
//! raw bytes where no real client would misbehave, and takes the server's
//! own processlist as the witness.

mod support;

use std::time::{Duration, SystemTime};

use mysql_async::prelude::*;
use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn setup_with(opts: JitgateOptions) -> (MariaDb, Jitgate) {
    let db = MariaDb::start();
    let jg = Jitgate::start(&db, opts).await;
    (db, jg)
}

async fn setup() -> (MariaDb, Jitgate) {
    setup_with(JitgateOptions::default()).await
}

fn server_error(e: &mysql_async::Error) -> Option<(u16, String)> {
    match e {
        mysql_async::Error::Server(s) => Some((s.code, s.message.clone())),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_cli_over_tls_reads_through_a_grant_and_is_audited() {
    let (db, jg) = setup().await;
    jg.grant("alice", MYSQL_TARGET, "write", "10m").await;
    for round in 0..2 {
        // The first login is caching_sha2 full authentication over TLS; the
        // second uses the fast path from the cache.
        let run = jg
            .mariadb(
                ALICE_SECRET,
                true,
                "SELECT name FROM items ORDER BY id; SELECT current_user(), database()",
            )
            .await;
        assert!(
            run.status.success(),
            "round {round}: {run:?}\n--- jitgate log\n{}",
            jg.log()
        );
        assert_eq!(
            run.stdout, "apple\nbanana\ncherry\njg_write@%\tapp\n",
            "round {round}"
        );
        jg.assert_no_secret_in("mariadb output", &format!("{}{}", run.stdout, run.stderr));
    }
    let stmt = jg
        .wait_for_audit("the SELECT", |v| {
            v["event"] == "statement" && v["statement"] == "SELECT name FROM items ORDER BY id"
        })
        .await;
    assert_eq!(stmt["kind"], "read");
    assert_eq!(stmt["level"], "write");
    let seq = stmt["seq"].clone();
    let session = stmt["session"].clone();
    let end = jg
        .wait_for_audit("its statement_end", |v| {
            v["event"] == "statement_end" && v["session"] == session && v["seq"] == seq
        })
        .await;
    assert_eq!(end["outcome"], "RESULT_SET");
    assert_eq!(end["rows"], 3);
    jg.wait_for_audit("the session end", |v| {
        v["event"] == "session_end" && v["reason"] == "client_closed"
    })
    .await;
    jg.assert_no_secret_in("the audit log", &jg.audit_text());
    // Both sessions logged out upstream as well.
    for _ in 0..40 {
        if db.threads_of("jg_write").is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "upstream threads left behind: {:?}",
        db.threads_of("jg_write")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prepared_statements_are_audited_as_sql() {
    let (_db, jg) = setup().await;
    jg.grant("alice", MYSQL_TARGET, "write", "10m").await;
    let mut conn = within(
        Duration::from_secs(20),
        "mysql_async login",
        mysql_async::Conn::new(jg.async_opts(ALICE_SECRET)),
    )
    .await
    .unwrap_or_else(|e| panic!("mysql_async login: {e}\n--- jitgate log\n{}", jg.log()));
    let stmt = conn
        .prep("SELECT name FROM items WHERE id = ?")
        .await
        .expect("prepare");
    let name: Option<String> = conn.exec_first(&stmt, (2,)).await.expect("execute");
    assert_eq!(name.as_deref(), Some("banana"));
    conn.exec_drop("INSERT INTO items (name) VALUES (?)", ("durian",))
        .await
        .expect("insert");
    // Multi-statement text with several result sets.
    let mut result = conn
        .query_iter("SELECT 1; SELECT 2")
        .await
        .expect("multi-statement query");
    let first: Vec<u8> = result.collect().await.expect("first result");
    let second: Vec<u8> = result.collect().await.expect("second result");
    drop(result);
    assert_eq!((first, second), (vec![1], vec![2]));
    conn.disconnect().await.expect("disconnect");

    let exec = jg
        .wait_for_audit("the prepared SELECT", |v| {
            v["event"] == "statement" && v["statement"] == "SELECT name FROM items WHERE id = ?"
        })
        .await;
    assert_eq!(exec["kind"], "read");
    let insert = jg
        .wait_for_audit("the prepared INSERT", |v| {
            v["event"] == "statement" && v["statement"] == "INSERT INTO items (name) VALUES (?)"
        })
        .await;
    assert_eq!(insert["kind"], "write");
    let seq = insert["seq"].clone();
    let end = jg
        .wait_for_audit("the INSERT's end", |v| {
            v["event"] == "statement_end" && v["seq"] == seq && v["session"] == insert["session"]
        })
        .await;
    assert_eq!(end["outcome"], "OK");
    assert_eq!(end["rows"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_grant_wrong_secret_and_unknown_target_get_clear_errors() {
    let (db, jg) = setup().await;
    let no_grant = jg.mariadb(ALICE_SECRET, true, "SELECT 1").await;
    assert!(!no_grant.status.success());
    assert!(
        no_grant.stderr.contains("ERROR 1044") && no_grant.stderr.contains("no active grant"),
        "{no_grant:?}"
    );
    assert!(no_grant.stderr.contains("jitgate request"), "{no_grant:?}");

    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let wrong = jg.mariadb("not-the-secret", true, "SELECT 1").await;
    assert!(
        wrong.stderr.contains("ERROR 1045")
            && wrong.stderr.contains("Access denied for user 'alice'"),
        "{wrong:?}"
    );
    let mut unknown = jg.mariadb_command(ALICE_SECRET, true);
    unknown.args(["no-such-target", "-e", "SELECT 1"]);
    let out = unknown.output().await.expect("run mariadb");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ERROR 1049"), "{stderr}");
    // Nothing reached the server for any of them.
    assert!(db.threads_of("jg_read").is_empty());
    jg.wait_for_audit("the failed login", |v| {
        v["event"] == "login_failed" && v["reason"] == "bad_secret"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_client_is_refused_when_tls_is_required() {
    let (_db, jg) = setup().await;
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let run = jg.mariadb(ALICE_SECRET, false, "SELECT 1").await;
    assert!(!run.status.success());
    assert!(run.stderr.contains("ERROR 3159"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn read_level_refuses_update_and_the_session_continues() {
    let (db, jg) = setup().await;
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let mut conn = mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
        .await
        .unwrap_or_else(|e| panic!("login: {e}\n{}", jg.log()));
    let err = conn
        .query_drop("UPDATE items SET name = 'x' WHERE id = 1")
        .await
        .expect_err("UPDATE on a read level");
    let (code, message) = server_error(&err).unwrap_or_else(|| panic!("not a server error: {err}"));
    assert_eq!(code, 1290, "{message}");
    assert!(message.contains("read-only grant"), "{message}");
    // The same connection still works.
    let n: Option<i64> = conn
        .query_first("SELECT count(*) FROM items")
        .await
        .expect("SELECT after the refusal");
    assert_eq!(n, Some(3));
    // Prepared writes are refused at PREPARE.
    let err = conn
        .prep("DELETE FROM items")
        .await
        .expect_err("prepared DELETE on a read level");
    assert_eq!(server_error(&err).map(|e| e.0), Some(1290));
    // The server side is read-only too (SET in the session, SELECT-only account).
    let ro: Option<i64> = conn
        .query_first("SELECT @@session.tx_read_only")
        .await
        .expect("read the read-only flag");
    assert_eq!(ro, Some(1));
    conn.disconnect().await.expect("disconnect");
    assert_eq!(
        db.root_query("SELECT name FROM app.items WHERE id = 1")
            .trim(),
        "apple"
    );
    jg.wait_for_audit("the refusal", |v| {
        v["event"] == "statement_refused"
            && v["statement"] == "UPDATE items SET name = 'x' WHERE id = 1"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_grant_kills_the_running_query_and_its_thread() {
    let (db, jg) = setup().await;
    let grant = jg.grant("alice", MYSQL_TARGET, "write", "4s").await;
    let expires_at = humantime::parse_rfc3339(grant["expires_at"].as_str().expect("expires_at"))
        .expect("expires_at is RFC 3339");
    let mut cmd = jg.mariadb_command(ALICE_SECRET, true);
    cmd.arg(MYSQL_TARGET).args(["-e", "SELECT SLEEP(60)"]);
    let client = cmd.output();
    let client = tokio::spawn(client);
    // The query is running on the server.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !db
        .threads_of("jg_write")
        .iter()
        .any(|t| t.contains("SELECT SLEEP(60)"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the query never showed up in the processlist\n{}",
            jg.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // After the deadline, the thread must be gone within a second.
    let gone_at = loop {
        if db.threads_of("jg_write").is_empty() {
            break SystemTime::now();
        }
        assert!(
            SystemTime::now() < expires_at + Duration::from_secs(5),
            "thread still there 5 s after expiry: {:?}\n{}",
            db.threads_of("jg_write"),
            jg.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lag = gone_at.duration_since(expires_at).unwrap_or_default();
    assert!(
        lag < Duration::from_secs(1),
        "thread gone {lag:?} after expiry"
    );
    let out = within(Duration::from_secs(5), "the client to exit", client)
        .await
        .expect("join")
        .expect("mariadb");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("1927") && stderr.contains("expired"),
        "{stderr}"
    );
    jg.wait_for_audit("the session end", |v: &Value| {
        v["event"] == "session_end" && v["reason"] == "grant_expired"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_ends_an_idle_session() {
    let (db, jg) = setup().await;
    let grant = jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let mut conn = mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
        .await
        .expect("login");
    conn.query_drop("SELECT 1").await.expect("query");
    assert_eq!(db.threads_of("jg_read").len(), 1);
    jg.revoke(grant["id"].as_str().expect("grant id")).await;
    jg.wait_for_audit("the session end", |v| {
        v["event"] == "session_end" && v["reason"] == "grant_revoked"
    })
    .await;
    let err = conn.query_drop("SELECT 1").await.expect_err("after revoke");
    assert!(!err.to_string().is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(db.threads_of("jg_read").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_of_16_mib_and_more_pass_through() {
    let (_db, jg) = setup().await;
    jg.grant("alice", MYSQL_TARGET, "write", "10m").await;
    let mut conn = mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
        .await
        .unwrap_or_else(|e| panic!("login: {e}\n{}", jg.log()));
    // Larger than one packet's 0xFFFFFF bytes, both up and down.
    let n = (16 << 20) + 1000;
    let sql = format!("SELECT REPEAT('x', {n}), LENGTH('{}')", "y".repeat(n));
    let (big, len): (Vec<u8>, i64) = conn
        .query_first(sql)
        .await
        .unwrap_or_else(|e| panic!("big query: {e}\n{}", jg.log()))
        .expect("a row");
    assert_eq!((big.len(), len), (n, n as i64));
    let one: Option<i64> = conn.query_first("SELECT 1").await.expect("after");
    assert_eq!(one, Some(1));
}

// ---- bad input --------------------------------------------------------------

/// Read one packet (payload) from a raw socket, with a time limit.
async fn read_packet(s: &mut TcpStream) -> Option<Vec<u8>> {
    read_mysql_packet(s, Duration::from_secs(10))
        .await
        .map(|(_, payload)| payload)
}

/// Connect, read the greeting, send `bytes`, and return the ERR code the
/// proxy answers with; the proxy must then close the connection.
async fn answer_to(port: u16, bytes: &[u8]) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let greeting = read_packet(&mut s).await.expect("greeting");
    assert_eq!(greeting[0], 10, "protocol 10 greeting");
    s.write_all(bytes).await.expect("send");
    let answer = read_packet(&mut s).await.expect("an answer");
    assert_eq!(answer[0], 0xff, "an ERR packet, got {answer:?}");
    let code = u16::from_le_bytes([answer[1], answer[2]]);
    let mut rest = Vec::new();
    within(
        Duration::from_secs(5),
        "the proxy to hang up",
        s.read_to_end(&mut rest),
    )
    .await
    .ok();
    code
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_handshakes_and_oversize_packets_get_errors_not_crashes() {
    let (_db, mut jg) = setup_with(JitgateOptions {
        tls_require: false,
        max_message_bytes: Some(1 << 20),
        ..JitgateOptions::default()
    })
    .await;
    jg.grant("alice", MYSQL_TARGET, "write", "10m").await;
    let port = jg.mysql_port();

    // Garbage where the HandshakeResponse belongs.
    let code = answer_to(port, &mysql_packet(1, b"\x01\x02\x03")).await;
    assert_eq!(code, 1043);
    // A client without CLIENT_PROTOCOL_41.
    let mut old = vec![0x00, 0x80, 0, 0]; // SECURE_CONNECTION only
    old.extend_from_slice(&[0, 0, 0, 1, 33]);
    old.extend_from_slice(&[0; 23]);
    old.extend_from_slice(b"alice\0\0");
    let code = answer_to(port, &mysql_packet(1, &old)).await;
    assert_eq!(code, 1043);
    // A login packet far larger than any login needs: refused before it is read.
    let mut huge = vec![0xff, 0xff, 0xff, 1];
    huge.extend_from_slice(&[0; 1024]);
    let code = answer_to(port, &huge).await;
    assert_eq!(code, 1043);
    // A user name without its terminator, a lying auth-data length.
    let mut lying = vec![0x00, 0xa2, 0x3a, 0x00]; // PROTOCOL_41 | SECURE | LENENC | PLUGIN_AUTH...
    lying.extend_from_slice(&[0, 0, 0, 1, 33]);
    lying.extend_from_slice(&[0; 23]);
    lying.extend_from_slice(b"alice\0\xfe\xff\xff\xff\xff\xff\xff\xff\x7f");
    let code = answer_to(port, &mysql_packet(1, &lying)).await;
    assert_eq!(code, 1043);
    jg.assert_alive().await;

    // After login: a command larger than limits.max_message_bytes.
    let mut conn = mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
        .await
        .unwrap_or_else(|e| panic!("login: {e}\n{}", jg.log()));
    let big = format!("SELECT '{}'", "x".repeat(2 << 20));
    let err = conn.query_drop(big).await.expect_err("oversize query");
    assert_eq!(server_error(&err).map(|e| e.0), Some(1153), "{err}");
    drop(conn);
    jg.assert_alive().await;

    // And the proxy keeps serving.
    let run = jg.mariadb(ALICE_SECRET, true, "SELECT 42").await;
    assert!(
        run.status.success() && run.stdout.trim() == "42",
        "{run:?}\n{}",
        jg.log()
    );
}

// ---- KILL and Ctrl-C ----------------------------------------------------------

/// Is some thread of `user` running `SELECT SLEEP(60)` on the server?
fn sleeping(db: &MariaDb, user: &str) -> bool {
    db.threads_of(user)
        .iter()
        .any(|t| t.contains("SELECT SLEEP(60)"))
}

/// Wait (up to 10 s) until a `SELECT SLEEP(60)` of `user` runs on the server.
async fn wait_for_sleep(db: &MariaDb, user: &str, jg: &Jitgate) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sleeping(db, user) {
        assert!(
            std::time::Instant::now() < deadline,
            "the query never showed up in the processlist\n{}",
            jg.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn login_as(jg: &Jitgate, user: &str, secret: &str) -> mysql_async::Conn {
    within(
        Duration::from_secs(20),
        "mysql_async login",
        mysql_async::Conn::new(jg.async_opts_as(user, secret)),
    )
    .await
    .unwrap_or_else(|e| panic!("login as {user}: {e}\n--- jitgate log\n{}", jg.log()))
}

/// Start `SELECT SLEEP(60)` on `conn` in the background.
fn start_sleep(
    mut conn: mysql_async::Conn,
) -> tokio::task::JoinHandle<(mysql_async::Conn, mysql_async::Result<Option<i64>>)> {
    tokio::spawn(async move {
        let r = conn.query_first("SELECT SLEEP(60)").await;
        (conn, r)
    })
}

/// The query was interrupted: SLEEP returned 1, or the server said 1317.
fn assert_interrupted(r: &mysql_async::Result<Option<i64>>) {
    match r {
        Ok(Some(1)) => {}
        Err(e) if server_error(e).map(|e| e.0) == Some(1317) => {}
        other => panic!("expected an interrupted SLEEP, got {other:?}"),
    }
}

async fn expect_server_error(conn: &mut mysql_async::Conn, sql: &str) -> (u16, String) {
    let err = conn
        .query_drop(sql)
        .await
        .expect_err(&format!("`{sql}` must fail"));
    server_error(&err).unwrap_or_else(|| panic!("`{sql}`: not a server error: {err}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_in_the_mariadb_cli_cancels_the_running_query() {
    let (db, jg) = setup().await;
    // A read level: a read user must be able to stop their own query.
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let mut cmd = jg.mariadb_command(ALICE_SECRET, true);
    cmd.arg(MYSQL_TARGET)
        .args(["-e", "SELECT SLEEP(60)"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("run mariadb");
    let pid = child.id().expect("the CLI's pid");
    wait_for_sleep(&db, "jg_read", &jg).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = std::time::Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let out = within(
        Duration::from_secs(10),
        "the CLI to finish after Ctrl-C",
        child.wait_with_output(),
    )
    .await
    .expect("mariadb");
    let took = sent.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("Ctrl-C -- query killed"),
        "the CLI could not send its KILL ({took:?}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- jitgate log\n{}",
        jg.log()
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // The CLI went on normally: SLEEP reports the interruption (1), or the
    // server's 1317.
    assert!(
        stdout.lines().any(|l| l.trim() == "1") || stderr.contains("1317"),
        "--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(!sleeping(&db, "jg_read"), "{:?}", db.threads_of("jg_read"));
    // Audited where it was sent: a connection without a target, kind session.
    let kill = jg
        .wait_for_audit("the CLI's KILL QUERY", |v| {
            v["event"] == "statement"
                && v["statement"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("KILL QUERY "))
        })
        .await;
    assert_eq!(kill["kind"], "session");
    assert_eq!(kill["identity"], "alice");
    assert_eq!(kill["level"], "read");
    jg.wait_for_audit("the KILL's outcome", |v| {
        v["event"] == "statement_end" && v["session"] == kill["session"] && v["outcome"] == "OK"
    })
    .await;
    jg.wait_for_audit("the target-less login", |v| {
        v["event"] == "login_ok" && v["reason"] == "kill_only" && v["identity"] == "alice"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_query_and_kill_connection_from_another_connection_of_the_same_identity() {
    let (db, jg) = setup().await;
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let a = login_as(&jg, "alice", ALICE_SECRET).await;
    let a_id = a.id();
    let mut b = login_as(&jg, "alice", ALICE_SECRET).await;
    let running = start_sleep(a);
    wait_for_sleep(&db, "jg_read", &jg).await;

    let sent = std::time::Instant::now();
    b.query_drop(format!("KILL QUERY {a_id}"))
        .await
        .unwrap_or_else(|e| panic!("KILL QUERY {a_id}: {e}\n{}", jg.log()));
    let (mut a, r) = within(Duration::from_secs(5), "the interrupted query", running)
        .await
        .expect("join");
    let took = sent.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_interrupted(&r);
    assert!(!sleeping(&db, "jg_read"), "{:?}", db.threads_of("jg_read"));
    // A's session goes on.
    let one: Option<i64> = a.query_first("SELECT 1").await.expect("A after the kill");
    assert_eq!(one, Some(1));

    let stmt = jg
        .wait_for_audit("the KILL QUERY", |v| {
            v["event"] == "statement" && v["statement"] == format!("KILL QUERY {a_id}")
        })
        .await;
    assert_eq!(stmt["kind"], "session");
    jg.wait_for_audit("the KILL QUERY's outcome", |v| {
        v["event"] == "statement_end" && v["session"] == stmt["session"] && v["seq"] == stmt["seq"]
    })
    .await;

    // KILL CONNECTION ends A's session like an operator's kill.
    b.query_drop(format!("kill connection {a_id};"))
        .await
        .expect("KILL CONNECTION");
    let end = jg
        .wait_for_audit("the end of A's session", |v| {
            v["event"] == "session_end" && v["reason"] == "killed"
        })
        .await;
    assert!(
        end["detail"]
            .as_str()
            .is_some_and(|d| d.contains("KILL CONNECTION")),
        "{end}"
    );
    let err = a
        .query_drop("SELECT 1")
        .await
        .expect_err("A after KILL CONNECTION");
    assert!(!err.to_string().is_empty());
    // Only B's upstream connection is left, and B goes on.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while db.threads_of("jg_read").len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            db.threads_of("jg_read")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let one: Option<i64> = b.query_first("SELECT 1").await.expect("B goes on");
    assert_eq!(one, Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_of_another_identitys_connection_is_unknown_thread() {
    let (db, jg) = setup().await;
    // Same level, so both sessions use the same upstream account.
    jg.grant("alice", MYSQL_TARGET, "write", "10m").await;
    jg.grant("bob", MYSQL_TARGET, "write", "10m").await;
    let a = login_as(&jg, "alice", ALICE_SECRET).await;
    let a_id = a.id();
    let mut bob = login_as(&jg, "bob", BOB_SECRET).await;
    let running = start_sleep(a);
    wait_for_sleep(&db, "jg_write", &jg).await;

    for sql in [
        format!("KILL QUERY {a_id}"),
        format!("KILL {a_id}"),
        format!("KILL CONNECTION {a_id}"),
    ] {
        let (code, message) = expect_server_error(&mut bob, &sql).await;
        assert_eq!(
            (code, message.as_str()),
            (1094, format!("Unknown thread id: {a_id}").as_str()),
            "{sql}"
        );
    }
    // An id nobody has looks the same.
    let (code, _) = expect_server_error(&mut bob, "KILL QUERY 2147483649").await;
    assert_eq!(code, 1094);
    // bob goes on; alice's query still runs, her session still lives.
    let one: Option<i64> = bob.query_first("SELECT 1").await.expect("bob goes on");
    assert_eq!(one, Some(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sleeping(&db, "jg_write"), "{:?}", db.threads_of("jg_write"));
    assert!(!running.is_finished());
    let refused = jg
        .wait_for_audit("bob's refused KILL", |v| {
            v["event"] == "statement_refused"
                && v["identity"] == "bob"
                && v["statement"] == format!("KILL QUERY {a_id}")
        })
        .await;
    assert_eq!(refused["outcome"], "1094");
    running.abort();
}

/// The version string and default collation of a server's greeting, read
/// off the wire without logging in.
async fn greeting_of(port: u16) -> (String, u8) {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let payload = read_packet(&mut tcp).await.expect("greeting");
    assert_eq!(payload[0], 10, "protocol 10");
    let end = 1 + payload[1..].iter().position(|&b| b == 0).expect("NUL");
    let version = String::from_utf8_lossy(&payload[1..end]).into_owned();
    // version NUL, id (4), nonce (8), filler (1), capabilities (2), collation
    let collation = payload[end + 1 + 4 + 8 + 1 + 2];
    (version, collation)
}

/// Clients are greeted with the upstream's own version and collation (read
/// from its greeting at start), and a MariaDB-aware driver sees MariaDB;
/// `listen.mysql_server_version` pins the version instead.
#[tokio::test(flavor = "multi_thread")]
async fn the_greeting_announces_the_upstreams_version() {
    let (db, jg) = setup().await;
    let upstream = greeting_of(db.port()).await;
    assert!(upstream.0.contains("MariaDB"), "{upstream:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let announced = greeting_of(jg.mysql_port()).await;
        if announced == upstream {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "jitgate announces {announced:?}, the upstream {upstream:?}\n{}",
            jg.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let mut conn = mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
        .await
        .unwrap_or_else(|e| panic!("login: {e}\n{}", jg.log()));
    let version: Option<String> = conn.query_first("SELECT VERSION()").await.expect("version");
    let version = version.expect("a row");
    let (major, minor, patch) = conn.server_version();
    assert!(
        version.starts_with(&format!("{major}.{minor}.{patch}")),
        "the driver sees {major}.{minor}.{patch}, the server says {version}"
    );
    conn.disconnect().await.expect("disconnect");
    drop(jg);

    let jg = Jitgate::start(
        &db,
        JitgateOptions {
            mysql_server_version: Some("10.6.0-MariaDB-pinned".to_owned()),
            ..JitgateOptions::default()
        },
    )
    .await;
    assert_eq!(
        greeting_of(jg.mysql_port()).await.0,
        "10.6.0-MariaDB-pinned"
    );
}

/// Statements MariaDB accepts that sqlparser does not parse still get their
/// kind: a read level runs `SET @\`x.y\``, `DO`, `HELP` and `CHECKSUM
/// TABLE`, and refuses `CREATE PROCEDURE …` as the schema change it is.
#[tokio::test(flavor = "multi_thread")]
async fn mariadb_statements_sqlparser_does_not_parse_get_their_kind() {
    let (db, jg) = setup().await;
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let mut conn = mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
        .await
        .unwrap_or_else(|e| panic!("login: {e}\n{}", jg.log()));
    conn.query_drop("SET @`x.y` = 41")
        .await
        .expect("a quoted user variable");
    let v: Option<i64> = conn
        .query_first("SELECT @`x.y` + 1")
        .await
        .expect("read it");
    assert_eq!(v, Some(42));
    for sql in ["DO 1 + 1", "HELP 'contents'", "CHECKSUM TABLE items"] {
        conn.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("`{sql}` on a read grant: {e}"));
    }
    let err = conn
        .query_drop("CREATE PROCEDURE p() BEGIN SELECT 1; END")
        .await
        .expect_err("a schema change");
    let (code, message) = server_error(&err).unwrap_or_else(|| panic!("{err}"));
    assert_eq!(code, 1290, "{message}");
    assert!(message.contains("can change data or schema"), "{message}");
    assert_eq!(
        db.root_query(
            "SELECT count(*) FROM information_schema.routines WHERE routine_schema = 'app'"
        )
        .trim(),
        "0"
    );
}

/// A long generated read (a 300 KiB IN list) is classified off the session
/// threads and runs on a read grant, as a query and as a prepared statement.
#[tokio::test(flavor = "multi_thread")]
async fn long_statements_are_classified_and_run_on_a_read_grant() {
    let (_db, jg) = setup().await;
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let mut conn = mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
        .await
        .unwrap_or_else(|e| panic!("login: {e}\n{}", jg.log()));
    let ids: Vec<String> = (0..50_000).map(|i| i.to_string()).collect();
    let long = format!(
        "SELECT count(*) FROM items WHERE id IN ({})",
        ids.join(", ")
    );
    assert!(long.len() > 300_000);
    let n: Option<i64> = conn
        .query_first(long.as_str())
        .await
        .unwrap_or_else(|e| panic!("the long read: {e}"));
    assert_eq!(n, Some(3));
    let n: Option<i64> = conn
        .exec_first(long.as_str(), ())
        .await
        .unwrap_or_else(|e| panic!("the long read, prepared: {e}"));
    assert_eq!(n, Some(3));
    // A long text the USE and sql_mode follow-ups would have to parse on
    // the session thread is refused unparsed, and the proxy lives on.
    let chain = "+1".repeat(100_000);
    for sql in [
        format!("USE app; SELECT 1{chain}"),
        format!("SET sql_mode = 'ANSI'; SELECT 1{chain}"),
    ] {
        let _ = conn.query_drop(sql).await;
    }
    let mut again = mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
        .await
        .unwrap_or_else(|e| panic!("jitgate after the long texts: {e}\n{}", jg.log()));
    let one: Option<i64> = again.query_first("SELECT 1").await.expect("a new session");
    assert_eq!(one, Some(1));
}

/// A connection that names no target (allowed only while the identity has
/// a live session, for the CLI's Ctrl-C) can run nothing but `KILL`; what
/// else it sends is refused and audited.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_without_a_target_audits_what_it_refuses() {
    let (_db, jg) = setup().await;
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let _live = mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
        .await
        .unwrap_or_else(|e| panic!("login: {e}\n{}", jg.log()));
    let out = jg
        .mariadb_command(ALICE_SECRET, true)
        .args(["-e", "SELECT 'no target'"])
        .output()
        .await
        .expect("run mariadb");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("ERROR 1049"), "{stderr}");
    let refused = jg
        .wait_for_audit("the refusal", |v| {
            v["event"] == "statement_refused" && v["statement"] == "SELECT 'no target'"
        })
        .await;
    assert_eq!(refused["reason"], "no_target", "{refused}");
    assert_eq!(refused["identity"], "alice", "{refused}");
}

/// `<target>@<level>` as the database picks the level among the grants the
/// identity holds; the session lands in the target's own database.
#[tokio::test(flavor = "multi_thread")]
async fn the_client_chooses_the_level_after_the_target() {
    let (_db, jg) = setup().await;
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    jg.grant("alice", MYSQL_TARGET, "write", "10m").await;
    for (database, user) in [
        (format!("{MYSQL_TARGET}@read"), "jg_read"),
        (format!("{MYSQL_TARGET}@write"), "jg_write"),
        (MYSQL_TARGET.to_owned(), "jg_write"),
    ] {
        let opts = mysql_async::OptsBuilder::from_opts(jg.async_opts(ALICE_SECRET))
            .db_name(Some(database.clone()));
        let mut conn = mysql_async::Conn::new(opts)
            .await
            .unwrap_or_else(|e| panic!("{database}: {e}\n{}", jg.log()));
        let row: Option<(String, String)> = conn
            .query_first("SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1), DATABASE()")
            .await
            .expect("who and where");
        assert_eq!(row, Some((user.to_owned(), "app".to_owned())), "{database}");
        conn.disconnect().await.expect("disconnect");
    }
    let opts = mysql_async::OptsBuilder::from_opts(jg.async_opts(ALICE_SECRET))
        .db_name(Some(format!("{MYSQL_TARGET}@admin")));
    let err = mysql_async::Conn::new(opts)
        .await
        .expect_err("no admin grant");
    let (code, message) = server_error(&err).unwrap_or_else(|| panic!("{err}"));
    assert_eq!(code, 1044, "{message}");
    assert!(message.contains("at level admin"), "{message}");
}

/// `KILL QUERY <id>` with the id the server shows (`CONNECTION_ID()`,
/// `SHOW PROCESSLIST`) stops the same identity's query on the same target;
/// another identity using it gets the server's "Unknown thread id".
#[tokio::test(flavor = "multi_thread")]
async fn kill_with_the_servers_thread_id_stops_the_same_identitys_query() {
    let (db, jg) = setup().await;
    jg.grant("alice", MYSQL_TARGET, "write", "10m").await;
    jg.grant("bob", MYSQL_TARGET, "write", "10m").await;
    let mut a = login_as(&jg, "alice", ALICE_SECRET).await;
    let a_id = a.id();
    let thread: u32 = a
        .query_first("SELECT CONNECTION_ID()")
        .await
        .expect("A's thread id")
        .expect("a row");
    assert_ne!(thread, a_id, "the greeting's id is jitgate's");
    let mut b = login_as(&jg, "alice", ALICE_SECRET).await;
    let mut bob = login_as(&jg, "bob", BOB_SECRET).await;
    let running = start_sleep(a);
    wait_for_sleep(&db, "jg_write", &jg).await;
    let (code, message) = expect_server_error(&mut bob, &format!("KILL QUERY {thread}")).await;
    assert_eq!(
        (code, message.as_str()),
        (1094, format!("Unknown thread id: {thread}").as_str())
    );
    assert!(sleeping(&db, "jg_write"), "bob's KILL must do nothing");
    b.query_drop(format!("KILL QUERY {thread}"))
        .await
        .unwrap_or_else(|e| panic!("KILL QUERY {thread}: {e}\n{}", jg.log()));
    let (mut a, r) = within(Duration::from_secs(5), "the interrupted query", running)
        .await
        .expect("join");
    assert_interrupted(&r);
    assert!(
        !sleeping(&db, "jg_write"),
        "{:?}",
        db.threads_of("jg_write")
    );
    let one: Option<i64> = a.query_first("SELECT 1").await.expect("A goes on");
    assert_eq!(one, Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_in_any_other_form_is_refused() {
    let (db, jg) = setup().await;
    // A write level: without the guard, these would be forwarded.
    jg.grant("alice", MYSQL_TARGET, "write", "10m").await;
    let mut a = login_as(&jg, "alice", ALICE_SECRET).await;
    let a_id = a.id();
    let thread: Option<u32> = a
        .query_first("SELECT CONNECTION_ID()")
        .await
        .expect("A's upstream thread id");
    let thread = thread.expect("a thread id");
    assert_ne!(thread, a_id, "clients see jitgate's id, not the upstream's");
    let mut b = login_as(&jg, "alice", ALICE_SECRET).await;
    let running = start_sleep(a);
    wait_for_sleep(&db, "jg_write", &jg).await;

    // Any other form of KILL than the exact one is refused outright,
    // whatever id it names.
    for sql in [
        format!("KILL QUERY ID {thread}"),
        format!("KILL HARD QUERY {thread}"),
        format!("KILL QUERY {thread}+0"),
        format!("SELECT 1; KILL QUERY {thread}"),
        format!("SELECT 1; KILL QUERY {a_id}"),
        format!("/*!KILL QUERY {thread}*/"),
        "KILL USER jg_write".to_owned(),
    ] {
        let (code, message) = expect_server_error(&mut b, &sql).await;
        assert_eq!(code, 1235, "{sql}: {message}");
        assert!(
            message.contains("KILL [QUERY | CONNECTION] <id>"),
            "{message}"
        );
    }
    let err = b
        .exec_drop("KILL QUERY ?", (thread,))
        .await
        .expect_err("a prepared KILL");
    assert_eq!(server_error(&err).map(|e| e.0), Some(1235), "{err}");

    // Nothing reached the server: A still sleeps, both connections live.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sleeping(&db, "jg_write"), "{:?}", db.threads_of("jg_write"));
    assert_eq!(db.threads_of("jg_write").len(), 2);
    assert!(!running.is_finished());
    let one: Option<i64> = b.query_first("SELECT 1").await.expect("B goes on");
    assert_eq!(one, Some(1));
    jg.wait_for_audit("the refused KILL USER", |v| {
        v["event"] == "statement_refused" && v["statement"] == "KILL USER jg_write"
    })
    .await;
    running.abort();
}

/// The audit log's disk fills up mid-session: the command whose record could
/// not be written is not forwarded, the client is told why, and the session
/// ends (jitgate fails closed).
#[tokio::test(flavor = "multi_thread")]
async fn a_full_audit_disk_ends_the_session_and_forwards_nothing() {
    let disk = tempfile::tempdir().expect("tempdir");
    let Some(_tmpfs) = tmpfs::Tmpfs::mount(disk.path(), "1m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    // "always": no group-fsync tick writes held records behind our back, so
    // the first write to fail is the command's.
    let (db, jg) = setup_with(JitgateOptions {
        audit_path: Some(disk.path().join("audit.log")),
        audit_fsync: Some("always".into()),
        ..JitgateOptions::default()
    })
    .await;
    jg.grant("alice", MYSQL_TARGET, "write", "10m").await;
    let mut conn = login_as(&jg, "alice", ALICE_SECRET).await;
    let name = format!("full-disk-{}", rand::random::<u32>());
    conn.query_drop(format!("INSERT INTO items (name) VALUES ('{name}-before')"))
        .await
        .unwrap_or_else(|e| panic!("INSERT with room on the disk: {e}\n{}", jg.log()));

    tmpfs::fill(disk.path());
    let padding = "x".repeat(32 * 1024);
    let err = within(
        Duration::from_secs(10),
        "INSERT with the audit disk full",
        conn.query_drop(format!(
            "INSERT INTO items (name) VALUES ('{name}') -- {padding}"
        )),
    )
    .await
    .expect_err("nothing may be forwarded without its audit record");
    let said = err.to_string();
    assert!(said.contains("cannot write its audit log"), "{said}");
    let count = |n: String| {
        db.root_query(&format!(
            "SELECT count(*) FROM app.items WHERE name = '{n}'"
        ))
        .trim()
        .to_owned()
    };
    assert_eq!(count(format!("{name}-before")), "1");
    assert_eq!(
        count(name.clone()),
        "0",
        "the command whose record failed reached the server"
    );
    let next = within(
        Duration::from_secs(10),
        "a command after the session ended",
        conn.query_drop("SELECT 1"),
    )
    .await;
    assert!(next.is_err(), "the session must have ended");
}

// ---- the read level's upstream account -------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_read_account_with_insert_is_refused_at_login_unless_allowed() {
    let db = MariaDb::start();
    db.root_query("GRANT INSERT ON app.* TO jg_read@'%'");
    let jg = Jitgate::start(&db, JitgateOptions::default()).await;
    assert!(
        jg.log()
            .contains("the read level's upstream account can write"),
        "the start should log why the level is refused:\n{}",
        jg.log()
    );
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let err = mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
        .await
        .err()
        .unwrap_or_else(|| panic!("the read login went through\n{}", jg.log()));
    let (code, message) = server_error(&err).unwrap_or_else(|| panic!("not a server error: {err}"));
    assert_eq!(code, 1044, "{message}");
    for needle in [
        "upstream account of level read on demo-mysql can write",
        "it has INSERT on `app`.*",
        "allow_privileged_read_account = true",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    jg.assert_no_secret_in("the refusal", &message);
    jg.wait_for_audit("the session_refused record", |v| {
        v["event"] == "session_refused" && v["reason"] == "read_account_can_write"
    })
    .await;
    assert!(db.threads_of("jg_read").is_empty());
    drop(jg);

    let jg = Jitgate::start(
        &db,
        JitgateOptions {
            allow_privileged_read_account: true,
            ..JitgateOptions::default()
        },
    )
    .await;
    assert!(
        jg.log().contains("allow_privileged_read_account = true")
            && jg.log().contains("it has INSERT on `app`.*"),
        "the start should warn, with the check's result:\n{}",
        jg.log()
    );
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let mut conn = mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
        .await
        .unwrap_or_else(|e| panic!("login: {e}\n{}", jg.log()));
    let n: Option<i64> = conn
        .query_first("SELECT count(*) FROM items")
        .await
        .expect("SELECT on the read level");
    assert_eq!(n, Some(3));
    conn.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_account_whose_role_can_write_is_refused_at_login() {
    let db = MariaDb::start();
    db.root_query(
        "CREATE ROLE jg_writers; GRANT DELETE ON app.* TO jg_writers; \
         CREATE ROLE jg_readers; GRANT SELECT ON app.* TO jg_readers; \
         GRANT jg_writers TO jg_readers; GRANT jg_readers TO jg_read@'%'",
    );
    let jg = Jitgate::start(&db, JitgateOptions::default()).await;
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let err = mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
        .await
        .err()
        .unwrap_or_else(|| panic!("the read login went through\n{}", jg.log()));
    let (code, message) = server_error(&err).unwrap_or_else(|| panic!("not a server error: {err}"));
    assert_eq!(code, 1044, "{message}");
    assert!(
        message.contains("its role `jg_readers` has DELETE on `app`.*"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_select_only_read_account_is_checked_at_start_and_admitted() {
    let (_db, jg) = setup().await;
    assert!(
        jg.log()
            .contains("the read level's upstream account is read-only on the server"),
        "{}",
        jg.log()
    );
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let mut conn = mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
        .await
        .unwrap_or_else(|e| panic!("login: {e}\n{}", jg.log()));
    let n: Option<i64> = conn
        .query_first("SELECT count(*) FROM items")
        .await
        .expect("SELECT on the read level");
    assert_eq!(n, Some(3));
    conn.disconnect().await.expect("disconnect");
}

/// Commands jitgate refuses itself (COM_RESET_CONNECTION on a read level,
/// COM_CHANGE_USER, which leaves the session as it was) each leave an audit
/// record naming the command, and never reach the server.
#[tokio::test(flavor = "multi_thread")]
async fn refused_commands_are_audited_by_name() {
    let (db, jg) = setup().await;
    db.root_query("SET GLOBAL log_output = 'TABLE'; SET GLOBAL general_log = 1");
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let mut conn = mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
        .await
        .unwrap_or_else(|e| panic!("login: {e}\n{}", jg.log()));
    let err = conn
        .reset()
        .await
        .expect_err("COM_RESET_CONNECTION on a read level");
    assert_eq!(server_error(&err).map(|e| e.0), Some(1290), "{err}");
    let err = conn
        .change_user(Default::default())
        .await
        .expect_err("COM_CHANGE_USER");
    let (code, message) = server_error(&err).unwrap_or_else(|| panic!("{err}"));
    assert_eq!(code, 1235, "{message}");
    assert!(message.contains("this session stays alice's"), "{message}");
    // The session goes on as it was.
    let one: Option<i64> = conn
        .query_first("SELECT 1")
        .await
        .expect("the session after a refused COM_CHANGE_USER");
    assert_eq!(one, Some(1));
    for (name, outcome) in [
        ("COM_RESET_CONNECTION (0x1f)", "1290"),
        ("COM_CHANGE_USER (0x11)", "1235"),
    ] {
        let record = jg
            .wait_for_audit(name, |v| {
                v["event"] == "statement_refused"
                    && v["detail"].as_str() == Some(&format!("command {name}"))
            })
            .await;
        assert_eq!(record["outcome"], outcome, "{record}");
        assert_eq!(record["level"], "read", "{record}");
    }
    let server_saw = db.root_query(
        "SELECT count(*) FROM mysql.general_log WHERE user_host LIKE 'jg_read[%' \
         AND command_type IN ('Reset connection', 'Change user')",
    );
    assert_eq!(server_saw.trim(), "0");
}

/// User locks change server state other sessions see: refused on a read
/// grant, with the server's own lock table as the witness.
#[tokio::test(flavor = "multi_thread")]
async fn read_level_refuses_user_locks() {
    let (db, jg) = setup().await;
    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let mut conn = mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
        .await
        .unwrap_or_else(|e| panic!("login: {e}\n{}", jg.log()));
    for sql in [
        "SELECT GET_LOCK('jitgate-test', 0)",
        "DO GET_LOCK('jitgate-test', 0)",
        "SELECT RELEASE_ALL_LOCKS()",
    ] {
        let err = conn.query_drop(sql).await.expect_err(sql);
        assert_eq!(server_error(&err).map(|e| e.0), Some(1290), "{sql}");
    }
    assert_eq!(
        db.root_query("SELECT IS_USED_LOCK('jitgate-test') IS NULL")
            .trim(),
        "1"
    );
    conn.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitgate_connect_starts_mariadb_on_the_grant_without_the_secret_on_its_command_line() {
    let (_db, jg) = setup().await;
    let query = ["--", "-N", "-B", "-e", "select current_user()"];
    let refused = jg
        .cli_command(
            ALICE_SECRET,
            &[&["connect", MYSQL_TARGET][..], &query[..]].concat(),
        )
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("hold no active grant for demo-mysql"),
        "{said}"
    );
    assert!(said.contains("--wait --connect"), "{said}");

    jg.grant("alice", MYSQL_TARGET, "read", "10m").await;
    let (bin, seen) = recording_wrapper("mariadb");
    let out = jg
        .cli_command(
            ALICE_SECRET,
            &[&["connect", MYSQL_TARGET][..], &query[..]].concat(),
        )
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.path().display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .output()
        .await
        .unwrap();
    let run = Run::from(out);
    run.assert_ok(&jg);
    assert!(run.stdout.starts_with("jg_read@"), "{}", run.stdout);
    // What the client was started with: no secret among its arguments or
    // in its environment, and the option file gone once it exited.
    let recorded = std::fs::read_to_string(&seen).unwrap();
    assert!(!recorded.contains(ALICE_SECRET), "{recorded}");
    let options = recorded
        .split_whitespace()
        .find_map(|a| a.strip_prefix("--defaults-extra-file="))
        .unwrap_or_else(|| panic!("no option file: {recorded}"));
    assert!(
        !std::path::Path::new(options).exists(),
        "{options} was left behind"
    );
}
