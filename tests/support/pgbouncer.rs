//! A throwaway pgbouncer in transaction mode in front of a [`PgServer`],
//! as an operator would put one between jitgate and a server that cannot
//! hold a backend per session (the grant-end bench at 10 000 sessions).
//! `Drop` stops it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio_postgres::SimpleQueryMessage;

use super::postgres::PgServer;
use super::process::{command_as, free_port, give_to, kill_if_running};
use super::scratch::owned_tempdir;

/// The name prefix of a pooler's directory (see [`super::scratch`]).
pub const DIR_PREFIX: &str = "jitgate-test-pgbouncer-";

/// A pooler and what it was told.
pub struct Pgbouncer {
    dir: TempDir,
    child: Child,
    pidfile: PathBuf,
    port: u16,
}

/// What a [`Pgbouncer`] serves.
#[derive(Debug, Clone)]
pub struct PgbouncerSettings {
    /// The database clients name; it is the server's `postgres`.
    pub database: String,
    /// The account clients log in as (trust, like the server's).
    pub user: String,
    /// Server connections per pool.
    pub pool_size: usize,
    pub max_client_conn: usize,
}

impl Pgbouncer {
    pub fn start(pg: &PgServer, settings: &PgbouncerSettings) -> Pgbouncer {
        let exe = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("pgbouncer is not installed: apt-get install -y pgbouncer");
        let dir = owned_tempdir(&std::env::temp_dir(), DIR_PREFIX);
        let port = free_port();
        let pidfile = dir.path().join("pgbouncer.pid");
        write_config(dir.path(), pg.port(), port, settings);
        give_to("postgres", dir.path());
        // runuser starts a PAM session, which puts the soft open-files limit
        // back to 1024; pgbouncer needs one per client.
        let raise_and_exec = r#"ulimit -n "$(ulimit -Hn)" && exec "$0" "$1""#;
        let child = command_as("postgres", "sh")
            .args(["-c", raise_and_exec, exe])
            .arg(dir.path().join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pgbouncer");
        let bouncer = Pgbouncer {
            dir,
            child,
            pidfile,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not start:\n{}",
                std::fs::read_to_string(bouncer.dir.path().join("pgbouncer.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        bouncer
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// How to reach pgbouncer's admin console (`SHOW POOLS`…).
    pub fn admin_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname("pgbouncer")
            .ssl_mode(tokio_postgres::config::SslMode::Disable);
        config
    }

    /// Clients of `user` in the pools, active or waiting, on a connection
    /// of its own to the admin console.
    pub async fn clients_of(&self, user: &str) -> Result<usize, tokio_postgres::Error> {
        let (admin, connection) = self.admin_config().connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        pooled_clients(&admin, user).await
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        // runuser does not pass signals on, so stop pgbouncer by its own pid.
        if let Ok(pid) = std::fs::read_to_string(&self.pidfile) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = self.child.wait();
    }
}

/// Clients of `user` in pgbouncer's pools, active or waiting, as its admin
/// console `admin` counts them.
pub async fn pooled_clients(
    admin: &tokio_postgres::Client,
    user: &str,
) -> Result<usize, tokio_postgres::Error> {
    let mut total = 0;
    for m in admin.simple_query("SHOW POOLS").await? {
        if let SimpleQueryMessage::Row(r) = m
            && r.get("user") == Some(user)
        {
            for column in [
                "cl_active",
                "cl_waiting",
                "cl_active_cancel_req",
                "cl_waiting_cancel_req",
            ] {
                if let Ok(Some(v)) = r.try_get(column) {
                    total += v.parse::<usize>().unwrap_or(0);
                }
            }
        }
    }
    Ok(total)
}

/// Stop the pooler a killed process left running in `dir`.
pub fn stop_leftover(dir: &Path) {
    let pid = std::fs::read_to_string(dir.join("pgbouncer.pid")).unwrap_or_default();
    kill_if_running(pid.trim(), "pgbouncer");
}

/// `userlist.txt` and `pgbouncer.ini`: trust for the user and the admin,
/// transaction pooling, a deep listen backlog for logins in bursts.
fn write_config(dir: &Path, pg_port: u16, port: u16, settings: &PgbouncerSettings) {
    std::fs::write(
        dir.join("userlist.txt"),
        format!("\"{}\" \"\"\n\"postgres\" \"\"\n", settings.user),
    )
    .expect("write userlist.txt");
    std::fs::write(
        dir.join("pgbouncer.ini"),
        format!(
            "[databases]\n{database} = host=127.0.0.1 port={pg_port} dbname=postgres\n\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {dir}/userlist.txt\nadmin_users = postgres\n\
             pool_mode = transaction\nmax_client_conn = {max_client_conn}\nlisten_backlog = 4096\n\
             default_pool_size = {pool_size}\nquery_wait_timeout = 0\n\
             ignore_startup_parameters = extra_float_digits\n\
             log_connections = 0\nlog_disconnections = 0\n\
             logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
            database = settings.database,
            max_client_conn = settings.max_client_conn,
            pool_size = settings.pool_size,
            dir = dir.display(),
        ),
    )
    .expect("write pgbouncer.ini");
}
