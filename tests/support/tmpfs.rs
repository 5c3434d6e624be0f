//! A small tmpfs for tests that need a disk to fill up (the audit log's).
//! Used by the PostgreSQL and MySQL tests of a full audit disk.

use std::path::{Path, PathBuf};

/// A tmpfs mounted for one test; unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` where mounting is not allowed (not root, no CAP_SYS_ADMIN).
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let mounted = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "jitgate-test",
            ])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status();
        matches!(mounted, Ok(s) if s.success()).then(|| Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fill the file system at `dir` (with a file named `filler`) until a write fails.
pub fn fill(dir: &Path) {
    let mut filler = std::fs::File::create(dir.join("filler")).expect("create the filler file");
    let page = vec![0u8; 4096];
    while std::io::Write::write_all(&mut filler, &page).is_ok() {}
}
