//! Stopping the busy upstream backends of an ended grant, many at once.
//!
//! A cancel request is a new connection, and on the server a new process,
//! per backend: when a grant with hundreds of running queries ends, the
//! server forks hundreds of times while those queries keep running. Instead,
//! the sessions of one target and level hand their busy backends to that
//! level's reaper, which logs in once as the level's own account and ends
//! them all with one `pg_terminate_backend` statement (a role may always
//! signal its own backends), then serves whatever arrived meanwhile on the
//! same connection.
//!
//! A backend is only signalled if the reaper's connection reached the same
//! server address as the session's, and the backend's pid, its client port
//! (the local port of jitgate's own upstream connection) and its account
//! all match: a pooler in front of the server hands out pids that are not
//! the server's, and those must never end somebody else's backend.
//! Whatever is not matched (a pooler, a backend that has just gone, another
//! server behind the same name, a failed login) is left to the caller,
//! which falls back to a cancel request. After [`MISSES_BEFORE_GIVING_UP`]
//! statements in a row that matched none of the live sessions asked for,
//! the reaper answers "not done" at once for [`GIVE_UP_FOR`]; after a
//! failed login, for [`REST_AFTER_FAILED_LOGIN`]. Needs PostgreSQL 12 or
//! later (`MATERIALIZED`); older servers get cancel requests.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use super::upstream::{self, Upstream};
use crate::config::{LevelConfig, TargetConfig};

/// Backends ended per statement (keeps the statement text to some 30 KB).
const BATCH: usize = 1000;
/// Statements in a row that matched nothing before the reaper gives up.
pub const MISSES_BEFORE_GIVING_UP: u32 = 3;
/// How long it then leaves busy sessions to cancel requests.
pub const GIVE_UP_FOR: Duration = Duration::from_secs(600);
/// How long it leaves them to cancel requests after a failed login.
pub const REST_AFTER_FAILED_LOGIN: Duration = Duration::from_secs(30);
/// How long a session waits for its reaper before it falls back to a
/// cancel request. Short: behind a transaction-mode pooler whose server
/// connections are all busy with the very queries to stop, the reaper's own
/// statement waits in the pooler's queue.
const PATIENCE: Duration = Duration::from_millis(500);
/// How long the reaper waits for its statement's answer.
const WAIT: Duration = Duration::from_secs(3);
/// How long the reaper keeps its connection for more work.
const LINGER: Duration = Duration::from_millis(250);

/// One busy upstream backend to end.
struct Job {
    pid: u32,
    port: u16,
    /// The server address the session's upstream connection reached.
    server: SocketAddr,
    done: oneshot::Sender<bool>,
}

enum Msg {
    /// Log in now: busy backends are about to come.
    Prepare,
    End(Job),
}

/// The reapers of one front, one per target and level, started on first use.
#[derive(Default)]
pub struct Reapers {
    by_level: DashMap<(String, String), Reaper>,
}

impl Reapers {
    pub fn for_level(
        &self,
        target: &TargetConfig,
        level_name: &str,
        level: &LevelConfig,
        max_message_bytes: usize,
    ) -> Reaper {
        self.by_level
            .entry((target.name.clone(), level_name.to_owned()))
            .or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run(
                    target.clone(),
                    level_name.to_owned(),
                    level.clone(),
                    max_message_bytes,
                    rx,
                ));
                Reaper { jobs: Arc::new(tx) }
            })
            .clone()
    }
}

/// A handle on one level's reaper.
#[derive(Clone)]
pub struct Reaper {
    jobs: Arc<mpsc::UnboundedSender<Msg>>,
}

impl Reaper {
    /// Log in ahead of [`Reaper::end_backend`], while the clients are being told.
    pub fn prepare(&self) {
        let _ = self.jobs.send(Msg::Prepare);
    }

    /// End the backend `pid` on `server` whose client side is jitgate's
    /// local `port`. True once the server has signalled it; false if the
    /// caller must fall back to a cancel request.
    pub async fn end_backend(&self, server: SocketAddr, pid: u32, port: u16) -> bool {
        let (done, answer) = oneshot::channel();
        let job = Job {
            pid,
            port,
            server,
            done,
        };
        if self.jobs.send(Msg::End(job)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(PATIENCE, answer).await, Ok(Ok(true)))
    }
}

async fn run(
    target: TargetConfig,
    level_name: String,
    level: LevelConfig,
    max_message_bytes: usize,
    mut msgs: mpsc::UnboundedReceiver<Msg>,
) {
    let mut misses = 0u32;
    // While set and in the future, every job is answered "not done" at once.
    let mut off_until: Option<Instant> = None;
    while let Some(first) = msgs.recv().await {
        let mut batch = Vec::new();
        take(first, &mut batch);
        drain(&mut msgs, &mut batch);
        if off_until.is_some_and(|t| Instant::now() < t) {
            answer(batch, &HashSet::new());
            continue;
        }
        off_until = None;
        let mut up = match upstream::connect(&target, &level_name, &level, &[], max_message_bytes)
            .await
        {
            Ok(up) => up,
            Err(e) => {
                tracing::warn!(target = %target.name, level = %level_name, error = %e, "cannot log in to end busy backends; sending cancel requests instead for {}s", REST_AFTER_FAILED_LOGIN.as_secs());
                off_until = Some(Instant::now() + REST_AFTER_FAILED_LOGIN);
                drain(&mut msgs, &mut batch);
                answer(batch, &HashSet::new());
                continue;
            }
        };
        let server = up.reader.get_mut().peer_addr();
        // Serve batches on this connection until nothing comes for LINGER.
        loop {
            drain(&mut msgs, &mut batch);
            if batch.is_empty() {
                match tokio::time::timeout(LINGER, msgs.recv()).await {
                    Ok(Some(m)) => {
                        take(m, &mut batch);
                        continue;
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            if off_until.is_some() {
                answer(std::mem::take(&mut batch), &HashSet::new());
                continue;
            }
            // Sessions that stopped waiting are not asked about; a session
            // on another server (a name with several addresses) or a pid no
            // server uses (a pooler's) cannot be matched here.
            let (mut this, others): (Vec<Job>, Vec<Job>) = std::mem::take(&mut batch)
                .into_iter()
                .filter(|j| !j.done.is_closed())
                .partition(|j| Some(j.server) == server && i32::try_from(j.pid).is_ok());
            answer(others, &HashSet::new());
            if this.is_empty() {
                continue;
            }
            batch = this.split_off(this.len().min(BATCH));
            match terminate(&mut up, &this).await {
                Ok(ended) => {
                    misses = if ended.is_empty() { misses + 1 } else { 0 };
                    tracing::info!(target = %target.name, level = %level_name, asked = this.len(), ended = ended.len(), "ended busy upstream backends in one statement");
                    if misses >= MISSES_BEFORE_GIVING_UP {
                        misses = 0;
                        off_until = Some(Instant::now() + GIVE_UP_FOR);
                        tracing::info!(target = %target.name, level = %level_name, "no backend matched {MISSES_BEFORE_GIVING_UP} times in a row (a pooler in front of the server?): busy sessions get cancel requests for the next {}s", GIVE_UP_FOR.as_secs());
                    }
                    answer(this, &ended);
                }
                Err(e) => {
                    tracing::warn!(target = %target.name, level = %level_name, error = %e, "could not end busy backends; sending cancel requests instead");
                    answer(this, &HashSet::new());
                    answer(std::mem::take(&mut batch), &HashSet::new());
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let stream = up.reader.get_mut();
            let _ = stream.write_all(&[b'X', 0, 0, 0, 4]).await;
            let _ = stream.shutdown().await;
        })
        .await;
    }
}

fn take(m: Msg, batch: &mut Vec<Job>) {
    if let Msg::End(j) = m {
        batch.push(j);
    }
}

fn drain(msgs: &mut mpsc::UnboundedReceiver<Msg>, batch: &mut Vec<Job>) {
    while let Ok(m) = msgs.try_recv() {
        take(m, batch);
    }
}

fn answer(batch: Vec<Job>, ended: &HashSet<u32>) {
    for j in batch {
        let _ = j.done.send(ended.contains(&j.pid));
    }
}

/// The statement that ends the backends of `batch` that match, returning their pids.
fn statement(batch: &[Job]) -> String {
    let mut values = String::with_capacity(batch.len() * 20);
    for (i, j) in batch.iter().enumerate() {
        if i > 0 {
            values.push(',');
        }
        // Integers only: nothing from outside the proxy reaches the text.
        let _ = write!(values, "({}::int,{}::int)", j.pid, j.port);
    }
    // The per-backend functions rather than pg_stat_activity: the view looks
    // up every row's process by pid, a scan of all backends each, so one read
    // of it costs the server O(backends²), about 5 ms of CPU with a thousand
    // backends (measured with the grant_end bench), at the moment the
    // grant's clients are being told.
    format!(
        "WITH mine AS MATERIALIZED (SELECT s.pid FROM (SELECT pg_stat_get_backend_pid(b) AS pid, \
         pg_stat_get_backend_client_port(b) AS port, pg_stat_get_backend_userid(b) AS userid \
         FROM pg_stat_get_backend_idset() AS b) s \
         JOIN (VALUES {values}) AS t(pid, port) ON s.pid = t.pid AND s.port = t.port \
         WHERE s.userid = (SELECT oid FROM pg_roles WHERE rolname = session_user) \
         AND s.pid <> pg_backend_pid()) \
         SELECT pid FROM mine WHERE pg_terminate_backend(pid)"
    )
}

/// Run [`statement`] over the simple query protocol and collect the pids it ended.
async fn terminate(up: &mut Upstream, batch: &[Job]) -> Result<HashSet<u32>, String> {
    let rows = super::upstream::query_rows(up, &statement(batch), WAIT).await?;
    Ok(rows
        .iter()
        .filter_map(|row| row.first()?.as_deref()?.parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(pid: u32, port: u16) -> Job {
        Job {
            pid,
            port,
            server: "127.0.0.1:5432".parse().unwrap(),
            done: oneshot::channel().0,
        }
    }

    #[test]
    fn the_statement_matches_pid_port_and_account() {
        let sql = statement(&[job(4242, 50001), job(7, 65535)]);
        assert!(
            sql.contains("(4242::int,50001::int),(7::int,65535::int)"),
            "{sql}"
        );
        assert!(sql.contains("s.port = t.port"));
        assert!(sql.contains("rolname = session_user"));
        // The filter is materialised before anything is signalled.
        assert!(sql.contains("AS MATERIALIZED"));
    }
}
