//! The key behind the decoy verifiers of unknown names.
//!
//! A login for a name jitgate does not know runs SCRAM against a decoy
//! verifier, so it fails exactly as a known name with a wrong password does.
//! The decoy's salt is what gives a name away if it is not chosen with care:
//! a real verifier's salt is the same on every attempt and after every
//! restart, so a decoy's must be too, and nobody outside may be able to
//! compute it. It is therefore an HMAC of the name under a key that is made
//! once, at the first start, and kept in `<data_dir>/decoy.key`, readable by
//! jitgate's user only. Deleting the file changes every unknown name's salt
//! once; a fleet of proxies in front of one load balancer should share one
//! copy of the file, or an unknown name gets a different salt from each.

use std::io::Write;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// Where the key lives inside `data_dir`.
pub const DECOY_KEY_FILE: &str = "decoy.key";

/// The secret that keys the decoy verifiers.
#[derive(Clone)]
pub struct DecoyKey([u8; 32]);

impl std::fmt::Debug for DecoyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecoyKey(..)")
    }
}

impl PartialEq for DecoyKey {
    fn eq(&self, other: &DecoyKey) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecoyKeyError {
    #[error(
        "cannot read or create the decoy key {path}: {source}; make data_dir writable by jitgate's user"
    )]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the decoy key {path} can be read by other users (mode {mode:o}); make it owner-only with `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error(
        "the decoy key {path} is not 64 hexadecimal digits; delete it and jitgate makes a new one at start (unknown names then get new salts once)"
    )]
    Malformed { path: PathBuf },
}

impl DecoyKey {
    /// The key in `<data_dir>/decoy.key`, made (owner-only) if there is none.
    pub fn load_or_create(data_dir: &Path) -> Result<DecoyKey, DecoyKeyError> {
        let path = data_dir.join(DECOY_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => return DecoyKey::check(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(DecoyKeyError::Io { path, source }),
        }
        let key = DecoyKey(rand::random());
        match key.write_new(&path) {
            Ok(()) => Ok(key),
            // Another process made it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&path).map_err(|source| DecoyKeyError::Io {
                    path: path.clone(),
                    source,
                })?;
                DecoyKey::check(&path, &text)
            }
            Err(source) => Err(DecoyKeyError::Io { path, source }),
        }
    }

    /// A key that lives as long as the process (tests of the model alone).
    #[cfg(test)]
    pub(crate) fn ephemeral() -> DecoyKey {
        DecoyKey(rand::random())
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn check(path: &Path, text: &str) -> Result<DecoyKey, DecoyKeyError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|source| DecoyKeyError::Io {
                    path: path.to_owned(),
                    source,
                })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(DecoyKeyError::TooOpen {
                    path: path.to_owned(),
                    mode: mode & 0o7777,
                });
            }
        }
        let malformed = || DecoyKeyError::Malformed {
            path: path.to_owned(),
        };
        let bytes = hex::decode(text.trim()).map_err(|_| malformed())?;
        Ok(DecoyKey(bytes.try_into().map_err(|_| malformed())?))
    }

    /// Write the key under a temporary name, then link it into place, which
    /// fails if the file exists: two starts never overwrite each other's key,
    /// and a crash never leaves half a key under the real name.
    fn write_new(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let written = options.open(&tmp).and_then(|mut f| {
            f.write_all(format!("{}\n", hex::encode(self.0)).as_bytes())?;
            f.sync_all()
        });
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        linked?;
        if let Some(dir) = path.parent() {
            // Best effort: without it a crash may lose the new key, and the
            // next start makes another (unknown names get new salts once).
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = DecoyKey::load_or_create(dir.path()).unwrap();
        let again = DecoyKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(DECOY_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[cfg(unix)]
    #[test]
    fn a_key_others_can_read_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        DecoyKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(DECOY_KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = DecoyKey::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_damaged_key_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        DecoyKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(DECOY_KEY_FILE);
        std::fs::write(&path, "not hex\n").unwrap();
        let err = DecoyKey::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, DecoyKeyError::Malformed { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not hex\n");
    }
}
