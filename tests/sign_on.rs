//! Sign-on through a real OpenID Connect provider (panva's oidc-provider
//! under Node): `jitgate login` in a browser and on another device, the
//! credential it gets as API token and database password, groups from the
//! provider deciding a policy, logout and expiry ending sessions, and the
//! ID tokens jitgate refuses.
//!
//! The browser is the kit's [`Browser`]: it signs in on the provider's own
//! login and consent forms over HTTP and follows the provider's redirect to
//! the CLI's loopback port. The witnesses are the CLI's output, the
//! credentials file, the target's `pg_stat_activity`, what psql saw and
//! jitgate's audit log.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Developers may ask for read on demo-pg; one approver must say yes.
const POLICY: &str = "[[policies]]\nname = \"dev-read\"\ntargets = [\"demo-pg\"]\n\
                      levels = [\"read\"]\nrequesters = [\"developer\"]\nmax_duration = \"1h\"\n\
                      approvals = 1\napprovers = [\"approver\"]\n";

const ANN: &str = "ann@example.com";
const LEE: &str = "lee@example.com";

/// A target, a provider with ann (a developer) and lee (an approver), and
/// a jitgate that signs people on there.
struct World {
    pg: PgServer,
    provider: OidcProvider,
    jg: Jitgate,
}

async fn world(credential_ttl: &str) -> World {
    world_with(credential_ttl, "30s", ProviderOptions::default()).await
}

async fn world_with(credential_ttl: &str, clock_skew: &str, options: ProviderOptions) -> World {
    let pg = PgServer::start().await;
    let provider = OidcProvider::start_with(
        vec![
            jitgate_client("jitgate", "ES256"),
            jitgate_client("other-app", "RS256"),
        ],
        &[
            Account {
                login: "ann",
                email: ANN,
                groups: &["developer"],
            },
            Account {
                login: "lee",
                email: LEE,
                groups: &["approver"],
            },
            // Another account at the provider that claims ann's address.
            Account {
                login: "mallory",
                email: ANN,
                groups: &["admin"],
            },
        ],
        options,
    )
    .await;
    let config = provider.jitgate_config(&pg, "jitgate", credential_ttl, clock_skew, POLICY);
    let jg = Jitgate::launch(config).await;
    World { pg, provider, jg }
}

/// The `jitgate` CLI of a person whose config directory is `home`.
fn cli(jg: &Jitgate, home: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_jitgate"));
    cmd.args(args)
        .env("JITGATE_SERVER", jg.admin_url())
        .env_remove("JITGATE_TOKEN")
        .env_remove("JITGATE_CREDENTIALS")
        .env("XDG_CONFIG_HOME", home)
        .env("BROWSER", "/bin/false")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn run(jg: &Jitgate, home: &Path, args: &[&str]) -> Run {
    let out = tokio::time::timeout(Duration::from_secs(30), cli(jg, home, args).output())
        .await
        .expect("the CLI finished")
        .expect("run the CLI");
    Run::from(out)
}

/// Run a login command, and hand each line it writes to stderr to
/// `on_line` until it returns what to do with the browser.
async fn login_with(
    jg: &Jitgate,
    home: &Path,
    args: &[&str],
    person: &str,
    browser: &Browser,
) -> Run {
    let mut child = cli(jg, home, args).spawn().expect("start jitgate login");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // The browser flow prints the address to open, the device flow the
    // address with the code in it.
    let url = loop {
        assert!(Instant::now() < deadline, "no address printed: {seen}");
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a line from jitgate login")
            .unwrap()
            .unwrap_or_else(|| panic!("jitgate login ended: {seen}\n{}", jg.log()));
        seen.push_str(&line);
        seen.push('\n');
        let trimmed = line
            .trim()
            .trim_start_matches("(or open ")
            .trim_end_matches(')');
        if trimmed.starts_with("http://")
            && (!args.contains(&"--device") || trimmed.contains("user_code"))
        {
            break trimmed.to_owned();
        }
    };
    if args.contains(&"--device") {
        browser.approve_device(&url, person).await;
    } else {
        let page = browser.sign_in_and_return(&url, person).await;
        assert!(page.contains("Signed in to jitgate"), "{page}");
    }
    let mut rest = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push_str(&line);
        rest.push('\n');
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("jitgate login finished")
        .unwrap();
    let mut run = Run::from(out);
    run.stderr = format!("{seen}{rest}");
    run
}

/// The credentials file of `home`, as JSON.
fn stored(home: &Path) -> Value {
    let path = home.join("jitgate/credentials.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn secret_of(home: &Path, jg: &Jitgate) -> String {
    let file = stored(home);
    file["servers"][jg.admin_url().trim_end_matches('/')]["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("no credential for {} in {file}", jg.admin_url()))
        .to_owned()
}

/// psql as `user` with `password`, running a query that sleeps.
fn sleeping_psql(jg: &Jitgate, user: &str, password: &str) -> tokio::process::Child {
    jg.spawn_psql(
        &Login::new(user, password),
        &["-c", "SELECT pg_sleep(60)"],
        false,
    )
}

/// What psql said when the proxy cut it off (within 10 s).
async fn cut_off(psql: tokio::process::Child, jg: &Jitgate) -> String {
    let out = tokio::time::timeout(Duration::from_secs(10), psql.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("psql was not cut off\n{}", jg.log()))
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_signs_on_in_the_browser_an_approver_on_another_device_and_psql_gets_in() {
    let w = world("12h").await;
    let browser = Browser::default();
    let ann_home = tempfile::tempdir().unwrap();
    let login = login_with(
        &w.jg,
        ann_home.path(),
        &["login", "--no-browser"],
        "ann",
        &browser,
    )
    .await;
    login.assert_ok(&w.jg);
    assert!(
        login
            .stdout
            .contains("signed in as ann@example.com (groups developer)"),
        "{}",
        login.stdout
    );
    let file = ann_home.path().join("jitgate/credentials.json");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret = secret_of(ann_home.path(), &w.jg);
    assert!(secret.starts_with("jgc_"));
    assert!(!login.stdout.contains(&secret) && !login.stderr.contains(&secret));
    assert!(
        !w.jg.log().contains(&secret),
        "the secret is in jitgate's log"
    );
    assert!(
        !w.jg.audit_text().contains(&secret),
        "the secret is in the audit log"
    );

    // The stored credential is the API token: whoami lists it with its expiry.
    let whoami = run(&w.jg, ann_home.path(), &["whoami", "--json"]).await;
    whoami.assert_ok(&w.jg);
    let me: Value = serde_json::from_str(&whoami.stdout).unwrap();
    assert_eq!(me["identity"], ANN);
    assert_eq!(me["groups"], json!(["developer"]));
    assert_eq!(me["credentials"].as_array().unwrap().len(), 1, "{me}");
    assert!(me["credentials"][0]["expires_at"].is_string());

    // The provider's groups decide the policy: ann (developer) may ask.
    let asked = run(
        &w.jg,
        ann_home.path(),
        &[
            "request", "demo-pg", "--level", "read", "--for", "10m", "--reason", "INC-7", "--json",
        ],
    )
    .await;
    asked.assert_ok(&w.jg);
    let request: Value = serde_json::from_str(&asked.stdout).unwrap();
    let id = request["id"].as_str().unwrap().to_owned();

    // lee signs on with the device flow; the provider says lee approves.
    let lee_home = tempfile::tempdir().unwrap();
    // lee's own browser: ann's still holds ann's session at the provider.
    let lees_browser = Browser::default();
    let device = login_with(
        &w.jg,
        lee_home.path(),
        &["login", "--device"],
        "lee",
        &lees_browser,
    )
    .await;
    device.assert_ok(&w.jg);
    assert!(
        device
            .stdout
            .contains("signed in as lee@example.com (groups approver)"),
        "{}",
        device.stdout
    );
    assert!(
        device.stderr.contains("enter the code"),
        "{}",
        device.stderr
    );
    let decided = run(&w.jg, lee_home.path(), &["approve", &id]).await;
    decided.assert_ok(&w.jg);

    // ann's credential is her database password; the server sees the read
    // level's account, never ann's name.
    let psql =
        w.jg.psql_as(
            &Login::new(ANN, &secret),
            &["-c", "SELECT current_user"],
            None,
        )
        .await;
    psql.assert_ok(&w.jg);
    assert_eq!(psql.stdout.trim(), "jg_read");

    // Every step is in the audit log, no secret with it.
    let audit = w.jg.audit_lines();
    for event in ["sign_in", "credential_issued", "login_ok"] {
        assert!(
            audit
                .iter()
                .any(|r| r["event"] == event && r["identity"] == ANN),
            "no {event} for ann: {audit:?}"
        );
    }
    assert!(
        audit
            .iter()
            .any(|r| r["event"] == "sign_in" && r["identity"] == LEE)
    );

    // The provider going away stops new sign-ons, nothing else.
    let mut provider = w.provider;
    provider.stop();
    let still =
        w.jg.psql_as(&Login::new(ANN, &secret), &["-c", "SELECT 1"], None)
            .await;
    still.assert_ok(&w.jg);
    run(&w.jg, ann_home.path(), &["whoami"])
        .await
        .assert_ok(&w.jg);
    let nobody = run(
        &w.jg,
        tempfile::tempdir().unwrap().path(),
        &["login", "--device"],
    )
    .await;
    assert!(!nobody.status.success());
    assert!(
        nobody
            .stderr
            .contains("identity provider cannot be reached"),
        "{}",
        nobody.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_ends_the_sessions_opened_with_the_credential_and_an_admin_ends_all_of_a_persons()
 {
    let w = world("12h").await;
    let browser = Browser::default();
    let (laptop, desktop) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for home in [&laptop, &desktop] {
        login_with(
            &w.jg,
            home.path(),
            &["login", "--no-browser"],
            "ann",
            &browser,
        )
        .await
        .assert_ok(&w.jg);
    }
    let (one, two) = (
        secret_of(laptop.path(), &w.jg),
        secret_of(desktop.path(), &w.jg),
    );
    assert_ne!(one, two);
    w.jg.grant(ANN, PG_TARGET, "read", "30m").await;

    let first = sleeping_psql(&w.jg, ANN, &one);
    let second = sleeping_psql(&w.jg, ANN, &two);
    w.pg.wait_for_backend_count(By::User("jg_read"), 2).await;

    // The laptop logs out: its session ends, the desktop's runs on.
    let out = run(&w.jg, laptop.path(), &["logout"]).await;
    out.assert_ok(&w.jg);
    assert!(out.stdout.contains("logged out"), "{}", out.stdout);
    let told = cut_off(first, &w.jg).await;
    assert!(told.contains("logged out"), "{told}");
    w.pg.wait_for_backend_count(By::User("jg_read"), 1).await;
    assert!(
        !laptop.path().join("jitgate/credentials.json").exists()
            || stored(laptop.path())["servers"]
                .as_object()
                .unwrap()
                .is_empty()
    );
    let again =
        w.jg.psql_as(&Login::new(ANN, &one), &["-c", "SELECT 1"], None)
            .await;
    assert!(!again.status.success());
    assert!(
        again.stderr.contains("password authentication failed"),
        "{}",
        again.stderr
    );

    // An admin ends everything ann holds at once.
    let admin = w.jg.cli(ADMIN_SECRET, &["logout", "--user", ANN]).await;
    admin.assert_ok(&w.jg);
    assert!(
        admin.stdout.contains("ended 1 credential"),
        "{}",
        admin.stdout
    );
    let told = cut_off(second, &w.jg).await;
    assert!(told.contains("logged out"), "{told}");
    w.pg.wait_for_backend_count(By::User("jg_read"), 0).await;
    let whoami = run(&w.jg, desktop.path(), &["whoami"]).await;
    assert!(!whoami.status.success());
    let audit = w.jg.audit_lines();
    let revoked: Vec<_> = audit
        .iter()
        .filter(|r| r["event"] == "credential_revoked" && r["identity"] == ANN)
        .collect();
    assert_eq!(revoked.len(), 2, "{revoked:?}");
    assert!(revoked.iter().any(|r| r["by"] == "admin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_ends_at_its_ttl_and_so_do_its_sessions() {
    let w = world("12s").await;
    let browser = Browser::default();
    let home = tempfile::tempdir().unwrap();
    login_with(
        &w.jg,
        home.path(),
        &["login", "--no-browser"],
        "ann",
        &browser,
    )
    .await
    .assert_ok(&w.jg);
    let secret = secret_of(home.path(), &w.jg);
    w.jg.grant(ANN, PG_TARGET, "read", "30m").await;
    let psql = sleeping_psql(&w.jg, ANN, &secret);
    w.pg.wait_for_backend_count(By::User("jg_read"), 1).await;
    let out = tokio::time::timeout(Duration::from_secs(25), psql.wait_with_output())
        .await
        .expect("the session ended with its credential")
        .unwrap();
    let told = String::from_utf8_lossy(&out.stderr);
    assert!(told.contains("expired"), "{told}");
    w.pg.wait_for_backend_count(By::User("jg_read"), 0).await;
    let late =
        w.jg.psql_as(&Login::new(ANN, &secret), &["-c", "SELECT 1"], None)
            .await;
    assert!(!late.status.success());
    let whoami = run(&w.jg, home.path(), &["whoami"]).await;
    assert!(!whoami.status.success());
    assert!(whoami.stderr.contains("jitgate login"), "{}", whoami.stderr);
    w.jg.wait_for_audit("credential_expired", |r| {
        r["event"] == "credential_expired" && r["identity"] == ANN
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_redeemed_with_another_nonce_is_refused_and_audited() {
    let w = world("12h").await;
    let browser = Browser::default();
    let nonce = "nonce-sent-with-the-sign-on-0001";
    let verifier = "v".repeat(43);
    let challenge = jitgate::identity::oidc_code_challenge(&verifier);
    let (status, started) = w
        .jg
        .api(
            reqwest::Method::POST,
            "/v1/login/start",
            None,
            Some(json!({"redirect_uri": "http://127.0.0.1:9/callback", "state": "state-of-this-sign-on-01",
                        "nonce": nonce, "code_challenge": challenge})),
        )
        .await;
    assert_eq!(status, 200, "{started}");
    let back = browser
        .sign_in(started["authorization_url"].as_str().unwrap(), "ann")
        .await;
    let code = code_in(&back);
    let (status, body) =
        w.jg.api(
            reqwest::Method::POST,
            "/v1/login/code",
            None,
            Some(
                json!({"code": code, "redirect_uri": "http://127.0.0.1:9/callback",
                        "code_verifier": verifier, "nonce": "another-nonce-than-was-sent"}),
            ),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("nonce"), "{body}");
    let record =
        w.jg.wait_for_audit("login_failed", |r| r["event"] == "login_failed")
            .await;
    assert_eq!(record["reason"], "wrong_nonce", "{record}");
    assert!(
        !w.jg.audit_text().contains(&code),
        "the code is in the audit log"
    );
}

/// Sign on through the API as the CLI does (a made-up loopback redirect the
/// browser is not sent to): the status and body of `/v1/login/code`.
async fn sign_on(jg: &Jitgate, login: &str) -> (u16, Value) {
    let verifier = "w".repeat(43);
    let redirect = "http://127.0.0.1:9/callback";
    let (status, started) = jg
        .api(
            reqwest::Method::POST,
            "/v1/login/start",
            None,
            Some(
                json!({"redirect_uri": redirect, "state": "state-of-this-sign-on-02",
                        "nonce": "nonce-of-this-sign-on-0002",
                        "code_challenge": jitgate::identity::oidc_code_challenge(&verifier)}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{started}");
    let back = Browser::default()
        .sign_in(started["authorization_url"].as_str().unwrap(), login)
        .await;
    let code = code_in(&back);
    jg.api(
        reqwest::Method::POST,
        "/v1/login/code",
        None,
        Some(
            json!({"code": code, "redirect_uri": redirect, "code_verifier": verifier,
                    "nonce": "nonce-of-this-sign-on-0002"}),
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_unsigned_foreign_and_expired_id_tokens_are_refused_each_for_its_reason() {
    let options = ProviderOptions {
        interposed: true,
        id_token_ttl: Some(3),
    };
    let w = world_with("12h", "0s", options).await;
    let mitm = w.provider.interposer.as_ref().unwrap();
    // Tokens the provider itself signed: one for another client, one for
    // jitgate's client that expires before it is used.
    let foreign = w
        .provider
        .id_token_for("other-app", OIDC_CLIENT_SECRET, "ann")
        .await;
    let stale = w
        .provider
        .id_token_for("jitgate", OIDC_CLIENT_SECRET, "ann")
        .await;
    let (status, body) = sign_on(&w.jg, "ann").await;
    let keys_fetched = Instant::now();
    assert_eq!(status, 200, "an untampered sign-on works: {body}");
    assert_eq!(mitm.count("/jwks"), 1, "the keys are fetched once");
    let (status, _) = sign_on(&w.jg, "ann").await;
    assert_eq!(status, 200);
    assert_eq!(
        mitm.count("/jwks"),
        1,
        "and kept, not fetched for every sign-on"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;

    let refused = |how: Tamper, reason: &'static str, said: &'static str| {
        let (w, mitm) = (&w, mitm);
        async move {
            mitm.set(how.clone());
            let (status, body) = sign_on(&w.jg, "ann").await;
            assert_eq!(status, 401, "{how:?}: {body}");
            let detail = body["detail"].as_str().unwrap();
            assert!(detail.contains(said), "{how:?}: {detail}");
            w.jg.wait_for_audit(reason, |r| {
                r["event"] == "login_failed" && r["reason"] == reason
            })
            .await;
        }
    };
    refused(
        Tamper::FlipSignature,
        "bad_signature",
        "signature does not verify",
    )
    .await;
    refused(Tamper::Unsigned, "bad_algorithm", "signed with none").await;
    refused(
        Tamper::Replace(foreign.clone()),
        "wrong_audience",
        "another client",
    )
    .await;
    refused(Tamper::Replace(stale.clone()), "expired_token", "expired").await;
    assert_eq!(mitm.count("/jwks"), 1);

    // A key id jitgate has not seen makes it fetch the keys again (once
    // the last fetch is 10 s old): still unknown, refused; a second one
    // soon after fetches nothing.
    tokio::time::sleep(Duration::from_secs(11).saturating_sub(keys_fetched.elapsed())).await;
    let unknown = "key the provider does not publish";
    refused(Tamper::UnknownKey, "unknown_key", unknown).await;
    assert_eq!(mitm.count("/jwks"), 2);
    refused(Tamper::UnknownKey, "unknown_key", unknown).await;
    assert_eq!(mitm.count("/jwks"), 2);

    let audit = w.jg.audit_text();
    for token in [&foreign, &stale] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!audit.contains(signature), "a token is in the audit log");
    }
    let issued =
        w.jg.audit_lines()
            .into_iter()
            .filter(|r| r["event"] == "credential_issued")
            .count();
    assert_eq!(issued, 2, "only the untampered sign-ons got credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_goes_from_asking_to_a_psql_prompt_and_connect_says_what_to_do_without_a_grant()
{
    let w = world("12h").await;
    let home = tempfile::tempdir().unwrap();
    login_with(
        &w.jg,
        home.path(),
        &["login", "--no-browser"],
        "ann",
        &Browser::default(),
    )
    .await
    .assert_ok(&w.jg);
    let secret = secret_of(home.path(), &w.jg);
    let query = ["--", "-X", "-A", "-t", "-c", "select current_user"];

    let refused = run(
        &w.jg,
        home.path(),
        &[&["connect", PG_TARGET][..], &query[..]].concat(),
    )
    .await;
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("hold no active grant for demo-pg"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("--wait --connect"),
        "{}",
        refused.stderr
    );

    // Ask, wait, and land in psql once an approver says yes.
    let (bin, seen) = recording_wrapper("psql");
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let ask = [
        &[
            "request",
            PG_TARGET,
            "--level",
            "read",
            "--for",
            "5m",
            "--reason",
            "INC-9",
            "--connect",
        ][..],
        &query[..],
    ]
    .concat();
    let asking = cli(&w.jg, home.path(), &ask)
        .env("PATH", &path)
        .spawn()
        .unwrap();
    let pending = loop {
        let listed = w.jg.requests_seen_by(BOB_SECRET, "pending").await;
        if let Some(r) = listed.first() {
            break r["id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, body) = w.jg.decide(BOB_SECRET, &pending, "approve", None).await;
    assert_eq!(status, 200, "{body}");
    let out = tokio::time::timeout(Duration::from_secs(20), asking.wait_with_output())
        .await
        .expect("request --connect finished")
        .unwrap();
    let asked = Run::from(out);
    asked.assert_ok(&w.jg);
    assert_eq!(
        asked.stdout.lines().last(),
        Some("jg_read"),
        "{}",
        asked.stdout
    );
    let recorded = std::fs::read_to_string(&seen).unwrap();
    assert!(
        !recorded.contains(&secret),
        "the secret reached psql's arguments or environment"
    );
    let passfile = recorded
        .lines()
        .find_map(|l| l.strip_prefix("PGPASSFILE="))
        .unwrap_or_else(|| panic!("no pass file: {recorded}"));
    assert!(!Path::new(passfile).exists(), "{passfile} was left behind");

    // And later on, `connect` alone; psql's exit status is connect's.
    let again = run(
        &w.jg,
        home.path(),
        &[&["connect", PG_TARGET][..], &query[..]].concat(),
    )
    .await;
    again.assert_ok(&w.jg);
    assert_eq!(again.stdout.trim(), "jg_read");
    let failing = run(
        &w.jg,
        home.path(),
        &["connect", PG_TARGET, "--", "-X", "-c", "select nonsense"],
    )
    .await;
    assert_eq!(failing.status.code(), Some(1), "{}", failing.stderr);

    // With the proxy's CA, psql checks its certificate: the right one
    // passes, another CA does not.
    let ca = w.jg.dir().join("tls/cert.pem");
    let ca = ca.to_str().unwrap();
    let verified = run(
        &w.jg,
        home.path(),
        &[&["connect", PG_TARGET, "--ca-file", ca][..], &query[..]].concat(),
    )
    .await;
    verified.assert_ok(&w.jg);
    assert_eq!(verified.stdout.trim(), "jg_read");
    let stranger = tempfile::tempdir().unwrap();
    let other = stranger.path().join("other.pem");
    std::fs::write(
        &other,
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()])
            .unwrap()
            .cert
            .pem(),
    )
    .unwrap();
    let unverified = run(
        &w.jg,
        home.path(),
        &[
            &["connect", PG_TARGET, "--ca-file", other.to_str().unwrap()][..],
            &query[..],
        ]
        .concat(),
    )
    .await;
    assert!(!unverified.status.success());
    assert!(
        unverified.stderr.contains("certificate verify failed"),
        "{}",
        unverified.stderr
    );

    // Stopped (SIGTERM), connect ends psql and removes the pass file.
    let sleeping = cli(
        &w.jg,
        home.path(),
        &[
            "connect",
            PG_TARGET,
            "--",
            "-X",
            "-c",
            "select pg_sleep(60)",
        ],
    )
    .env("PATH", &path)
    .spawn()
    .unwrap();
    w.pg.wait_for_backend_count(By::User("jg_read"), 1).await;
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &sleeping.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let out = tokio::time::timeout(Duration::from_secs(10), sleeping.wait_with_output())
        .await
        .expect("connect ended when stopped")
        .unwrap();
    assert!(!out.status.success());
    // psql is gone: its session through jitgate ends (the server's backend
    // finishes its sleep on its own; a client leaving cancels nothing).
    eventually(
        secs(10),
        "psql's session through jitgate to end",
        || async { w.jg.sessions().await.is_empty().then_some(()) },
    )
    .await;
    let recorded = std::fs::read_to_string(&seen).unwrap();
    let passfile = recorded
        .lines()
        .find_map(|l| l.strip_prefix("PGPASSFILE="))
        .unwrap();
    assert!(!Path::new(passfile).exists(), "{passfile} was left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_issued_on_one_proxy_works_on_another_and_a_logout_on_either_ends_it_everywhere()
 {
    let store = StoreServer::start().await;
    let w = world("12h").await;
    let proxy = |name: &'static str| {
        let mut config = w
            .provider
            .jitgate_config(&w.pg, "jitgate", "12h", "30s", POLICY);
        store.configure(&mut config, name, "15s");
        Jitgate::launch(config)
    };
    let (a, b) = (proxy("jg-a").await, proxy("jg-b").await);
    let home = tempfile::tempdir().unwrap();
    login_with(
        &a,
        home.path(),
        &["login", "--no-browser"],
        "ann",
        &Browser::default(),
    )
    .await
    .assert_ok(&a);
    let secret = secret_of(home.path(), &a);
    b.grant(ANN, PG_TARGET, "read", "30m").await;

    // Issued on A, it logs in on B: B has it from the store.
    let on_b = sleeping_psql(&b, ANN, &secret);
    w.pg.wait_for_backend_count(By::User("jg_read"), 1).await;
    let (status, me) = b
        .api(reqwest::Method::GET, "/v1/whoami", Some(&secret), None)
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["identity"], ANN);

    // Logged out on A, it ends on B too.
    let (status, body) = a
        .api(reqwest::Method::POST, "/v1/logout", Some(&secret), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let told = cut_off(on_b, &b).await;
    assert!(told.contains("logged out"), "{told}");
    w.pg.wait_for_backend_count(By::User("jg_read"), 0).await;
    let (status, _) = b
        .api(reqwest::Method::GET, "/v1/whoami", Some(&secret), None)
        .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_stays_with_the_provider_account_it_was_first_issued_to() {
    let w = world("12h").await;
    let (status, body) = sign_on(&w.jg, "ann").await;
    assert_eq!(status, 200, "{body}");
    // Another account whose email claim says ann's address gets nothing.
    let (status, body) = sign_on(&w.jg, "mallory").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("another account"),
        "{body}"
    );
    assert_eq!(
        w.jg.audit_lines()
            .iter()
            .filter(|r| r["event"] == "credential_issued")
            .count(),
        1
    );
    // An admin frees the name (ann left; the address is someone else's now).
    let freed =
        w.jg.cli(ADMIN_SECRET, &["logout", "--user", ANN, "--free-name"])
            .await;
    freed.assert_ok(&w.jg);
    w.jg.wait_for_audit("identity_unbound", |r| r["event"] == "identity_unbound")
        .await;
    let (status, body) = sign_on(&w.jg, "mallory").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["groups"], serde_json::json!(["admin"]));

    // Nor can the config take a signed-on person's name.
    let verifier = jitgate::identity::ScramVerifier::generate("x");
    let path = w.jg.config_path().to_owned();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{text}\n[[identities]]\nname = \"{ANN}\"\nsecret = \"{verifier}\"\n"),
    )
    .unwrap();
    let refused = w.jg.cli(ADMIN_SECRET, &["reload"]).await;
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("a name cannot be both"),
        "{}",
        refused.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_login_with_a_credential_keeps_its_fast_path_only_while_the_credential_lives() {
    use mysql_async::prelude::Queryable;
    let db = MariaDb::start();
    let provider = OidcProvider::start(
        vec![jitgate_client("jitgate", "RS256")],
        &[Account {
            login: "ann",
            email: ANN,
            groups: &["developer"],
        }],
    )
    .await;
    let jg = Jitgate::launch(provider.jitgate_config(&db, "jitgate", "12h", "30s", "")).await;
    // Two credentials (two machines): both are the same name's passwords.
    let (_, first) = sign_on(&jg, "ann").await;
    let (_, second) = sign_on(&jg, "ann").await;
    let (first, second) = (
        first["secret"].as_str().unwrap(),
        second["secret"].as_str().unwrap(),
    );
    jg.grant(ANN, MYSQL_TARGET, "read", "30m").await;
    for secret in [first, second, second] {
        // The first login of each is full authentication, the next the
        // fast path from the cache.
        let mut conn = mysql_async::Conn::new(jg.async_opts_as(ANN, secret))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", jg.log()));
        let who: Option<String> = conn.query_first("SELECT current_user()").await.unwrap();
        assert!(who.unwrap().starts_with("jg_read@"));
        conn.disconnect().await.unwrap();
    }
    // Logged out, the second no longer logs in, not even by the fast path
    // its last login left in the cache; the first still does.
    let (status, body) = jg
        .api(reqwest::Method::POST, "/v1/logout", Some(second), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let refused = mysql_async::Conn::new(jg.async_opts_as(ANN, second)).await;
    assert!(refused.is_err(), "a logged-out credential logged in");
    let mut conn = mysql_async::Conn::new(jg.async_opts_as(ANN, first))
        .await
        .unwrap();
    conn.query_drop("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_cannot_be_reached_is_not_asked_again_for_every_sign_on() {
    let mut w = world_with(
        "12h",
        "30s",
        ProviderOptions {
            interposed: true,
            id_token_ttl: None,
        },
    )
    .await;
    // Down before jitgate ever read its discovery document.
    w.provider.stop();
    let mitm = w.provider.interposer.as_ref().unwrap();
    let start = json!({"redirect_uri": "http://127.0.0.1:9/callback",
        "state": "state-of-this-sign-on-03", "nonce": "nonce-of-this-sign-on-0003",
        "code_challenge": jitgate::identity::oidc_code_challenge(&"x".repeat(43))});
    for _ in 0..3 {
        let (status, body) =
            w.jg.api(
                reqwest::Method::POST,
                "/v1/login/start",
                None,
                Some(start.clone()),
            )
            .await;
        assert_eq!(status, 502, "{body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("cannot be reached"),
            "{body}"
        );
    }
    assert_eq!(mitm.count("/.well-known/openid-configuration"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_another_provider_ends_the_old_ones_credentials_and_their_sessions() {
    let w = world("12h").await;
    let (status, body) = sign_on(&w.jg, "ann").await;
    assert_eq!(status, 200, "{body}");
    let secret = body["secret"].as_str().unwrap().to_owned();
    w.jg.grant(ANN, PG_TARGET, "read", "30m").await;
    let psql = sleeping_psql(&w.jg, ANN, &secret);
    w.pg.wait_for_backend_count(By::User("jg_read"), 1).await;
    let path = w.jg.config_path().to_owned();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(&w.provider.issuer, "https://login.other.example"),
    )
    .unwrap();
    w.jg.cli(ADMIN_SECRET, &["reload"]).await.assert_ok(&w.jg);
    let told = cut_off(psql, &w.jg).await;
    assert!(told.contains("identity provider changed"), "{told}");
    let (status, _) =
        w.jg.api(reqwest::Method::GET, "/v1/whoami", Some(&secret), None)
            .await;
    assert_eq!(status, 401, "a credential of the old provider still works");
    let again =
        w.jg.psql_as(&Login::new(ANN, &secret), &["-c", "SELECT 1"], None)
            .await;
    assert!(!again.status.success());
}
