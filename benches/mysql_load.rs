//! A small MySQL/MariaDB load driver for `benches/overhead.sh`: what
//! `pgbench -S` does for PostgreSQL, with mysql_async.
//!
//! ```sh
//! cargo bench --bench mysql_load -- --init --port 3306 --user root --db jitgate_bench
//! cargo bench --bench mysql_load -- --port 3307 --user alice --password S --db bench \
//!     --mode simple --clients 8 --threads 2 --secs 10
//! ```
//!
//! Each of `--clients` connections runs, until `--secs` have passed,
//! single-statement transactions that read one random row by primary key,
//! `SELECT abalance FROM jg_accounts WHERE aid = <n>`, like pgbench's
//! select-only script:
//! - `simple`: as text (COM_QUERY), the id written into the statement;
//! - `extended`: as a prepared statement (COM_STMT_PREPARE once per
//!   connection, then COM_STMT_EXECUTE);
//! - `connect`: `simple` on a new connection each time (login included).
//!
//! It prints pgbench's summary lines (`number of transactions actually
//! processed`, `latency average`, `tps`), so the overhead script reads both
//! drivers the same way. Every statement's answer is checked (one row); an
//! error or a missing row ends the run with a non-zero exit.
//!
//! `--init` instead creates `jg_accounts` (`--rows`, default 100 000, like
//! pgbench scale 1) in `--db` if it is missing or has another size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mysql_async::prelude::*;
use rand::Rng;
use tokio::sync::Barrier;

struct Args {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    db: String,
    ssl: bool,
    mode: String,
    clients: usize,
    threads: usize,
    secs: u64,
    rows: u32,
    init: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 3306,
        user: "root".into(),
        password: None,
        db: "jitgate_bench".into(),
        ssl: false,
        mode: "simple".into(),
        clients: 8,
        threads: 2,
        secs: 10,
        rows: 100_000,
        init: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--host" => a.host = value()?,
            "--port" => a.port = value()?.parse().context("--port")?,
            "--user" => a.user = value()?,
            "--password" => a.password = Some(value()?),
            "--db" => a.db = value()?,
            "--ssl" => a.ssl = true,
            "--mode" => a.mode = value()?,
            "--clients" => a.clients = value()?.parse().context("--clients")?,
            "--threads" => a.threads = value()?.parse().context("--threads")?,
            "--secs" => a.secs = value()?.parse().context("--secs")?,
            "--rows" => a.rows = value()?.parse().context("--rows")?,
            "--init" => a.init = true,
            // `cargo bench` passes this to every bench target.
            "--bench" => {}
            other => bail!("unknown option {other} (see benches/mysql_load.rs)"),
        }
    }
    if !matches!(a.mode.as_str(), "simple" | "extended" | "connect") {
        bail!("--mode is simple, extended or connect, not {}", a.mode);
    }
    if a.clients == 0 || a.threads == 0 || a.secs == 0 || a.rows == 0 {
        bail!("--clients, --threads, --secs and --rows must be positive");
    }
    Ok(a)
}

fn opts(a: &Args) -> mysql_async::Opts {
    let ssl = a.ssl.then(|| {
        // The bench trusts whatever certificate the local proxy shows.
        mysql_async::SslOpts::default()
            .with_danger_accept_invalid_certs(true)
            .with_danger_skip_domain_validation(true)
    });
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(a.host.clone())
        .tcp_port(a.port)
        .user(Some(a.user.clone()))
        .pass(a.password.clone())
        .db_name(Some(a.db.clone()))
        .prefer_socket(false)
        .ssl_opts(ssl)
        .into()
}

async fn init(a: &Args) -> anyhow::Result<()> {
    let mut conn = mysql_async::Conn::new(opts(a))
        .await
        .context("connecting to create jg_accounts")?;
    let have: Option<u64> = conn
        .query_first("SELECT count(*) FROM jg_accounts")
        .await
        .unwrap_or(None);
    if have == Some(u64::from(a.rows)) {
        return Ok(());
    }
    eprintln!("mysql_load: creating jg_accounts with {} rows", a.rows);
    conn.query_drop("DROP TABLE IF EXISTS jg_accounts").await?;
    conn.query_drop(
        "CREATE TABLE jg_accounts (aid INT PRIMARY KEY, bid INT NOT NULL, \
         abalance INT NOT NULL, filler CHAR(84)) ENGINE=InnoDB",
    )
    .await?;
    let mut next = 1u32;
    while next <= a.rows {
        let last = (next + 999).min(a.rows);
        let values: Vec<String> = (next..=last).map(|i| format!("({i},1,0,'')")).collect();
        conn.query_drop(format!(
            "INSERT INTO jg_accounts (aid, bid, abalance, filler) VALUES {}",
            values.join(",")
        ))
        .await?;
        next = last + 1;
    }
    conn.query_drop("ANALYZE TABLE jg_accounts").await?;
    conn.disconnect().await?;
    Ok(())
}

/// Transactions done, the sum of their latencies, and how long the client ran.
#[derive(Default)]
struct Tally {
    txns: u64,
    latency: Duration,
    ran: Duration,
}

async fn one_client(
    opts: mysql_async::Opts,
    mode: String,
    rows: u32,
    secs: u64,
    ready: Arc<Barrier>,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut conn = if mode == "connect" {
        None
    } else {
        Some(mysql_async::Conn::new(opts.clone()).await?)
    };
    let stmt = match (&mut conn, mode.as_str()) {
        (Some(c), "extended") => Some(
            c.prep("SELECT abalance FROM jg_accounts WHERE aid = ?")
                .await?,
        ),
        _ => None,
    };
    // Every client is connected before any starts (pgbench's tps also
    // excludes the initial connection time).
    ready.wait().await;
    let begun = Instant::now();
    let until = begun + Duration::from_secs(secs);
    while Instant::now() < until {
        let aid = rand::thread_rng().gen_range(1..=rows);
        let started = Instant::now();
        let row: Option<i64> = match (&mut conn, &stmt) {
            (Some(c), Some(s)) => c.exec_first(s, (aid,)).await?,
            (Some(c), None) => {
                c.query_first(format!(
                    "SELECT abalance FROM jg_accounts WHERE aid = {aid}"
                ))
                .await?
            }
            (None, _) => {
                let mut c = mysql_async::Conn::new(opts.clone()).await?;
                let r = c
                    .query_first(format!(
                        "SELECT abalance FROM jg_accounts WHERE aid = {aid}"
                    ))
                    .await?;
                c.disconnect().await?;
                r
            }
        };
        if row.is_none() {
            bail!("no row for aid {aid}: is jg_accounts filled (--init, --rows)?");
        }
        tally.latency += started.elapsed();
        tally.txns += 1;
    }
    tally.ran = begun.elapsed();
    if let Some(c) = conn {
        c.disconnect().await?;
    }
    Ok(tally)
}

async fn load(a: &Args) -> anyhow::Result<()> {
    let opts = opts(a);
    let ready = Arc::new(Barrier::new(a.clients));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.clients {
        tasks.spawn(one_client(
            opts.clone(),
            a.mode.clone(),
            a.rows,
            a.secs,
            ready.clone(),
        ));
    }
    let mut total = Tally::default();
    while let Some(r) = tasks.join_next().await {
        let t = r.context("a client task panicked")??;
        total.txns += t.txns;
        total.latency += t.latency;
        total.ran = total.ran.max(t.ran);
    }
    let elapsed = total.ran.as_secs_f64();
    if total.txns == 0 {
        bail!("no transaction completed");
    }
    println!("mode: {}", a.mode);
    println!("number of clients: {}", a.clients);
    println!("number of threads: {}", a.threads);
    println!("number of transactions actually processed: {}", total.txns);
    println!("number of failed transactions: 0 (0.000%)");
    println!(
        "latency average = {:.3} ms",
        total.latency.as_secs_f64() * 1000.0 / total.txns as f64
    );
    println!(
        "tps = {:.6} (without initial connection time)",
        total.txns as f64 / elapsed
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads)
        .enable_all()
        .build()?;
    rt.block_on(async {
        if a.init {
            init(&a).await
        } else {
            load(&a).await
        }
    })
}
