//! What a client program (`psql`, `mariadb`, the `jitgate` CLI…) did: its
//! exit status and output, with assertions that show all of it.

use std::process::ExitStatus;

use super::jitgate::Jitgate;

/// What a client program did.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Run {
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Panic with both outputs (and the proxy's log) unless it succeeded.
    pub fn assert_ok(&self, jg: &Jitgate) -> &Run {
        assert!(
            self.status.success(),
            "client failed ({}):\n--- stdout\n{}\n--- stderr\n{}\n--- jitgate log\n{}",
            self.status,
            self.stdout,
            self.stderr,
            jg.log()
        );
        self
    }

    pub fn assert_failed(&self) -> &Run {
        assert!(
            !self.status.success(),
            "client should have failed:\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}
