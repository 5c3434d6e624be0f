//! A fleet on one PostgreSQL store: how fast does a revoke on one proxy
//! reach every proxy's clients, what happens when the store goes away, and
//! how many approvals a fleet makes per second.
//!
//! ```sh
//! cargo bench --bench fleet
//! cargo bench --bench fleet -- --sessions 100 --rounds 5 --approvals 200 --fail-closed-after 5s
//! ```
//!
//! Everything runs on this machine: a throwaway PostgreSQL as the store
//! (`synchronous_commit = on`, so a commit is durable before it is
//! acknowledged), another as the target (trust logins, TLS off), and three
//! `jitgate serve` processes (TLS off) on the store.
//!
//! **Cross-proxy revoke.** Each round: an admin grants alice `write` on one
//! proxy; `--sessions` sessions (default 100) log in on that grant, spread
//! round-robin over the three proxies, and sit idle; then the grant is
//! revoked through the second proxy's admin API. Reported, as p50/p99/max
//! over every session of every round: from the moment the revoke's HTTP
//! answer arrived until each client saw its connection end (the FATAL and
//! EOF); a session ended before the answer arrived counts as 0. The same
//! again for one proxy on the file store, for comparison.
//!
//! **Store outage.** With `--sessions` sessions over the three proxies and
//! `store.fail_closed_after` = `--fail-closed-after` (default 5s): the store
//! is stopped (`pg_ctl stop -m immediate`); reported is the time until each
//! session was ended (p50/max), then, once the store is started again, the
//! time until each proxy accepts a login again.
//!
//! **Approval throughput.** `--workers` (default 8) loops, each: alice
//! requests on one proxy, bob approves on the next; `--approvals` (default
//! 200) in all. Reported: requests + approvals per second, and the p50/p99
//! of an approve's round trip.
//!
//! `FLEET_DETAIL=1` prints each revoke round's slowest client per proxy.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use serde_json::json;
use support::{
    ADMIN_SECRET, ALICE_SECRET, BOB_SECRET, Jitgate, JitgateConfig, Login, PgServer, PgSettings,
    StoreServer, lag_row,
};
use tokio::task::JoinSet;
use tokio_postgres::NoTls;

struct Args {
    sessions: usize,
    rounds: usize,
    approvals: usize,
    workers: usize,
    fail_closed_after: String,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let mut args = Args {
            sessions: 100,
            rounds: 5,
            approvals: 200,
            workers: 8,
            fail_closed_after: "5s".to_owned(),
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--sessions" => args.sessions = value()?.parse()?,
                "--rounds" => args.rounds = value()?.parse()?,
                "--approvals" => args.approvals = value()?.parse()?,
                "--workers" => args.workers = value()?.parse()?,
                "--fail-closed-after" => args.fail_closed_after = value()?,
                // What cargo bench passes to every bench binary.
                "--bench" => {}
                other => bail!(
                    "unknown argument {other}; see the comment at the top of benches/fleet.rs"
                ),
            }
        }
        Ok(args)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    println!("{}", machine_line());
    let target = PgServer::start_with(PgSettings {
        max_connections: args.sessions * 2 + 50,
        shared_buffers: "64MB".to_owned(),
        tcp_auth: "trust".to_owned(),
        ssl: false,
        log_connections: false,
        synchronous_commit: false,
    })
    .await;
    let store = StoreServer::start().await;
    let mut fleet = Vec::new();
    for name in ["jitgate-a", "jitgate-b", "jitgate-c"] {
        fleet.push(
            Jitgate::launch(proxy_config(
                &target,
                Some((&store, name, &args.fail_closed_after)),
                args.sessions,
            ))
            .await,
        );
    }
    let alone = Jitgate::launch(proxy_config(&target, None, args.sessions)).await;

    println!(
        "\ncross-proxy revoke: {} sessions on one grant, {} rounds",
        args.sessions, args.rounds
    );
    println!(
        "   {:<44} {:>9} {:>9} {:>9} {:>7}",
        "ms from the revoke's answer to", "p50", "p99", "max", "n"
    );
    let fleet_refs: Vec<&Jitgate> = fleet.iter().collect();
    let (mut all, mut here, mut there) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        for (proxy, lag) in revoke_round(&fleet_refs, args.sessions).await? {
            all.push(lag);
            if proxy == 1 {
                here.push(lag);
            } else {
                there.push(lag);
            }
        }
    }
    let n = all.len();
    for (label, lags) in [
        ("each client told, 3 proxies, PostgreSQL store", &mut all),
        ("  of those, on the revoking proxy", &mut here),
        ("  of those, on the other two", &mut there),
    ] {
        print!("{}", lag_row(label, lags, n));
    }
    let mut lags = Vec::new();
    for _ in 0..args.rounds {
        let round = revoke_round(&[&alone], args.sessions).await?;
        lags.extend(round.into_iter().map(|(_, lag)| lag));
    }
    let label = "each client told, 1 proxy, file store";
    print!("{}", lag_row(label, &mut lags, args.sessions * args.rounds));
    drop(alone);

    approvals(&fleet_refs, &args).await?;
    outage(&fleet_refs, &store, args.sessions).await?;
    Ok(())
}

fn proxy_config(
    target: &PgServer,
    store: Option<(&StoreServer, &str, &str)>,
    sessions: usize,
) -> JitgateConfig {
    let mut config = JitgateConfig {
        postgres_listener: true,
        tls_require: false,
        limits: format!(
            "max_sessions = {}\nmax_login_failures = 100000\nmax_pending_handshakes_per_address = 1024\n",
            sessions + 100
        ),
        targets: format!(
            "[[targets]]\nname = \"bench\"\nprotocol = \"postgres\"\naddress = \"127.0.0.1:{}\"\n\
             database = \"app\"\ntls = \"disable\"\n\n[targets.levels.write]\nuser = \"jg_write\"\n",
            target.port()
        ),
        extra: "\n[requests]\nmax_pending_per_identity = 1000\n\n[[policies]]\nname = \"bench\"\n\
                targets = [\"bench\"]\nlevels = [\"write\"]\nrequesters = [\"developer\"]\n\
                max_duration = \"1h\"\napprovals = 1\napprovers = [\"approver\"]\n"
            .to_owned(),
        log_filter: None,
        admin_timeout: Duration::from_secs(30),
        ..JitgateConfig::default()
    };
    if let Some((store, name, fail_closed_after)) = store {
        store.configure(&mut config, name, fail_closed_after);
    }
    config
}

/// A session: which proxy holds it, its client, and the moment its client saw the end.
type Session = (
    usize,
    tokio_postgres::Client,
    tokio::task::JoinHandle<Instant>,
);

/// Sessions through the proxies in turn.
async fn open_sessions(proxies: &[&Jitgate], n: usize) -> anyhow::Result<Vec<Session>> {
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let mut config = Login::new("alice", ALICE_SECRET)
            .dbname("bench")
            .sslmode("disable")
            .config(proxies[i % proxies.len()].pg_port());
        config.connect_timeout(Duration::from_secs(30));
        let proxy = i % proxies.len();
        tasks.spawn(async move {
            let (client, connection) = config.connect(NoTls).await?;
            let closed = tokio::spawn(async move {
                let _ = connection.await;
                Instant::now()
            });
            Ok::<_, tokio_postgres::Error>((proxy, client, closed))
        });
    }
    let mut sessions = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        sessions.push(joined?.map_err(|e| anyhow!("a login failed: {e}"))?);
    }
    Ok(sessions)
}

/// One grant, `n` sessions over `proxies`, a revoke through the second
/// proxy (the first when alone): each client's proxy and lag after the answer.
async fn revoke_round(proxies: &[&Jitgate], n: usize) -> anyhow::Result<Vec<(usize, Duration)>> {
    let grant = proxies[0].grant("alice", "bench", "write", "30m").await;
    let id = grant["id"].as_str().context("grant id")?.to_owned();
    for jg in proxies {
        wait_until(Duration::from_secs(10), || async {
            jg.grants().await.to_string().contains(&id)
        })
        .await
        .context("the grant did not reach every proxy")?;
    }
    let sessions = open_sessions(proxies, n).await?;
    let revoker = proxies[1 % proxies.len()];
    let (status, body) = revoker.revoke_as(ADMIN_SECRET, &id).await;
    let answered = Instant::now();
    if status != 200 {
        bail!("revoke answered {status}: {body}");
    }
    let mut lags = Vec::new();
    for (proxy, client, closed) in sessions {
        let at = tokio::time::timeout(Duration::from_secs(30), closed)
            .await
            .context("a client was never told")??;
        lags.push((proxy, at.saturating_duration_since(answered)));
        drop(client);
    }
    if std::env::var_os("FLEET_DETAIL").is_some() {
        let mut per = [Duration::ZERO; 3];
        for (p, l) in &lags {
            per[*p] = per[*p].max(*l);
        }
        eprintln!("round: slowest client per proxy {per:?}");
    }
    Ok(lags)
}

async fn approvals(fleet: &[&Jitgate], args: &Args) -> anyhow::Result<()> {
    let done = Arc::new(AtomicUsize::new(0));
    let apis: Vec<_> = fleet.iter().map(|jg| jg.admin_api()).collect();
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for w in 0..args.workers {
        let (done, apis, total) = (done.clone(), apis.clone(), args.approvals);
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut i = w;
            while done.fetch_add(1, Ordering::Relaxed) < total {
                let on = &apis[i % apis.len()];
                let by = &apis[(i + 1) % apis.len()];
                i += 1;
                let body = json!({"target": "bench", "level": "write", "duration": "5m", "reason": "bench"});
                let (status, request) = on.call(reqwest::Method::POST, "/v1/requests", Some(ALICE_SECRET), Some(body)).await?;
                if status != 201 {
                    bail!("request answered {status}: {request}");
                }
                let id = request["id"].as_str().context("request id")?;
                let sent = Instant::now();
                let (status, approved) = by
                    .call(reqwest::Method::POST, &format!("/v1/requests/{id}/approve"), Some(BOB_SECRET), None)
                    .await?;
                latencies.push(sent.elapsed());
                if status != 200 {
                    bail!("approve answered {status}: {approved}");
                }
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(joined) = workers.join_next().await {
        latencies.extend(joined??);
    }
    let took = started.elapsed();
    println!(
        "\napproval throughput: {} requests + {} approvals by {} workers over 3 proxies in {:.2} s: {:.0} changes/s",
        latencies.len(),
        latencies.len(),
        args.workers,
        took.as_secs_f64(),
        (2 * latencies.len()) as f64 / took.as_secs_f64()
    );
    println!(
        "   {:<44} {:>9} {:>9} {:>9} {:>7}",
        "ms", "p50", "p99", "max", "n"
    );
    let n = latencies.len();
    print!(
        "{}",
        lag_row(
            "approve on another proxy than the request",
            &mut latencies,
            n
        )
    );
    Ok(())
}

async fn outage(fleet: &[&Jitgate], store: &StoreServer, n: usize) -> anyhow::Result<()> {
    let grant = fleet[0].grant("alice", "bench", "write", "30m").await;
    let id = grant["id"].as_str().context("grant id")?.to_owned();
    for jg in fleet {
        wait_until(Duration::from_secs(10), || async {
            jg.grants().await.to_string().contains(&id)
        })
        .await?;
    }
    let sessions = open_sessions(fleet, n).await?;
    store.stop_now();
    let stopped = Instant::now();
    let mut ended = Vec::new();
    for (_, client, closed) in sessions {
        let at = tokio::time::timeout(Duration::from_secs(120), closed)
            .await
            .context("a session outlived the store's outage")??;
        ended.push(at.saturating_duration_since(stopped));
        drop(client);
    }
    store.start_again();
    let back = Instant::now();
    let mut again = Vec::new();
    for jg in fleet {
        let port = jg.pg_port();
        wait_until(Duration::from_secs(120), || async move {
            let config = Login::new("alice", ALICE_SECRET)
                .dbname("bench")
                .sslmode("disable")
                .config(port);
            config.connect(NoTls).await.is_ok()
        })
        .await
        .context("a proxy never took logins again")?;
        again.push(back.elapsed());
    }
    println!(
        "\nstore outage: {n} sessions over 3 proxies, the store stopped with pg_ctl -m immediate"
    );
    println!(
        "   {:<44} {:>9} {:>9} {:>9} {:>7}",
        "ms", "p50", "p99", "max", "n"
    );
    print!(
        "{}",
        lag_row("from the stop until each session was ended", &mut ended, n)
    );
    print!(
        "{}",
        lag_row(
            "from the restart until each proxy took logins",
            &mut again,
            fleet.len()
        )
    );
    Ok(())
}

async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        if Instant::now() > deadline {
            bail!("not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn machine_line() -> String {
    format!(
        "fleet bench, {} — {}",
        humantime::format_rfc3339_seconds(SystemTime::now()),
        support::cores_and_cpu()
    )
}
