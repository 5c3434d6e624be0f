//! The just-in-time access model: policies, requests, grants, and the journal
//! that makes them survive a restart.
//!
//! This module knows nothing of sockets or wire protocols. The wire fronts
//! reach it through one call, [`AccessModel::authorize`], which returns a
//! [`Lease`]: the grant a session runs under and a watch on its deadline.
//! The admin API drives the lifecycle: [`AccessModel::request`],
//! [`AccessModel::approve`], [`AccessModel::deny`], [`AccessModel::cancel`],
//! [`AccessModel::grant`] and [`AccessModel::revoke`].
//!
//! Every change follows one path, under one lock (the "book"): append the
//! change to the journal and fsync it, write its audit records, then apply it
//! in memory and announce it (see [`AccessModel::subscribe`]). If the journal
//! or the audit log cannot be written, nothing changes and the caller gets
//! [`AccessError::Unavailable`] (a journal line whose audit record failed is
//! taken back). The lock is held across the fsync, which serialises admin
//! actions (a few per minute, not per query); `authorize` never takes it.
//! Timers end grants at their `expires_at` and pending requests at theirs,
//! so `open`, `grant`, `request` and `approve` must run inside a tokio runtime.

mod errors;
pub mod grants;
pub mod journal;
pub mod policy;
pub mod requests;
pub mod table;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::audit::{AuditEvent, AuditLog};
use crate::config::{Config, PolicyConfig};
use crate::identity::Identity;
pub use errors::{AccessError, AuthorizeError, GrantError, StoreError};
pub(crate) use grants::NewGrant;
use grants::grant_created_record;
pub use grants::{EndReason, Grant};
use journal::{Entry, Journal};
pub use journal::{JOURNAL_FILE, JournalError};
pub use policy::ADMIN_GROUP;
use policy::format_duration;
pub use requests::{Action, Decision, NewRequest, Request, RequestState};
pub use table::{GrantTable, GrantWatch, Lease};

/// Something that happened to a request or grant, for notifications (webhooks).
#[derive(Debug, Clone, Serialize)]
pub struct AccessEvent {
    /// `request_created`, `request_approved`, `request_denied`, `request_cancelled`,
    /// `request_expired`, `grant_created`, `grant_revoked`, `grant_expired`.
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<requests::Request>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
    /// Who caused it, when a person did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// One human sentence (Slack-compatible `text`).
    pub text: String,
}

/// Events kept for a subscriber that falls behind before it starts losing them.
const EVENT_BACKLOG: usize = 1024;

pub struct AccessModel {
    config: Arc<Config>,
    pub grants: GrantTable,
    audit: Arc<AuditLog>,
    /// Requests and the journal. Every change to a request or a grant is made
    /// while holding it, so the journal's order is the order of the changes.
    book: Mutex<Book>,
    events: broadcast::Sender<AccessEvent>,
    /// Subscribed before the journal replay, so the first subscriber (the
    /// webhook notifier, started after `open`) also hears what the replay
    /// ended: grants and requests that expired while jitgate was down.
    first_subscriber: Mutex<Option<broadcast::Receiver<AccessEvent>>>,
}

struct Book {
    /// Every request since the journal began (decided ones too, for listing).
    requests: HashMap<String, Request>,
    /// `None` for a model made with [`AccessModel::new`].
    journal: Option<Journal>,
}

impl AccessModel {
    /// A model that keeps everything in memory only: nothing survives a
    /// restart. For tests; `jitgate serve` uses [`AccessModel::open`].
    pub fn new(config: Arc<Config>, audit: Arc<AuditLog>) -> Arc<AccessModel> {
        Arc::new(AccessModel::with_book(config, audit, HashMap::new(), None))
    }

    /// Open the journal at `<data_dir>/journal.jsonl` and rebuild requests and
    /// grants from it. Grants come back with their original `expires_at`;
    /// grants that ended while jitgate was down, and pending requests whose
    /// time ran out, are ended now (journaled, audited and announced).
    /// Starts the expiry timers, so it must be called inside a tokio runtime.
    pub fn open(config: Arc<Config>, audit: Arc<AuditLog>) -> Result<Arc<AccessModel>, StoreError> {
        let path = config.data_dir.join(JOURNAL_FILE);
        let (journal, entries) = Journal::open(&path)?;
        let replayed = journal::replay(&path, entries)?;
        tracing::info!(
            path = %path.display(),
            requests = replayed.requests.len(),
            grants = replayed.grants.len(),
            "journal replayed"
        );
        let model = Arc::new(AccessModel::with_book(
            config,
            audit,
            replayed.requests,
            Some(journal),
        ));
        model.resume(replayed.grants)?;
        Ok(model)
    }

    fn with_book(
        config: Arc<Config>,
        audit: Arc<AuditLog>,
        requests: HashMap<String, Request>,
        journal: Option<Journal>,
    ) -> AccessModel {
        let (events, first) = broadcast::channel(EVENT_BACKLOG);
        AccessModel {
            config,
            grants: GrantTable::default(),
            audit,
            book: Mutex::new(Book { requests, journal }),
            events,
            first_subscriber: Mutex::new(Some(first)),
        }
    }

    /// After replay: end what ended while jitgate was down, and watch the rest.
    fn resume(self: &Arc<Self>, grants: Vec<Grant>) -> Result<(), StoreError> {
        let now = SystemTime::now();
        let mut book = self.book();
        let live = self.resume_grants(&mut book, grants, now)?;
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
            self.expire_request(&mut book, &id)?;
        }
        drop(book);
        for grant in live {
            self.watch_expiry(grant);
        }
        for (id, expires_at) in pending {
            self.watch_pending(id, expires_at);
        }
        Ok(())
    }

    /// The one question a wire front asks: may `identity` use `target` now?
    ///
    /// `requested` is a target's name, meaning the newest active grant the
    /// identity holds on it, or `target@level` for the newest at that level
    /// (a target literally named with an `@` wins over the split).
    pub fn authorize(&self, identity: &str, requested: &str) -> Result<Lease, AuthorizeError> {
        let (target, level) = match self.config.target(requested) {
            Some(_) => (requested, None),
            None => match requested.rsplit_once('@') {
                Some((target, level))
                    if !level.is_empty() && self.config.target(target).is_some() =>
                {
                    (target, Some(level))
                }
                _ => return Err(AuthorizeError::UnknownTarget(requested.to_owned())),
            },
        };
        let watch = self
            .grants
            .lease_for(identity, target, level, SystemTime::now())
            .ok_or_else(|| match level {
                None => AuthorizeError::NoGrant {
                    identity: identity.to_owned(),
                    target: target.to_owned(),
                },
                Some(level) => AuthorizeError::NoGrantAtLevel {
                    identity: identity.to_owned(),
                    target: target.to_owned(),
                    level: level.to_owned(),
                },
            })?;
        let grant = &watch.grant;
        let target_cfg = self
            .config
            .target(&grant.target)
            .ok_or_else(|| AuthorizeError::UnknownTarget(grant.target.clone()))?;
        let Some(level_cfg) = target_cfg.levels.get(&grant.level) else {
            return Err(AuthorizeError::LevelGone {
                target: grant.target.clone(),
                level: grant.level.clone(),
            });
        };
        let (target_cfg, level_cfg) = (Arc::new(target_cfg.clone()), Arc::new(level_cfg.clone()));
        Ok(watch.into_lease(target_cfg, level_cfg))
    }

    /// Ask for access. Matched against the policies (the first that allows
    /// it, in config order); approved at once when that policy auto-approves
    /// the requester for this duration.
    pub fn request(
        self: &Arc<Self>,
        requester: &Identity,
        req: NewRequest,
    ) -> Result<Request, AccessError> {
        let reason = req.reason.trim();
        if reason.is_empty() {
            return Err(AccessError::MissingReason);
        }
        if let Some((chars, max)) = self.over_length(reason) {
            return Err(AccessError::ReasonTooLong { chars, max });
        }
        let Some(target) = self.config.target(&req.target) else {
            return Err(AccessError::UnknownTarget {
                target: req.target.clone(),
                known: self.config.targets.iter().map(|t| t.name.clone()).collect(),
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
        let policy = policy::find(
            &self.config.policies,
            requester,
            &req.target,
            &req.level,
            req.duration,
        )?;
        let duration = Duration::from_secs(req.duration.as_secs());
        let now = SystemTime::now();
        let too_long = || AccessError::DurationTooLong;
        let mut request = Request {
            id: requests::new_request_id(),
            requested_by: requester.name.clone(),
            target: req.target,
            level: req.level,
            duration_secs: duration.as_secs(),
            reason: reason.to_owned(),
            policy: policy.name.clone(),
            state: RequestState::Pending,
            created_at: now,
            expires_at: now
                .checked_add(self.config.requests.pending_timeout)
                .ok_or_else(too_long)?,
            approvals_required: policy.approvals,
            approvals: Vec::new(),
            denial: None,
            grant: None,
            auto_approved: false,
        };
        let grant = if policy.auto_approves(requester, duration) {
            let grant =
                Grant::for_request(&request, format!("policy:{}", policy.name), Vec::new(), now)
                    .ok_or_else(too_long)?;
            request.state = RequestState::Approved;
            request.auto_approved = true;
            request.grant = Some(grant.id.clone());
            Some(grant)
        } else {
            None
        };

        let created_detail = format!("for {}", format_duration(duration));
        let mut records = vec![AuditEvent {
            reason: Some(&request.reason),
            expires_at: Some(request.expires_at),
            detail: Some(&created_detail),
            ..request_record("request_created", &request)
        }];
        if let Some(grant) = &grant {
            records.push(AuditEvent {
                by: Some(&grant.granted_by),
                detail: Some("auto-approved by the policy"),
                ..request_record("request_approved", &request)
            });
            records.push(grant_created_record(grant));
        }
        let mut book = self.book();
        if grant.is_none() {
            // Counted under the book's lock, so parallel requests cannot all fit.
            let max = self.config.requests.max_pending_per_identity;
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
        self.announce(AccessEvent {
            event: "request_created",
            request: Some(request.clone()),
            grant: None,
            by: Some(request.requested_by.clone()),
            text: format!(
                "{} requests {} on {} for {}: {} ({})",
                request.requested_by,
                request.level,
                request.target,
                format_duration(duration),
                request.reason,
                request.id
            ),
        });
        if let Some(grant) = &grant {
            self.announce(AccessEvent {
                event: "request_approved",
                request: Some(request.clone()),
                grant: None,
                by: None,
                text: format!(
                    "policy `{}` auto-approves {}'s request for {} on {} ({})",
                    policy.name, request.requested_by, request.level, request.target, request.id
                ),
            });
            self.announce_grant_created(grant);
        }
        drop(book);
        match grant {
            Some(grant) => self.watch_expiry(grant),
            None => self.watch_pending(request.id.clone(), request.expires_at),
        }
        Ok(request)
    }

    /// Approve a pending request. When the policy's distinct approvals are
    /// reached, the grant is created now and runs for the requested duration.
    /// Approving again a request one already approved changes nothing.
    pub fn approve(
        self: &Arc<Self>,
        approver: &Identity,
        id: &str,
        comment: Option<String>,
    ) -> Result<Request, AccessError> {
        let comment = self.checked_comment(comment)?;
        let mut book = self.book();
        let mut request = self.decidable(&mut book, approver, id, Action::Approve)?;
        if request.approvals.iter().any(|d| d.by == approver.name) {
            return Ok(request);
        }
        let now = SystemTime::now();
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
    pub fn deny(
        &self,
        approver: &Identity,
        id: &str,
        comment: Option<String>,
    ) -> Result<Request, AccessError> {
        let comment = self.checked_comment(comment)?;
        let mut book = self.book();
        let mut request = self.decidable(&mut book, approver, id, Action::Deny)?;
        let decision = Decision {
            by: approver.name.clone(),
            at: SystemTime::now(),
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
    pub fn cancel(&self, requester: &Identity, id: &str) -> Result<Request, AccessError> {
        let mut book = self.book();
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
            text: format!(
                "{} cancels their request for {} on {} ({})",
                request.requested_by, request.level, request.target, request.id
            ),
        });
        Ok(request)
    }

    /// Requests `viewer` may see: their own, plus those they may decide
    /// (whatever their state), oldest first.
    pub fn requests_for(&self, viewer: &Identity, state: Option<RequestState>) -> Vec<Request> {
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
    pub fn request_seen_by(&self, viewer: &Identity, id: &str) -> Result<Request, AccessError> {
        self.visible_request(&self.book(), viewer, id).cloned()
    }

    /// Events for notifications. Lagging receivers lose old events, never block the model.
    /// New events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AccessEvent> {
        self.events.subscribe()
    }

    /// Events since the model was built, the journal replay's expiries
    /// included; for the webhook notifier, started after `open`. Only the
    /// first call gets that backlog; later calls get new events only.
    pub fn subscribe_from_start(&self) -> broadcast::Receiver<AccessEvent> {
        self.first_subscriber
            .lock()
            .ok()
            .and_then(|mut first| first.take())
            .unwrap_or_else(|| self.events.subscribe())
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    // ---- the rules -------------------------------------------------------

    fn policy(&self, name: &str) -> Option<&PolicyConfig> {
        self.config.policies.iter().find(|p| p.name == name)
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
            .ok_or_else(|| request_not_found(id))
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
        self.pending(book, id, action)
    }

    /// The request `id` if it is still pending (409 otherwise). One whose time
    /// ran out is expired first, even if its timer has not fired yet.
    fn pending(&self, book: &mut Book, id: &str, action: Action) -> Result<Request, AccessError> {
        let request = known_request(book, id)?;
        if request.state == RequestState::Pending && request.expires_at <= SystemTime::now() {
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
    fn over_length(&self, text: &str) -> Option<(usize, usize)> {
        let max = self.config.requests.max_reason_chars;
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

    /// Time a pending request out at its `expires_at`.
    fn watch_pending(self: &Arc<Self>, id: String, expires_at: SystemTime) {
        let model = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(table::instant_for(expires_at).into()).await;
            let Some(model) = model.upgrade() else { return };
            let mut book = model.book();
            if book
                .requests
                .get(&id)
                .is_some_and(|r| r.state == RequestState::Pending)
                && let Err(e) = model.expire_request(&mut book, &id)
            {
                // It stays pending in memory; deciding it retries the expiry.
                tracing::error!(request = %id, error = %e, "cannot record a request's expiry");
            }
        });
    }

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

    // ---- durability and announcements -----------------------------------

    fn book(&self) -> MutexGuard<'_, Book> {
        // A panic while holding the lock leaves at worst a change applied in
        // memory without its announcement; keep serving.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Make a change durable: journal it (fsynced), then write its audit
    /// records. If a record cannot be written, the journal line is taken back
    /// and the change must not be applied.
    fn commit(
        &self,
        book: &mut Book,
        entry: &Entry,
        records: &[AuditEvent<'_>],
    ) -> Result<(), StoreError> {
        if let Some(journal) = book.journal.as_mut() {
            journal.append(entry)?;
        }
        for record in records {
            if let Err(e) = self.audit.record(record) {
                if let Some(journal) = book.journal.as_mut() {
                    journal.undo_last();
                }
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Tell subscribers. Nobody listening is fine.
    fn announce(&self, event: AccessEvent) {
        if let Some(state) = event.event.strip_prefix("request_") {
            let complete = event
                .request
                .as_ref()
                .is_some_and(|r| r.state == RequestState::Approved);
            let state = match state {
                "created" => "created",
                "approved" if complete => "approved",
                "approved" => "partially_approved",
                "denied" => "denied",
                "cancelled" => "cancelled",
                _ => "expired",
            };
            crate::metrics::METRICS
                .requests_total
                .get_or_create(&crate::metrics::StateLabel { state })
                .inc();
        }
        let _ = self.events.send(event);
    }
}

fn known_request<'b>(book: &'b Book, id: &str) -> Result<&'b Request, AccessError> {
    book.requests.get(id).ok_or_else(|| request_not_found(id))
}

/// One wording for a request that does not exist and one the caller may not see.
fn request_not_found(id: &str) -> AccessError {
    AccessError::RequestNotFound { id: id.to_owned() }
}

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

fn comment_suffix(comment: &Option<String>) -> String {
    comment
        .as_deref()
        .map(|c| format!(": {c}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
