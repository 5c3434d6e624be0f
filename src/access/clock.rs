//! The time requests and grants are stamped and ended with: the store's.
//!
//! With one proxy this is the machine's clock. With a fleet, every proxy
//! measures how far its clock is from the store's at each heartbeat and
//! corrects by that, so a grant's `created_at` and `expires_at` are the
//! store's time, and every proxy ends it at the same instant even if their
//! clocks disagree.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

/// The store's clock minus this machine's, in microseconds.
static OFFSET_MICROS: AtomicI64 = AtomicI64::new(0);

/// Now, on the store's clock.
pub(crate) fn now() -> SystemTime {
    shift(SystemTime::now(), OFFSET_MICROS.load(Ordering::Relaxed))
}

/// The store said it was `store_now` when it answered a call that took
/// from `sent` to `received` on this machine's clock.
pub(crate) fn observe(store_now: SystemTime, sent: SystemTime, received: SystemTime) {
    let rtt = received.duration_since(sent).unwrap_or_default();
    let local = sent + rtt / 2;
    let offset = match store_now.duration_since(local) {
        Ok(ahead) => micros(ahead),
        Err(behind) => -micros(behind.duration()),
    };
    OFFSET_MICROS.store(offset, Ordering::Relaxed);
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn shift(t: SystemTime, micros: i64) -> SystemTime {
    let d = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        t.checked_add(d).unwrap_or(t)
    } else {
        t.checked_sub(d).unwrap_or(t)
    }
}
