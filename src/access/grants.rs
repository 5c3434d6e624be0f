//! Grants: what one is, and how the model makes and ends them.
//!
//! A grant comes from an admin directly ([`AccessModel::grant`], the break
//! glass) or from a request's last approval (`requests.rs`). It lives in the
//! [grant table](super::table) until its `expires_at`, when a timer ends it,
//! or until it is revoked. Each of these changes takes the model's one path
//! (journal, audit, apply, announce; see `mod.rs`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::access::clock;
use crate::access::journal::Entry;
use crate::access::requests::Request;
use crate::access::table::instant_for;
use crate::access::{
    ADMIN_GROUP, AccessEvent, AccessModel, Book, GrantError, IsBehind, StoreError,
};
use crate::audit::AuditEvent;
use crate::identity::Identity;

/// Why a grant (and so its sessions) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Expired,
    Revoked,
}

impl EndReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EndReason::Expired => "expired",
            EndReason::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Grant {
    pub id: String,
    pub identity: String,
    pub target: String,
    pub level: String,
    #[serde(with = "crate::access::requests::rfc3339_serde")]
    pub created_at: SystemTime,
    #[serde(with = "crate::access::requests::rfc3339_serde")]
    pub expires_at: SystemTime,
    pub reason: String,
    /// Who created it: the admin of a direct grant, or the approver whose
    /// approval completed the request (`policy:<name>` for auto-approval).
    pub granted_by: String,
    /// Everyone who approved the request behind it (empty for direct grants).
    #[serde(default)]
    pub approved_by: Vec<String>,
    /// The policy the request matched (`None` for direct grants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The request it came from (`None` for direct grants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

pub(crate) fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

pub(crate) fn new_grant_id() -> String {
    format!("g_{:016x}", rand::random::<u64>())
}

impl Grant {
    /// The grant an approved request creates: it runs for the requested duration
    /// from `now`. `None` if that overflows the clock.
    pub(super) fn for_request(
        request: &Request,
        granted_by: String,
        approved_by: Vec<String>,
        now: SystemTime,
    ) -> Option<Grant> {
        Some(Grant {
            id: new_grant_id(),
            identity: request.requested_by.clone(),
            target: request.target.clone(),
            level: request.level.clone(),
            created_at: now,
            expires_at: now.checked_add(request.duration())?,
            reason: request.reason.clone(),
            granted_by,
            approved_by,
            policy: Some(request.policy.clone()),
            request: Some(request.id.clone()),
        })
    }
}

/// Longest grant an admin can create directly.
pub(crate) const MAX_GRANT_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What an admin asks for when granting directly.
#[derive(Debug, Clone)]
pub(crate) struct NewGrant {
    pub identity: String,
    pub target: String,
    pub level: String,
    pub duration: Duration,
    pub reason: String,
    pub granted_by: String,
}

impl AccessModel {
    /// Create a grant now (break-glass by an admin), journaled and audited
    /// before it takes effect.
    pub(crate) fn grant(self: &Arc<Self>, req: NewGrant) -> Result<Arc<Grant>, GrantError> {
        self.check_new_grant(&req)?;
        self.retrying(|| self.grant_once(req.clone()))
    }

    fn grant_once(self: &Arc<Self>, req: NewGrant) -> Result<Arc<Grant>, GrantError> {
        let now = clock::now();
        let grant = Grant {
            id: new_grant_id(),
            identity: req.identity,
            target: req.target,
            level: req.level,
            created_at: now,
            expires_at: now + req.duration,
            reason: req.reason,
            granted_by: req.granted_by,
            approved_by: Vec::new(),
            policy: None,
            request: None,
        };
        let mut book = self.book_current()?;
        self.commit(
            &mut book,
            &Entry::GrantCreated {
                grant: grant.clone(),
            },
            &[grant_created_record(&grant)],
        )?;
        let grant = self.grants.insert(grant);
        self.announce_grant_created(&grant);
        drop(book);
        self.watch_expiry(grant.clone());
        Ok(grant)
    }

    /// A direct grant names a configured target, level and identity, runs
    /// for 1s up to [`MAX_GRANT_DURATION`], and says why in a few lines.
    fn check_new_grant(&self, req: &NewGrant) -> Result<(), GrantError> {
        let config = self.config();
        let target = config
            .target(&req.target)
            .ok_or_else(|| GrantError::UnknownTarget(req.target.clone()))?;
        if !target.levels.contains_key(&req.level) {
            return Err(GrantError::UnknownLevel {
                target: req.target.clone(),
                level: req.level.clone(),
                known: target.levels.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        // A person from the identity provider is known once signed on.
        if self.config().identity(&req.identity).is_none()
            && self.issued.list(&req.identity, clock::now()).is_empty()
        {
            return Err(GrantError::UnknownIdentity(req.identity.clone()));
        }
        if req.duration < Duration::from_secs(1) || req.duration > MAX_GRANT_DURATION {
            return Err(GrantError::BadDuration(MAX_GRANT_DURATION));
        }
        if req.reason.trim().is_empty() {
            return Err(GrantError::MissingReason);
        }
        if let Some((chars, max)) = self.over_length(req.reason.trim()) {
            return Err(GrantError::ReasonTooLong { chars, max });
        }
        Ok(())
    }

    /// End a grant now; its sessions see the change at once. Who may do this
    /// is the caller's question ([`AccessModel::may_revoke`]).
    pub(crate) fn revoke(
        self: &Arc<Self>,
        grant_id: &str,
        by: &str,
    ) -> Result<Arc<Grant>, GrantError> {
        self.retrying(|| self.revoke_once(grant_id, by))
    }

    fn revoke_once(self: &Arc<Self>, grant_id: &str, by: &str) -> Result<Arc<Grant>, GrantError> {
        let mut book = self.book_current()?;
        if book.store.as_ref().is_some_and(|s| s.shared()) {
            // A fleet's revoke is stored first: once it is, every proxy ends
            // the grant's sessions; if it cannot be, none does and the
            // caller hears so (503), which is safer than this proxy alone
            // ending them while the others carry on.
            let grant = self
                .grants
                .get(grant_id)
                .ok_or_else(|| GrantError::NotFound(grant_id.to_owned()))?;
            self.record_revoke(&mut book, &grant, by)?;
            self.grants.end(grant_id, EndReason::Revoked);
            self.announce_grant_revoked(&grant, by);
            return Ok(grant);
        }
        // End the grant first and record it after. Writing the journal means
        // an fsync, milliseconds on a busy disk, and there is nothing to gain
        // by letting the grant's sessions run through it: a revoke is the
        // safe direction. If the record then fails, the grant stays ended in
        // this process, and the error says that a restart would restore it.
        let grant = self
            .grants
            .end(grant_id, EndReason::Revoked)
            .ok_or_else(|| GrantError::NotFound(grant_id.to_owned()))?;
        self.record_revoke(&mut book, &grant, by).map_err(|cause| {
            tracing::error!(
                grant = %grant.id,
                error = %cause,
                "a revoked grant's sessions were ended, but the revoke could not be recorded; a restart would restore the grant until it expires"
            );
            GrantError::RevokeNotRecorded {
                id: grant.id.clone(),
                cause,
            }
        })?;
        self.announce_grant_revoked(&grant, by);
        Ok(grant)
    }

    /// Store and audit `by`'s revoke of `grant`.
    fn record_revoke(&self, book: &mut Book, grant: &Grant, by: &str) -> Result<(), StoreError> {
        self.commit(
            book,
            &Entry::GrantRevoked {
                id: grant.id.clone(),
                by: by.to_owned(),
            },
            &[AuditEvent {
                by: Some(by),
                ..grant_record("grant_revoked", grant)
            }],
        )
    }

    fn announce_grant_revoked(&self, grant: &Grant, by: &str) {
        self.announce(AccessEvent {
            event: "grant_revoked",
            request: None,
            grant: Some(grant.clone()),
            by: Some(by.to_owned()),
            url: None,
            text: format!(
                "{by} revokes {}'s {} on {} ({})",
                grant.identity, grant.level, grant.target, grant.id
            ),
        });
    }

    /// The grantee, a member of an approver group of the grant's policy, or
    /// an admin. (A direct grant has no policy: the grantee or an admin.)
    pub(crate) fn may_revoke(&self, caller: &Identity, grant: &Grant) -> bool {
        caller.name == grant.identity
            || caller.in_group(ADMIN_GROUP)
            || grant
                .policy
                .as_deref()
                .and_then(|p| self.policy(p))
                .is_some_and(|p| p.lets_approve(caller))
    }

    /// Remove the grant from the table at its deadline and record the expiry.
    /// Sessions do not wait for this: each one sleeps until the deadline itself.
    pub(super) fn watch_expiry(self: &Arc<Self>, grant: Arc<Grant>) {
        let model = Arc::downgrade(self);
        let runtime = self.runtime.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep_until(instant_for(grant.expires_at).into()).await;
            // Storing it may wait on the store: not on a runtime worker.
            runtime.spawn_blocking(move || {
                let Some(model) = model.upgrade() else { return };
                model.end_expired_grant(&grant.id);
            });
        });
    }

    /// Record a grant's expiry. (With a fleet, every proxy's timer fires;
    /// the first to reach the store records it, the others find it ended
    /// once they catch up.)
    fn end_expired_grant(self: &Arc<Self>, id: &str) {
        let stored = self.retrying(|| {
            let mut book = match self.book_current() {
                Ok(book) => book,
                // Decided on what this proxy knows: the grant ends anyway.
                Err(e) if !e.is_behind() => self.book(),
                Err(e) => return Err(e),
            };
            // Revoked or expired meanwhile: nothing to do.
            let Some(grant) = self.grants.get(id) else {
                return Ok(());
            };
            // The sessions ended at the deadline whatever happens here. If
            // the expiry cannot be written now, the next start writes it (a
            // grant past its `expires_at` is never restored).
            let stored = self.commit(
                &mut book,
                &Entry::GrantExpired { id: id.to_owned() },
                &[grant_record("grant_expired", &grant)],
            );
            if stored.as_ref().is_err_and(IsBehind::is_behind) {
                return stored;
            }
            self.grants.end(id, EndReason::Expired);
            self.announce_grant_expired(&grant);
            stored
        });
        if let Err(e) = stored {
            tracing::error!(grant = id, error = %e, "cannot record a grant's expiry; it has ended anyway");
        }
    }

    /// At start, after the restore: grants that ended while no proxy was
    /// running are ended now (stored, audited and announced).
    pub(super) fn resume_grants(&self, book: &mut Book, now: SystemTime) -> Result<(), StoreError> {
        for grant in self.grants.ended_by(now) {
            let detail = format!(
                "ended at {} while jitgate was not running",
                humantime::format_rfc3339_millis(grant.expires_at)
            );
            self.commit(
                book,
                &Entry::GrantExpired {
                    id: grant.id.clone(),
                },
                &[AuditEvent {
                    expires_at: Some(grant.expires_at),
                    detail: Some(&detail),
                    ..grant_record("grant_expired", &grant)
                }],
            )?;
            self.grants.end(&grant.id, EndReason::Expired);
            self.announce_grant_expired(&grant);
        }
        Ok(())
    }

    /// "alice has read on demo-pg until …, granted by bob".
    pub(super) fn announce_grant_created(&self, grant: &Grant) {
        let approvers = if grant.approved_by.is_empty() {
            String::new()
        } else {
            format!(", approved by {}", grant.approved_by.join(", "))
        };
        self.announce(AccessEvent {
            event: "grant_created",
            request: None,
            grant: Some(grant.clone()),
            by: Some(grant.granted_by.clone()),
            url: None,
            text: format!(
                "{} has {} on {} until {} ({}), granted by {}{approvers}",
                grant.identity,
                grant.level,
                grant.target,
                humantime::format_rfc3339_seconds(grant.expires_at),
                grant.id,
                grant.granted_by
            ),
        });
    }

    fn announce_grant_expired(&self, grant: &Grant) {
        self.announce(AccessEvent {
            event: "grant_expired",
            request: None,
            grant: Some(grant.clone()),
            by: None,
            url: None,
            text: format!(
                "{}'s {} on {} has expired ({})",
                grant.identity, grant.level, grant.target, grant.id
            ),
        });
    }
}

/// What every audit record about a grant names.
fn grant_record<'a>(event: &'a str, g: &'a Grant) -> AuditEvent<'a> {
    AuditEvent {
        grant: Some(&g.id),
        identity: Some(&g.identity),
        target: Some(&g.target),
        level: Some(&g.level),
        request: g.request.as_deref(),
        policy: g.policy.as_deref(),
        ..AuditEvent::new(event)
    }
}

/// The `grant_created` record: the grant, why, by whom, until when.
pub(super) fn grant_created_record(g: &Grant) -> AuditEvent<'_> {
    AuditEvent {
        reason: Some(&g.reason),
        by: Some(&g.granted_by),
        expires_at: Some(g.expires_at),
        ..grant_record("grant_created", g)
    }
}
