//! The MySQL integration-test harness: a throwaway MariaDB from the
//! installed binaries, a jitgate in front of it with a MySQL listener, and
//! the real clients (`mariadb`, mysql_async, raw sockets) that talk to both.
//!
//! The server's own view (`information_schema.processlist`, read as root over
//! its private socket) is the witness. Each server lives in its own temporary
//! directory on its own free port; the data directory (accounts, the `app`
//! database) is built once per test process and copied per test. Every wait
//! is bounded and `Drop` stops every process a test started.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

pub const ADMIN_SECRET: &str = "admin-secret";
pub const ALICE_SECRET: &str = "alice-secret";
pub const BOB_SECRET: &str = "bob-secret";
pub const TARGET: &str = "demo-mysql";

/// Await `fut`, or panic naming `what` once `limit` has passed: no test may hang.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// A TCP port on 127.0.0.1 that nobody listens on now and that this process
/// has not handed out before.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        if HANDED_OUT.lock().unwrap().insert(port) {
            return port;
        }
    }
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

fn run_checked(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({cmd:?}): {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// A MariaDB server binary, run as `mysql` when we are root.
fn server_command(program: &str) -> Command {
    let mut cmd = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "mysql", "--", program]);
        c
    } else {
        Command::new(program)
    };
    cmd.current_dir("/");
    cmd
}

fn hand_to_mysql(path: &Path) {
    if running_as_root() {
        run_checked(
            Command::new("chown").args(["-R", "mysql:mysql"]).arg(path),
            "chown to mysql",
        );
    }
}

/// `/dev/shm` when it has room (data dirs are created much faster in memory).
fn server_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("JITGATE_TEST_TMPDIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

/// Settings shared by the template build and every test server.
const SERVER_ARGS: [&str; 7] = [
    "--no-defaults",
    "--innodb-log-file-size=4M",
    "--innodb-buffer-pool-size=16M",
    "--skip-log-bin",
    "--skip-name-resolve",
    "--max-connections=100",
    "--max-allowed-packet=64M",
];

/// Accounts, database and rows every test server starts with.
fn template_setup(read_pw: &str, write_pw: &str) -> String {
    format!(
        "CREATE DATABASE app; \
         CREATE TABLE app.items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100)); \
         INSERT INTO app.items (name) VALUES ('apple'), ('banana'), ('cherry'); \
         CREATE USER jg_read@'%' IDENTIFIED BY '{read_pw}'; \
         GRANT SELECT ON app.* TO jg_read@'%'; \
         CREATE USER jg_write@'%' IDENTIFIED BY '{write_pw}'; \
         GRANT ALL ON app.* TO jg_write@'%';"
    )
}

struct Template {
    _dir: TempDir,
    data: PathBuf,
    read_password: String,
    write_password: String,
}

fn wait_for_socket(sock: &Path, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new("mariadb")
            .arg("-S")
            .arg(sock)
            .args(["-u", "root", "-e", "SELECT 1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "mariadbd did not come up within 30 s; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const TEMPLATE_PREFIX: &str = "jitgate-test-mariadb-template-";

/// A template lives in a static, which is never dropped: remove those of
/// test processes that are gone.
fn sweep_dead_templates() {
    let Ok(entries) = std::fs::read_dir(server_root()) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(TEMPLATE_PREFIX) {
            continue;
        }
        let owner = std::fs::read_to_string(e.path().join("owner.pid")).unwrap_or_default();
        let owner = owner.trim();
        if owner.is_empty() || !Path::new("/proc").join(owner).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The data directory every server copies: built once per test process.
fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        sweep_dead_templates();
        let dir = tempfile::Builder::new()
            .prefix(TEMPLATE_PREFIX)
            .tempdir_in(server_root())
            .expect("template tempdir");
        std::fs::write(dir.path().join("owner.pid"), std::process::id().to_string())
            .expect("write owner.pid");
        hand_to_mysql(dir.path());
        let data = dir.path().join("data");
        run_checked(
            server_command("mariadb-install-db")
                .args(SERVER_ARGS)
                .arg(format!("--datadir={}", data.display()))
                .args(["--auth-root-authentication-method=normal", "--skip-test-db"]),
            "mariadb-install-db",
        );
        let sock = dir.path().join("sock");
        let log = dir.path().join("template.log");
        let mut server = server_command("mariadbd")
            .args(SERVER_ARGS)
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", sock.display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg("--skip-networking")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the template mariadbd");
        wait_for_socket(&sock, &log);
        let read_password = random_hex(12);
        let write_password = random_hex(12);
        run_checked(
            Command::new("mariadb")
                .arg("-S")
                .arg(&sock)
                .args(["-u", "root", "-e"])
                .arg(template_setup(&read_password, &write_password)),
            "template setup",
        );
        run_checked(
            Command::new("mariadb-admin")
                .arg("-S")
                .arg(&sock)
                .args(["-u", "root", "shutdown"]),
            "stop the template server",
        );
        let _ = server.wait();
        Template {
            _dir: dir,
            data,
            read_password,
            write_password,
        }
    })
}

/// A MariaDB server of our own: password accounts and TLS on a free TCP
/// port, root without a password on its private socket for the witness.
/// Database `app` holds `items(id, name)` with apple, banana, cherry;
/// `jg_read` may only SELECT from it, `jg_write` may do anything in it.
/// mysql_async options for `user` on 127.0.0.1:`port`, database `database`,
/// over TLS without checking the certificate.
fn tls_opts(port: u16, user: &str, password: &str, database: &str) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(password))
        .db_name(Some(database))
        .prefer_socket(false)
        .ssl_opts(Some(
            mysql_async::SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ))
        .into()
}

pub struct MariaDb {
    dir: TempDir,
    child: std::process::Child,
    port: u16,
    pub read_password: String,
    pub write_password: String,
}

impl MariaDb {
    pub fn start() -> MariaDb {
        let t = template();
        let dir = tempfile::Builder::new()
            .prefix("jitgate-test-mariadb-")
            .tempdir_in(server_root())
            .expect("server tempdir");
        let data = dir.path().join("data");
        run_checked(
            Command::new("cp").arg("-a").arg(&t.data).arg(&data),
            "copy the template",
        );
        jitgate::tls::generate_self_signed(
            &dir.path().join("cert.pem"),
            &dir.path().join("key.pem"),
        )
        .expect("certificate for mariadb");
        hand_to_mysql(dir.path());
        let port = free_port();
        let log = dir.path().join("server.log");
        let child = server_command("mariadbd")
            .args(SERVER_ARGS)
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            // Its own temporary files: servers sharing /tmp trip over each other.
            .arg(format!("--tmpdir={}", dir.path().display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!(
                "--ssl-cert={}",
                dir.path().join("cert.pem").display()
            ))
            .arg(format!(
                "--ssl-key={}",
                dir.path().join("key.pem").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        let server = MariaDb {
            dir,
            child,
            port,
            read_password: t.read_password.clone(),
            write_password: t.write_password.clone(),
        };
        wait_for_socket(&server.socket(), &log);
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// mysql_async options for `jg_write` (every privilege on `app`)
    /// straight to this server, over TLS without checking its certificate.
    pub fn write_opts(&self) -> mysql_async::Opts {
        tls_opts(self.port, "jg_write", &self.write_password, "app")
    }

    /// Run SQL as root over the private socket; tab-separated rows, no header.
    pub fn root_query(&self, sql: &str) -> String {
        run_checked(
            Command::new("mariadb")
                .arg("-S")
                .arg(self.socket())
                .args(["-u", "root", "-N", "-B", "-e", sql]),
            "root query",
        )
    }

    /// Threads of `user` in the processlist, as `id<TAB>command<TAB>info` lines.
    pub fn threads_of(&self, user: &str) -> Vec<String> {
        self.root_query(&format!(
            "SELECT id, command, coalesce(info, '') FROM information_schema.processlist WHERE user = '{user}'"
        ))
        .lines()
        .map(str::to_owned)
        .collect()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        // Runs as mysql under runuser: kill the server by its pid file.
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- jitgate -------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Options {
    pub tls_require: bool,
    pub max_message_bytes: Option<usize>,
    /// `audit.path`, instead of `data/audit.log` in jitgate's directory.
    pub audit_path: Option<PathBuf>,
    /// `audit.fsync`: "always" or an interval.
    pub audit_fsync: Option<String>,
    /// `allow_privileged_read_account` on the `read` level.
    pub allow_privileged_read_account: bool,
    /// `limits.max_login_failures` (the harness default is high).
    pub max_login_failures: Option<u32>,
    /// `limits.login_failure_window`, e.g. "3s".
    pub login_failure_window: Option<String>,
    /// `listen.mysql_server_version`.
    pub mysql_server_version: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls_require: true,
            max_message_bytes: None,
            audit_path: None,
            audit_fsync: None,
            allow_privileged_read_account: false,
            max_login_failures: None,
            login_failure_window: None,
            mysql_server_version: None,
        }
    }
}

fn verifiers() -> &'static [(String, String, String); 3] {
    static V: OnceLock<[(String, String, String); 3]> = OnceLock::new();
    V.get_or_init(|| {
        [
            ("alice", "developer", ALICE_SECRET),
            ("bob", "developer", BOB_SECRET),
            ("admin", "admin", ADMIN_SECRET),
        ]
        .map(|(n, g, s)| {
            (
                n.to_owned(),
                g.to_owned(),
                jitgate::identity::ScramVerifier::generate(s),
            )
        })
    })
}

/// A running `jitgate serve` with a MySQL listener in front of one [`MariaDb`].
pub struct Jitgate {
    dir: TempDir,
    child: std::process::Child,
    pub mysql_port: u16,
    admin_port: u16,
    audit_path: PathBuf,
    http: reqwest::Client,
    pub upstream_secrets: Vec<String>,
}

impl Jitgate {
    pub async fn start(db: &MariaDb, opts: Options) -> Jitgate {
        let dir = tempfile::Builder::new()
            .prefix("jitgate-test-proxy-mysql-")
            .tempdir()
            .expect("proxy tempdir");
        let mysql_port = free_port();
        let admin_port = free_port();
        let audit_path = opts
            .audit_path
            .clone()
            .unwrap_or_else(|| dir.path().join("data").join("audit.log"));
        jitgate::tls::generate_self_signed(
            &dir.path().join("tls/cert.pem"),
            &dir.path().join("tls/key.pem"),
        )
        .expect("jitgate certificate");
        let mut identities = String::new();
        for (name, group, verifier) in verifiers() {
            identities.push_str(&format!(
                "[[identities]]\nname = \"{name}\"\ngroups = [\"{group}\"]\nsecret = \"{verifier}\"\n\n"
            ));
        }
        let config = format!(
            "data_dir = \"data\"\n\
             \n[listen]\nmysql = \"127.0.0.1:{mysql_port}\"\nadmin = \"127.0.0.1:{admin_port}\"\n{pinned}\
             \n[tls]\ncert = \"tls/cert.pem\"\nkey = \"tls/key.pem\"\nrequire = {require}\n\
             \n[audit]\npath = \"{audit}\"\nfsync = \"{fsync}\"\n\
             \n[limits]\nhandshake_timeout = \"5s\"\nmax_message_bytes = {max}\nmax_login_failures = {failures}\n\
             login_failure_window = \"{window}\"\n\n\
             {identities}\
             [[targets]]\nname = \"{TARGET}\"\nprotocol = \"mysql\"\naddress = \"127.0.0.1:{port}\"\n\
             database = \"app\"\ntls = \"require\"\n\
             \n[targets.levels.read]\nuser = \"jg_read\"\npassword_env = \"JG_TEST_READ_PW\"\nread_only = true\n\
             allow_privileged_read_account = {allow}\n\
             \n[targets.levels.write]\nuser = \"jg_write\"\npassword_env = \"JG_TEST_WRITE_PW\"\n",
            require = opts.tls_require,
            pinned = opts
                .mysql_server_version
                .as_ref()
                .map(|v| format!("mysql_server_version = \"{v}\"\n"))
                .unwrap_or_default(),
            audit = audit_path.display(),
            fsync = opts.audit_fsync.as_deref().unwrap_or("50ms"),
            max = opts.max_message_bytes.unwrap_or(64 << 20),
            failures = opts.max_login_failures.unwrap_or(1000),
            window = opts.login_failure_window.as_deref().unwrap_or("1m"),
            port = db.port(),
            allow = opts.allow_privileged_read_account,
        );
        std::fs::write(dir.path().join("jitgate.toml"), config).expect("write config");
        let log = std::fs::File::create(dir.path().join("jitgate.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_jitgate"))
            .args(["serve", "-c", "jitgate.toml"])
            .current_dir(dir.path())
            .env("JG_TEST_READ_PW", &db.read_password)
            .env("JG_TEST_WRITE_PW", &db.write_password)
            .env("RUST_LOG", "info,jitgate=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn jitgate");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        let mut jg = Jitgate {
            dir,
            child,
            mysql_port,
            admin_port,
            audit_path,
            http,
            upstream_secrets: vec![db.read_password.clone(), db.write_password.clone()],
        };
        jg.wait_healthy().await;
        jg.wait_for_read_account_check().await;
        jg
    }

    /// jitgate checks the read level's upstream account at start: wait
    /// until it has logged its verdict.
    async fn wait_for_read_account_check(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains("read level's upstream account") {
            assert!(
                Instant::now() < deadline,
                "jitgate did not log the read level's account check within 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("jitgate exited during startup ({status}):\n{}", self.log());
            }
            let url = format!("http://127.0.0.1:{}/healthz", self.admin_port);
            if let Ok(r) = self.http.get(&url).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "jitgate not healthy within 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("jitgate.log")).unwrap_or_default()
    }

    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("jitgate died ({status}):\n{}", self.log());
        }
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(
                method,
                format!("http://127.0.0.1:{}{path}", self.admin_port),
            )
            .bearer_auth(ADMIN_SECRET);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin API call");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A break-glass grant for alice; returns the grant JSON.
    pub async fn grant(&self, level: &str, duration: &str) -> Value {
        self.grant_to("alice", level, duration).await
    }

    /// A break-glass grant for `identity`; returns the grant JSON.
    pub async fn grant_to(&self, identity: &str, level: &str, duration: &str) -> Value {
        let (status, grant) = self
            .api(
                reqwest::Method::POST,
                "/v1/grants",
                Some(json!({
                    "identity": identity, "target": TARGET, "level": level,
                    "duration": duration, "reason": "integration test",
                })),
            )
            .await;
        assert_eq!(status, 201, "grant: {grant}");
        grant
    }

    pub async fn revoke(&self, grant_id: &str) {
        let (status, body) = self
            .api(
                reqwest::Method::POST,
                &format!("/v1/grants/{grant_id}/revoke"),
                None,
            )
            .await;
        assert!((200..300).contains(&status), "revoke: {status} {body}");
    }

    pub fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(&self.audit_path).unwrap_or_default()
    }

    /// Wait (up to 5 s) for an audit record matching `pred`.
    pub async fn wait_for_audit(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(v) = self.audit_lines().into_iter().find(|v| pred(v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no audit record for {what}; audit log:\n{}\n--- jitgate log\n{}",
                self.audit_text(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `mariadb` CLI as alice, over TLS, with `args` after the connection options.
    pub fn mariadb_command(&self, secret: &str, ssl: bool) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("mariadb");
        cmd.arg("--no-defaults")
            .args(["-h", "127.0.0.1", "-P", &self.mysql_port.to_string()])
            .args(["-u", "alice"])
            .arg(format!("-p{secret}"))
            .arg(if ssl { "--ssl" } else { "--skip-ssl" })
            .args(["-N", "-B"])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Run the CLI against `TARGET` with `-e sql`.
    pub async fn mariadb(&self, secret: &str, ssl: bool, sql: &str) -> Run {
        let mut cmd = self.mariadb_command(secret, ssl);
        cmd.arg(TARGET).args(["-e", sql]);
        let out = within(Duration::from_secs(30), "the mariadb CLI", cmd.output())
            .await
            .expect("run mariadb");
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// mysql_async options for alice through jitgate (TLS, any certificate).
    pub fn async_opts(&self, secret: &str) -> mysql_async::Opts {
        self.async_opts_as("alice", secret)
    }

    /// mysql_async options for `user` through jitgate (TLS, any certificate).
    pub fn async_opts_as(&self, user: &str, secret: &str) -> mysql_async::Opts {
        tls_opts(self.mysql_port, user, secret, TARGET)
    }

    /// Every byte a client could have seen must be free of upstream secrets.
    pub fn assert_no_secret_in(&self, what: &str, text: &str) {
        for s in &self.upstream_secrets {
            assert!(
                !text.contains(s.as_str()),
                "{what} leaks an upstream secret:\n{text}"
            );
        }
    }
}

impl Drop for Jitgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}
