//! Checking a log's hash chain: `jitgate audit verify`.
//!
//! Reads the file line by line from the start and reports the first line
//! whose `prev` is not the hash of the line before it, and every line a
//! crash cut short that the next start sealed (see `recover`), which are
//! incomplete but not evidence of editing.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::AuditError;
use super::line::{PREV_OPENING, ZERO_HASH, hex64};
use super::recover::RECOVERED_EVENT;

/// Result of checking a log's hash chain.
#[derive(Debug)]
pub struct VerifyReport {
    /// Lines read: all of them when the chain is intact, otherwise up to and
    /// including the line that revealed the first bad one.
    pub lines: u64,
    /// 1-based number of the first line whose `prev` does not match, with why.
    ///
    /// When line *k*'s content is edited, the line reported is *k + 1*: line
    /// *k* still parses, but the next line's `prev` no longer matches its hash
    /// (the message names line *k*). An edit to line *k*'s own `prev`, a line
    /// that is not JSON, or removed lines are reported at the line itself.
    pub first_bad: Option<(u64, String)>,
    /// Lines a crash cut short (see [`AuditLog::open`](super::AuditLog::open)): each one begins with
    /// the right `prev` and is either the unterminated last line or followed by
    /// an `audit_log_recovered` record that chains from it. They are not
    /// evidence of editing, but their record is incomplete: show them.
    pub torn_lines: Vec<u64>,
}

impl VerifyReport {
    /// The chain is intact (torn lines are reported separately).
    pub fn is_ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// Check the hash chain of the log at `path`, reading it line by line.
pub fn verify(path: &Path) -> Result<VerifyReport, AuditError> {
    let file = File::open(path).map_err(AuditError::io(path, "open"))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut report = VerifyReport {
        lines: 0,
        first_bad: None,
        torn_lines: Vec::new(),
    };
    let mut prev = ZERO_HASH;
    // A non-JSON line that may be a sealed torn line, if a recovery record follows.
    let mut torn_awaiting_recovery: Option<u64> = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(AuditError::io(path, "read"))?;
        if read == 0 {
            break;
        }
        report.lines += 1;
        let number = report.lines;
        let terminated = line.last() == Some(&b'\n');
        if terminated {
            line.pop();
        }
        let checked = check_line(&line, &prev, number);
        if let Some(torn) = torn_awaiting_recovery.take() {
            if !matches!(checked, Checked::Record { recovery: true }) {
                report.first_bad = Some((torn, NOT_JSON.to_owned()));
                return Ok(report);
            }
            report.torn_lines.push(torn);
        }
        match checked {
            Checked::Record { .. } => {}
            Checked::MaybeTorn if terminated => torn_awaiting_recovery = Some(number),
            // Unterminated, so the last line: jitgate has not restarted since.
            Checked::MaybeTorn => report.torn_lines.push(number),
            Checked::Bad(why) => {
                report.first_bad = Some((number, why));
                return Ok(report);
            }
        }
        prev = Sha256::digest(&line).into();
    }
    if let Some(torn) = torn_awaiting_recovery {
        report.first_bad = Some((torn, NOT_JSON.to_owned()));
    }
    Ok(report)
}

const NOT_JSON: &str =
    "not valid JSON (nor a line cut short by a crash and sealed at the next start)";

/// What one line is, judged against the hash of the line before it.
enum Checked {
    Record {
        recovery: bool,
    },
    /// Not JSON, but a prefix of a line chained to the previous one.
    MaybeTorn,
    Bad(String),
}

/// Judge `line` (line `number`, without its newline) against `prev`, the
/// hash of the line before it.
fn check_line(line: &[u8], prev: &[u8; 32], number: u64) -> Checked {
    let expected_hex = hex64(prev);
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
        let mut opening = PREV_OPENING.to_vec();
        opening.extend_from_slice(&expected_hex);
        opening.push(b'"');
        return if line.starts_with(&opening) || opening.starts_with(line) {
            Checked::MaybeTorn
        } else {
            Checked::Bad(NOT_JSON.to_owned())
        };
    };
    let Some(object) = value.as_object() else {
        return Checked::Bad("not a JSON object".to_owned());
    };
    let Some(line_prev) = object.get("prev").and_then(|p| p.as_str()) else {
        return Checked::Bad("has no \"prev\" field".to_owned());
    };
    if line_prev.as_bytes() != expected_hex {
        return Checked::Bad(if number == 1 {
            "prev is not 64 zeros although this is the first line (the start of the log was removed)"
                .to_owned()
        } else {
            format!(
                "prev does not match the hash of line {} (that line was edited, or lines were removed or reordered here)",
                number - 1
            )
        });
    }
    Checked::Record {
        recovery: object.get("event").and_then(|e| e.as_str()) == Some(RECOVERED_EVENT),
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::path::Path;

    use super::verify;
    use crate::audit::AuditLog;
    use crate::audit::test_support::{
        LAZY, config, lines_of, log_with_five_lines, record_statements,
    };

    fn write_lines(path: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).unwrap();
    }

    fn first_bad(path: &Path) -> (u64, String) {
        verify(path).unwrap().first_bad.expect("verify should fail")
    }

    #[tokio::test]
    async fn chain_of_records_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&config(&path, LAZY)).unwrap();
        record_statements(&log, 1, 100);
        assert_eq!(log.path(), path);
        let report = verify(&path).unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.lines, 100);
        assert!(report.torn_lines.is_empty());
    }

    #[tokio::test]
    async fn editing_a_byte_of_line_3_is_caught_at_line_4() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with_five_lines(&dir);
        let mut lines = lines_of(&path);
        lines[2] = lines[2].replace("id = 3", "id = 4");
        write_lines(&path, &lines);
        let (line, why) = first_bad(&path);
        assert_eq!(
            line, 4,
            "line 3 still parses; line 4's prev no longer matches it"
        );
        assert!(why.contains("hash of line 3"), "{why}");
    }

    #[tokio::test]
    async fn editing_the_prev_of_line_3_is_caught_at_line_3() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with_five_lines(&dir);
        let mut lines = lines_of(&path);
        let flipped = if lines[2].as_bytes()[9] == b'a' {
            "b"
        } else {
            "a"
        };
        lines[2].replace_range(9..10, flipped);
        write_lines(&path, &lines);
        let (line, why) = first_bad(&path);
        assert_eq!(line, 3);
        assert!(why.contains("hash of line 2"), "{why}");
    }

    #[tokio::test]
    async fn deleting_line_3_is_caught_at_the_line_that_follows_the_gap() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with_five_lines(&dir);
        let mut lines = lines_of(&path);
        lines.remove(2);
        write_lines(&path, &lines);
        let (line, why) = first_bad(&path);
        assert_eq!(
            line, 3,
            "old line 4, now line 3, chains to a line that is gone"
        );
        assert!(why.contains("hash of line 2"), "{why}");
    }

    #[tokio::test]
    async fn deleting_the_first_line_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with_five_lines(&dir);
        let mut lines = lines_of(&path);
        lines.remove(0);
        write_lines(&path, &lines);
        let (line, why) = first_bad(&path);
        assert_eq!(line, 1);
        assert!(why.contains("first line"), "{why}");
    }

    #[tokio::test]
    async fn swapping_two_lines_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with_five_lines(&dir);
        let mut lines = lines_of(&path);
        lines.swap(1, 2);
        write_lines(&path, &lines);
        assert_eq!(first_bad(&path).0, 2);
    }

    #[tokio::test]
    async fn a_line_that_is_not_json_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with_five_lines(&dir);
        let mut lines = lines_of(&path);
        lines.insert(2, "nothing to see here".to_owned());
        write_lines(&path, &lines);
        let (line, why) = first_bad(&path);
        assert_eq!(line, 3);
        assert!(why.contains("not valid JSON"), "{why}");
    }

    #[tokio::test]
    async fn a_cut_line_without_a_recovery_record_is_caught() {
        // Looks like a torn line (right prev), but nothing sealed it: someone
        // cut a record short in the middle of the log.
        let dir = tempfile::tempdir().unwrap();
        let path = log_with_five_lines(&dir);
        let mut lines = lines_of(&path);
        let cut = lines[2].len() - 10;
        lines[2].truncate(cut);
        write_lines(&path, &lines);
        let (line, why) = first_bad(&path);
        assert_eq!(line, 3);
        assert!(why.contains("not valid JSON"), "{why}");
    }

    #[tokio::test]
    async fn a_torn_line_that_does_not_chain_to_its_predecessor_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with_five_lines(&dir);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        // Line 6's prev would be the hash of line 5, not zeros.
        file.write_all(br#"{"prev":"0000"#).unwrap();
        drop(file);
        let (line, why) = first_bad(&path);
        assert_eq!(line, 6);
        assert!(why.contains("not valid JSON"), "{why}");
    }

    #[test]
    fn verify_of_an_empty_log_is_ok() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let report = verify(file.path()).unwrap();
        assert!(report.is_ok());
        assert_eq!(report.lines, 0);
    }

    #[test]
    fn verify_of_a_missing_file_says_which_file() {
        let err = verify(Path::new("/nonexistent/audit.log")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/audit.log"), "{err}");
    }
}
