//! Processes and free ports: the small pieces every throwaway server and
//! every jitgate the kit starts is made of — a port nobody else is handed,
//! a command run as the server's own account when the tests run as root,
//! and a command that must succeed.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

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

/// `bytes` random bytes as lowercase hex (passwords, unique names).
pub fn random_hex(bytes: usize) -> String {
    let raw: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(raw)
}

/// Run a command to completion; panic with its output if it fails.
pub fn run_checked(cmd: &mut Command, what: &str) -> String {
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

pub fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// `program` run as `account` when we are root (database servers refuse to
/// run as root), in `/`, which that account may enter when the test's
/// working directory is closed to it.
pub fn command_as(account: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", account, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.current_dir("/");
    cmd
}

/// Give `path` (recursively) to `account` when we are root.
pub fn give_to(account: &str, path: &Path) {
    if running_as_root() {
        run_checked(
            Command::new("chown")
                .args(["-R", &format!("{account}:{account}")])
                .arg(path),
            &format!("chown to {account}"),
        );
    }
}

/// Is process `pid` (as text, from a pid file) alive?
pub fn pid_alive(pid: &str) -> bool {
    !pid.is_empty() && Path::new("/proc").join(pid).exists()
}

/// SIGKILL process `pid` if it is alive and its command line contains
/// `program` (a pid file may outlive its process, and the pid be reused).
pub fn kill_if_running(pid: &str, program: &str) {
    let cmdline = std::fs::read(Path::new("/proc").join(pid).join("cmdline")).unwrap_or_default();
    if pid_alive(pid) && String::from_utf8_lossy(&cmdline).contains(program) {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
}

/// A directory with a `program` that writes its arguments and environment
/// to a file (the second value) and then runs the real one.
pub fn recording_wrapper(program: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let real = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap();
    let real = String::from_utf8_lossy(&real.stdout).trim().to_owned();
    let script = dir.path().join(program);
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" > '{seen}'\nenv >> '{seen}'\nexec '{real}' \"$@\"\n",
            seen = seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, seen)
}
