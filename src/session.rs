//! The live-session registry: what the admin API lists and kills.
//!
//! A wire front registers each session once it is bound to a grant and holds
//! the returned [`SessionGuard`]; dropping the guard removes the entry, so the
//! registry cannot keep a session that has gone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::Notify;

use crate::access::grants::rfc3339;
use crate::access::store::pg::SessionRow;
use crate::audit::SessionMembers;

#[derive(Debug, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub identity: String,
    pub target: String,
    pub level: String,
    pub grant: String,
    /// The issued credential the client logged in with (none for a config
    /// identity): the session ends with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    pub client_addr: SocketAddr,
    #[serde(serialize_with = "rfc3339")]
    pub started_at: SystemTime,
    /// Statements forwarded so far.
    #[serde(serialize_with = "atomic")]
    pub statements: AtomicU64,
    #[serde(skip)]
    kill: Notify,
    /// Why it was killed (a [`KillCause`]).
    #[serde(skip)]
    kill_cause: AtomicU8,
    /// With [`KillCause::Removed`]: what a reload took away, for its client.
    #[serde(skip)]
    removed: std::sync::OnceLock<String>,
    /// The live sessions of the same grant.
    #[serde(skip)]
    gate: Arc<GrantGate>,
    /// This session has told its client that it ends (or has gone).
    #[serde(skip)]
    told: AtomicBool,
}

/// The sessions of one grant, counted so that when the grant ends each can
/// wait for all of them to have told their clients before it ends its
/// upstream side.
///
/// Why: a grant's sessions all wake at the same instant when it ends. Ending
/// an upstream connection makes the server's process exit (or fork, for a
/// cancel request); a thousand of those at once compete with jitgate for the
/// CPU, and a client told after they started waits behind them all. Told
/// first, every client learns of the end within milliseconds.
#[derive(Debug, Default)]
struct GrantGate {
    /// Registered sessions of the grant.
    live: AtomicUsize,
    /// Registered sessions that have not yet told their client.
    untold: AtomicUsize,
    all_told: Notify,
}

/// Why a session was asked to end, for the words its client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum KillCause {
    Operator = 0,
    /// The proxy lost its fleet's store.
    StoreLost = 1,
    /// The credential the session logged in with was revoked (a logout).
    LoggedOut = 2,
    /// The credential the session logged in with expired.
    CredentialExpired = 3,
    /// A reload removed its identity, target or level.
    Removed = 4,
}

fn atomic<S: serde::Serializer>(v: &AtomicU64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(v.load(Ordering::Relaxed))
}

impl SessionInfo {
    pub fn count_statement(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    /// The members every audit record of this session repeats, encoded once.
    pub fn audit_members(&self) -> SessionMembers {
        SessionMembers::new(
            &self.id,
            &self.identity,
            &self.grant,
            &self.target,
            &self.level,
        )
    }

    /// How a killed session ends: by an operator, because the proxy lost
    /// its store, or with the credential it logged in with.
    pub(crate) fn kill_end(&self) -> crate::wire::SessionEnd {
        use crate::wire::{CredentialEnd, SessionEnd};
        match self.kill_cause.load(Ordering::Acquire) {
            c if c == KillCause::StoreLost as u8 => SessionEnd::StoreLost,
            c if c == KillCause::LoggedOut as u8 => {
                SessionEnd::CredentialEnded(CredentialEnd::LoggedOut)
            }
            c if c == KillCause::CredentialExpired as u8 => {
                SessionEnd::CredentialEnded(CredentialEnd::Expired)
            }
            c if c == KillCause::Removed as u8 => SessionEnd::AccessRemoved(
                self.removed
                    .get()
                    .cloned()
                    .unwrap_or_else(|| "jitgate's config no longer allows it".to_owned()),
            ),
            _ => SessionEnd::Killed,
        }
    }

    /// Ask the session to end because a reload removed what it ran under
    /// (`what`, in words for its client).
    pub(crate) fn end_removed(&self, what: String) {
        let _ = self.removed.set(what);
        self.kill_for(KillCause::Removed);
    }

    /// Ask the session to end, for `cause`.
    pub(crate) fn kill_for(&self, cause: KillCause) {
        self.kill_cause.store(cause as u8, Ordering::Release);
        self.kill.notify_one();
    }

    /// Resolves once an operator killed this session (cancel-safe).
    pub async fn killed(&self) {
        self.kill.notified().await
    }

    /// This session has told its client that it ends (called once it has
    /// written its last error and closed the client side, or given up on it).
    ///
    /// Not "once the client has closed its side as well": psql idle at its
    /// prompt reads nothing until the next command, so waiting for that
    /// would hold up the cancel of every running query of the grant.
    pub fn client_told(&self) {
        if !self.told.swap(true, Ordering::AcqRel)
            && self.gate.untold.fetch_sub(1, Ordering::AcqRel) == 1
        {
            self.gate.all_told.notify_waiters();
        }
    }

    /// Wait until every session of this session's grant has told its client,
    /// or at most `cap` (a client that never reads must not hold up the end
    /// of another session's upstream side for long).
    pub async fn grant_clients_told(&self, cap: Duration) {
        let deadline = tokio::time::Instant::now() + cap;
        loop {
            let all_told = self.gate.all_told.notified();
            tokio::pin!(all_told);
            all_told.as_mut().enable();
            if self.gate.untold.load(Ordering::Acquire) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, all_told).await.is_err() {
                return;
            }
        }
    }
}

pub struct NewSession<'a> {
    pub identity: &'a str,
    pub target: &'a str,
    pub level: &'a str,
    pub grant: &'a str,
    pub credential: Option<&'a str>,
    pub client_addr: SocketAddr,
}

#[derive(Default)]
pub struct Sessions {
    by_id: DashMap<String, Arc<SessionInfo>>,
    /// Grant id -> its sessions' gate, while it has registered sessions.
    gates: DashMap<String, Arc<GrantGate>>,
    /// Counts sessions registered and ended, for whoever shows them live
    /// (the approver page).
    changes: tokio::sync::watch::Sender<u64>,
}

impl Sessions {
    pub fn register(self: &Arc<Self>, s: NewSession<'_>) -> SessionGuard {
        // Counted under the map's lock, so a gate is never removed while a
        // session of its grant is being registered.
        let gate = {
            let entry = self.gates.entry(s.grant.to_owned()).or_default();
            entry.live.fetch_add(1, Ordering::AcqRel);
            entry.untold.fetch_add(1, Ordering::AcqRel);
            entry.clone()
        };
        let info = Arc::new(SessionInfo {
            id: format!("s_{:016x}", rand::random::<u64>()),
            identity: s.identity.to_owned(),
            target: s.target.to_owned(),
            level: s.level.to_owned(),
            grant: s.grant.to_owned(),
            credential: s.credential.map(str::to_owned),
            client_addr: s.client_addr,
            started_at: SystemTime::now(),
            statements: AtomicU64::new(0),
            kill: Notify::new(),
            kill_cause: AtomicU8::new(KillCause::Operator as u8),
            removed: std::sync::OnceLock::new(),
            gate,
            told: AtomicBool::new(false),
        });
        self.by_id.insert(info.id.clone(), info.clone());
        self.changes.send_modify(|n| *n += 1);
        SessionGuard {
            registry: self.clone(),
            info,
        }
    }

    /// Wakes when a session starts or ends.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// How many starts and ends [`Self::changes`] has counted so far.
    pub(crate) fn change_count(&self) -> u64 {
        *self.changes.borrow()
    }

    /// Live sessions, oldest first.
    pub fn list(&self) -> Vec<Arc<SessionInfo>> {
        let mut v: Vec<_> = self.by_id.iter().map(|e| e.value().clone()).collect();
        v.sort_by_key(|s| s.started_at);
        v
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// End the sessions the reload from `old` to `new` no longer allows
    /// (see [`removed_under`]), and, with `credentials_too`, every session
    /// opened with an issued credential (the identity provider changed).
    /// The number ended.
    pub(crate) fn end_removed(
        &self,
        old: &crate::config::Config,
        new: &crate::config::Config,
        credentials_too: bool,
    ) -> usize {
        let mut ended = 0;
        for s in self.by_id.iter() {
            if credentials_too && s.credential.is_some() {
                s.end_removed(
                    "the identity provider changed in jitgate's config; sign in again with `jitgate login`"
                        .to_owned(),
                );
                ended += 1;
                continue;
            }
            let was = old
                .target(&s.target)
                .and_then(|t| Some((t, t.levels.get(&s.level)?)));
            let shape = SessionShape {
                identity: &s.identity,
                issued: s.credential.is_some(),
                target: &s.target,
                level: &s.level,
                was,
            };
            if let Some(what) = removed_under(new, &shape) {
                s.end_removed(what);
                ended += 1;
            }
        }
        ended
    }

    /// Ask a session to end. `None` if there is no such session.
    pub fn kill(&self, id: &str) -> Option<Arc<SessionInfo>> {
        let s = self.by_id.get(id)?.value().clone();
        s.kill.notify_one();
        Some(s)
    }
}

impl crate::access::follow::LocalSessions for Sessions {
    fn kill(&self, id: &str) {
        Sessions::kill(self, id);
    }

    fn end_all_store_lost(&self) {
        for s in self.by_id.iter() {
            s.kill_for(KillCause::StoreLost);
        }
    }

    fn end_credentials(&self, identity: &str, credentials: &[String], cause: KillCause) {
        for s in self.by_id.iter() {
            if s.identity == identity
                && s.credential
                    .as_ref()
                    .is_some_and(|c| credentials.contains(c))
            {
                s.kill_for(cause);
            }
        }
    }

    fn rows(&self, proxy: &str) -> Vec<SessionRow> {
        self.by_id
            .iter()
            .map(|s| SessionRow {
                id: s.id.clone(),
                proxy: proxy.to_owned(),
                identity: s.identity.clone(),
                target: s.target.clone(),
                level: s.level.clone(),
                grant: s.grant.clone(),
                client_addr: s.client_addr.to_string(),
                started_at: s.started_at,
                statements: s.statements.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// What a reload looks at in a session.
pub(crate) struct SessionShape<'a> {
    pub(crate) identity: &'a str,
    /// Logged in with an issued credential (else a config identity).
    pub(crate) issued: bool,
    pub(crate) target: &'a str,
    pub(crate) level: &'a str,
    /// The target and level it logged in under, as the config then said.
    pub(crate) was: Option<(
        &'a crate::config::TargetConfig,
        &'a crate::config::LevelConfig,
    )>,
}

/// What `config` took away from a session, in words for its client;
/// `None` when it still allows the session: its config identity, its
/// target or its level is gone, its level became read-only, or what the
/// session runs on changed (the target's address, database or TLS, the
/// level's account): a session carries on only under the config in force.
pub(crate) fn removed_under(
    config: &crate::config::Config,
    session: &SessionShape<'_>,
) -> Option<String> {
    let SessionShape {
        identity,
        issued,
        target,
        level,
        was,
    } = *session;
    if !issued && config.identity(identity).is_none() {
        return Some(format!(
            "the identity {identity} was removed from jitgate's config"
        ));
    }
    match config.target(target) {
        None => Some(format!(
            "the target {target} was removed from jitgate's config"
        )),
        Some(t) => match (t.levels.get(level), was) {
            (None, _) => Some(format!(
                "the level {level} of {target} was removed from jitgate's config"
            )),
            (Some(l), Some((_, was_level))) if l.read_only && !was_level.read_only => {
                Some(format!(
                    "the level {level} of {target} is read-only in jitgate's config now; connect again to go on reading"
                ))
            }
            (Some(l), Some((was_target, was_level)))
                if runs_on(t, l) != runs_on(was_target, was_level) =>
            {
                Some(format!(
                    "the level {level} of {target} changed in jitgate's config; connect again"
                ))
            }
            (Some(_), _) => None,
        },
    }
}

/// What a session's upstream connection is made of, for comparing two configs.
fn runs_on(t: &crate::config::TargetConfig, l: &crate::config::LevelConfig) -> String {
    format!(
        "{:?} {} {} {:?} {:?} | {} {:?} {} {}",
        t.protocol,
        t.address,
        t.database,
        t.tls,
        t.tls_server_name,
        l.user,
        l.password,
        l.read_only,
        l.allow_privileged_read_account
    )
}

pub struct SessionGuard {
    registry: Arc<Sessions>,
    pub info: Arc<SessionInfo>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry.by_id.remove(&self.info.id);
        self.registry.changes.send_modify(|n| *n += 1);
        // A session that ends without telling (its client went first) no
        // longer holds up the others.
        self.info.client_told();
        if self.info.gate.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.registry
                .gates
                .remove_if(&self.info.grant, |_, g| g.live.load(Ordering::Acquire) == 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session<'a>(grant: &'a str) -> NewSession<'a> {
        NewSession {
            identity: "alice",
            target: "db",
            level: "read",
            grant,
            credential: None,
            client_addr: "127.0.0.1:1".parse().unwrap(),
        }
    }

    #[tokio::test]
    async fn a_grant_gate_opens_once_every_session_of_the_grant_told_its_client() {
        let sessions = Arc::new(Sessions::default());
        let a = sessions.register(session("g1"));
        let b = sessions.register(session("g1"));
        let other = sessions.register(session("g2"));
        let cap = Duration::from_secs(30);

        let waiting = {
            let a = a.info.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                a.grant_clients_told(cap).await;
                started.elapsed()
            })
        };
        a.info.client_told();
        a.info.client_told(); // twice counts once
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "b has not told its client yet");
        b.info.client_told();
        let waited = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the gate opened")
            .unwrap();
        assert!(waited < cap);
        // Another grant's session is not part of it.
        assert_eq!(other.info.gate.untold.load(Ordering::Acquire), 1);
    }

    #[tokio::test]
    async fn a_session_that_goes_without_telling_does_not_hold_the_gate() {
        let sessions = Arc::new(Sessions::default());
        let a = sessions.register(session("g1"));
        let b = sessions.register(session("g1"));
        drop(b);
        a.info.client_told();
        tokio::time::timeout(
            Duration::from_secs(5),
            a.info.grant_clients_told(Duration::from_secs(30)),
        )
        .await
        .expect("b's departure counted as told");
        drop(a);
        assert!(
            sessions.gates.is_empty(),
            "the gate goes with the grant's last session"
        );
    }

    #[tokio::test]
    async fn a_client_that_never_reads_holds_the_gate_only_until_the_cap() {
        let sessions = Arc::new(Sessions::default());
        let a = sessions.register(session("g1"));
        let _stuck = sessions.register(session("g1"));
        a.info.client_told();
        let started = std::time::Instant::now();
        a.info.grant_clients_told(Duration::from_millis(50)).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
