//! The data directory every throwaway MariaDB starts from, built once per
//! test process: `mariadb-install-db` and the accounts take seconds, a copy
//! of the ready directory a fraction of one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::super::process::{random_hex, run_checked};
use super::super::scratch::{owned_tempdir, server_root};
use super::{hand_to_mysql, server_command};

/// Settings shared by the template build and every test server.
pub const SERVER_ARGS: [&str; 7] = [
    "--no-defaults",
    "--innodb-log-file-size=4M",
    "--innodb-buffer-pool-size=16M",
    "--skip-log-bin",
    "--skip-name-resolve",
    "--max-connections=100",
    "--max-allowed-packet=64M",
];

/// The template's name prefix; it falls under the servers' own (see
/// [`super::DIR_PREFIX`]), so the same sweep removes a dead process's.
const TEMPLATE_PREFIX: &str = "jitgate-test-mariadb-template-";

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

pub struct Template {
    _dir: TempDir,
    pub data: PathBuf,
    pub read_password: String,
    pub write_password: String,
}

/// Wait (up to 30 s) until the server answers as root on its socket.
pub fn wait_for_socket(sock: &Path, log: &Path) {
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

/// The data directory every server copies: built once per test process.
pub fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = owned_tempdir(server_root(), TEMPLATE_PREFIX);
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
