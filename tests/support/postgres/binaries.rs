//! Where the PostgreSQL server binaries are, and how to run them: as the
//! `postgres` account when the tests run as root, with none of the
//! caller's `PG*` settings.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::super::process::{command_as, give_to};

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
pub fn pg_command(program: &str) -> Command {
    let mut cmd = command_as("postgres", pg_bindir().join(program));
    for var in ["PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGDATABASE"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Give `path` (recursively) to the `postgres` user when we are root.
pub fn hand_to_postgres(path: &Path) {
    give_to("postgres", path);
}
