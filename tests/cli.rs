//! The `jitgate` client commands against a running `jitgate serve`.
//!
//! Each test starts the real binary with a config in a temporary directory
//! (admin and postgres listeners on free ports; the target's database is
//! never contacted) and runs the CLI as subprocesses, with the server and
//! token in `JITGATE_SERVER` / `JITGATE_TOKEN`, as a person would.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_jitgate");
const ALICE: &str = "alice-cli-secret";
const BOB: &str = "bob-cli-secret";

/// Verifiers take a while to generate in a debug build; make them once.
fn verifiers() -> &'static [String; 2] {
    static V: OnceLock<[String; 2]> = OnceLock::new();
    V.get_or_init(|| [ALICE, BOB].map(jitgate::identity::ScramVerifier::generate))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `jitgate serve`, stopped when dropped.
struct Proxy {
    child: Child,
    server: String,
    pg_port: u16,
    mysql_port: u16,
    dir: tempfile::TempDir,
}

impl Proxy {
    fn start() -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let [alice, bob] = verifiers();
        let (admin_port, pg_port, mysql_port) = (free_port(), free_port(), free_port());
        let config = format!(
            r#"
data_dir = "{data}"
[listen]
admin = "127.0.0.1:{admin_port}"
postgres = "127.0.0.1:{pg_port}"
mysql = "127.0.0.1:{mysql_port}"
[tls]
cert = "tls/cert.pem"
key = "tls/key.pem"
self_signed_if_missing = true
[audit]
fsync = "always"

[[identities]]
name = "alice"
groups = ["developer"]
secret = "{alice}"
[[identities]]
name = "bob"
groups = ["approver"]
secret = "{bob}"

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

[[policies]]
name = "demo-read"
targets = ["demo-pg", "demo-mysql"]
levels = ["read"]
requesters = ["developer"]
max_duration = "1h"
approvals = 1
approvers = ["approver"]
"#,
            data = dir.path().display(),
        );
        let config_path = dir.path().join("jitgate.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("-c")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut proxy = Proxy {
            child,
            server: format!("http://127.0.0.1:{admin_port}"),
            pg_port,
            mysql_port,
            dir,
        };
        proxy.wait_until_listening(admin_port);
        proxy
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }

    fn wait_until_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "jitgate serve exited ({status}):\n{}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "jitgate serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The CLI as `token`'s holder would run it.
    fn command(&self, token: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("JITGATE_SERVER", &self.server)
            .env("JITGATE_TOKEN", token);
        cmd
    }

    fn run(&self, token: &str, args: &[&str]) -> Run {
        Run::from(self.command(token, args).output().unwrap(), args)
    }

    /// Run a command that must succeed and print JSON.
    fn json(&self, token: &str, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let run = self.run(token, &args);
        run.assert_ok();
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
    }

    /// alice asks for read access to demo-pg; the request's id.
    fn request(&self) -> String {
        let q = self.json(
            ALICE,
            &[
                "request", "demo-pg", "--level", "read", "--for", "30m", "--reason", "INC-42",
            ],
        );
        assert_eq!(q["state"], "pending", "{q}");
        q["id"].as_str().unwrap().to_owned()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    what: String,
}

impl Run {
    fn from(out: Output, args: &[&str]) -> Run {
        let run = Run {
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
            what: args.join(" "),
        };
        for secret in [ALICE, BOB] {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "`jitgate {}` printed a token",
                run.what
            );
        }
        run
    }

    fn assert_ok(&self) {
        assert_eq!(
            self.code,
            Some(0),
            "`jitgate {}`\nstdout: {}\nstderr: {}",
            self.what,
            self.stdout,
            self.stderr
        );
    }

    /// Exit 1 with `jitgate: <error>: …` on stderr.
    fn assert_refused(&self, error: &str) {
        assert_eq!(
            self.code,
            Some(1),
            "`jitgate {}`\nstdout: {}\nstderr: {}",
            self.what,
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.starts_with(&format!("jitgate: {error}: ")),
            "`jitgate {}` stderr: {}",
            self.what,
            self.stderr
        );
    }
}

#[test]
fn request_approve_list_and_revoke_through_the_cli() {
    let proxy = Proxy::start();
    let id = proxy.request();

    let listed = proxy.run(ALICE, &["requests"]);
    listed.assert_ok();
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
    assert!(proxy.run(BOB, &["requests"]).stdout.contains(&id));

    // The API's own words, on stderr, exit 1.
    let own = proxy.run(ALICE, &["approve", &id]);
    own.assert_refused("forbidden");
    assert!(own.stdout.is_empty(), "{}", own.stdout);

    let approved = proxy.run(BOB, &["approve", &id, "--comment", "ok for INC-42"]);
    approved.assert_ok();
    assert!(
        approved.stdout.contains("approved by bob"),
        "{}",
        approved.stdout
    );
    proxy.run(BOB, &["deny", &id]).assert_refused("conflict");

    let grants = proxy.json(BOB, &["grants"]);
    let grant = &grants["grants"][0];
    assert_eq!(grant["identity"], "alice", "{grants}");
    assert_eq!(grant["approved_by"], serde_json::json!(["bob"]));
    assert_eq!(grant["request"], id.as_str());
    let grant_id = grant["id"].as_str().unwrap().to_owned();
    let table = proxy.run(ALICE, &["grants"]);
    table.assert_ok();
    assert!(
        table.stdout.contains(&grant_id) && table.stdout.contains("bob"),
        "{}",
        table.stdout
    );

    let revoked = proxy.run(ALICE, &["revoke", &grant_id]);
    revoked.assert_ok();
    assert!(revoked.stdout.contains("revoked"), "{}", revoked.stdout);
    assert_eq!(
        proxy.json(BOB, &["grants"]),
        serde_json::json!({"grants": []})
    );
    proxy
        .run(ALICE, &["revoke", &grant_id])
        .assert_refused("grant not found");
}

/// alice's `jitgate request <target> … --wait`, running, and the id of the
/// request once bob sees it pending.
// The caller waits on the child it gets back; a panic on the way kills the
// test, and the child goes with the proxy it talks to.
#[allow(clippy::zombie_processes)]
fn request_waiting(proxy: &Proxy, target: &str) -> (std::process::Child, String) {
    let waiting = proxy
        .command(
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
        let pending = proxy.json(BOB, &["requests"]);
        let found = pending["requests"]
            .as_array()
            .and_then(|list| list.iter().find(|r| r["target"] == target))
            .and_then(|r| r["id"].as_str().map(str::to_owned));
        if let Some(id) = found {
            return (waiting, id);
        }
        assert!(Instant::now() < deadline, "the request never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `request --wait` prints the command that connects to the target, with
/// the client of its protocol: psql for PostgreSQL, mariadb for MySQL.
#[test]
fn request_wait_prints_the_connection_command_once_approved() {
    let proxy = Proxy::start();
    for (target, expected) in [
        (
            "demo-pg",
            format!(
                "psql \"host=127.0.0.1 port={} user=alice dbname=demo-pg sslmode=require\"",
                proxy.pg_port
            ),
        ),
        (
            "demo-mysql",
            format!(
                "mariadb -h 127.0.0.1 -P {} -u alice -p --ssl demo-mysql",
                proxy.mysql_port
            ),
        ),
    ] {
        let (waiting, id) = request_waiting(&proxy, target);
        proxy.run(BOB, &["approve", &id]).assert_ok();

        let run = Run::from(waiting.wait_with_output().unwrap(), &["request", "--wait"]);
        run.assert_ok();
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

#[test]
fn request_wait_exits_1_when_the_request_is_denied() {
    let proxy = Proxy::start();
    let (waiting, id) = request_waiting(&proxy, "demo-pg");
    proxy
        .run(BOB, &["deny", &id, "--comment", "use the replica"])
        .assert_ok();
    let run = Run::from(waiting.wait_with_output().unwrap(), &["request", "--wait"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("request {id} was denied by bob: use the replica")),
        "{}",
        run.stderr
    );
}

#[test]
fn cancel_whoami_sessions_and_kill() {
    let proxy = Proxy::start();
    let id = proxy.request();
    let cancelled = proxy.run(ALICE, &["cancel", &id]);
    cancelled.assert_ok();
    assert!(
        cancelled.stdout.contains("cancelled"),
        "{}",
        cancelled.stdout
    );
    let all = proxy.run(ALICE, &["requests", "--state", "all"]);
    all.assert_ok();
    assert!(
        all.stdout.contains(&id) && all.stdout.contains("cancelled"),
        "{}",
        all.stdout
    );
    proxy
        .run(ALICE, &["requests", "--state", "open"])
        .assert_refused("bad state");

    let me = proxy.run(BOB, &["whoami"]);
    me.assert_ok();
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
        proxy.json(ALICE, &["whoami"]),
        serde_json::json!({"identity": "alice", "groups": ["developer"]})
    );

    assert_eq!(
        proxy.json(BOB, &["sessions"]),
        serde_json::json!({"sessions": []})
    );
    let sessions = proxy.run(BOB, &["sessions"]);
    sessions.assert_ok();
    assert!(sessions.stdout.is_empty(), "{}", sessions.stdout);
    proxy
        .run(BOB, &["kill", "s_0000000000000000"])
        .assert_refused("session not found");
}

#[test]
fn a_wrong_or_missing_token_and_an_unreachable_server_are_explained() {
    let proxy = Proxy::start();
    proxy
        .run("not-a-secret", &["grants"])
        .assert_refused("invalid token");

    let run = Run::from(
        proxy
            .command(ALICE, &["grants"])
            .env_remove("JITGATE_TOKEN")
            .output()
            .unwrap(),
        &["grants"],
    );
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("JITGATE_TOKEN"), "{}", run.stderr);

    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let run = Run::from(
        proxy
            .command(ALICE, &["grants"])
            .env("JITGATE_SERVER", &nowhere)
            .output()
            .unwrap(),
        &["grants"],
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.starts_with("jitgate: cannot reach") && run.stderr.contains(&nowhere),
        "{}",
        run.stderr
    );
}

#[test]
fn the_server_subcommands_still_work() {
    let proxy = Proxy::start();
    let check = Command::new(BIN)
        .args(["check-config", "-c"])
        .arg(proxy.dir.path().join("jitgate.toml"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let audit = proxy.dir.path().join("audit.log");
    proxy.request();
    let verify = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
}
