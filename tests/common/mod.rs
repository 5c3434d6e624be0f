//! The integration-test harness: a throwaway PostgreSQL, a jitgate in front of
//! it, and the real clients (`psql`, `pgbench`, tokio-postgres, raw sockets)
//! that talk to both.
//!
//! Everything here runs real processes from the installed binaries, so a test
//! asserts on what the server itself saw (`pg_stat_activity`, its log) rather
//! than on mocks. Every server lives in its own temporary directory on its own
//! free ports, so tests run in parallel; every wait is bounded, so a broken
//! proxy fails a test instead of hanging the suite; and `Drop` stops every
//! process a test started, even when the test panics.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, BufMut, BytesMut};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

// ---- small utilities -----------------------------------------------------

/// Await `fut`, or panic naming `what` once `limit` has passed: no test may hang.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Poll `check` every 50 ms until it yields a value, or panic naming `what`
/// after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("gave up after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP port on 127.0.0.1 that nobody listens on right now and that this
/// process has not handed out before (so parallel tests do not collide).
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
    let raw: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(raw)
}

/// Run a command to completion; panic with its output if it fails.
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

// ---- PostgreSQL binaries ---------------------------------------------------

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
///
/// `JITGATE_TEST_PG_BINDIR` wins; then the newest `/usr/lib/postgresql/<N>/bin`
/// (Debian/Ubuntu keep the server binaries off PATH); then `pg_config --bindir`;
/// then wherever `pg_ctl` is on PATH.
pub fn pg_bindir() -> &'static Path {
    static BINDIR: OnceLock<PathBuf> = OnceLock::new();
    BINDIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("JITGATE_TEST_PG_BINDIR") {
            return PathBuf::from(dir);
        }
        let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                bin.join("postgres").exists().then_some((major, bin))
            })
            .collect();
        debian.sort();
        if let Some((_, bin)) = debian.pop() {
            return bin;
        }
        let probes = [
            Command::new("pg_config").arg("--bindir").output(),
            Command::new("sh")
                .args(["-c", "dirname \"$(command -v pg_ctl)\""])
                .output(),
        ];
        for out in probes.into_iter().flatten() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && dir.join("postgres").exists() {
                return dir;
            }
        }
        panic!(
            "no PostgreSQL server binaries found (looked in /usr/lib/postgresql/*/bin, \
             `pg_config --bindir` and PATH); install them with `apt-get install postgresql` \
             or set JITGATE_TEST_PG_BINDIR"
        );
    })
}

/// A command for a PostgreSQL server binary, run as the `postgres` user when
/// we are root (the server refuses to run as root).
fn pg_command(program: &str) -> Command {
    let path = pg_bindir().join(program);
    let mut cmd = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    };
    // The postgres user may not be allowed into the test's working directory.
    cmd.current_dir("/");
    for var in ["PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGDATABASE"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Give `path` (recursively) to the `postgres` user when we are root.
fn hand_to_postgres(path: &Path) {
    if running_as_root() {
        run_checked(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path),
            "chown to postgres",
        );
    }
}

/// Where test servers keep their data directories.
///
/// `JITGATE_TEST_TMPDIR` wins. Otherwise `/dev/shm` when it is a tmpfs with at
/// least 1 GiB free: a data directory is some 1300 files, and creating them on
/// a slow virtual disk takes seconds per server, in memory a tenth of that.
/// Otherwise the system temp dir.
fn server_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(dir) = std::env::var_os("JITGATE_TEST_TMPDIR") {
            return PathBuf::from(dir);
        }
        let shm_free_kib = Command::new("df")
            .args(["-Pk", "/dev/shm"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                let row = text.lines().nth(1)?.to_owned();
                row.split_whitespace().nth(3)?.parse::<u64>().ok()
            });
        match shm_free_kib {
            Some(kib) if kib >= 1 << 20 => PathBuf::from("/dev/shm"),
            _ => std::env::temp_dir(),
        }
    })
}

/// The roles, database and rows every test server starts with (passwords are
/// set per server, see [`PgServer::start`]). Each entry runs on its own:
/// CREATE DATABASE refuses to run inside a multi-statement transaction.
const TEMPLATE_SETUP: [(&str, &str); 4] = [
    (
        "postgres",
        "CREATE ROLE jg_read LOGIN; \
         GRANT pg_read_all_data TO jg_read; \
         ALTER ROLE jg_read SET default_transaction_read_only = on; \
         CREATE ROLE jg_write LOGIN;",
    ),
    ("postgres", "CREATE DATABASE app OWNER jg_write"),
    (
        "app",
        "SET ROLE jg_write; \
         CREATE TABLE items (id serial PRIMARY KEY, name text); \
         INSERT INTO items (name) VALUES ('apple'), ('banana'), ('cherry');",
    ),
    ("postgres", "CHECKPOINT"),
];

/// A data directory, roles and `app` database included, to copy for each
/// server: initdb and CREATE DATABASE take seconds, a copy a fraction of one.
/// It is cached under cargo's target tmp dir, keyed by the server version and
/// [`TEMPLATE_SETUP`]'s revision, so later test processes (and nextest's
/// one-process-per-test) reuse it; it is built in a private directory and
/// renamed into place, so concurrent processes never see half of it.
fn template_data_dir() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let version = run_checked(
            Command::new(pg_bindir().join("postgres")).arg("--version"),
            "postgres --version",
        );
        let key: String = version
            .trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let cache_root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let template = cache_root.join(format!("pg-template-v2-{key}"));
        if template.join("PG_VERSION").exists() {
            return template;
        }
        std::fs::create_dir_all(&cache_root).expect("create CARGO_TARGET_TMPDIR");
        // The server runs as postgres, which may not be able to enter the
        // target directory, so build in /tmp and copy.
        let scratch = TempDir::new().expect("tempdir for initdb");
        hand_to_postgres(scratch.path());
        let data = scratch.path().join("data");
        run_checked(
            pg_command("initdb").arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--wal-segsize=1",
                "-N",
            ]),
            "initdb",
        );
        let port = free_port();
        let options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c port={port} -c fsync=off",
            scratch.path().display()
        );
        run_checked(
            pg_command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(scratch.path().join("template.log"))
                .args(["-w", "-t", "60", "-o", &options, "start"]),
            "start the template server",
        );
        for (db, sql) in TEMPLATE_SETUP {
            let done = Command::new("psql")
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"])
                .arg(scratch.path())
                .args(["-p", &port.to_string(), "-d", db, "-c", sql])
                .output();
            if !matches!(&done, Ok(out) if out.status.success()) {
                let _ = pg_command("pg_ctl")
                    .arg("-D")
                    .arg(&data)
                    .args(["-m", "immediate", "stop"])
                    .output();
                panic!("template setup `{sql}` failed: {done:?}");
            }
        }
        run_checked(
            pg_command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-m", "fast", "-w", "-t", "60", "stop"]),
            "stop the template server",
        );
        let staging = cache_root.join(format!(
            "pg-template-staging-{}-{}",
            std::process::id(),
            random_hex(4)
        ));
        run_checked(
            Command::new("cp").arg("-a").arg(&data).arg(&staging),
            "copy the template",
        );
        if std::fs::rename(&staging, &template).is_err() {
            // Another process won the race; use theirs.
            let _ = std::fs::remove_dir_all(&staging);
        }
        assert!(
            template.join("PG_VERSION").exists(),
            "template data dir missing at {template:?}"
        );
        template
    })
}

// ---- leftovers of killed test processes -------------------------------------

const PG_DIR_PREFIX: &str = "jitgate-test-pg-";
const PROXY_DIR_PREFIX: &str = "jitgate-test-proxy-";

fn jitgate_exe() -> &'static str {
    env!("CARGO_BIN_EXE_jitgate")
}

/// A temp dir named `prefix…` holding `owner.pid`, this process's id, so a
/// later run can tell whether the test that made it is still alive.
fn owned_tempdir(root: &Path, prefix: &str) -> TempDir {
    sweep_leftovers();
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(root)
        .unwrap_or_else(|e| panic!("cannot make a temp dir in {root:?}: {e}"));
    std::fs::write(dir.path().join("owner.pid"), std::process::id().to_string())
        .expect("write owner.pid");
    dir
}

fn pid_alive(pid: &str) -> bool {
    !pid.is_empty() && Path::new("/proc").join(pid).exists()
}

/// `Drop` stops servers when a test panics, but not when the test process is
/// SIGKILLed (a CI timeout, say). Once per process, stop the servers and
/// proxies whose owning test process is gone and remove their directories, so
/// they do not pile up (in `/dev/shm`, they hold memory).
fn sweep_leftovers() {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| {
        let roots: BTreeSet<PathBuf> = [server_root().to_owned(), std::env::temp_dir()].into();
        for root in roots {
            let Ok(entries) = std::fs::read_dir(&root) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_pg = name.starts_with(PG_DIR_PREFIX);
                if !is_pg && !name.starts_with(PROXY_DIR_PREFIX) {
                    continue;
                }
                let dir = entry.path();
                let owner = std::fs::read_to_string(dir.join("owner.pid")).unwrap_or_default();
                if pid_alive(owner.trim()) {
                    continue;
                }
                if is_pg && dir.join("data/postmaster.pid").exists() {
                    let _ = pg_command("pg_ctl")
                        .arg("-D")
                        .arg(dir.join("data"))
                        .args(["-m", "immediate", "-w", "-t", "10", "stop"])
                        .output();
                }
                if !is_pg {
                    let child = std::fs::read_to_string(dir.join("child.pid")).unwrap_or_default();
                    let child = child.trim();
                    let cmdline = std::fs::read(Path::new("/proc").join(child).join("cmdline"))
                        .unwrap_or_default();
                    if pid_alive(child) && String::from_utf8_lossy(&cmdline).contains(jitgate_exe())
                    {
                        let _ = Command::new("kill").args(["-KILL", child]).status();
                    }
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    });
}

// ---- a throwaway PostgreSQL -------------------------------------------------

/// A PostgreSQL server of our own: own data dir, free port, SCRAM and TLS on
/// TCP, trust on its private unix socket for the harness's superuser checks.
///
/// It holds a database `app` owned by `jg_write` with a table
/// `items(id serial primary key, name text)` holding apple, banana, cherry;
/// and a read-only login `jg_read` (member of `pg_read_all_data`,
/// `default_transaction_read_only = on`).
pub struct PgServer {
    dir: TempDir,
    data_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    pub read_password: String,
    pub write_password: String,
}

impl PgServer {
    pub async fn start() -> PgServer {
        let template = template_data_dir();
        let dir = owned_tempdir(server_root(), PG_DIR_PREFIX);
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("postgres.log");
        run_checked(
            Command::new("cp").arg("-a").arg(template).arg(&data_dir),
            "copy the template",
        );
        let port = free_port();

        std::fs::write(
            data_dir.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        jitgate::tls::generate_self_signed(
            &data_dir.join("server.crt"),
            &data_dir.join("server.key"),
        )
        .expect("generate a certificate for postgres");
        let settings = format!(
            "\n# --- jitgate test harness\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{sock}'\n\
             ssl = on\n\
             ssl_cert_file = 'server.crt'\n\
             ssl_key_file = 'server.key'\n\
             password_encryption = 'scram-sha-256'\n\
             logging_collector = off\n\
             log_destination = 'stderr'\n\
             log_connections = on\n\
             log_disconnections = on\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             max_connections = 100\n\
             shared_buffers = '16MB'\n",
            sock = dir.path().display(),
        );
        let conf = data_dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("read postgresql.conf");
        text.push_str(&settings);
        std::fs::write(&conf, text).expect("write postgresql.conf");
        hand_to_postgres(dir.path());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
                .expect("chmod tempdir");
            std::fs::set_permissions(
                data_dir.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod server.key");
        }

        let server = PgServer {
            dir,
            data_dir,
            log_path,
            port,
            read_password: random_hex(16),
            write_password: random_hex(16),
        };
        let started = pg_command("pg_ctl")
            .arg("-D")
            .arg(&server.data_dir)
            .arg("-l")
            .arg(&server.log_path)
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl start");
        if !started.status.success() {
            panic!(
                "pg_ctl start failed ({}):\n{}{}\n--- server log\n{}",
                started.status,
                String::from_utf8_lossy(&started.stdout),
                String::from_utf8_lossy(&started.stderr),
                server.log()
            );
        }
        server.set_passwords().await;
        server
    }

    async fn set_passwords(&self) {
        let su = self.superuser_client("postgres").await;
        su.batch_execute(&format!(
            "ALTER ROLE jg_read PASSWORD '{read}'; ALTER ROLE jg_write PASSWORD '{write}';",
            read = self.read_password,
            write = self.write_password,
        ))
        .await
        .expect("set the test roles' passwords");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's own log (stderr of the postmaster).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// How many TCP connections the server has accepted for clients (the
    /// harness itself only uses the unix socket, so these all came through
    /// jitgate), not counting jitgate's own checks of the read level's
    /// account (each one connection, logged in under its application name;
    /// `Jitgate::start` waits until the first is over).
    pub fn tcp_connections_seen(&self) -> usize {
        let log = self.log();
        let checks = log
            .lines()
            .filter(|l| {
                l.contains("connection authorized")
                    && l.contains(jitgate::wire::pg::read_account::APPLICATION_NAME)
            })
            .count();
        log.matches("connection received: host=127.0.0.1")
            .count()
            .saturating_sub(checks)
    }

    /// A superuser session over the private unix socket (trust auth).
    pub async fn superuser_client(&self, db: &str) -> tokio_postgres::Client {
        let (client, connection) = within(
            Duration::from_secs(20),
            "superuser connection over the unix socket",
            tokio_postgres::Config::new()
                .host_path(self.dir.path())
                .port(self.port)
                .user("postgres")
                .dbname(db)
                .connect(tokio_postgres::NoTls),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "superuser connect to {db}: {e}\n--- server log\n{}",
                self.log()
            )
        });
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// A direct TLS + SCRAM session with the server on its TCP port, bypassing
    /// jitgate (to check the harness's own server, not the proxy).
    pub async fn connect_direct(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> tokio_postgres::Client {
        let (client, connection) = within(
            Duration::from_secs(20),
            "direct TCP login to postgres",
            tokio_postgres::Config::new()
                .host("127.0.0.1")
                .port(self.port)
                .user(user)
                .password(password)
                .dbname(db)
                .ssl_mode(tokio_postgres::config::SslMode::Require)
                .connect(AnyCertTls::new()),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "direct login as {user}: {e}\n--- server log\n{}",
                self.log()
            )
        });
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// Backends logged in as `user`, as the server sees them.
    pub async fn backends_of(&self, user: &str) -> Vec<Backend> {
        let su = self.superuser_client("postgres").await;
        su.query(
            "SELECT pid, coalesce(state, ''), coalesce(query, '') FROM pg_stat_activity WHERE usename = $1",
            &[&user],
        )
        .await
        .expect("query pg_stat_activity")
        .iter()
        .map(|r| Backend {
            pid: r.get(0),
            state: r.get(1),
            query: r.get(2),
        })
        .collect()
    }

    /// Wait until a backend of `user` is running a query containing `needle`.
    pub async fn wait_for_active_query(&self, user: &str, needle: &str) -> Backend {
        let su = self.superuser_client("postgres").await;
        eventually(
            Duration::from_secs(10),
            &format!("{user} running `{needle}`"),
            || async {
                let rows = su
                    .query(
                        "SELECT pid, state, query FROM pg_stat_activity \
                     WHERE usename = $1 AND state = 'active' AND strpos(query, $2) > 0",
                        &[&user, &needle],
                    )
                    .await
                    .expect("query pg_stat_activity");
                rows.first().map(|r| Backend {
                    pid: r.get(0),
                    state: r.get(1),
                    query: r.get(2),
                })
            },
        )
        .await
    }

    /// `SELECT count(*) FROM items` and the name of item 1, as the superuser sees them.
    pub async fn items_snapshot(&self) -> (i64, String) {
        let app = self.superuser_client("app").await;
        let count: i64 = app
            .query_one("SELECT count(*) FROM items", &[])
            .await
            .unwrap()
            .get(0);
        let first: String = app
            .query_one("SELECT name FROM items WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0);
        (count, first)
    }

    fn stop(&self) {
        let stopped = pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(stopped, Ok(s) if s.success()) {
            // Last resort: the postmaster's pid is the first line of postmaster.pid.
            if let Ok(pidfile) = std::fs::read_to_string(self.data_dir.join("postmaster.pid"))
                && let Some(pid) = pidfile.lines().next()
            {
                let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
            }
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub pid: i32,
    pub state: String,
    pub query: String,
}

/// Watch `pg_stat_activity` from now on and report the first moment the server
/// has no backend for `user` (polled every 20 ms, for at most `limit`).
/// Wait (up to 3 s) for the server's own log to show a backend ended by
/// `pg_terminate_backend`, as jitgate's reaper ends busy backends when a
/// grant ends.
pub async fn wait_for_reaper_termination(pg: &PgServer) {
    eventually(
        Duration::from_secs(3),
        "the server log to show the busy backend terminated by the reaper",
        || async {
            pg.log()
                .contains("terminating connection due to administrator command")
                .then_some(())
        },
    )
    .await;
}

pub async fn watch_backends_gone(
    pg: &PgServer,
    user: &'static str,
    limit: Duration,
) -> tokio::task::JoinHandle<Option<SystemTime>> {
    let su = pg.superuser_client("postgres").await;
    tokio::spawn(async move {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            // An error means the server is gone with the test that started it.
            let n: i64 = su
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                    &[&user],
                )
                .await
                .ok()?
                .get(0);
            if n == 0 {
                return Some(SystemTime::now());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    })
}

/// How much later `a` is than `b` (zero if it is not).
pub fn later_by(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b).unwrap_or(Duration::ZERO)
}

// ---- jitgate -----------------------------------------------------------------

pub const ADMIN_SECRET: &str = "admin-secret";
pub const ALICE_SECRET: &str = "alice-secret";
pub const BOB_SECRET: &str = "bob-secret";
/// A second approver, for policies that need two distinct approvals.
pub const CAROL_SECRET: &str = "carol-secret";
pub const TARGET: &str = "demo-pg";

/// What to vary in a test's jitgate config.
#[derive(Debug, Clone)]
pub struct JitgateOptions {
    pub tls_require: bool,
    /// `limits.handshake_timeout`, e.g. "1s".
    pub handshake_timeout: Option<String>,
    pub max_message_bytes: Option<usize>,
    /// Point `demo-pg` at this port instead of the server's (a dead port, say).
    pub upstream_port: Option<u16>,
    /// `audit.fsync`: "always" or an interval.
    pub audit_fsync: Option<String>,
    /// Give jitgate this password for the `write` level instead of the real one.
    pub write_password_override: Option<String>,
    pub max_pending_handshakes: Option<usize>,
    pub max_sessions: Option<usize>,
    /// `limits.max_login_failures`; the harness default is high, so tests that
    /// fail logins on purpose do not lock each other out.
    pub max_login_failures: Option<u32>,
    /// `limits.login_failure_window`, e.g. "3s".
    pub login_failure_window: Option<String>,
    /// `limits.first_message_timeout`, e.g. "2s".
    pub first_message_timeout: Option<String>,
    /// `limits.max_pending_handshakes_per_address`.
    pub max_pending_handshakes_per_address: Option<usize>,
    /// Raw TOML lines appended to `[limits]` (`admin_max_connections = 4`, say).
    pub extra_limits: String,
    /// Raw TOML appended to the config: `[[policies]]` tables, say.
    pub policies: String,
    /// `requests.pending_timeout`, e.g. "2s".
    pub pending_timeout: Option<String>,
    /// One `[[webhooks]]` table per URL.
    pub webhooks: Vec<String>,
    /// `audit.path`, instead of `data/audit.log` in jitgate's directory.
    pub audit_path: Option<PathBuf>,
    /// `allow_privileged_read_account` on the `read` level.
    pub allow_privileged_read_account: bool,
}

impl Default for JitgateOptions {
    fn default() -> Self {
        JitgateOptions {
            tls_require: true,
            handshake_timeout: None,
            max_message_bytes: None,
            upstream_port: None,
            audit_fsync: None,
            write_password_override: None,
            max_pending_handshakes: None,
            max_sessions: None,
            max_login_failures: None,
            login_failure_window: None,
            first_message_timeout: None,
            max_pending_handshakes_per_address: None,
            extra_limits: String::new(),
            policies: String::new(),
            pending_timeout: None,
            webhooks: Vec::new(),
            audit_path: None,
            allow_privileged_read_account: false,
        }
    }
}

/// SCRAM verifiers for the identities, computed once per process
/// (PBKDF2 is slow in a debug build).
fn identity_verifiers() -> &'static [(String, String, String); 4] {
    static VERIFIERS: OnceLock<[(String, String, String); 4]> = OnceLock::new();
    VERIFIERS.get_or_init(|| {
        [
            ("alice", "developer", ALICE_SECRET),
            ("bob", "approver", BOB_SECRET),
            ("carol", "approver", CAROL_SECRET),
            ("admin", "admin", ADMIN_SECRET),
        ]
        .map(|(name, group, secret)| {
            (
                name.to_owned(),
                group.to_owned(),
                jitgate::identity::ScramVerifier::generate(secret),
            )
        })
    })
}

/// A running `jitgate serve` in front of one [`PgServer`].
pub struct Jitgate {
    dir: TempDir,
    child: std::process::Child,
    pg_port: u16,
    admin_port: u16,
    log_path: PathBuf,
    audit_path: PathBuf,
    config_path: PathBuf,
    /// The environment `jitgate serve` runs with (the upstream passwords), so
    /// [`Jitgate::restart`] starts it exactly as before.
    env: Vec<(&'static str, String)>,
    http: reqwest::Client,
    /// The upstream passwords jitgate holds; no client may ever see them.
    pub upstream_secrets: Vec<String>,
}

impl Jitgate {
    pub async fn start(pg: &PgServer, opts: JitgateOptions) -> Jitgate {
        let dir = owned_tempdir(&std::env::temp_dir(), PROXY_DIR_PREFIX);
        let pg_port = free_port();
        let admin_port = free_port();
        let config_path = dir.path().join("jitgate.toml");
        let log_path = dir.path().join("jitgate.log");
        let audit_path = opts
            .audit_path
            .clone()
            .unwrap_or_else(|| dir.path().join("data").join("audit.log"));
        jitgate::tls::generate_self_signed(
            &dir.path().join("tls/cert.pem"),
            &dir.path().join("tls/key.pem"),
        )
        .expect("generate jitgate's certificate");

        let limits = format!(
            "handshake_timeout = \"{}\"\n\
             max_pending_handshakes = {}\n\
             max_sessions = {}\n\
             max_message_bytes = {}\n\
             max_login_failures = {}\n\
             login_failure_window = \"{}\"\n",
            opts.handshake_timeout.as_deref().unwrap_or("10s"),
            opts.max_pending_handshakes.unwrap_or(256),
            opts.max_sessions.unwrap_or(10_000),
            opts.max_message_bytes.unwrap_or(64 << 20),
            opts.max_login_failures.unwrap_or(1000),
            opts.login_failure_window.as_deref().unwrap_or("1m"),
        );
        let mut limits = limits;
        if let Some(t) = &opts.first_message_timeout {
            limits.push_str(&format!("first_message_timeout = \"{t}\"\n"));
        }
        if let Some(n) = opts.max_pending_handshakes_per_address {
            limits.push_str(&format!("max_pending_handshakes_per_address = {n}\n"));
        }
        limits.push_str(&opts.extra_limits);
        let mut identities = String::new();
        for (name, group, verifier) in identity_verifiers() {
            identities.push_str(&format!(
                "[[identities]]\nname = \"{name}\"\ngroups = [\"{group}\"]\nsecret = \"{verifier}\"\n\n"
            ));
        }
        let upstream_port = opts.upstream_port.unwrap_or(pg.port());
        let mut config = format!(
            "data_dir = \"data\"\n\
             \n[listen]\npostgres = \"127.0.0.1:{pg_port}\"\nadmin = \"127.0.0.1:{admin_port}\"\n\
             \n[tls]\ncert = \"tls/cert.pem\"\nkey = \"tls/key.pem\"\nrequire = {require}\nself_signed_if_missing = true\n\
             \n[audit]\npath = \"{audit}\"\nfsync = \"{fsync}\"\n\
             \n[limits]\n{limits}\n\
             {identities}\
             [[targets]]\nname = \"{TARGET}\"\nprotocol = \"postgres\"\naddress = \"127.0.0.1:{upstream_port}\"\n\
             database = \"app\"\ntls = \"require\"\n\
             \n[targets.levels.read]\nuser = \"jg_read\"\npassword_env = \"JG_TEST_READ_PW\"\nread_only = true\n\
             allow_privileged_read_account = {allow}\n\
             \n[targets.levels.write]\nuser = \"jg_write\"\npassword_env = \"JG_TEST_WRITE_PW\"\n",
            require = opts.tls_require,
            audit = audit_path.display(),
            fsync = opts.audit_fsync.as_deref().unwrap_or("100ms"),
            allow = opts.allow_privileged_read_account,
        );
        if let Some(timeout) = &opts.pending_timeout {
            config.push_str(&format!("\n[requests]\npending_timeout = \"{timeout}\"\n"));
        }
        for url in &opts.webhooks {
            config.push_str(&format!("\n[[webhooks]]\nurl = \"{url}\"\n"));
        }
        config.push('\n');
        config.push_str(&opts.policies);
        std::fs::write(&config_path, config).expect("write jitgate.toml");

        let write_password = opts
            .write_password_override
            .clone()
            .unwrap_or_else(|| pg.write_password.clone());
        std::fs::File::create(&log_path).expect("create jitgate.log");
        let env = vec![
            ("JG_TEST_READ_PW", pg.read_password.clone()),
            ("JG_TEST_WRITE_PW", write_password.clone()),
        ];
        let child = spawn_serve(dir.path(), &config_path, &log_path, &env);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");

        let mut jg = Jitgate {
            dir,
            child,
            pg_port,
            admin_port,
            log_path,
            audit_path,
            config_path,
            env,
            http,
            upstream_secrets: vec![pg.read_password.clone(), write_password],
        };
        jg.wait_healthy().await;
        jg.wait_for_read_account_check(0).await;
        jg
    }

    /// jitgate checks the read level's upstream account at start, on a
    /// connection of its own: wait until it has logged its verdict (the
    /// `before + 1`th), so that the connection is over before a test counts
    /// the server's connections.
    async fn wait_for_read_account_check(&self, before: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.read_account_verdicts() <= before {
            assert!(
                Instant::now() < deadline,
                "jitgate did not log the read level's account check within 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn read_account_verdicts(&self) -> usize {
        self.log().matches("read level's upstream account").count()
    }

    /// `jitgate <args>` in the proxy's directory with its environment (the
    /// upstream passwords): `check-config`, say.
    pub fn server_command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_jitgate"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// The proxy's config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// SIGKILL the proxy (no chance to flush or clean up, as in a crash), then
    /// start it again with the same config, data directory and ports, and wait
    /// until it answers. Its output goes on in the same log, after a marker line.
    pub async fn restart(&mut self) {
        self.kill_now();
        self.start_again().await;
    }

    /// Start a proxy stopped by [`Jitgate::kill_now`] (or by a signal) again,
    /// as [`Jitgate::restart`] does.
    pub async fn start_again(&mut self) {
        let _ = self.child.wait();
        let verdicts = self.read_account_verdicts();
        {
            use std::io::Write;
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.log_path)
                .expect("open jitgate.log");
            writeln!(log, "\n--- the test harness starts jitgate again ---")
                .expect("write jitgate.log");
        }
        self.child = spawn_serve(
            self.dir.path(),
            &self.config_path,
            &self.log_path,
            &self.env,
        );
        self.wait_healthy().await;
        self.wait_for_read_account_check(verdicts).await;
    }

    /// The proxy's process id (to signal it from another task).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `<data_dir>/journal.jsonl`.
    pub fn journal_path(&self) -> PathBuf {
        self.dir.path().join("data").join("journal.jsonl")
    }

    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("{}/healthz", self.admin_url());
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "jitgate exited during startup ({status}); its log:\n{}",
                    self.log()
                );
            }
            if let Ok(resp) = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                && resp.status() == reqwest::StatusCode::OK
            {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "jitgate's /healthz did not answer 200 within 20 s; its log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pg_port(&self) -> u16 {
        self.pg_port
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn audit_path(&self) -> &Path {
        &self.audit_path
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// jitgate's stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Is the jitgate process still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL the proxy now and reap it.
    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Panic (with the proxy's log) if jitgate has died, and check /healthz.
    pub async fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("jitgate died ({status}); its log:\n{}", self.log());
        }
        let (status, body) = self.api(reqwest::Method::GET, "/healthz", None, None).await;
        assert_eq!(
            status,
            200,
            "healthz answered {status}: {body}\n--- jitgate log\n{}",
            self.log()
        );
    }

    /// One admin-API call; returns the status and the body (JSON, or a string).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.admin_api()
            .call(method.clone(), path, token, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n--- jitgate log\n{}", self.log()))
    }

    /// A handle on the admin API that tasks can own, and that reports a
    /// failed call instead of panicking (the proxy may be dead on purpose).
    pub fn admin_api(&self) -> AdminApi {
        AdminApi {
            http: self.http.clone(),
            base: self.admin_url(),
        }
    }

    /// A break-glass grant by `admin`; returns the grant JSON.
    pub async fn grant(&self, identity: &str, target: &str, level: &str, duration: &str) -> Value {
        let body = json!({
            "identity": identity, "target": target, "level": level,
            "duration": duration, "reason": "integration test",
        });
        let (status, grant) = self
            .api(
                reqwest::Method::POST,
                "/v1/grants",
                Some(ADMIN_SECRET),
                Some(body),
            )
            .await;
        assert_eq!(
            status,
            201,
            "POST /v1/grants answered {status}: {grant}\n--- jitgate log\n{}",
            self.log()
        );
        assert!(
            grant["id"].is_string() || grant["id"].is_number(),
            "grant has no id: {grant}"
        );
        grant
    }

    pub async fn revoke(&self, grant_id: &str) -> Value {
        let (status, body) = self
            .api(
                reqwest::Method::POST,
                &format!("/v1/grants/{grant_id}/revoke"),
                Some(ADMIN_SECRET),
                None,
            )
            .await;
        assert!(
            (200..300).contains(&status),
            "revoke answered {status}: {body}"
        );
        body
    }

    pub async fn grants(&self) -> Value {
        let (status, body) = self
            .api(reqwest::Method::GET, "/v1/grants", Some(ADMIN_SECRET), None)
            .await;
        assert_eq!(status, 200, "GET /v1/grants answered {status}: {body}");
        body
    }

    pub async fn sessions(&self) -> Vec<Value> {
        let (status, body) = self
            .api(
                reqwest::Method::GET,
                "/v1/sessions",
                Some(ADMIN_SECRET),
                None,
            )
            .await;
        assert_eq!(status, 200, "GET /v1/sessions answered {status}: {body}");
        body["sessions"]
            .as_array()
            .unwrap_or_else(|| panic!("GET /v1/sessions: no `sessions` array in {body}"))
            .clone()
    }

    pub async fn kill_session(&self, session_id: &str) -> Value {
        let (status, body) = self
            .api(
                reqwest::Method::POST,
                &format!("/v1/sessions/{session_id}/kill"),
                Some(ADMIN_SECRET),
                None,
            )
            .await;
        assert!(
            (200..300).contains(&status),
            "kill answered {status}: {body}"
        );
        body
    }

    // ---- the request lifecycle, as a given identity ----

    /// `POST /v1/requests` as the holder of `token`: `level` on demo-pg for
    /// `duration` (like "30m"), for `reason`.
    pub async fn request_access(
        &self,
        token: &str,
        level: &str,
        duration: &str,
        reason: &str,
    ) -> (u16, Value) {
        let body =
            json!({"target": TARGET, "level": level, "duration": duration, "reason": reason});
        self.api(
            reqwest::Method::POST,
            "/v1/requests",
            Some(token),
            Some(body),
        )
        .await
    }

    /// Like [`Jitgate::request_access`], panicking unless it answers `201`;
    /// returns the request.
    pub async fn request_ok(&self, token: &str, level: &str, duration: &str) -> Value {
        let (status, request) = self
            .request_access(token, level, duration, "integration test")
            .await;
        assert_eq!(
            status,
            201,
            "POST /v1/requests answered {status}: {request}\n--- jitgate log\n{}",
            self.log()
        );
        request
    }

    /// `POST /v1/requests/{id}/{verb}` (`approve`, `deny` or `cancel`) as the
    /// holder of `token`, with an optional comment.
    pub async fn decide(
        &self,
        token: &str,
        request_id: &str,
        verb: &str,
        comment: Option<&str>,
    ) -> (u16, Value) {
        let body = comment.map(|c| json!({ "comment": c }));
        self.api(
            reqwest::Method::POST,
            &format!("/v1/requests/{request_id}/{verb}"),
            Some(token),
            body,
        )
        .await
    }

    /// `GET /v1/requests/{id}` as the holder of `token`, panicking unless `200`.
    pub async fn request_by_id(&self, token: &str, request_id: &str) -> Value {
        let (status, body) = self
            .api(
                reqwest::Method::GET,
                &format!("/v1/requests/{request_id}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(
            status, 200,
            "GET /v1/requests/{request_id} answered {status}: {body}"
        );
        body
    }

    /// `GET /v1/requests?state=…` as the holder of `token`.
    pub async fn requests_seen_by(&self, token: &str, state: &str) -> Vec<Value> {
        let (status, body) = self
            .api(
                reqwest::Method::GET,
                &format!("/v1/requests?state={state}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, 200, "GET /v1/requests answered {status}: {body}");
        body["requests"]
            .as_array()
            .unwrap_or_else(|| panic!("GET /v1/requests: no `requests` array in {body}"))
            .clone()
    }

    /// The active grant `grant_id` as `GET /v1/grants` (seen by admin) shows it.
    pub async fn active_grant(&self, grant_id: &str) -> Option<Value> {
        self.grants().await["grants"]
            .as_array()
            .unwrap_or_else(|| panic!("GET /v1/grants: no `grants` array"))
            .iter()
            .find(|g| id_of(g) == grant_id)
            .cloned()
    }

    /// `POST /v1/grants/{id}/revoke` as the holder of `token`.
    pub async fn revoke_as(&self, token: &str, grant_id: &str) -> (u16, Value) {
        self.api(
            reqwest::Method::POST,
            &format!("/v1/grants/{grant_id}/revoke"),
            Some(token),
            None,
        )
        .await
    }

    /// The `jitgate` client command as the holder of `token`, with the server
    /// and token in `JITGATE_SERVER` / `JITGATE_TOKEN`, as a person runs it.
    pub async fn cli(&self, token: &str, args: &[&str]) -> Run {
        let out = within(
            Duration::from_secs(30),
            "the jitgate CLI to finish",
            tokio::process::Command::new(jitgate_exe())
                .args(args)
                .env("JITGATE_SERVER", self.admin_url())
                .env("JITGATE_TOKEN", token)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("run the jitgate CLI");
        Run::from(out)
    }

    /// The audit log, one JSON value per complete line.
    pub fn audit_lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.audit_path).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait (up to 5 s: the writer fsyncs in groups) for an audit record
    /// matching `pred`.
    pub async fn wait_for_audit(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(v) = self.audit_lines().into_iter().find(|v| pred(v)) {
                return v;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no audit record for {what} within 5 s; the audit log:\n{}\n--- jitgate log\n{}",
                    std::fs::read_to_string(&self.audit_path).unwrap_or_default(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // ---- real clients ----

    pub fn conninfo(&self, login: &Login) -> String {
        format!(
            "host=127.0.0.1 port={} user={} dbname={} sslmode={}",
            self.pg_port, login.user, login.dbname, login.sslmode
        )
    }

    fn client_command(&self, program: &str, login: &Login) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        for var in [
            "PGHOST",
            "PGHOSTADDR",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGSSLMODE",
            "PGSERVICE",
            "PGOPTIONS",
            "PGSSLROOTCERT",
            "PGCHANNELBINDING",
            "PGREQUIREAUTH",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("PGPASSWORD", &login.password)
            .env("PGPASSFILE", "/dev/null")
            .env("PGCONNECT_TIMEOUT", "5")
            .env("PGAPPNAME", "jitgate-tests")
            .kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// `psql` as alice on demo-pg over TLS.
    pub async fn psql(&self, args: &[&str]) -> Run {
        self.psql_as(&Login::alice(), args, None).await
    }

    /// `psql -X -A -t -v ON_ERROR_STOP=1 <conninfo> args…`, optionally fed `stdin`.
    pub async fn psql_as(&self, login: &Login, args: &[&str], stdin: Option<&str>) -> Run {
        let mut child = self.spawn_psql(login, args, stdin.is_some());
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("psql stdin");
            pipe.write_all(input.as_bytes())
                .await
                .expect("write psql stdin");
            drop(pipe);
        }
        let out = within(
            Duration::from_secs(30),
            "psql to finish",
            child.wait_with_output(),
        )
        .await
        .expect("wait for psql");
        Run::from(out)
    }

    pub fn spawn_psql(
        &self,
        login: &Login,
        args: &[&str],
        piped_stdin: bool,
    ) -> tokio::process::Child {
        let mut cmd = self.client_command("psql", login);
        cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(self.conninfo(login))
            .args(args);
        if piped_stdin {
            cmd.stdin(Stdio::piped());
        }
        cmd.spawn().expect("spawn psql")
    }

    /// `pgbench` with the connection given through the environment.
    pub async fn pgbench(&self, login: &Login, args: &[&str]) -> Run {
        let mut cmd = self.client_command("pgbench", login);
        cmd.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.pg_port.to_string())
            .env("PGUSER", &login.user)
            .env("PGDATABASE", &login.dbname)
            .env("PGSSLMODE", &login.sslmode)
            .args(args);
        let out = within(Duration::from_secs(60), "pgbench to finish", cmd.output())
            .await
            .expect("run pgbench");
        Run::from(out)
    }

    /// Any libpq client through jitgate: `program args… -d <conninfo>`.
    pub async fn libpq_client(&self, program: &str, login: &Login, args: &[&str]) -> Run {
        let mut cmd = self.client_command(program, login);
        cmd.args(args).arg("-d").arg(self.conninfo(login));
        let out = within(
            Duration::from_secs(60),
            "the client to finish",
            cmd.output(),
        )
        .await
        .expect("run the client");
        Run::from(out)
    }

    /// A Python program (Debian's `python3` with psycopg2) through jitgate:
    /// `JITGATE_DSN` holds the connection string without the password,
    /// which libpq reads from the environment.
    pub async fn python(&self, login: &Login, program: &str) -> Run {
        let mut cmd = self.client_command("/usr/bin/python3", login);
        cmd.env("JITGATE_DSN", self.conninfo(login))
            .arg("-c")
            .arg(program);
        let out = within(Duration::from_secs(60), "python to finish", cmd.output())
            .await
            .expect("run python3");
        Run::from(out)
    }

    /// A tokio-postgres session through jitgate (TLS required, any certificate).
    pub async fn connect(
        &self,
        login: &Login,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.pg_port)
            .user(&login.user)
            .password(&login.password)
            .dbname(&login.dbname)
            .application_name("jitgate-tests")
            .connect_timeout(Duration::from_secs(5))
            .ssl_mode(match login.sslmode.as_str() {
                "disable" => tokio_postgres::config::SslMode::Disable,
                "prefer" => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
        let (client, connection) = within(
            Duration::from_secs(20),
            "tokio-postgres login through jitgate",
            config.connect(AnyCertTls::new()),
        )
        .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// jitgate's log says its reaper ended exactly the one busy backend it
    /// was asked for (not a cancel request).
    pub fn assert_reaper_ended_one(&self) {
        let log = self.log();
        assert!(
            log.contains("ended busy upstream backends in one statement")
                && log.contains("asked=1 ended=1"),
            "the running query should be ended by the level's reaper, not a cancel request:\n{log}"
        );
    }

    /// Like [`Jitgate::connect`], panicking with the proxy's log on failure.
    pub async fn connect_ok(&self, login: &Login) -> tokio_postgres::Client {
        match self.connect(login).await {
            Ok(c) => c,
            Err(e) => panic!(
                "login as {} to {} failed: {}\n--- jitgate log\n{}",
                login.user,
                login.dbname,
                describe_error(&e),
                self.log()
            ),
        }
    }
}

/// The admin API of one [`Jitgate`], cheap to clone into tasks.
#[derive(Clone)]
pub struct AdminApi {
    http: reqwest::Client,
    base: String,
}

impl AdminApi {
    /// One call; the status and the body (JSON, or a string), or the
    /// transport error (refused, reset, timed out).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }
}

/// `jitgate serve -c <config>` in `dir`, stdout and stderr appended to `log_path`;
/// records its pid in `dir/child.pid` for [`sweep_leftovers`].
fn spawn_serve(
    dir: &Path,
    config_path: &Path,
    log_path: &Path,
    env: &[(&str, String)],
) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(log_path)
        .expect("open jitgate.log");
    let child = Command::new(jitgate_exe())
        .arg("serve")
        .arg("-c")
        .arg(config_path)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "info,jitgate=debug")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn()
        .expect("spawn jitgate serve");
    std::fs::write(dir.join("child.pid"), child.id().to_string()).expect("record jitgate's pid");
    child
}

impl Drop for Jitgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Who logs in, to which target, how.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub password: String,
    pub dbname: String,
    pub sslmode: String,
}

impl Login {
    pub fn new(user: &str, password: &str) -> Login {
        Login {
            user: user.to_owned(),
            password: password.to_owned(),
            dbname: TARGET.to_owned(),
            sslmode: "require".to_owned(),
        }
    }

    pub fn alice() -> Login {
        Login::new("alice", ALICE_SECRET)
    }

    pub fn dbname(mut self, dbname: &str) -> Login {
        self.dbname = dbname.to_owned();
        self
    }

    pub fn sslmode(mut self, sslmode: &str) -> Login {
        self.sslmode = sslmode.to_owned();
        self
    }
}

/// What a client program did.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Run {
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Panic with both outputs (and the proxy's log) unless it succeeded.
    pub fn assert_ok(&self, jg: &Jitgate) -> &Run {
        assert!(
            self.status.success(),
            "client failed ({}):\n--- stdout\n{}\n--- stderr\n{}\n--- jitgate log\n{}",
            self.status,
            self.stdout,
            self.stderr,
            jg.log()
        );
        self
    }

    pub fn assert_failed(&self) -> &Run {
        assert!(
            !self.status.success(),
            "client should have failed:\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// SQLSTATE of a tokio-postgres error, if the server (or proxy) sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.code().map(|c| c.code().to_owned())
}

/// Assert that `e` carries SQLSTATE `code`, showing the whole error if not.
#[track_caller]
pub fn assert_sqlstate(e: &tokio_postgres::Error, code: &str) {
    assert_eq!(
        sqlstate(e).as_deref(),
        Some(code),
        "expected SQLSTATE {code}, got {}",
        describe_error(e)
    );
}

/// A tokio-postgres error with its SQLSTATE, message and hint, for assertions.
pub fn describe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} {}: {}{}",
            db.severity(),
            db.code().code(),
            db.message(),
            db.hint()
                .map(|h| format!(" (hint: {h})"))
                .unwrap_or_default()
        ),
        None => format!("{e} ({e:?})"),
    }
}

/// `expires_at` of a grant (or request) as a time on this machine's clock.
pub fn expires_at(grant: &Value) -> SystemTime {
    time_of(grant, "expires_at")
}

/// The RFC 3339 UTC time in field `key` of an API object.
pub fn time_of(object: &Value, key: &str) -> SystemTime {
    let text = object[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} string in {object}"));
    let normalized = match text.strip_suffix("+00:00") {
        Some(base) => format!("{base}Z"),
        None => text.to_owned(),
    };
    humantime::parse_rfc3339_weak(&normalized)
        .unwrap_or_else(|e| panic!("{key} `{text}` is not RFC 3339 UTC: {e}"))
}

/// An id as a string, whatever JSON type the API uses for it.
pub fn id_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The `id` field of a grant or session.
pub fn id_of(v: &Value) -> String {
    id_string(&v["id"])
}

// ---- TLS for tokio-postgres and raw sockets ------------------------------------

/// Accept any server certificate: the proxy's is self-signed, and these tests
/// are about the proxy, not about PKI (libpq's `sslmode=require`).
fn tls_client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            jitgate::tls::client_config(&jitgate::config::UpstreamTls::Require)
                .expect("TLS settings")
                .expect("TLS is on with Require")
        })
        .clone()
}

/// tokio-postgres TLS on tokio-rustls (ring), accepting any certificate.
#[derive(Clone)]
pub struct AnyCertTls(Arc<rustls::ClientConfig>);

impl AnyCertTls {
    pub fn new() -> AnyCertTls {
        AnyCertTls(tls_client_config())
    }
}

impl Default for AnyCertTls {
    fn default() -> Self {
        AnyCertTls::new()
    }
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for AnyCertTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = AnyCertTlsStream<S>;
    type TlsConnect = AnyCertTlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<AnyCertTlsConnect> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(AnyCertTlsConnect {
            config: self.0.clone(),
            name,
        })
    }
}

pub struct AnyCertTlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> tokio_postgres::tls::TlsConnect<S> for AnyCertTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = AnyCertTlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<AnyCertTlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(AnyCertTlsStream(tls))
        })
    }
}

pub struct AnyCertTlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for AnyCertTlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for AnyCertTlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for AnyCertTlsStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        tokio_postgres::tls::ChannelBinding::none()
    }
}

// ---- raw protocol bytes ----------------------------------------------------------

pub const PROTOCOL_3_0: u32 = 196_608;
pub const PROTOCOL_3_2: u32 = 196_610;
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// A startup packet for protocol 3.0 with these parameters.
pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// An 8-byte request packet (SSLRequest, GSSENCRequest) with `code`.
pub fn request_packet(code: u32) -> Vec<u8> {
    let mut p = 8u32.to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p
}

pub fn cancel_packet(pid: u32, key: u32) -> Vec<u8> {
    let mut p = 16u32.to_be_bytes().to_vec();
    p.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    p.extend_from_slice(&pid.to_be_bytes());
    p.extend_from_slice(&key.to_be_bytes());
    p
}

/// A tagged frontend message: tag, length, body.
pub fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// One message from the server (or proxy).
#[derive(Debug, Clone)]
pub struct BackendMessage {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl BackendMessage {
    /// A field of an ErrorResponse / NoticeResponse (`b'C'` SQLSTATE, `b'M'` message…).
    pub fn field(&self, code: u8) -> Option<String> {
        if self.tag != b'E' && self.tag != b'N' {
            return None;
        }
        let mut rest = &self.body[..];
        while let Some((&c, tail)) = rest.split_first() {
            if c == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0)?;
            if c == code {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }

    pub fn sqlstate(&self) -> Option<String> {
        self.field(b'C')
    }

    /// The authentication request code of an `R` message.
    pub fn auth_code(&self) -> Option<u32> {
        (self.tag == b'R' && self.body.len() >= 4)
            .then(|| u32::from_be_bytes(self.body[..4].try_into().unwrap()))
    }
}

impl std::fmt::Display for BackendMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tag {
            b'E' | b'N' => write!(
                f,
                "{} {} {}: {}",
                self.tag as char,
                self.field(b'S').unwrap_or_default(),
                self.sqlstate().unwrap_or_default(),
                self.field(b'M').unwrap_or_default()
            ),
            tag => write!(f, "{} ({} bytes)", tag as char, self.body.len()),
        }
    }
}

trait RawIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> RawIo for T {}

/// A hand-driven client connection, for bytes no well-behaved client sends.
pub struct RawConn {
    io: Box<dyn RawIo>,
    buf: BytesMut,
}

/// How a raw connection ended up after we misbehaved.
#[derive(Debug)]
pub struct Ending {
    /// Every message received before the connection closed.
    pub messages: Vec<BackendMessage>,
    /// Bytes that did not form a whole message (e.g. a lone 'N').
    pub trailing: Vec<u8>,
}

impl Ending {
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.messages.iter().map(|m| m.to_string()).collect();
        if !self.trailing.is_empty() {
            parts.push(format!("{} trailing bytes", self.trailing.len()));
        }
        if parts.is_empty() {
            "closed without a word".to_owned()
        } else {
            parts.join(", ")
        }
    }

    pub fn errors(&self) -> Vec<&BackendMessage> {
        self.messages.iter().filter(|m| m.tag == b'E').collect()
    }
}

impl RawConn {
    pub async fn plain(port: u16) -> RawConn {
        let tcp = within(
            Duration::from_secs(5),
            "TCP connect to jitgate",
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .expect("TCP connect to jitgate");
        RawConn {
            io: Box::new(tcp),
            buf: BytesMut::new(),
        }
    }

    /// SSLRequest, expect `S`, then a TLS handshake (any certificate).
    pub async fn tls(port: u16) -> RawConn {
        let mut tcp = within(
            Duration::from_secs(5),
            "TCP connect to jitgate",
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .expect("TCP connect to jitgate");
        tcp.write_all(&request_packet(SSL_REQUEST_CODE))
            .await
            .expect("send SSLRequest");
        let mut answer = [0u8; 1];
        within(
            Duration::from_secs(5),
            "answer to SSLRequest",
            tcp.read_exact(&mut answer),
        )
        .await
        .expect("read answer to SSLRequest");
        assert_eq!(
            answer[0], b'S',
            "jitgate refused TLS (answered {:?})",
            answer[0] as char
        );
        let name = ServerName::try_from("localhost").expect("server name");
        let tls = within(
            Duration::from_secs(5),
            "TLS handshake with jitgate",
            tokio_rustls::TlsConnector::from(tls_client_config()).connect(name, tcp),
        )
        .await
        .expect("TLS handshake with jitgate");
        RawConn {
            io: Box::new(tls),
            buf: BytesMut::new(),
        }
    }

    /// Send bytes; errors are returned (the proxy may already have hung up).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        within(Duration::from_secs(10), "a write to jitgate", async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        })
        .await
    }

    /// Half-close: the proxy reads EOF, we can still read its answer.
    pub async fn finish_writing(&mut self) {
        let _ = self.io.shutdown().await;
    }

    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = self.io.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Read one byte (the answer to SSLRequest / GSSENCRequest); `None` on EOF.
    pub async fn read_byte(&mut self, limit: Duration) -> io::Result<Option<u8>> {
        within(limit, "a one-byte answer", async {
            while self.buf.is_empty() {
                if self.fill().await? == 0 {
                    return Ok(None);
                }
            }
            Ok(Some(self.buf.get_u8()))
        })
        .await
    }

    /// The next message; `Ok(None)` on a clean EOF between messages.
    pub async fn next_message(&mut self, limit: Duration) -> io::Result<Option<BackendMessage>> {
        within(limit, "a message from jitgate", self.read_message()).await
    }

    async fn read_message(&mut self) -> io::Result<Option<BackendMessage>> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if !(4..=(64 << 20)).contains(&len) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("jitgate sent a message with length {len}"),
                    ));
                }
                if self.buf.len() > len {
                    let tag = self.buf.get_u8();
                    self.buf.advance(4);
                    let body = self.buf.split_to(len - 4).to_vec();
                    return Ok(Some(BackendMessage { tag, body }));
                }
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "EOF inside a message",
                    ))
                };
            }
        }
    }

    /// Read until the peer closes (or resets) the connection, at most `limit`.
    /// Panics, naming `case`, if it stays open: the proxy must not leave a bad
    /// client hanging.
    pub async fn until_closed(&mut self, limit: Duration, case: &str) -> Ending {
        let mut messages = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.read_message()).await {
                Err(_) => panic!(
                    "{case}: connection still open after {limit:?}; received so far: [{}]",
                    messages
                        .iter()
                        .map(|m: &BackendMessage| m.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Ok(Ok(Some(m))) => messages.push(m),
                Ok(Ok(None)) | Ok(Err(_)) => {
                    return Ending {
                        messages,
                        trailing: self.buf.to_vec(),
                    };
                }
            }
        }
    }

    /// Start up and log in with SCRAM-SHA-256; returns the messages after
    /// AuthenticationOk up to ReadyForQuery, or the ErrorResponse.
    pub async fn login(
        &mut self,
        user: &str,
        password: &str,
        dbname: &str,
    ) -> Result<Vec<BackendMessage>, BackendMessage> {
        self.send(&startup_packet(&[("user", user), ("database", dbname)]))
            .await
            .expect("send startup packet");
        self.authenticate(password).await
    }

    /// After a startup packet: answer the SCRAM-SHA-256 exchange (skipping a
    /// NegotiateProtocolVersion the caller has already read) and collect the
    /// messages after AuthenticationOk up to ReadyForQuery, or the ErrorResponse.
    pub async fn authenticate(
        &mut self,
        password: &str,
    ) -> Result<Vec<BackendMessage>, BackendMessage> {
        let mut scram: Option<postgres_protocol::authentication::sasl::ScramSha256> = None;
        let mut after_ok = Vec::new();
        loop {
            let msg = self
                .next_message(Duration::from_secs(20))
                .await
                .expect("read during login")
                .expect("jitgate closed the connection during login");
            match (msg.tag, msg.auth_code()) {
                (b'E', _) => return Err(msg),
                (b'R', Some(10)) => {
                    let s = postgres_protocol::authentication::sasl::ScramSha256::new(
                        password.as_bytes(),
                        postgres_protocol::authentication::sasl::ChannelBinding::unsupported(),
                    );
                    let mut out = BytesMut::new();
                    postgres_protocol::message::frontend::sasl_initial_response(
                        "SCRAM-SHA-256",
                        s.message(),
                        &mut out,
                    )
                    .expect("encode SASLInitialResponse");
                    self.send(&out).await.expect("send SASLInitialResponse");
                    scram = Some(s);
                }
                (b'R', Some(11)) => {
                    let s = scram.as_mut().expect("SASLContinue before SASL");
                    s.update(&msg.body[4..])
                        .expect("SCRAM server-first message");
                    let mut out = BytesMut::new();
                    postgres_protocol::message::frontend::sasl_response(s.message(), &mut out)
                        .expect("encode SASLResponse");
                    self.send(&out).await.expect("send SASLResponse");
                }
                (b'R', Some(12)) => {
                    let s = scram.as_mut().expect("SASLFinal before SASL");
                    s.finish(&msg.body[4..]).expect("SCRAM server signature");
                }
                (b'R', Some(0)) => {}
                (b'R', code) => panic!("unexpected authentication request {code:?}"),
                (b'Z', _) => {
                    after_ok.push(msg);
                    return Ok(after_ok);
                }
                _ => after_ok.push(msg),
            }
        }
    }
}

/// Append `s` and its NUL terminator (for message bodies built by hand).
pub fn put_cstr(buf: &mut Vec<u8>, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}
