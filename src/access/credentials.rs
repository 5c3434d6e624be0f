//! Issued credentials in the model: issuing one after a sign-on, logging
//! out, and the end of the sessions opened with one.
//!
//! Both changes go through the store like a grant's, so every proxy of a
//! fleet accepts a new credential and ends a logged-out one's sessions. An
//! expiry needs no change in the store: `expires_at` is absolute, every
//! proxy refuses the credential from then on and ends its sessions by its
//! own timer.

use std::sync::Arc;
use std::time::Duration;

use super::journal::Entry;
use super::{AccessError, AccessModel, Book, clock, table::instant_for};
use crate::audit::AuditEvent;
use crate::identity::CredentialRef;
use crate::identity::issued::{CredentialInfo, Holder, NewCredential};
use crate::session::KillCause;

/// Who logged out, and what.
pub(crate) struct Logout<'a> {
    pub(crate) identity: &'a str,
    /// One credential, or every one the identity holds.
    pub(crate) id: Option<&'a str>,
    pub(crate) by: &'a str,
    /// An admin's logout of the person: the name is freed for another
    /// provider account too.
    pub(crate) unbind: bool,
}

impl AccessModel {
    /// Issue a credential for `holder`, valid for `ttl`; when the holder
    /// already has `max_live`, the oldest end.
    pub(crate) fn issue_credential(
        self: &Arc<Self>,
        holder: &Holder<'_>,
        ttl: Duration,
        max_live: usize,
    ) -> Result<NewCredential, AccessError> {
        self.retrying(|| self.issue_credential_once(holder, ttl, max_live))
    }

    fn issue_credential_once(
        self: &Arc<Self>,
        holder: &Holder<'_>,
        ttl: Duration,
        max_live: usize,
    ) -> Result<NewCredential, AccessError> {
        let mut book = self.book_current()?;
        // A name is the provider account it was first issued to: a claim
        // that changed (an email edited at the provider) names nobody else.
        let now = clock::now();
        match self.issued.subject_of(holder.identity) {
            Some((issuer, subject)) if issuer == holder.issuer && subject != holder.subject => {
                return Err(AccessError::NameBound {
                    name: holder.identity.to_owned(),
                });
            }
            // Never signed on: grants or requests under the name are a
            // config identity's, which a sign-on must not inherit.
            None if self.holds_access(&book, holder.identity, now) => {
                return Err(AccessError::NameBound {
                    name: holder.identity.to_owned(),
                });
            }
            _ => {}
        }
        let expires_at = now.checked_add(ttl).ok_or(AccessError::DurationTooLong)?;
        let live = self.issued.list(holder.identity, now);
        let over = (live.len() + 1).saturating_sub(max_live.max(1));
        let ended: Vec<String> = live.iter().take(over).map(|c| c.id.clone()).collect();
        // With every live credential ended, the new one may start afresh.
        let shape = if ended.len() == live.len() {
            None
        } else {
            self.issued.shape_for(holder.identity, now)
        };
        let new = NewCredential::generate(holder, now, expires_at, shape);
        let detail = format!(
            "signed on at {} as {}; groups: {}",
            holder.issuer,
            holder.subject,
            if holder.groups.is_empty() {
                "none".to_owned()
            } else {
                holder.groups.join(", ")
            }
        );
        let mut records = vec![AuditEvent {
            identity: Some(holder.identity),
            credential: Some(&new.credential.id),
            expires_at: Some(expires_at),
            detail: Some(&detail),
            ..AuditEvent::new("credential_issued")
        }];
        records.extend(ended.iter().map(|id| AuditEvent {
            identity: Some(holder.identity),
            credential: Some(id),
            reason: Some("replaced"),
            detail: Some("the oldest of more credentials than oidc.max_credentials_per_person"),
            ..AuditEvent::new("credential_revoked")
        }));
        let entry = Entry::CredentialIssued {
            credential: new.credential.clone(),
            ended: ended.clone(),
        };
        self.commit(&mut book, &entry, &records)?;
        self.apply_own(&mut book, entry);
        Ok(new)
    }

    /// Log out one credential or all of an identity's; the ids that ended
    /// (none when there was nothing live to end: nothing is stored then).
    pub(crate) fn logout(
        self: &Arc<Self>,
        logout: &Logout<'_>,
    ) -> Result<Vec<CredentialInfo>, AccessError> {
        self.retrying(|| self.logout_once(logout))
    }

    fn logout_once(
        self: &Arc<Self>,
        logout: &Logout<'_>,
    ) -> Result<Vec<CredentialInfo>, AccessError> {
        let mut book = self.book_current()?;
        let ending: Vec<CredentialInfo> = self
            .issued
            .list(logout.identity, clock::now())
            .into_iter()
            .filter(|c| logout.id.is_none_or(|id| c.id == id))
            .collect();
        let unbinding = logout.unbind && self.issued.subject_of(logout.identity).is_some();
        // Freeing a name that still holds access would hand it to whoever
        // signs on with the name next.
        if unbinding && self.holds_access(&book, logout.identity, clock::now()) {
            return Err(AccessError::NameHoldsAccess {
                name: logout.identity.to_owned(),
            });
        }
        if ending.is_empty() && !unbinding {
            return Ok(ending);
        }
        let mut records: Vec<AuditEvent<'_>> = ending
            .iter()
            .map(|c| AuditEvent {
                identity: Some(logout.identity),
                credential: Some(&c.id),
                by: Some(logout.by),
                reason: Some("logged_out"),
                ..AuditEvent::new("credential_revoked")
            })
            .collect();
        if unbinding {
            records.push(AuditEvent {
                identity: Some(logout.identity),
                by: Some(logout.by),
                detail: Some("the name is free for another account at the identity provider"),
                ..AuditEvent::new("identity_unbound")
            });
        }
        let entry = Entry::CredentialsRevoked {
            identity: logout.identity.to_owned(),
            id: logout.id.map(str::to_owned),
            by: logout.by.to_owned(),
            unbind: unbinding,
        };
        self.commit(&mut book, &entry, &records)?;
        self.apply_own(&mut book, entry);
        Ok(ending)
    }

    /// Does `identity` hold an active grant or a pending request?
    fn holds_access(&self, book: &Book, identity: &str, now: std::time::SystemTime) -> bool {
        self.grants
            .active(now)
            .iter()
            .any(|g| g.identity == identity)
            || book
                .requests
                .values()
                .any(|r| r.requested_by == identity && r.state == super::RequestState::Pending)
    }

    /// Apply a change this proxy has just stored.
    fn apply_own(self: &Arc<Self>, book: &mut Book, entry: Entry) {
        if let Err(why) = self.apply(book, entry, true) {
            // Decided on this very state, so it cannot happen; say so if it does.
            tracing::error!(why, "a credential change just stored does not apply");
        }
    }

    /// End the sessions opened with `identity`'s credentials `ids` (once
    /// they have been taken out of the table), while the proxy runs.
    pub(super) fn end_credentials(&self, identity: &str, ids: &[String], live: bool) {
        if live
            && !ids.is_empty()
            && let Some(sessions) = self.local_sessions.get()
        {
            sessions.end_credentials(identity, ids, KillCause::LoggedOut);
        }
    }

    /// At its `expires_at`, end the sessions opened with `identity`'s `credential`.
    pub(super) fn watch_credential_expiry(
        self: &Arc<Self>,
        identity: &str,
        credential: &CredentialRef,
    ) {
        let model = Arc::downgrade(self);
        let identity = identity.to_owned();
        let id = credential.id.clone();
        let expires_at = credential.expires_at;
        self.runtime.spawn(async move {
            tokio::time::sleep_until(instant_for(expires_at).into()).await;
            let Some(model) = model.upgrade() else { return };
            // Whatever the table says now (a newer credential of the name
            // may have taken this one out already), a session opened with
            // it ends at its expiry.
            if let Some(sessions) = model.local_sessions.get() {
                sessions.end_credentials(
                    &identity,
                    std::slice::from_ref(&id),
                    KillCause::CredentialExpired,
                );
            }
            // Logged out meanwhile, or taken out by a newer one: no record.
            if model.issued.remove(&identity, Some(&id)).is_empty() {
                return;
            }
            let _ = model.audit.record(&AuditEvent {
                identity: Some(&identity),
                credential: Some(&id),
                expires_at: Some(expires_at),
                ..AuditEvent::new("credential_expired")
            });
        });
    }

    /// After the restore: watch every live credential's expiry.
    pub(super) fn resume_credentials(self: &Arc<Self>) {
        for identity in self.issued.all_live(clock::now()) {
            if let Some(credential) = &identity.credential {
                self.watch_credential_expiry(&identity.name, credential);
            }
        }
    }
}
