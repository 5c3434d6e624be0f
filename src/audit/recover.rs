//! Where an existing log's chain ends, and what becomes of a line a crash
//! cut short.
//!
//! Opening a log continues its chain from the hash of its last line, found
//! by reading backwards from the end so that a start costs about one line's
//! worth of reading however long the log is. A last line without its
//! newline was cut short (power loss, a full disk, a kill in the middle of a
//! large write): it is kept byte for byte, never truncated, and sealed with
//! the missing newline and a [`RECOVERED_EVENT`] record that chains from it.
//! `verify` accepts a line that is not JSON only in that shape.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::line::{ZERO_HASH, encode_line, seal_line};
use super::{AuditError, AuditEvent};

/// The `event` of the record [`AuditLog::open`](super::AuditLog::open) writes right after sealing a
/// line that a crash cut short.
pub(crate) const RECOVERED_EVENT: &str = "audit_log_recovered";

/// The hash the next line's `prev` must hold: that of the last line of the
/// `len` bytes of `file`, or of the recovery record that now follows it if
/// that line was cut short.
pub(super) fn chain_end(file: &mut File, path: &Path, len: u64) -> Result<[u8; 32], AuditError> {
    let tail = find_tail(file, len).map_err(AuditError::io(path, "read"))?;
    match tail.torn {
        Some(torn) => seal_torn_line(file, path, torn, tail.last_hash),
        None => Ok(tail.last_hash),
    }
}

/// The end of an existing log.
struct Tail {
    /// Hash of the last line (zeros for an empty file).
    last_hash: [u8; 32],
    /// Set when the last line has no newline: where it starts, and its length.
    torn: Option<(u64, u64)>,
}

/// Find the last line by reading backwards from the end, so that opening a
/// log of any size costs about one line's worth of reading.
fn find_tail(file: &mut File, len: u64) -> std::io::Result<Tail> {
    const CHUNK: u64 = 64 * 1024;
    if len == 0 {
        return Ok(Tail {
            last_hash: ZERO_HASH,
            torn: None,
        });
    }
    let mut last_byte = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last_byte)?;
    let terminated = last_byte[0] == b'\n';
    let end = if terminated { len - 1 } else { len };

    let mut chunk = vec![0u8; CHUNK as usize];
    let mut start = 0;
    let mut pos = end;
    while pos > 0 {
        let n = pos.min(CHUNK);
        pos -= n;
        let buf = &mut chunk[..n as usize];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(buf)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            start = pos + i as u64 + 1;
            break;
        }
    }

    file.seek(SeekFrom::Start(start))?;
    let mut hasher = Sha256::new();
    let mut line = file.take(end - start);
    loop {
        let n = line.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        hasher.update(&chunk[..n]);
    }
    Ok(Tail {
        last_hash: hasher.finalize().into(),
        torn: (!terminated).then_some((start, end - start)),
    })
}

/// End a line a crash cut short and chain a recovery record onto it, in one
/// write, fsynced. Returns the recovery record's hash.
fn seal_torn_line(
    file: &mut File,
    path: &Path,
    (offset, bytes): (u64, u64),
    torn_hash: [u8; 32],
) -> Result<[u8; 32], AuditError> {
    tracing::warn!(
        path = %path.display(),
        offset,
        bytes,
        "the audit log ends in the middle of a line (jitgate stopped while writing it); \
         keeping that line and marking it with an audit_log_recovered record"
    );
    let detail = format!(
        "the previous line (at byte offset {offset}, {bytes} bytes) was cut short when jitgate \
         stopped while writing it; it is kept as it was, and this record chains from it"
    );
    let mut line = b"\n".to_vec();
    let mut record = Vec::new();
    encode_line(
        &mut record,
        &AuditEvent {
            detail: Some(&detail),
            ..AuditEvent::new(RECOVERED_EVENT)
        },
        SystemTime::now(),
    );
    let hash = seal_line(&mut record, &torn_hash);
    line.extend_from_slice(&record);
    file.write_all(&line)
        .map_err(AuditError::io(path, "write"))?;
    file.sync_data().map_err(AuditError::io(path, "fsync"))?;
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use sha2::{Digest, Sha256};

    use super::RECOVERED_EVENT;
    use crate::audit::test_support::{
        LAZY, config, lines_of, log_with_five_lines, record_statements,
    };
    use crate::audit::{AuditLog, verify};

    #[tokio::test]
    async fn reopening_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        for run in 0..3 {
            let log = AuditLog::open(&config(&path, LAZY)).unwrap();
            record_statements(&log, run * 10, 10);
        }
        let report = verify(&path).unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.lines, 30);
    }

    #[tokio::test]
    async fn a_torn_last_line_is_kept_sealed_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with_five_lines(&dir);
        // A crash in the middle of writing line 5.
        let len = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 25).unwrap();
        drop(file);
        let torn = lines_of(&path)[4].clone();

        let before_restart = verify(&path).unwrap();
        assert!(before_restart.is_ok(), "{before_restart:?}");
        assert_eq!(before_restart.torn_lines, vec![5]);

        let log = AuditLog::open(&config(&path, LAZY)).unwrap();
        record_statements(&log, 6, 2);
        drop(log);

        let lines = lines_of(&path);
        assert_eq!(lines.len(), 8);
        assert_eq!(lines[4], torn, "the torn line is kept byte for byte");
        let recovered: serde_json::Value = serde_json::from_str(&lines[5]).unwrap();
        assert_eq!(recovered["event"], RECOVERED_EVENT);
        assert!(recovered["detail"].as_str().unwrap().contains("cut short"));

        let report = verify(&path).unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.lines, 8);
        assert_eq!(report.torn_lines, vec![5]);
    }

    #[tokio::test]
    async fn a_line_torn_inside_its_prev_is_still_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&config(&path, LAZY)).unwrap();
        record_statements(&log, 1, 1);
        drop(log);
        let first_hash = hex::encode(Sha256::digest(lines_of(&path)[0].as_bytes()));
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        write!(file, r#"{{"prev":"{}"#, &first_hash[..5]).unwrap();
        drop(file);

        let log = AuditLog::open(&config(&path, LAZY)).unwrap();
        record_statements(&log, 2, 1);
        drop(log);
        let report = verify(&path).unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.torn_lines, vec![2]);
        assert_eq!(report.lines, 4);
    }
}
