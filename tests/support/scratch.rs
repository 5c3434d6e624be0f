//! The directories test servers and proxies live in, and the sweep of
//! those that killed test processes left behind.
//!
//! `Drop` stops every server when a test panics, but not when the test
//! process is SIGKILLed (a CI timeout, say). So each directory holds
//! `owner.pid`, the id of the test process that made it; once per process,
//! the kit stops what still runs in the directories of dead owners and
//! removes them, so they do not pile up (in `/dev/shm`, they hold memory).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tempfile::TempDir;

use super::process::pid_alive;
use super::{jitgate, mariadb, pgbouncer, postgres};

/// Where test servers keep their data directories.
///
/// `JITGATE_TEST_TMPDIR` wins. Otherwise `/dev/shm` when it is a tmpfs with at
/// least 1 GiB free: a data directory is some 1300 files, and creating them on
/// a slow virtual disk takes seconds per server, in memory a tenth of that.
/// Otherwise the system temp dir.
pub fn server_root() -> &'static Path {
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

/// A temp dir named `prefix…` holding `owner.pid`, this process's id, so a
/// later run can tell whether the test that made it is still alive.
pub fn owned_tempdir(root: &Path, prefix: &str) -> TempDir {
    sweep_leftovers();
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(root)
        .unwrap_or_else(|e| panic!("cannot make a temp dir in {root:?}: {e}"));
    std::fs::write(dir.path().join("owner.pid"), std::process::id().to_string())
        .expect("write owner.pid");
    dir
}

/// A kind of directory the kit makes: its name prefix, and how to stop
/// what may still run in one.
struct Kind {
    prefix: &'static str,
    stop: fn(&Path),
}

const KINDS: [Kind; 4] = [
    Kind {
        prefix: postgres::DIR_PREFIX,
        stop: postgres::stop_leftover,
    },
    Kind {
        prefix: mariadb::DIR_PREFIX,
        stop: mariadb::stop_leftover,
    },
    Kind {
        prefix: jitgate::DIR_PREFIX,
        stop: jitgate::stop_leftover,
    },
    Kind {
        prefix: pgbouncer::DIR_PREFIX,
        stop: pgbouncer::stop_leftover,
    },
];

/// Once per process: stop what runs in the directories of test processes
/// that are gone, and remove those directories.
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
                let Some(kind) = KINDS.iter().find(|k| name.starts_with(k.prefix)) else {
                    continue;
                };
                let dir = entry.path();
                let owner = std::fs::read_to_string(dir.join("owner.pid")).unwrap_or_default();
                if pid_alive(owner.trim()) {
                    continue;
                }
                (kind.stop)(&dir);
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    });
}
