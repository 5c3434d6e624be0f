//! The audit log: one JSON object per line, hash-chained.
//!
//! Every line starts with `{"prev":"<sha256 hex>","time":"<RFC 3339 UTC>",`
//! followed by the [`AuditEvent`] fields. `prev` is the SHA-256 of the
//! previous line's bytes (without its newline), and 64 zeros on the first
//! line, so [`verify`](fn@verify) finds any line that was edited, removed or
//! reordered after it was written. (The chain has no key: someone who can
//! rewrite the whole file can recompute it. Ship the log off the host to
//! defend against that.)
//!
//! Why it is shaped this way:
//!
//! * **Fail closed.** [`AuditLog::record`] returns only after the line was
//!   handed to the kernel with one `write(2)`, so a statement forwarded after
//!   `Ok` keeps its record even if the proxy is killed with SIGKILL. If a write
//!   or an fsync fails, the log is poisoned: that record and every later one
//!   return an error, and callers refuse to forward statements.
//! * **Group fsync.** With `fsync = "always"` each record is fsynced before
//!   `record` returns; otherwise a background task fsyncs at most one interval
//!   after a record was written, which bounds what a power loss can take.
//! * **A crash mid-line is kept, sealed and reported, never erased.** See
//!   [`AuditLog::open`].
//! * **Secrets stay out of errors.** Error messages name the file and the I/O
//!   error, never the record (statements may hold sensitive data).
//!
//! One idea a file:
//!
//! * `record`: what a record holds ([`AuditEvent`], [`SessionMembers`]);
//! * `json`: a record's members written as JSON, by hand, for speed;
//! * `line`: a record as a line of the file, and the hash that chains it;
//! * `file`: opening the file (owner-only, locked against a second writer);
//! * `recover`: where an existing file's chain ends, and a line a crash cut short;
//! * `writer`: [`AuditLog`], which seals records into the chain, writes
//!   them and fsyncs them in groups;
//! * `orphans`: sessions the previous process left open;
//! * `verify`: checking a log's chain.

use std::path::{Path, PathBuf};

mod file;
mod json;
mod line;
mod orphans;
mod record;
mod recover;
#[cfg(test)]
mod test_support;
mod verify;
mod writer;

pub(crate) use record::client_name;
pub use record::{AuditEvent, SessionMembers};
pub use verify::{VerifyReport, verify};
pub use writer::AuditLog;
pub(crate) use writer::Sealed;

/// Why the log could not be opened, read or written: the file and the
/// I/O error, never the record.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: cannot {action}: {source}")]
    Io {
        path: PathBuf,
        /// What jitgate was doing: "open", "read", "write", "fsync", ...
        action: &'static str,
        source: std::io::Error,
    },
    #[error(
        "audit log {0} is locked by another process; is another jitgate running with the same audit.path?"
    )]
    Locked(PathBuf),
    #[error(
        "audit log is unavailable after an earlier write error; refusing to continue (see the earlier error, fix its cause and restart jitgate)"
    )]
    Poisoned,
}

impl AuditError {
    /// For `map_err`: an I/O error while doing `action` ("open", "read",
    /// ...) to the log at `path`.
    fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> AuditError {
        move |source| AuditError::Io {
            path: path.to_owned(),
            action,
            source,
        }
    }
}
