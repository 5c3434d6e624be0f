//! A throwaway PostgreSQL: its own data directory (a copy of the
//! [`template`]), a free port, SCRAM and TLS on TCP, and trust on its
//! private unix socket for the kit's superuser checks. `Drop` stops it.

mod binaries;
mod template;
mod witness;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::jitgate::{Protocol, Upstream};
use super::process::{free_port, random_hex, run_checked};
use super::scratch::{owned_tempdir, server_root};
use super::tls::AnyCertTls;
use super::wait::within;
pub(super) use binaries::{hand_to_postgres, pg_command};
pub use witness::{Backend, By, wait_for_reaper_termination, watch_backends_gone};

/// The name prefix of a server's directory (see [`super::scratch`]).
pub const DIR_PREFIX: &str = "jitgate-test-pg-";

/// How a [`PgServer`] is set up; the default is what the tests need.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub max_connections: usize,
    /// `shared_buffers`, e.g. "16MB".
    pub shared_buffers: String,
    /// How clients log in over TCP: `scram-sha-256`, or `trust` for accounts
    /// without a password (the benches').
    pub tcp_auth: String,
    /// TLS on the TCP port.
    pub ssl: bool,
    /// `log_connections` and `log_disconnections`: the tests count the
    /// connections in the server's log.
    pub log_connections: bool,
    /// `synchronous_commit`: on for a server that is stopped with `-m
    /// immediate` and must keep what it acknowledged (a fleet's store).
    pub synchronous_commit: bool,
}

impl Default for PgSettings {
    fn default() -> Self {
        PgSettings {
            max_connections: 100,
            shared_buffers: "16MB".to_owned(),
            tcp_auth: "scram-sha-256".to_owned(),
            ssl: true,
            log_connections: true,
            synchronous_commit: false,
        }
    }
}

/// A PostgreSQL server of our own.
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
        PgServer::start_with(PgSettings::default()).await
    }

    pub async fn start_with(settings: PgSettings) -> PgServer {
        let dir = owned_tempdir(server_root(), DIR_PREFIX);
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("postgres.log");
        run_checked(
            Command::new("cp")
                .arg("-a")
                .arg(template::template_data_dir())
                .arg(&data_dir),
            "copy the template",
        );
        let port = free_port();
        configure(dir.path(), &data_dir, port, &settings);
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

    /// How to reach the server as its superuser over the private unix
    /// socket (trust auth), for a connection on another runtime.
    pub fn superuser_config(&self, db: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.dir.path())
            .port(self.port)
            .user("postgres")
            .dbname(db);
        config
    }

    /// A superuser session over the private unix socket (trust auth).
    pub async fn superuser_client(&self, db: &str) -> tokio_postgres::Client {
        let (client, connection) = within(
            Duration::from_secs(20),
            "superuser connection over the unix socket",
            self.superuser_config(db).connect(tokio_postgres::NoTls),
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

    /// The data directory (to start the server again after [`PgServer::stop`]).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// `pg_ctl stop -m immediate` (a crash, as far as clients can tell).
    pub fn stop(&self) {
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

/// Stop the server a killed test process left running in `dir`.
pub fn stop_leftover(dir: &Path) {
    if dir.join("data/postmaster.pid").exists() {
        let _ = pg_command("pg_ctl")
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-m", "immediate", "-w", "-t", "10", "stop"])
            .output();
    }
}

/// Write `pg_hba.conf`, a certificate and the settings into a copied data
/// directory, and hand it to the server's account.
fn configure(dir: &Path, data_dir: &Path, port: u16, settings: &PgSettings) {
    let auth = &settings.tcp_auth;
    let hostssl = if settings.ssl {
        format!("hostssl all all 127.0.0.1/32 {auth}\n")
    } else {
        String::new()
    };
    std::fs::write(
        data_dir.join("pg_hba.conf"),
        format!("local all all trust\n{hostssl}host all all 127.0.0.1/32 {auth}\n"),
    )
    .expect("write pg_hba.conf");
    let ssl = if settings.ssl {
        jitgate::tls::generate_self_signed(
            &data_dir.join("server.crt"),
            &data_dir.join("server.key"),
        )
        .expect("generate a certificate for postgres");
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
    } else {
        "ssl = off\n"
    };
    let log_connections = if settings.log_connections {
        "on"
    } else {
        "off"
    };
    let conf = format!(
        "\n# --- jitgate test harness\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = '{sock}'\n\
         {ssl}\
         password_encryption = 'scram-sha-256'\n\
         logging_collector = off\n\
         log_destination = 'stderr'\n\
         log_connections = {log_connections}\n\
         log_disconnections = {log_connections}\n\
         fsync = off\n\
         synchronous_commit = {synchronous_commit}\n\
         full_page_writes = off\n\
         max_connections = {max_connections}\n\
         shared_buffers = '{shared_buffers}'\n",
        sock = dir.display(),
        synchronous_commit = if settings.synchronous_commit {
            "on"
        } else {
            "off"
        },
        max_connections = settings.max_connections,
        shared_buffers = settings.shared_buffers,
    );
    let path = data_dir.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&path).expect("read postgresql.conf");
    text.push_str(&conf);
    std::fs::write(&path, text).expect("write postgresql.conf");
    hand_to_postgres(dir);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod tempdir");
        if settings.ssl {
            std::fs::set_permissions(
                data_dir.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod server.key");
        }
    }
}

impl Upstream for PgServer {
    fn protocol(&self) -> Protocol {
        Protocol::Postgres
    }

    fn port(&self) -> u16 {
        self.port
    }

    fn read_password(&self) -> &str {
        &self.read_password
    }

    fn write_password(&self) -> &str {
        &self.write_password
    }
}
