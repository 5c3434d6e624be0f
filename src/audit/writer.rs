//! [`AuditLog`]: sealing records into the chain, writing them, and the
//! group fsync.
//!
//! A record is encoded on the caller's thread, then sealed under the
//! writers' lock (its `prev` filled in, the chain's end moved on) and
//! appended to the lines held for the file. Held lines reach the file with
//! the next [`AuditLog::record`], the next [`AuditLog::write_sealed`] or
//! the next group-fsync tick, whichever comes first, so sessions that seal
//! together share one `write(2)`. How soon they reach the disk is the
//! log's [`Durability`].

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use super::line::{ZERO_HASH, encode_line, seal_line};
use super::{AuditError, AuditEvent, file, recover};
use crate::config::{AuditConfig, FsyncPolicy};

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

impl Durability {
    /// What `audit.fsync` asks for, on a file that can be fsynced or not.
    fn of(fsync: FsyncPolicy, is_regular: bool) -> Self {
        match fsync {
            _ if !is_regular => Durability::NotAFile,
            FsyncPolicy::Always => Durability::EveryRecord,
            // An interval of zero can only mean "at once".
            FsyncPolicy::Interval(d) if d.is_zero() => Durability::EveryRecord,
            FsyncPolicy::Interval(d) => Durability::Grouped(d),
        }
    }
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
pub(crate) struct Sealed(u64);

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
    /// write, the missing newline and an `audit_log_recovered` record whose
    /// `prev` is the hash of the partial line and whose `detail` gives its byte
    /// offset and length. The chain therefore stays unbroken end to end: the
    /// partial line still begins with the hash of the line before it, and the
    /// recovery record hashes the partial line. [`verify`](fn@super::verify)
    /// accepts such a line only in that shape, and lists it in
    /// [`VerifyReport::torn_lines`](super::VerifyReport::torn_lines) rather
    /// than hiding it; any other line that is not JSON is reported as bad.
    pub fn open(cfg: &AuditConfig) -> Result<Arc<AuditLog>, AuditError> {
        let path = cfg.path.clone();
        let mut file = file::open_for_append(&path)?;
        let is_regular = file
            .metadata()
            .map_err(AuditError::io(&path, "stat"))?
            .is_file();
        let last_hash = if is_regular {
            file::lock_for_one_writer(&file, &path)?;
            // Read the length only now that we hold the lock.
            let meta = file.metadata().map_err(AuditError::io(&path, "stat"))?;
            file::warn_if_readable_by_others(&path, &meta);
            recover::chain_end(&mut file, &path, meta.len())?
        } else {
            tracing::warn!(
                path = %path.display(),
                "the audit log is not a regular file: its chain starts afresh, and it is never fsynced"
            );
            ZERO_HASH
        };
        let durability = Durability::of(cfg.fsync, is_regular);
        let log = Arc::new(AuditLog {
            sync_file: file
                .try_clone()
                .map_err(AuditError::io(&path, "duplicate the handle of"))?,
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
    pub(crate) fn record_later(&self, event: &AuditEvent<'_>) -> Result<(), AuditError> {
        if !matches!(self.durability, Durability::Grouped(_)) {
            return self.record(event);
        }
        self.seal(event).map(|_| ())
    }

    /// Seal a record into the chain without writing it: it is written by
    /// [`AuditLog::write_sealed`], by the next [`AuditLog::record`], or by
    /// the next group fsync, whichever comes first. A statement sealed here
    /// may be forwarded only once `write_sealed` has returned `Ok` for it.
    pub(crate) fn seal(&self, event: &AuditEvent<'_>) -> Result<Sealed, AuditError> {
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
    pub(crate) async fn write_sealed(&self, sealed: Sealed) -> Result<(), AuditError> {
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
    pub(crate) fn is_written(&self, sealed: Sealed) -> bool {
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
    pub(crate) fn path(&self) -> &Path {
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
        AuditError::io(&self.path, action)(source)
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

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::{AuditLog, Durability, Sealed};
    use crate::audit::test_support::{LAZY, config, lines_of, record_statements};
    use crate::audit::{AuditError, AuditEvent, verify};
    use crate::config::FsyncPolicy;

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
}
