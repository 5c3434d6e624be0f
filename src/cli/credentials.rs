//! Where `jitgate login` keeps the credential it got: one file in the
//! user's config directory (`$XDG_CONFIG_HOME/jitgate/credentials.json`,
//! or `~/.config/…`; `JITGATE_CREDENTIALS` names another), readable by its
//! owner only, one credential per jitgate server. Every other command uses
//! it when no token is given.
//!
//! The file is written whole to a new owner-only file and renamed over the
//! old one, so a crash leaves the old file or the new one, never half of
//! either; a file others may read is refused, as ssh refuses such a key.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// One stored credential.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Stored {
    pub(crate) identity: String,
    pub(crate) credential: String,
    /// RFC 3339, as the API gave it.
    pub(crate) expires_at: String,
    pub(crate) secret: String,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("identity", &self.identity)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl Stored {
    /// Not yet expired (by this machine's clock).
    pub(crate) fn live(&self) -> bool {
        humantime::parse_rfc3339_weak(&self.expires_at)
            .is_ok_and(|at| at > std::time::SystemTime::now())
    }
}

#[derive(Default, Serialize, Deserialize)]
struct File {
    /// By server URL (as the CLI writes it, without a trailing slash).
    servers: BTreeMap<String, Stored>,
}

/// The credentials file's path.
pub(crate) fn path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("JITGATE_CREDENTIALS").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => bail!(
                "cannot tell where to keep credentials: HOME is not set (set JITGATE_CREDENTIALS to a file path)"
            ),
        },
    };
    Ok(config.join("jitgate").join("credentials.json"))
}

fn read_file(path: &Path) -> anyhow::Result<File> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(File::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} may be read by others; it holds your jitgate credentials. Run `chmod 600 {}` or `jitgate login` again",
            path.display(),
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a jitgate credentials file; move it away and run `jitgate login`",
            path.display()
        )
    })
}

fn write_file(path: &Path, file: &File) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = dir.join(format!(".credentials.{}.tmp", std::process::id()));
    let text = serde_json::to_string_pretty(file)?;
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// The credential stored for `server`, if any (expired or not).
pub(crate) fn load(server: &str) -> anyhow::Result<Option<Stored>> {
    Ok(read_file(&path()?)?.servers.remove(server))
}

/// Keep `stored` as `server`'s credential; the file's path.
pub(crate) fn save(server: &str, stored: Stored) -> anyhow::Result<PathBuf> {
    let path = path()?;
    let mut file = read_file(&path)?;
    file.servers.insert(server.to_owned(), stored);
    write_file(&path, &file)?;
    Ok(path)
}

/// Forget `server`'s credential; whether there was one.
pub(crate) fn forget(server: &str) -> anyhow::Result<bool> {
    let path = path()?;
    let mut file = read_file(&path)?;
    let had = file.servers.remove(server).is_some();
    if had {
        write_file(&path, &file)?;
    }
    Ok(had)
}
