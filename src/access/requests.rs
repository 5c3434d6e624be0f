//! Access requests: what one is, and how the model asks, decides, cancels
//! and times them out.
//!
//! A request is identity + target + level + duration + reason, matched to a
//! policy when it is made. It stays `pending` until enough distinct approvers
//! say yes (a grant is created at that moment and runs for the requested
//! duration from then), someone denies it, the requester cancels it, or it
//! times out. This file holds the shapes that the admin API returns and the
//! journal stores, and the lifecycle: asking, deciding, cancelling, timing
//! out, and who may see and decide a request. Each change takes the model's
//! one path (journal, audit, apply, announce; see `mod.rs`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::access::clock;
use crate::access::grants::{grant_created_record, rfc3339};
use crate::access::journal::Entry;
use crate::access::policy::{self, format_duration};
use crate::access::table::instant_for;
use crate::access::{ADMIN_GROUP, AccessError, AccessEvent, AccessModel, Book, Grant, StoreError};
use crate::audit::AuditEvent;
use crate::config::PolicyConfig;
use crate::identity::Identity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    Pending,
    Approved,
    Denied,
    Cancelled,
    Expired,
}

impl RequestState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::Cancelled => "cancelled",
            RequestState::Expired => "expired",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<RequestState> {
        Some(match s {
            "pending" => RequestState::Pending,
            "approved" => RequestState::Approved,
            "denied" => RequestState::Denied,
            "cancelled" => RequestState::Cancelled,
            "expired" => RequestState::Expired,
            _ => return None,
        })
    }
}

/// What a person does to a pending request; the refusals name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Approve,
    Deny,
    Cancel,
}

impl Action {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Deny => "deny",
            Action::Cancel => "cancel",
        }
    }

    pub(crate) fn past_tense(self) -> &'static str {
        match self {
            Action::Approve => "approved",
            Action::Deny => "denied",
            Action::Cancel => "cancelled",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One person's decision on a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    pub by: String,
    #[serde(with = "rfc3339_serde")]
    pub at: SystemTime,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    pub requested_by: String,
    pub target: String,
    pub level: String,
    /// Requested grant duration, in seconds.
    pub duration_secs: u64,
    pub reason: String,
    /// The policy the request was matched to.
    pub policy: String,
    pub state: RequestState,
    #[serde(with = "rfc3339_serde")]
    pub created_at: SystemTime,
    /// When a pending request times out.
    #[serde(with = "rfc3339_serde")]
    pub expires_at: SystemTime,
    /// Distinct approvals needed.
    pub approvals_required: u32,
    pub approvals: Vec<Decision>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub denial: Option<Decision>,
    /// The grant created when the request was approved.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grant: Option<String>,
    /// True when the policy's auto-approval created the grant.
    #[serde(default)]
    pub auto_approved: bool,
}

impl Request {
    pub(crate) fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_secs)
    }
}

/// What a requester asks for.
#[derive(Debug, Clone)]
pub(crate) struct NewRequest {
    pub target: String,
    pub level: String,
    pub duration: Duration,
    pub reason: String,
}

pub(crate) fn new_request_id() -> String {
    format!("r_{:016x}", rand::random::<u64>())
}

impl AccessModel {
    /// Ask for access. Matched against the policies (the first that allows
    /// it, in config order); approved at once when that policy auto-approves
    /// the requester for this duration.
    pub(crate) fn request(
        self: &Arc<Self>,
        requester: &Identity,
        req: NewRequest,
    ) -> Result<Request, AccessError> {
        self.retrying(|| self.request_once(requester, req.clone()))
    }

    fn request_once(
        self: &Arc<Self>,
        requester: &Identity,
        req: NewRequest,
    ) -> Result<Request, AccessError> {
        let policy = self.check_request(requester, &req)?;
        let (request, grant) = self.new_request(requester, req, &policy, clock::now())?;
        let created_detail = format!("for {}", format_duration(request.duration()));
        let records = created_records(&request, grant.as_ref(), &created_detail);
        let mut book = self.book_current()?;
        if grant.is_none() {
            self.check_pending_limit(&book, &request)?;
        }
        self.commit(
            &mut book,
            &Entry::RequestCreated {
                request: request.clone(),
                grant: grant.clone(),
            },
            &records,
        )?;
        book.requests.insert(request.id.clone(), request.clone());
        let grant = grant.map(|g| self.grants.insert(g));
        self.announce_request_created(&request, &policy, grant.as_deref());
        drop(book);
        match grant {
            Some(grant) => self.watch_expiry(grant),
            None => self.watch_pending(request.id.clone(), request.expires_at),
        }
        Ok(request)
    }

    /// The policy that lets `requester` ask for this, once the request makes
    /// sense: a reason of a fitting length, a configured target and level,
    /// at least a second.
    fn check_request(
        &self,
        requester: &Identity,
        req: &NewRequest,
    ) -> Result<PolicyConfig, AccessError> {
        let config = self.config();
        let reason = req.reason.trim();
        if reason.is_empty() {
            return Err(AccessError::MissingReason);
        }
        if let Some((chars, max)) = self.over_length(reason) {
            return Err(AccessError::ReasonTooLong { chars, max });
        }
        let Some(target) = config.target(&req.target) else {
            return Err(AccessError::UnknownTarget {
                target: req.target.clone(),
                known: config.targets.iter().map(|t| t.name.clone()).collect(),
            });
        };
        if !target.levels.contains_key(&req.level) {
            return Err(AccessError::UnknownLevel {
                target: req.target.clone(),
                level: req.level.clone(),
                known: target.levels.keys().cloned().collect(),
            });
        }
        if req.duration < Duration::from_secs(1) {
            return Err(AccessError::DurationTooShort);
        }
        Ok(policy::find(
            &config.policies,
            requester,
            &req.target,
            &req.level,
            req.duration,
        )?
        .clone())
    }

    /// The request made `now` under `policy`, pending until the configured
    /// timeout, and the grant it creates at once if the policy auto-approves it.
    fn new_request(
        &self,
        requester: &Identity,
        req: NewRequest,
        policy: &PolicyConfig,
        now: SystemTime,
    ) -> Result<(Request, Option<Grant>), AccessError> {
        let duration = Duration::from_secs(req.duration.as_secs());
        let mut request = Request {
            id: new_request_id(),
            requested_by: requester.name.clone(),
            target: req.target,
            level: req.level,
            duration_secs: duration.as_secs(),
            reason: req.reason.trim().to_owned(),
            policy: policy.name.clone(),
            state: RequestState::Pending,
            created_at: now,
            expires_at: now
                .checked_add(self.config().requests.pending_timeout)
                .ok_or(AccessError::DurationTooLong)?,
            approvals_required: policy.approvals,
            approvals: Vec::new(),
            denial: None,
            grant: None,
            auto_approved: false,
        };
        if !policy.auto_approves(requester, duration) {
            return Ok((request, None));
        }
        let grant =
            Grant::for_request(&request, format!("policy:{}", policy.name), Vec::new(), now)
                .ok_or(AccessError::DurationTooLong)?;
        request.state = RequestState::Approved;
        request.auto_approved = true;
        request.grant = Some(grant.id.clone());
        Ok((request, Some(grant)))
    }

    /// Refuse a request that would go past `requests.max_pending_per_identity`.
    /// Counted under the book's lock, so parallel requests cannot all fit.
    fn check_pending_limit(&self, book: &Book, request: &Request) -> Result<(), AccessError> {
        let now = request.created_at;
        let max = self.config().requests.max_pending_per_identity;
        let pending = book
            .requests
            .values()
            .filter(|r| r.requested_by == request.requested_by)
            .filter(|r| r.state == RequestState::Pending && r.expires_at > now)
            .count();
        if pending >= max {
            return Err(AccessError::TooManyPending {
                identity: request.requested_by.clone(),
                pending,
                max,
            });
        }
        Ok(())
    }

    /// "alice requests read on demo-pg for 30m: …", and for an auto-approved
    /// request its approval and its grant.
    fn announce_request_created(
        &self,
        request: &Request,
        policy: &PolicyConfig,
        grant: Option<&Grant>,
    ) {
        self.announce(AccessEvent {
            event: "request_created",
            request: Some(request.clone()),
            grant: None,
            by: Some(request.requested_by.clone()),
            url: None,
            text: format!(
                "{} requests {} on {} for {}: {} ({})",
                request.requested_by,
                request.level,
                request.target,
                format_duration(request.duration()),
                request.reason,
                request.id
            ),
        });
        if let Some(grant) = grant {
            self.announce(AccessEvent {
                event: "request_approved",
                request: Some(request.clone()),
                grant: None,
                by: None,
                url: None,
                text: format!(
                    "policy `{}` auto-approves {}'s request for {} on {} ({})",
                    policy.name, request.requested_by, request.level, request.target, request.id
                ),
            });
            self.announce_grant_created(grant);
        }
    }

    /// Approve a pending request. When the policy's distinct approvals are
    /// reached, the grant is created now and runs for the requested duration.
    /// Approving again a request one already approved changes nothing.
    pub(crate) fn approve(
        self: &Arc<Self>,
        approver: &Identity,
        id: &str,
        comment: Option<String>,
    ) -> Result<Request, AccessError> {
        let comment = self.checked_comment(comment)?;
        self.retrying(|| self.approve_once(approver, id, comment.clone()))
    }

    fn approve_once(
        self: &Arc<Self>,
        approver: &Identity,
        id: &str,
        comment: Option<String>,
    ) -> Result<Request, AccessError> {
        let mut book = self.book_current()?;
        let mut request = self.decidable(&mut book, approver, id, Action::Approve)?;
        if request.approvals.iter().any(|d| d.by == approver.name) {
            return Ok(request);
        }
        let now = clock::now();
        let decision = Decision {
            by: approver.name.clone(),
            at: now,
            comment,
        };
        request.approvals.push(decision.clone());
        let count = request.approvals.len();
        let grant = if count >= request.approvals_required as usize {
            let approved_by = request.approvals.iter().map(|d| d.by.clone()).collect();
            let grant = Grant::for_request(&request, approver.name.clone(), approved_by, now)
                .ok_or(AccessError::RequestedDurationTooLong)?;
            request.state = RequestState::Approved;
            request.grant = Some(grant.id.clone());
            Some(grant)
        } else {
            None
        };

        let progress = format!("approval {count} of {}", request.approvals_required);
        let approvers = grant
            .as_ref()
            .map(|g| format!("approved by {}", g.approved_by.join(", ")));
        let mut records = vec![AuditEvent {
            by: Some(&approver.name),
            comment: decision.comment.as_deref(),
            detail: Some(&progress),
            ..request_record("request_approved", &request)
        }];
        if let Some(grant) = &grant {
            records.push(AuditEvent {
                detail: approvers.as_deref(),
                ..grant_created_record(grant)
            });
        }
        self.commit(
            &mut book,
            &Entry::RequestApproved {
                id: request.id.clone(),
                decision: decision.clone(),
                grant: grant.clone(),
            },
            &records,
        )?;
        book.requests.insert(request.id.clone(), request.clone());
        let grant = grant.map(|g| self.grants.insert(g));
        self.announce(AccessEvent {
            event: "request_approved",
            request: Some(request.clone()),
            grant: None,
            by: Some(approver.name.clone()),
            url: None,
            text: format!(
                "{} approves {}'s request for {} on {} ({}), {progress}{}",
                approver.name,
                request.requested_by,
                request.level,
                request.target,
                request.id,
                comment_suffix(&decision.comment)
            ),
        });
        if let Some(grant) = &grant {
            self.announce_grant_created(grant);
        }
        drop(book);
        if let Some(grant) = grant {
            self.watch_expiry(grant);
        }
        Ok(request)
    }

    /// Refuse a pending request. One denial ends it, whatever approvals it had.
    pub(crate) fn deny(
        self: &Arc<Self>,
        approver: &Identity,
        id: &str,
        comment: Option<String>,
    ) -> Result<Request, AccessError> {
        let comment = self.checked_comment(comment)?;
        self.retrying(|| self.deny_once(approver, id, comment.clone()))
    }

    fn deny_once(
        self: &Arc<Self>,
        approver: &Identity,
        id: &str,
        comment: Option<String>,
    ) -> Result<Request, AccessError> {
        let mut book = self.book_current()?;
        let mut request = self.decidable(&mut book, approver, id, Action::Deny)?;
        let decision = Decision {
            by: approver.name.clone(),
            at: clock::now(),
            comment,
        };
        request.state = RequestState::Denied;
        request.denial = Some(decision.clone());
        self.commit(
            &mut book,
            &Entry::RequestDenied {
                id: request.id.clone(),
                decision: decision.clone(),
            },
            &[AuditEvent {
                by: Some(&approver.name),
                comment: decision.comment.as_deref(),
                ..request_record("request_denied", &request)
            }],
        )?;
        book.requests.insert(request.id.clone(), request.clone());
        self.announce(AccessEvent {
            event: "request_denied",
            request: Some(request.clone()),
            grant: None,
            by: Some(approver.name.clone()),
            url: None,
            text: format!(
                "{} denies {}'s request for {} on {} ({}){}",
                approver.name,
                request.requested_by,
                request.level,
                request.target,
                request.id,
                comment_suffix(&decision.comment)
            ),
        });
        Ok(request)
    }

    /// The requester withdraws a pending request.
    pub(crate) fn cancel(
        self: &Arc<Self>,
        requester: &Identity,
        id: &str,
    ) -> Result<Request, AccessError> {
        self.retrying(|| self.cancel_once(requester, id))
    }

    fn cancel_once(
        self: &Arc<Self>,
        requester: &Identity,
        id: &str,
    ) -> Result<Request, AccessError> {
        let mut book = self.book_current()?;
        let request = self.visible_request(&book, requester, id)?;
        if request.requested_by != requester.name {
            return Err(AccessError::NotTheRequester { id: id.to_owned() });
        }
        let mut request = self.pending(&mut book, id, Action::Cancel)?;
        request.state = RequestState::Cancelled;
        self.commit(
            &mut book,
            &Entry::RequestCancelled {
                id: request.id.clone(),
                by: requester.name.clone(),
            },
            &[AuditEvent {
                by: Some(&requester.name),
                ..request_record("request_cancelled", &request)
            }],
        )?;
        book.requests.insert(request.id.clone(), request.clone());
        self.announce(AccessEvent {
            event: "request_cancelled",
            request: Some(request.clone()),
            grant: None,
            by: Some(requester.name.clone()),
            url: None,
            text: format!(
                "{} cancels their request for {} on {} ({})",
                request.requested_by, request.level, request.target, request.id
            ),
        });
        Ok(request)
    }

    /// Requests `viewer` may see: their own, plus those they may decide
    /// (whatever their state), oldest first.
    pub(crate) fn requests_for(
        &self,
        viewer: &Identity,
        state: Option<RequestState>,
    ) -> Vec<Request> {
        let book = self.book();
        let mut list: Vec<Request> = book
            .requests
            .values()
            .filter(|r| state.is_none_or(|s| r.state == s))
            .filter(|r| r.requested_by == viewer.name || self.may_decide(viewer, r))
            .cloned()
            .collect();
        list.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        list
    }

    /// The request `id` whoever asks (the model's own tests).
    #[cfg(test)]
    pub(crate) fn get_request(&self, id: &str) -> Option<Request> {
        self.book().requests.get(id).cloned()
    }

    /// The request `id` if `viewer` may see it (see [`AccessModel::may_see`]);
    /// otherwise the same `NotFound` as for an id that does not exist.
    pub(crate) fn request_seen_by(
        &self,
        viewer: &Identity,
        id: &str,
    ) -> Result<Request, AccessError> {
        self.visible_request(&self.book(), viewer, id).cloned()
    }

    /// Who may see a request: its requester, whoever may decide it, and
    /// admins. Everyone else gets the answer a request that does not exist
    /// gets, on every endpoint, so an id tells them nothing.
    fn may_see(&self, viewer: &Identity, request: &Request) -> bool {
        request.requested_by == viewer.name
            || viewer.in_group(ADMIN_GROUP)
            || self.may_decide(viewer, request)
    }

    fn visible_request<'b>(
        &self,
        book: &'b Book,
        viewer: &Identity,
        id: &str,
    ) -> Result<&'b Request, AccessError> {
        book.requests
            .get(id)
            .filter(|r| self.may_see(viewer, r))
            .ok_or_else(|| AccessError::RequestNotFound { id: id.to_owned() })
    }

    /// Someone other than the requester, in an approver group of the policy.
    fn may_decide(&self, who: &Identity, request: &Request) -> bool {
        request.requested_by != who.name
            && self
                .policy(&request.policy)
                .is_some_and(|p| p.lets_approve(who))
    }

    /// The request `id` if `decider` may `action` (approve or deny) it now:
    /// it exists and they may see it (404), it is not theirs and they are an
    /// approver of its policy (403), and it is still pending (409).
    fn decidable(
        &self,
        book: &mut Book,
        decider: &Identity,
        id: &str,
        action: Action,
    ) -> Result<Request, AccessError> {
        let request = self.visible_request(book, decider, id)?;
        if request.requested_by == decider.name {
            return Err(match action {
                Action::Deny => AccessError::OwnDenial,
                Action::Approve | Action::Cancel => AccessError::OwnApproval,
            });
        }
        let Some(policy) = self.policy(&request.policy) else {
            return Err(AccessError::PolicyGone {
                id: id.to_owned(),
                policy: request.policy.clone(),
                action,
            });
        };
        if !policy.lets_approve(decider) {
            return Err(AccessError::NotAnApprover {
                who: decider.name.clone(),
                action,
                id: id.to_owned(),
                policy: policy.name.clone(),
                approvers: policy.approvers.clone(),
            });
        }
        // A reload may have narrowed the policy since the request was made:
        // an approval grants only what the policy allows now.
        if matches!(action, Action::Approve)
            && (!policy.covers(&request.target, &request.level)
                || Duration::from_secs(request.duration_secs) > policy.max_duration)
        {
            return Err(AccessError::PolicyNarrowed {
                id: id.to_owned(),
                policy: policy.name.clone(),
            });
        }
        self.pending(book, id, action)
    }

    /// The request `id` if it is still pending (409 otherwise). One whose time
    /// ran out is expired first, even if its timer has not fired yet.
    fn pending(&self, book: &mut Book, id: &str, action: Action) -> Result<Request, AccessError> {
        let request = known_request(book, id)?;
        if request.state == RequestState::Pending && request.expires_at <= clock::now() {
            self.expire_request(book, id)?;
        }
        let request = known_request(book, id)?;
        if request.state != RequestState::Pending {
            return Err(AccessError::NotPending {
                id: id.to_owned(),
                state: request.state,
                action,
            });
        }
        Ok(request.clone())
    }

    /// A reason or comment is copied into the journal, the audit log, every
    /// listing and every webhook: at most `requests.max_reason_chars`.
    /// `Some((chars, max))` when `text` is longer.
    pub(super) fn over_length(&self, text: &str) -> Option<(usize, usize)> {
        let max = self.config().requests.max_reason_chars;
        let chars = text.chars().count();
        (chars > max).then_some((chars, max))
    }

    /// A decision's comment: none if blank, refused if too long.
    fn checked_comment(&self, comment: Option<String>) -> Result<Option<String>, AccessError> {
        let comment = comment.filter(|c| !c.trim().is_empty());
        if let Some((chars, max)) = comment.as_deref().and_then(|c| self.over_length(c)) {
            return Err(AccessError::CommentTooLong { chars, max });
        }
        Ok(comment)
    }

    /// Time a pending request out at its `expires_at`. (With a fleet,
    /// every proxy's timer fires; the first to reach the store expires it,
    /// the others find it expired once they catch up.)
    pub(super) fn watch_pending(self: &Arc<Self>, id: String, expires_at: SystemTime) {
        let model = Arc::downgrade(self);
        let runtime = self.runtime.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep_until(instant_for(expires_at).into()).await;
            // Storing it may wait on the store: not on a runtime worker.
            runtime.spawn_blocking(move || {
                let Some(model) = model.upgrade() else { return };
                let expired = model.retrying(|| {
                    let mut book = model.book_current()?;
                    let pending = book
                        .requests
                        .get(&id)
                        .is_some_and(|r| r.state == RequestState::Pending);
                    if pending {
                        model.expire_request(&mut book, &id)?;
                    }
                    Ok::<_, StoreError>(())
                });
                if let Err(e) = expired {
                    // It stays pending in memory; deciding it retries the expiry.
                    tracing::error!(request = %id, error = %e, "cannot record a request's expiry");
                }
            });
        });
    }

    /// Time the pending request `id` out now.
    fn expire_request(&self, book: &mut Book, id: &str) -> Result<(), StoreError> {
        let Some(mut request) = book.requests.get(id).cloned() else {
            return Ok(());
        };
        request.state = RequestState::Expired;
        let timeout = format_duration(
            request
                .expires_at
                .duration_since(request.created_at)
                .unwrap_or_default(),
        );
        let detail = format!("nobody decided within {timeout}");
        self.commit(
            book,
            &Entry::RequestExpired {
                id: request.id.clone(),
            },
            &[AuditEvent {
                detail: Some(&detail),
                ..request_record("request_expired", &request)
            }],
        )?;
        book.requests.insert(request.id.clone(), request.clone());
        self.announce(AccessEvent {
            event: "request_expired",
            url: None,
            text: format!(
                "{}'s request for {} on {} ({}) expired: {detail}",
                request.requested_by, request.level, request.target, request.id
            ),
            request: Some(request),
            grant: None,
            by: None,
        });
        Ok(())
    }

    /// At start, after the journal replay: pending requests whose time ran
    /// out while jitgate was down expire now (journaled, audited and
    /// announced). Returns the rest, for [`Self::watch_pending`] once the
    /// book is released.
    pub(super) fn resume_requests(
        &self,
        book: &mut Book,
        now: SystemTime,
    ) -> Result<Vec<(String, SystemTime)>, StoreError> {
        let mut pending = Vec::new();
        let mut due = Vec::new();
        for r in book.requests.values() {
            if r.state == RequestState::Pending {
                if r.expires_at > now {
                    pending.push((r.id.clone(), r.expires_at));
                } else {
                    due.push(r.id.clone());
                }
            }
        }
        for id in due {
            self.expire_request(book, &id)?;
        }
        Ok(pending)
    }
}

/// The request `id`, whoever asks (the caller has checked who may see it).
fn known_request<'b>(book: &'b Book, id: &str) -> Result<&'b Request, AccessError> {
    book.requests
        .get(id)
        .ok_or_else(|| AccessError::RequestNotFound { id: id.to_owned() })
}

/// The records of a new request: its creation, and for an auto-approved
/// one its approval and its grant.
fn created_records<'a>(
    request: &'a Request,
    grant: Option<&'a Grant>,
    created_detail: &'a str,
) -> Vec<AuditEvent<'a>> {
    let mut records = vec![AuditEvent {
        reason: Some(&request.reason),
        expires_at: Some(request.expires_at),
        detail: Some(created_detail),
        ..request_record("request_created", request)
    }];
    if let Some(grant) = grant {
        records.push(AuditEvent {
            by: Some(&grant.granted_by),
            detail: Some("auto-approved by the policy"),
            ..request_record("request_approved", request)
        });
        records.push(grant_created_record(grant));
    }
    records
}

/// What every audit record about a request names.
fn request_record<'a>(event: &'a str, r: &'a Request) -> AuditEvent<'a> {
    AuditEvent {
        request: Some(&r.id),
        identity: Some(&r.requested_by),
        target: Some(&r.target),
        level: Some(&r.level),
        policy: Some(&r.policy),
        ..AuditEvent::new(event)
    }
}

/// ": <comment>" after a decision's announcement, or nothing.
fn comment_suffix(comment: &Option<String>) -> String {
    comment
        .as_deref()
        .map(|c| format!(": {c}"))
        .unwrap_or_default()
}

/// RFC 3339 (de)serialization of `SystemTime` for journal round trips.
pub(crate) mod rfc3339_serde {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        super::rfc3339(t, s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}
