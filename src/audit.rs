//! The audit log: one JSON object per line, hash-chained.
//!
//! (Interface first; the writer, fsync policy and `verify` are filled in next.)

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::AuditConfig;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("audit log is unavailable after an earlier write error; refusing to continue")]
    Poisoned,
}

/// One audit record. `time` and `prev` are added by the writer.
#[derive(Debug, Default, Serialize)]
pub struct AuditEvent<'a> {
    pub event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<&'a str>,
    /// Statement sequence number within the session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<&'a str>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_rfc3339"
    )]
    pub expires_at: Option<SystemTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
}

fn opt_rfc3339<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
        None => s.serialize_none(),
    }
}

impl<'a> AuditEvent<'a> {
    pub fn new(event: &'a str) -> Self {
        AuditEvent {
            event,
            ..Default::default()
        }
    }
}

pub struct AuditLog {}

impl AuditLog {
    /// Open (or create) the log at `cfg.path`, continuing the chain of what is there.
    /// Starts the group-fsync task, so it must be called inside a tokio runtime.
    pub fn open(_cfg: &AuditConfig) -> Result<Arc<AuditLog>, AuditError> {
        todo!()
    }

    /// Write one record. When this returns `Ok`, the line has been written to
    /// the file (and fsynced, with `fsync = "always"`).
    pub fn record(&self, _event: &AuditEvent<'_>) -> Result<(), AuditError> {
        todo!()
    }
}

/// Result of checking a log's hash chain.
#[derive(Debug)]
pub struct VerifyReport {
    pub lines: u64,
    /// 1-based number of the first line whose `prev` does not match, with why.
    pub first_bad: Option<(u64, String)>,
}

pub fn verify(_path: &Path) -> Result<VerifyReport, AuditError> {
    todo!()
}
