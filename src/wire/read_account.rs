//! Is a read-only level's upstream account itself read-only on the server?
//!
//! DESIGN.md's invariant 5 puts two walls around a `read_only` level: the
//! proxy's classifier, and the upstream account's own privileges. This file
//! keeps the second wall honest. Each protocol says what its server lets an
//! account do (`pg::read_account`, `mysql::read_account`: a list of
//! *findings*, each one a way the account can write, empty when it cannot);
//! here those answers are kept per level, asked for again when they are
//! older than [`RECHECK_AFTER`], logged at start, and turned into a refusal
//! of logins on a level whose account can write, unless its config says
//! `allow_privileged_read_account = true`.
//!
//! A level whose account could not be checked (the server is down, the
//! check's statements failed) is refused too: the wall is unknown, so the
//! level fails closed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::config::{Config, LevelConfig, Protocol, TargetConfig};

/// How long a verdict is trusted before a login asks the server again.
///
/// Checked once per level at start, then on a login when the last check is
/// older than this. A privilege granted to the read account later is caught
/// within a minute, and a busy level pays one extra upstream login and one
/// catalog query a minute: noise next to its sessions' own logins. Checking
/// on every login would double the upstream logins of a level (and run the
/// catalog scan, which grows with the database, once per session).
pub const RECHECK_AFTER: Duration = Duration::from_secs(60);

/// The most findings named in a message; the log gets them all.
const FINDINGS_TOLD: usize = 3;

/// What the server said about one level's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The check found no way for the account to write.
    ReadOnly,
    /// Ways the account can write ("it is a superuser", "it has INSERT on
    /// table public.items", …); never empty.
    CanWrite(Vec<String>),
    /// The check did not finish: why.
    Unchecked(String),
}

/// A login refused because of its level's account (the message for the
/// person at the client and for the audit record).
#[derive(Debug, thiserror::Error)]
pub enum ReadAccountRefusal {
    #[error(
        "the upstream account of level {level} on {target} can write ({findings}); jitgate refuses \
         read-only logins through it. Give the level a read-only account, or set \
         allow_privileged_read_account = true on the level"
    )]
    CanWrite {
        target: String,
        level: String,
        findings: String,
    },
    #[error(
        "jitgate could not check that the upstream account of level {level} on {target} is \
         read-only ({why}), so it refuses read-only logins through it until it can"
    )]
    Unchecked {
        target: String,
        level: String,
        why: String,
    },
}

impl ReadAccountRefusal {
    /// The `reason` of the `session_refused` audit record.
    pub fn reason(&self) -> &'static str {
        match self {
            ReadAccountRefusal::CanWrite { .. } => "read_account_can_write",
            ReadAccountRefusal::Unchecked { .. } => "read_account_unchecked",
        }
    }
}

/// The last verdict of one level, and when it was reached.
type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Verdict)>>>;

/// The verdicts of every read-only level, shared by the fronts and the start.
#[derive(Default)]
pub struct ReadAccounts {
    /// By target, level, and the account and address checked: a verdict
    /// on one account never answers for another (a reload may change it).
    by_level: DashMap<(String, String, String, String), Slot>,
}

impl ReadAccounts {
    /// Forget every verdict (a reload may have changed the accounts): the
    /// next login on a read level, or `check_all`, asks the server again.
    pub fn forget(&self) {
        self.by_level.clear();
    }

    /// May a login on `level` of `target` go ahead? Levels that are not
    /// read-only, and read levels allowed a privileged account, always may.
    /// Concurrent logins on one level share one check.
    pub async fn admit(
        &self,
        target: &TargetConfig,
        level_name: &str,
        level: &LevelConfig,
        max_message_bytes: usize,
    ) -> Result<(), ReadAccountRefusal> {
        if !level.read_only || level.allow_privileged_read_account {
            return Ok(());
        }
        let (verdict, _) = self
            .verdict(target, level_name, level, max_message_bytes, false)
            .await;
        match verdict {
            Verdict::ReadOnly => Ok(()),
            Verdict::CanWrite(findings) => Err(ReadAccountRefusal::CanWrite {
                target: target.name.clone(),
                level: level_name.to_owned(),
                findings: summary(&findings),
            }),
            Verdict::Unchecked(why) => Err(ReadAccountRefusal::Unchecked {
                target: target.name.clone(),
                level: level_name.to_owned(),
                why,
            }),
        }
    }

    /// The level's verdict: the cached one while younger than
    /// [`RECHECK_AFTER`] (unless `fresh`), else a new check. The flag says
    /// whether this call ran the check. Only a finished check is cached; an
    /// unfinished one is tried again by the next login.
    async fn verdict(
        &self,
        target: &TargetConfig,
        level_name: &str,
        level: &LevelConfig,
        max_message_bytes: usize,
        fresh: bool,
    ) -> (Verdict, bool) {
        let slot = self
            .by_level
            .entry((
                target.name.clone(),
                level_name.to_owned(),
                level.user.clone(),
                target.address.clone(),
            ))
            .or_default()
            .clone();
        let mut last = slot.lock().await;
        if let Some((at, verdict)) = last.as_ref()
            && !fresh
            && at.elapsed() < RECHECK_AFTER
        {
            return (verdict.clone(), false);
        }
        let verdict = check(target, level_name, level, max_message_bytes).await;
        if last.as_ref().is_none_or(|(_, v)| *v != verdict) {
            log(target, level_name, level, &verdict);
        }
        *last = match verdict {
            Verdict::Unchecked(_) => None,
            ref v => Some((Instant::now(), v.clone())),
        };
        (verdict, true)
    }

    /// Check every read-only level of `config` now, logging each verdict
    /// (`jitgate serve` at start).
    pub async fn check_all(&self, config: &Config) {
        let max = config.limits.max_message_bytes;
        let mut checks = Vec::new();
        for target in &config.targets {
            for (name, level) in target.levels.iter().filter(|(_, l)| l.read_only) {
                checks.push(async move {
                    let (verdict, ran) = self.verdict(target, name, level, max, true).await;
                    if !ran {
                        log(target, name, level, &verdict);
                    }
                });
            }
        }
        join_all(checks).await;
    }
}

/// Run `futures` concurrently and wait for all (tokio has no `join_all`).
async fn join_all<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        pinned.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pinned.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

/// Ask the target's server, whatever its protocol, what the level's account may do.
pub async fn check(
    target: &TargetConfig,
    level_name: &str,
    level: &LevelConfig,
    max_message_bytes: usize,
) -> Verdict {
    let findings = match target.protocol {
        Protocol::Postgres => {
            super::pg::read_account::findings(target, level_name, level, max_message_bytes).await
        }
        Protocol::Mysql => super::mysql::read_account::findings(target, level_name, level).await,
    };
    match findings {
        Ok(f) if f.is_empty() => Verdict::ReadOnly,
        Ok(f) => Verdict::CanWrite(f),
        Err(why) => Verdict::Unchecked(why),
    }
}

/// DEMO ONLY: create the accounts of `target`'s read-only levels on its
/// (loopback) server, as its level `demo_create_read_accounts_with` names;
/// the names created, or why not. Nothing to do without that setting.
pub async fn create_demo_accounts(
    target: &TargetConfig,
    max_message_bytes: usize,
) -> Result<Vec<String>, String> {
    let Some(with) = &target.demo_create_read_accounts_with else {
        return Ok(Vec::new());
    };
    match target.protocol {
        Protocol::Postgres => {
            super::pg::read_account::create_demo_accounts(target, with, max_message_bytes).await
        }
        Protocol::Mysql => super::mysql::read_account::create_demo_accounts(target, with).await,
    }
}

/// The first few findings, for a message.
pub fn summary(findings: &[String]) -> String {
    let mut s = findings
        .iter()
        .take(FINDINGS_TOLD)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if findings.len() > FINDINGS_TOLD {
        s.push_str(&format!("; and {} more", findings.len() - FINDINGS_TOLD));
    }
    s
}

/// One log line per verdict: an error for a level that will be refused, a
/// warning for a level allowed a privileged account (at every start).
fn log(target: &TargetConfig, level_name: &str, level: &LevelConfig, verdict: &Verdict) {
    let (t, l, user) = (&target.name, level_name, &level.user);
    match (verdict, level.allow_privileged_read_account) {
        (Verdict::ReadOnly, false) => {
            tracing::info!(target = %t, level = %l, account = %user, "the read level's upstream account is read-only on the server");
        }
        (Verdict::ReadOnly, true) => {
            tracing::warn!(target = %t, level = %l, account = %user, "allow_privileged_read_account = true, though the read level's upstream account is read-only on the server; consider removing the setting");
        }
        (Verdict::CanWrite(f), false) => {
            tracing::error!(target = %t, level = %l, account = %user, findings = %f.join("; "), "the read level's upstream account can write: logins on this level are refused. Give the level a read-only account, or set allow_privileged_read_account = true");
        }
        (Verdict::CanWrite(f), true) => {
            tracing::warn!(target = %t, level = %l, account = %user, findings = %f.join("; "), "allow_privileged_read_account = true: the read level's upstream account can write; only jitgate's classifier keeps this level read-only");
        }
        (Verdict::Unchecked(why), false) => {
            tracing::warn!(target = %t, level = %l, account = %user, error = %why, "cannot check the read level's upstream account; logins on this level are refused until a check succeeds");
        }
        (Verdict::Unchecked(why), true) => {
            tracing::warn!(target = %t, level = %l, account = %user, error = %why, "allow_privileged_read_account = true, and the read level's upstream account could not be checked; only jitgate's classifier keeps this level read-only");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_names_three_findings_and_counts_the_rest() {
        let f: Vec<String> = (1..=5).map(|i| format!("f{i}")).collect();
        assert_eq!(summary(&f[..1]), "f1");
        assert_eq!(summary(&f), "f1; f2; f3; and 2 more");
    }
}
