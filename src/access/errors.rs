//! Why the access model says no: one enum per question asked of it, one
//! variant per cause.
//!
//! The wire gate turns an [`AuthorizeError`] into a refusal on the wire; the
//! admin API turns a [`GrantError`] or an [`AccessError`] into a status and a
//! JSON body (`admin/error.rs`). The texts are written for the person who
//! reads them: they say what happened and what to do next, and they name no
//! server path or secret.

use std::time::Duration;

use crate::access::journal::JournalError;
use crate::audit::AuditError;

#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    #[error("target \"{0}\" does not exist")]
    UnknownTarget(String),
    #[error(
        "{identity} has no active grant for {target}; ask for one with `jitgate request {target} --level read --for 30m --reason \"...\"` and connect again once it is approved"
    )]
    NoGrant { identity: String, target: String },
    #[error(
        "{identity} has no active grant for {target} at level {level}; ask for one with `jitgate request {target} --level {level} --for 30m --reason \"...\"`, or connect to {target} without @{level} to use the newest grant you hold"
    )]
    NoGrantAtLevel {
        identity: String,
        target: String,
        level: String,
    },
    /// The grant names a level its target no longer has.
    #[error("level \"{level}\" of your grant is no longer configured on {target}")]
    LevelGone { target: String, level: String },
}

impl AuthorizeError {
    /// The target the client asked for, when it exists (for metrics labels:
    /// never a client-chosen string).
    pub fn known_target(&self) -> Option<&str> {
        match self {
            AuthorizeError::UnknownTarget(_) => None,
            AuthorizeError::NoGrant { target, .. }
            | AuthorizeError::NoGrantAtLevel { target, .. }
            | AuthorizeError::LevelGone { target, .. } => Some(target),
        }
    }
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
    #[error("the reason is {chars} characters long; at most {max} are accepted")]
    ReasonTooLong { chars: usize, max: usize },
    #[error("grant \"{0}\" does not exist or has already ended")]
    NotFound(String),
    /// The audit log or the journal cannot be written.
    #[error("the audit log or the journal cannot be written, so nothing was changed: {0}")]
    Audit(#[from] StoreError),
    /// The grant has ended (its sessions are closed), but the revoke could
    /// not be made durable: a restart would restore the grant.
    #[error(
        "grant \"{id}\" has ended and its sessions are closed, but the revoke could not be recorded, so a restart would restore the grant until it expires: {cause}"
    )]
    RevokeNotRecorded { id: String, cause: StoreError },
}

/// The audit log or the journal failed: a change could not be made durable,
/// or the journal could not be read back at start.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Why a lifecycle operation (request, approve, deny, cancel, revoke) was refused.
/// Each variant maps to one HTTP status in the admin API.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Bad input (400): unknown target or level, bad duration, missing reason,
    /// or no policy allows the request (the message names the policy needed).
    #[error("{0}")]
    Invalid(String),
    /// Not allowed for this caller (403): self-approval, approver outside the policy...
    #[error("{0}")]
    Forbidden(String),
    /// No such request or grant (404).
    #[error("{0}")]
    NotFound(String),
    /// The request is no longer pending (409).
    #[error("{0}")]
    Conflict(String),
    /// The caller has used up a limit (429): too many pending requests.
    #[error("{0}")]
    TooMany(String),
    /// The journal or audit log cannot be written; nothing changed (503).
    /// The message names no path; the cause is in the proxy's log.
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for AccessError {
    fn from(e: StoreError) -> AccessError {
        tracing::error!(error = %e, "a change to requests or grants was refused: it cannot be made durable");
        AccessError::Unavailable(
            "the audit log or the journal cannot be written, so nothing was changed; an operator must check the proxy's log and disk".to_owned(),
        )
    }
}
