//! Several proxies on one PostgreSQL store: what one proxy decides, every
//! proxy enforces, and a proxy that loses its store fails closed.
//!
//! Each test starts a throwaway PostgreSQL as the store (not a target), one
//! as the target, and several `jitgate serve` processes pointed at both.
//! The witnesses are the store's own tables, the target's
//! `pg_stat_activity`, each proxy's audit log, and what the clients saw.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const ALICE: &str = ALICE_SECRET;
const BOB: &str = BOB_SECRET;
const CAROL: &str = CAROL_SECRET;
const ADMIN: &str = ADMIN_SECRET;

/// Developers may ask for read on demo-pg; one approver must say yes.
const POLICY: &str = "[[policies]]\nname = \"dev-read\"\ntargets = [\"demo-pg\"]\n\
                      levels = [\"read\"]\nrequesters = [\"developer\"]\nmax_duration = \"1h\"\n\
                      approvals = 1\napprovers = [\"approver\"]\n";

/// A store, a target, and one proxy per name, all on the one store.
struct Fleet {
    store: StoreServer,
    pg: PgServer,
    proxies: Vec<Jitgate>,
}

impl Fleet {
    async fn start(names: &[&str], fail_closed_after: &str) -> Fleet {
        let store = StoreServer::start().await;
        let pg = PgServer::start().await;
        let mut proxies = Vec::new();
        for name in names {
            proxies.push(Jitgate::launch(proxy_config(&store, &pg, name, fail_closed_after)).await);
        }
        Fleet { store, pg, proxies }
    }

    fn proxy(&self, i: usize) -> &Jitgate {
        &self.proxies[i]
    }
}

fn proxy_config(
    store: &StoreServer,
    pg: &PgServer,
    name: &str,
    fail_closed_after: &str,
) -> JitgateConfig {
    let mut config = JitgateOptions {
        policies: POLICY.to_owned(),
        ..JitgateOptions::default()
    }
    .config(pg);
    store.configure(&mut config, name, fail_closed_after);
    config
}

/// `GET path` as `token` on `jg`, expecting 200.
async fn get(jg: &Jitgate, path: &str, token: &str) -> Value {
    let (status, body) = jg.api(reqwest::Method::GET, path, Some(token), None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// Wait until `jg` lists grant `id` among its active grants.
async fn wait_for_grant(jg: &Jitgate, id: &str) {
    let mut last = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        last = get(jg, "/v1/grants", ADMIN).await;
        if last["grants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == id)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "grant {id} never reached this proxy; its grants: {last}\n--- its log\n{}",
        jg.log()
    );
}

/// alice asks on `on`, bob approves on `by`; returns the grant's id.
async fn approved_grant(on: &Jitgate, by: &Jitgate) -> String {
    let request = on.request_ok(ALICE, "read", "30m").await;
    let id = request["id"].as_str().unwrap();
    // `by` catches up with the store before it decides, so it knows the
    // request even if no notification has reached it yet.
    let (status, body) = by.decide(BOB, id, "approve", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "approved", "{body}");
    body["grant"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_on_a_approve_on_b_connect_on_c_and_a_revoke_on_b_ends_sessions_everywhere() {
    let fleet = Fleet::start(&["a", "b", "c"], "15s").await;
    let (a, b, c) = (fleet.proxy(0), fleet.proxy(1), fleet.proxy(2));

    let grant = approved_grant(a, b).await;
    // Every proxy lists it at once: a listing catches up with the store first.
    for jg in [a, c] {
        let grants = get(jg, "/v1/grants", ADMIN).await;
        assert!(grants.to_string().contains(&grant), "{grants}");
    }
    // Every proxy lists the request as approved.
    for jg in [a, b, c] {
        let request = &get(jg, "/v1/requests", ALICE).await["requests"][0];
        assert_eq!(request["state"], "approved", "{request}");
    }

    let on_c = sleeping_psql(c);
    let on_a = a.connect_ok(&Login::alice()).await;
    let rows = on_a
        .query("SELECT name FROM items ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    fleet
        .pg
        .wait_for_active_query("jg_read", "pg_sleep(60)")
        .await;
    fleet
        .pg
        .wait_for_backend_count(By::User("jg_read"), 2)
        .await;

    // b, which holds no session, lists both, each with its proxy.
    let sessions = eventually_sessions(b, 2).await;
    let mut proxies: Vec<&str> = sessions
        .iter()
        .map(|s| s["proxy"].as_str().unwrap())
        .collect();
    proxies.sort();
    assert_eq!(proxies, ["a", "c"], "{sessions:?}");
    // So does `jitgate sessions`, with a PROXY column.
    let listed = b.cli(ADMIN, &["sessions"]).await;
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("PROXY"),
        "{}",
        listed.stdout
    );
    assert_eq!(lines.len(), 3, "{}", listed.stdout);

    let (status, body) = b.revoke_as(ADMIN, &grant).await;
    assert_eq!(status, 200, "{body}");
    let stderr = cut_off(on_c, c).await;
    assert!(
        stderr.contains("57P01") && stderr.contains("revoked"),
        "{stderr}"
    );
    closed(&on_a, a).await;
    fleet
        .pg
        .wait_for_backend_count(By::User("jg_read"), 0)
        .await;
    // Each proxy's own audit log says why its session ended.
    for jg in [a, c] {
        jg.wait_for_audit("session_end grant_revoked", |r| {
            r["event"] == "session_end" && r["reason"] == "grant_revoked"
        })
        .await;
    }
    // And the grant is gone everywhere; a new login is refused on every proxy.
    for jg in [a, b, c] {
        let grants = get(jg, "/v1/grants", ADMIN).await;
        assert!(!grants.to_string().contains(&grant), "{grants}");
        let err = jg.connect(&Login::alice()).await.expect_err("refused");
        assert!(
            describe_error(&err).contains("no active grant"),
            "{}",
            describe_error(&err)
        );
    }
    // The store holds the chain: request, approval (with the grant), revoke.
    let store = fleet.store.client().await;
    let events: Vec<String> = store
        .query("SELECT line FROM jitgate_events ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let kinds: Vec<String> = events
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        ["request_created", "request_approved", "grant_revoked"]
    );
    let proxies: Vec<String> = events
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["proxy"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(proxies, ["a", "b", "b"]);

    // `jitgate check-config` says how the store is, and names no secret.
    let checked = c
        .server_command(&["check-config", "-c", c.config_path().to_str().unwrap()])
        .output()
        .expect("run jitgate check-config");
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(
        said.contains("store (postgres, proxy c): reachable, schema version 1, 3 events"),
        "{said}"
    );
    assert!(!said.contains(&fleet.store.url()), "{said}");

    // `jitgate audit verify --store` checks the chain; an edit breaks it.
    let verify = || {
        let out = c
            .server_command(&[
                "audit",
                "verify",
                "--store",
                "-c",
                c.config_path().to_str().unwrap(),
            ])
            .output()
            .expect("run jitgate audit verify --store");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(
        verify(),
        (true, "store: 3 events, chain intact\n".to_owned())
    );
    store
        .batch_execute(
            "UPDATE jitgate_events SET line = replace(line, '\"by\":\"bob\"', '\"by\":\"eve\"') WHERE seq = 2",
        )
        .await
        .unwrap();
    let (ok, said) = verify();
    assert!(!ok && said.starts_with("store: event 2: "), "{said}");
}

/// psql through `jg` as alice, running a query that would take a minute.
fn sleeping_psql(jg: &Jitgate) -> tokio::process::Child {
    jg.spawn_psql(
        &Login::alice(),
        &["-v", "VERBOSITY=verbose", "-c", "SELECT pg_sleep(60)"],
        false,
    )
}

/// What psql said when it was cut off (it must have been, within 10 s).
async fn cut_off(psql: tokio::process::Child, jg: &Jitgate) -> String {
    let out = tokio::time::timeout(Duration::from_secs(10), psql.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "psql was not cut off
--- jitgate log
{}",
                jg.log()
            )
        })
        .expect("wait for psql");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Wait until `client`'s connection has been closed by the proxy.
async fn closed(client: &tokio_postgres::Client, jg: &Jitgate) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.simple_query("SELECT 1").await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the session outlived its end
{}",
            jg.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until `jg` lists `n` sessions (the fleet's, from the store).
async fn eventually_sessions(jg: &Jitgate, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let sessions = jg.sessions().await;
        if sessions.len() == n {
            return sessions;
        }
        assert!(
            Instant::now() < deadline,
            "{} sessions listed, expected {n}: {sessions:?}",
            sessions.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_sent_to_c_ends_the_session_that_a_holds() {
    let fleet = Fleet::start(&["a", "c"], "15s").await;
    let (a, c) = (fleet.proxy(0), fleet.proxy(1));
    let grant = approved_grant(a, c).await;
    wait_for_grant(a, &grant).await;
    let psql = sleeping_psql(a);
    fleet
        .pg
        .wait_for_active_query("jg_read", "pg_sleep(60)")
        .await;
    let sessions = eventually_sessions(c, 1).await;
    assert_eq!(sessions[0]["proxy"], "a");
    let id = sessions[0]["id"].as_str().unwrap().to_owned();

    // A session that does not exist anywhere is not found, as on one proxy.
    let (status, _) = c
        .api(
            reqwest::Method::POST,
            "/v1/sessions/s_nope/kill",
            Some(CAROL),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let killed = c.kill_session(&id).await;
    assert_eq!(killed, json!({"killed": id, "proxy": "a"}));
    let stderr = cut_off(psql, a).await;
    assert!(stderr.contains("administrator ended"), "{stderr}");
    fleet
        .pg
        .wait_for_backend_count(By::User("jg_read"), 0)
        .await;
    // The kill is audited where it was asked, the end where it happened.
    c.wait_for_audit("session_kill_requested", |r| {
        r["event"] == "session_kill_requested" && r["session"] == id.as_str()
    })
    .await;
    a.wait_for_audit("session_end killed", |r| {
        r["event"] == "session_end" && r["session"] == id.as_str() && r["reason"] == "killed"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvals_at_once_on_two_proxies_make_one_grant() {
    let fleet = Fleet::start(&["a", "b"], "15s").await;
    let (a, b) = (fleet.proxy(0), fleet.proxy(1));
    for _ in 0..5 {
        let request = a.request_ok(ALICE, "read", "30m").await;
        let id = request["id"].as_str().unwrap();
        let (first, second) = tokio::join!(
            a.decide(BOB, id, "approve", None),
            b.decide(CAROL, id, "approve", None)
        );
        let statuses = [first.0, second.0];
        // One approval completes the request; the other finds it decided.
        assert!(
            statuses.contains(&200) && statuses.contains(&409),
            "{first:?} {second:?}"
        );
        let winner = if first.0 == 200 { &first.1 } else { &second.1 };
        let grant = winner["grant"].as_str().unwrap();
        for jg in [a, b] {
            wait_for_grant(jg, grant).await;
        }
        let (status, _) = a.revoke_as(ADMIN, grant).await;
        assert_eq!(status, 200);
    }
    let store = fleet.store.client().await;
    let grants: i64 = store
        .query_one(
            "SELECT count(*) FROM jitgate_events WHERE line::jsonb ->> 'event' = 'request_approved' \
             AND line::jsonb -> 'grant' IS NOT NULL AND line::jsonb ->> 'grant' <> 'null'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(grants, 5, "one grant per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_store_a_proxy_keeps_sessions_until_fail_closed_after_then_ends_them_and_recovers()
 {
    let fleet = Fleet::start(&["a"], "3s").await;
    let a = fleet.proxy(0);
    let grant = approved_grant(a, a).await;
    let client = a.connect_ok(&Login::alice()).await;
    let psql = sleeping_psql(a);
    fleet
        .pg
        .wait_for_active_query("jg_read", "pg_sleep(60)")
        .await;

    fleet.store.stop_now();
    let stopped = Instant::now();
    // Changes are refused with a message that names the store; nothing is half done.
    let (status, body) = a
        .request_access(ALICE, "read", "10m", "while the store is away")
        .await;
    assert_eq!(status, 503, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("store cannot be reached"), "{body}");
    // What happened, not the store's own words (its login, its address).
    assert!(
        !detail.contains("jitgate_store") && !detail.contains("127.0.0.1"),
        "{body}"
    );
    let (status, body) = a.revoke_as(ADMIN, &grant).await;
    assert_eq!(status, 503, "{body}");
    // The session goes on for now, and a new login on a known grant works.
    client
        .simple_query("SELECT 1")
        .await
        .expect("a session outlives a short store outage");
    if stopped.elapsed() < Duration::from_secs(2) {
        let second = a.connect_ok(&Login::alice()).await;
        second.simple_query("SELECT 1").await.unwrap();
    }
    // Then the proxy fails closed: the sessions end, saying why.
    let stderr = cut_off(psql, a).await;
    let ended_after = stopped.elapsed();
    assert!(
        ended_after >= Duration::from_millis(2500),
        "{ended_after:?}"
    );
    assert!(stderr.contains("lost contact with its store"), "{stderr}");
    closed(&client, a).await;
    fleet
        .pg
        .wait_for_backend_count(By::User("jg_read"), 0)
        .await;
    let (status, health) = a.api(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["store"]["reachable"], false, "{health}");
    let err = a
        .connect(&Login::alice())
        .await
        .expect_err("logins are refused");
    assert_sqlstate(&err, "57P03");
    a.wait_for_audit("session_end store_lost", |r| {
        r["event"] == "session_end" && r["reason"] == "store_lost"
    })
    .await;

    // The store comes back: the proxy catches up and serves again; the
    // grant (never revoked) is still there.
    fleet.store.start_again();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = a.api(reqwest::Method::GET, "/healthz", None, None).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not recover:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = a.connect_ok(&Login::alice()).await;
    again.simple_query("SELECT 1").await.unwrap();
    let (status, body) = a.revoke_as(ADMIN, &grant).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_starting_at_once_on_an_empty_store_make_one_schema() {
    let store = StoreServer::start().await;
    let pg = PgServer::start().await;
    let (a, b) = tokio::join!(
        Jitgate::launch(proxy_config(&store, &pg, "a", "15s")),
        Jitgate::launch(proxy_config(&store, &pg, "b", "15s")),
    );
    let client = store.client().await;
    let versions: Vec<i32> = client
        .query("SELECT version FROM jitgate_schema", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1]);
    let grant = approved_grant(&a, &b).await;
    wait_for_grant(&a, &grant).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_with_a_newer_schema_is_refused_at_start() {
    let mut fleet = Fleet::start(&["a"], "15s").await;
    fleet.proxies[0].kill_now();
    let client = fleet.store.client().await;
    client
        .batch_execute("UPDATE jitgate_schema SET version = 99")
        .await
        .unwrap();
    let jg = fleet.proxy(0);
    let out = jg
        .server_command(&["serve", "-c", jg.config_path().to_str().unwrap()])
        .output()
        .expect("run jitgate serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("version 99") && stderr.contains("newer"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&fleet.store.url()),
        "the URL leaked: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_over_tls_is_verified_against_its_ca() {
    let store = StoreServer::start().await;
    let pg = PgServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("store-ca.pem");
    std::fs::write(&ca, store.certificate()).unwrap();
    let mut config = JitgateOptions {
        policies: POLICY.to_owned(),
        ..JitgateOptions::default()
    }
    .config(&pg);
    store.configure_tls(&mut config, "a", &ca);
    let a = Jitgate::launch(config.clone()).await;
    let grant = approved_grant(&a, &a).await;
    wait_for_grant(&a, &grant).await;
    // The store's own view: every jitgate connection is TLS.
    let su = store.client().await;
    let rows = su
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'jitgate a'",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r.get::<_, bool>(0)),
        "a store connection without TLS"
    );
    drop(a);

    // Another CA: the proxy does not start, and says why.
    let other = dir.path().join("other-ca.pem");
    jitgate::tls::generate_self_signed(&other, &dir.path().join("other-key.pem")).unwrap();
    let mut config = JitgateOptions::default().config(&pg);
    store.configure_tls(&mut config, "b", &other);
    let said = Jitgate::launch_refused(config).await;
    assert!(
        said.contains("store") && said.to_lowercase().contains("certificate"),
        "{said}"
    );
    assert!(!said.contains(&store.url()), "the URL leaked: {said}");
}

/// Two proxies, a reaching the store only through a link the test can cut,
/// b directly, and alice's grant that both know.
struct Split {
    _store: StoreServer,
    pg: PgServer,
    link: Link,
    a: Jitgate,
    b: Jitgate,
    grant: String,
}

impl Split {
    async fn start(fail_closed_after: &str) -> Split {
        let store = StoreServer::start().await;
        let pg = PgServer::start().await;
        let link = Link::start(store.pg.port()).await;
        let mut config_a = JitgateOptions {
            policies: POLICY.to_owned(),
            ..JitgateOptions::default()
        }
        .config(&pg);
        store.configure_via(&mut config_a, "a", fail_closed_after, link.port);
        let a = Jitgate::launch(config_a).await;
        let b = Jitgate::launch(proxy_config(&store, &pg, "b", fail_closed_after)).await;
        let grant = approved_grant(&a, &b).await;
        wait_for_grant(&a, &grant).await;
        Split {
            _store: store,
            pg,
            link,
            a,
            b,
            grant,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_made_while_a_proxy_was_cut_off_reaches_it_when_it_reconnects() {
    // By reference: the fields a pattern leaves to `..` would be dropped
    // with the temporary (the store stopped) at once.
    let split = Split::start("15s").await;
    let Split {
        pg,
        link,
        a,
        b,
        grant,
        ..
    } = &split;
    let psql = sleeping_psql(a);
    pg.wait_for_active_query("jg_read", "pg_sleep(60)").await;

    link.cut();
    let (status, body) = b.revoke_as(ADMIN, grant).await;
    assert_eq!(status, 200, "{body}");
    // a cannot know yet: well within fail_closed_after, its session runs on.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        pg.count_backends(By::User("jg_read")).await,
        1,
        "a heard of the revoke through a cut link?"
    );
    let mended = Instant::now();
    link.mend();
    // Reconnected, a catches up by sequence number and ends the session.
    let stderr = cut_off(psql, a).await;
    assert!(stderr.contains("revoked"), "{stderr}");
    assert!(
        mended.elapsed() < Duration::from_secs(8),
        "{:?}",
        mended.elapsed()
    );
    pg.wait_for_backend_count(By::User("jg_read"), 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_cut_short_by_kill_9_is_in_the_store_everywhere_or_nowhere() {
    let mut fleet = Fleet::start(&["a", "b"], "15s").await;
    for delay_ms in [0u64, 1, 2, 4, 8] {
        let request = fleet.proxy(0).request_ok(ALICE, "read", "30m").await;
        let id = request["id"].as_str().unwrap().to_owned();
        let api = fleet.proxy(1).admin_api();
        let path = format!("/v1/requests/{id}/approve");
        let approving = tokio::spawn(async move {
            api.call(reqwest::Method::POST, &path, Some(BOB), None)
                .await
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        fleet.proxies[1].kill_now();
        let answered = approving.await.unwrap();
        // What a sees decides: approved with its grant, or still pending.
        let a = fleet.proxy(0);
        // Longer than the follower's tick: a has read whatever b committed.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let seen = a.request_by_id(ALICE, &id).await;
        match seen["state"].as_str().unwrap() {
            "approved" => {
                let grant = seen["grant"].as_str().unwrap();
                wait_for_grant(a, grant).await;
                a.revoke(grant).await;
            }
            "pending" => {
                // Then b's caller was not told it worked.
                if let Ok((status, _)) = &answered {
                    assert_ne!(
                        *status, 200,
                        "b answered 200 but the approval is not in the store"
                    );
                }
                let (status, body) = a.decide(CAROL, &id, "approve", None).await;
                assert_eq!(status, 200, "{body}");
                a.revoke(body["grant"].as_str().unwrap()).await;
            }
            other => panic!("request {id} is {other}"),
        }
        fleet.proxies[1].start_again().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_failed_closed_opens_again_only_after_applying_what_it_missed() {
    let split = Split::start("2s").await;
    let Split {
        link, a, b, grant, ..
    } = &split;

    link.cut();
    // a fails closed...
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.api(reqwest::Method::GET, "/healthz", None, None).await.0 != 503 {
        assert!(
            Instant::now() < deadline,
            "a never failed closed:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...while b revokes the grant it knows.
    let (status, body) = b.revoke_as(ADMIN, grant).await;
    assert_eq!(status, 200, "{body}");
    link.mend();
    // From the moment a takes logins again, the revoked grant is refused:
    // no login slips in between the reopening and the catch-up.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match a.connect(&Login::alice()).await {
            Ok(_) => panic!(
                "a admitted a login on a grant revoked while it was away:\n{}",
                a.log()
            ),
            Err(e) if sqlstate(&e).as_deref() == Some("57P03") => {}
            Err(e) => {
                assert!(
                    describe_error(&e).contains("no active grant"),
                    "{}",
                    describe_error(&e)
                );
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "a did not open again:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        a.api(reqwest::Method::GET, "/healthz", None, None).await.0,
        200
    );
}
