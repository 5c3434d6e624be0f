//! What was run under one grant, read back from the audit log.
//!
//! The log is the record (see `audit`); this reads it, never writes it. A
//! grant's statements are its `statement` and `statement_refused` lines,
//! completed by the `statement_end` line of the same session and sequence
//! number (outcome, rows, duration). Lines are in time order, so a grant
//! whose start is known is found by a binary search on the lines' `time`
//! rather than a read of the whole file, and only the lines that name the
//! grant are parsed. Only the newest `page × PER_PAGE` rows are held at once.
//!
//! Each proxy writes its own log: a fleet's page lists what this proxy saw.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// Statements on one page.
pub(super) const PER_PAGE: usize = 50;
/// The deepest page offered (10 000 statements back).
pub(super) const MAX_PAGE: usize = 200;
/// Lines of the log may be written this long after the grant's start and
/// still have a time before it (clock steps, a queued record).
const START_MARGIN: Duration = Duration::from_secs(60);
/// The binary search stops when the range is this small, and reads this
/// much to find a line's start.
const PROBE_BYTES: u64 = 64 * 1024;

/// One statement as the page shows it.
pub(super) struct StatementRow {
    pub(super) time: String,
    session: Option<String>,
    seq: Option<u64>,
    pub(super) statement: String,
    pub(super) kind: String,
    pub(super) refused: bool,
    pub(super) reason: Option<String>,
    pub(super) outcome: Option<String>,
    pub(super) rows: Option<u64>,
    pub(super) duration_ms: Option<f64>,
}

pub(super) struct StatementPage {
    /// Newest first.
    pub(super) rows: Vec<StatementRow>,
    /// Statements of the grant in the log.
    pub(super) total: usize,
    /// Older statements than this page's exist.
    pub(super) more: bool,
}

/// The members of a line this reads.
#[derive(Deserialize)]
struct Line {
    time: String,
    event: String,
    session: Option<String>,
    seq: Option<u64>,
    statement: Option<String>,
    kind: Option<String>,
    reason: Option<String>,
    detail: Option<String>,
    outcome: Option<String>,
    rows: Option<u64>,
    duration_ms: Option<f64>,
}

/// Page `page` (from 1) of the statements of `grant` in the log at `path`,
/// newest first; `since`, when known, is the grant's start.
pub(super) fn for_grant(
    path: &Path,
    grant: &str,
    page: usize,
    since: Option<SystemTime>,
) -> io::Result<StatementPage> {
    let page = page.clamp(1, MAX_PAGE);
    let file = File::open(path)?;
    let start = match since.and_then(|t| t.checked_sub(START_MARGIN)) {
        Some(t) => offset_before(&file, t)?,
        None => 0,
    };
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    reader.seek(SeekFrom::Start(start))?;
    let mut line = Vec::new();
    if start > 0 {
        // Mid-line: the first full line starts after the next newline.
        reader.read_until(b'\n', &mut line)?;
    }
    let needle = format!("\"grant\":\"{grant}\"");
    let finder = memchr::memmem::Finder::new(needle.as_bytes());
    let keep = page * PER_PAGE;
    let mut recent: VecDeque<StatementRow> = VecDeque::with_capacity(keep + 1);
    let mut total = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 || line.last() != Some(&b'\n') {
            // The end, or a line still being written.
            break;
        }
        if finder.find(&line).is_none() {
            continue;
        }
        let Ok(l) = serde_json::from_slice::<Line>(&line) else {
            continue;
        };
        match l.event.as_str() {
            "statement" | "statement_refused" => {
                total += 1;
                recent.push_back(StatementRow {
                    refused: l.event == "statement_refused",
                    time: l.time,
                    session: l.session,
                    seq: l.seq,
                    statement: l.statement.unwrap_or_default(),
                    kind: l.kind.unwrap_or_default(),
                    reason: l.reason.or(l.detail),
                    outcome: None,
                    rows: None,
                    duration_ms: None,
                });
                if recent.len() > keep {
                    recent.pop_front();
                }
            }
            "statement_end" if l.seq.is_some() => {
                // Its statement is one of the last few of its session.
                if let Some(row) = recent
                    .iter_mut()
                    .rev()
                    .take(1024)
                    .find(|r| r.session == l.session && r.seq == l.seq)
                {
                    row.outcome = l.outcome;
                    row.rows = l.rows;
                    row.duration_ms = l.duration_ms;
                }
            }
            _ => {}
        }
    }
    let rows = recent
        .into_iter()
        .rev()
        .skip((page - 1) * PER_PAGE)
        .take(PER_PAGE)
        .collect();
    Ok(StatementPage {
        rows,
        total,
        more: total > page * PER_PAGE,
    })
}

/// An offset in the log at or before the first line written at or after
/// `at` (a binary search on the lines' `time`; 0 when unsure).
fn offset_before(file: &File, at: SystemTime) -> io::Result<u64> {
    let (mut lo, mut hi) = (0, file.metadata()?.len());
    let mut probe = vec![0; PROBE_BYTES as usize];
    while hi - lo > PROBE_BYTES {
        let mid = lo + (hi - lo) / 2;
        let n = file.read_at(&mut probe, mid)?;
        match first_line_time(&probe[..n]) {
            Some(t) if t < at => lo = mid,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

/// The `time` of the first whole line in `bytes`, which starts mid-line.
fn first_line_time(bytes: &[u8]) -> Option<SystemTime> {
    let start = memchr::memchr(b'\n', bytes)? + 1;
    let rest = &bytes[start..];
    let key = b"\"time\":\"";
    let at = memchr::memmem::find(&rest[..rest.len().min(160)], key)? + key.len();
    let end = memchr::memchr(b'"', &rest[at..])? + at;
    humantime::parse_rfc3339(std::str::from_utf8(&rest[at..end]).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, AuditLog};

    fn statement<'a>(grant: &'a str, seq: u64, sql: &'a str) -> AuditEvent<'a> {
        AuditEvent {
            session: Some("s_1"),
            grant: Some(grant),
            seq: Some(seq),
            statement: Some(sql),
            kind: Some("read"),
            ..AuditEvent::new("statement")
        }
    }

    #[tokio::test]
    async fn a_grants_statements_come_newest_first_in_pages_with_their_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&crate::config::AuditConfig {
            path: path.clone(),
            fsync: crate::config::FsyncPolicy::Interval(Duration::from_millis(100)),
        })
        .unwrap();
        let padding = "x".repeat(600);
        for seq in 1..=120 {
            let sql = format!("SELECT {seq}");
            log.record(&statement("g_a", seq, &sql)).unwrap();
            log.record(&statement("g_other", seq, &padding)).unwrap();
            log.record(&AuditEvent {
                session: Some("s_1"),
                grant: Some("g_a"),
                seq: Some(seq),
                outcome: Some("SELECT 1"),
                rows: Some(1),
                duration_ms: Some(0.5),
                ..AuditEvent::new("statement_end")
            })
            .unwrap();
        }
        log.record(&AuditEvent {
            session: Some("s_1"),
            grant: Some("g_a"),
            statement: Some("DELETE FROM t"),
            kind: Some("write"),
            reason: Some("read_only"),
            ..AuditEvent::new("statement_refused")
        })
        .unwrap();
        drop(log);

        let first = for_grant(&path, "g_a", 1, None).unwrap();
        assert_eq!(first.total, 121);
        assert!(first.more);
        assert_eq!(first.rows.len(), PER_PAGE);
        assert!(first.rows[0].refused);
        assert_eq!(first.rows[0].statement, "DELETE FROM t");
        assert_eq!(first.rows[1].statement, "SELECT 120");
        assert_eq!(first.rows[1].rows, Some(1));
        assert_eq!(first.rows[1].outcome.as_deref(), Some("SELECT 1"));

        let third = for_grant(&path, "g_a", 3, None).unwrap();
        assert!(!third.more);
        assert_eq!(third.rows.len(), 21);
        assert_eq!(third.rows.last().unwrap().statement, "SELECT 1");

        // The search starts late in the file for a late start, at its
        // beginning for an early one, and finds every statement after it.
        let file = File::open(&path).unwrap();
        assert!(file.metadata().unwrap().len() > 2 * PROBE_BYTES);
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert!(offset_before(&file, later).unwrap() > PROBE_BYTES);
        let earlier = SystemTime::now() - Duration::from_secs(3600);
        assert_eq!(offset_before(&file, earlier).unwrap(), 0);
        assert_eq!(
            for_grant(&path, "g_a", 1, Some(earlier)).unwrap().total,
            121
        );
    }
}
