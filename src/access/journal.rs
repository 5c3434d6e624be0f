//! The journal: the durable shadow of requests and grants.
//!
//! The grant table in memory is what the hot path reads; this file is what
//! lets a restart neither forget a grant nor extend one. Every change to a
//! request or grant is one JSON line appended to `<data_dir>/journal.jsonl`
//! and fsynced before the change takes effect (so before the admin API
//! answers). At start the lines are read back in order and the model is
//! rebuilt from them (see `AccessModel::open`).
//!
//! ```text
//! {"at":"2025-01-01T10:00:00.000Z","event":"request_created","request":{…},"grant":null}
//! {"at":"2025-01-01T10:02:00.000Z","event":"request_approved","id":"r_…","decision":{"by":"bob",…},"grant":{…}}
//! {"at":"2025-01-01T10:32:00.000Z","event":"grant_expired","id":"g_…"}
//! ```
//!
//! Choices, and why:
//!
//! * **One line per change, whatever it causes.** The approval that completes
//!   a request carries the grant it creates, and an auto-approved request
//!   carries its grant, so a crash can never leave an approved request
//!   without its grant (or the reverse).
//! * **A torn last line is cut off.** A crash in the middle of an append
//!   leaves a last line without its newline, or (on some file systems) a
//!   last line of garbage. That change was never acknowledged: `open` warns,
//!   truncates the file back to the last whole line and carries on. (The
//!   audit log keeps its torn lines; the journal is not evidence, only state.)
//! * **A bad line in the middle is corruption.** A line followed by other
//!   lines was written whole and fsynced before them; if it no longer parses,
//!   something other than a crash changed the file, and guessing would risk
//!   resurrecting or forgetting grants. `open` refuses and names the line.
//! * **A failed write poisons the journal.** After a failed write or fsync
//!   the file's state on disk is unknown (a failed fsync may have dropped the
//!   pages), so every later append fails until jitgate is restarted and
//!   reads back what actually reached the disk.
//! * **No compaction.** The file grows by a few hundred bytes per change;
//!   replaying a year of a busy team's requests takes well under a second.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::access::grants::Grant;
use crate::access::requests::{Decision, Request, rfc3339_serde};

/// The journal's file name inside the data directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: cannot {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error(
        "journal {0} is locked by another process; is another jitgate running with the same data_dir?"
    )]
    Locked(PathBuf),
    #[error(
        "journal {path}, line {line}: {why}; the file was changed by something other than jitgate. \
         Restore it from a backup, or move it aside to start with no requests and grants"
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("cannot encode a journal entry as JSON: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(
        "the journal is unavailable after an earlier write error; restart jitgate once its cause is fixed"
    )]
    Poisoned,
}

/// One change to a request or grant.
// One short-lived entry per admin action: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Entry {
    /// `grant` is set when the policy approved the request at once.
    RequestCreated {
        request: Request,
        grant: Option<Grant>,
    },
    /// `grant` is set when this approval was the last one needed.
    RequestApproved {
        id: String,
        decision: Decision,
        grant: Option<Grant>,
    },
    RequestDenied {
        id: String,
        decision: Decision,
    },
    RequestCancelled {
        id: String,
        by: String,
    },
    RequestExpired {
        id: String,
    },
    /// A grant made directly by an admin (grants from requests come with
    /// their request's entry).
    GrantCreated {
        grant: Grant,
    },
    GrantRevoked {
        id: String,
        by: String,
    },
    GrantExpired {
        id: String,
    },
    /// Someone asked, on any proxy, to end a session that proxy `held_by`
    /// holds (only a fleet's store has these: with one proxy a kill is local).
    SessionKillRequested {
        session: String,
        held_by: String,
        by: String,
    },
    /// A person signed on and got `credential`; `ended` are their oldest
    /// credentials, ended to keep them within `oidc.max_credentials_per_person`.
    CredentialIssued {
        credential: crate::identity::issued::IssuedCredential,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ended: Vec<String>,
    },
    /// `identity`'s credential `id` (all of them when `None`) logged out,
    /// by its holder or an admin: the sessions opened with it end.
    CredentialsRevoked {
        identity: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        by: String,
        /// An admin's logout of the person: the name is free for another
        /// provider account from now on.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unbind: bool,
    },
}

#[derive(Serialize, Deserialize)]
struct Line {
    #[serde(with = "rfc3339_serde")]
    at: SystemTime,
    #[serde(flatten)]
    entry: Entry,
}

/// A journal entry as read back, with its line number for error messages.
pub struct ReadEntry {
    pub line: usize,
    pub entry: Entry,
}

/// The open journal, positioned at its end.
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Length of the file up to the end of its last whole line.
    len: u64,
    /// Where the last appended line started, so it can be taken back.
    last_start: Option<u64>,
    poisoned: bool,
}

impl Journal {
    /// Open (or create) the journal at `path` and read back every entry.
    ///
    /// The file is locked (advisory `flock`) so a second jitgate on the same
    /// data directory is refused. A torn last line is cut off with a warning;
    /// a line that does not parse anywhere else is [`JournalError::Corrupt`].
    pub fn open(path: &Path) -> Result<(Journal, Vec<ReadEntry>), JournalError> {
        let err = |action| {
            move |source| JournalError::Io {
                path: path.to_owned(),
                action,
                source,
            }
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err("create the directory of"))?;
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(err("open"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::Locked(path.to_owned()));
            }
            Err(std::fs::TryLockError::Error(e)) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "cannot lock the journal; make sure no other jitgate uses the same data_dir"
            ),
        }
        // A new file's name must survive a crash too.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err("fsync the directory of"))?;

        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(err("read"))?;
        let (entries, whole) = parse(path, &bytes)?;
        let len = whole as u64;
        if len < bytes.len() as u64 {
            tracing::warn!(
                path = %path.display(),
                kept_bytes = len,
                dropped_bytes = bytes.len() as u64 - len,
                "the journal ends with a line cut short (jitgate stopped while writing it); \
                 that change was never acknowledged, so the line is dropped"
            );
            file.set_len(len).map_err(err("truncate"))?;
            file.sync_data().map_err(err("fsync"))?;
        }
        Ok((
            Journal {
                path: path.to_owned(),
                file,
                len,
                last_start: None,
                poisoned: false,
            },
            entries,
        ))
    }

    /// Append one entry and fsync it. When this returns `Ok`, the entry
    /// survives a crash.
    pub fn append(&mut self, entry: &Entry) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        let mut line = serde_json::to_vec(&Line {
            at: SystemTime::now(),
            entry: entry.clone(),
        })?;
        line.push(b'\n');
        let start = self.len;
        let written = self
            .file
            .write_all(&line)
            .map_err(|e| ("write", e))
            .and_then(|()| self.file.sync_data().map_err(|e| ("fsync", e)));
        if let Err((action, source)) = written {
            self.poison(start);
            return Err(JournalError::Io {
                path: self.path.clone(),
                action,
                source,
            });
        }
        self.len += line.len() as u64;
        self.last_start = Some(start);
        Ok(())
    }

    /// Take back the line the last [`Journal::append`] wrote, because the
    /// change it describes did not happen after all (its audit record could
    /// not be written).
    pub fn undo_last(&mut self) {
        let Some(start) = self.last_start.take() else {
            return;
        };
        match self
            .file
            .set_len(start)
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => self.len = start,
            Err(e) => {
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    "cannot take back a journal line whose change was refused; \
                     the journal is closed for writing until jitgate restarts"
                );
                self.poisoned = true;
            }
        }
    }

    /// Stop writing after a failure, trying first to remove what may have
    /// been written of the failed line (a restart would cut it anyway).
    fn poison(&mut self, start: u64) {
        self.poisoned = true;
        self.last_start = None;
        let _ = self.file.set_len(start);
        tracing::error!(
            path = %self.path.display(),
            "journal write failed; refusing every change to requests and grants until jitgate is restarted"
        );
    }
}

/// Parse the journal's bytes. Returns the entries and the length of the
/// prefix to keep (everything but a torn last line).
fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<ReadEntry>, usize), JournalError> {
    let mut entries = Vec::new();
    let mut offset = 0;
    let mut number = 0;
    while offset < bytes.len() {
        number += 1;
        let (line, next, terminated) = match bytes[offset..].iter().position(|&b| b == b'\n') {
            Some(i) => (&bytes[offset..offset + i], offset + i + 1, true),
            None => (&bytes[offset..], bytes.len(), false),
        };
        let is_last = next == bytes.len();
        if !terminated {
            // Appends always end with a newline: this one was cut short.
            return Ok((entries, offset));
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            offset = next;
            continue;
        }
        match serde_json::from_slice::<Line>(line) {
            Ok(Line { entry, .. }) => entries.push(ReadEntry {
                line: number,
                entry,
            }),
            // Some file systems keep the newline but not the bytes before it.
            Err(_) if is_last => return Ok((entries, offset)),
            Err(e) => {
                return Err(JournalError::Corrupt {
                    path: path.to_owned(),
                    line: number,
                    why: format!("not a journal entry ({e})"),
                });
            }
        }
        offset = next;
    }
    Ok((entries, bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expired(id: &str) -> Entry {
        Entry::GrantExpired { id: id.to_owned() }
    }

    fn ids(entries: &[ReadEntry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| match &e.entry {
                Entry::GrantExpired { id } => id.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn appended_entries_are_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        {
            let (mut j, read) = Journal::open(&path).unwrap();
            assert!(read.is_empty());
            j.append(&expired("g_1")).unwrap();
            j.append(&expired("g_2")).unwrap();
        }
        let (_, read) = Journal::open(&path).unwrap();
        assert_eq!(ids(&read), ["g_1", "g_2"]);
        assert_eq!(read[1].line, 2);
    }

    #[test]
    fn undo_takes_back_the_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        {
            let (mut j, _) = Journal::open(&path).unwrap();
            j.append(&expired("g_1")).unwrap();
            j.append(&expired("g_2")).unwrap();
            j.undo_last();
            j.append(&expired("g_3")).unwrap();
        }
        let (_, read) = Journal::open(&path).unwrap();
        assert_eq!(ids(&read), ["g_1", "g_3"]);
    }

    #[test]
    fn a_second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let _first = Journal::open(&path).unwrap();
        assert!(matches!(Journal::open(&path), Err(JournalError::Locked(_))));
    }

    #[test]
    fn torn_last_line_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        {
            let (mut j, _) = Journal::open(&path).unwrap();
            j.append(&expired("g_1")).unwrap();
        }
        let whole = std::fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"at":"2025-01-01T00:00:00Z","event":"grant_exp"#)
            .unwrap();
        drop(f);
        {
            let (mut j, read) = Journal::open(&path).unwrap();
            assert_eq!(ids(&read), ["g_1"]);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
            j.append(&expired("g_2")).unwrap();
        }
        let (_, read) = Journal::open(&path).unwrap();
        assert_eq!(ids(&read), ["g_1", "g_2"]);
    }

    #[test]
    fn garbage_last_line_with_newline_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        {
            let (mut j, _) = Journal::open(&path).unwrap();
            j.append(&expired("g_1")).unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"\0\0\0\0\0\0\n").unwrap();
        drop(f);
        let (_, read) = Journal::open(&path).unwrap();
        assert_eq!(ids(&read), ["g_1"]);
    }

    #[test]
    fn bad_line_in_the_middle_is_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        {
            let (mut j, _) = Journal::open(&path).unwrap();
            j.append(&expired("g_1")).unwrap();
        }
        let good = std::fs::read(&path).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{not json}\n").unwrap();
        f.write_all(&good).unwrap();
        drop(f);
        let Err(e) = Journal::open(&path) else {
            panic!("a corrupt journal was accepted")
        };
        assert!(matches!(e, JournalError::Corrupt { line: 2, .. }), "{e}");
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
