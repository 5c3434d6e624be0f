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
use crate::access::policy::NoPolicy;
use crate::access::requests::{Action, RequestState};
use crate::access::store::SharedStoreError;
use crate::audit::AuditError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthorizeError {
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
    /// The proxy lost its fleet's store for too long and fails closed.
    #[error("{}", crate::wire::STORE_LOST)]
    StoreLost,
}

impl AuthorizeError {
    /// The target the client asked for, when it exists (for metrics labels:
    /// never a client-chosen string).
    pub(crate) fn known_target(&self) -> Option<&str> {
        match self {
            AuthorizeError::UnknownTarget(_) | AuthorizeError::StoreLost => None,
            AuthorizeError::NoGrant { target, .. }
            | AuthorizeError::NoGrantAtLevel { target, .. }
            | AuthorizeError::LevelGone { target, .. } => Some(target),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum GrantError {
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

/// The audit log or the store failed: a change could not be made durable,
/// or the store could not be read back at start.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Shared(#[from] SharedStoreError),
    /// A stored change does not fit the ones before it.
    #[error(
        "change {seq} in the store does not fit the changes before it ({why}); the store was changed by something other than jitgate"
    )]
    Corrupt { seq: u64, why: String },
}

/// Errors that may mean "another proxy changed the store first": the
/// change is decided again after catching up.
pub(crate) trait IsBehind {
    fn is_behind(&self) -> bool;
}

impl IsBehind for StoreError {
    fn is_behind(&self) -> bool {
        matches!(self, StoreError::Shared(SharedStoreError::Behind))
    }
}

impl IsBehind for AccessError {
    fn is_behind(&self) -> bool {
        matches!(self, AccessError::Behind)
    }
}

impl IsBehind for GrantError {
    fn is_behind(&self) -> bool {
        matches!(self, GrantError::Audit(e) if e.is_behind())
    }
}

/// Why a request, or a decision on one (approve, deny, cancel), was refused.
///
/// The admin API answers each cause with one status: bad input 400, not this
/// caller's move 403, no such request 404, no longer pending 409, a limit
/// used up 429, nothing could be made durable 503 (see `admin/error.rs`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum AccessError {
    #[error("a reason is required: say why access is needed, e.g. an incident or ticket number")]
    MissingReason,
    #[error(
        "the reason is {chars} characters long; at most {max} are accepted \
         (requests.max_reason_chars): name the ticket or incident and say why in a sentence or two"
    )]
    ReasonTooLong { chars: usize, max: usize },
    #[error(
        "the comment is {chars} characters long; at most {max} are accepted \
         (requests.max_reason_chars): name the ticket or incident and say why in a sentence or two"
    )]
    CommentTooLong { chars: usize, max: usize },
    #[error("target \"{target}\" does not exist (known targets: {})", .known.join(", "))]
    UnknownTarget { target: String, known: Vec<String> },
    #[error("target \"{target}\" has no level \"{level}\" (it has: {})", .known.join(", "))]
    UnknownLevel {
        target: String,
        level: String,
        known: Vec<String>,
    },
    #[error("the duration must be at least 1s, written like \"30m\" or \"2h\"")]
    DurationTooShort,
    /// No policy lets the requester ask for this; the message names the
    /// policies that cover the target.
    #[error(transparent)]
    NoPolicy(#[from] Box<NoPolicy>),
    /// When asking: the request's timeout or its auto-approved grant's end
    /// lies beyond what the clock can hold.
    #[error("the duration is too long")]
    DurationTooLong,
    /// At the last approval: the grant's end lies beyond what the clock can hold.
    #[error("the requested duration is too long")]
    RequestedDurationTooLong,
    #[error("you cannot approve your own request")]
    OwnApproval,
    #[error("you cannot deny your own request; cancel it instead")]
    OwnDenial,
    /// The request's policy has left the config: nobody may decide it.
    #[error(
        "request {id} was made under policy `{policy}`, which is no longer in the config, so nobody may {action} it"
    )]
    PolicyGone {
        id: String,
        policy: String,
        action: Action,
    },
    /// The request's policy no longer allows its target, level or duration.
    #[error(
        "policy `{policy}` no longer allows what request {id} asks for (the config changed since); deny it, and the requester asks again within the policy"
    )]
    PolicyNarrowed { id: String, policy: String },
    /// The decider is in none of the policy's approver groups.
    #[error(
        "{who} may not {action} request {id}: policy `{policy}` needs a member of group {}",
        .approvers.join(" or ")
    )]
    NotAnApprover {
        who: String,
        action: Action,
        id: String,
        policy: String,
        approvers: Vec<String>,
    },
    #[error("only the requester may cancel request {id}; approvers deny it instead")]
    NotTheRequester { id: String },
    /// The request does not exist, or the caller may not see it: one answer
    /// for both, so an id tells an outsider nothing.
    #[error(
        "request \"{id}\" does not exist or is not yours to see; list yours with GET /v1/requests"
    )]
    RequestNotFound { id: String },
    /// The request was already decided, cancelled or timed out.
    #[error(
        "request {id} is {}, no longer pending, so it cannot be {}",
        .state.as_str(),
        .action.past_tense()
    )]
    NotPending {
        id: String,
        state: RequestState,
        action: Action,
    },
    #[error(
        "{identity} already has {pending} pending requests, the most allowed \
         (requests.max_pending_per_identity = {max}); cancel one with \
         `jitgate cancel <id>` (`jitgate requests` lists them) or wait for a decision"
    )]
    TooManyPending {
        identity: String,
        pending: usize,
        max: usize,
    },
    /// A sign-on whose name was first issued to another provider account,
    /// or that a config identity's grants or requests still use.
    #[error(
        "the name {name} belongs to another account at the identity provider, or to grants and requests made before, so this sign-on gets no credential; if the name is now someone else's, an admin revokes what it holds and frees it with `jitgate logout --user {name} --free-name`"
    )]
    NameBound { name: String },
    /// Freeing a name that still holds grants or pending requests.
    #[error(
        "{name} still holds active grants or pending requests; revoke or deny them first (`jitgate grants`, `jitgate requests`), then free the name"
    )]
    NameHoldsAccess { name: String },
    /// The journal or the audit log cannot be written, so nothing changed.
    /// The message names no path; the cause is in the proxy's log.
    #[error(
        "the audit log or the journal cannot be written, so nothing was changed; an operator must check the proxy's log and disk"
    )]
    Unavailable,
    /// The fleet's store cannot be reached (or did not confirm): nothing
    /// changed, or the caller is told it may have.
    /// The message says what happened, not the store's own words (which
    /// may name its login or host); those are in the proxy's log.
    #[error("{}; try again once the store is back (GET /healthz says when)", .0.to_caller())]
    StoreDown(SharedStoreError),
    /// Another proxy changed the store first; decided again after catching
    /// up (never reaches a caller unless the retries run out).
    #[error("other proxies kept changing the store; try again")]
    Behind,
}

impl From<StoreError> for AccessError {
    fn from(e: StoreError) -> AccessError {
        match e {
            StoreError::Shared(SharedStoreError::Behind) => AccessError::Behind,
            StoreError::Shared(e) => {
                tracing::warn!(error = %e, "a change to requests or grants was refused: the store cannot be reached");
                AccessError::StoreDown(e)
            }
            e => {
                tracing::error!(error = %e, "a change to requests or grants was refused: it cannot be made durable");
                AccessError::Unavailable
            }
        }
    }
}
