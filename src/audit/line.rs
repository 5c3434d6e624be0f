//! A record as a line of the file, and the hash that chains it to the
//! line before.
//!
//! A line is `{"prev":"<64 hex digits>","time":"<RFC 3339>",<members>}` and a
//! newline. It is encoded with `prev` left as zeros, outside any lock, and
//! sealed under the writers' lock, where the previous line's hash is known:
//! [`seal_line`] writes that hash into `prev` and returns the line's own.

use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::AuditEvent;
use super::json;

/// Every line starts with this, then the 64 hex digits of `prev`.
pub(super) const PREV_OPENING: &[u8] = br#"{"prev":""#;
const PREV_HEX: std::ops::Range<usize> = PREV_OPENING.len()..PREV_OPENING.len() + 64;
/// The `prev` of the first line.
pub(super) const ZERO_HASH: [u8; 32] = [0; 32];

/// Fill `line` with `{"prev":"<zeros>","time":"…",<event fields>}\n`.
/// [`seal_line`] fills in `prev` later, under the lock.
pub(super) fn encode_line(line: &mut Vec<u8>, event: &AuditEvent<'_>, time: SystemTime) {
    line.clear();
    line.extend_from_slice(PREV_OPENING);
    line.extend_from_slice(&[b'0'; 64]);
    line.extend_from_slice(br#"","time":""#);
    json::push_rfc3339_millis(line, time);
    line.extend_from_slice(b"\",");
    event.write_members(line);
    line.extend_from_slice(b"}\n");
}

/// Write `prev` into an encoded line and return the line's own hash (of its
/// bytes without the newline).
pub(super) fn seal_line(line: &mut [u8], prev: &[u8; 32]) -> [u8; 32] {
    line[PREV_HEX].copy_from_slice(&hex64(prev));
    let without_newline = line.strip_suffix(b"\n").unwrap_or(line);
    Sha256::digest(without_newline).into()
}

/// `hash` in lower-case hex, as `prev` holds it.
pub(super) fn hex64(hash: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, byte) in hash.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(byte >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(byte & 0xf)];
    }
    out
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use crate::audit::test_support::{LAZY, config, lines_of, record_statements};
    use crate::audit::{AuditEvent, AuditLog, verify};

    #[tokio::test]
    async fn line_format_is_prev_then_time_then_event_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&config(&path, LAZY)).unwrap();
        record_statements(&log, 1, 2);
        let lines = lines_of(&path);
        let zeros = "0".repeat(64);
        assert!(lines[0].starts_with(&format!(r#"{{"prev":"{zeros}","time":""#)));
        let second_prev = hex::encode(Sha256::digest(lines[0].as_bytes()));
        assert!(lines[1].starts_with(&format!(r#"{{"prev":"{second_prev}","time":""#)));

        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let time = first["time"].as_str().unwrap();
        assert!(time.ends_with('Z') && time.len() == "2024-01-01T00:00:00.000Z".len());
        humantime::parse_rfc3339(time).unwrap();
        assert_eq!(first["event"], "statement");
        assert_eq!(first["seq"], 1);
        assert_eq!(first["statement"], "SELECT * FROM accounts WHERE id = 1");
        assert!(first.get("grant").is_none(), "absent fields are left out");
    }

    #[tokio::test]
    async fn statements_with_newlines_and_quotes_stay_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&config(&path, LAZY)).unwrap();
        let statement = "SELECT 1;\n-- \"quoted\"\r\n\u{2028}SELECT '\\'";
        log.record(&AuditEvent {
            statement: Some(statement),
            ..AuditEvent::new("statement")
        })
        .unwrap();
        let lines = lines_of(&path);
        assert_eq!(lines.len(), 1);
        let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line["statement"], statement);
        assert!(verify(&path).unwrap().is_ok());
    }
}
