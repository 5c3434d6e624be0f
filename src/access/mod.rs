//! The just-in-time access model: grants (and, later, policies and requests).
//!
//! This module knows nothing of sockets or wire protocols. The wire fronts
//! reach it through one call, [`AccessModel::authorize`], which returns a
//! [`Lease`]: the grant a session runs under and a watch on its deadline.

pub mod grants;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::audit::{AuditEvent, AuditLog};
use crate::config::Config;
pub use grants::{EndReason, Grant, GrantTable, Lease};

#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    #[error("target \"{0}\" does not exist")]
    UnknownTarget(String),
    #[error(
        "{identity} has no active grant for {target}; ask for one with `jitgate request {target} --level read --for 30m --reason \"...\"` and connect again once it is approved"
    )]
    NoGrant { identity: String, target: String },
}

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("target \"{0}\" does not exist")]
    UnknownTarget(String),
    #[error("target \"{target}\" has no level \"{level}\" (it has: {known})")]
    UnknownLevel {
        target: String,
        level: String,
        known: String,
    },
    #[error("identity \"{0}\" does not exist")]
    UnknownIdentity(String),
    #[error("duration must be between 1s and {max}", max = humantime::format_duration(*.0))]
    BadDuration(Duration),
    #[error("a reason is required")]
    MissingReason,
    #[error("grant \"{0}\" does not exist or has already ended")]
    NotFound(String),
    #[error("the audit log cannot be written, so nothing was changed: {0}")]
    Audit(#[from] crate::audit::AuditError),
}

/// Longest grant an admin can create directly.
pub const MAX_GRANT_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What an admin asks for when granting directly.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub identity: String,
    pub target: String,
    pub level: String,
    pub duration: Duration,
    pub reason: String,
    pub granted_by: String,
}

pub struct AccessModel {
    config: Arc<Config>,
    pub grants: GrantTable,
    audit: Arc<AuditLog>,
}

impl AccessModel {
    pub fn new(config: Arc<Config>, audit: Arc<AuditLog>) -> Arc<AccessModel> {
        Arc::new(AccessModel {
            config,
            grants: GrantTable::default(),
            audit,
        })
    }

    /// The one question a wire front asks: may `identity` use `target` now?
    pub fn authorize(&self, identity: &str, target: &str) -> Result<Lease, AuthorizeError> {
        if self.config.target(target).is_none() {
            return Err(AuthorizeError::UnknownTarget(target.to_owned()));
        }
        self.grants
            .lease_for(identity, target, SystemTime::now())
            .ok_or_else(|| AuthorizeError::NoGrant {
                identity: identity.to_owned(),
                target: target.to_owned(),
            })
    }

    /// Create a grant now (break-glass by an admin), audited before it takes effect.
    pub fn grant(self: &Arc<Self>, req: NewGrant) -> Result<Arc<Grant>, GrantError> {
        let target = self
            .config
            .target(&req.target)
            .ok_or_else(|| GrantError::UnknownTarget(req.target.clone()))?;
        if !target.levels.contains_key(&req.level) {
            return Err(GrantError::UnknownLevel {
                target: req.target.clone(),
                level: req.level.clone(),
                known: target.levels.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        if self.config.identity(&req.identity).is_none() {
            return Err(GrantError::UnknownIdentity(req.identity.clone()));
        }
        if req.duration < Duration::from_secs(1) || req.duration > MAX_GRANT_DURATION {
            return Err(GrantError::BadDuration(MAX_GRANT_DURATION));
        }
        if req.reason.trim().is_empty() {
            return Err(GrantError::MissingReason);
        }
        let now = SystemTime::now();
        let grant = Grant {
            id: grants::new_grant_id(),
            identity: req.identity,
            target: req.target,
            level: req.level,
            created_at: now,
            expires_at: now + req.duration,
            reason: req.reason,
            granted_by: req.granted_by,
        };
        self.audit.record(&AuditEvent {
            grant: Some(&grant.id),
            identity: Some(&grant.identity),
            target: Some(&grant.target),
            level: Some(&grant.level),
            reason: Some(&grant.reason),
            by: Some(&grant.granted_by),
            expires_at: Some(grant.expires_at),
            ..AuditEvent::new("grant_created")
        })?;
        let grant = self.grants.insert(grant);
        self.watch_expiry(grant.clone());
        Ok(grant)
    }

    /// End a grant now; its sessions see the change at once.
    pub fn revoke(&self, grant_id: &str, by: &str) -> Result<Arc<Grant>, GrantError> {
        let grant = self
            .grants
            .get(grant_id)
            .ok_or_else(|| GrantError::NotFound(grant_id.to_owned()))?;
        self.audit.record(&AuditEvent {
            grant: Some(&grant.id),
            identity: Some(&grant.identity),
            target: Some(&grant.target),
            level: Some(&grant.level),
            by: Some(by),
            ..AuditEvent::new("grant_revoked")
        })?;
        self.grants
            .end(grant_id, EndReason::Revoked)
            .ok_or_else(|| GrantError::NotFound(grant_id.to_owned()))
    }

    /// Remove the grant from the table at its deadline and record the expiry.
    /// Sessions do not wait for this: each one sleeps until the deadline itself.
    fn watch_expiry(self: &Arc<Self>, grant: Arc<Grant>) {
        let model = Arc::downgrade(self);
        tokio::spawn(async move {
            let wait = grant
                .expires_at
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::time::sleep(wait).await;
            let Some(model) = model.upgrade() else { return };
            if model.grants.end(&grant.id, EndReason::Expired).is_some() {
                let _ = model.audit.record(&AuditEvent {
                    grant: Some(&grant.id),
                    identity: Some(&grant.identity),
                    target: Some(&grant.target),
                    level: Some(&grant.level),
                    ..AuditEvent::new("grant_expired")
                });
            }
        });
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}
