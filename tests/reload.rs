//! Reloading the config while sessions run: `jitgate reload` and SIGHUP.
//!
//! The witnesses are what psql saw, the target's `pg_stat_activity`, the
//! audit log, `/metrics` and the CLI's own answer.

mod support;

use std::time::Duration;

use support::*;

const DAVE_SECRET: &str = "dave-secret";

/// psql as `user` on `dbname`, sleeping; its backends carry `app` as
/// their application name, so the server tells the sessions apart.
fn sleeping(
    jg: &Jitgate,
    user: &str,
    secret: &str,
    dbname: &str,
    app: &str,
    secs: u32,
) -> tokio::process::Child {
    let login = Login::new(user, secret).dbname(dbname);
    let mut cmd = tokio::process::Command::new("psql");
    cmd.env("PGPASSWORD", &login.password)
        .env("PGPASSFILE", "/dev/null")
        .env("PGAPPNAME", app)
        .env("PGCONNECT_TIMEOUT", "5")
        .arg("-X")
        .arg(jg.conninfo(&login))
        .args(["-c", &format!("SELECT pg_sleep({secs})")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn().expect("start psql")
}

async fn ended(psql: tokio::process::Child) -> (bool, String) {
    let out = tokio::time::timeout(Duration::from_secs(15), psql.wait_with_output())
        .await
        .expect("psql ended")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The proxy's config file, edited by `edit`.
fn rewrite(jg: &Jitgate, edit: impl FnOnce(String) -> String) {
    let path = jg.config_path();
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, edit(text)).unwrap();
}

/// The `[[identities]]` table of `name`, cut out of `text`.
fn without_identity(text: &str, name: &str) -> String {
    let start = text
        .find(&format!("[[identities]]\nname = \"{name}\""))
        .unwrap_or_else(|| panic!("no identity {name} in\n{text}"));
    let end = text[start + 1..]
        .find("\n[")
        .map_or(text.len(), |i| start + 1 + i + 1);
    format!("{}{}", &text[..start], &text[end..])
}

fn second_target(text: &str) -> String {
    let first = text.find("[[targets]]").unwrap();
    let end = text[first + 1..]
        .find("\n[[policies]]")
        .or_else(|| text[first + 1..].find("\n[[targets]]"))
        .map_or(text.len(), |i| first + 1 + i + 1);
    let copy = text[first..end].replace("name = \"demo-pg\"", "name = \"demo-pg2\"");
    format!("{text}\n{copy}")
}

async fn metric(jg: &Jitgate, line_start: &str) -> String {
    let text = reqwest::get(format!("{}/metrics", jg.admin_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_and_removes_identities_and_targets_without_touching_sessions_still_allowed()
{
    let pg = PgServer::start().await;
    let jg = Jitgate::start(&pg, JitgateOptions::default()).await;
    jg.grant("alice", PG_TARGET, "read", "30m").await;
    jg.grant("bob", PG_TARGET, "read", "30m").await;
    let alices = sleeping(&jg, "alice", ALICE_SECRET, PG_TARGET, "alices", 60);
    let bobs = sleeping(&jg, "bob", BOB_SECRET, PG_TARGET, "bobs", 4);
    pg.wait_for_backend_count(By::App("alices"), 1).await;
    pg.wait_for_backend_count(By::App("bobs"), 1).await;

    // alice leaves, dave joins, a second target appears.
    let dave = jitgate::identity::ScramVerifier::generate(DAVE_SECRET);
    rewrite(&jg, |text| {
        let text = without_identity(&text, "alice");
        let text = second_target(&text);
        format!(
            "{text}\n[[identities]]\nname = \"dave\"\ngroups = [\"developer\"]\nsecret = \"{dave}\"\n"
        )
    });
    let out = jg.cli(ADMIN_SECRET, &["reload"]).await;
    out.assert_ok(&jg);
    assert!(
        out.stdout.contains("identities added: +dave"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("identities removed: -alice"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("targets added: +demo-pg2"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("1 session(s) ended"), "{}", out.stdout);

    let (ok, told) = ended(alices).await;
    assert!(!ok);
    assert!(told.contains("the identity alice was removed"), "{told}");
    pg.wait_for_backend_count(By::App("alices"), 0).await;
    // bob's query ran to its end, untouched.
    let (ok, said) = ended(bobs).await;
    assert!(ok, "bob's session was touched: {said}");
    let refused = jg.psql_as(&Login::alice(), &["-c", "SELECT 1"], None).await;
    assert!(!refused.status.success());

    jg.grant("dave", "demo-pg2", "read", "30m").await;
    let daves = sleeping(&jg, "dave", DAVE_SECRET, "demo-pg2", "daves", 60);
    pg.wait_for_backend_count(By::App("daves"), 1).await;

    // A config that does not load changes nothing.
    rewrite(&jg, |text| format!("{text}\n[limits\n"));
    let broken = jg.cli(ADMIN_SECRET, &["reload"]).await;
    assert!(!broken.status.success());
    assert!(
        broken.stderr.contains("config refused"),
        "{}",
        broken.stderr
    );
    assert!(broken.stderr.contains("jitgate.toml"), "{}", broken.stderr);
    assert!(broken.stderr.contains("unchanged"), "{}", broken.stderr);
    assert_eq!(pg.count_backends(By::App("daves")).await, 1);
    assert_eq!(
        metric(&jg, "jitgate_config_reloads_total{result=\"failed\"}").await,
        "jitgate_config_reloads_total{result=\"failed\"} 1"
    );
    assert_eq!(
        metric(&jg, "jitgate_config_last_reload_successful").await,
        "jitgate_config_last_reload_successful 0"
    );
    let non_admin = jg.cli(BOB_SECRET, &["reload"]).await;
    assert!(!non_admin.status.success());
    assert!(
        non_admin.stderr.contains("only members of group `admin`"),
        "{}",
        non_admin.stderr
    );

    // SIGHUP: the second target goes, and dave's session on it ends.
    rewrite(&jg, |text| {
        let text = text.trim_end().trim_end_matches("[limits").to_owned();
        let start = text.find("name = \"demo-pg2\"").unwrap();
        let table = text[..start].rfind("[[targets]]").unwrap();
        let end = text[start..]
            .find("\n[[identities]]")
            .map_or(text.len(), |i| start + i + 1);
        format!("{}{}", &text[..table], &text[end..])
    });
    let status = std::process::Command::new("kill")
        .args(["-HUP", &jg.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (ok, told) = ended(daves).await;
    assert!(!ok);
    assert!(told.contains("the target demo-pg2 was removed"), "{told}");
    let record = jg
        .wait_for_audit("config_reloaded by SIGHUP", |r| {
            r["event"] == "config_reloaded" && r["by"] == "SIGHUP"
        })
        .await;
    assert!(
        record["detail"]
            .as_str()
            .unwrap()
            .contains("targets: +0 -1"),
        "{record}"
    );
    assert_eq!(
        metric(&jg, "jitgate_config_last_reload_successful").await,
        "jitgate_config_last_reload_successful 1"
    );
    jg.wait_for_audit("config_reload_failed", |r| {
        r["event"] == "config_reload_failed"
    })
    .await;
    let dave_still = jg
        .psql_as(&Login::new("dave", DAVE_SECRET), &["-c", "SELECT 1"], None)
        .await;
    assert!(
        !dave_still.status.success(),
        "dave's grant is on a target that is gone"
    );
    jg.grant("dave", PG_TARGET, "read", "5m").await;
    jg.psql_as(&Login::new("dave", DAVE_SECRET), &["-c", "SELECT 1"], None)
        .await
        .assert_ok(&jg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_level_made_read_only_by_a_reload_ends_the_sessions_that_could_write() {
    let pg = PgServer::start().await;
    let jg = Jitgate::start(&pg, JitgateOptions::default()).await;
    jg.grant("alice", PG_TARGET, "write", "30m").await;
    jg.grant("bob", PG_TARGET, "read", "30m").await;
    let writer = sleeping(
        &jg,
        "alice",
        ALICE_SECRET,
        &format!("{PG_TARGET}@write"),
        "writer",
        60,
    );
    let reader = sleeping(&jg, "bob", BOB_SECRET, PG_TARGET, "reader", 4);
    pg.wait_for_backend_count(By::App("writer"), 1).await;
    pg.wait_for_backend_count(By::App("reader"), 1).await;
    rewrite(&jg, |text| {
        text.replace(
            "[targets.levels.write]\n",
            "[targets.levels.write]\nread_only = true\nallow_privileged_read_account = true\n",
        )
    });
    let out = jg.cli(ADMIN_SECRET, &["reload"]).await;
    out.assert_ok(&jg);
    assert!(
        out.stdout.contains("targets changed: ~demo-pg"),
        "{}",
        out.stdout
    );
    let (ok, told) = ended(writer).await;
    assert!(!ok);
    assert!(told.contains("read-only in jitgate's config now"), "{told}");
    pg.wait_for_backend_count(By::App("writer"), 0).await;
    let (ok, said) = ended(reader).await;
    assert!(ok, "the read session was touched: {said}");
}
