//! Poll a future only when its own waker fired.
//!
//! `tokio::select!` polls every branch each time the task wakes, whichever
//! branch the wake-up was for. A pg session's relay waits on four things
//! (the client, the upstream, the end of its grant, a kill) and every
//! statement wakes it twice, so most of those polls find nothing: the idle
//! direction's socket, a `watch` and a `Notify` (each polled under a lock)
//! and a timer. Each [`Quiet`] branch gets a waker of its own that marks
//! it, and a branch that was not marked is skipped. The MySQL relay, which
//! builds a new `select!` for every packet, keeps its grant-end and kill
//! waits in one `Quiet` for the whole session.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;

/// A future that [`Quiet::poll_woken`] polls only after its waker fired.
pub struct Quiet<F> {
    fut: Pin<Box<F>>,
    signal: Arc<Signal>,
    /// The waker the inner future sees; the same one every time, so the
    /// inner future's `will_wake` checks keep its registrations.
    waker: Waker,
}

struct Signal {
    woken: AtomicBool,
    /// The task that polls the `Quiet`.
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> Quiet<F> {
    pub fn new(fut: F) -> Self {
        let signal = Arc::new(Signal {
            // Polled the first time, so that it can register its interest.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Quiet {
            fut: Box::pin(fut),
            waker: Waker::from(signal.clone()),
            signal,
        }
    }

    /// Poll the future if its waker fired since it was last polled, or if
    /// `anyway`; otherwise return `Pending` (the task is woken when it fires).
    /// Not to be called again once it returned `Ready`.
    pub fn poll_woken(&mut self, cx: &mut Context<'_>, anyway: bool) -> Poll<F::Output> {
        // Registered before the flag is read: a wake-up in between sets the
        // flag and wakes the task again.
        self.signal.task.register(cx.waker());
        if !self.signal.woken.swap(false, Ordering::AcqRel) && !anyway {
            return Poll::Pending;
        }
        self.fut
            .as_mut()
            .poll(&mut Context::from_waker(&self.waker))
    }

    /// [`Quiet::poll_woken`] as a future, for a branch of `select!`. Once it
    /// has completed, it must not be awaited again.
    pub fn woken(&mut self) -> impl Future<Output = F::Output> + '_ {
        std::future::poll_fn(move |cx| self.poll_woken(cx, false))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// Counts its polls; ready once `ready` is set (by whoever wakes it).
    struct Probe {
        polls: Arc<AtomicUsize>,
        notify: Arc<tokio::sync::Notify>,
    }

    impl Probe {
        async fn run(self) -> usize {
            let counted = CountPolls {
                polls: self.polls.clone(),
                inner: Box::pin(self.notify.notified()),
            };
            counted.await;
            self.polls.load(Ordering::Acquire)
        }
    }

    struct CountPolls<F> {
        polls: Arc<AtomicUsize>,
        inner: Pin<Box<F>>,
    }

    impl<F: Future> Future for CountPolls<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.polls.fetch_add(1, Ordering::AcqRel);
            self.inner.as_mut().poll(cx)
        }
    }

    #[tokio::test]
    async fn a_branch_is_polled_only_when_its_own_waker_fires() {
        let polls = Arc::new(AtomicUsize::new(0));
        let notify = Arc::new(tokio::sync::Notify::new());
        let mut quiet = Quiet::new(
            Probe {
                polls: polls.clone(),
                notify: notify.clone(),
            }
            .run(),
        );
        // Another branch wakes the task every millisecond; the fiftieth
        // tick wakes the quiet one.
        let (mut ticks, mut task_polls) = (0, 0);
        let mut interval = tokio::time::interval(Duration::from_millis(1));
        // A late task catches up at most 5 ms of ticks (tokio's interval),
        // so 50 ticks take at least 9 wake-ups.
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let got = std::future::poll_fn(|cx| {
            task_polls += 1;
            while interval.poll_tick(cx).is_ready() {
                ticks += 1;
                if ticks == 50 {
                    notify.notify_one();
                }
            }
            quiet.poll_woken(cx, false)
        })
        .await;
        // Polled once to register and once when notified, however often the task woke.
        assert_eq!(got, 2);
        assert!(task_polls >= 9, "{task_polls}");
    }

    #[tokio::test]
    async fn anyway_polls_without_a_wake_up() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut q = Quiet::new(CountPolls {
            polls: polls.clone(),
            inner: Box::pin(std::future::pending::<()>()),
        });
        std::future::poll_fn(|cx| {
            assert!(q.poll_woken(cx, false).is_pending()); // first poll registers
            assert!(q.poll_woken(cx, false).is_pending()); // not woken: skipped
            assert!(q.poll_woken(cx, true).is_pending()); // forced
            Poll::Ready(())
        })
        .await;
        assert_eq!(polls.load(Ordering::Acquire), 2);
    }
}
