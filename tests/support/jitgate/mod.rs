//! A running `jitgate serve`, started from this build's binary with a
//! config of the test's making, in a directory of its own on free ports;
//! restarted on demand (as after a crash) and killed on `Drop`.

mod audit;
mod config;
mod options;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{free_port, kill_if_running};
use super::scratch::owned_tempdir;
use super::wait::within;
pub use config::{ADMIN_SECRET, ALICE_SECRET, BOB_SECRET, CAROL_SECRET, JitgateConfig, Ports};
pub use options::{JitgateOptions, MYSQL_TARGET, PG_TARGET, Protocol, Upstream};

/// The name prefix of a proxy's directory (see [`super::scratch`]).
pub const DIR_PREFIX: &str = "jitgate-test-proxy-";

/// A running `jitgate serve`.
pub struct Jitgate {
    dir: TempDir,
    child: Child,
    ports: Ports,
    log_path: PathBuf,
    audit_path: PathBuf,
    config_path: PathBuf,
    /// How it was started, so [`Jitgate::restart`] starts it exactly as before.
    config: JitgateConfig,
    http: reqwest::Client,
    /// The upstream passwords jitgate holds; no client may ever see them.
    pub upstream_secrets: Vec<String>,
    /// The proxy's own PostgreSQL store, under `JITGATE_TEST_STORE=postgres`
    /// (declared last: it goes after the proxy).
    store: Option<super::store::StoreServer>,
}

impl Jitgate {
    /// jitgate in front of `upstream`, configured by `opts`.
    pub async fn start(upstream: &impl Upstream, opts: JitgateOptions) -> Jitgate {
        Jitgate::launch(opts.config(upstream)).await
    }

    /// jitgate with `config`, once it answers on its admin port (and has
    /// checked the read level's account, if there is one).
    pub async fn launch(mut config: JitgateConfig) -> Jitgate {
        let store = match super::store::StoreServer::for_every_proxy() {
            true if !config.extra.contains("[store]") => {
                let store = super::store::StoreServer::start().await;
                store.configure(&mut config, "test-proxy", "15s");
                Some(store)
            }
            _ => None,
        };
        let Prepared {
            dir,
            ports,
            config_path,
            audit_path,
        } = Prepared::new(&config);
        let log_path = dir.path().join("jitgate.log");
        std::fs::File::create(&log_path).expect("create jitgate.log");
        let child = spawn_serve(dir.path(), &config_path, &log_path, &config);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(config.admin_timeout)
            // The proxy's own self-signed certificate, with `admin_tls`.
            .danger_accept_invalid_certs(config.admin_tls)
            .build()
            .expect("http client");
        let mut jg = Jitgate {
            dir,
            child,
            ports,
            log_path,
            audit_path,
            config_path,
            upstream_secrets: config.upstream_secrets.clone(),
            config,
            http,
            store,
        };
        jg.wait_healthy().await;
        jg.wait_for_read_account_check(0).await;
        jg
    }

    /// Start jitgate with `config` expecting it to refuse to start: returns
    /// what it printed (stdout and stderr) once it has exited unsuccessfully.
    pub async fn launch_refused(config: JitgateConfig) -> String {
        let Prepared {
            dir, config_path, ..
        } = Prepared::new(&config);
        let out = within(
            Duration::from_secs(30),
            "jitgate to refuse to start",
            tokio::process::Command::new(&config.exe)
                .arg("serve")
                .arg("-c")
                .arg(&config_path)
                .current_dir(dir.path())
                .envs(config.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("run jitgate serve");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "jitgate started:\n{said}");
        said
    }

    /// jitgate checks the read level's upstream account at start, on a
    /// connection of its own: wait until it has logged its verdict (the
    /// `before + 1`th), so that the connection is over before a test counts
    /// the server's connections.
    async fn wait_for_read_account_check(&self, before: usize) {
        if !self.config.has_read_level {
            return;
        }
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

    /// `jitgate <args>` in the proxy's directory with its environment (the
    /// upstream passwords): `check-config`, say.
    pub fn server_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.config.exe);
        cmd.args(args)
            .current_dir(self.dir.path())
            .envs(self.config.env.iter().map(|(k, v)| (k, v)));
        cmd
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
            &self.config,
        );
        self.wait_healthy().await;
        self.wait_for_read_account_check(verdicts).await;
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

    /// The proxy's process id (to signal it from another task).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port of the PostgreSQL listener.
    pub fn pg_port(&self) -> u16 {
        self.ports
            .postgres
            .expect("this jitgate has no PostgreSQL listener")
    }

    /// The port of the MySQL listener.
    pub fn mysql_port(&self) -> u16 {
        self.ports
            .mysql
            .expect("this jitgate has no MySQL listener")
    }

    pub fn admin_url(&self) -> String {
        let scheme = if self.config.admin_tls {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.ports.admin)
    }

    /// The HTTP client the kit talks to the admin API with.
    pub(super) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The proxy's config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// `<data_dir>/journal.jsonl`.
    /// Whether this proxy keeps its requests and grants in a PostgreSQL
    /// store (`JITGATE_TEST_STORE=postgres`) rather than its journal.
    pub fn has_pg_store(&self) -> bool {
        self.config.extra.contains("[store]")
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.path().join("data").join("journal.jsonl")
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
}

impl Drop for Jitgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `jitgate serve -c <config>` in `dir`, stdout and stderr appended to
/// `log_path`; records its pid in `dir/child.pid` for [`stop_leftover`].
fn spawn_serve(dir: &Path, config_path: &Path, log_path: &Path, config: &JitgateConfig) -> Child {
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(log_path)
        .expect("open jitgate.log");
    let mut cmd = Command::new(&config.exe);
    cmd.arg("serve")
        .arg("-c")
        .arg(config_path)
        .current_dir(dir)
        .envs(config.env.iter().map(|(k, v)| (k, v)))
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log);
    if let Some(filter) = &config.log_filter {
        cmd.env("RUST_LOG", filter);
    }
    let child = cmd.spawn().expect("spawn jitgate serve");
    std::fs::write(dir.join("child.pid"), child.id().to_string()).expect("record jitgate's pid");
    child
}

/// A proxy's directory before it starts: free ports, its certificate and
/// its `jitgate.toml`.
struct Prepared {
    dir: TempDir,
    ports: Ports,
    config_path: PathBuf,
    audit_path: PathBuf,
}

impl Prepared {
    fn new(config: &JitgateConfig) -> Prepared {
        let dir = owned_tempdir(&std::env::temp_dir(), DIR_PREFIX);
        let ports = Ports {
            postgres: config.postgres_listener.then(free_port),
            mysql: config.mysql_listener.then(free_port),
            admin: free_port(),
        };
        let config_path = dir.path().join("jitgate.toml");
        let audit_path = config
            .audit_path
            .clone()
            .unwrap_or_else(|| dir.path().join("data").join("audit.log"));
        jitgate::tls::generate_self_signed(
            &dir.path().join("tls/cert.pem"),
            &dir.path().join("tls/key.pem"),
        )
        .expect("generate jitgate's certificate");
        std::fs::write(&config_path, config.render(ports, &audit_path))
            .expect("write jitgate.toml");
        Prepared {
            dir,
            ports,
            config_path,
            audit_path,
        }
    }
}

/// Stop the proxy a killed test process left running in `dir`.
pub fn stop_leftover(dir: &Path) {
    let child = std::fs::read_to_string(dir.join("child.pid")).unwrap_or_default();
    kill_if_running(child.trim(), env!("CARGO_BIN_EXE_jitgate"));
}
