//! Session threads: the proxied sessions run on a few single-threaded
//! runtimes, one per thread, rather than on one work-stealing runtime.
//!
//! A session is one task that spends its life waiting on two sockets, and
//! each statement wakes it twice. On a work-stealing runtime every wake-up can
//! also wake a second worker to steal it (a futex and a context switch), and
//! the task's state moves between cores. Measured with pgbench `-S` through
//! jitgate on two cores, a single-threaded runtime per thread spent about
//! 10 % less CPU per transaction and made half the context switches. It is
//! how pgbouncer (one thread) and most proxies run.
//!
//! The price is that a session stays on the thread it was given: a thread
//! whose sessions are all busy cannot hand work to an idle one. Each new
//! session therefore goes to the thread with the fewest live sessions.
//! Synchronous work in a session holds up every session of its thread: a
//! TLS handshake (about a millisecond of CPU), and with `audit.fsync =
//! "always"` each `fdatasync` (one for the statements of the thread's
//! sessions that arrived together, see `AuditLog::write_sealed`).
//! Deployments that want that setting under concurrent load should give
//! `limits.session_threads` more threads. A level's reaper
//! (`wire::pg::reaper`) is started lazily and lives on the session thread
//! that first needed it.
//!
//! Accepting, the admin API and the grant and audit machinery stay on the
//! runtime that called [`Workers::start`]; only sessions move here.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The session threads. Dropping it stops them, ending their sessions.
pub struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    handle: Handle,
    /// Sessions spawned here and not yet finished.
    sessions: Arc<AtomicUsize>,
    /// Dropped (or sent) to stop the thread.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Counts a session as live on its worker until the session's task ends
/// (returns, panics or is dropped with its runtime).
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Workers {
    /// Start `threads` session threads (at least one), named `jitgate-session-N`.
    pub fn start(threads: usize) -> std::io::Result<Workers> {
        let threads = threads.max(1);
        let mut workers = Vec::with_capacity(threads);
        for n in 0..threads {
            // The runtime is built on its own thread and only its handle comes
            // back: a runtime must not be dropped inside another one, which is
            // where `start` is called from.
            let (started, handle) = std::sync::mpsc::channel();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("jitgate-session-{n}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .thread_name(format!("jitgate-session-{n}-blocking"))
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = started.send(Err(e));
                            return;
                        }
                    };
                    let _ = started.send(Ok(runtime.handle().clone()));
                    // Runs every task spawned on the handle until told to stop
                    // (or until the sender is dropped).
                    let _ = runtime.block_on(stopped);
                })?;
            let handle = handle.recv().map_err(|_| {
                std::io::Error::other("a session thread ended before its runtime started")
            })??;
            workers.push(Worker {
                handle,
                sessions: Arc::default(),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Workers { workers })
    }

    /// The number of session threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Live sessions on each thread, in thread order.
    #[cfg(test)]
    fn sessions_per_thread(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|w| w.sessions.load(Ordering::Acquire))
            .collect()
    }

    /// Run `session(tcp)` on the thread with the fewest live sessions. The
    /// socket moves to that thread's reactor; if it cannot (the descriptor
    /// is no longer valid), the connection is dropped and the reason logged.
    pub fn spawn_session<F, Fut>(&self, tcp: TcpStream, session: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self
            .workers
            .iter()
            .min_by_key(|w| w.sessions.load(Ordering::Acquire))
        else {
            return;
        };
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a new connection to a session thread");
                return;
            }
        };
        worker.sessions.fetch_add(1, Ordering::AcqRel);
        let live = Live(worker.sessions.clone());
        worker.handle.spawn(async move {
            let _live = live;
            // Registers the socket with this thread's reactor.
            match TcpStream::from_std(tcp) {
                Ok(tcp) => session(tcp).await,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register a new connection on its session thread")
                }
            }
        });
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if let Some(stop) = w.stop.take() {
                let _ = stop.send(());
            }
        }
        // Join only when not on one of our own threads (that would wait forever).
        let me = std::thread::current().id();
        for w in &mut self.workers {
            if let Some(t) = w.thread.take()
                && t.thread().id() != me
            {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn connected_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn sessions_run_on_the_session_threads_and_go_to_the_least_loaded() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.threads(), 2);
        let (release, released) = tokio::sync::watch::channel(false);
        let mut clients = Vec::new();
        for _ in 0..4 {
            let (mut client, server) = connected_pair().await;
            let mut released = released.clone();
            workers.spawn_session(server, move |mut tcp| async move {
                // Echo the thread's name, then hold the session open.
                let name = std::thread::current().name().unwrap_or("").to_owned();
                tcp.write_all(name.as_bytes()).await.unwrap();
                tcp.write_all(b"\n").await.unwrap();
                let _ = released.wait_for(|r| *r).await;
            });
            let mut name = Vec::new();
            let mut byte = [0u8];
            while client.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
                name.push(byte[0]);
            }
            clients.push((client, String::from_utf8(name).unwrap()));
        }
        let names: Vec<&str> = clients.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "jitgate-session-0",
                "jitgate-session-1",
                "jitgate-session-0",
                "jitgate-session-1"
            ],
            "each new session goes to the thread with the fewest"
        );
        assert_eq!(workers.sessions_per_thread(), [2, 2]);

        release.send(true).unwrap();
        for _ in 0..200 {
            if workers.sessions_per_thread() == [0, 0] {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            workers.sessions_per_thread(),
            [0, 0],
            "finished sessions are not counted"
        );
    }

    #[tokio::test]
    async fn dropping_the_workers_ends_their_sessions() {
        let workers = Workers::start(1).unwrap();
        let (mut client, server) = connected_pair().await;
        workers.spawn_session(server, |mut tcp| async move {
            let mut buf = [0u8; 1];
            let _ = tcp.read(&mut buf).await; // waits for ever
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(workers.sessions_per_thread(), [1]);
        drop(workers);
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("the session's socket was closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}
