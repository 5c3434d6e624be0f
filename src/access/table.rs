//! The grant table: every active grant, in memory, in a DashMap.
//!
//! This is the source of truth for the hot path. Each grant owns a
//! `tokio::sync::watch` channel whose value says whether it has ended; every
//! session holds a [`Lease`] with a receiver, sleeps until the grant's absolute
//! `expires_at` and wakes at once when the grant is revoked.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use tokio::sync::watch;

use crate::access::grants::{EndReason, Grant};
use crate::config::{LevelConfig, TargetConfig};
use crate::metrics::{METRICS, Metrics};

/// How and when a grant ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ended {
    pub reason: EndReason,
    /// The deadline for an expiry; the moment of the revoke for a revoke.
    pub at: SystemTime,
}

struct Entry {
    grant: Arc<Grant>,
    /// `None` while active; how it ended once it did.
    ended: watch::Sender<Option<Ended>>,
}

#[derive(Default)]
pub(crate) struct GrantTable {
    by_id: DashMap<String, Entry>,
}

impl GrantTable {
    pub(crate) fn insert(&self, grant: Grant) -> Arc<Grant> {
        let grant = Arc::new(grant);
        let (ended, _) = watch::channel(None);
        METRICS
            .grants_active
            .get_or_create(&Metrics::target_level(&grant.target, &grant.level))
            .inc();
        self.by_id.insert(
            grant.id.clone(),
            Entry {
                grant: grant.clone(),
                ended,
            },
        );
        grant
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Grant>> {
        self.by_id.get(id).map(|e| e.grant.clone())
    }

    /// Active grants, oldest first.
    pub(crate) fn active(&self, now: SystemTime) -> Vec<Arc<Grant>> {
        let mut v: Vec<_> = self
            .by_id
            .iter()
            .filter(|e| e.grant.expires_at > now)
            .map(|e| e.grant.clone())
            .collect();
        v.sort_by_key(|g| g.created_at);
        v
    }

    /// Grants still in the table whose deadline is at or before `now`,
    /// oldest first (at start: those that ended while no proxy ran).
    pub(crate) fn ended_by(&self, now: SystemTime) -> Vec<Arc<Grant>> {
        let mut v: Vec<_> = self
            .by_id
            .iter()
            .filter(|e| e.grant.expires_at <= now)
            .map(|e| e.grant.clone())
            .collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        v
    }

    /// A lease on the newest active grant of `identity` for `target`.
    /// The newest live grant of `identity` on `target` (at `level`, if one
    /// is named).
    pub(crate) fn lease_for(
        &self,
        identity: &str,
        target: &str,
        level: Option<&str>,
        now: SystemTime,
    ) -> Option<GrantWatch> {
        self.by_id
            .iter()
            .filter(|e| {
                e.grant.identity == identity
                    && e.grant.target == target
                    && level.is_none_or(|level| e.grant.level == level)
                    && e.grant.expires_at > now
            })
            .max_by_key(|e| e.grant.created_at)
            .map(|e| GrantWatch {
                grant: e.grant.clone(),
                ended: e.ended.subscribe(),
            })
    }

    /// Remove the grant and tell its sessions why. `None` if it was not there.
    pub(crate) fn end(&self, id: &str, reason: EndReason) -> Option<Arc<Grant>> {
        let (_, entry) = self.by_id.remove(id)?;
        let at = match reason {
            EndReason::Expired => entry.grant.expires_at,
            EndReason::Revoked => SystemTime::now(),
        };
        entry.ended.send_replace(Some(Ended { reason, at }));
        METRICS
            .grants_active
            .get_or_create(&Metrics::target_level(
                &entry.grant.target,
                &entry.grant.level,
            ))
            .dec();
        Some(entry.grant)
    }
}

/// What a session holds: its grant, the target and level the grant names
/// (resolved once, at login: a session never looks them up again), and a
/// watch on the grant's end.
pub struct Lease {
    pub(crate) grant: Arc<Grant>,
    pub(crate) target: Arc<TargetConfig>,
    pub(crate) level: Arc<LevelConfig>,
    ended: watch::Receiver<Option<Ended>>,
    /// The timer for the grant's deadline, made by the first `ended()` and
    /// kept: the MySQL relay waits on a fresh `ended()` for every packet,
    /// and would otherwise register (and drop) a timer each time.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// A live grant and a watch on its end, before its target and level are
/// resolved into a [`Lease`].
pub(crate) struct GrantWatch {
    pub(crate) grant: Arc<Grant>,
    ended: watch::Receiver<Option<Ended>>,
}

impl GrantWatch {
    pub(crate) fn into_lease(self, target: Arc<TargetConfig>, level: Arc<LevelConfig>) -> Lease {
        Lease {
            grant: self.grant,
            target,
            level,
            ended: self.ended,
            deadline: None,
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Resolves when the grant ends: at `expires_at` or on revoke, whichever is first.
    /// Cancel-safe: it can sit in a `select!` and be polled again.
    pub(crate) async fn ended(&mut self) -> EndReason {
        let expires_at = self.grant.expires_at;
        let deadline = self.deadline.get_or_insert_with(|| {
            Box::pin(tokio::time::sleep_until(instant_for(expires_at).into()))
        });
        tokio::select! {
            biased;
            r = self.ended.wait_for(Option::is_some) => match r {
                Ok(ended) => ended.map_or(EndReason::Revoked, |e| e.reason),
                // The table dropped the grant without a reason: treat as revoked.
                Err(_) => EndReason::Revoked,
            },
            // Once elapsed, a Sleep stays ready: a later call ends at once.
            _ = deadline.as_mut() => EndReason::Expired,
        }
    }

    /// When the grant ended for `reason`: its deadline for an expiry, the
    /// moment of the revoke for a revoke (what the end-lag metric counts from).
    pub(crate) fn ended_at(&self, reason: EndReason) -> SystemTime {
        match (*self.ended.borrow(), reason) {
            (Some(e), _) if e.reason == reason => e.at,
            (_, EndReason::Expired) => self.grant.expires_at,
            (_, EndReason::Revoked) => SystemTime::now(),
        }
    }
}

/// The monotonic instant at which wall-clock time `at` is reached.
pub(crate) fn instant_for(at: SystemTime) -> Instant {
    let now = Instant::now();
    match at.duration_since(super::clock::now()) {
        Ok(d) => now + d,
        Err(_) => now - Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::grants::new_grant_id;

    fn target_t() -> Arc<TargetConfig> {
        Arc::new(TargetConfig {
            name: "t".into(),
            protocol: crate::config::Protocol::Postgres,
            address: "127.0.0.1:5432".into(),
            database: "t".into(),
            tls: crate::config::UpstreamTls::Disable,
            tls_server_name: None,
            connect_timeout: Duration::from_secs(5),
            levels: Default::default(),
            demo_create_read_accounts_with: None,
        })
    }

    fn level_read() -> Arc<LevelConfig> {
        Arc::new(LevelConfig {
            user: "t_read".into(),
            password: crate::config::SecretSource::None,
            read_only: true,
            allow_privileged_read_account: false,
        })
    }

    fn grant_for(lasting: Duration) -> Grant {
        let now = SystemTime::now();
        Grant {
            id: new_grant_id(),
            identity: "alice".into(),
            target: "t".into(),
            level: "read".into(),
            created_at: now,
            expires_at: now + lasting,
            reason: "test".into(),
            granted_by: "admin".into(),
            approved_by: Vec::new(),
            policy: None,
            request: None,
        }
    }

    #[tokio::test]
    async fn ended_waited_on_afresh_many_times_still_ends_at_the_deadline() {
        let table = GrantTable::default();
        table.insert(grant_for(Duration::from_millis(300)));
        let mut lease = table
            .lease_for("alice", "t", None, SystemTime::now())
            .unwrap()
            .into_lease(target_t(), level_read());
        let started = Instant::now();
        // As the MySQL relay does: a new `ended()` per wait, dropped when
        // something else finishes first.
        let mut waits = 0;
        let reason = loop {
            waits += 1;
            match tokio::time::timeout(Duration::from_millis(10), lease.ended()).await {
                Ok(reason) => break reason,
                Err(_) => continue,
            }
        };
        assert_eq!(reason, EndReason::Expired);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(290), "{took:?}");
        assert!(waits > 5, "{waits}");
        // Ended for good: the next wait returns at once.
        assert_eq!(
            tokio::time::timeout(Duration::from_millis(50), lease.ended()).await,
            Ok(EndReason::Expired)
        );
    }

    #[tokio::test]
    async fn a_revoke_ends_a_lease_before_its_deadline() {
        let table = GrantTable::default();
        let grant = table.insert(grant_for(Duration::from_secs(3600)));
        let mut lease = table
            .lease_for("alice", "t", None, SystemTime::now())
            .unwrap()
            .into_lease(target_t(), level_read());
        assert!(
            tokio::time::timeout(Duration::from_millis(20), lease.ended())
                .await
                .is_err()
        );
        table.end(&grant.id, EndReason::Revoked);
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(1), lease.ended()).await,
            Ok(EndReason::Revoked)
        );
    }
}
