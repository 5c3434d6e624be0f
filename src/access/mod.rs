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
//! in memory and announce it (see [`AccessModel::subscribe_from_start`]).
//! If the journal or the audit log cannot be written, nothing changes and
//! the caller gets [`AccessError::Unavailable`] (a journal line whose audit
//! record failed is taken back). The lock is held across the fsync, which serialises admin
//! actions (a few per minute, not per query); `authorize` never takes it.
//! Timers end grants at their `expires_at` and pending requests at theirs,
//! so `open`, `grant`, `request` and `approve` must run inside a tokio runtime.
//!
//! This file is the model's core: its state, `open`, that one path,
//! `authorize` and the subscriptions. The request lifecycle is in
//! `requests.rs`, the grant lifecycle in `grants.rs`, the in-memory grant
//! table and the leases in `table.rs`, the refusals in `errors.rs`.

mod errors;
pub(crate) mod grants;
pub(crate) mod journal;
pub(crate) mod policy;
pub(crate) mod requests;
pub(crate) mod table;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::audit::{AuditEvent, AuditLog};
use crate::config::{Config, PolicyConfig};
pub use errors::StoreError;
pub(crate) use errors::{AccessError, AuthorizeError, GrantError};
pub(crate) use grants::NewGrant;
pub use grants::{EndReason, Grant};
pub use journal::JOURNAL_FILE;
use journal::{Entry, Journal};
pub(crate) use policy::ADMIN_GROUP;
pub(crate) use requests::NewRequest;
pub use requests::{Request, RequestState};
pub(crate) use table::GrantTable;
pub use table::Lease;

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
    pub(crate) grants: GrantTable,
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
    /// `None` for a model made with `AccessModel::new` (tests only).
    journal: Option<Journal>,
}

impl AccessModel {
    /// A model that keeps everything in memory only: nothing survives a
    /// restart. For tests; `jitgate serve` uses [`AccessModel::open`].
    #[cfg(test)]
    pub(crate) fn new(config: Arc<Config>, audit: Arc<AuditLog>) -> Arc<AccessModel> {
        Arc::new(AccessModel::with_book(config, audit, HashMap::new(), None))
    }

    /// Open the journal at `<data_dir>/journal.jsonl` and rebuild requests and
    /// grants from it. Grants come back with their original `expires_at`;
    /// grants that ended while jitgate was down, and pending requests whose
    /// time ran out, are ended now (journaled, audited and announced).
    /// Starts the expiry timers, so it must be called inside a tokio runtime.
    pub(crate) fn open(
        config: Arc<Config>,
        audit: Arc<AuditLog>,
    ) -> Result<Arc<AccessModel>, StoreError> {
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
        let pending = self.resume_requests(&mut book, now)?;
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
    pub(crate) fn authorize(
        &self,
        identity: &str,
        requested: &str,
    ) -> Result<Lease, AuthorizeError> {
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

    /// Events for notifications. Lagging receivers lose old events, never block the model.
    /// New events from now on (the tests' view; the notifier uses
    /// [`AccessModel::subscribe_from_start`]).
    #[cfg(test)]
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<AccessEvent> {
        self.events.subscribe()
    }

    /// Events since the model was built, the journal replay's expiries
    /// included; for the webhook notifier, started after `open`. Only the
    /// first call gets that backlog; later calls get new events only.
    pub(crate) fn subscribe_from_start(&self) -> broadcast::Receiver<AccessEvent> {
        self.first_subscriber
            .lock()
            .ok()
            .and_then(|mut first| first.take())
            .unwrap_or_else(|| self.events.subscribe())
    }

    /// The policy named `name`, while the config still has it.
    fn policy(&self, name: &str) -> Option<&PolicyConfig> {
        self.config.policies.iter().find(|p| p.name == name)
    }

    /// The lock every change is made under (see the module's comment).
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

#[cfg(test)]
mod tests;
