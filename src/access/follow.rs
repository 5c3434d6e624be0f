//! A proxy of a fleet follows its store.
//!
//! * **The follower** (a thread of its own: everything it does may wait on
//!   the store) catches up on what other proxies wrote whenever the store's
//!   listener wakes it and at least every [`TICK`], so a notification that
//!   was lost costs at most a tick.
//! * **The heartbeat** (another thread, on another connection, so that it
//!   never holds up a catch-up) tells the store every [`TICK`] that this
//!   proxy lives, which sessions it holds and how far it has applied, and
//!   sets the clock by the store's.
//! * **The watchdog** (a task) fails closed: once the store has not
//!   answered for `fail_closed_after`, a revoke may be waiting there that
//!   this proxy cannot see, so it ends every session it holds and refuses
//!   logins, until the store answers again and the proxy has caught up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::access::clock;
use crate::access::journal::Entry;
use crate::access::store::SharedStoreError;
use crate::access::store::pg::SessionRow;
use crate::access::{AccessError, AccessModel, StoreError};
use crate::audit::AuditEvent;
use crate::metrics::{METRICS, ProxyLabel};

/// The longest a follower waits between two catch-ups, and how often it
/// sends a heartbeat.
pub(crate) const TICK: Duration = Duration::from_secs(1);
/// A clock sample is used when its round trip is at most this, or at most
/// twice the best seen.
const CLOCK_SAMPLE_RTT: Duration = Duration::from_millis(20);
/// How often the watchdog looks at the time since the store's last answer.
const WATCH: Duration = Duration::from_millis(100);

/// What a fleet's proxy does with the sessions it holds, for the store.
pub(crate) trait LocalSessions: Send + Sync {
    /// End the session `id` if this proxy holds it (a kill from elsewhere).
    fn kill(&self, id: &str);
    /// End every session: the store is lost.
    fn end_all_store_lost(&self);
    /// End `identity`'s sessions that logged in with one of `credentials`.
    fn end_credentials(
        &self,
        identity: &str,
        credentials: &[String],
        cause: crate::session::KillCause,
    );
    /// The live sessions, as the store lists them.
    fn rows(&self, proxy: &str) -> Vec<SessionRow>;
}

/// Whether the proxy has failed closed (shared by the gate and `/healthz`).
#[derive(Default)]
pub(crate) struct FailClosed(AtomicBool);

impl FailClosed {
    pub(crate) fn is_closed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The follower's doorbell: the store's listener rings it.
pub(crate) fn wakeup() -> (impl Fn() + Send + Sync + 'static, Receiver<()>) {
    let (ring, rung) = std::sync::mpsc::channel();
    (
        move || {
            let _ = ring.send(());
        },
        rung,
    )
}

/// Start the follower thread and the watchdog task for `model`.
pub(crate) fn start(model: &Arc<AccessModel>, rung: Receiver<()>, fail_closed_after: Duration) {
    let weak = Arc::downgrade(model);
    let spawned = std::thread::Builder::new()
        .name("jitgate-follower".into())
        .spawn(move || follow(weak, rung));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the store's follower; changes from other proxies arrive only with this proxy's own");
    }
    let weak = Arc::downgrade(model);
    let spawned = std::thread::Builder::new()
        .name("jitgate-heartbeat".into())
        .spawn(move || beat(weak));
    if let Err(e) = spawned {
        // Without heartbeats the watchdog fails closed: say why.
        tracing::error!(error = %e, "cannot start the store's heartbeat");
    }
    let weak = Arc::downgrade(model);
    model.runtime.spawn(watch(weak, fail_closed_after));
}

fn follow(model: Weak<AccessModel>, rung: Receiver<()>) {
    loop {
        match rung.recv_timeout(TICK) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // One catch-up serves every ring so far.
        while rung.try_recv().is_ok() {}
        let Some(model) = model.upgrade() else { return };
        let mut book = model.book();
        match model.catch_up(&mut book) {
            Ok(()) => {}
            Err(StoreError::Shared(SharedStoreError::Unreachable(e))) => {
                tracing::debug!(error = %e, "cannot catch up with the store");
            }
            Err(e) => tracing::error!(error = %e, "cannot catch up with the store"),
        }
    }
}

/// Every [`TICK`], a heartbeat (on a thread of its own: a slow one must
/// not hold up a catch-up).
fn beat(model: Weak<AccessModel>) {
    loop {
        std::thread::sleep(TICK);
        let Some(model) = model.upgrade() else { return };
        let applied = model.book().applied;
        model.heartbeat(applied);
    }
}

impl AccessModel {
    /// Tell the store this proxy lives and what it holds; learn its clock
    /// and how far behind this proxy is.
    fn heartbeat(self: &Arc<Self>, applied: u64) {
        let Some(link) = &self.fleet else { return };
        let rows = self
            .local_sessions
            .get()
            .map(|s| s.rows(&link.proxy))
            .unwrap_or_default();
        let stale_after = self.fail_closed_after().saturating_mul(4);
        match link.heartbeat(applied, rows, stale_after) {
            Ok(beat) => {
                let (store_now, sent, received) = beat.clock;
                // A slow answer says little about the clock: keep the last
                // offset unless this round trip is near the best seen (a
                // store far away has long round trips; compare with its own).
                let rtt = received.duration_since(sent).unwrap_or(Duration::MAX);
                let best = self
                    .best_clock_rtt
                    .fetch_min(rtt.as_micros() as u64, Ordering::AcqRel);
                let best = Duration::from_micros(best.min(rtt.as_micros() as u64));
                if rtt <= (best * 2).max(CLOCK_SAMPLE_RTT) {
                    clock::observe(store_now, sent, received);
                }
                if beat.head < applied {
                    tracing::error!(
                        "the store {}",
                        crate::access::store::pg::went_back(beat.head as i64, applied)
                    );
                    self.caught_up.store(false, Ordering::Release);
                    self.may_reopen.store(false, Ordering::Release);
                    return;
                }
                // Caught up means: everything the store held at the last
                // heartbeat is applied (what arrived since is on its way;
                // comparing with the head now would call a busy fleet's
                // proxies behind for ever).
                let before = self.store_head.swap(beat.head, Ordering::AcqRel);
                self.caught_up.store(applied >= before, Ordering::Release);
                // A proxy that failed closed opens again only once it has
                // applied everything the store held at this heartbeat:
                // revokes written while it was away included.
                let reopen = self.closed.is_closed() && {
                    let mut book = self.book();
                    self.catch_up(&mut book).is_ok() && book.applied >= beat.head
                };
                self.may_reopen.store(reopen, Ordering::Release);
                METRICS
                    .store_event_lag
                    .get_or_create(&ProxyLabel {
                        proxy: link.proxy.clone(),
                    })
                    .set(beat.head.saturating_sub(applied).min(i64::MAX as u64) as i64);
            }
            Err(e) => {
                self.caught_up.store(false, Ordering::Release);
                self.may_reopen.store(false, Ordering::Release);
                match e {
                    SharedStoreError::Unreachable(_) => {
                        tracing::debug!(error = %e, "heartbeat to the store failed");
                    }
                    e => tracing::error!(error = %e, "heartbeat to the store failed"),
                }
            }
        }
    }

    fn fail_closed_after(&self) -> Duration {
        match &self.config().store.kind {
            crate::config::StoreKind::Postgres(pg) => pg.fail_closed_after,
            crate::config::StoreKind::File => Duration::MAX,
        }
    }

    /// Every live session of the fleet as the store last heard of them:
    /// `None` with the file store, an error when the store cannot be reached.
    pub(crate) fn fleet_sessions(&self) -> Option<Result<Vec<SessionRow>, SharedStoreError>> {
        self.fleet.as_ref().map(|link| link.sessions())
    }

    /// Ask the proxy that holds `session` to end it: a change in the store,
    /// audited here as `session_kill_requested`, carried out there.
    pub(crate) fn request_session_kill(
        self: &Arc<Self>,
        session: &SessionRow,
        by: &str,
    ) -> Result<(), AccessError> {
        self.retrying(|| {
            let mut book = self.book_current()?;
            let detail = format!("held by proxy {}", session.proxy);
            self.commit(
                &mut book,
                &Entry::SessionKillRequested {
                    session: session.id.clone(),
                    held_by: session.proxy.clone(),
                    by: by.to_owned(),
                },
                &[AuditEvent {
                    session: Some(&session.id),
                    identity: Some(&session.identity),
                    grant: Some(&session.grant),
                    target: Some(&session.target),
                    level: Some(&session.level),
                    client_addr: Some(&session.client_addr),
                    by: Some(by),
                    detail: Some(&detail),
                    ..AuditEvent::new("session_kill_requested")
                }],
            )?;
            Ok(())
        })
    }

    /// Whether this proxy refuses logins because it lost its store.
    pub(crate) fn failed_closed(&self) -> bool {
        self.closed.is_closed()
    }

    /// The store's health for `/healthz` and the metrics: `None` for the
    /// file store, else (reachable now, time since its last answer).
    pub(crate) fn store_health(&self) -> Option<(bool, Duration)> {
        let link = self.fleet.as_ref()?;
        Some((link.health.up(), link.health.since_contact()))
    }
}

async fn watch(model: Weak<AccessModel>, fail_closed_after: Duration) {
    let mut behind_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(WATCH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(model) = model.upgrade() else { return };
        let Some((up, silent)) = model.store_health() else {
            return;
        };
        let label = ProxyLabel {
            proxy: model.config().store.proxy_name.clone(),
        };
        METRICS
            .store_up
            .get_or_create(&label)
            .set(i64::from(up && !model.failed_closed()));
        METRICS
            .store_seconds_since_contact
            .get_or_create(&label)
            .set(silent.as_secs_f64());
        // Behind the store (it answers, but this proxy cannot apply what
        // it holds) counts as silent: a revoke may be among those changes.
        let behind = if model.caught_up() {
            behind_since = None;
            Duration::ZERO
        } else {
            behind_since.get_or_insert_with(Instant::now).elapsed()
        };
        let silent = silent.max(behind);
        let closed = model.closed.is_closed();
        if !closed && silent >= fail_closed_after {
            // A heartbeat from before does not count for opening again.
            model.may_reopen.store(false, Ordering::Release);
            model.closed.0.store(true, Ordering::Release);
            tracing::error!(
                silent = %humantime::format_duration(Duration::from_millis(silent.as_millis() as u64)),
                "the store has not answered, or this proxy could not apply what it holds, for store.fail_closed_after: ending every session and refusing logins until it is back, since it may hold revokes this proxy has not seen"
            );
            if let Some(sessions) = model.local_sessions.get() {
                sessions.end_all_store_lost();
            }
        } else if closed && silent < TICK * 2 && model.may_reopen.swap(false, Ordering::AcqRel) {
            model.closed.0.store(false, Ordering::Release);
            tracing::info!(
                "the store is back and this proxy has caught up: logins are accepted again"
            );
        } else if closed && let Some(sessions) = model.local_sessions.get() {
            // A login that passed the gate just before it closed.
            sessions.end_all_store_lost();
        }
    }
}
