//! The just-in-time lifecycle end to end: request, approve, use, expire.
//!
//! Each test starts its own throwaway PostgreSQL and its own `jitgate serve`
//! with policies in its config (see `support`), drives the admin API and the
//! `jitgate` CLI as alice (developer), bob and carol (approvers) and admin
//! would, connects with `psql` and tokio-postgres, and takes the server's own
//! view (`pg_stat_activity`, its log), the audit log and the journal as the
//! witnesses. The durability tests SIGKILL the proxy and start it again on
//! the same data directory.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use support::*;

const READ: &str = "read";
const ALICE: &str = ALICE_SECRET;
const BOB: &str = BOB_SECRET;
const CAROL: &str = CAROL_SECRET;
const ADMIN: &str = ADMIN_SECRET;

/// Developers may ask for read on demo-pg for up to an hour; `approvals`
/// distinct members of group approver must say yes.
fn dev_read_policy(approvals: u32, requesters: &[&str]) -> String {
    format!(
        "[[policies]]\n\
         name = \"dev-read\"\n\
         targets = [\"{PG_TARGET}\"]\n\
         levels = [\"read\"]\n\
         requesters = {requesters:?}\n\
         max_duration = \"1h\"\n\
         approvals = {approvals}\n\
         approvers = [\"approver\"]\n"
    )
}

fn with_policy(approvals: u32, requesters: &[&str]) -> JitgateOptions {
    JitgateOptions {
        policies: dev_read_policy(approvals, requesters),
        ..JitgateOptions::default()
    }
}

/// A PostgreSQL and a jitgate with the one-approval `dev-read` policy.
async fn setup() -> (PgServer, Jitgate) {
    setup_with(with_policy(1, &["developer"])).await
}

async fn setup_with(opts: JitgateOptions) -> (PgServer, Jitgate) {
    let pg = PgServer::start().await;
    let jg = Jitgate::start(&pg, opts).await;
    (pg, jg)
}

/// psql's `\set VERBOSITY verbose` prints the SQLSTATE in front of each error.
const VERBOSE: [&str; 2] = ["-v", "VERBOSITY=verbose"];

/// alice asks for read for `duration`, bob approves through the API; returns
/// the request as approved and the grant as `GET /v1/grants` shows it.
async fn approved_grant(jg: &Jitgate, duration: &str) -> (Value, Value) {
    let request = jg.request_ok(ALICE, READ, duration).await;
    let (status, approved) = jg.decide(BOB, &id_of(&request), "approve", None).await;
    assert_eq!(status, 200, "bob's approval answered {status}: {approved}");
    assert_eq!(approved["state"], "approved", "{approved}");
    let grant_id = id_string(&approved["grant"]);
    let grant = jg
        .active_grant(&grant_id)
        .await
        .unwrap_or_else(|| panic!("the approved request's grant {grant_id} is not active"));
    (approved, grant)
}

/// A new login as alice is refused with 28000 (no active grant), by
/// tokio-postgres and by psql alike.
async fn assert_alice_refused(jg: &Jitgate, when: &str) {
    let err = jg
        .connect(&Login::alice())
        .await
        .err()
        .unwrap_or_else(|| panic!("{when}, alice must not get in"));
    assert_sqlstate(&err, "28000");
    let run = jg.psql(&["-c", "SELECT 1"]).await;
    run.assert_failed();
    assert!(
        run.stderr.contains("no active grant"),
        "{when}, psql should say why:\n{}",
        run.stderr
    );
}

/// psql as `login` reads the three items: the grant works.
async fn assert_reads_items(jg: &Jitgate, login: &Login) {
    let run = jg
        .psql_as(login, &["-c", "SELECT name FROM items ORDER BY id"], None)
        .await;
    run.assert_ok(jg);
    assert_eq!(run.stdout.trim(), "apple\nbanana\ncherry");
}

/// Ids of the requests in a `GET /v1/requests` answer.
fn ids(requests: &[Value]) -> Vec<String> {
    requests.iter().map(id_of).collect()
}

fn audit_has(jg: &Jitgate, event: &str, key: &str, id: &str) -> usize {
    jg.audit_lines()
        .iter()
        .filter(|v| v["event"] == event && id_string(&v[key]) == id)
        .count()
}

// ---- the whole story ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_approve_connect_expire_end_to_end() {
    let (pg, jg) = setup().await;

    let (status, request) = jg.request_access(ALICE, READ, "4s", "INC-42").await;
    assert_eq!(
        status, 201,
        "POST /v1/requests answered {status}: {request}"
    );
    assert_eq!(request["state"], "pending", "{request}");
    assert_eq!(request["requested_by"], "alice", "{request}");
    assert!(
        expires_at(&request) > SystemTime::now(),
        "a pending request says when it times out: {request}"
    );
    let request_id = id_of(&request);
    assert_alice_refused(&jg, "while the request is pending").await;

    assert!(
        ids(&jg.requests_seen_by(BOB, "pending").await).contains(&request_id),
        "bob should see the request he may decide"
    );
    let approve = jg
        .cli(BOB, &["approve", &request_id, "--comment", "ok for INC-42"])
        .await;
    approve.assert_ok(&jg);
    let approved = jg.request_by_id(ALICE, &request_id).await;
    assert_eq!(approved["state"], "approved", "{approved}");
    assert_eq!(approved["approvals"][0]["by"], "bob", "{approved}");
    assert_eq!(approved["approvals"][0]["comment"], "ok for INC-42");
    let grant_id = id_string(&approved["grant"]);
    let grant = jg
        .active_grant(&grant_id)
        .await
        .unwrap_or_else(|| panic!("no grant {grant_id} in GET /v1/grants"));
    assert_eq!(grant["identity"], "alice", "{grant}");
    assert_eq!(grant["level"], READ, "{grant}");
    assert_eq!(grant["approved_by"], json!(["bob"]), "{grant}");
    let deadline = expires_at(&grant);
    assert_eq!(
        deadline.duration_since(time_of(&grant, "created_at")).ok(),
        Some(secs(4)),
        "the grant runs for the requested 4s from the approval: {grant}"
    );

    let psql = jg.spawn_psql(
        &Login::alice(),
        &[
            VERBOSE[0],
            VERBOSE[1],
            "-c",
            "SELECT name FROM items ORDER BY id",
            "-c",
            "SELECT pg_sleep(60)",
        ],
        false,
    );
    pg.wait_for_active_query("jg_read", "pg_sleep(60)").await;
    assert!(
        SystemTime::now() < deadline,
        "the query started only after the grant expired; the machine is too slow for this test"
    );
    let gone = watch_backends_gone(&pg, "jg_read", secs(20)).await;

    let out = within(
        secs(20),
        "psql to be cut off at expiry",
        psql.wait_with_output(),
    )
    .await
    .expect("wait for psql");
    let told_at = SystemTime::now();
    let run = Run::from(out);
    assert_eq!(run.stdout.trim(), "apple\nbanana\ncherry", "{run:?}");
    run.assert_failed();
    assert!(
        run.stderr.contains("57P01") && run.stderr.contains("expired"),
        "psql should hear FATAL 57P01 saying the grant expired:\n{}\n--- jitgate log\n{}",
        run.stderr,
        jg.log()
    );
    assert!(
        told_at + Duration::from_millis(100) >= deadline,
        "psql was cut off {:?} before the grant ended",
        later_by(deadline, told_at)
    );

    let gone_at = gone
        .await
        .unwrap()
        .expect("alice's jg_read backend never left pg_stat_activity");
    eprintln!(
        "after expiry: psql exited {:?} later, the backend was gone {:?} later",
        later_by(told_at, deadline),
        later_by(gone_at, deadline)
    );
    assert!(
        later_by(gone_at, deadline) <= secs(1),
        "the backend outlived the grant by {:?}",
        later_by(gone_at, deadline)
    );
    wait_for_reaper_termination(&pg).await;

    jg.wait_for_audit("grant_expired", |v| {
        v["event"] == "grant_expired" && id_string(&v["grant"]) == grant_id
    })
    .await;
    jg.wait_for_audit("session_end of alice", |v| {
        v["event"] == "session_end" && v["identity"] == "alice" && v["reason"].is_string()
    })
    .await;
    assert!(jg.active_grant(&grant_id).await.is_none());
    assert_alice_refused(&jg, "after the grant expired").await;
}

// ---- the rules ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_request_gives_no_access() {
    let (pg, jg) = setup().await;
    let request = jg.request_ok(ALICE, READ, "10m").await;
    let id = id_of(&request);

    let (status, denied) = jg
        .decide(BOB, &id, "deny", Some("not during the freeze"))
        .await;
    assert_eq!(status, 200, "deny answered {status}: {denied}");
    assert_eq!(denied["state"], "denied", "{denied}");
    assert_eq!(denied["denial"]["by"], "bob", "{denied}");
    assert_eq!(denied["denial"]["comment"], "not during the freeze");
    assert!(denied["grant"].is_null(), "{denied}");

    assert_alice_refused(&jg, "after a denial").await;
    assert_eq!(jg.grants().await["grants"], json!([]));
    assert_eq!(
        pg.tcp_connections_seen(),
        0,
        "nothing may reach the server without a grant:\n{}",
        pg.log()
    );

    let (status, body) = jg.decide(CAROL, &id, "approve", None).await;
    assert_eq!(status, 409, "approving a denied request: {body}");
    let record = jg
        .wait_for_audit("request_denied", |v| {
            v["event"] == "request_denied" && id_string(&v["request"]) == id
        })
        .await;
    assert_eq!(record["by"], "bob", "{record}");
    assert_eq!(record["comment"], "not during the freeze", "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_above_policy_max_is_refused_naming_the_policy() {
    let (_pg, jg) = setup().await;

    let (status, body) = jg.request_access(ALICE, READ, "2h", "INC-7").await;
    assert_eq!(status, 400, "2h under a 1h policy: {body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        body["error"].is_string() && detail.contains("dev-read") && detail.contains("1h"),
        "the refusal should name the policy and its maximum: {body}"
    );

    let (status, body) = jg.request_access(ALICE, "write", "10m", "INC-7").await;
    assert_eq!(status, 400, "no policy covers write: {body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("dev-read")),
        "{body}"
    );
    let (status, body) = jg.request_access(ALICE, READ, "forever", "INC-7").await;
    assert_eq!(status, 400, "a bad duration: {body}");

    assert_eq!(
        jg.requests_seen_by(ALICE, "pending").await,
        Vec::<Value>::new(),
        "a refused request leaves nothing behind"
    );
    // The maximum itself is allowed.
    let request = jg.request_ok(ALICE, READ, "1h").await;
    assert_eq!(request["state"], "pending", "{request}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvals_required_one_is_not_enough() {
    let (_pg, jg) = setup_with(with_policy(2, &["developer"])).await;
    let request = jg.request_ok(ALICE, READ, "10m").await;
    assert_eq!(request["approvals_required"], 2, "{request}");
    let id = id_of(&request);

    for round in ["bob's approval", "bob's second approval"] {
        let (status, body) = jg.decide(BOB, &id, "approve", None).await;
        assert_eq!(status, 200, "{round} answered {status}: {body}");
        assert_eq!(body["state"], "pending", "after {round}: {body}");
        assert_eq!(
            body["approvals"].as_array().map(Vec::len),
            Some(1),
            "the same person counts once: {body}"
        );
        assert_alice_refused(&jg, &format!("after {round}")).await;
    }

    let (status, body) = jg.decide(CAROL, &id, "approve", None).await;
    assert_eq!(status, 200, "carol's approval answered {status}: {body}");
    assert_eq!(body["state"], "approved", "{body}");
    let grant = jg
        .active_grant(&id_string(&body["grant"]))
        .await
        .expect("the second approval creates the grant");
    assert_eq!(grant["approved_by"], json!(["bob", "carol"]), "{grant}");
    assert_reads_items(&jg, &Login::alice()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_approval_is_forbidden() {
    // bob may both request and approve under this policy.
    let (_pg, jg) = setup_with(with_policy(1, &["developer", "approver"])).await;
    let request = jg.request_ok(BOB, READ, "10m").await;
    let id = id_of(&request);

    for verb in ["approve", "deny"] {
        let (status, body) = jg.decide(BOB, &id, verb, None).await;
        assert_eq!(status, 403, "bob may not {verb} his own request: {body}");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("your own request")),
            "{body}"
        );
    }
    assert_eq!(jg.request_by_id(BOB, &id).await["state"], "pending");
    assert_eq!(jg.grants().await["grants"], json!([]));
    let bob = Login::new("bob", BOB_SECRET);
    let err = jg.connect(&bob).await.expect_err("bob has no grant yet");
    assert_sqlstate(&err, "28000");

    let (status, body) = jg.decide(CAROL, &id, "approve", None).await;
    assert_eq!(status, 200, "carol's approval answered {status}: {body}");
    assert_eq!(body["state"], "approved", "{body}");
    assert_reads_items(&jg, &bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_approver_is_forbidden() {
    let (_pg, jg) = setup().await;
    let request = jg.request_ok(ALICE, READ, "10m").await;
    let id = id_of(&request);

    // admin may grant directly and revoke anything, but approves only where
    // a policy says so; dev-read says group approver.
    for verb in ["approve", "deny"] {
        let (status, body) = jg.decide(ADMIN, &id, verb, None).await;
        assert_eq!(status, 403, "admin may not {verb} under dev-read: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("dev-read") && detail.contains("approver"),
            "the refusal should name the policy and the group it needs: {body}"
        );
    }
    assert_eq!(jg.request_by_id(ALICE, &id).await["state"], "pending");
    assert_alice_refused(&jg, "after a refused approval").await;

    let (status, body) = jg.decide(BOB, &id, "approve", None).await;
    assert_eq!(status, 200, "bob's approval answered {status}: {body}");
    assert_reads_items(&jg, &Login::alice()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_request_times_out() {
    let (_pg, jg) = setup_with(JitgateOptions {
        pending_timeout: Some("2s".into()),
        ..with_policy(1, &["developer"])
    })
    .await;
    let request = jg.request_ok(ALICE, READ, "10m").await;
    let id = id_of(&request);
    assert_eq!(
        expires_at(&request)
            .duration_since(time_of(&request, "created_at"))
            .ok(),
        Some(secs(2)),
        "a pending request lives for requests.pending_timeout: {request}"
    );

    let expired = eventually(secs(10), "the request to time out", || async {
        let r = jg.request_by_id(ALICE, &id).await;
        (r["state"] != "pending").then_some(r)
    })
    .await;
    assert_eq!(expired["state"], "expired", "{expired}");
    assert!(
        SystemTime::now() >= expires_at(&request),
        "expired before its time: {expired}"
    );
    let (status, body) = jg.decide(BOB, &id, "approve", None).await;
    assert_eq!(status, 409, "approving an expired request: {body}");
    jg.wait_for_audit("request_expired", |v| {
        v["event"] == "request_expired" && id_string(&v["request"]) == id
    })
    .await;
    assert_eq!(jg.grants().await["grants"], json!([]));
    assert_alice_refused(&jg, "after the request timed out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requester_cancels() {
    let (_pg, jg) = setup().await;
    let request = jg.request_ok(ALICE, READ, "10m").await;
    let id = id_of(&request);

    let (status, body) = jg.decide(BOB, &id, "cancel", None).await;
    assert_eq!(status, 403, "only the requester cancels: {body}");
    let (status, body) = jg.decide(ALICE, &id, "cancel", None).await;
    assert_eq!(status, 200, "alice's cancel answered {status}: {body}");
    assert_eq!(body["state"], "cancelled", "{body}");

    let (status, body) = jg.decide(BOB, &id, "approve", None).await;
    assert_eq!(status, 409, "approving a cancelled request: {body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("cancelled")),
        "{body}"
    );
    let (status, body) = jg.decide(ALICE, &id, "cancel", None).await;
    assert_eq!(status, 409, "cancelling twice: {body}");
    let record = jg
        .wait_for_audit("request_cancelled", |v| {
            v["event"] == "request_cancelled" && id_string(&v["request"]) == id
        })
        .await;
    assert_eq!(record["by"], "alice", "{record}");
    assert_eq!(jg.grants().await["grants"], json!([]));
    assert_alice_refused(&jg, "after cancelling").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_by_approver_kills_live_sessions() {
    let (pg, jg) = setup().await;
    let (_, grant) = approved_grant(&jg, "10m").await;
    let grant_id = id_of(&grant);

    let idle = jg.connect_ok(&Login::alice()).await;
    let psql = jg.spawn_psql(
        &Login::alice(),
        &[VERBOSE[0], VERBOSE[1], "-c", "SELECT pg_sleep(60)"],
        false,
    );
    pg.wait_for_active_query("jg_read", "pg_sleep(60)").await;
    let gone = watch_backends_gone(&pg, "jg_read", secs(20)).await;

    let (status, body) = jg.revoke_as(BOB, &grant_id).await;
    let revoked_at = SystemTime::now();
    assert_eq!(status, 200, "bob's revoke answered {status}: {body}");

    let out = within(
        secs(15),
        "psql to be cut off at revoke",
        psql.wait_with_output(),
    )
    .await
    .expect("wait for psql");
    let run = Run::from(out);
    run.assert_failed();
    assert!(
        run.stderr.contains("57P01") && run.stderr.contains("revoked"),
        "psql should hear FATAL 57P01 saying the grant was revoked:\n{}",
        run.stderr
    );
    let gone_at = gone
        .await
        .unwrap()
        .expect("alice's jg_read backends never left pg_stat_activity");
    eprintln!(
        "after revoke: both backends gone {:?} later",
        later_by(gone_at, revoked_at)
    );
    assert!(
        later_by(gone_at, revoked_at) <= secs(1),
        "the backends outlived the revoke by {:?}",
        later_by(gone_at, revoked_at)
    );
    let err = within(
        secs(5),
        "a query on the idle session",
        idle.simple_query("SELECT 1"),
    )
    .await
    .expect_err("the idle session ends with the grant too");
    assert!(
        err.is_closed() || sqlstate(&err).as_deref() == Some("57P01"),
        "{}",
        describe_error(&err)
    );
    wait_for_reaper_termination(&pg).await;
    let record = jg
        .wait_for_audit("grant_revoked", |v| {
            v["event"] == "grant_revoked" && id_string(&v["grant"]) == grant_id
        })
        .await;
    assert_eq!(record["by"], "bob", "{record}");
    assert!(jg.active_grant(&grant_id).await.is_none());
    assert_alice_refused(&jg, "after the revoke").await;
}

// ---- durability ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_active_grant_and_its_original_deadline() {
    let (_pg, mut jg) = setup().await;
    let (_, before) = approved_grant(&jg, "10m").await;
    let grant_id = id_of(&before);
    let pending = jg.request_ok(ALICE, READ, "5m").await;
    let pending_id = id_of(&pending);

    jg.restart().await;

    let after = jg
        .active_grant(&grant_id)
        .await
        .unwrap_or_else(|| panic!("grant {grant_id} was forgotten:\n{}", jg.log()));
    for key in [
        "expires_at",
        "created_at",
        "approved_by",
        "identity",
        "level",
    ] {
        assert_eq!(
            after[key], before[key],
            "{key} changed across the restart: {before} -> {after}"
        );
    }
    assert_reads_items(&jg, &Login::alice()).await;

    assert!(
        ids(&jg.requests_seen_by(BOB, "pending").await).contains(&pending_id),
        "the pending request should be back for bob to decide"
    );
    let restored = jg.request_by_id(ALICE, &pending_id).await;
    assert_eq!(restored["state"], "pending", "{restored}");
    assert_eq!(restored["expires_at"], pending["expires_at"], "{restored}");
    let (status, body) = jg.decide(BOB, &pending_id, "approve", None).await;
    assert_eq!(status, 200, "approving the restored request: {body}");
    assert_eq!(body["state"], "approved", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_expired_during_downtime_is_not_restored() {
    let (_pg, mut jg) = setup().await;
    let (_, grant) = approved_grant(&jg, "3s").await;
    let grant_id = id_of(&grant);
    jg.kill_now();
    assert!(
        SystemTime::now() < expires_at(&grant),
        "jitgate was killed only after the grant expired; the machine is too slow for this test"
    );
    assert_eq!(audit_has(&jg, "grant_expired", "grant", &grant_id), 0);
    tokio::time::sleep(secs(4)).await;

    jg.start_again().await;
    assert!(
        jg.active_grant(&grant_id).await.is_none(),
        "a grant that ended during the downtime came back: {}",
        jg.grants().await
    );
    assert_alice_refused(&jg, "after a restart past the deadline").await;
    let record = jg
        .wait_for_audit("grant_expired written at start", |v| {
            v["event"] == "grant_expired" && id_string(&v["grant"]) == grant_id
        })
        .await;
    assert!(
        record["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not running")),
        "{record}"
    );

    // The expiry is in the journal now: the next start does not end it again.
    jg.restart().await;
    assert!(jg.active_grant(&grant_id).await.is_none());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        audit_has(&jg, "grant_expired", "grant", &grant_id),
        1,
        "one grant_expired record per grant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_journal_line_is_tolerated() {
    let (_pg, mut jg) = setup().await;
    if jg.has_pg_store() {
        // The PostgreSQL store has no lines to tear: a transaction commits or not.
        return;
    }
    let (_, grant) = approved_grant(&jg, "10m").await;
    let grant_id = id_of(&grant);
    let pending_id = id_of(&jg.request_ok(ALICE, READ, "5m").await);
    jg.kill_now();

    let journal = jg.journal_path();
    let whole = std::fs::read(&journal).expect("read the journal");
    assert!(whole.ends_with(b"\n"), "the journal ends with a whole line");
    // What a crash in the middle of an append leaves behind.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .and_then(|mut f| {
            f.write_all(br#"{"at":"2030-01-01T00:00:00.000Z","event":"request_created","request":{"id":"r_torn"#)
        })
        .expect("append a torn line");

    jg.start_again().await;
    let log = jg.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("cut short")),
        "jitgate should warn about the torn line; its log:\n{log}"
    );
    assert_eq!(
        std::fs::read(&journal).expect("read the journal"),
        whole,
        "the torn line is cut off, and nothing else"
    );
    let after = jg
        .active_grant(&grant_id)
        .await
        .expect("the grant survives a torn journal line");
    assert_eq!(after["expires_at"], grant["expires_at"]);
    assert_eq!(
        jg.request_by_id(ALICE, &pending_id).await["state"],
        "pending"
    );
    assert_reads_items(&jg, &Login::alice()).await;

    // New changes land on a whole line: the journal still replays.
    let later_id = id_of(&jg.request_ok(ALICE, READ, "5m").await);
    jg.restart().await;
    let pending = ids(&jg.requests_seen_by(ALICE, "pending").await);
    assert!(
        pending.contains(&pending_id) && pending.contains(&later_id),
        "{pending:?}"
    );
    assert!(jg.active_grant(&grant_id).await.is_some());
}

/// A request's state (and grant, once approved) as an API answer gave it.
#[derive(Debug, Clone)]
struct Acknowledged {
    state: String,
    grant: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_activity_loses_no_acknowledged_request() {
    const WORKERS: usize = 10;
    const ROUNDS: usize = 3;
    /// The acknowledgement after which the proxy is killed, out of
    /// 2 × WORKERS × ROUNDS (a request and its approval each round).
    const KILL_AT: usize = 30;

    let (_pg, mut jg) = setup().await;
    let api = jg.admin_api();
    let pid = jg.pid();
    // Request id → what the API last acknowledged for it.
    let acked: Arc<Mutex<BTreeMap<String, Acknowledged>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let acknowledge = {
        let acked = acked.clone();
        move |body: &Value| {
            acked.lock().unwrap().insert(
                id_of(body),
                Acknowledged {
                    state: body["state"].as_str().unwrap_or_default().to_owned(),
                    grant: body["grant"].as_str().map(str::to_owned),
                },
            );
            if count.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AT {
                // SAFETY: kill(2) on the pid of the child we spawned and
                // have not reaped yet, so it cannot name another process.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
    };

    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let api = api.clone();
        let acknowledge = acknowledge.clone();
        // Each worker asks and approves in turn, so requests and approvals
        // interleave; it stops at the first call that is not acknowledged.
        workers.spawn(async move {
            for round in 0..ROUNDS {
                let body = json!({"target": PG_TARGET, "level": READ, "duration": "30m",
                    "reason": format!("load {worker}.{round}")});
                let Ok((201, request)) = api
                    .call(
                        reqwest::Method::POST,
                        "/v1/requests",
                        Some(ALICE),
                        Some(body),
                    )
                    .await
                else {
                    return;
                };
                acknowledge(&request);
                let path = format!("/v1/requests/{}/approve", id_of(&request));
                let Ok((200, approved)) = api
                    .call(reqwest::Method::POST, &path, Some(BOB), None)
                    .await
                else {
                    return;
                };
                acknowledge(&approved);
            }
        });
    }
    within(secs(60), "the workers to finish", async {
        while let Some(done) = workers.join_next().await {
            done.expect("a worker panicked");
        }
    })
    .await;
    let acked = acked.lock().unwrap().clone();
    let approvals = acked.values().filter(|a| a.state == "approved").count();
    eprintln!(
        "acknowledged before the kill: {} requests, {approvals} of them approved",
        acked.len()
    );
    let what = format!(
        "the proxy to die of the SIGKILL (sent only at the {KILL_AT}th acknowledgement; {} requests were acknowledged)",
        acked.len()
    );
    eventually(secs(5), &what, || {
        let dead = !jg.is_running();
        async move { dead.then_some(()) }
    })
    .await;
    assert!(
        approvals > 0 && acked.len() + approvals < 2 * WORKERS * ROUNDS,
        "the kill should come between approvals"
    );

    jg.start_again().await;
    let active = jg.grants().await;
    for (id, Acknowledged { state, grant }) in &acked {
        let now = jg.request_by_id(ALICE, id).await;
        match state.as_str() {
            "pending" => assert!(
                now["state"] == "pending" || now["state"] == "approved",
                "request {id} was acknowledged pending, is now {now}"
            ),
            _ => {
                assert_eq!(
                    now["state"], "approved",
                    "request {id} was acknowledged approved, is now {now}"
                );
                let grant = grant
                    .as_deref()
                    .expect("an approved request names its grant");
                assert_eq!(id_string(&now["grant"]), grant, "{now}");
                assert!(
                    active["grants"]
                        .as_array()
                        .is_some_and(|gs| gs.iter().any(|g| id_of(g) == grant)),
                    "grant {grant} of request {id} was acknowledged, is gone: {active}"
                );
            }
        }
    }
}

// ---- notifications ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receives_events_and_a_dead_one_does_not_block() {
    let (url, received) = webhook_receiver().await;
    // Nobody listens there: every delivery is refused and retried.
    let dead = format!("http://127.0.0.1:{}/hooks/dead", free_port());
    let (_pg, mut jg) = setup_with(JitgateOptions {
        webhooks: vec![dead, url],
        ..with_policy(1, &["developer"])
    })
    .await;
    // Check both tokens once first: the first check of a token is PBKDF2,
    // slow in a debug build and nothing to do with webhooks.
    for token in [ALICE, BOB] {
        let (status, _) = jg
            .api(reqwest::Method::GET, "/v1/whoami", Some(token), None)
            .await;
        assert_eq!(status, 200);
    }

    let started = Instant::now();
    let request = jg.request_ok(ALICE, READ, "10m").await;
    let request_id = id_of(&request);
    let (status, approved) = jg.decide(BOB, &request_id, "approve", None).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "approval answered {status}: {approved}");
    eprintln!("request and approval with a dead webhook took {took:?}");
    assert!(
        took < secs(2),
        "request + approve took {took:?}: a dead webhook must not block"
    );
    let grant_id = id_string(&approved["grant"]);

    let wanted = ["request_created", "request_approved", "grant_created"];
    let events = eventually(secs(10), "the three events at the webhook", || async {
        let got = received.lock().unwrap().clone();
        wanted
            .iter()
            .all(|w| got.iter().any(|d| d.body["event"] == *w))
            .then_some(got)
    })
    .await;
    for delivery in &events {
        assert!(
            delivery.head.starts_with("post /hooks/jitgate ")
                && delivery.head.contains("content-type: application/json"),
            "{}",
            delivery.head
        );
        assert!(
            delivery.body["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty()),
            "every event carries a Slack-compatible `text`: {}",
            delivery.body
        );
    }
    let event = |name: &str| {
        events
            .iter()
            .find(|d| d.body["event"] == name)
            .map(|d| d.body.clone())
            .unwrap()
    };
    assert_eq!(
        id_string(&event("request_created")["request"]["id"]),
        request_id
    );
    assert_eq!(event("request_approved")["by"], "bob");
    assert_eq!(id_string(&event("grant_created")["grant"]["id"]), grant_id);
    assert!(
        event("request_created")["text"]
            .as_str()
            .is_some_and(|t| t.contains("alice")),
        "{}",
        event("request_created")
    );
    // Each links to the request's page, in `url` and at the end of `text`.
    let page = format!("{}/requests/{request_id}", jg.admin_url());
    for name in wanted {
        let e = event(name);
        assert_eq!(e["url"], page.as_str(), "{e}");
        assert!(e["text"].as_str().unwrap().ends_with(&page), "{e}");
    }
    jg.assert_alive().await;
}

/// Expiries found by the journal replay at start are announced like live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_hears_of_a_grant_that_expired_during_downtime() {
    let (url, received) = webhook_receiver().await;
    let (_pg, mut jg) = setup_with(JitgateOptions {
        webhooks: vec![url],
        ..with_policy(1, &["developer"])
    })
    .await;
    let (_, grant) = approved_grant(&jg, "3s").await;
    let grant_id = id_of(&grant);
    jg.kill_now();
    tokio::time::sleep(secs(4)).await;
    jg.start_again().await;
    eventually(
        secs(10),
        "grant_expired at the webhook after the restart",
        || async {
            received
                .lock()
                .unwrap()
                .iter()
                .any(|d| {
                    d.body["event"] == "grant_expired"
                        && id_string(&d.body["grant"]["id"]) == grant_id
                })
                .then_some(())
        },
    )
    .await;
}

/// A session open when the proxy is SIGKILLed gets its `session_end` when
/// the proxy starts again, saying the proxy stopped; the chain still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_open_at_a_crash_is_ended_at_the_next_start() {
    let (_pg, mut jg) = setup().await;
    jg.grant("alice", PG_TARGET, READ, "10m").await;
    let client = jg.connect_ok(&Login::alice()).await;
    client.simple_query("SELECT 1").await.expect("a read");
    let started = jg
        .wait_for_audit("the session's start", |v| v["event"] == "session_start")
        .await;
    let session = started["session"].clone();
    jg.kill_now();
    drop(client);
    assert!(
        !jg.audit_lines()
            .iter()
            .any(|v| v["event"] == "session_end" && v["session"] == session),
        "SIGKILL leaves no session_end"
    );
    jg.start_again().await;
    let ended = jg
        .wait_for_audit("the session_end written at start", |v| {
            v["event"] == "session_end" && v["session"] == session
        })
        .await;
    assert_eq!(ended["reason"], "proxy_stopped", "{ended}");
    assert_eq!(ended["grant"], started["grant"], "{ended}");
    assert_eq!(ended["identity"], "alice", "{ended}");
    // Started again, the proxy does not end it twice.
    jg.restart().await;
    let ends = jg
        .audit_lines()
        .iter()
        .filter(|v| v["event"] == "session_end" && v["session"] == session)
        .count();
    assert_eq!(ends, 1);
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["audit", "verify"])
        .arg(jg.audit_path())
        .output()
        .expect("run jitgate audit verify");
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}
