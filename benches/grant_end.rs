//! How "instant" is the instant end, and what does an idle session cost?
//!
//! ```sh
//! cargo bench --bench grant_end                                  # everything below
//! cargo bench --bench grant_end -- --sessions 1000 --ends revoke --memory-sessions 0
//! ```
//!
//! **Grant end.** For each N in `--sessions` (default 1000 and 10000) and each
//! way a grant ends in `--ends` (`revoke`, `expire`): open N sessions through
//! jitgate (TLS off) as one identity on ONE grant, a `--sleeping` fraction of
//! them (default half) running `SELECT pg_sleep(3600)` and the rest idle; then
//! revoke the grant through the admin API, or let it reach its `expires_at`.
//! From that moment (the revoke request being sent, or the deadline) it
//! measures, as p50/p99/max over the sessions:
//! - until each client sees its connection end (the FATAL and EOF),
//! - until each upstream connection is gone, as the upstream itself sees it,
//! - until each running `pg_sleep` has stopped on the server,
//!
//! and it reads jitgate's own `jitgate_grant_end_lag_seconds` histogram. It
//! also reports the CPU time jitgate and the bench itself (whose clients
//! must read each FATAL and close) used until the last client saw its end:
//! on a small machine they share the cores, and the second bounds what
//! the first can reach.
//!
//! The upstream is the tests' throwaway PostgreSQL (`tests/support`: a copy
//! of a template data directory, run as the `postgres` user when we are
//! root; here with trust logins) with `max_connections` sized for N when N
//! is at most `--direct-max` (default 1000): there "upstream gone" is the
//! backend leaving `pg_stat_activity`. Larger N do not fit as real backends,
//! so jitgate's target is a pgbouncer in transaction mode (pool of 20,
//! `listen_backlog` 4096) in front of that server, and "upstream gone" is
//! jitgate's connection leaving pgbouncer's pools (`SHOW POOLS` client
//! counts); only the 20 `pg_sleep`s that hold a pooled server connection are
//! really running there (the others queue in pgbouncer), so "query stopped"
//! counts those. A queued query that pgbouncer hands to a server connection
//! freed by another session's cancel, after that session's own cancel found
//! nothing to cancel, keeps running once its client is gone (PostgreSQL only
//! notices a vanished client between queries, unless
//! `client_connection_check_interval` is set): the report counts those
//! orphans, and the bench terminates them before the next scenario.
//!
//! The upstream is polled every 5 ms on a thread of its own, by counts: the
//! k-th connection to go is stamped with the first poll that saw at most
//! `initial - k` left, which gives the same percentiles as following each
//! connection to within the polling interval.
//!
//! **Memory.** With `--memory-sessions` M (default 10000; 0 skips): a fresh
//! jitgate's resident memory (`VmRSS`) before and after M idle sessions, per
//! session, once with TLS off and once with TLS on (rustls on both sides).
//!
//! Every session costs jitgate two file descriptors (client and upstream), so
//! N is capped at what the hard `RLIMIT_NOFILE` allows; the bench raises its
//! soft limit to the hard one and says when it had to cap N.
//!
//! Other options: `--upstream auto|postgres|pgbouncer`, `--concurrency 64`
//! (logins in flight while opening), `--grant-secs S` (the expiring grant's
//! duration; by default enough to open N sessions), `--sleep-secs 3600`;
//! `JITGATE_BIN=path` measures another jitgate binary (a patched copy, say);
//! `SESSION_THREADS=n` sets its `limits.session_threads` (default: jitgate's own).

// The kit's servers and proxy are the integration tests' own. A bench
// crate looks for its modules under benches/, so it names the kit's path.
#[path = "../tests/support/mod.rs"]
mod support;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use support::{
    ALICE_SECRET, AnyCertTls, Jitgate, JitgateConfig, Login, PgServer, PgSettings, Pgbouncer,
    PgbouncerSettings, expires_at, id_of, lag_row, ms, pooled_clients,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// The upstream account every session logs in as (and what the pollers count).
const UPSTREAM_USER: &str = "jg_bench";
/// pgbouncer's server connections per pool, as an operator would size it.
const PGBOUNCER_POOL: usize = 20;
/// File descriptors jitgate needs besides its sessions (listeners, log, epoll…).
const FD_HEADROOM: usize = 100;
/// How long to wait for everything to end before reporting what is left.
const END_TIMEOUT: Duration = Duration::from_secs(120);
/// How long queries may keep running after every connection is gone before
/// they are reported as orphaned.
const ORPHAN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Revoke,
    Expire,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpstreamChoice {
    Auto,
    Postgres,
    Pgbouncer,
}

#[derive(Debug)]
struct Args {
    sessions: Vec<usize>,
    ends: Vec<End>,
    sleeping: f64,
    sleep_secs: u64,
    upstream: UpstreamChoice,
    direct_max: usize,
    memory_sessions: usize,
    concurrency: usize,
    grant_secs: Option<u64>,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let mut args = Args {
            sessions: vec![1000, 10_000],
            ends: vec![End::Revoke, End::Expire],
            sleeping: 0.5,
            sleep_secs: 3600,
            upstream: UpstreamChoice::Auto,
            direct_max: 1000,
            memory_sessions: 10_000,
            concurrency: 64,
            grant_secs: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            // `cargo bench` passes --bench to every bench binary.
            if flag == "--bench" {
                continue;
            }
            let mut value = || {
                it.next().ok_or_else(|| {
                    anyhow!("{flag} needs a value (see the top of benches/grant_end.rs)")
                })
            };
            match flag.as_str() {
                "--sessions" => {
                    args.sessions = value()?
                        .split(',')
                        .map(|n| {
                            n.trim()
                                .parse()
                                .context("--sessions takes numbers like 1000,10000")
                        })
                        .collect::<Result<_, _>>()?
                }
                "--ends" => {
                    args.ends = value()?
                        .split(',')
                        .map(|e| match e.trim() {
                            "revoke" => Ok(End::Revoke),
                            "expire" => Ok(End::Expire),
                            other => {
                                Err(anyhow!("--ends takes revoke and/or expire, not {other:?}"))
                            }
                        })
                        .collect::<Result<_, _>>()?
                }
                "--sleeping" => {
                    args.sleeping = value()?
                        .parse()
                        .context("--sleeping takes a fraction like 0.5")?
                }
                "--sleep-secs" => args.sleep_secs = value()?.parse()?,
                "--upstream" => {
                    args.upstream = match value()?.as_str() {
                        "auto" => UpstreamChoice::Auto,
                        "postgres" => UpstreamChoice::Postgres,
                        "pgbouncer" => UpstreamChoice::Pgbouncer,
                        other => {
                            bail!("--upstream takes auto, postgres or pgbouncer, not {other:?}")
                        }
                    }
                }
                "--direct-max" => args.direct_max = value()?.parse()?,
                "--memory-sessions" => args.memory_sessions = value()?.parse()?,
                "--concurrency" => args.concurrency = value()?.parse()?,
                "--grant-secs" => args.grant_secs = Some(value()?.parse()?),
                other => bail!("unknown option {other:?} (see the top of benches/grant_end.rs)"),
            }
        }
        if !(0.0..=1.0).contains(&args.sleeping) {
            bail!("--sleeping must be between 0 and 1");
        }
        Ok(args)
    }

    fn use_pgbouncer(&self, n: usize) -> bool {
        match self.upstream {
            UpstreamChoice::Auto => n > self.direct_max,
            UpstreamChoice::Postgres => false,
            UpstreamChoice::Pgbouncer => true,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let fd_limit = raise_fd_limit()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::select! {
            r = run(args, fd_limit) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted; servers stopped")),
        }
    })
}

async fn run(args: Args, fd_limit: usize) -> anyhow::Result<()> {
    let max_sessions = (fd_limit.saturating_sub(FD_HEADROOM)) / 2;
    let cap = |n: usize| -> usize {
        if n > max_sessions {
            println!(
                "NOTE: {n} sessions need {} file descriptors in jitgate (client + upstream each), \
                 but RLIMIT_NOFILE's hard limit is {fd_limit}; measuring {max_sessions} sessions instead",
                2 * n + FD_HEADROOM
            );
            max_sessions
        } else {
            n
        }
    };
    println!("{}", machine_line());

    for &requested in &args.sessions {
        let n = cap(requested);
        let pgbouncer = args.use_pgbouncer(n);
        let stack = Upstream::start(n, pgbouncer).await;
        for &end in &args.ends {
            let report = grant_end_scenario(&args, &stack, n, end).await?;
            println!("{report}");
        }
    }

    if args.memory_sessions > 0 {
        let n = cap(args.memory_sessions);
        let stack = Upstream::start(n, args.use_pgbouncer(n)).await;
        for tls in [false, true] {
            let report = memory_scenario(&args, &stack, n, tls).await?;
            println!("{report}");
        }
    }
    Ok(())
}

fn machine_line() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let threads = std::env::var("SESSION_THREADS")
        .map(|n| format!("session_threads = {}", n.trim()))
        .unwrap_or_else(|_| "jitgate's default session_threads".to_owned());
    format!(
        "grant_end bench, {} — {}, load average {}; {threads}",
        humantime::format_rfc3339_seconds(SystemTime::now()),
        support::cores_and_cpu(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// Raise the soft open-files limit to the hard one; returns it.
fn raise_fd_limit() -> anyhow::Result<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
        }
    }
    Ok(usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

// ---- the grant-end scenario ------------------------------------------------------

async fn grant_end_scenario(
    args: &Args,
    stack: &Upstream,
    n: usize,
    end: End,
) -> anyhow::Result<String> {
    let jitgate = start_jitgate(stack, n).await;
    let sleepers = (n as f64 * args.sleeping).round() as usize;
    // Opening costs roughly a SCRAM login each; give the expiring grant
    // enough time to open everything, plus a margin.
    let grant_secs = args
        .grant_secs
        .unwrap_or(20 + (n as u64 * 5).div_ceil(1000));
    let duration = match end {
        End::Revoke => "1h".to_owned(),
        End::Expire => format!("{grant_secs}s"),
    };
    let grant = jitgate.grant("alice", "bench", "write", &duration).await;
    let (grant_id, grant_expires_at) = (id_of(&grant), expires_at(&grant));

    let opened = Instant::now();
    let sessions = open_sessions(&jitgate, n, args.concurrency, false).await?;
    let open_took = opened.elapsed();
    let sleep_sql = format!("SELECT pg_sleep({})", args.sleep_secs);
    let mut sleeping = Vec::with_capacity(sleepers);
    let mut idle = Vec::with_capacity(n - sleepers);
    let mut closed = Vec::with_capacity(n);
    for (i, s) in sessions.into_iter().enumerate() {
        closed.push(s.closed);
        if i < sleepers {
            let client = s.client;
            let sql = sleep_sql.clone();
            sleeping.push(tokio::spawn(async move {
                let _ = client.simple_query(&sql).await;
            }));
        } else {
            idle.push(s.client);
        }
    }
    let running_expected = if stack.pgbouncer.is_some() {
        sleepers.min(PGBOUNCER_POOL)
    } else {
        sleepers
    };
    stack
        .wait_for_running_sleeps(running_expected, Duration::from_secs(60))
        .await?;
    let metrics_before = end_lag_histogram(&jitgate).await;

    // The poller starts before the end, on its own thread, so that its
    // timestamps do not queue behind the sessions' wake-ups.
    let mut poller = stack.start_poller();
    poller.wait_first_snapshot().await?;

    // CPU counters are read just before the end: the bench's poller keeps
    // its thread busy while it waits.
    let cpu_before;
    let (t0, revoke_took) = match end {
        End::Revoke => {
            cpu_before = (jitgate_cpu_time(&jitgate), cpu_time_of("self"));
            let t0 = Instant::now();
            jitgate.revoke(&grant_id).await;
            (t0, Some(t0.elapsed()))
        }
        End::Expire => {
            let until = grant_expires_at
                .duration_since(SystemTime::now())
                .map_err(|_| {
                    anyhow!(
                        "the grant expired before all {n} sessions were open ({open_took:?}); \
                         pass a larger --grant-secs than {grant_secs}"
                    )
                })?;
            let t0 = Instant::now() + until;
            tokio::time::sleep_until((t0 - Duration::from_millis(5).min(until)).into()).await;
            cpu_before = (jitgate_cpu_time(&jitgate), cpu_time_of("self"));
            tokio::time::sleep_until(t0.into()).await;
            (t0, None)
        }
    };

    let mut client_lags = Vec::with_capacity(n);
    let mut early = 0;
    let mut stuck = 0;
    let deadline = tokio::time::Instant::now() + END_TIMEOUT;
    for handle in closed {
        match tokio::time::timeout_at(deadline, handle).await {
            Ok(Ok(at)) => match at.checked_duration_since(t0) {
                Some(lag) => client_lags.push(lag),
                None => early += 1,
            },
            Ok(Err(_)) | Err(_) => stuck += 1,
        }
    }
    let cpu_jitgate = jitgate_cpu_time(&jitgate).saturating_sub(cpu_before.0);
    let cpu_bench = cpu_time_of("self").saturating_sub(cpu_before.1);
    let upstream = poller.finish(t0, END_TIMEOUT).await?;
    drop(idle);
    for s in sleeping {
        s.abort();
    }
    // A session observes its lag once it has ended both sides, which can be
    // after the server saw its backend go: wait (a little) for all of them.
    let mut jitgate_lag = end_lag_histogram(&jitgate).await.minus(&metrics_before);
    let counted_by = tokio::time::Instant::now() + Duration::from_secs(10);
    while jitgate_lag.count < n as u64 && tokio::time::Instant::now() < counted_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
        jitgate_lag = end_lag_histogram(&jitgate).await.minus(&metrics_before);
    }

    let mut out = String::new();
    let upstream_name = if stack.pgbouncer.is_some() {
        "pgbouncer (transaction mode) in front of PostgreSQL"
    } else {
        "PostgreSQL directly"
    };
    out += &format!(
        "\n== grant end by {} — {n} sessions on one grant ({sleepers} running pg_sleep, {} idle), TLS off, upstream: {upstream_name}\n",
        match end {
            End::Revoke => "revoke",
            End::Expire => "expiry",
        },
        n - sleepers
    );
    out += &format!(
        "   opened in {:.1} s ({:.0} logins/s){}\n",
        open_took.as_secs_f64(),
        n as f64 / open_took.as_secs_f64(),
        revoke_took.map_or(String::new(), |d| format!(
            "; the revoke API call took {:.1} ms",
            ms(d)
        ))
    );
    out += &format!(
        "   {:<44} {:>9} {:>9} {:>9} {:>7}\n",
        "from the revoke/deadline until…", "p50 ms", "p99 ms", "max ms", "n"
    );
    out += &lag_row("each client sees FATAL + EOF", &mut client_lags, n);
    let upstream_label = if stack.pgbouncer.is_some() {
        "each upstream conn leaves pgbouncer's pool"
    } else {
        "each backend leaves pg_stat_activity"
    };
    out += &lag_row(
        upstream_label,
        &mut upstream.connections_gone.clone(),
        upstream.connections,
    );
    out += &lag_row(
        "each running pg_sleep stops on the server",
        &mut upstream.queries_stopped.clone(),
        upstream.queries,
    );
    out += &format!(
        "   CPU used until every client had seen the end: jitgate {:.1} ms ({:.1} µs per session), \
         this bench (its clients and poller) {:.1} ms\n",
        ms(cpu_jitgate),
        cpu_jitgate.as_secs_f64() * 1e6 / n as f64,
        ms(cpu_bench)
    );
    out += &format!(
        "   jitgate_grant_end_lag_seconds: {} sessions, mean {:.1} ms, p99 ≤ {} (histogram bucket)\n",
        jitgate_lag.count,
        if jitgate_lag.count > 0 {
            1000.0 * jitgate_lag.sum / jitgate_lag.count as f64
        } else {
            0.0
        },
        jitgate_lag.quantile_bound(0.99)
    );
    if early > 0 || stuck > 0 || upstream.left > 0 {
        out += &format!(
            "   PROBLEM: {early} client(s) closed before the end, {stuck} still open after {END_TIMEOUT:?}, \
             {} upstream connection(s) still there\n",
            upstream.left
        );
    }
    if upstream.queries_left > 0 {
        out += &format!(
            "   PROBLEM: {} pg_sleep(s) still running on the server {ORPHAN_GRACE:?} after every upstream \
             connection was gone (terminated now by the bench)\n",
            upstream.queries_left
        );
    }
    drop(jitgate);
    stack.terminate_running_sleeps().await?;
    stack.wait_upstream_empty(Duration::from_secs(30)).await?;
    Ok(out)
}

/// CPU time the live threads of process `pid` ("self" for this one) have
/// used: the sum of their scheduler run times (nanoseconds, unlike the
/// clock ticks of `/proc/<pid>/stat`).
fn cpu_time_of(pid: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

// ---- the memory scenario -----------------------------------------------------------

async fn memory_scenario(
    args: &Args,
    stack: &Upstream,
    n: usize,
    tls: bool,
) -> anyhow::Result<String> {
    let jitgate = start_jitgate(stack, n).await;
    jitgate.grant("alice", "bench", "write", "1h").await;
    // One session first, so that lazily built state (metrics, caches, TLS
    // config) is in the baseline rather than in the per-session figure.
    {
        let warm = open_sessions(&jitgate, 1, 1, tls).await?;
        for s in &warm {
            s.client.simple_query("SELECT 1").await?;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(&jitgate)?;
    let opened = Instant::now();
    let sessions = open_sessions(&jitgate, n, args.concurrency, tls).await?;
    let open_took = opened.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(&jitgate)?;
    let fds = open_fds(&jitgate);
    drop(sessions);
    let per_session = (after.saturating_sub(before)) as f64 / n as f64;
    Ok(format!(
        "\n== memory: {n} idle sessions, TLS {} — jitgate VmRSS {:.1} MiB before, {:.1} MiB after \
         ({fds} fds): {per_session:.1} KiB per session (opened in {:.1} s)",
        if tls { "on" } else { "off" },
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        open_took.as_secs_f64()
    ))
}

// ---- sessions through jitgate --------------------------------------------------------

struct Session {
    client: tokio_postgres::Client,
    /// Resolves with the moment the client saw its connection end.
    closed: tokio::task::JoinHandle<Instant>,
}

/// Open `n` sessions, at most `concurrency` logins at a time.
async fn open_sessions(
    jitgate: &Jitgate,
    n: usize,
    concurrency: usize,
    tls: bool,
) -> anyhow::Result<Vec<Session>> {
    let mut config = Login::new("alice", ALICE_SECRET)
        .dbname("bench")
        .sslmode(if tls { "require" } else { "disable" })
        .config(jitgate.pg_port());
    config
        .application_name("grant_end_bench")
        .connect_timeout(Duration::from_secs(60));
    let config = Arc::new(config);
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let tls_connector = AnyCertTls::new();
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let config = config.clone();
        let permits = permits.clone();
        let tls_connector = tls_connector.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            if tls {
                let (client, connection) = config.connect(tls_connector).await?;
                let closed = tokio::spawn(async move {
                    let _ = connection.await;
                    Instant::now()
                });
                Ok::<_, tokio_postgres::Error>(Session { client, closed })
            } else {
                let (client, connection) = config.connect(NoTls).await?;
                let closed = tokio::spawn(async move {
                    let _ = connection.await;
                    Instant::now()
                });
                Ok(Session { client, closed })
            }
        });
    }
    let mut sessions = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        match joined? {
            Ok(s) => sessions.push(s),
            Err(e) => {
                tasks.abort_all();
                let why = match e.as_db_error() {
                    Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
                    None => e.to_string(),
                };
                return Err(anyhow!(
                    "a login through jitgate failed after {} sessions: {why}\n--- jitgate log (tail)\n{}",
                    sessions.len(),
                    log_tail(jitgate)
                ));
            }
        }
    }
    Ok(sessions)
}

// ---- jitgate ---------------------------------------------------------------------------

/// jitgate in front of `stack`, room for `n` sessions, TLS offered but not
/// required, alice's grant on the one `write` level of target `bench`; it
/// logs at its own default level (debug logging would cost the figures).
/// Every client comes from 127.0.0.1, so the per-address handshake cap is
/// the total one (`--concurrency` logins are in flight at once).
/// `JITGATE_BIN` runs another binary, `SESSION_THREADS` sets its
/// `limits.session_threads`.
async fn start_jitgate(stack: &Upstream, n: usize) -> Jitgate {
    let session_threads = match std::env::var("SESSION_THREADS") {
        Ok(n) => format!("session_threads = {}\n", n.trim()),
        Err(_) => String::new(),
    };
    let mut config = JitgateConfig {
        postgres_listener: true,
        tls_require: false,
        limits: format!(
            "handshake_timeout = \"60s\"\nmax_pending_handshakes = 1024\n\
             max_pending_handshakes_per_address = 1024\n\
             max_sessions = {}\nmax_login_failures = 100000\n{session_threads}",
            n + 100
        ),
        targets: format!(
            "[[targets]]\nname = \"bench\"\nprotocol = \"postgres\"\n\
             address = \"127.0.0.1:{}\"\ndatabase = \"{}\"\ntls = \"disable\"\n\
             \n[targets.levels.write]\nuser = \"{UPSTREAM_USER}\"\n",
            stack.target_port(),
            stack.target_database()
        ),
        log_filter: None,
        admin_timeout: Duration::from_secs(30),
        ..JitgateConfig::default()
    };
    if let Some(exe) = std::env::var_os("JITGATE_BIN") {
        config.exe = PathBuf::from(exe);
    }
    Jitgate::launch(config).await
}

/// jitgate's own `jitgate_grant_end_lag_seconds` histogram, from `/metrics`.
async fn end_lag_histogram(jitgate: &Jitgate) -> Histogram {
    let (status, body) = jitgate
        .api(reqwest::Method::GET, "/metrics", None, None)
        .await;
    assert_eq!(status, 200, "GET /metrics answered {status}");
    Histogram::parse(
        body.as_str().unwrap_or_default(),
        "jitgate_grant_end_lag_seconds",
    )
}

fn rss_kib(jitgate: &Jitgate) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", jitgate.pid()))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{}/status", jitgate.pid()))
}

/// CPU time jitgate's threads have used so far.
fn jitgate_cpu_time(jitgate: &Jitgate) -> Duration {
    cpu_time_of(&jitgate.pid().to_string())
}

fn open_fds(jitgate: &Jitgate) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", jitgate.pid())).map_or(0, |d| d.count())
}

fn log_tail(jitgate: &Jitgate) -> String {
    let log = jitgate.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A Prometheus histogram's cumulative buckets, sum and count.
#[derive(Debug, Default)]
struct Histogram {
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn parse(text: &str, name: &str) -> Histogram {
        let mut h = Histogram::default();
        for line in text.lines() {
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            if let Some(labels) = key.strip_prefix(&format!("{name}_bucket{{")) {
                let le = labels
                    .split("le=\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .map(|s| {
                        if s == "+Inf" {
                            f64::INFINITY
                        } else {
                            s.parse().unwrap_or(f64::NAN)
                        }
                    });
                if let (Some(le), Ok(v)) = (le, value.parse::<f64>()) {
                    h.buckets.push((le, v as u64));
                }
            } else if key == format!("{name}_sum") {
                h.sum = value.parse().unwrap_or(0.0);
            } else if key == format!("{name}_count") {
                h.count = value.parse::<f64>().unwrap_or(0.0) as u64;
            }
        }
        h
    }

    fn minus(&self, before: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, c)| {
                    let b = before
                        .buckets
                        .iter()
                        .find(|(l, _)| *l == le)
                        .map_or(0, |x| x.1);
                    (le, c.saturating_sub(b))
                })
                .collect(),
            sum: self.sum - before.sum,
            count: self.count.saturating_sub(before.count),
        }
    }

    /// The upper bound of the bucket holding quantile `q`.
    fn quantile_bound(&self, q: f64) -> String {
        let want = (q * self.count as f64).ceil() as u64;
        match self.buckets.iter().find(|(_, c)| *c >= want.max(1)) {
            Some((le, _)) if le.is_infinite() => "+Inf".to_owned(),
            Some((le, _)) => format!("{:.1} ms", le * 1000.0),
            None => "-".to_owned(),
        }
    }
}

// ---- the upstream: a throwaway PostgreSQL, maybe behind pgbouncer ----------------------

struct Upstream {
    pg: PgServer,
    pgbouncer: Option<Pgbouncer>,
}

impl Upstream {
    /// A PostgreSQL with trust logins for the bench's account and room
    /// for `n` backends, or for a pgbouncer's pool in front of it.
    async fn start(n: usize, pgbouncer: bool) -> Upstream {
        let pg = PgServer::start_with(PgSettings {
            max_connections: if pgbouncer { 100 } else { n + 50 },
            shared_buffers: "64MB".to_owned(),
            tcp_auth: "trust".to_owned(),
            ssl: false,
            log_connections: false,
            synchronous_commit: false,
        })
        .await;
        pg.superuser_client("postgres")
            .await
            .batch_execute(&format!("CREATE ROLE {UPSTREAM_USER} LOGIN"))
            .await
            .expect("create the bench role");
        let pgbouncer = pgbouncer.then(|| {
            Pgbouncer::start(
                &pg,
                &PgbouncerSettings {
                    database: "bench".to_owned(),
                    user: UPSTREAM_USER.to_owned(),
                    pool_size: PGBOUNCER_POOL,
                    max_client_conn: n + 200,
                },
            )
        });
        Upstream { pg, pgbouncer }
    }

    fn target_port(&self) -> u16 {
        self.pgbouncer.as_ref().map_or(self.pg.port(), |b| b.port())
    }

    fn target_database(&self) -> &'static str {
        if self.pgbouncer.is_some() {
            "bench"
        } else {
            "postgres"
        }
    }

    async fn superuser(&self) -> tokio_postgres::Client {
        self.pg.superuser_client("postgres").await
    }

    /// Wait until `expected` pg_sleep queries of the bench user run on the server.
    async fn wait_for_running_sleeps(
        &self,
        expected: usize,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let su = self.superuser().await;
        let deadline = Instant::now() + limit;
        loop {
            let running = count(
                &su,
                &format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = '{UPSTREAM_USER}' \
                 AND state = 'active' AND query LIKE 'SELECT pg_sleep%'"
                ),
            )
            .await?;
            if running >= expected {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("only {running} of {expected} pg_sleep queries are running after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// End queries that outlived their sessions, so the next scenario starts clean.
    async fn terminate_running_sleeps(&self) -> anyhow::Result<()> {
        let su = self.superuser().await;
        su.simple_query(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{UPSTREAM_USER}' \
             AND query LIKE 'SELECT pg_sleep%' AND state = 'active'"
        ))
        .await?;
        Ok(())
    }

    /// Wait until no bench connection is left upstream (between scenarios).
    async fn wait_upstream_empty(&self, limit: Duration) -> anyhow::Result<()> {
        let su = self.superuser().await;
        let deadline = Instant::now() + limit;
        loop {
            let left =
                if let Some(b) = &self.pgbouncer {
                    b.clients_of(UPSTREAM_USER).await?
                } else {
                    count(&su, &format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = '{UPSTREAM_USER}'"
                ))
                .await?
                };
            if left == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{left} upstream connections of {UPSTREAM_USER} still there after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn start_poller(&self) -> Poller {
        Poller::start(
            self.pg.superuser_config("postgres"),
            self.pgbouncer.as_ref().map(Pgbouncer::admin_config),
        )
    }
}

/// The first two columns of `sql`'s first row, as counts.
async fn count_pair(client: &tokio_postgres::Client, sql: &str) -> anyhow::Result<(usize, usize)> {
    for m in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(r) = m {
            return Ok((
                r.get(0).unwrap_or("0").parse()?,
                r.get(1).unwrap_or("0").parse()?,
            ));
        }
    }
    bail!("no row from {sql}")
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> anyhow::Result<usize> {
    for m in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(r) = m {
            return Ok(r.get(0).unwrap_or("0").parse()?);
        }
    }
    bail!("no row from {sql}")
}

/// What the upstream saw after the end.
struct UpstreamEnd {
    connections: usize,
    connections_gone: Vec<Duration>,
    queries: usize,
    queries_stopped: Vec<Duration>,
    left: usize,
    queries_left: usize,
}

/// Polls the upstream's count of the bench user's connections and running
/// queries on a thread of its own. With counts sampled every few
/// milliseconds, the k-th connection to go is timed by the first poll that
/// saw at most `initial - k` left, which gives the same percentiles as
/// following each connection, at a fraction of the polling cost (pgbouncer's
/// `SHOW CLIENTS` lists every client; `SHOW POOLS` only counts them).
struct Poller {
    first_snapshot: tokio::sync::oneshot::Receiver<anyhow::Result<()>>,
    stop: std::sync::mpsc::Sender<(Instant, Duration)>,
    result: tokio::sync::oneshot::Receiver<anyhow::Result<UpstreamEnd>>,
}

impl Poller {
    fn start(
        pg: tokio_postgres::Config,
        pgbouncer_admin: Option<tokio_postgres::Config>,
    ) -> Poller {
        let (first_tx, first_snapshot) = tokio::sync::oneshot::channel();
        let (stop, stop_rx) = std::sync::mpsc::channel::<(Instant, Duration)>();
        let (result_tx, result) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("poller runtime");
            let r = rt.block_on(poll_upstream(pg, pgbouncer_admin, first_tx, stop_rx));
            let _ = result_tx.send(r);
        });
        Poller {
            first_snapshot,
            stop,
            result,
        }
    }

    async fn wait_first_snapshot(&mut self) -> anyhow::Result<()> {
        (&mut self.first_snapshot)
            .await
            .map_err(|_| anyhow!("the upstream poller died"))?
    }

    /// Tell the poller when the end happened; it keeps polling until everything
    /// is gone or `limit` has passed, then reports.
    async fn finish(self, t0: Instant, limit: Duration) -> anyhow::Result<UpstreamEnd> {
        self.stop
            .send((t0, limit))
            .map_err(|_| anyhow!("the upstream poller died"))?;
        self.result
            .await
            .map_err(|_| anyhow!("the upstream poller died"))?
    }
}

/// Counts that only go down: the k-th disappearance is stamped with the first
/// poll at which at most `initial - k` were left.
struct Countdown {
    initial: usize,
    left: usize,
    gone_at: Vec<Instant>,
}

impl Countdown {
    fn new(initial: usize) -> Countdown {
        Countdown {
            initial,
            left: initial,
            gone_at: Vec::with_capacity(initial),
        }
    }

    fn observe(&mut self, now_left: usize, at: Instant) {
        while self.left > now_left {
            self.left -= 1;
            self.gone_at.push(at);
        }
    }

    fn lags(&self, t0: Instant) -> Vec<Duration> {
        self.gone_at
            .iter()
            .map(|at| at.saturating_duration_since(t0))
            .collect()
    }
}

async fn poll_upstream(
    pg: tokio_postgres::Config,
    pgbouncer_admin: Option<tokio_postgres::Config>,
    first: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
    stop: std::sync::mpsc::Receiver<(Instant, Duration)>,
) -> anyhow::Result<UpstreamEnd> {
    let pg = connect(pg).await?;
    let bouncer = match pgbouncer_admin {
        Some(config) => Some(connect(config).await?),
        None => None,
    };
    // One statement for both counts, from the per-backend functions: the
    // pg_stat_activity view looks up every row's process by pid (a scan of
    // all backends each), so with a thousand backends one read of it costs
    // the server about 5 ms of CPU, on the cores being measured; polling it
    // every 5 ms took half a core while clients were being told.
    // `pg_stat_get_backend_wait_event` still looks up its process, but only
    // for the rows still running pg_sleep.
    let counts_sql = format!(
        "SELECT count(*), count(*) FILTER (WHERE pg_stat_get_backend_activity(b) LIKE 'SELECT pg_sleep%' \
         AND pg_stat_get_backend_wait_event(b) = 'PgSleep') \
         FROM pg_stat_get_backend_idset() AS b \
         WHERE pg_stat_get_backend_userid(b) = (SELECT oid FROM pg_roles WHERE rolname = '{UPSTREAM_USER}')"
    );
    let sample = || async {
        let (conns, queries) = count_pair(&pg, &counts_sql).await?;
        let conns = match &bouncer {
            Some(b) => pooled_clients(b, UPSTREAM_USER).await?,
            None => conns,
        };
        anyhow::Ok((conns, queries))
    };
    let (conns, queries) = sample().await?;
    let mut connections = Countdown::new(conns);
    let mut running = Countdown::new(queries);
    let _ = first.send(Ok(()));

    let interval = Duration::from_millis(5);
    let mut end: Option<(Instant, Duration)> = None;
    let mut all_connections_gone: Option<Instant> = None;
    loop {
        let polled_at = Instant::now();
        let (conns, queries) = sample().await?;
        // The poll's start is when what it saw was certainly true.
        connections.observe(conns, polled_at);
        running.observe(queries, polled_at);
        if end.is_none() {
            end = stop.try_recv().ok();
        }
        if connections.left == 0 && all_connections_gone.is_none() {
            all_connections_gone = Some(polled_at);
        }
        // Behind a transaction pooler a query can outlive its connection (see
        // the report's PROBLEM line); give those a grace period, not the
        // whole limit.
        let queries_given_up = all_connections_gone.is_some_and(|at| polled_at > at + ORPHAN_GRACE);
        if let Some((t0, limit)) = end
            && ((connections.left == 0 && (running.left == 0 || queries_given_up))
                || Instant::now() > t0 + limit)
        {
            return Ok(UpstreamEnd {
                connections: connections.initial,
                connections_gone: connections.lags(t0),
                queries: running.initial,
                queries_stopped: running.lags(t0),
                left: connections.left,
                queries_left: running.left,
            });
        }
        tokio::time::sleep_until((polled_at + interval).into()).await;
    }
}

/// A connection on the current runtime, for the poller's own thread.
async fn connect(config: tokio_postgres::Config) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}
