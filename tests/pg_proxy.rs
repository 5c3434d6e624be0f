//! PostgreSQL through jitgate, end to end.
//!
//! Each test starts its own throwaway PostgreSQL and its own jitgate (see
//! `support`), drives them with the real clients — `psql`, `pgbench`,
//! tokio-postgres, or raw bytes where no real client would misbehave — and
//! takes the server's own view (`pg_stat_activity`, its log) as the witness.

mod support;

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use support::*;

const READ: &str = "read";
const WRITE: &str = "write";

async fn setup() -> (PgServer, Jitgate) {
    setup_with(JitgateOptions::default()).await
}

async fn setup_with(opts: JitgateOptions) -> (PgServer, Jitgate) {
    let pg = PgServer::start().await;
    let jg = Jitgate::start(&pg, opts).await;
    (pg, jg)
}

fn event_is(v: &Value, event: &str) -> bool {
    v["event"] == event
}

/// psql's `\set VERBOSITY verbose` prints the SQLSTATE in front of each error.
const VERBOSE: [&str; 2] = ["-v", "VERBOSITY=verbose"];

/// psql as alice, logging in and out again: proves the proxy still serves.
async fn assert_psql_login_works(jg: &Jitgate, after: &str) {
    let run = jg.psql(&["-c", "SELECT 1"]).await;
    assert!(
        run.status.success() && run.stdout.trim() == "1",
        "after {after}, a normal psql login failed ({}):\n--- stdout\n{}\n--- stderr\n{}\n--- jitgate log\n{}",
        run.status,
        run.stdout,
        run.stderr,
        jg.log()
    );
}

// ---- the harness itself ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_postgres_takes_tls_scram_logins_and_enforces_read_only() {
    let pg = PgServer::start().await;
    let read = pg.connect_direct("jg_read", &pg.read_password, "app").await;
    let names: Vec<String> = read
        .query("SELECT name FROM items ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["apple", "banana", "cherry"]);
    let ssl: bool = read
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the direct connection should be TLS");
    let err = read
        .execute("UPDATE items SET name = 'x' WHERE id = 1", &[])
        .await
        .expect_err("jg_read must not write");
    assert_sqlstate(&err, "25006");

    let write = pg
        .connect_direct("jg_write", &pg.write_password, "app")
        .await;
    assert_eq!(
        write
            .execute("UPDATE items SET name = name WHERE id = 1", &[])
            .await
            .unwrap(),
        1
    );
    assert!(
        pg.tcp_connections_seen() >= 2,
        "log_connections should show TCP logins:\n{}",
        pg.log()
    );
}

// ---- the happy paths -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_tls_scram_happy_path() {
    let (_pg, jg) = setup().await;
    let grant = jg.grant("alice", PG_TARGET, READ, "2m").await;

    let run = jg
        .psql(&["-c", "SELECT id, name FROM items ORDER BY id"])
        .await;
    run.assert_ok(&jg);
    assert_eq!(run.stdout.trim(), "1|apple\n2|banana\n3|cherry");

    let describe = jg.psql(&["-c", r"\d items"]).await;
    describe.assert_ok(&jg);
    for word in ["id", "integer", "name", "text", "nextval"] {
        assert!(
            describe.stdout.contains(word),
            "`\\d items` lacks {word}:\n{}",
            describe.stdout
        );
    }

    let conninfo = jg.psql(&["-c", r"\conninfo"]).await;
    conninfo.assert_ok(&jg);
    assert!(
        conninfo.stdout.contains("SSL connection"),
        "psql should be on TLS to jitgate:\n{}",
        conninfo.stdout
    );

    let upstream = jg
        .psql(&[
            "-c",
            "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ])
        .await;
    upstream.assert_ok(&jg);
    assert_eq!(
        upstream.stdout.trim(),
        "jg_read|t",
        "upstream login should be jg_read over TLS"
    );

    jg.wait_for_audit("login_ok of alice", |v| {
        event_is(v, "login_ok") && v["identity"] == "alice"
    })
    .await;
    let start = jg
        .wait_for_audit("session_start of alice", |v| {
            event_is(v, "session_start") && v["identity"] == "alice"
        })
        .await;
    assert_eq!(start["target"], PG_TARGET);
    assert_eq!(start["level"], READ);
    assert_eq!(
        id_string(&start["grant"]),
        id_of(&grant),
        "session_start names the grant: {start}"
    );
    let stmt = jg
        .wait_for_audit("the SELECT", |v| {
            event_is(v, "statement") && v["statement"] == "SELECT id, name FROM items ORDER BY id"
        })
        .await;
    assert_eq!(stmt["kind"], "read", "{stmt}");
    jg.wait_for_audit("session_end of alice", |v| {
        event_is(v, "session_end") && v["identity"] == "alice"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_statements_are_audited_as_sql() {
    let (_pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let client = jg.connect_ok(&Login::alice()).await;

    let sql = "SELECT name FROM items WHERE id = $1";
    let stmt = within(secs(10), "prepare", client.prepare(sql))
        .await
        .unwrap();
    let first = within(secs(10), "first execute", client.query(&stmt, &[&2i32]))
        .await
        .unwrap();
    assert_eq!(first[0].get::<_, String>(0), "banana");
    let second = within(secs(10), "second execute", client.query(&stmt, &[&3i32]))
        .await
        .unwrap();
    assert_eq!(second[0].get::<_, String>(0), "cherry");
    // An unnamed statement, Parse/Bind/Execute in one go.
    let unnamed = within(
        secs(10),
        "unnamed statement",
        client.query_one("SELECT count(*) FROM items WHERE id > $1", &[&1i32]),
    )
    .await
    .unwrap();
    assert_eq!(unnamed.get::<_, i64>(0), 2);

    let record = jg
        .wait_for_audit("the prepared statement as SQL", |v| {
            event_is(v, "statement") && v["statement"] == sql
        })
        .await;
    assert_eq!(record["identity"], "alice", "{record}");
    assert_eq!(record["target"], PG_TARGET, "{record}");
    assert_eq!(record["level"], READ, "{record}");
    assert_eq!(record["kind"], "read", "{record}");
    assert!(
        !record["session"].is_null(),
        "statement record without session: {record}"
    );
    let session = record["session"].clone();
    let seq = record["seq"].clone();
    let end = jg
        .wait_for_audit("statement_end of the prepared statement", |v| {
            event_is(v, "statement_end") && v["session"] == session && v["seq"] == seq
        })
        .await;
    assert!(
        end["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("SELECT")),
        "outcome should be the command tag: {end}"
    );
    assert_eq!(end["rows"], 1, "{end}");
    assert!(end["duration_ms"].is_number(), "{end}");

    // Executed twice, so audited (at least) twice.
    let count = eventually(
        secs(5),
        "two statement records for two executions",
        || async {
            let n = jg
                .audit_lines()
                .iter()
                .filter(|v| event_is(v, "statement") && v["statement"] == sql)
                .count();
            (n >= 2).then_some(n)
        },
    )
    .await;
    assert!(count >= 2);
    jg.wait_for_audit("the unnamed statement", |v| {
        event_is(v, "statement") && v["statement"] == "SELECT count(*) FROM items WHERE id > $1"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_extended_protocol_runs_through_the_proxy() {
    let (_pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let script = jg.dir().join("bench.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 3)\nSELECT name FROM items WHERE id = :id;\n",
    )
    .unwrap();
    let run = jg
        .pgbench(
            &Login::alice(),
            &[
                "-n",
                "-M",
                "extended",
                "-c",
                "2",
                "-j",
                "2",
                "-t",
                "20",
                "-f",
                script.to_str().unwrap(),
            ],
        )
        .await;
    run.assert_ok(&jg);
    assert!(
        run.stdout
            .contains("number of transactions actually processed: 40/40"),
        "pgbench output:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    // pgbench sends the script's text as it is, semicolon included.
    jg.wait_for_audit("pgbench's statement", |v| {
        event_is(v, "statement")
            && v["statement"]
                .as_str()
                .is_some_and(|s| s.trim_end_matches(';') == "SELECT name FROM items WHERE id = $1")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    let (pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, WRITE, "2m").await;

    let copy_in = jg
        .psql_as(
            &Login::alice(),
            &["-c", r"\copy items (name) from stdin"],
            Some("date\nelderberry\n"),
        )
        .await;
    copy_in.assert_ok(&jg);
    let server_copy_in = jg
        .psql_as(
            &Login::alice(),
            &["-c", "COPY items (name) FROM STDIN"],
            Some("fig\n\\.\n"),
        )
        .await;
    server_copy_in.assert_ok(&jg);
    assert_eq!(
        pg.items_snapshot().await.0,
        6,
        "the server should hold the copied rows"
    );

    let copy_out = jg
        .psql(&[
            "-c",
            "COPY (SELECT id, name FROM items ORDER BY id) TO STDOUT",
        ])
        .await;
    copy_out.assert_ok(&jg);
    assert_eq!(
        copy_out.stdout,
        "1\tapple\n2\tbanana\n3\tcherry\n4\tdate\n5\telderberry\n6\tfig\n"
    );
    let client_copy_out = jg.psql(&["-c", r"\copy items (name) to stdout"]).await;
    client_copy_out.assert_ok(&jg);
    assert_eq!(
        client_copy_out.stdout.lines().count(),
        6,
        "{}",
        client_copy_out.stdout
    );

    let record = jg
        .wait_for_audit("COPY FROM STDIN", |v| {
            event_is(v, "statement") && v["statement"] == "COPY items (name) FROM STDIN"
        })
        .await;
    assert_eq!(record["kind"], "write", "{record}");
    let (session, seq) = (record["session"].clone(), record["seq"].clone());
    let end = jg
        .wait_for_audit("COPY's statement_end", |v| {
            event_is(v, "statement_end") && v["session"] == session && v["seq"] == seq
        })
        .await;
    assert_eq!(end["outcome"], "COPY 1", "{end}");
}

/// libpq's large-object calls use the FunctionCall message ('F'), which
/// few proxies expect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_via_function_call_work_on_a_write_grant() {
    let (_pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, WRITE, "2m").await;
    let file = jg.dir().join("blob.txt");
    std::fs::write(&file, "x".repeat(100_000)).unwrap();
    let import = jg
        .psql(&["-c", &format!(r"\lo_import '{}'", file.display())])
        .await;
    import.assert_ok(&jg);
    let oid = import
        .stdout
        .split_whitespace()
        .last()
        .and_then(|w| w.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no oid in psql's answer: {}", import.stdout));
    let size = jg
        .psql(&["-c", &format!("SELECT length(lo_get({oid}))")])
        .await;
    size.assert_ok(&jg);
    assert_eq!(size.stdout.trim(), "100000");
}

/// A FunctionCall names its function only by OID: the audit record keeps
/// that OID, and the server's own catalogue says which functions they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastpath_calls_are_audited_with_the_function_oid_they_call() {
    let (pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, WRITE, "2m").await;
    let file = jg.dir().join("blob.txt");
    std::fs::write(&file, "x".repeat(1000)).unwrap();
    jg.psql(&["-c", &format!(r"\lo_import '{}'", file.display())])
        .await
        .assert_ok(&jg);
    jg.wait_for_audit("the session's end", |v| event_is(v, "session_end"))
        .await;
    let prefix = "-- fastpath function call of function OID ";
    let oids: Vec<u32> = jg
        .audit_lines()
        .iter()
        .filter(|v| event_is(v, "statement"))
        .filter_map(|v| v["statement"].as_str()?.strip_prefix(prefix)?.parse().ok())
        .collect();
    assert!(
        !oids.is_empty(),
        "no fastpath records: {:?}",
        jg.audit_lines()
    );
    let superuser = pg.superuser_client("app").await;
    let mut names = Vec::new();
    for oid in oids {
        let row = superuser
            .query_one("SELECT proname::text FROM pg_proc WHERE oid = $1", &[&oid])
            .await
            .unwrap_or_else(|e| panic!("OID {oid} is no function the server knows: {e}"));
        names.push(row.get::<_, String>(0));
    }
    assert!(
        names.iter().any(|n| n == "lowrite"),
        "libpq writes a large object with lowrite: {names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_reaches_the_client() {
    let (_pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, WRITE, "2m").await;
    let run = jg
        .psql(&[
            "-c",
            "LISTEN jitgate_test",
            "-c",
            "NOTIFY jitgate_test, 'hello'",
            "-c",
            "SELECT 1",
        ])
        .await;
    run.assert_ok(&jg);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        all.contains(r#"Asynchronous notification "jitgate_test" with payload "hello" received"#),
        "psql did not see the notification:\n{all}"
    );
}

/// What reading clients send passes a read grant: pg_dump (its LOCK … IN
/// ACCESS SHARE MODE, its prepared statements), psycopg2's read-only
/// deferrable transactions and scrolling cursors, `TABLE t`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_clients_work_on_a_read_grant() {
    let (_pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let schema = jg
        .libpq_client("pg_dump", &Login::alice(), &["--schema-only"])
        .await;
    schema.assert_ok(&jg);
    assert!(
        schema.stdout.contains("CREATE TABLE public.items"),
        "{}",
        schema.stdout
    );
    let data = jg
        .libpq_client("pg_dump", &Login::alice(), &["--data-only"])
        .await;
    data.assert_ok(&jg);
    assert!(data.stdout.contains("apple"), "{}", data.stdout);
    let run = jg
        .python(
            &Login::alice(),
            r#"
import os, psycopg2
conn = psycopg2.connect(os.environ["JITGATE_DSN"])
conn.set_session(readonly=True, deferrable=True, isolation_level="SERIALIZABLE")
cur = conn.cursor("scroller")
cur.execute("SELECT name FROM items ORDER BY id")
first = cur.fetchone()[0]
cur.scroll(2, mode="absolute")
third = cur.fetchone()[0]
cur.close()
conn.commit()
plain = conn.cursor()
plain.execute("TABLE items")
print(first, third, len(plain.fetchall()))
"#,
        )
        .await;
    run.assert_ok(&jg);
    assert_eq!(run.stdout.trim(), "apple cherry 3");
    let refused: Vec<Value> = jg
        .audit_lines()
        .into_iter()
        .filter(|v| v["event"] == "statement_refused")
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
}

/// With a read and a write grant on one target, `dbname=<target>@<level>`
/// picks the level; the bare name means the newest grant; a level with no
/// grant is refused with a message that says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_chooses_the_level_after_the_target() {
    let (_pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    jg.grant("alice", PG_TARGET, WRITE, "2m").await;
    for (dbname, user) in [
        (format!("{PG_TARGET}@{READ}"), "jg_read"),
        (format!("{PG_TARGET}@{WRITE}"), "jg_write"),
        (PG_TARGET.to_owned(), "jg_write"),
    ] {
        let client = jg.connect_ok(&Login::alice().dbname(&dbname)).await;
        let current: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .expect("current_user")
            .get(0);
        assert_eq!(current, user, "{dbname}");
    }
    let err = jg
        .connect(&Login::alice().dbname(&format!("{PG_TARGET}@admin")))
        .await
        .expect_err("no grant at level admin");
    assert!(
        describe_error(&err).contains("no active grant for demo-pg at level admin"),
        "{}",
        describe_error(&err)
    );
    let starts: Vec<Value> = jg
        .audit_lines()
        .into_iter()
        .filter(|v| v["event"] == "session_start")
        .collect();
    assert_eq!(starts.len(), 3);
    assert!(
        starts.iter().all(|v| v["target"] == PG_TARGET),
        "{starts:?}"
    );
}

/// A Terminate sent while a statement runs is read by PostgreSQL only once
/// the statement is done: the client still gets its results, then the
/// connection closes. Through jitgate the same, compared with the server
/// itself (plaintext here, so the test can write the raw Terminate on the
/// driver's socket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_during_a_running_statement_still_delivers_its_results() {
    let (pg, jg) = setup_with(JitgateOptions {
        tls_require: false,
        ..JitgateOptions::default()
    })
    .await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let program = r#"
import os, psycopg2, select, socket
from psycopg2.extensions import POLL_OK, POLL_READ, POLL_WRITE
def wait(conn):
    while True:
        state = conn.poll()
        if state == POLL_OK:
            return
        if state == POLL_READ:
            select.select([conn.fileno()], [], [])
        elif state == POLL_WRITE:
            select.select([], [conn.fileno()], [])
conn = psycopg2.connect(os.environ["JITGATE_DSN"], async_=1)
wait(conn)
cur = conn.cursor()
cur.execute("SELECT pg_sleep(0.5), 42")
os.write(conn.fileno(), b"X\x00\x00\x00\x04")
wait(conn)
answer = cur.fetchone()[1]
sock = socket.socket(fileno=os.dup(conn.fileno()))
sock.settimeout(10)
print(answer, sock.recv(100) == b"")
"#;
    let through = jg.python(&Login::alice().sslmode("disable"), program).await;
    through.assert_ok(&jg);
    assert_eq!(through.stdout.trim(), "42 True", "{}", through.stderr);
    let direct = tokio::process::Command::new("/usr/bin/python3")
        .env(
            "JITGATE_DSN",
            format!(
                "host=127.0.0.1 port={} user=jg_read dbname=app sslmode=disable",
                pg.port()
            ),
        )
        .env("PGPASSWORD", &pg.read_password)
        .arg("-c")
        .arg(program)
        .output()
        .await
        .expect("python directly");
    assert_eq!(
        String::from_utf8_lossy(&direct.stdout).trim(),
        "42 True",
        "{}",
        String::from_utf8_lossy(&direct.stderr)
    );
    jg.wait_for_audit("the session's end", |v| v["event"] == "session_end")
        .await;
}

/// A long generated read (a 300 KiB IN list) is classified, off the session
/// threads, and runs on a read grant; past
/// `limits.max_classified_statement_bytes` a text is unknown and refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_statements_are_classified_up_to_the_configured_limit() {
    let (_pg, jg) = setup_with(JitgateOptions {
        extra_limits: "max_classified_statement_bytes = 400000\n".to_owned(),
        ..JitgateOptions::default()
    })
    .await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let client = jg.connect_ok(&Login::alice()).await;
    let ids: Vec<String> = (0..50_000).map(|i| i.to_string()).collect();
    let long = format!(
        "SELECT count(*) FROM items WHERE id IN ({})",
        ids.join(", ")
    );
    assert!(long.len() > 300_000);
    let row = client
        .query_one(long.as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("the long read, extended: {}", describe_error(&e)));
    assert_eq!(row.get::<_, i64>(0), 3);
    let messages = client
        .simple_query(&long)
        .await
        .unwrap_or_else(|e| panic!("the long read, simple: {}", describe_error(&e)));
    let count = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(count.as_deref(), Some("3"));
    let too_long = format!("{long}{}", " ".repeat(100_000));
    let err = client
        .simple_query(&too_long)
        .await
        .expect_err("over the limit");
    assert!(
        describe_error(&err).contains("could not classify"),
        "{}",
        describe_error(&err)
    );
}

/// The driver's backend pid is the server's: psycopg2's `get_backend_pid()`,
/// `pg_backend_pid()` and the sender of the session's own NOTIFY agree, the
/// server lists that pid as the upstream account's, and terminating it ends
/// the session through jitgate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sees_the_real_backend_pid() {
    let (pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, WRITE, "2m").await;
    let run = jg
        .python(
            &Login::alice(),
            r#"
import os, psycopg2
conn = psycopg2.connect(os.environ["JITGATE_DSN"])
conn.autocommit = True
cur = conn.cursor()
cur.execute("SELECT pg_backend_pid()")
sql_pid = cur.fetchone()[0]
cur.execute("LISTEN jitgate_pid; NOTIFY jitgate_pid, 'x'")
conn.poll()
print(conn.get_backend_pid(), sql_pid, conn.notifies[0].pid)
"#,
        )
        .await;
    run.assert_ok(&jg);
    let pids: Vec<i32> = run
        .stdout
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), 3, "{}", run.stdout);
    assert!(
        pids.iter().all(|p| *p == pids[0]),
        "driver, pg_backend_pid() and NOTIFY disagree: {pids:?}"
    );

    let client = jg.connect_ok(&Login::alice()).await;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("own pid")
        .get(0);
    let su = pg.superuser_client("app").await;
    let user: String = su
        .query_one(
            "SELECT usename::text FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
        .expect("the server lists the pid")
        .get(0);
    assert_eq!(user, "jg_write");
    let terminated: bool = su
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("terminate")
        .get(0);
    assert!(terminated);
    let err = within(
        Duration::from_secs(10),
        "the next query after termination",
        client.simple_query("SELECT 1"),
    )
    .await
    .expect_err("the session must be over");
    assert!(
        describe_error(&err).contains("administrator command") || err.is_closed(),
        "{}",
        describe_error(&err)
    );
    jg.wait_for_audit("the session's end", |v| v["event"] == "session_end")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_result_arrives_whole_and_is_audited_with_its_row_count() {
    let (_pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let client = jg.connect_ok(&Login::alice()).await;
    let sql = "SELECT repeat('x', 1000) FROM generate_series(1, 20000)";
    let rows = within(secs(60), "20 MB of rows", client.query(sql, &[]))
        .await
        .unwrap();
    assert_eq!(rows.len(), 20_000);
    assert!(rows.iter().all(|r| r.get::<_, String>(0).len() == 1000));
    let record = jg
        .wait_for_audit("the large SELECT", |v| {
            event_is(v, "statement") && v["statement"] == sql
        })
        .await;
    let (session, seq) = (record["session"].clone(), record["seq"].clone());
    let end = jg
        .wait_for_audit("its statement_end", |v| {
            event_is(v, "statement_end") && v["session"] == session && v["seq"] == seq
        })
        .await;
    assert_eq!(end["rows"], 20_000, "{end}");
}

/// A TCP hop that passes client bytes up at once but reads the proxy's
/// answers slowly (16 KiB per millisecond), so that jitgate's socket to the
/// client is full most of the time. Returns the port to connect to.
async fn slow_reader_in_front_of(port: u16) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hop = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        // A small receive window, so that jitgate's own send buffer fills.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        let _ = socket.set_recv_buffer_size(32 * 1024);
        let Ok(proxy) = socket
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .await
        else {
            return;
        };
        let (mut client_r, mut client_w) = client.into_split();
        let (mut proxy_r, mut proxy_w) = proxy.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_r, &mut proxy_w).await;
        });
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match proxy_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if client_w.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    hop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_over_tls_gets_the_end_of_a_large_result() {
    // Through TLS a write can leave its last records queued in rustls when
    // the socket is full; unless jitgate flushes, the end of the answer
    // (and its ReadyForQuery) waits there until something else is written,
    // and the client waits for ever.
    let (_pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let hop = slow_reader_in_front_of(jg.pg_port()).await;
    let config = Login::alice().config(hop);
    let (client, connection) = within(secs(20), "login through the slow hop", async {
        config.connect(AnyCertTls::new()).await
    })
    .await
    .unwrap_or_else(|e| panic!("login: {}\n{}", describe_error(&e), jg.log()));
    tokio::spawn(connection);
    for round in 0..3 {
        let rows = within(
            secs(60),
            "8 MB of rows through a slow reader",
            client.query(
                "SELECT repeat('x', 1000) FROM generate_series(1, 8000)",
                &[],
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("round {round}: {}", describe_error(&e)));
        assert_eq!(rows.len(), 8000);
    }
    let one: i32 = within(secs(10), "a query after", client.query_one("SELECT 1", &[]))
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
}

// ---- who gets in ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_grant_is_refused_with_28000() {
    let (pg, jg) = setup().await;
    // A grant for someone else, or another target, does not count.
    jg.grant("bob", PG_TARGET, READ, "2m").await;

    let run = jg.psql(&["-c", "SELECT 1"]).await;
    run.assert_failed();
    let stderr = run.stderr.to_lowercase();
    assert!(
        stderr.contains("no active grant"),
        "psql stderr:\n{}",
        run.stderr
    );
    assert!(
        stderr.contains(PG_TARGET),
        "the error should name the target:\n{}",
        run.stderr
    );
    assert!(
        stderr.contains("request"),
        "the error should say how to get a grant:\n{}",
        run.stderr
    );

    let err = jg
        .connect(&Login::alice())
        .await
        .expect_err("no grant, no login");
    assert_sqlstate(&err, "28000");
    assert_eq!(
        pg.tcp_connections_seen(),
        0,
        "nothing may reach the server without a grant:\n{}",
        pg.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_refused_with_28p01() {
    let (pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;

    let err = jg
        .connect(&Login::new("alice", "not-alice-secret"))
        .await
        .expect_err("a wrong secret must not log in");
    assert_sqlstate(&err, "28P01");

    // An unknown identity looks the same as a wrong secret.
    let err = jg
        .connect(&Login::new("mallory", "whatever"))
        .await
        .expect_err("an unknown identity must not log in");
    assert_sqlstate(&err, "28P01");

    let mut wrong = Login::alice();
    wrong.password = "not-alice-secret".into();
    let run = jg.psql_as(&wrong, &["-c", "SELECT 1"], None).await;
    run.assert_failed();
    assert!(run.stderr.contains("FATAL"), "psql stderr:\n{}", run.stderr);

    jg.wait_for_audit("login_failed of alice", |v| {
        event_is(v, "login_failed") && v["identity"] == "alice"
    })
    .await;
    assert_eq!(
        pg.tcp_connections_seen(),
        0,
        "nothing may reach the server before auth:\n{}",
        pg.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_is_refused_when_tls_required() {
    let (pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;

    let run = jg
        .psql_as(
            &Login::alice().sslmode("disable"),
            &["-c", "SELECT 1"],
            None,
        )
        .await;
    run.assert_failed();
    let stderr = run.stderr.to_lowercase();
    assert!(
        stderr.contains("tls") || stderr.contains("ssl"),
        "the error should say TLS is required:\n{}",
        run.stderr
    );

    let err = jg
        .connect(&Login::alice().sslmode("disable"))
        .await
        .expect_err("plaintext must be refused");
    let text = describe_error(&err).to_lowercase();
    assert!(text.contains("tls") || text.contains("ssl"), "{text}");

    // On the wire: one error, no authentication request, then the end.
    let mut raw = RawConn::plain(jg.pg_port()).await;
    raw.send(&startup_packet(&[
        ("user", "alice"),
        ("database", PG_TARGET),
    ]))
    .await
    .unwrap();
    let ending = raw.until_closed(secs(5), "plaintext startup").await;
    assert_eq!(
        ending.messages.len(),
        1,
        "expected exactly one ErrorResponse, got {ending:?}"
    );
    assert_eq!(
        ending.messages[0].tag, b'E',
        "expected an ErrorResponse, got {ending:?}"
    );
    assert_eq!(
        pg.tcp_connections_seen(),
        0,
        "nothing may reach the server in plaintext:\n{}",
        pg.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_target_gets_a_clear_error() {
    let (_pg, mut jg) = setup().await;
    let run = jg
        .psql_as(
            &Login::alice().dbname("no-such-target"),
            &["-c", "SELECT 1"],
            None,
        )
        .await;
    run.assert_failed();
    assert!(
        run.stderr.contains("no-such-target"),
        "the error should name the unknown target:\n{}",
        run.stderr
    );
    let err = jg
        .connect(&Login::alice().dbname("no-such-target"))
        .await
        .expect_err("an unknown target must be refused");
    assert!(
        err.as_db_error().is_some(),
        "expected an ErrorResponse, got {}",
        describe_error(&err)
    );
    assert!(
        describe_error(&err).contains("no-such-target"),
        "{}",
        describe_error(&err)
    );
    jg.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn levels_log_in_upstream_as_their_own_accounts() {
    let (_pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    jg.grant("bob", PG_TARGET, WRITE, "2m").await;

    let alice = jg
        .psql(&[
            "-c",
            "SELECT current_user, current_setting('default_transaction_read_only')",
        ])
        .await;
    alice.assert_ok(&jg);
    assert_eq!(alice.stdout.trim(), "jg_read|on");

    // The server is a wall of its own: a write the classifier may not see
    // (nextval inside a SELECT) is still refused upstream.
    let nextval = jg
        .psql(&[
            VERBOSE[0],
            VERBOSE[1],
            "-c",
            "SELECT nextval('items_id_seq')",
        ])
        .await;
    nextval.assert_failed();
    assert!(
        nextval.stderr.contains("25006"),
        "psql stderr:\n{}",
        nextval.stderr
    );

    let bob = jg
        .psql_as(
            &Login::new("bob", BOB_SECRET),
            &["-c", "SELECT current_user"],
            None,
        )
        .await;
    bob.assert_ok(&jg);
    assert_eq!(bob.stdout.trim(), "jg_write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_level_refuses_writes_with_25006_and_session_continues() {
    let (pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let client = jg.connect_ok(&Login::alice()).await;

    let writes = [
        "UPDATE items SET name = 'hacked' WHERE id = 1",
        "INSERT INTO items (name) VALUES ('intruder')",
        "DELETE FROM items",
        "CREATE TABLE stolen (x int)",
        "WITH gone AS (DELETE FROM items RETURNING *) SELECT count(*) FROM gone",
        "SELECT * FROM items FOR UPDATE",
        "SET default_transaction_read_only = off",
        "DO $$BEGIN DELETE FROM items; END$$",
    ];
    for sql in writes {
        let err = within(secs(10), sql, client.simple_query(sql))
            .await
            .expect_err(&format!("`{sql}` must be refused on a read grant"));
        assert_eq!(
            sqlstate(&err).as_deref(),
            Some("25006"),
            "`{sql}`: {}",
            describe_error(&err)
        );
        let still: i64 = within(
            secs(10),
            "SELECT after a refusal",
            client.query_one("SELECT count(*) FROM items", &[]),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "session unusable after refusing `{sql}`: {}",
                describe_error(&e)
            )
        })
        .get(0);
        assert_eq!(still, 3);
    }

    // The extended protocol is refused the same way.
    let err = within(
        secs(10),
        "extended UPDATE",
        client.execute("UPDATE items SET name = $1 WHERE id = 1", &[&"hacked"]),
    )
    .await
    .expect_err("an extended-protocol UPDATE must be refused");
    assert_sqlstate(&err, "25006");

    // Inside a transaction block, too; the transaction can still be ended.
    client.simple_query("BEGIN").await.unwrap();
    let err = client
        .simple_query("SET TRANSACTION READ WRITE")
        .await
        .expect_err("SET TRANSACTION READ WRITE must be refused");
    assert_sqlstate(&err, "25006");
    client.simple_query("ROLLBACK").await.unwrap();

    let name: String = client
        .query_one("SELECT name FROM items WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "apple");

    // psql: COPY FROM and UPDATE refused, the session goes on.
    let run = jg
        .psql_as(
            &Login::alice(),
            &[
                VERBOSE[0],
                VERBOSE[1],
                "-v",
                "ON_ERROR_STOP=0",
                "-c",
                "UPDATE items SET name = 'hacked'",
                "-c",
                "COPY items (name) FROM STDIN",
                "-c",
                "SELECT count(*) FROM items",
            ],
            Some("intruder\n\\.\n"),
        )
        .await;
    assert!(
        run.stderr.matches("25006").count() >= 2,
        "psql stderr:\n{}",
        run.stderr
    );
    assert!(
        run.stdout.lines().any(|l| l.trim() == "3"),
        "psql stdout:\n{}",
        run.stdout
    );

    assert_eq!(
        pg.items_snapshot().await,
        (3, "apple".to_owned()),
        "the server's rows must be unchanged"
    );
    let refused = jg
        .wait_for_audit("statement_refused", |v| {
            event_is(v, "statement_refused")
                && v["statement"] == "UPDATE items SET name = 'hacked' WHERE id = 1"
        })
        .await;
    assert_eq!(refused["identity"], "alice", "{refused}");
}

// ---- cancel -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_pg_sleep_within_a_second() {
    let (pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let client = jg.connect_ok(&Login::alice()).await;
    let token = client.cancel_token();
    let query = tokio::spawn(async move {
        let result = client.simple_query("SELECT pg_sleep(60)").await;
        (client, result, Instant::now())
    });
    pg.wait_for_active_query("jg_read", "pg_sleep(60)").await;

    let asked = Instant::now();
    within(
        secs(5),
        "the cancel request",
        token.cancel_query(AnyCertTls::new()),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "cancel request failed: {}\n--- jitgate log\n{}",
            describe_error(&e),
            jg.log()
        )
    });
    let (client, result, ended) = within(secs(10), "the cancelled query", query)
        .await
        .unwrap();
    let err = result.expect_err("pg_sleep(60) should have been cancelled");
    assert_sqlstate(&err, "57014");
    let took = ended - asked;
    eprintln!("cancel answered in {took:?}");
    assert!(took < secs(1), "cancel took {took:?}");

    let alive: i32 = client.query_one("SELECT 7", &[]).await.unwrap().get(0);
    assert_eq!(alive, 7, "the session goes on after a cancel");
    eventually(secs(3), "the server log to show the cancel", || async {
        pg.log()
            .contains("canceling statement due to user request")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_ctrl_c_cancels_running_query() {
    let (pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let child = jg.spawn_psql(&Login::alice(), &["-c", "SELECT pg_sleep(60)"], false);
    let pid = child.id().expect("psql pid");
    pg.wait_for_active_query("jg_read", "pg_sleep(60)").await;

    let asked = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = within(
        secs(10),
        "psql to exit after Ctrl-C",
        child.wait_with_output(),
    )
    .await
    .unwrap();
    let took = asked.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "psql stderr:\n{stderr}\n--- jitgate log\n{}",
        jg.log()
    );
    assert!(took < secs(2), "Ctrl-C took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_unknown_key_cancels_nothing() {
    let (pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let client = jg.connect_ok(&Login::alice()).await;
    let token = client.cancel_token();
    let query = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });
    let backend = pg.wait_for_active_query("jg_read", "pg_sleep(60)").await;

    // Guessed keys, in plaintext and over TLS, including the real upstream pid.
    for (pid, key) in [(backend.pid as u32, 0u32), (rand::random(), rand::random())] {
        let mut plain = RawConn::plain(jg.pg_port()).await;
        let _ = plain.send(&cancel_packet(pid, key)).await;
        let ending = plain.until_closed(secs(5), "plaintext CancelRequest").await;
        assert!(
            ending.messages.is_empty(),
            "a CancelRequest gets no answer: {ending:?}"
        );
        let mut tls = RawConn::tls(jg.pg_port()).await;
        let _ = tls.send(&cancel_packet(pid, key)).await;
        tls.until_closed(secs(5), "CancelRequest over TLS").await;
    }
    tokio::time::sleep(secs(1)).await;
    let still = pg.backends_of("jg_read").await;
    assert!(
        still
            .iter()
            .any(|b| b.state == "active" && b.query.contains("pg_sleep(60)")),
        "an unknown key must cancel nothing; backends: {still:?}"
    );
    assert!(
        !pg.log().contains("canceling statement"),
        "server log:\n{}",
        pg.log()
    );

    token.cancel_query(AnyCertTls::new()).await.unwrap();
    let result = within(secs(5), "the real cancel", query).await.unwrap();
    assert_sqlstate(&result.unwrap_err(), "57014");
}

// ---- the instant end ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_expiry_kills_running_query_and_backend() {
    let (pg, jg) = setup().await;
    let grant = jg.grant("alice", PG_TARGET, READ, "3s").await;
    let deadline = expires_at(&grant);
    let client = jg.connect_ok(&Login::alice()).await;
    let query = tokio::spawn(async move {
        let result = client.simple_query("SELECT pg_sleep(60)").await;
        (result, SystemTime::now())
    });
    pg.wait_for_active_query("jg_read", "pg_sleep(60)").await;
    assert!(
        SystemTime::now() < deadline,
        "the query started only after the grant expired; test too slow"
    );
    let gone = watch_backends_gone(&pg, "jg_read", secs(15)).await;

    let (result, failed_at) = within(secs(15), "the query to be cut at expiry", query)
        .await
        .unwrap();
    let err = result.expect_err("pg_sleep(60) must not outlive the grant");
    assert_sqlstate(&err, "57P01");
    assert!(
        failed_at + Duration::from_millis(100) >= deadline,
        "the session ended {:?} before the grant did",
        later_by(deadline, failed_at)
    );
    assert!(
        later_by(failed_at, deadline) < secs(2),
        "the client heard {:?} after expiry",
        later_by(failed_at, deadline)
    );

    let gone_at = gone
        .await
        .unwrap()
        .expect("the jg_read backend never left pg_stat_activity");
    eprintln!(
        "after expiry: client told in {:?}, backend gone in {:?}",
        later_by(failed_at, deadline),
        later_by(gone_at, deadline)
    );
    assert!(
        later_by(gone_at, deadline) <= secs(1),
        "the backend outlived the grant by {:?}",
        later_by(gone_at, deadline)
    );
    wait_for_reaper_termination(&pg).await;
    jg.assert_reaper_ended_one();

    let grant_id = id_of(&grant);
    jg.wait_for_audit("grant_expired", |v| {
        event_is(v, "grant_expired") && id_string(&v["grant"]) == grant_id
    })
    .await;
    let end = jg
        .wait_for_audit("session_end of alice", |v| {
            event_is(v, "session_end") && v["identity"] == "alice"
        })
        .await;
    assert!(
        end["reason"].is_string(),
        "session_end should say why: {end}"
    );
    eventually(secs(3), "the session list to empty", || async {
        jg.sessions().await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_kills_session_the_same_way() {
    let (pg, jg) = setup().await;
    let grant = jg.grant("alice", PG_TARGET, READ, "2m").await;
    let client = jg.connect_ok(&Login::alice()).await;
    let query = tokio::spawn(async move {
        let result = client.simple_query("SELECT pg_sleep(60)").await;
        (result, SystemTime::now())
    });
    pg.wait_for_active_query("jg_read", "pg_sleep(60)").await;
    let gone = watch_backends_gone(&pg, "jg_read", secs(15)).await;

    jg.revoke(&id_of(&grant)).await;
    let revoked_at = SystemTime::now();
    let (result, failed_at) = within(secs(10), "the query to be cut at revoke", query)
        .await
        .unwrap();
    let err = result.expect_err("pg_sleep(60) must not outlive the grant");
    assert_sqlstate(&err, "57P01");
    assert!(
        later_by(failed_at, revoked_at) < secs(1),
        "the client heard {:?} after revoke",
        later_by(failed_at, revoked_at)
    );
    let gone_at = gone
        .await
        .unwrap()
        .expect("the jg_read backend never left pg_stat_activity");
    eprintln!(
        "after revoke: client told in {:?}, backend gone in {:?}",
        later_by(failed_at, revoked_at),
        later_by(gone_at, revoked_at)
    );
    assert!(
        later_by(gone_at, revoked_at) <= secs(1),
        "the backend outlived the revoke by {:?}",
        later_by(gone_at, revoked_at)
    );
    wait_for_reaper_termination(&pg).await;
    jg.assert_reaper_ended_one();
    let grant_id = id_of(&grant);
    jg.wait_for_audit("grant_revoked", |v| {
        event_is(v, "grant_revoked") && id_string(&v["grant"]) == grant_id
    })
    .await;

    let err = jg
        .connect(&Login::alice())
        .await
        .expect_err("no login after revoke");
    assert_sqlstate(&err, "28000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_and_kills_one_session() {
    let (pg, jg) = setup().await;
    let grant = jg.grant("alice", PG_TARGET, WRITE, "2m").await;
    let busy = jg.connect_ok(&Login::alice()).await;
    let quiet = jg.connect_ok(&Login::alice()).await;
    busy.simple_query("SELECT 1").await.unwrap();
    busy.simple_query("SELECT 2").await.unwrap();

    let sessions = jg.sessions().await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    for s in &sessions {
        assert_eq!(s["identity"], "alice", "{s}");
        assert_eq!(s["target"], PG_TARGET, "{s}");
        assert_eq!(s["level"], WRITE, "{s}");
        assert_eq!(id_string(&s["grant"]), id_of(&grant), "{s}");
        assert!(
            s["client_addr"]
                .as_str()
                .is_some_and(|a| a.contains("127.0.0.1")),
            "{s}"
        );
        assert!(s["started_at"].is_string(), "{s}");
    }
    let busy_session = sessions
        .iter()
        .find(|s| s["statements"].as_u64().is_some_and(|n| n >= 2))
        .unwrap_or_else(|| panic!("no session counted two statements: {sessions:?}"));
    jg.kill_session(&id_of(busy_session)).await;
    let killed_at = Instant::now();

    let err = within(
        secs(5),
        "a query on the killed session",
        busy.simple_query("SELECT 3"),
    )
    .await
    .expect_err("a killed session must not run queries");
    assert!(
        err.is_closed() || sqlstate(&err).as_deref() == Some("57P01"),
        "{}",
        describe_error(&err)
    );
    let left = eventually(secs(3), "one jg_write backend to remain", || async {
        let b = pg.backends_of("jg_write").await;
        (b.len() == 1).then_some(b)
    })
    .await;
    assert!(killed_at.elapsed() < secs(2), "{left:?}");
    assert_eq!(
        quiet
            .query_one("SELECT 4", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        4,
        "the other session goes on"
    );
    assert_eq!(jg.sessions().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_login_after_grant_ended_is_refused() {
    let (_pg, jg) = setup().await;
    let grant = jg.grant("alice", PG_TARGET, READ, "2s").await;
    assert_psql_login_works(&jg, "a fresh grant").await;
    let wait = later_by(expires_at(&grant), SystemTime::now()) + Duration::from_millis(300);
    tokio::time::sleep(wait).await;

    let run = jg.psql(&["-c", "SELECT 1"]).await;
    run.assert_failed();
    assert!(
        run.stderr.to_lowercase().contains("no active grant"),
        "psql stderr:\n{}",
        run.stderr
    );
    let err = jg
        .connect(&Login::alice())
        .await
        .expect_err("no login after expiry");
    assert_sqlstate(&err, "28000");
}

// ---- the audit log ---------------------------------------------------------------

fn audit_verify(file: &std::path::Path) -> Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["audit", "verify"])
        .arg(file)
        .output()
        .expect("run jitgate audit verify");
    Run::from(out)
}

fn numbers_in(text: &str) -> Vec<usize> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_chain_verifies_and_detects_edit() {
    let (_pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    jg.psql(&["-c", "SELECT 1", "-c", "SELECT 2", "-c", "SELECT 3"])
        .await
        .assert_ok(&jg);
    jg.wait_for_audit("the last statement's end", |v| event_is(v, "session_end"))
        .await;
    let path = jg.audit_path().to_owned();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 6, "expected a few audit lines, got:\n{text}");
    for line in &lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["prev"].is_string() && v["time"].is_string(), "{line}");
    }

    let ok = audit_verify(&path);
    assert!(
        ok.status.success(),
        "an untouched log must verify:\n{}{}",
        ok.stdout,
        ok.stderr
    );

    // Change one digit of the time in a middle line: still JSON, no longer the chain.
    let middle = lines.len() / 2;
    let mut edited_line = lines[middle].to_owned();
    let start = edited_line.find("\"time\":\"").map(|i| i + 8).unwrap_or(0);
    let at = start
        + edited_line[start..]
            .find(|c: char| c.is_ascii_digit())
            .expect("a digit to change");
    let digit = edited_line.as_bytes()[at] - b'0';
    edited_line.replace_range(at..at + 1, &((digit + 1) % 10).to_string());
    let mut edited = lines.clone();
    edited[middle] = &edited_line;
    let copy = jg.dir().join("audit-edited.log");
    std::fs::write(&copy, edited.join("\n") + "\n").unwrap();
    let bad = audit_verify(&copy);
    assert_eq!(
        bad.status.code(),
        Some(1),
        "an edited log must fail:\n{}{}",
        bad.stdout,
        bad.stderr
    );
    let said = format!("{}{}", bad.stdout, bad.stderr);
    let (edited_no, next_no) = (middle + 1, middle + 2);
    assert!(
        numbers_in(&said)
            .iter()
            .any(|n| *n == edited_no || *n == next_no),
        "verify should name line {edited_no} (or {next_no}):\n{said}"
    );

    // A deleted line is caught too.
    let mut shorter = lines.clone();
    shorter.remove(middle);
    let cut = jg.dir().join("audit-cut.log");
    std::fs::write(&cut, shorter.join("\n") + "\n").unwrap();
    let bad = audit_verify(&cut);
    assert_eq!(
        bad.status.code(),
        Some(1),
        "a log with a line deleted must fail:\n{}{}",
        bad.stdout,
        bad.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_is_audited_before_it_is_forwarded() {
    let (pg, mut jg) = setup_with(JitgateOptions {
        audit_fsync: Some("always".into()),
        ..JitgateOptions::default()
    })
    .await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let client = jg.connect_ok(&Login::alice()).await;
    let marker = format!("audit-before-forward-{}", rand::random::<u32>());
    let sql = format!("SELECT pg_sleep(30), '{marker}'");
    let _query = tokio::spawn(async move { client.simple_query(&sql).await });
    // The server is running it, so it was forwarded: its record must exist
    // even if the proxy dies this instant.
    pg.wait_for_active_query("jg_read", &marker).await;
    jg.kill_now();
    let text = std::fs::read_to_string(jg.audit_path()).unwrap_or_default();
    assert!(
        text.lines()
            .any(|l| l.contains(&marker) && l.contains("\"statement\"")),
        "a forwarded statement has no audit record after SIGKILL:\n{text}"
    );
}

/// The audit log's disk fills up mid-session: the statement whose record
/// could not be written is not forwarded, the client is told why, and the
/// session ends (jitgate fails closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_audit_disk_ends_the_session_and_forwards_nothing() {
    let disk = tempfile::tempdir().expect("tempdir");
    let Some(_tmpfs) = tmpfs::Tmpfs::mount(disk.path(), "1m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    // "always": no group-fsync tick writes held records behind our back, so
    // the first write to fail is the statement's.
    let (pg, jg) = setup_with(JitgateOptions {
        audit_path: Some(disk.path().join("audit.log")),
        audit_fsync: Some("always".into()),
        ..JitgateOptions::default()
    })
    .await;
    jg.grant("alice", PG_TARGET, WRITE, "2m").await;
    let client = jg.connect_ok(&Login::alice()).await;
    let table = format!("audit_full_{}", rand::random::<u32>());
    within(
        secs(10),
        "CREATE TABLE with room on the disk",
        client.simple_query(&format!("CREATE TABLE {table}_before (x int)")),
    )
    .await
    .expect("a write level can create a table");

    // Fill the disk; the next record needs several new pages.
    tmpfs::fill(disk.path());
    let sql = format!("CREATE TABLE {table} (x int) -- {}", "x".repeat(32 * 1024));
    let err = within(
        secs(10),
        "CREATE TABLE with the audit disk full",
        client.simple_query(&sql),
    )
    .await
    .expect_err("nothing may be forwarded without its audit record");
    let said = describe_error(&err);
    assert!(said.contains("cannot write its audit log"), "{said}");

    let superuser = pg.superuser_client("app").await;
    let exists = |name: String| {
        let superuser = &superuser;
        async move {
            superuser
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
                .await
                .expect("to_regclass")
                .get::<_, bool>(0)
        }
    };
    assert!(exists(format!("{table}_before")).await);
    assert!(
        !exists(table.clone()).await,
        "the statement whose record failed reached the server"
    );
    within(secs(10), "the session's end", async {
        while !client.is_closed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

// ---- bad input ----------------------------------------------------------------------

/// Send `bytes` as the first thing on a connection and check the proxy answers
/// with errors only (or just hangs up) and closes, without stalling.
async fn expect_refusal(mut conn: RawConn, bytes: &[u8], case: &str, must_error: bool) {
    let _ = conn.send(bytes).await;
    let ending = conn.until_closed(secs(5), case).await;
    eprintln!("{case}: {}", ending.describe());
    assert!(
        ending
            .messages
            .iter()
            .all(|m| m.tag == b'E' || m.tag == b'N'),
        "{case}: expected only errors, got {:?}",
        ending
            .messages
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
    );
    if must_error {
        assert!(
            !ending.errors().is_empty(),
            "{case}: expected an ErrorResponse, got {ending:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_startup_packets_get_errors_not_crashes() {
    let (_pg, mut jg) = setup_with(JitgateOptions {
        max_message_bytes: Some(1 << 20),
        ..JitgateOptions::default()
    })
    .await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let port = jg.pg_port();

    let mut garbage_version = Vec::new();
    garbage_version.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    put_cstr(&mut garbage_version, "user");
    put_cstr(&mut garbage_version, "alice");
    garbage_version.push(0);
    let mut garbage_version_packet = ((garbage_version.len() + 4) as u32).to_be_bytes().to_vec();
    garbage_version_packet.extend_from_slice(&garbage_version);

    let mut huge = 100_000_000u32.to_be_bytes().to_vec();
    huge.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    huge.extend_from_slice(b"user\0alice\0");

    let mut unterminated = startup_packet(&[("user", "alice"), ("database", PG_TARGET)]);
    unterminated.truncate(unterminated.len() - 2); // drop the final NULs…
    let len = unterminated.len() as u32;
    unterminated[..4].copy_from_slice(&len.to_be_bytes()); // …and say so in the length

    let plain_cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("length 0", vec![0, 0, 0, 0], false),
        ("length 3", vec![0, 0, 0, 3], false),
        ("length 2^31", vec![0x80, 0, 0, 0, 0, 3, 0, 0], false),
        (
            "length 0xffffffff",
            vec![0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0],
            false,
        ),
        ("length 100 MB, above the cap", huge.clone(), false),
        (
            "garbage protocol version",
            garbage_version_packet.clone(),
            true,
        ),
    ];
    for (case, bytes, must_error) in plain_cases {
        expect_refusal(
            RawConn::plain(port).await,
            &bytes,
            &format!("plaintext, {case}"),
            must_error,
        )
        .await;
        jg.assert_alive().await;
        assert_psql_login_works(&jg, &format!("plaintext, {case}")).await;
    }

    // Two bytes of a length, then EOF.
    let mut conn = RawConn::plain(port).await;
    let _ = conn.send(&[0, 0]).await;
    conn.finish_writing().await;
    let ending = conn.until_closed(secs(5), "two bytes then EOF").await;
    assert!(ending.messages.iter().all(|m| m.tag == b'E'), "{ending:?}");
    jg.assert_alive().await;

    let tls_cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "garbage protocol version inside TLS",
            garbage_version_packet.clone(),
            true,
        ),
        (
            "startup with no user",
            startup_packet(&[("database", PG_TARGET)]),
            true,
        ),
        (
            "startup with an unterminated parameter list",
            unterminated,
            false,
        ),
        (
            "a second SSLRequest inside TLS",
            request_packet(SSL_REQUEST_CODE),
            false,
        ),
        (
            "length 2^31 inside TLS",
            vec![0x80, 0, 0, 0, 0, 3, 0, 0],
            false,
        ),
        ("length 100 MB inside TLS", huge, false),
        ("length 5", vec![0, 0, 0, 5, 0], false),
    ];
    for (case, bytes, must_error) in tls_cases {
        expect_refusal(
            RawConn::tls(port).await,
            &bytes,
            &format!("TLS, {case}"),
            must_error,
        )
        .await;
        jg.assert_alive().await;
        assert_psql_login_works(&jg, &format!("TLS, {case}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_request_is_declined_and_tls_follows() {
    let (_pg, jg) = setup().await;
    let mut conn = RawConn::plain(jg.pg_port()).await;
    conn.send(&request_packet(GSSENC_REQUEST_CODE))
        .await
        .unwrap();
    let answer = conn.read_byte(secs(5)).await.unwrap();
    assert_eq!(
        answer,
        Some(b'N'),
        "GSSENCRequest should be answered 'N' like a server without GSSAPI"
    );
    conn.send(&request_packet(SSL_REQUEST_CODE)).await.unwrap();
    assert_eq!(
        conn.read_byte(secs(5)).await.unwrap(),
        Some(b'S'),
        "then SSLRequest gets 'S'"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sasl_messages_get_errors_not_crashes() {
    let (_pg, mut jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    jg.grant("bob", PG_TARGET, READ, "2m").await;
    let port = jg.pg_port();

    fn sasl_initial(mechanism: &str, declared_len: i32, data: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        put_cstr(&mut body, mechanism);
        body.extend_from_slice(&declared_len.to_be_bytes());
        body.extend_from_slice(data);
        tagged(b'p', &body)
    }
    let first = b"n,,n=,r=abcdefghijklmnop";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty SASLInitialResponse", tagged(b'p', &[])),
        ("mechanism without NUL", tagged(b'p', b"SCRAM-SHA-256")),
        (
            "unknown mechanism",
            sasl_initial("BOGUS", first.len() as i32, first),
        ),
        ("data length -1", sasl_initial("SCRAM-SHA-256", -1, &[])),
        (
            "data length beyond the message",
            sasl_initial("SCRAM-SHA-256", 1000, b"n,,"),
        ),
        (
            "data length negative",
            sasl_initial("SCRAM-SHA-256", -7, first),
        ),
        (
            "garbage client-first",
            sasl_initial("SCRAM-SHA-256", 5, b"\xff\xfe,,x"),
        ),
        (
            "channel binding claimed without TLS data",
            sasl_initial("SCRAM-SHA-256-PLUS", 22, b"p=tls-server-end-point"),
        ),
        ("message length 2^31", vec![b'p', 0x80, 0, 0, 0, 0, 0]),
        ("a Query instead of SASL", tagged(b'Q', b"SELECT 1\0")),
        ("Terminate instead of SASL", tagged(b'X', &[])),
    ];
    for (case, bytes) in cases {
        let mut conn = RawConn::tls(port).await;
        conn.send(&startup_packet(&[("user", "bob"), ("database", PG_TARGET)]))
            .await
            .unwrap();
        let sasl = conn
            .next_message(secs(10))
            .await
            .unwrap()
            .expect("an authentication request");
        assert_eq!(
            sasl.auth_code(),
            Some(10),
            "{case}: expected AuthenticationSASL, got {sasl}"
        );
        expect_refusal(conn, &bytes, case, false).await;
        jg.assert_alive().await;
    }

    // A well-formed client-first followed by a forged proof.
    let mut conn = RawConn::tls(port).await;
    conn.send(&startup_packet(&[("user", "bob"), ("database", PG_TARGET)]))
        .await
        .unwrap();
    conn.next_message(secs(10))
        .await
        .unwrap()
        .expect("AuthenticationSASL");
    conn.send(&sasl_initial("SCRAM-SHA-256", first.len() as i32, first))
        .await
        .unwrap();
    let cont = conn
        .next_message(secs(10))
        .await
        .unwrap()
        .expect("SASLContinue");
    assert_eq!(cont.auth_code(), Some(11), "{cont}");
    let server_first = String::from_utf8_lossy(&cont.body[4..]).into_owned();
    let nonce = server_first
        .split(',')
        .find_map(|p| p.strip_prefix("r="))
        .expect("server nonce");
    let forged = format!("c=biws,r={nonce},p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    conn.send(&tagged(b'p', forged.as_bytes())).await.unwrap();
    let ending = conn.until_closed(secs(10), "forged SCRAM proof").await;
    let errors = ending.errors();
    assert_eq!(errors.len(), 1, "a forged proof gets one error: {ending:?}");
    assert_eq!(
        errors[0].sqlstate().as_deref(),
        Some("28P01"),
        "{}",
        errors[0]
    );

    jg.assert_alive().await;
    assert_psql_login_works(&jg, "malformed SASL messages").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_is_refused() {
    let (_pg, mut jg) = setup_with(JitgateOptions {
        max_message_bytes: Some(1 << 20),
        ..JitgateOptions::default()
    })
    .await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;

    // After a real login, a Query whose header claims 200 MiB.
    let mut conn = RawConn::tls(jg.pg_port()).await;
    conn.login("alice", ALICE_SECRET, PG_TARGET)
        .await
        .unwrap_or_else(|e| panic!("raw SCRAM login failed: {e}\n--- jitgate log\n{}", jg.log()));
    let mut claim = vec![b'Q'];
    claim.extend_from_slice(&(200u32 << 20).to_be_bytes());
    claim.extend_from_slice(b"SELECT 1");
    let _ = conn.send(&claim).await;
    let ending = conn.until_closed(secs(5), "200 MiB Query header").await;
    assert!(
        !ending.errors().is_empty(),
        "a 200 MiB header should get an error: {ending:?}"
    );
    jg.assert_alive().await;

    // A Query and, in the same write, a header over the cap: the Query was
    // audited as forwarded, so it runs and its answer comes before the error.
    let mut conn = RawConn::tls(jg.pg_port()).await;
    conn.login("alice", ALICE_SECRET, PG_TARGET)
        .await
        .unwrap_or_else(|e| panic!("raw SCRAM login failed: {e}\n--- jitgate log\n{}", jg.log()));
    let mut both = vec![b'Q'];
    let query = b"SELECT 40 + 2\0";
    both.extend_from_slice(&(4 + query.len() as u32).to_be_bytes());
    both.extend_from_slice(query);
    both.extend_from_slice(&claim);
    let _ = conn.send(&both).await;
    let ending = conn
        .until_closed(secs(5), "a Query, then a 200 MiB header")
        .await;
    let tags: Vec<u8> = ending.messages.iter().map(|m| m.tag).collect();
    let complete = tags.iter().position(|&t| t == b'C');
    let error = tags.iter().position(|&t| t == b'E');
    assert!(
        matches!((complete, error), (Some(c), Some(e)) if c < e),
        "the Query's CommandComplete, then the error: {}",
        ending.describe()
    );
    jg.assert_alive().await;

    // tokio-postgres: a 2 MiB query string is over the 1 MiB cap…
    let client = jg.connect_ok(&Login::alice()).await;
    let big = format!("SELECT length('{}')", "x".repeat(2 << 20));
    let err = within(secs(10), "the oversize query", client.simple_query(&big))
        .await
        .expect_err("a query above max_message_bytes must be refused");
    eprintln!("oversize query refused with: {}", describe_error(&err));
    jg.assert_alive().await;

    // …and a 512 KiB one is fine. (On a write level: a read level refuses
    // statements too long for the classifier, which is policy, not framing.)
    jg.grant("bob", PG_TARGET, WRITE, "2m").await;
    let client = jg.connect_ok(&Login::new("bob", BOB_SECRET)).await;
    let ok = format!("SELECT length('{}')", "x".repeat(512 << 10));
    let rows = within(secs(10), "a query under the cap", client.simple_query(&ok))
        .await
        .unwrap();
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("524288"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_timeout_closes_idle_connections() {
    let (_pg, mut jg) = setup_with(JitgateOptions {
        handshake_timeout: Some("1s".into()),
        ..JitgateOptions::default()
    })
    .await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    jg.grant("bob", PG_TARGET, READ, "2m").await;
    let port = jg.pg_port();

    let silent = async {
        let mut conn = RawConn::plain(port).await;
        conn.until_closed(secs(3), "silent").await
    };
    let silent_after_tls = async {
        let mut conn = RawConn::tls(port).await;
        conn.until_closed(secs(3), "silent after TLS").await
    };
    let half_a_startup = async {
        let mut conn = RawConn::tls(port).await;
        let _ = conn.send(&[0, 0, 0, 50, 0, 3]).await;
        conn.until_closed(secs(3), "half a startup").await
    };
    let stuck_in_sasl = async {
        let mut conn = RawConn::tls(port).await;
        conn.send(&startup_packet(&[("user", "bob"), ("database", PG_TARGET)]))
            .await
            .unwrap();
        conn.until_closed(secs(3), "stuck in SASL").await
    };
    let started = Instant::now();
    let (a, b, c, d) = tokio::join!(silent, silent_after_tls, half_a_startup, stuck_in_sasl);
    for (case, ending) in [
        ("silent", a),
        ("silent after TLS", b),
        ("half a startup", c),
        ("stuck in SASL", d),
    ] {
        assert!(
            ending
                .messages
                .iter()
                .all(|m| m.tag == b'E' || m.tag == b'R'),
            "{case}: unexpected messages {ending:?}"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "closed before the timeout could have passed"
    );
    jg.assert_alive().await;
    assert_psql_login_works(&jg, "idle handshakes").await;
}

// ---- upstream trouble and secrets ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_gives_a_clear_error() {
    let (_pg, mut jg) = setup_with(JitgateOptions {
        upstream_port: Some(free_port()),
        ..JitgateOptions::default()
    })
    .await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let started = Instant::now();
    let run = jg.psql(&["-c", "SELECT 1"]).await;
    run.assert_failed();
    assert!(
        started.elapsed() < secs(10),
        "the error took {:?}",
        started.elapsed()
    );
    let stderr = run.stderr.to_lowercase();
    assert!(
        [
            "upstream",
            "unreachable",
            "cannot connect",
            "could not connect",
            "refused"
        ]
        .iter()
        .any(|w| stderr.contains(w)),
        "the error should say the database is unreachable:\n{}",
        run.stderr
    );
    for secret in &jg.upstream_secrets {
        assert!(
            !run.stderr.contains(secret.as_str()),
            "an upstream secret leaked:\n{}",
            run.stderr
        );
    }
    let err = jg
        .connect(&Login::alice())
        .await
        .expect_err("upstream is down");
    assert!(
        err.as_db_error().is_some(),
        "expected an ErrorResponse, got {}",
        describe_error(&err)
    );
    jg.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_secrets_never_reach_clients_or_logs() {
    let wrong = format!("wrong-upstream-{}", rand::random::<u64>());
    let (pg, jg) = setup_with(JitgateOptions {
        write_password_override: Some(wrong.clone()),
        ..JitgateOptions::default()
    })
    .await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    jg.grant("bob", PG_TARGET, WRITE, "2m").await;

    let mut seen = String::new();
    let ok = jg
        .psql(&["-c", "SELECT current_user", "-c", "SHOW ALL"])
        .await;
    ok.assert_ok(&jg);
    seen += &(ok.stdout + &ok.stderr);
    // bob's level holds a wrong upstream password: the login fails upstream.
    let failed = jg
        .psql_as(&Login::new("bob", BOB_SECRET), &["-c", "SELECT 1"], None)
        .await;
    failed.assert_failed();
    seen += &(failed.stdout + &failed.stderr);
    let client = jg.connect_ok(&Login::alice()).await;
    for row in client
        .simple_query("SELECT current_setting('application_name')")
        .await
        .unwrap()
    {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = row {
            seen += r.get(0).unwrap_or_default();
        }
    }
    seen += &jg.grants().await.to_string();
    seen += &serde_json::to_string(&jg.sessions().await).unwrap();
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let audit = std::fs::read_to_string(jg.audit_path()).unwrap_or_default();
    let log = jg.log();

    for secret in [
        pg.read_password.as_str(),
        pg.write_password.as_str(),
        wrong.as_str(),
    ] {
        assert!(
            !seen.contains(secret),
            "an upstream secret reached a client:\n{seen}"
        );
        assert!(
            !audit.contains(secret),
            "an upstream secret is in the audit log"
        );
        assert!(
            !log.contains(secret),
            "an upstream secret is in jitgate's log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_requires_a_token_and_the_admin_group() {
    let (_pg, jg) = setup().await;
    let body = serde_json::json!({
        "identity": "alice", "target": PG_TARGET, "level": READ, "duration": "2m", "reason": "self-service",
    });
    let (status, _) = jg.api(reqwest::Method::GET, "/v1/grants", None, None).await;
    assert_eq!(status, 401);
    let (status, _) = jg
        .api(
            reqwest::Method::POST,
            "/v1/grants",
            Some("not-a-secret"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = jg
        .api(
            reqwest::Method::POST,
            "/v1/grants",
            Some(ALICE_SECRET),
            Some(body),
        )
        .await;
    assert_eq!(status, 403, "a developer cannot grant herself access");

    let grant = jg.grant("alice", PG_TARGET, READ, "2m").await;
    for field in [
        "id",
        "identity",
        "target",
        "level",
        "expires_at",
        "reason",
        "granted_by",
    ] {
        assert!(!grant[field].is_null(), "grant lacks {field}: {grant}");
    }
    assert_eq!(grant["granted_by"], "admin");
    let remaining = later_by(expires_at(&grant), SystemTime::now());
    assert!(
        remaining > secs(100) && remaining <= secs(120),
        "expires in {remaining:?}"
    );
    let listed = jg.grants().await;
    assert!(
        listed.to_string().contains(&id_of(&grant)),
        "GET /v1/grants lacks the grant: {listed}"
    );
    jg.wait_for_audit("grant_created", |v| event_is(v, "grant_created"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_3_2_startup_is_negotiated_down_to_3_0() {
    let (_pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let mut conn = RawConn::tls(jg.pg_port()).await;
    let mut startup = startup_packet(&[
        ("user", "alice"),
        ("database", PG_TARGET),
        ("_pq_.jitgate_test", "on"),
    ]);
    startup[4..8].copy_from_slice(&PROTOCOL_3_2.to_be_bytes());
    conn.send(&startup).await.unwrap();
    let first = conn
        .next_message(secs(10))
        .await
        .unwrap()
        .expect("an answer to a 3.2 startup");
    assert_eq!(
        first.tag, b'v',
        "a 3.2 startup should get NegotiateProtocolVersion, got {first}"
    );
    let newest_minor = u32::from_be_bytes(first.body[..4].try_into().unwrap());
    assert_eq!(newest_minor, 0, "jitgate should offer 3.0");
    let after_ok = conn
        .authenticate(ALICE_SECRET)
        .await
        .unwrap_or_else(|e| panic!("login after negotiation failed: {e}\n{}", jg.log()));
    let key = after_ok
        .iter()
        .find(|m| m.tag == b'K')
        .expect("BackendKeyData");
    assert_eq!(key.body.len(), 8, "protocol 3.0 keys are 4 bytes: {key}");

    conn.send(&tagged(b'Q', b"SELECT 41 + 1\0")).await.unwrap();
    let mut tags = Vec::new();
    let mut value = None;
    loop {
        let m = conn
            .next_message(secs(10))
            .await
            .unwrap()
            .expect("the query's answer");
        if m.tag == b'D' {
            value = Some(String::from_utf8_lossy(&m.body[6..]).into_owned());
        }
        tags.push(m.tag as char);
        if m.tag == b'Z' {
            break;
        }
    }
    assert_eq!(tags, ['T', 'D', 'C', 'Z']);
    assert_eq!(value.as_deref(), Some("42"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_rate_limited() {
    let (_pg, jg) = setup_with(JitgateOptions {
        max_login_failures: Some(3),
        ..JitgateOptions::default()
    })
    .await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    for attempt in 1..=3 {
        let err = jg
            .connect(&Login::new("alice", &format!("guess-{attempt}")))
            .await
            .expect_err("a wrong secret must not log in");
        assert_sqlstate(&err, "28P01");
    }
    let err = jg
        .connect(&Login::alice())
        .await
        .expect_err("after too many failures, even the right secret waits");
    assert!(
        describe_error(&err).contains("too many"),
        "the refusal should say why: {}",
        describe_error(&err)
    );
    jg.wait_for_audit("a rate-limited login", |v| {
        event_is(v, "login_failed") && v.to_string().contains("rate")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_handshakes_and_sessions_are_capped() {
    let (_pg, jg) = setup_with(JitgateOptions {
        max_pending_handshakes: Some(2),
        max_sessions: Some(1),
        handshake_timeout: Some("10s".into()),
        ..JitgateOptions::default()
    })
    .await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;

    // Two connections that spoke (SSLRequest, TLS) and then stall fill the
    // handshake slots; a third is turned away at once rather than queued
    // behind them. (Silent ones take no such slot: see tests/gate_abuse.rs.)
    let idle = [
        RawConn::tls(jg.pg_port()).await,
        RawConn::tls(jg.pg_port()).await,
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut third = RawConn::plain(jg.pg_port()).await;
    let _ = third
        .send(&startup_packet(&[
            ("user", "alice"),
            ("database", PG_TARGET),
        ]))
        .await;
    let ending = third
        .until_closed(secs(3), "a handshake over the cap")
        .await;
    eprintln!("over the handshake cap: {}", ending.describe());
    drop(idle);
    let client = eventually(secs(5), "a login once the slots are free", || async {
        jg.connect(&Login::alice()).await.ok()
    })
    .await;

    // One session is the cap: a second login is refused while it lives.
    let err = jg
        .connect(&Login::alice())
        .await
        .expect_err("a session over max_sessions must be refused");
    assert!(
        err.as_db_error().is_some(),
        "expected an ErrorResponse, got {}",
        describe_error(&err)
    );
    eprintln!("over the session cap: {}", describe_error(&err));
    drop(client);
    eventually(secs(5), "a login once the session ended", || async {
        jg.connect(&Login::alice()).await.ok()
    })
    .await;
}

// ---- the read level's upstream account -------------------------------------------

/// Give `jg_read` more than reading, as the server's superuser.
async fn let_the_read_account(pg: &PgServer, sql: &str) {
    pg.superuser_client("app")
        .await
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A read login through `jg`, expected to be refused because of the read
/// account; returns the message the client got.
async fn read_login_refused_for_the_account(jg: &Jitgate) -> String {
    let err = jg
        .connect(&Login::alice())
        .await
        .err()
        .unwrap_or_else(|| panic!("the read login went through\n{}", jg.log()));
    assert_sqlstate(&err, "42501");
    let message = describe_error(&err);
    for needle in [
        "upstream account of level read on demo-pg can write",
        "refuses read-only logins",
        "allow_privileged_read_account = true",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    jg.wait_for_audit("the session_refused record", |v| {
        event_is(v, "session_refused") && v["reason"] == "read_account_can_write"
    })
    .await;
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_account_that_can_write_is_refused_at_login_with_what_it_can_do() {
    let pg = PgServer::start().await;
    // What to give jitgate's read account, how to take it back, the
    // finding the log names, and what the client is told first.
    for (grant, revoke, finding, told) in [
        (
            "ALTER ROLE jg_read SUPERUSER",
            "ALTER ROLE jg_read NOSUPERUSER",
            "it is a superuser",
            "it is a superuser",
        ),
        (
            "GRANT INSERT ON items TO jg_read",
            "REVOKE INSERT ON items FROM jg_read",
            "it has INSERT on public.items",
            "it has INSERT on public.items",
        ),
        (
            "GRANT pg_write_all_data TO jg_read",
            "REVOKE pg_write_all_data FROM jg_read",
            "it is a member of pg_write_all_data",
            "it is a member of pg_write_all_data",
        ),
        // Through a role of its own, even one it does not inherit from.
        (
            "CREATE ROLE jg_writers NOINHERIT; GRANT pg_write_all_data TO jg_writers; \
             GRANT jg_writers TO jg_read",
            "DROP ROLE jg_writers",
            "it is a member of pg_write_all_data",
            "it is a member of pg_write_all_data",
        ),
        // An owner holds every privilege on what it owns.
        (
            "ALTER TABLE items OWNER TO jg_read",
            "ALTER TABLE items OWNER TO jg_write",
            "it owns relation public.items",
            "it has INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER on public.items",
        ),
    ] {
        let_the_read_account(&pg, grant).await;
        let jg = Jitgate::start(&pg, JitgateOptions::default()).await;
        assert!(
            jg.log()
                .contains("the read level's upstream account can write")
                && jg.log().contains(finding),
            "{grant}: the start should log why the level is refused:\n{}",
            jg.log()
        );
        jg.grant("alice", PG_TARGET, READ, "2m").await;
        let message = read_login_refused_for_the_account(&jg).await;
        assert!(message.contains(told), "{grant}: {message}");
        assert!(
            pg.backends_of("jg_read").await.is_empty(),
            "{grant}: no session may stay on the server"
        );
        drop(jg);
        let_the_read_account(&pg, revoke).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_privileged_read_account_lets_a_writing_read_account_in_with_a_warning() {
    let pg = PgServer::start().await;
    let_the_read_account(&pg, "ALTER ROLE jg_read SUPERUSER").await;
    let jg = Jitgate::start(
        &pg,
        JitgateOptions {
            allow_privileged_read_account: true,
            ..JitgateOptions::default()
        },
    )
    .await;
    let log = jg.log();
    assert!(
        log.contains("WARN")
            && log.contains("allow_privileged_read_account = true")
            && log.contains("it is a superuser"),
        "the start should warn, with the check's result:\n{log}"
    );
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let client = jg.connect_ok(&Login::alice()).await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .expect("SELECT on the read level")
        .get(0);
    assert_eq!(n, 3);
    // The classifier still refuses writes on the level.
    let err = client
        .batch_execute("DELETE FROM items")
        .await
        .expect_err("DELETE on a read level");
    assert_sqlstate(&err, "25006");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_account_is_checked_at_start_and_admitted() {
    let (_pg, jg) = setup().await;
    assert!(
        jg.log()
            .contains("the read level's upstream account is read-only on the server"),
        "{}",
        jg.log()
    );
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let client = jg.connect_ok(&Login::alice()).await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .expect("SELECT on the read level")
        .get(0);
    assert_eq!(n, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_says_whether_the_read_account_can_write() {
    let (pg, jg) = setup().await;
    let config = jg.config_path().to_owned();
    let run = |jg: &Jitgate| -> Run {
        jg.server_command(&["check-config", "-c"])
            .arg(&config)
            .output()
            .expect("run check-config")
            .into()
    };
    let ok = run(&jg);
    assert!(ok.status.success(), "{ok:?}");
    assert!(
        ok.stdout
            .contains("level read on demo-pg (account jg_read): read-only on the server"),
        "{ok:?}"
    );

    let_the_read_account(&pg, "GRANT UPDATE ON items TO jg_read").await;
    let bad = run(&jg);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(
        bad.stdout
            .contains("can write (it has UPDATE on public.items)"),
        "{bad:?}"
    );
    for secret in &jg.upstream_secrets {
        assert!(
            !bad.stdout.contains(secret) && !bad.stderr.contains(secret),
            "check-config printed an upstream secret"
        );
    }

    let offline = jg
        .server_command(&["check-config", "--offline", "-c"])
        .arg(&config)
        .output()
        .expect("run check-config --offline");
    assert!(offline.status.success(), "{offline:?}");
}

/// Functions that change things are refused on a read grant although they
/// are called from a SELECT, and functions jitgate does not know are
/// refused as unknown; the server's own lock table and backend list are the
/// witnesses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_level_refuses_writing_and_unknown_functions() {
    let (pg, jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "2m").await;
    let victim = pg.superuser_client("app").await;
    let victim_pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("the victim's pid")
        .get(0);
    let su = pg.superuser_client("app").await;
    su.batch_execute(
        "CREATE FUNCTION public.shout(t text) RETURNS text LANGUAGE sql AS 'SELECT upper(t)'; \
         CREATE FUNCTION public.lock_it(a int, b int) RETURNS int LANGUAGE sql \
           AS 'SELECT pg_advisory_lock(4242); SELECT a + b'; \
         CREATE OPERATOR public.%%% (LEFTARG = int, RIGHTARG = int, FUNCTION = public.lock_it); \
         CREATE OPERATOR public.@+ (LEFTARG = int, RIGHTARG = int, FUNCTION = public.lock_it); \
         CREATE OPERATOR public.+ (LEFTARG = int, RIGHTARG = int, FUNCTION = public.lock_it)",
    )
    .await
    .expect("a user function and operators that call it");
    let client = jg.connect_ok(&Login::alice()).await;
    for (sql, what) in [
        ("SELECT pg_advisory_lock(4242)", "can change data"),
        ("SELECT pg_try_advisory_lock(4242)", "can change data"),
        ("SELECT pg_notify('c', 'x')", "can change data"),
        (
            &*format!("SELECT pg_terminate_backend({victim_pid})"),
            "can change data",
        ),
        ("SELECT txid_current()", "can change data"),
        (
            "SELECT query_to_xml('SELECT pg_advisory_lock(4242)', true, false, '')",
            "can change data",
        ),
        ("SELECT public.shout('x')", "could not classify"),
        ("SELECT 1 %%% 2", "could not classify"),
        ("SELECT 1 @+ 2", "could not classify"),
        ("SELECT 1 OPERATOR(public.+) 2", "could not classify"),
        ("SET search_path = public, pg_catalog", "could not classify"),
    ] {
        let err = client
            .simple_query(sql)
            .await
            .expect_err(&format!("`{sql}` must be refused on a read grant"));
        assert_sqlstate(&err, "25006");
        assert!(
            describe_error(&err).contains(what),
            "`{sql}`: {}",
            describe_error(&err)
        );
    }
    let locks: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
            &[],
        )
        .await
        .expect("count advisory locks")
        .get(0);
    assert_eq!(locks, 0, "an advisory lock was taken");
    let alive: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
            &[&victim_pid],
        )
        .await
        .expect("look for the victim")
        .get(0);
    assert_eq!(alive, 1, "the other backend was terminated");
    // Reads through built-ins still work, psql's and monitoring's included.
    let row = client
        .query_one(
            "SELECT lower('A'), pg_size_pretty(pg_total_relation_size('items')), \
             pg_catalog.pg_get_userbyid(10) IS NOT NULL, now() <= clock_timestamp()",
            &[],
        )
        .await
        .expect("reads through built-in functions");
    assert_eq!(row.get::<_, String>(0), "a");
}
