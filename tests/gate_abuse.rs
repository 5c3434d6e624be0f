//! The gate under abuse: parallel password guessing, silent connections that
//! hog handshake slots, and the one login budget the listeners and the admin
//! API share.
//!
//! Each test runs a real jitgate in front of a throwaway PostgreSQL or
//! MariaDB and drives it with real clients (tokio-postgres, mysql_async) or
//! raw sockets. The witnesses are the audit log's `login_failed` records
//! (how many attempts reached the secret check, how many the limiter
//! refused) and the servers' own view of the sessions that got through.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use support::*;

const GUESSES: usize = 20;
const LIMIT: u32 = 3;
/// Long enough that a burst of parallel handshakes fits in one window on a
/// slow debug build, short enough to wait out.
const WINDOW: &str = "6s";

/// `login_failed` records of `identity`, by reason.
fn failed_logins(lines: &[Value], identity: &str, reason: &str) -> usize {
    lines
        .iter()
        .filter(|v| v["event"] == "login_failed" && v["identity"] == identity)
        .filter(|v| v["reason"] == reason)
        .count()
}

/// Wait until `count` `login_failed` records of alice are in the audit log
/// (one per attempt), then return how many were bad secrets (the attempts
/// that reached the check) and how many the limiter refused.
async fn failures_once_all_recorded(
    count: usize,
    audit_lines: impl Fn() -> Vec<Value>,
) -> (usize, usize) {
    eventually(secs(10), "a login_failed record per attempt", || {
        let lines = audit_lines();
        let bad = failed_logins(&lines, "alice", "bad_secret");
        let limited = failed_logins(&lines, "alice", "rate_limited");
        std::future::ready((bad + limited >= count).then_some((bad, limited)))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_passwords_reach_the_check_only_up_to_the_limit_postgres() {
    let pg = PgServer::start().await;
    let jg = Jitgate::start(
        &pg,
        JitgateOptions {
            max_login_failures: Some(LIMIT),
            login_failure_window: Some(WINDOW.into()),
            ..JitgateOptions::default()
        },
    )
    .await;
    jg.grant("alice", PG_TARGET, "read", "5m").await;

    let started = Instant::now();
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..GUESSES {
        let login = Login::new("alice", &format!("guess-{i}"));
        guesses.spawn(guess_postgres(jg.pg_port(), login));
    }
    let mut refusals = Vec::new();
    while let Some(r) = guesses.join_next().await {
        refusals.push(r.expect("guess task"));
    }
    let burst = started.elapsed();
    assert!(
        refusals.iter().all(Option::is_some),
        "a wrong password logged in"
    );

    let (bad, limited) = failures_once_all_recorded(GUESSES, || jg.audit_lines()).await;
    assert!(
        burst < secs(6),
        "the burst took {burst:?}, longer than the window"
    );
    assert_eq!(
        bad, LIMIT as usize,
        "attempts that reached the secret check; limiter refusals: {limited}"
    );
    assert_eq!(limited, GUESSES - LIMIT as usize);
    let told = refusals
        .iter()
        .flatten()
        .filter(|m| m.contains("too many failed logins"))
        .count();
    assert_eq!(
        told, limited,
        "each refused client is told why: {refusals:?}"
    );

    // The right secret waits out the window too, then logs in.
    let err = jg
        .connect(&Login::alice())
        .await
        .expect_err("alice has no attempts left in this window");
    assert!(describe_error(&err).contains("too many failed logins"));
    let client = eventually(secs(15), "a login once the window passed", || async {
        jg.connect(&Login::alice()).await.ok()
    })
    .await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    assert_eq!(
        pg.backends_of("jg_read").await.len(),
        1,
        "the server sees the one session that logged in"
    );
}

/// One tokio-postgres login with a wrong password: the server's message.
async fn guess_postgres(port: u16, login: Login) -> Option<String> {
    let mut config = login.config(port);
    config.connect_timeout(secs(10));
    match within(
        secs(20),
        "a guessed login",
        config.connect(AnyCertTls::new()),
    )
    .await
    {
        Ok(_) => None,
        Err(e) => Some(describe_error(&e)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_passwords_reach_the_check_only_up_to_the_limit_mysql() {
    let db = MariaDb::start();
    let jg = Jitgate::start(
        &db,
        JitgateOptions {
            max_login_failures: Some(LIMIT),
            login_failure_window: Some(WINDOW.into()),
            ..JitgateOptions::default()
        },
    )
    .await;
    jg.grant("alice", MYSQL_TARGET, "read", "5m").await;

    let started = Instant::now();
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..GUESSES {
        let opts = jg.async_opts(&format!("guess-{i}"));
        guesses.spawn(async move {
            match within(secs(20), "a guessed login", mysql_async::Conn::new(opts)).await {
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            }
        });
    }
    let mut refusals = Vec::new();
    while let Some(r) = guesses.join_next().await {
        refusals.push(r.expect("guess task"));
    }
    let burst = started.elapsed();
    assert!(
        refusals.iter().all(Option::is_some),
        "a wrong password logged in"
    );

    let (bad, limited) = failures_once_all_recorded(GUESSES, || jg.audit_lines()).await;
    assert!(
        burst < secs(6),
        "the burst took {burst:?}, longer than the window"
    );
    assert_eq!(
        bad, LIMIT as usize,
        "attempts that reached the secret check; limiter refusals: {limited}"
    );
    assert_eq!(limited, GUESSES - LIMIT as usize);
    let told = refusals
        .iter()
        .flatten()
        .filter(|m| m.contains("too many failed logins"))
        .count();
    assert_eq!(
        told, limited,
        "each refused client is told why: {refusals:?}"
    );

    let err = mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
        .await
        .expect_err("alice has no attempts left in this window");
    assert!(err.to_string().contains("too many failed logins"), "{err}");
    let deadline = Instant::now() + secs(15);
    let mut conn = loop {
        match mysql_async::Conn::new(jg.async_opts(ALICE_SECRET)).await {
            Ok(conn) => break conn,
            Err(e) if Instant::now() < deadline => {
                assert!(e.to_string().contains("too many failed logins"), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no login once the window passed: {e}\n{}", jg.log()),
        }
    };
    assert_server_runs_as_the_read_account(&mut conn).await;
}

/// The server's own word that the session got through to the level's account.
async fn assert_server_runs_as_the_read_account(conn: &mut mysql_async::Conn) {
    use mysql_async::prelude::Queryable;
    let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert!(
        user.as_deref().is_some_and(|u| u.starts_with("jg_read@")),
        "{user:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bearer_tokens_spend_the_addresss_budget_for_database_logins_too() {
    let pg = PgServer::start().await;
    let jg = Jitgate::start(
        &pg,
        JitgateOptions {
            max_login_failures: Some(LIMIT),
            ..JitgateOptions::default()
        },
    )
    .await;
    jg.grant("alice", PG_TARGET, "read", "5m").await;
    for i in 0..LIMIT {
        let (status, _) = jg
            .api(
                reqwest::Method::GET,
                "/v1/grants",
                Some(&format!("guess-{i}")),
                None,
            )
            .await;
        assert_eq!(status, 401);
    }
    let (status, body) = jg
        .api(reqwest::Method::GET, "/v1/grants", Some("guess-x"), None)
        .await;
    assert_eq!(status, 429, "{body}");

    // The same address, another door, the right secret: still no attempts left.
    let err = jg
        .connect(&Login::alice())
        .await
        .expect_err("the address spent its budget on the admin API");
    assert!(
        describe_error(&err).contains("too many failed logins"),
        "{}",
        describe_error(&err)
    );
    jg.wait_for_audit("the refused database login", |v| {
        v["event"] == "login_failed" && v["identity"] == "alice" && v["reason"] == "rate_limited"
    })
    .await;
    assert!(pg.backends_of("jg_read").await.is_empty());
}

// ---- silent connections ------------------------------------------------------

/// Idle connections that never send a byte, from `local` (any 127.0.0.0/8
/// address works on Linux), each watched until jitgate closes it; a watch
/// ends with how long its connection lived.
async fn open_silent(
    local: &str,
    count: usize,
    jitgate: SocketAddr,
    watches: &mut tokio::task::JoinSet<Duration>,
) {
    for _ in 0..count {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{local}:0").parse().unwrap())
            .expect("bind a loopback address");
        let mut tcp: TcpStream = within(secs(5), "TCP connect", socket.connect(jitgate))
            .await
            .expect("connect to jitgate");
        let connected = Instant::now();
        watches.spawn(async move {
            // MySQL's greeting, or a refusal: read whatever comes until EOF.
            let mut buf = [0u8; 512];
            while let Ok(n) = tcp.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            connected.elapsed()
        });
    }
}

/// 300 silent connections from one address (over its per-address cap) and
/// 300 more spread over ten others (over the total of handshake slots).
async fn flood(jitgate: SocketAddr) -> tokio::task::JoinSet<Duration> {
    let mut watches = tokio::task::JoinSet::new();
    open_silent("127.0.0.2", 300, jitgate, &mut watches).await;
    for i in 1..=10 {
        open_silent(&format!("127.0.1.{i}"), 30, jitgate, &mut watches).await;
    }
    watches
}

/// Every silent connection was closed: those over their address's cap at
/// once, the others after the first-message timeout (3 s by default).
async fn assert_silent_ones_closed(mut watches: tokio::task::JoinSet<Duration>) {
    let mut refused = 0;
    let mut timed_out = 0;
    within(
        secs(15),
        "jitgate to close every silent connection",
        async {
            while let Some(lived) = watches.join_next().await {
                if lived.expect("watch task") < Duration::from_millis(1500) {
                    refused += 1;
                } else {
                    timed_out += 1;
                }
            }
        },
    )
    .await;
    // The default cap is 32 per address: 300 - 32 from 127.0.0.2 are refused.
    assert_eq!(
        refused,
        300 - 32,
        "refused at once (timed out: {timed_out})"
    );
    assert_eq!(timed_out, 32 + 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_do_not_keep_a_good_postgres_client_out() {
    let pg = PgServer::start().await;
    let jg = Jitgate::start(&pg, JitgateOptions::default()).await;
    jg.grant("alice", PG_TARGET, "read", "5m").await;
    let watches = flood(SocketAddr::from(([127, 0, 0, 1], jg.pg_port()))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let client = within(secs(2), "a good login past 600 silent connections", async {
        jg.connect_ok(&Login::alice()).await
    })
    .await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    assert_eq!(pg.backends_of("jg_read").await.len(), 1);
    assert_silent_ones_closed(watches).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_do_not_keep_a_good_mysql_client_out() {
    let db = MariaDb::start();
    let jg = Jitgate::start(&db, JitgateOptions::default()).await;
    jg.grant("alice", MYSQL_TARGET, "read", "5m").await;
    let watches = flood(SocketAddr::from(([127, 0, 0, 1], jg.mysql_port()))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let opts = jg.async_opts(ALICE_SECRET);
    let mut conn = within(secs(2), "a good login past 600 silent connections", async {
        mysql_async::Conn::new(opts).await
    })
    .await
    .unwrap_or_else(|e| panic!("login failed: {e}\n{}", jg.log()));
    assert_server_runs_as_the_read_account(&mut conn).await;
    assert_silent_ones_closed(watches).await;
}

// ---- admin API connections ---------------------------------------------------

/// Read from `tcp` until jitgate closes it (or `limit` passes); what it sent
/// and how long that took.
async fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(limit, async {
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        closed.is_ok(),
        "jitgate kept the admin connection open for {limit:?}; it sent: {text}"
    );
    (text, started.elapsed())
}

fn admin_addr(jg: &Jitgate) -> String {
    jg.admin_url().trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_connections_over_the_cap_get_503_while_database_listeners_accept() {
    let pg = PgServer::start().await;
    let jg = Jitgate::start(
        &pg,
        JitgateOptions {
            extra_limits: "admin_max_connections = 4\nadmin_idle_timeout = \"3s\"\n".into(),
            ..JitgateOptions::default()
        },
    )
    .await;
    jg.grant("alice", PG_TARGET, "read", "5m").await;
    // The harness's own HTTP client keeps connections alive: let the idle
    // timeout close them, so the four slots are free.
    tokio::time::sleep(Duration::from_millis(3500)).await;

    // Four silent connections take the slots; the fifth is told 503 and closed.
    let addr = admin_addr(&jg);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            TcpStream::connect(&addr)
                .await
                .expect("connect to the admin API"),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = TcpStream::connect(&addr)
        .await
        .expect("connect to the admin API");
    let (refusal, _) = read_until_closed(&mut fifth, secs(2)).await;
    assert!(
        refusal.contains("503 Service Unavailable") && refusal.contains("admin_max_connections"),
        "{refusal}"
    );
    for tcp in &mut held {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(10), tcp.read(&mut byte)).await;
        assert!(
            read.is_err(),
            "a connection within the cap was answered or closed"
        );
    }

    // The database listener is not short of anything.
    let client = within(
        secs(5),
        "a database login while the admin API is full",
        async { jg.connect_ok(&Login::alice()).await },
    )
    .await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);

    drop(held);
    eventually(secs(5), "the admin API once its slots are free", || async {
        let (status, _) = jg
            .admin_api()
            .call(reqwest::Method::GET, "/healthz", None, None)
            .await
            .ok()?;
        (status == 200).then_some(())
    })
    .await;

    // Headroom for the database listeners: the soft open-files limit was
    // raised to the hard one at start.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", jg.pid())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files in /proc/<pid>/limits")
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect();
    assert_eq!(
        open_files[0], open_files[1],
        "soft and hard: {open_files:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_admin_connections_are_closed() {
    let pg = PgServer::start().await;
    let mut jg = Jitgate::start(
        &pg,
        JitgateOptions {
            extra_limits: "admin_header_read_timeout = \"1s\"\nadmin_idle_timeout = \"2s\"\n\
                           admin_request_timeout = \"3s\"\n"
                .into(),
            ..JitgateOptions::default()
        },
    )
    .await;
    let addr = admin_addr(&jg);

    let silent = async {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        read_until_closed(&mut tcp, secs(5)).await
    };
    // Header bytes trickle in, so the connection is never idle: the header
    // read timeout is what ends it.
    let trickle = async {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: jitgate\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        for i in 0..20 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if tcp
                .write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
        let (text, _) = read_until_closed(&mut tcp, secs(5)).await;
        (text, started.elapsed())
    };
    // One request answered, then nothing: kept alive only so long.
    let kept_alive = async {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: jitgate\r\n\r\n")
            .await
            .unwrap();
        read_until_closed(&mut tcp, secs(6)).await
    };
    // A body that stalls halfway: the handler waits for it, the socket is idle.
    let stalled_body = async {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /v1/grants HTTP/1.1\r\nhost: jitgate\r\nauthorization: Bearer {}\r\n\
             content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"identity\":",
            ADMIN_SECRET
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        read_until_closed(&mut tcp, secs(8)).await
    };
    // A body that trickles in, never idle: the request timeout ends it.
    let trickled_body = async {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /v1/grants HTTP/1.1\r\nhost: jitgate\r\nauthorization: Bearer {}\r\n\
             content-type: application/json\r\ncontent-length: 100\r\n\r\n",
            ADMIN_SECRET
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if tcp.write_all(b" ").await.is_err() {
                break;
            }
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut buf)).await
            {
                answer.extend_from_slice(&buf[..n]);
                if n == 0 || answer.ends_with(b"}") {
                    break;
                }
            }
        }
        (
            String::from_utf8_lossy(&answer).into_owned(),
            started.elapsed(),
        )
    };
    let (silent, trickle, kept_alive, stalled_body, trickled_body) =
        tokio::join!(silent, trickle, kept_alive, stalled_body, trickled_body);
    assert!(
        trickled_body.0.contains("408") && trickled_body.0.contains("admin_request_timeout"),
        "after {:?}: {}",
        trickled_body.1,
        trickled_body.0
    );
    assert!(trickled_body.1 < secs(6), "{:?}", trickled_body.1);

    assert!(silent.0.is_empty(), "{}", silent.0);
    assert!(silent.1 >= Duration::from_millis(800), "{:?}", silent.1);
    assert!(
        trickle.1 < secs(4),
        "a trickle of headers lasted {:?}",
        trickle.1
    );
    assert!(kept_alive.0.contains("200 OK"), "{}", kept_alive.0);
    assert!(
        !stalled_body.0.contains("201"),
        "no grant from half a body: {}",
        stalled_body.0
    );
    assert!(
        stalled_body.1 >= Duration::from_millis(1500),
        "{:?}",
        stalled_body.1
    );
    jg.assert_alive().await;
}

// ---- what a knock leaves behind ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_with_huge_names_leave_bounded_audit_records() {
    let pg = PgServer::start().await;
    let jg = Jitgate::start(
        &pg,
        JitgateOptions {
            max_login_failures: Some(1),
            ..JitgateOptions::default()
        },
    )
    .await;
    let user = "u".repeat(4000);
    let database = "d".repeat(4000);
    for _ in 0..2 {
        let login = Login::new(&user, "guess").dbname(&database);
        let refusal = guess_postgres(jg.pg_port(), login).await;
        assert!(refusal.is_some(), "a made-up user logged in");
    }
    let lines = eventually(secs(10), "both failed logins in the audit log", || {
        let failed: Vec<Value> = jg
            .audit_lines()
            .into_iter()
            .filter(|v| v["event"] == "login_failed")
            .collect();
        std::future::ready((failed.len() >= 2).then_some(failed))
    })
    .await;
    let reasons: Vec<&str> = lines.iter().filter_map(|v| v["reason"].as_str()).collect();
    assert_eq!(reasons, ["bad_secret", "rate_limited"]);
    for v in &lines {
        for key in ["identity", "target"] {
            let kept = v[key].as_str().unwrap();
            assert_eq!(kept.chars().count(), 65, "{key}: {kept}");
            assert!(kept.ends_with('…'), "{key}: {kept}");
        }
        assert!(v.to_string().len() < 1024, "{v}");
    }
}

/// `limits.max_sessions` is one cap for jitgate, not one per listener: a
/// PostgreSQL session takes the only slot, a MySQL login is refused with
/// MySQL's "too many connections" (1040) until it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cap_counts_both_listeners() {
    let pg = PgServer::start().await;
    let maria = MariaDb::start();
    let opts = JitgateOptions {
        max_sessions: Some(1),
        ..JitgateOptions::default()
    };
    // One proxy in front of both servers: the MySQL target's passwords under
    // env names of their own.
    let mut config = opts.config(&pg);
    let mysql = opts.config(&maria);
    config.mysql_listener = true;
    config.targets.push('\n');
    config
        .targets
        .push_str(&mysql.targets.replace("JG_TEST_", "JG_TEST_MYSQL_"));
    config.env.extend(
        mysql
            .env
            .iter()
            .map(|(k, v)| (k.replace("JG_TEST_", "JG_TEST_MYSQL_"), v.clone())),
    );
    config.upstream_secrets.extend(mysql.upstream_secrets);
    let jg = Jitgate::launch(config).await;
    jg.grant("alice", PG_TARGET, "read", "5m").await;
    jg.grant("alice", MYSQL_TARGET, "read", "5m").await;

    let pg_session = jg
        .connect(&Login::alice())
        .await
        .expect("the first session");
    let err = mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
        .await
        .expect_err("a MySQL session over the cap must be refused");
    match &err {
        mysql_async::Error::Server(e) => {
            assert_eq!(e.code, 1040, "{e:?}");
            assert!(e.message.contains("limit of live sessions"), "{e:?}");
        }
        other => panic!("expected the server's error, got {other:?}"),
    }
    // The server's own view: the refused login never reached it.
    assert_eq!(
        maria.threads_of("jg_read"),
        Vec::<String>::new(),
        "a refused login must open no upstream connection"
    );
    drop(pg_session);
    let mut conn = eventually(secs(10), "a MySQL login once the slot is free", || async {
        mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
            .await
            .ok()
    })
    .await;
    let one: Option<i64> = mysql_async::prelude::Queryable::query_first(&mut conn, "SELECT 1")
        .await
        .unwrap();
    assert_eq!(one, Some(1));
    // The same witness sees the session that got in.
    assert_eq!(
        maria.threads_of("jg_read").len(),
        1,
        "the admitted session upstream"
    );
}
