//! The server's own view, as the tests' witness: who is logged in and
//! running what (`pg_stat_activity`), what its log says, what the table
//! holds — read as the superuser over the private socket, never through
//! jitgate.

use std::time::{Duration, Instant, SystemTime};

use super::super::wait::eventually;
use super::PgServer;

/// Which backends to count: a login's, or a client's by the application
/// name it sent (to tell two sessions of one login apart).
#[derive(Debug, Clone, Copy)]
pub enum By<'a> {
    User(&'a str),
    App(&'a str),
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub pid: i32,
    pub state: String,
    pub query: String,
}

impl PgServer {
    /// How many TCP connections the server has accepted for clients (the
    /// harness itself only uses the unix socket, so these all came through
    /// jitgate), not counting jitgate's own checks of the read level's
    /// account (each one connection, logged in under its application name;
    /// `Jitgate::start` waits until the first is over).
    pub fn tcp_connections_seen(&self) -> usize {
        let log = self.log();
        let checks = log
            .lines()
            .filter(|l| {
                l.contains("connection authorized")
                    && l.contains(jitgate::fuzzing::APPLICATION_NAME)
            })
            .count();
        log.matches("connection received: host=127.0.0.1")
            .count()
            .saturating_sub(checks)
    }

    /// Backends logged in as `user`, as the server sees them.
    pub async fn backends_of(&self, user: &str) -> Vec<Backend> {
        let su = self.superuser_client("postgres").await;
        su.query(
            "SELECT pid, coalesce(state, ''), coalesce(query, '') FROM pg_stat_activity WHERE usename = $1",
            &[&user],
        )
        .await
        .expect("query pg_stat_activity")
        .iter()
        .map(|r| Backend {
            pid: r.get(0),
            state: r.get(1),
            query: r.get(2),
        })
        .collect()
    }

    /// How many backends `by` picks, as the server counts them.
    pub async fn count_backends(&self, by: By<'_>) -> usize {
        let su = self.superuser_client("postgres").await;
        let (column, value) = match by {
            By::User(user) => ("usename", user),
            By::App(app) => ("application_name", app),
        };
        let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE {column} = $1");
        let n: i64 = su
            .query_one(&sql, &[&value])
            .await
            .expect("query pg_stat_activity")
            .get(0);
        n as usize
    }

    /// Wait (up to 10 s) until `by` picks exactly `n` backends.
    pub async fn wait_for_backend_count(&self, by: By<'_>, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.count_backends(by).await;
            if now == n {
                return;
            }
            assert!(Instant::now() < deadline, "{by:?}: {now} backends, not {n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until a backend of `user` is running a query containing `needle`.
    pub async fn wait_for_active_query(&self, user: &str, needle: &str) -> Backend {
        let su = self.superuser_client("postgres").await;
        eventually(
            Duration::from_secs(10),
            &format!("{user} running `{needle}`"),
            || async {
                let rows = su
                    .query(
                        "SELECT pid, state, query FROM pg_stat_activity \
                     WHERE usename = $1 AND state = 'active' AND strpos(query, $2) > 0",
                        &[&user, &needle],
                    )
                    .await
                    .expect("query pg_stat_activity");
                rows.first().map(|r| Backend {
                    pid: r.get(0),
                    state: r.get(1),
                    query: r.get(2),
                })
            },
        )
        .await
    }

    /// `SELECT count(*) FROM items` and the name of item 1, as the superuser sees them.
    pub async fn items_snapshot(&self) -> (i64, String) {
        let app = self.superuser_client("app").await;
        let count: i64 = app
            .query_one("SELECT count(*) FROM items", &[])
            .await
            .unwrap()
            .get(0);
        let first: String = app
            .query_one("SELECT name FROM items WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0);
        (count, first)
    }
}

/// Wait (up to 3 s) for the server's own log to show a backend ended by
/// `pg_terminate_backend`, as jitgate's reaper ends busy backends when a
/// grant ends.
pub async fn wait_for_reaper_termination(pg: &PgServer) {
    eventually(
        Duration::from_secs(3),
        "the server log to show the busy backend terminated by the reaper",
        || async {
            pg.log()
                .contains("terminating connection due to administrator command")
                .then_some(())
        },
    )
    .await;
}

/// Watch `pg_stat_activity` from now on and report the first moment the server
/// has no backend for `user` (polled every 20 ms, for at most `limit`).
pub async fn watch_backends_gone(
    pg: &PgServer,
    user: &'static str,
    limit: Duration,
) -> tokio::task::JoinHandle<Option<SystemTime>> {
    let su = pg.superuser_client("postgres").await;
    tokio::spawn(async move {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            // An error means the server is gone with the test that started it.
            let n: i64 = su
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                    &[&user],
                )
                .await
                .ok()?
                .get(0);
            if n == 0 {
                return Some(SystemTime::now());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    })
}
