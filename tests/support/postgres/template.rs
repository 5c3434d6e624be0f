//! The data directory every throwaway PostgreSQL starts from: initdb and
//! CREATE DATABASE take seconds, a copy of a ready directory a fraction of
//! one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tempfile::TempDir;

use super::super::process::{free_port, random_hex, run_checked};
use super::binaries::{hand_to_postgres, pg_bindir, pg_command};

/// The roles, database and rows every test server starts with (passwords are
/// set per server, see [`super::PgServer::start`]). Each entry runs on its own:
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
/// server. It is cached under cargo's target tmp dir, keyed by the server
/// version and [`TEMPLATE_SETUP`]'s revision, so later test processes (and
/// nextest's one-process-per-test) reuse it; it is built in a private
/// directory and renamed into place, so concurrent processes never see half
/// of it.
pub fn template_data_dir() -> &'static Path {
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
        let data = build_template();
        let staging = cache_root.join(format!(
            "pg-template-staging-{}-{}",
            std::process::id(),
            random_hex(4)
        ));
        run_checked(
            Command::new("cp")
                .arg("-a")
                .arg(data.path().join("data"))
                .arg(&staging),
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

/// initdb, then [`TEMPLATE_SETUP`] on a server of its own that is stopped
/// again; the data directory is `data` in the returned scratch directory.
/// The server runs as postgres, which may not be able to enter the target
/// directory, so it is built in /tmp and copied.
fn build_template() -> TempDir {
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
    scratch
}
