//! The audit log: one JSON object per line, hash-chained.
//!
//! Every line starts with `{"prev":"<sha256 hex>","time":"<RFC 3339 UTC>",`
//! followed by the [`AuditEvent`] fields. `prev` is the SHA-256 of the
//! previous line's bytes (without its newline), and 64 zeros on the first
//! line, so [`verify`] finds any line that was edited, removed or reordered
//! after it was written. (The chain has no key: someone who can rewrite the
//! whole file can recompute it. Ship the log off the host to defend against
//! that.)
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

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::config::{AuditConfig, FsyncPolicy};

mod json;
mod orphans;
mod record;

pub use orphans::{PROXY_START_EVENT, PROXY_STOPPED};
pub use record::{AuditEvent, CLIENT_NAME_MAX_CHARS, SessionMembers, client_name};

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

/// The `event` of the record [`AuditLog::open`] writes right after sealing a
/// line that a crash cut short.
pub const RECOVERED_EVENT: &str = "audit_log_recovered";

/// Every line starts with this, then the 64 hex digits of `prev`.
const PREV_OPENING: &[u8] = br#"{"prev":""#;
const PREV_HEX: std::ops::Range<usize> = PREV_OPENING.len()..PREV_OPENING.len() + 64;
const ZERO_HASH: [u8; 32] = [0; 32];
/// A record's line buffer is reused per thread; one that grew past this for a
/// huge statement is given back rather than kept.
const KEPT_LINE_CAPACITY: usize = 64 * 1024;

thread_local! {
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// When records reach the disk, not only the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// fsync inside `record`, before it returns.
    EveryRecord,
    /// A background task fsyncs at most this long after a write.
    Grouped(Duration),
    /// The path is not a regular file (a pipe, `/dev/stdout`, ...): there is
    /// nothing to fsync, and whoever reads the other end owns durability.
    NotAFile,
}

/// The hash-chained audit log. Share it as `Arc<AuditLog>`; `record` takes `&self`.
pub struct AuditLog {
    path: PathBuf,
    chain: Mutex<Chain>,
    /// A second handle on the same open file, so an fsync neither waits for
    /// nor holds up the writers' lock.
    sync_file: File,
    durability: Durability,
    /// Something was written since the last fsync (grouped durability only).
    unsynced: AtomicBool,
    poisoned: AtomicBool,
    /// How many sealed lines are in the file (and, with `fsync = "always"`,
    /// on disk): every [`Sealed`] up to this number.
    written: AtomicU64,
    /// Held while fsyncing with `fsync = "always"` (see `write_through`).
    syncing: Mutex<()>,
}

/// A line sealed into the chain by [`AuditLog::seal`]: its place in the
/// chain, which [`AuditLog::write_sealed`] makes sure is in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sealed(u64);

/// What the writers' lock protects: the end of the file and of the chain.
struct Chain {
    file: File,
    last_hash: [u8; 32],
    /// Sealed lines not written yet: written with the next record, by the
    /// next group-fsync tick, or by [`AuditLog::write_sealed`], whichever
    /// comes first.
    held: Vec<u8>,
    /// Lines sealed so far (the number of the last [`Sealed`]).
    sealed: u64,
}

impl AuditLog {
    /// Open (or create) the log at `cfg.path`, continuing the chain of what is there.
    /// Starts the group-fsync task, so it must be called inside a tokio runtime.
    ///
    /// Missing parent directories are created (mode 0700), a new file gets
    /// mode 0600, and the file is locked (advisory `flock`) so that a second
    /// jitgate on the same path is refused instead of interleaving two chains.
    ///
    /// **A line cut short by a crash** (the file does not end with a newline:
    /// power loss, a full disk, a kill in the middle of a large write) is kept
    /// byte for byte, never truncated: deleting bytes from an audit log is what
    /// the log exists to detect, and the partial line may be the only trace of
    /// the last statement. Instead, `open` logs a warning and appends, in one
    /// write, the missing newline and a [`RECOVERED_EVENT`] record whose
    /// `prev` is the hash of the partial line and whose `detail` gives its byte
    /// offset and length. The chain therefore stays unbroken end to end: the
    /// partial line still begins with the hash of the line before it, and the
    /// recovery record hashes the partial line. [`verify`] accepts such a line
    /// only in that shape, and lists it in [`VerifyReport::torn_lines`] rather
    /// than hiding it; any other line that is not JSON is reported as bad.
    pub fn open(cfg: &AuditConfig) -> Result<Arc<AuditLog>, AuditError> {
        let path = cfg.path.clone();
        let err = |action| {
            let path = path.clone();
            move |source| AuditError::Io {
                path,
                action,
                source,
            }
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let mut dirs = std::fs::DirBuilder::new();
            dirs.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut dirs, 0o700);
            dirs.create(parent)
                .map_err(err("create the directory of"))?;
        }
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(err("open"))?;

        let is_regular = file.metadata().map_err(err("stat"))?.is_file();
        let mut last_hash = ZERO_HASH;
        if is_regular {
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Err(AuditError::Locked(path)),
                Err(std::fs::TryLockError::Error(e)) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "cannot lock the audit log; make sure no other jitgate writes to it"
                ),
            }
            // Read the length only now that we hold the lock.
            let meta = file.metadata().map_err(err("stat"))?;
            warn_if_readable_by_others(&path, &meta);
            let tail = find_tail(&mut file, meta.len()).map_err(err("read"))?;
            last_hash = tail.last_hash;
            if let Some(torn) = tail.torn {
                last_hash = seal_torn_line(&mut file, &path, torn, last_hash)?;
            }
        } else {
            tracing::warn!(
                path = %path.display(),
                "the audit log is not a regular file: its chain starts afresh, and it is never fsynced"
            );
        }

        let durability = match cfg.fsync {
            _ if !is_regular => Durability::NotAFile,
            FsyncPolicy::Always => Durability::EveryRecord,
            // An interval of zero can only mean "at once".
            FsyncPolicy::Interval(d) if d.is_zero() => Durability::EveryRecord,
            FsyncPolicy::Interval(d) => Durability::Grouped(d),
        };
        let log = Arc::new(AuditLog {
            sync_file: file.try_clone().map_err(err("duplicate the handle of"))?,
            path,
            chain: Mutex::new(Chain {
                file,
                last_hash,
                held: Vec::new(),
                sealed: 0,
            }),
            durability,
            unsynced: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            written: AtomicU64::new(0),
            syncing: Mutex::new(()),
        });
        if let Durability::Grouped(every) = durability {
            tokio::spawn(fsync_in_groups(Arc::downgrade(&log), every));
        }
        Ok(log)
    }

    /// Write one record. When this returns `Ok`, the line has been written to
    /// the file (and fsynced, with `fsync = "always"`).
    ///
    /// `time` is taken when `record` is called, before waiting for the lock,
    /// so under contention neighbouring lines may be out of time order by a
    /// few microseconds; the file order is the chain order.
    ///
    /// This blocks the calling thread for one `write(2)` (and, with
    /// `fsync = "always"`, one `fdatasync(2)`).
    pub fn record(&self, event: &AuditEvent<'_>) -> Result<(), AuditError> {
        let started = std::time::Instant::now();
        let result = self
            .seal_line(event)
            .and_then(|sealed| self.write_through(sealed));
        crate::metrics::METRICS.observe_audit_write(started.elapsed(), result.is_ok());
        result
    }

    /// Like [`AuditLog::record`], for a record that may wait a little: it is
    /// sealed into the chain now and written with the next record, or by the
    /// next group fsync at the latest (so within `audit.fsync`). Used for
    /// `statement_end`, which closes a statement already on disk, so a busy
    /// session makes one `write(2)` per statement instead of two. With
    /// `fsync = "always"` it is the same as `record`.
    pub fn record_later(&self, event: &AuditEvent<'_>) -> Result<(), AuditError> {
        if !matches!(self.durability, Durability::Grouped(_)) {
            return self.record(event);
        }
        self.seal(event).map(|_| ())
    }

    /// Seal a record into the chain without writing it: it is written by
    /// [`AuditLog::write_sealed`], by the next [`AuditLog::record`], or by
    /// the next group fsync, whichever comes first. A statement sealed here
    /// may be forwarded only once `write_sealed` has returned `Ok` for it.
    pub fn seal(&self, event: &AuditEvent<'_>) -> Result<Sealed, AuditError> {
        let sealed = self.seal_line(event);
        if sealed.is_err() {
            crate::metrics::METRICS.audit_error();
        }
        sealed
    }

    /// Make sure `sealed`'s line is in the file (and fsynced, with `fsync =
    /// "always"`) before the caller goes on.
    ///
    /// If it is not there yet, this first yields once, so that the other
    /// sessions of this thread that are ready to run seal their records
    /// too, and then writes every line sealed so far with one `write(2)`:
    /// the sessions woken together share one write (and one fsync), and
    /// find their own lines already written when their turn comes.
    pub async fn write_sealed(&self, sealed: Sealed) -> Result<(), AuditError> {
        if self.is_written(sealed) {
            return Ok(());
        }
        YieldOnce(false).await;
        if self.is_written(sealed) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let result = self.write_through(sealed);
        crate::metrics::METRICS.observe_audit_write(started.elapsed(), result.is_ok());
        result
    }

    /// True once `sealed`'s line is in the file (and fsynced with `fsync = "always"`).
    pub fn is_written(&self, sealed: Sealed) -> bool {
        self.written.load(Ordering::Acquire) >= sealed.0
    }

    /// Encode `event` and chain it behind the last sealed line.
    fn seal_line(&self, event: &AuditEvent<'_>) -> Result<Sealed, AuditError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(AuditError::Poisoned);
        }
        LINE.with_borrow_mut(|line| {
            encode_line(line, event, SystemTime::now());
            let sealed = {
                let mut chain = self.chain.lock().map_err(|_| AuditError::Poisoned)?;
                // Checked again under the lock: no line may follow a failed one.
                if self.poisoned.load(Ordering::Acquire) {
                    return Err(AuditError::Poisoned);
                }
                let hash = seal_line(line, &chain.last_hash);
                chain.held.extend_from_slice(line);
                chain.last_hash = hash;
                chain.sealed += 1;
                Sealed(chain.sealed)
            };
            if matches!(self.durability, Durability::Grouped(_)) {
                self.unsynced.store(true, Ordering::Release);
            }
            if line.capacity() > KEPT_LINE_CAPACITY {
                *line = Vec::new();
            }
            Ok(sealed)
        })
    }

    /// The file this log writes to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True once a write or fsync has failed; every `record` now fails.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Write every line sealed so far, unless `sealed`'s already is, and
    /// fsync them with `fsync = "always"`.
    fn write_through(&self, sealed: Sealed) -> Result<(), AuditError> {
        if self.is_written(sealed) {
            return Ok(());
        }
        let end = {
            let mut chain = self.chain.lock().map_err(|_| AuditError::Poisoned)?;
            if self.poisoned.load(Ordering::Acquire) {
                return Err(AuditError::Poisoned);
            }
            if !chain.held.is_empty() {
                let Chain { file, held, .. } = &mut *chain;
                let written = file.write_all(held);
                held.clear();
                if held.capacity() > KEPT_LINE_CAPACITY {
                    *held = Vec::new();
                }
                if let Err(e) = written {
                    return Err(self.poison("write", e));
                }
            }
            match self.durability {
                Durability::EveryRecord => {}
                Durability::Grouped(_) => {
                    self.unsynced.store(true, Ordering::Release);
                    self.written.fetch_max(chain.sealed, Ordering::AcqRel);
                }
                Durability::NotAFile => {
                    self.written.fetch_max(chain.sealed, Ordering::AcqRel);
                }
            }
            chain.sealed
        };
        if self.durability == Durability::EveryRecord {
            // One fsync at a time, and none after a failed one: the kernel
            // reports a writeback error to one fsync only, so a second one
            // racing it could return Ok for lines that never reached the disk.
            let _syncing = self.syncing.lock().map_err(|_| AuditError::Poisoned)?;
            if self.is_written(sealed) {
                return Ok(());
            }
            if self.poisoned.load(Ordering::Acquire) {
                return Err(AuditError::Poisoned);
            }
            self.sync_file
                .sync_data()
                .map_err(|e| self.poison("fsync", e))?;
            self.written.fetch_max(end, Ordering::AcqRel);
        }
        Ok(())
    }

    /// fsync if anything was written since the last time.
    fn sync_pending(&self) {
        if self.poisoned.load(Ordering::Acquire) {
            return;
        }
        // Cleared before the fsync: a record written meanwhile sets it again
        // and is covered by the next round.
        if !self.unsynced.swap(false, Ordering::AcqRel) {
            return;
        }
        if let Ok(mut chain) = self.chain.lock()
            && !chain.held.is_empty()
        {
            let Chain {
                file, held, sealed, ..
            } = &mut *chain;
            let written = file.write_all(held);
            held.clear();
            if let Err(e) = written {
                self.poison("write", e);
                return;
            }
            // Not fsynced yet, but with grouped durability written is enough.
            self.written.fetch_max(*sealed, Ordering::AcqRel);
        }
        if let Err(e) = self.sync_file.sync_data() {
            self.poison("fsync", e);
        }
    }

    fn poison(&self, action: &'static str, source: std::io::Error) -> AuditError {
        self.poisoned.store(true, Ordering::Release);
        tracing::error!(
            path = %self.path.display(),
            action,
            error = %source,
            "audit log failed; refusing to forward statements until jitgate is restarted"
        );
        AuditError::Io {
            path: self.path.clone(),
            action,
            source,
        }
    }
}

impl Drop for AuditLog {
    /// A clean shutdown leaves nothing waiting for the next group fsync.
    /// Nor a line sealed and not yet written (by a session that ended first).
    fn drop(&mut self) {
        if matches!(self.durability, Durability::Grouped(_)) {
            self.sync_pending();
        } else {
            let _ = self.write_through(Sealed(u64::MAX));
        }
    }
}

/// Pending once, having woken its own task: the task goes to the back of
/// its thread's run queue, behind the tasks already woken (unlike
/// `tokio::task::yield_now`, which waits for the runtime to poll its I/O
/// driver again, one more `epoll_wait` when nothing else is ready).
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Holds only a `Weak`, so it ends at the first tick after the log is dropped.
async fn fsync_in_groups(log: Weak<AuditLog>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(log) = log.upgrade() else { return };
        if !log.unsynced.load(Ordering::Acquire) {
            continue;
        }
        // fsync can block for a long time: keep it off the runtime's workers.
        if tokio::task::spawn_blocking(move || log.sync_pending())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Fill `line` with `{"prev":"<zeros>","time":"…",<event fields>}\n`.
/// [`seal_line`] fills in `prev` later, under the lock.
fn encode_line(line: &mut Vec<u8>, event: &AuditEvent<'_>, time: SystemTime) {
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
fn seal_line(line: &mut [u8], prev: &[u8; 32]) -> [u8; 32] {
    line[PREV_HEX].copy_from_slice(&hex64(prev));
    let without_newline = line.strip_suffix(b"\n").unwrap_or(line);
    Sha256::digest(without_newline).into()
}

fn hex64(hash: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, byte) in hash.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(byte >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(byte & 0xf)];
    }
    out
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
    let err = |action| {
        move |source| AuditError::Io {
            path: path.to_owned(),
            action,
            source,
        }
    };
    file.write_all(&line).map_err(err("write"))?;
    file.sync_data().map_err(err("fsync"))?;
    Ok(hash)
}

fn warn_if_readable_by_others(path: &Path, meta: &std::fs::Metadata) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{mode:o}"),
                "the audit log can be read by other users and may hold sensitive statements; chmod 600 it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (path, meta);
}

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
    /// Lines a crash cut short (see [`AuditLog::open`]): each one begins with
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
    let err = |action| {
        move |source| AuditError::Io {
            path: path.to_owned(),
            action,
            source,
        }
    };
    let file = File::open(path).map_err(err("open"))?;
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
        if reader.read_until(b'\n', &mut line).map_err(err("read"))? == 0 {
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

enum Checked {
    Record {
        recovery: bool,
    },
    /// Not JSON, but a prefix of a line chained to the previous one.
    MaybeTorn,
    Bad(String),
}

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
    use super::*;

    fn config(path: &Path, fsync: FsyncPolicy) -> AuditConfig {
        AuditConfig {
            path: path.to_owned(),
            fsync,
        }
    }

    /// Long enough that the background fsync never runs during a test unless awaited.
    const LAZY: FsyncPolicy = FsyncPolicy::Interval(Duration::from_secs(3600));

    fn record_statements(log: &AuditLog, from: u64, count: u64) {
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

    fn lines_of(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).unwrap();
    }

    fn log_with_five_lines(dir: &tempfile::TempDir) -> PathBuf {
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&config(&path, LAZY)).unwrap();
        record_statements(&log, 1, 5);
        path
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

    #[tokio::test]
    async fn held_records_are_written_with_the_next_record_or_by_the_tick() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&config(
            &path,
            FsyncPolicy::Interval(Duration::from_millis(50)),
        ))
        .unwrap();
        log.record(&AuditEvent::new("statement")).unwrap();
        log.record_later(&AuditEvent::new("statement_end")).unwrap();
        assert_eq!(lines_of(&path).len(), 1, "held until the next write");
        log.record(&AuditEvent::new("statement")).unwrap();
        assert_eq!(
            lines_of(&path).len(),
            3,
            "written with the next record, in order"
        );
        log.record_later(&AuditEvent::new("statement_end")).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let lines = lines_of(&path);
        assert_eq!(lines.len(), 4, "written by the group-fsync tick");
        assert!(lines[1].contains("statement_end") && lines[3].contains("statement_end"));
        assert!(verify(&path).unwrap().is_ok());
    }

    #[tokio::test]
    async fn always_policy_records_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&config(&path, FsyncPolicy::Always)).unwrap();
        assert_eq!(log.durability, Durability::EveryRecord);
        record_statements(&log, 1, 20);
        assert!(!log.unsynced.load(Ordering::Acquire));
        let report = verify(&path).unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.lines, 20);
    }

    #[tokio::test]
    async fn interval_policy_fsyncs_in_the_background_and_stops_with_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let before = tasks();
        let every = Duration::from_millis(10);
        let log = AuditLog::open(&config(&path, FsyncPolicy::Interval(every))).unwrap();
        assert_eq!(tasks(), before + 1);
        record_statements(&log, 1, 3);
        assert!(log.unsynced.load(Ordering::Acquire));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while log.unsynced.load(Ordering::Acquire) {
            assert!(std::time::Instant::now() < deadline, "no fsync within 5 s");
            tokio::time::sleep(every).await;
        }
        drop(log);
        while tasks() > before {
            assert!(
                std::time::Instant::now() < deadline,
                "fsync task outlived the log"
            );
            tokio::time::sleep(every).await;
        }
    }

    #[tokio::test]
    async fn records_from_many_threads_form_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&config(&path, LAZY)).unwrap();
        std::thread::scope(|threads| {
            for t in 0..8 {
                let log = &log;
                threads.spawn(move || record_statements(log, t * 1000, 250));
            }
        });
        let report = verify(&path).unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.lines, 2000);
    }

    fn statement(seq: u64) -> AuditEvent<'static> {
        AuditEvent {
            session: Some("s-1"),
            seq: Some(seq),
            statement: Some("SELECT 1"),
            ..AuditEvent::new("statement")
        }
    }

    #[tokio::test]
    async fn a_sealed_record_is_written_by_write_sealed_with_its_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&config(&path, LAZY)).unwrap();
        let first = log.seal(&statement(1)).unwrap();
        assert!(!log.is_written(first));
        assert_eq!(lines_of(&path).len(), 0, "sealed, not written");
        // Three sessions of one thread, woken together: whichever writes
        // first writes all three lines, and the others find theirs written.
        let session = |sealed: Option<Sealed>, seq| {
            let log = &log;
            let path = &path;
            async move {
                let sealed = match sealed {
                    Some(s) => s,
                    None => log.seal(&statement(seq)).unwrap(),
                };
                log.write_sealed(sealed).await.unwrap();
                assert!(log.is_written(sealed));
                lines_of(path).len()
            }
        };
        let seen = tokio::join!(session(Some(first), 1), session(None, 2), session(None, 3));
        assert_eq!(seen, (3, 3, 3), "each saw all three lines once it went on");
        let report = verify(&path).unwrap();
        assert!(report.is_ok(), "{report:?}");
        let lines = lines_of(&path);
        for (i, line) in lines.iter().enumerate() {
            assert!(line.contains(&format!("\"seq\":{}", i + 1)), "{line}");
        }
        // Written already: no wait, no write.
        log.write_sealed(first).await.unwrap();
        assert_eq!(lines_of(&path).len(), 3);
    }

    /// As the relays use it: sessions are separate tasks on one
    /// single-threaded runtime, and the yield puts each behind the others.
    #[tokio::test(flavor = "current_thread")]
    async fn sessions_in_separate_tasks_of_one_thread_share_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&config(&path, LAZY)).unwrap();
        let sessions: Vec<_> = (1..=3)
            .map(|seq| {
                let log = log.clone();
                let path = path.clone();
                tokio::spawn(async move {
                    let sealed = log.seal(&statement(seq)).unwrap();
                    log.write_sealed(sealed).await.unwrap();
                    lines_of(&path).len()
                })
            })
            .collect();
        for session in sessions {
            assert_eq!(
                session.await.unwrap(),
                3,
                "the first write carried all three"
            );
        }
        assert!(verify(&path).unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_sealed_record_is_not_lost_when_the_log_closes() {
        let dir = tempfile::tempdir().unwrap();
        for fsync in [FsyncPolicy::Always, LAZY] {
            let path = dir.path().join(format!("{fsync:?}.log"));
            let log = AuditLog::open(&config(&path, fsync)).unwrap();
            log.record(&statement(1)).unwrap();
            log.seal(&statement(2)).unwrap();
            drop(log);
            let report = verify(&path).unwrap();
            assert!(report.is_ok() && report.lines == 2, "{fsync:?}: {report:?}");
        }
    }

    /// A log whose writes fail with ENOSPC; `None` (test skipped) without `/dev/full`.
    fn log_on_dev_full() -> Option<Arc<AuditLog>> {
        let full = Path::new("/dev/full");
        if OpenOptions::new().append(true).open(full).is_err() {
            eprintln!("skipped: /dev/full is not available");
            return None;
        }
        Some(AuditLog::open(&config(full, LAZY)).unwrap())
    }

    fn assert_failed_write(err: &AuditError) {
        assert!(
            matches!(
                err,
                AuditError::Io {
                    action: "write",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn when_a_shared_write_fails_no_record_of_it_counts_as_written() {
        let Some(log) = log_on_dev_full() else { return };
        let first = log.seal(&statement(1)).unwrap();
        let second = log.seal(&statement(2)).unwrap();
        assert_failed_write(&log.write_sealed(first).await.unwrap_err());
        // The second line went down with the first: its session must not go on.
        assert!(!log.is_written(second));
        assert!(matches!(
            log.write_sealed(second).await,
            Err(AuditError::Poisoned)
        ));
        assert!(matches!(log.seal(&statement(3)), Err(AuditError::Poisoned)));
    }

    #[tokio::test]
    async fn a_failed_write_poisons_the_log_and_does_not_leak_the_record() {
        let Some(log) = log_on_dev_full() else { return };
        let secret_statement = "ALTER USER app PASSWORD 'hunter2'";
        let err = log
            .record(&AuditEvent {
                statement: Some(secret_statement),
                ..AuditEvent::new("statement")
            })
            .unwrap_err();
        assert_failed_write(&err);
        let message = err.to_string();
        assert!(message.contains("/dev/full"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(log.is_poisoned());
        assert!(matches!(
            log.record(&AuditEvent::new("statement")),
            Err(AuditError::Poisoned)
        ));
    }

    #[tokio::test]
    async fn a_second_writer_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let first = AuditLog::open(&config(&path, LAZY)).unwrap();
        let second = AuditLog::open(&config(&path, LAZY));
        assert!(matches!(second, Err(AuditError::Locked(_))));
        drop(first);
        AuditLog::open(&config(&path, LAZY)).unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_log_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit").join("nested").join("audit.log");
        let _log = AuditLog::open(&config(&path, LAZY)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o077, 0, "directories are created owner-only");
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
