//! Upstream passwords: where each one comes from (an environment variable,
//! a file, or none). The value is read only when jitgate logs in upstream,
//! so it is never part of the loaded [`Config`](super::Config) and cannot be
//! printed with it.

use std::path::PathBuf;

/// Where an upstream password comes from. The value itself is only read at
/// connect time and never stored in the config model, so it cannot be printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretSource {
    /// No password (trust authentication upstream).
    None,
    Env(String),
    File(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SecretError {
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SecretSource {
    /// Read the secret now. `Ok(None)` means there is none (trust).
    pub(crate) fn read(&self) -> Result<Option<String>, SecretError> {
        match self {
            SecretSource::None => Ok(None),
            SecretSource::Env(var) => std::env::var(var)
                .map(Some)
                .map_err(|_| SecretError::MissingEnv(var.clone())),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_is_read_without_its_line_ending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret \r\n").unwrap();
        let source = SecretSource::File(path);
        assert_eq!(source.read().unwrap().as_deref(), Some("s3cret "));
        assert_eq!(SecretSource::None.read().unwrap(), None);
    }

    #[test]
    fn a_missing_secret_names_where_it_was_looked_for() {
        let var = "JITGATE_TEST_SURELY_UNSET_PASSWORD";
        let e = SecretSource::Env(var.into()).read().unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("environment variable {var} is not set")
        );
        let e = SecretSource::File("/nonexistent/pw".into())
            .read()
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read secret file /nonexistent/pw: "),
            "{e}"
        );
    }
}
