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

mod apply;
pub(crate) mod clock;
mod credentials;
mod errors;
pub(crate) mod follow;
pub(crate) mod grants;
pub(crate) mod journal;
pub(crate) mod policy;
pub(crate) mod requests;
pub(crate) mod store;
pub(crate) mod table;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::audit::{AuditEvent, AuditLog};
use crate::config::{Config, PolicyConfig, StoreKind};
pub(crate) use credentials::Logout;
pub use errors::StoreError;
pub(crate) use errors::{AccessError, AuthorizeError, GrantError, IsBehind};
pub(crate) use grants::NewGrant;
pub use grants::{EndReason, Grant};
use journal::Entry;
pub use journal::JOURNAL_FILE;
pub(crate) use policy::ADMIN_GROUP;
pub(crate) use requests::NewRequest;
pub use requests::{Request, RequestState};
use store::{FileStore, PgStore, Store};
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
    /// The approver page's view of it (the request's page, or a direct
    /// grant's), when jitgate knows where people reach it (`admin.url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// One human sentence (Slack-compatible `text`), ending with `url`.
    pub text: String,
}

/// How often a change is decided again after other proxies beat it to the
/// store before giving up (each try catches up first, so more than one
/// retry needs a burst of changes from elsewhere).
const MAX_TRIES: usize = 8;

/// Events kept for a subscriber that falls behind before it starts losing them.
const EVENT_BACKLOG: usize = 1024;

pub struct AccessModel {
    /// Targets, levels, policies and the requests' limits are read from
    /// the config in force at each question (a reload swaps it); the store's
    /// settings never change while the proxy runs.
    config: crate::config::Current,
    /// Where timers are started, also from the follower's thread.
    runtime: tokio::runtime::Handle,
    /// The fleet's store, when there is one: its health, heartbeats and
    /// the fleet's sessions (`None` for the file store).
    pub(crate) fleet: Option<Arc<store::pg::Link>>,
    /// The sessions this proxy holds, for the fleet's store (set once by
    /// the server): kills from other proxies, failing closed, heartbeats.
    local_sessions: std::sync::OnceLock<Arc<dyn follow::LocalSessions>>,
    /// Set while the store has been away too long (see `follow.rs`).
    closed: follow::FailClosed,
    /// This proxy had applied, at its last heartbeat, every change the
    /// store held at the one before.
    caught_up: std::sync::atomic::AtomicBool,
    /// The store's last change at the last heartbeat.
    store_head: std::sync::atomic::AtomicU64,
    /// After failing closed: the last heartbeat found this proxy current
    /// with everything the store held (see `follow.rs`).
    may_reopen: std::sync::atomic::AtomicBool,
    /// The shortest heartbeat clock query seen, in microseconds.
    best_clock_rtt: std::sync::atomic::AtomicU64,
    pub(crate) grants: GrantTable,
    /// Credentials issued after sign-ons, as the store's changes made them;
    /// every login reads them (`identity::Identities`).
    pub(crate) issued: Arc<crate::identity::Issued>,
    audit: Arc<AuditLog>,
    /// Requests and the journal. Every change to a request or a grant is made
    /// while holding it, so the journal's order is the order of the changes.
    book: Mutex<Book>,
    events: broadcast::Sender<AccessEvent>,
    /// Counts the changes applied (this proxy's and the fleet's), for
    /// whoever shows requests and grants live (the approver page).
    changes: tokio::sync::watch::Sender<u64>,
    /// Subscribed before the journal replay, so the first subscriber (the
    /// webhook notifier, started after `open`) also hears what the replay
    /// ended: grants and requests that expired while jitgate was down.
    first_subscriber: Mutex<Option<broadcast::Receiver<AccessEvent>>>,
}

struct Book {
    /// Every request since the store began (decided ones too, for listing).
    requests: HashMap<String, Request>,
    /// `None` for a model made with `AccessModel::new` (tests only).
    store: Option<Box<dyn Store>>,
    /// The sequence number of the last change applied.
    applied: u64,
}

impl AccessModel {
    /// A model that keeps everything in memory only: nothing survives a
    /// restart. For tests; `jitgate serve` uses [`AccessModel::open`].
    #[cfg(test)]
    pub(crate) fn new(config: Arc<Config>, audit: Arc<AuditLog>) -> Arc<AccessModel> {
        Arc::new(AccessModel::with_book(config, audit, None, None))
    }

    /// Open the store the config names and rebuild requests and grants from
    /// its changes. Grants come back with their original `expires_at`;
    /// grants that ended while no proxy was running, and pending requests
    /// whose time ran out, are ended now (stored, audited and announced).
    /// Starts the expiry timers, so it must be called inside a tokio runtime.
    pub(crate) fn open(
        config: Arc<Config>,
        audit: Arc<AuditLog>,
    ) -> Result<Arc<AccessModel>, StoreError> {
        let (model, changes, follower) = match &config.store.kind {
            StoreKind::File => {
                let path = config.data_dir.join(JOURNAL_FILE);
                let (store, entries) = FileStore::open(&path)?;
                let changes = entries
                    .into_iter()
                    .map(|e| (e.line as u64, e.entry))
                    .collect::<Vec<_>>();
                let model =
                    AccessModel::with_book(config.clone(), audit, Some(Box::new(store)), None);
                (Arc::new(model), changes, None)
            }
            StoreKind::Postgres(pg) => {
                let (wake, woken) = follow::wakeup();
                let (mut store, link) = PgStore::open(pg, &config.store.proxy_name, wake)?;
                let changes = store
                    .since(0)?
                    .into_iter()
                    .map(|e| (e.seq, e.entry))
                    .collect::<Vec<_>>();
                let model = AccessModel::with_book(
                    config.clone(),
                    audit,
                    Some(Box::new(store)),
                    Some(link),
                );
                (
                    Arc::new(model),
                    changes,
                    Some((woken, pg.fail_closed_after)),
                )
            }
        };
        // A change that does not fit the ones before it was never written
        // by jitgate: refuse to start, naming it (the journal by its line).
        let corrupt = |seq: u64, why: String| match &config.store.kind {
            StoreKind::File => StoreError::Journal(journal::JournalError::Corrupt {
                path: config.data_dir.join(JOURNAL_FILE),
                line: seq as usize,
                why,
            }),
            StoreKind::Postgres(_) => StoreError::Corrupt { seq, why },
        };
        let mut book = model.book();
        for (seq, entry) in changes {
            model
                .apply(&mut book, entry, false)
                .map_err(|why| corrupt(seq, why))?;
            book.applied = seq;
        }
        tracing::info!(
            store = model.store_name(),
            changes = book.applied,
            requests = book.requests.len(),
            grants = model.grants.active(clock::now()).len(),
            "requests and grants restored"
        );
        drop(book);
        model.retrying(|| model.resume())?;
        // Only now: until the restore is done, the follower would apply
        // the same changes a second time.
        if let Some((woken, fail_closed_after)) = follower {
            follow::start(&model, woken, fail_closed_after);
        }
        Ok(model)
    }

    fn with_book(
        config: Arc<Config>,
        audit: Arc<AuditLog>,
        store: Option<Box<dyn Store>>,
        fleet: Option<Arc<store::pg::Link>>,
    ) -> AccessModel {
        let (events, first) = broadcast::channel(EVENT_BACKLOG);
        let issued = Arc::new(crate::identity::Issued::default());
        issued.set_issuer(config.oidc.as_ref().map(|o| o.issuer.clone()));
        AccessModel {
            config: crate::config::Current::new(config),
            runtime: tokio::runtime::Handle::current(),
            fleet,
            local_sessions: std::sync::OnceLock::new(),
            closed: follow::FailClosed::default(),
            caught_up: std::sync::atomic::AtomicBool::new(true),
            store_head: std::sync::atomic::AtomicU64::new(0),
            may_reopen: std::sync::atomic::AtomicBool::new(false),
            best_clock_rtt: std::sync::atomic::AtomicU64::new(u64::MAX),
            grants: GrantTable::default(),
            issued,
            audit,
            book: Mutex::new(Book {
                requests: HashMap::new(),
                store,
                applied: 0,
            }),
            events,
            changes: tokio::sync::watch::Sender::new(0),
            first_subscriber: Mutex::new(Some(first)),
        }
    }

    /// "file" or "postgres", for logs.
    fn store_name(&self) -> &'static str {
        match self.config().store.kind {
            StoreKind::File => "file",
            StoreKind::Postgres(_) => "postgres",
        }
    }

    /// After the restore: end what ended while no proxy was running, and
    /// watch the rest.
    fn resume(self: &Arc<Self>) -> Result<(), StoreError> {
        let now = clock::now();
        let mut book = self.book_current()?;
        self.resume_grants(&mut book, now)?;
        let pending = self.resume_requests(&mut book, now)?;
        drop(book);
        for grant in self.grants.active(now) {
            self.watch_expiry(grant);
        }
        for (id, expires_at) in pending {
            self.watch_pending(id, expires_at);
        }
        self.resume_credentials();
        Ok(())
    }

    /// The sessions this proxy holds, for kills from other proxies, failing
    /// closed and heartbeats. Set once, by the server.
    pub(crate) fn set_local_sessions(&self, sessions: Arc<dyn follow::LocalSessions>) {
        let _ = self.local_sessions.set(sessions);
    }

    /// Whether the last heartbeat found this proxy current with the store.
    fn caught_up(&self) -> bool {
        self.caught_up.load(std::sync::atomic::Ordering::Acquire)
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
        if self.failed_closed() {
            return Err(AuthorizeError::StoreLost);
        }
        let config = self.config();
        let (target, level) = match config.target(requested) {
            Some(_) => (requested, None),
            None => match requested.rsplit_once('@') {
                Some((target, level)) if !level.is_empty() && config.target(target).is_some() => {
                    (target, Some(level))
                }
                _ => return Err(AuthorizeError::UnknownTarget(requested.to_owned())),
            },
        };
        let watch = self
            .grants
            .lease_for(identity, target, level, clock::now())
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
        let target_cfg = config
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

    /// Wakes on every change to requests, grants or credentials, whoever
    /// made it; it says only that something changed, not what.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// How many changes [`Self::changes`] has counted so far.
    pub(crate) fn change_count(&self) -> u64 {
        *self.changes.borrow()
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
    fn policy(&self, name: &str) -> Option<PolicyConfig> {
        self.config()
            .policies
            .iter()
            .find(|p| p.name == name)
            .cloned()
    }

    /// The config in force.
    pub(crate) fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    /// Put `config` in force (a reload, which checked it first).
    pub(crate) fn set_config(&self, config: Arc<Config>) {
        self.config.set(config);
    }

    /// The lock every change is made under (see the module's comment).
    fn book(&self) -> MutexGuard<'_, Book> {
        // A panic while holding the lock leaves at worst a change applied in
        // memory without its announcement; keep serving.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The book, current with the store: what other proxies changed is
    /// applied first, so a change is decided on the whole fleet's state.
    fn book_current(self: &Arc<Self>) -> Result<MutexGuard<'_, Book>, StoreError> {
        let mut book = self.book();
        self.catch_up(&mut book)?;
        Ok(book)
    }

    /// Catch up with the fleet's store now (nothing to do with the file
    /// store), so a question asked next sees what other proxies changed.
    pub(crate) fn catch_up_now(self: &Arc<Self>) -> Result<(), AccessError> {
        drop(self.book_current()?);
        Ok(())
    }

    /// Before a listing: catch up if the fleet's store answers now, so a
    /// change made on another proxy a moment ago is listed here too. A
    /// store that is away is not waited for: the listing is what this
    /// proxy knows.
    pub(crate) fn catch_up_for_reading(self: &Arc<Self>) {
        let reachable = self.store_health().is_some_and(|(up, _)| up);
        if reachable && let Err(e) = self.catch_up_now() {
            tracing::debug!(error = %e, "listing what this proxy knows: cannot catch up with the store");
        }
    }

    /// Apply what the store holds beyond what this proxy has applied.
    fn catch_up(self: &Arc<Self>, book: &mut Book) -> Result<(), StoreError> {
        let applied = book.applied;
        let Some(store) = book.store.as_mut().filter(|s| s.shared()) else {
            return Ok(());
        };
        for event in store.since(applied)? {
            if let Err(why) = self.apply(book, event.entry, true) {
                // Never written by jitgate: the store's writers check each
                // change against all before it. Skip it, loudly.
                tracing::error!(
                    seq = event.seq,
                    why,
                    "a change in the store does not fit the changes before it; it is skipped"
                );
            }
            book.applied = event.seq;
        }
        Ok(())
    }

    /// Run a change until it is decided on current state: a change another
    /// proxy beat to the store is decided again after catching up.
    ///
    /// With a fleet's store the first `Behind` leaves the store's
    /// transaction open, holding the chain's head: the catch-up and the
    /// second decision happen under it, so the second try cannot be beaten
    /// (no proxy starves under a busy fleet). Whatever the outcome, the
    /// transaction is closed before returning.
    fn retrying<T, E: IsBehind>(&self, mut change: impl FnMut() -> Result<T, E>) -> Result<T, E> {
        // Also when `change` panics: an open transaction would keep the
        // whole fleet from writing.
        struct Release<'m>(&'m AccessModel);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                if let Some(store) = self.0.book().store.as_mut() {
                    store.release();
                }
            }
        }
        let _release = Release(self);
        let mut tries = 0;
        loop {
            match change() {
                Err(e) if e.is_behind() && tries < MAX_TRIES => tries += 1,
                other => return other,
            }
        }
    }

    /// Make a change durable: store it, then write its audit records, then
    /// confirm it. If a record cannot be written, the change is taken back
    /// and must not be applied.
    fn commit(
        &self,
        book: &mut Book,
        entry: &Entry,
        records: &[AuditEvent<'_>],
    ) -> Result<(), StoreError> {
        let applied = book.applied;
        let seq = match book.store.as_mut() {
            Some(store) => Some(store.append(entry, applied)?),
            None => None,
        };
        for record in records {
            if let Err(e) = self.audit.record(record) {
                if let Some(store) = book.store.as_mut() {
                    store.undo();
                }
                return Err(e.into());
            }
        }
        if let (Some(store), Some(seq)) = (book.store.as_mut(), seq) {
            if let Err(e) = store.confirm() {
                // The records just written describe a change the store
                // rolled back (or may have): say so in the same log.
                let detail = match &e {
                    StoreError::Shared(store::SharedStoreError::Unconfirmed) => {
                        "the store did not confirm the change recorded just before; it may or may not have been made"
                    }
                    _ => "the store rolled back the change recorded just before; it was not made",
                };
                let _ = self.audit.record(&AuditEvent {
                    detail: Some(detail),
                    ..AuditEvent::new("store_write_failed")
                });
                return Err(e);
            }
            book.applied = seq;
        }
        // The caller changes the book next, under the same lock, before
        // anyone woken here can read it.
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Tell subscribers, with a link to the page that shows what happened.
    /// Nobody listening is fine.
    fn announce(&self, mut event: AccessEvent) {
        if let Some(base) = self.config().admin_url() {
            let page = match (&event.request, &event.grant) {
                (Some(r), _) => Some(format!("/requests/{}", r.id)),
                (None, Some(g)) => Some(match &g.request {
                    Some(request) => format!("/requests/{request}"),
                    None => format!("/grants/{}", g.id),
                }),
                (None, None) => None,
            };
            if let Some(page) = page {
                let url = format!("{base}{page}");
                event.text = format!("{} {url}", event.text);
                event.url = Some(url);
            }
        }
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
