//! The `jitgate` client commands against a running `jitgate serve`.
//!
//! Each test starts the real binary with a config of the kit's (see
//! `support`: admin, postgres and mysql listeners on free ports; the
//! targets' databases are never contacted) and runs the CLI as
//! subprocesses, with the server and token in `JITGATE_SERVER` /
//! `JITGATE_TOKEN`, as a person would.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const ALICE: &str = ALICE_SECRET;
const BOB: &str = BOB_SECRET;

/// A PostgreSQL and a MySQL target with nothing behind them, and a policy
/// that lets developers ask the approvers for read access to either.
const TARGETS: &str = r#"
[[targets]]
name = "demo-pg"
protocol = "postgres"
address = "127.0.0.1:1"
database = "postgres"
[targets.levels.read]
user = "reader"
read_only = true

[[targets]]
name = "demo-mysql"
protocol = "mysql"
address = "127.0.0.1:1"
database = "app"
[targets.levels.read]
user = "reader"
read_only = true
"#;

const POLICY: &str = r#"
[[policies]]
name = "demo-read"
targets = ["demo-pg", "demo-mysql"]
levels = ["read"]
requesters = ["developer"]
max_duration = "1h"
approvals = 1
approvers = ["approver"]
"#;

/// A running `jitgate serve` for the CLI to talk to, stopped when dropped.
async fn start() -> Jitgate {
    Jitgate::launch(JitgateConfig {
        postgres_listener: true,
        mysql_listener: true,
        audit_fsync: "always".to_owned(),
        targets: TARGETS.to_owned(),
        extra: POLICY.to_owned(),
        ..JitgateConfig::default()
    })
    .await
}

/// `jitgate <args>` as `token`'s holder would run it.
async fn run_cli(proxy: &Jitgate, token: &str, args: &[&str]) -> Run {
    no_token_in(proxy.cli(token, args).await, args)
}

/// `run` must not have printed a token.
fn no_token_in(run: Run, args: &[&str]) -> Run {
    for secret in [ALICE, BOB] {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "`jitgate {}` printed a token",
            args.join(" ")
        );
    }
    run
}

/// Run a command that must succeed and print JSON.
async fn json(proxy: &Jitgate, token: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let run = run_cli(proxy, token, &args).await;
    run.assert_ok(proxy);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

/// alice asks for read access to demo-pg; the request's id.
async fn request(proxy: &Jitgate) -> String {
    let q = json(
        proxy,
        ALICE,
        &[
            "request", "demo-pg", "--level", "read", "--for", "30m", "--reason", "INC-42",
        ],
    )
    .await;
    assert_eq!(q["state"], "pending", "{q}");
    q["id"].as_str().unwrap().to_owned()
}

/// Exit 1 with `jitgate: <error>: …` on stderr.
#[track_caller]
fn assert_refused(run: &Run, error: &str) {
    assert_eq!(
        run.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr.starts_with(&format!("jitgate: {error}: ")),
        "stderr: {}",
        run.stderr
    );
}

#[tokio::test]
async fn request_approve_list_and_revoke_through_the_cli() {
    let proxy = start().await;
    let id = request(&proxy).await;

    let listed = run_cli(&proxy, ALICE, &["requests"]).await;
    listed.assert_ok(&proxy);
    let mut lines = listed.stdout.lines();
    assert!(
        lines.next().unwrap().starts_with("ID "),
        "{}",
        listed.stdout
    );
    let row = lines.next().unwrap();
    assert!(
        row.starts_with(&id) && row.contains("pending") && row.contains("INC-42"),
        "{}",
        listed.stdout
    );
    assert!(
        run_cli(&proxy, BOB, &["requests"])
            .await
            .stdout
            .contains(&id)
    );

    // The API's own words, on stderr, exit 1.
    let own = run_cli(&proxy, ALICE, &["approve", &id]).await;
    assert_refused(&own, "forbidden");
    assert!(own.stdout.is_empty(), "{}", own.stdout);

    let approved = run_cli(&proxy, BOB, &["approve", &id, "--comment", "ok for INC-42"]).await;
    approved.assert_ok(&proxy);
    assert!(
        approved.stdout.contains("approved by bob"),
        "{}",
        approved.stdout
    );
    assert_refused(&run_cli(&proxy, BOB, &["deny", &id]).await, "conflict");

    let grants = json(&proxy, BOB, &["grants"]).await;
    let grant = &grants["grants"][0];
    assert_eq!(grant["identity"], "alice", "{grants}");
    assert_eq!(grant["approved_by"], serde_json::json!(["bob"]));
    assert_eq!(grant["request"], id.as_str());
    let grant_id = grant["id"].as_str().unwrap().to_owned();
    let table = run_cli(&proxy, ALICE, &["grants"]).await;
    table.assert_ok(&proxy);
    assert!(
        table.stdout.contains(&grant_id) && table.stdout.contains("bob"),
        "{}",
        table.stdout
    );

    let revoked = run_cli(&proxy, ALICE, &["revoke", &grant_id]).await;
    revoked.assert_ok(&proxy);
    assert!(revoked.stdout.contains("revoked"), "{}", revoked.stdout);
    assert_eq!(
        json(&proxy, BOB, &["grants"]).await,
        serde_json::json!({"grants": []})
    );
    assert_refused(
        &run_cli(&proxy, ALICE, &["revoke", &grant_id]).await,
        "grant not found",
    );
}

/// alice's `jitgate request <target> … --wait`, running, and the id of the
/// request once bob sees it pending.
async fn request_waiting(proxy: &Jitgate, target: &str) -> (tokio::process::Child, String) {
    let waiting = proxy
        .cli_command(
            ALICE,
            &[
                "request", target, "--level", "read", "--for", "30m", "--reason", "INC-7", "--wait",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pending = json(proxy, BOB, &["requests"]).await;
        let found = pending["requests"]
            .as_array()
            .and_then(|list| list.iter().find(|r| r["target"] == target))
            .and_then(|r| r["id"].as_str().map(str::to_owned));
        if let Some(id) = found {
            return (waiting, id);
        }
        assert!(Instant::now() < deadline, "the request never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `request --wait` prints the command that connects to the target, with
/// the client of its protocol: psql for PostgreSQL, mariadb for MySQL.
#[tokio::test]
async fn request_wait_prints_the_connection_command_once_approved() {
    let proxy = start().await;
    for (target, expected) in [
        (
            "demo-pg",
            format!(
                "psql \"host=127.0.0.1 port={} user=alice dbname=demo-pg sslmode=require\"",
                proxy.pg_port()
            ),
        ),
        (
            "demo-mysql",
            format!(
                "mariadb -h 127.0.0.1 -P {} -u alice -p --ssl demo-mysql",
                proxy.mysql_port()
            ),
        ),
    ] {
        let (waiting, id) = request_waiting(&proxy, target).await;
        run_cli(&proxy, BOB, &["approve", &id])
            .await
            .assert_ok(&proxy);

        let run = no_token_in(
            Run::from(waiting.wait_with_output().await.unwrap()),
            &["request", "--wait"],
        );
        run.assert_ok(&proxy);
        assert!(
            run.stdout.lines().any(|l| l == expected),
            "{target}: stdout: {}\nstderr: {}",
            run.stdout,
            run.stderr
        );
        assert!(
            !run.stdout.to_lowercase().contains("password="),
            "{}",
            run.stdout
        );
    }
}

#[tokio::test]
async fn request_wait_exits_1_when_the_request_is_denied() {
    let proxy = start().await;
    let (waiting, id) = request_waiting(&proxy, "demo-pg").await;
    run_cli(&proxy, BOB, &["deny", &id, "--comment", "use the replica"])
        .await
        .assert_ok(&proxy);
    let run = no_token_in(
        Run::from(waiting.wait_with_output().await.unwrap()),
        &["request", "--wait"],
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("request {id} was denied by bob: use the replica")),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn cancel_whoami_sessions_and_kill() {
    let proxy = start().await;
    let id = request(&proxy).await;
    let cancelled = run_cli(&proxy, ALICE, &["cancel", &id]).await;
    cancelled.assert_ok(&proxy);
    assert!(
        cancelled.stdout.contains("cancelled"),
        "{}",
        cancelled.stdout
    );
    let all = run_cli(&proxy, ALICE, &["requests", "--state", "all"]).await;
    all.assert_ok(&proxy);
    assert!(
        all.stdout.contains(&id) && all.stdout.contains("cancelled"),
        "{}",
        all.stdout
    );
    assert_refused(
        &run_cli(&proxy, ALICE, &["requests", "--state", "open"]).await,
        "bad state",
    );

    let me = run_cli(&proxy, BOB, &["whoami"]).await;
    me.assert_ok(&proxy);
    assert_eq!(
        me.stdout
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["bob", "approver"]
    );
    assert_eq!(
        json(&proxy, ALICE, &["whoami"]).await,
        serde_json::json!({"identity": "alice", "groups": ["developer"]})
    );

    assert_eq!(
        json(&proxy, BOB, &["sessions"]).await,
        serde_json::json!({"sessions": []})
    );
    let sessions = run_cli(&proxy, BOB, &["sessions"]).await;
    sessions.assert_ok(&proxy);
    assert!(sessions.stdout.is_empty(), "{}", sessions.stdout);
    assert_refused(
        &run_cli(&proxy, BOB, &["kill", "s_0000000000000000"]).await,
        "session not found",
    );
}

#[tokio::test]
async fn a_wrong_or_missing_token_and_an_unreachable_server_are_explained() {
    let proxy = start().await;
    assert_refused(
        &run_cli(&proxy, "not-a-secret", &["grants"]).await,
        "invalid token",
    );

    let run = no_token_in(
        Run::from(
            proxy
                .cli_command(ALICE, &["grants"])
                .env_remove("JITGATE_TOKEN")
                .output()
                .await
                .unwrap(),
        ),
        &["grants"],
    );
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stderr.contains("JITGATE_TOKEN"), "{}", run.stderr);

    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let run = no_token_in(
        Run::from(
            proxy
                .cli_command(ALICE, &["grants"])
                .env("JITGATE_SERVER", &nowhere)
                .output()
                .await
                .unwrap(),
        ),
        &["grants"],
    );
    assert_eq!(run.status.code(), Some(1));
    assert!(
        run.stderr.starts_with("jitgate: cannot reach") && run.stderr.contains(&nowhere),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn the_server_subcommands_still_work() {
    let proxy = start().await;
    let config = proxy.config_path().to_str().unwrap().to_owned();
    let check = proxy
        .server_command(&["check-config", "-c", &config])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let audit = proxy.audit_path().to_owned();
    request(&proxy).await;
    let verify = proxy
        .server_command(&["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
}
