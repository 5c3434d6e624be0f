//! Opening the log's file: owner-only, and locked against a second writer.
//!
//! Missing parent directories are created with mode 0700 and a new file
//! gets mode 0600, since statements may hold sensitive data. The file is
//! locked (advisory `flock`) so that a second jitgate on the same path is
//! refused instead of interleaving two chains.

use std::fs::{File, OpenOptions};
use std::path::Path;

use super::AuditError;

/// Open `path` for reading and appending, creating it (and its directory)
/// owner-only if it is not there.
pub(super) fn open_for_append(path: &Path) -> Result<File, AuditError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut dirs = std::fs::DirBuilder::new();
        dirs.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dirs, 0o700);
        dirs.create(parent)
            .map_err(AuditError::io(path, "create the directory of"))?;
    }
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(AuditError::io(path, "open"))
}

/// Take the lock that keeps a second jitgate off this file. A file system
/// that cannot lock is only warned about.
pub(super) fn lock_for_one_writer(file: &File, path: &Path) -> Result<(), AuditError> {
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(AuditError::Locked(path.to_owned()));
        }
        Err(std::fs::TryLockError::Error(e)) => tracing::warn!(
            path = %path.display(),
            error = %e,
            "cannot lock the audit log; make sure no other jitgate writes to it"
        ),
    }
    Ok(())
}

/// Statements may hold sensitive data: say so if others can read them.
pub(super) fn warn_if_readable_by_others(path: &Path, meta: &std::fs::Metadata) {
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

#[cfg(test)]
mod tests {
    use crate::audit::test_support::{LAZY, config};
    use crate::audit::{AuditError, AuditLog};

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
}
