//! A throwaway MariaDB from the installed binaries: its own data directory
//! (a copy of the [`template`]), password accounts and TLS on a free TCP
//! port, and root without a password on its private socket for the witness
//! (`information_schema.processlist`). `Drop` stops it.

mod template;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

use super::jitgate::{Protocol, Upstream};
use super::mysql_client::tls_opts;
use super::process::{command_as, free_port, give_to, kill_if_running, run_checked};
use super::scratch::{owned_tempdir, server_root};
use template::{SERVER_ARGS, template, wait_for_socket};

/// The name prefix of a server's directory (see [`super::scratch`]).
pub const DIR_PREFIX: &str = "jitgate-test-mariadb-";

/// A MariaDB server binary, run as `mysql` when we are root.
fn server_command(program: &str) -> Command {
    command_as("mysql", program)
}

fn hand_to_mysql(path: &Path) {
    give_to("mysql", path);
}

/// A MariaDB server of our own. Database `app` holds `items(id, name)` with
/// apple, banana, cherry; `jg_read` may only SELECT from it, `jg_write` may
/// do anything in it.
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
        let dir = owned_tempdir(server_root(), DIR_PREFIX);
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

impl Upstream for MariaDb {
    fn protocol(&self) -> Protocol {
        Protocol::Mysql
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

/// Stop the server (or template build) a killed test process left running
/// in `dir`.
pub fn stop_leftover(dir: &Path) {
    let pid = std::fs::read_to_string(dir.join("pid")).unwrap_or_default();
    kill_if_running(pid.trim(), "mariadbd");
}
