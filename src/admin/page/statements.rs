//! What was run under one grant, read back from the audit log.
//!
//! The log is the record (see `audit`); this reads it, never writes it. A
//! grant's statements are its `statement` and `statement_refused` lines,
//! completed by the `statement_end` line of the same session and sequence
//! number (outcome, rows, duration). Lines are in time order, so a grant
//! whose start is known is found by a binary search on the lines' `time`
//! rather than a read of the whole file, and only the lines that name the
//! grant are parsed. Only the newest `page × PER_PAGE` rows are held at once,
//! each statement cut to `SHOWN_CHARS`, each line to `MAX_LINE_BYTES`, and
//! one page reads at most the newest `MAX_SCAN_BYTES` of the log; the page
//! runs at most `READERS` of these at once (`views.rs`).
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
/// The deepest page offered (2 000 statements back).
pub(super) const MAX_PAGE: usize = 40;
/// A statement is shown up to this many characters.
const SHOWN_CHARS: usize = 4096;
/// Lines are held up to this many bytes; a longer one (a huge statement)
/// is listed from its head, without its text.
const MAX_LINE_BYTES: usize = 1024 * 1024;
/// At most the newest this many bytes of the log are read for one page.
const MAX_SCAN_BYTES: u64 = 256 * 1024 * 1024;
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

#[derive(Default)]
pub(super) struct StatementPage {
    /// Newest first.
    pub(super) rows: Vec<StatementRow>,
    /// Statements of the grant in the log.
    pub(super) total: usize,
    /// Older statements than this page's exist.
    pub(super) more: bool,
    /// The grant's lines start before the newest `MAX_SCAN_BYTES` of the
    /// log, which is all that was read.
    pub(super) cut_short: bool,
}

/// The members of a line this reads.
#[derive(Deserialize)]
struct Line {
    time: String,
    event: String,
    session: Option<String>,
    grant: Option<String>,
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
    let len = file.metadata()?.len();
    let from_start = match since.and_then(|t| t.checked_sub(START_MARGIN)) {
        Some(t) => offset_before(&file, t)?,
        None => 0,
    };
    // The newest MAX_SCAN_BYTES at most: what a page shows first.
    let start = from_start.max(len.saturating_sub(MAX_SCAN_BYTES));
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    reader.seek(SeekFrom::Start(start))?;
    let mut line = Vec::new();
    if start > 0 {
        // Mid-line: the first full line starts after the next newline.
        read_line_capped(&mut reader, &mut line)?;
    }
    let needle = format!("\"grant\":\"{grant}\"");
    let finder = memchr::memmem::Finder::new(needle.as_bytes());
    let keep = page * PER_PAGE;
    let mut recent: VecDeque<StatementRow> = VecDeque::with_capacity(keep + 1);
    let mut total = 0;
    // To the end, or to a last line still being written.
    while let Some(whole) = read_line_capped(&mut reader, &mut line)? {
        if finder.find(&line).is_none() {
            continue;
        }
        let parsed = if whole {
            serde_json::from_slice::<Line>(&line).ok()
        } else {
            Line::from_head(&line)
        };
        let Some(l) = parsed.filter(|l| l.grant.as_deref() == Some(grant)) else {
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
                    statement: shown(l.statement, whole),
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
        cut_short: start > from_start,
    })
}

/// The statement as the page shows it: at most `SHOWN_CHARS` characters.
fn shown(statement: Option<String>, whole: bool) -> String {
    let Some(mut text) = statement.filter(|_| whole) else {
        return "(longer than the page shows; see the audit log)".to_owned();
    };
    if let Some((cut, _)) = text.char_indices().nth(SHOWN_CHARS) {
        let full = text.len();
        text.truncate(cut);
        text.push_str(&format!(" … ({full} bytes in all; see the audit log)"));
    }
    text
}

/// Read the next line into `line`, keeping at most `MAX_LINE_BYTES` of it
/// (the rest is read past, never held). `Some(true)`: a whole line;
/// `Some(false)`: a line cut short; `None`: the end, or a last line still
/// being written.
fn read_line_capped(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<Option<bool>> {
    line.clear();
    let mut whole = true;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(None);
        }
        let (chunk, ended) = match memchr::memchr(b'\n', buf) {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        if chunk.len() > room {
            whole = false;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len();
        reader.consume(used);
        if ended {
            return Ok(Some(whole));
        }
    }
}

impl Line {
    /// What the head of a line too long to hold says: the members before
    /// the statement (time, event, session, grant, seq).
    fn from_head(head: &[u8]) -> Option<Line> {
        let text = std::str::from_utf8(head).ok().or_else(|| {
            // Cut inside a character: the valid part is enough.
            let valid = std::str::from_utf8(head).err()?.valid_up_to();
            std::str::from_utf8(&head[..valid]).ok()
        })?;
        let string = |key: &str| {
            let at = text.find(&format!("\"{key}\":\""))? + key.len() + 4;
            let end = text[at..].find('"')? + at;
            Some(text[at..end].to_owned())
        };
        let seq = text.find("\"seq\":").and_then(|at| {
            let digits: String = text[at + 6..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        });
        Some(Line {
            time: string("time")?,
            event: string("event")?,
            session: string("session"),
            grant: string("grant"),
            seq,
            statement: None,
            kind: None,
            reason: None,
            detail: None,
            outcome: None,
            rows: None,
            duration_ms: None,
        })
    }
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
        // One too long to show whole, one too long to hold, and one whose
        // text names the grant as if it were a member.
        let long = format!("SELECT '{}'", "é".repeat(SHOWN_CHARS));
        log.record(&statement("g_a", 121, &long)).unwrap();
        let huge = format!("SELECT '{}'", "x".repeat(MAX_LINE_BYTES));
        log.record(&statement("g_a", 122, &huge)).unwrap();
        log.record(&statement("g_b", 1, r#"SELECT '"grant":"g_a"'"#))
            .unwrap();
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
        assert_eq!(first.total, 123);
        assert!(first.more);
        assert!(!first.cut_short);
        assert_eq!(first.rows.len(), PER_PAGE);
        assert!(first.rows[0].refused);
        assert_eq!(first.rows[0].statement, "DELETE FROM t");
        assert_eq!(first.rows[1].seq, Some(122));
        assert!(
            first.rows[1]
                .statement
                .contains("longer than the page shows")
        );
        let cut = &first.rows[2].statement;
        assert!(cut.starts_with("SELECT 'éé"), "{cut}");
        assert!(
            cut.ends_with(" … (8201 bytes in all; see the audit log)"),
            "{cut}"
        );
        assert_eq!(first.rows[3].statement, "SELECT 120");
        assert_eq!(first.rows[3].rows, Some(1));
        assert_eq!(first.rows[3].outcome.as_deref(), Some("SELECT 1"));
        assert_eq!(for_grant(&path, "g_b", 1, None).unwrap().total, 1);

        let third = for_grant(&path, "g_a", 3, None).unwrap();
        assert!(!third.more);
        assert_eq!(third.rows.len(), 23);
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
            123
        );
    }
}
