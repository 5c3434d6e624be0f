//! Sessions the previous jitgate process left open in the audit log.
//!
//! Every session writes `session_start` and, when it ends, `session_end`.
//! A proxy that crashes or is killed with SIGKILL writes no `session_end`
//! for the sessions it was relaying, and a reader of the log cannot tell
//! such a session from one still running. So at start, before serving,
//! jitgate reads the end of its log, finds every `session_start` without a
//! matching `session_end`, and closes each one with a `session_end` whose
//! reason is [`PROXY_STOPPED`]; then it writes a [`PROXY_START_EVENT`]
//! record. That record bounds the next start's scan: sessions begun before
//! it were settled by this start, so only what follows it matters.
//!
//! The scan reads at most [`SCAN_BYTES`] from the end of the file, so a
//! start costs the same however long the log is; a session started before
//! that window (a long-lived session in a busy log) is not closed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};

use serde::Deserialize;

use super::{AuditError, AuditEvent, AuditLog};

/// The `reason` of a `session_end` written for a session whose proxy stopped.
pub(crate) const PROXY_STOPPED: &str = "proxy_stopped";
/// The `event` jitgate writes once it has settled the previous run's sessions.
pub(crate) const PROXY_START_EVENT: &str = "proxy_start";
/// How much of the end of the log the scan reads at most.
const SCAN_BYTES: u64 = 64 * 1024 * 1024;

/// The members of a `session_start` that its `session_end` repeats.
#[derive(Debug, Deserialize)]
struct Started {
    session: Option<String>,
    identity: Option<String>,
    grant: Option<String>,
    target: Option<String>,
    level: Option<String>,
}

/// What the scan of the log's end found.
#[derive(Debug, Default)]
struct Scan {
    /// Sessions started and not ended, in the order they started.
    open: Vec<Started>,
    /// The `time` of the last record: the proxy stopped after it.
    last_time: Option<String>,
}

impl AuditLog {
    /// Close, with a `session_end` of reason [`PROXY_STOPPED`], every
    /// session the previous process left open, then record this start.
    /// Call once, right after [`AuditLog::open`], before any session
    /// starts. Answers how many sessions it closed.
    pub(crate) fn end_orphaned_sessions(&self) -> Result<usize, AuditError> {
        let scan = match File::open(self.path()) {
            Ok(file) if file.metadata().is_ok_and(|m| m.is_file()) => {
                scan(file).map_err(AuditError::io(self.path(), "read"))?
            }
            // A pipe or device: nothing to read back.
            _ => Scan::default(),
        };
        let detail = format!(
            "jitgate stopped (crashed or was killed) while this session was open, so it wrote no \
             session_end then; this one was written when jitgate started again{}",
            match &scan.last_time {
                Some(t) => format!(", and the last record before the stop is from {t}"),
                None => String::new(),
            }
        );
        for s in &scan.open {
            self.record(&AuditEvent {
                session: s.session.as_deref(),
                identity: s.identity.as_deref(),
                grant: s.grant.as_deref(),
                target: s.target.as_deref(),
                level: s.level.as_deref(),
                reason: Some(PROXY_STOPPED),
                detail: Some(&detail),
                ..AuditEvent::new("session_end")
            })?;
        }
        if !scan.open.is_empty() {
            tracing::warn!(
                sessions = scan.open.len(),
                "the previous jitgate stopped with sessions open; their session_end records say so (reason proxy_stopped)"
            );
        }
        let started = format!(
            "jitgate {} started; sessions the previous run left open: {}",
            env!("CARGO_PKG_VERSION"),
            scan.open.len()
        );
        self.record(&AuditEvent {
            detail: Some(&started),
            ..AuditEvent::new(PROXY_START_EVENT)
        })?;
        Ok(scan.open.len())
    }
}

/// Read the last [`SCAN_BYTES`] of the log for sessions left open.
fn scan(mut file: File) -> std::io::Result<Scan> {
    let len = file.metadata()?.len();
    let from = len.saturating_sub(SCAN_BYTES);
    file.seek(SeekFrom::Start(from))?;
    let mut lines = BufReader::new(file).split(b'\n');
    if from > 0 {
        // The first line read is only the end of one.
        lines.next().transpose()?;
    }
    let mut open: HashMap<String, (u64, Started)> = HashMap::new();
    let mut last_time = None;
    let mut order = 0u64;
    for line in lines {
        let line = line?;
        // A quote inside a JSON string is escaped, so these bytes appear
        // only as a record's own `event` member.
        let has = |needle: &[u8]| line.windows(needle.len()).any(|w| w == needle);
        if has(br#""event":"proxy_start""#) {
            open.clear();
        } else if has(br#""event":"session_start""#) {
            if let Ok(started) = serde_json::from_slice::<Started>(&line)
                && let Some(session) = started.session.clone()
            {
                order += 1;
                open.insert(session, (order, started));
            }
        } else if has(br#""event":"session_end""#)
            && let Ok(ended) = serde_json::from_slice::<Started>(&line)
            && let Some(session) = ended.session
        {
            open.remove(&session);
        }
        if let Some(time) = time_of(&line) {
            last_time = Some(time);
        }
    }
    let mut open: Vec<(u64, Started)> = open.into_values().collect();
    open.sort_by_key(|(order, _)| *order);
    Ok(Scan {
        open: open.into_iter().map(|(_, s)| s).collect(),
        last_time,
    })
}

/// The `time` member, which the writer puts right after `prev`.
fn time_of(line: &[u8]) -> Option<String> {
    const KEY: &[u8] = br#""time":""#;
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = line.get(at..)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    String::from_utf8(rest[..end].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::test_support;
    use crate::config::{AuditConfig, FsyncPolicy};

    fn config(path: &std::path::Path) -> AuditConfig {
        test_support::config(path, FsyncPolicy::Always)
    }

    fn session(log: &AuditLog, event: &str, id: &str) {
        log.record(&AuditEvent {
            session: Some(id),
            identity: Some("alice"),
            grant: Some("g1"),
            target: Some("db"),
            level: Some("read"),
            ..AuditEvent::new(event)
        })
        .unwrap();
    }

    fn events(path: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn sessions_left_open_are_ended_once_and_the_chain_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        {
            let log = AuditLog::open(&config(&path)).unwrap();
            assert_eq!(log.end_orphaned_sessions().unwrap(), 0);
            session(&log, "session_start", "s1");
            session(&log, "session_start", "s2");
            session(&log, "session_end", "s1");
        }
        let log = AuditLog::open(&config(&path)).unwrap();
        assert_eq!(log.end_orphaned_sessions().unwrap(), 1);
        drop(log);
        let all = events(&path);
        let ended: Vec<_> = all
            .iter()
            .filter(|v| v["event"] == "session_end" && v["reason"] == PROXY_STOPPED)
            .collect();
        assert_eq!(ended.len(), 1, "{all:?}");
        assert_eq!(ended[0]["session"], "s2");
        assert_eq!(ended[0]["grant"], "g1");
        assert_eq!(all.last().unwrap()["event"], PROXY_START_EVENT);
        // The next start finds nothing left open.
        let log = AuditLog::open(&config(&path)).unwrap();
        assert_eq!(log.end_orphaned_sessions().unwrap(), 0);
        drop(log);
        let report = crate::audit::verify(&path).unwrap();
        assert_eq!(report.first_bad, None);
    }
}
