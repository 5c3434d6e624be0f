//! What the audit module's tests share: a log in a temporary directory,
//! filled with statements, and read back line by line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{AuditEvent, AuditLog};
use crate::config::{AuditConfig, FsyncPolicy};

pub(super) fn config(path: &Path, fsync: FsyncPolicy) -> AuditConfig {
    AuditConfig {
        path: path.to_owned(),
        fsync,
    }
}

/// Long enough that the background fsync never runs during a test unless awaited.
pub(super) const LAZY: FsyncPolicy = FsyncPolicy::Interval(Duration::from_secs(3600));

pub(super) fn record_statements(log: &AuditLog, from: u64, count: u64) {
    for seq in from..from + count {
        let statement = format!("SELECT * FROM accounts WHERE id = {seq}");
        log.record(&AuditEvent {
            session: Some("s-1"),
            identity: Some("alice"),
            target: Some("prod-pg"),
            seq: Some(seq),
            statement: Some(&statement),
            kind: Some("read"),
            ..AuditEvent::new("statement")
        })
        .expect("record");
    }
}

pub(super) fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub(super) fn log_with_five_lines(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&config(&path, LAZY)).unwrap();
    record_statements(&log, 1, 5);
    path
}
