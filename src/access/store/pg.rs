//! The PostgreSQL store: one database that every proxy of a fleet shares.
//!
//! The connections live on a thread of their own with its own runtime, so
//! a store that is slow or away never holds up the proxy's sessions: the
//! model's calls (under its book lock, on blocking threads) send a job and
//! wait for its answer; nothing on a session's path ever does.
//!
//! * **Writes** lock the chain's head row (`SELECT … FOR UPDATE`), check
//!   that it is the last change this proxy applied (else `Behind`: the
//!   model catches up and decides again), insert the event chained to the
//!   head by its hash, move the head, `pg_notify` the new sequence number,
//!   and hold the transaction open until the model confirms (its audit
//!   records are written) or undoes it. The store's clock stamps the event.
//! * **Reads** are by sequence number: what another proxy wrote is read
//!   from the table, never from a notification (those are only a nudge).
//! * **Heartbeats** and the fleet's session list go over a connection of
//!   their own, so they never hold up a catch-up.
//! * **The listener** is a third connection that `LISTEN`s and wakes the
//!   follower on each notification and after each reconnect.
//! * **Failures**: every job has a deadline; a connection that fails or
//!   times out is dropped (the server rolls back what it held open) and the
//!   next job reconnects, no sooner than a backoff that doubles up to 1s (the
//!   heartbeat tries every second anyway).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Socket};

use super::schema::{self, describe};
use super::{Event, EventLine, SharedStoreError, Store, event_hash};
use crate::access::StoreError;
use crate::access::journal::Entry;
use crate::config::PgStoreConfig;

/// The channel the store notifies new events on.
const CHANNEL: &str = "jitgate_events";
/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The least time the store lets a change's transaction sit idle (while its
/// audit records are written) before it ends it.
const IDLE_IN_TRANSACTION_FLOOR: Duration = Duration::from_secs(30);

/// A live session as the store lists it (the fleet's `GET /v1/sessions`).
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct SessionRow {
    pub id: String,
    pub proxy: String,
    pub identity: String,
    pub target: String,
    pub level: String,
    pub grant: String,
    pub client_addr: String,
    #[serde(serialize_with = "crate::access::grants::rfc3339")]
    pub started_at: SystemTime,
    pub statements: u64,
}

/// What the heartbeat learns.
pub(crate) struct Beat {
    /// The store's clock (`clock_timestamp()`), and this machine's just
    /// before that query was sent and just after its answer came.
    pub clock: (SystemTime, SystemTime, SystemTime),
    /// The last event's sequence number.
    pub head: u64,
}

/// How the link to the store is doing, for health checks and metrics.
pub(crate) struct Health {
    started: Instant,
    /// Milliseconds after `started` of the last answer from the store.
    last_contact_ms: AtomicU64,
    up: AtomicBool,
}

impl Health {
    fn new() -> Health {
        Health {
            started: Instant::now(),
            last_contact_ms: AtomicU64::new(0),
            up: AtomicBool::new(false),
        }
    }

    fn contact(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_contact_ms.store(ms, Ordering::Relaxed);
        self.up.store(true, Ordering::Relaxed);
    }

    fn lost(&self) {
        self.up.store(false, Ordering::Relaxed);
    }

    /// Whether the last job reached the store.
    pub(crate) fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Time since the store last answered.
    pub(crate) fn since_contact(&self) -> Duration {
        let last = Duration::from_millis(self.last_contact_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

enum Op {
    Since(u64),
    Append {
        entry: Box<Entry>,
        applied: u64,
    },
    Confirm,
    Undo,
    /// End a transaction a change left open (after `Behind`, it holds the
    /// head's lock so that the change decided again cannot be beaten).
    Release,
    Heartbeat {
        applied: u64,
        sessions: Vec<SessionRow>,
        stale_after: Duration,
    },
    Sessions,
}

enum Reply {
    Events(Vec<Event>),
    Seq(u64),
    Done,
    Beat(Beat),
    Sessions(Vec<SessionRow>),
}

struct Job {
    op: Op,
    reply: std::sync::mpsc::SyncSender<Result<Reply, SharedStoreError>>,
}

/// The proxy's handle on the store's thread; cheap to share.
pub(crate) struct Link {
    /// Changes and catch-ups, on one connection.
    jobs: mpsc::UnboundedSender<Job>,
    /// Heartbeats and the fleet's session list, on another, so that they
    /// never hold up a catch-up (a revoke reaching this proxy).
    beats: mpsc::UnboundedSender<Job>,
    pub(crate) health: Arc<Health>,
    pub(crate) proxy: String,
}

impl Link {
    fn call(&self, op: Op) -> Result<Reply, SharedStoreError> {
        let queue = match op {
            Op::Heartbeat { .. } | Op::Sessions => &self.beats,
            _ => &self.jobs,
        };
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        // Not "unreachable": the store may be fine, this proxy is not; it
        // says so at error level, and fails closed.
        let stopped = || SharedStoreError::Refused("this proxy's store thread has stopped".into());
        queue.send(Job { op, reply }).map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }

    /// Tell the store this proxy is alive, which sessions it holds, and how
    /// far it has applied; learn the store's clock and head. Rows of proxies
    /// silent for `stale_after` are removed on the way.
    pub(crate) fn heartbeat(
        &self,
        applied: u64,
        sessions: Vec<SessionRow>,
        stale_after: Duration,
    ) -> Result<Beat, SharedStoreError> {
        match self.call(Op::Heartbeat {
            applied,
            sessions,
            stale_after,
        })? {
            Reply::Beat(beat) => Ok(beat),
            _ => unreachable_reply(),
        }
    }

    /// Every live session of the fleet, as last heard.
    pub(crate) fn sessions(&self) -> Result<Vec<SessionRow>, SharedStoreError> {
        match self.call(Op::Sessions)? {
            Reply::Sessions(rows) => Ok(rows),
            _ => unreachable_reply(),
        }
    }
}

/// A job's answer of the wrong kind: the worker answers each op with its
/// own kind, so this is a bug, reported as a refusal rather than a panic.
fn unreachable_reply<T>() -> Result<T, SharedStoreError> {
    Err(SharedStoreError::Refused(
        "unexpected answer from the store's thread".into(),
    ))
}

/// The model's store: a [`Link`] used under the book lock.
pub(crate) struct PgStore {
    link: Arc<Link>,
}

impl PgStore {
    /// Connect, create or migrate the schema, and start the store's thread
    /// and its listener. `wake` is called on every notification and after
    /// every reconnect of the listener.
    pub(crate) fn open(
        config: &PgStoreConfig,
        proxy: &str,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> Result<(PgStore, Arc<Link>), StoreError> {
        let mut endpoint = Endpoint::from_config(config)?;
        // Which proxy a connection is, in the store's pg_stat_activity.
        endpoint.pg.application_name(format!("jitgate {proxy}"));
        let health = Arc::new(Health::new());
        let (jobs, queue) = mpsc::unbounded_channel();
        let (beats, beat_queue) = mpsc::unbounded_channel();
        let (ready, started) = std::sync::mpsc::sync_channel(1);
        let worker = Worker {
            op_timeout: endpoint.op_timeout,
            endpoint,
            client: None,
            in_txn: false,
            backoff: FIRST_BACKOFF,
            next_try: Instant::now(),
            health: health.clone(),
            proxy: proxy.to_owned(),
        };
        std::thread::Builder::new()
            .name("jitgate-store".into())
            .spawn(move || worker.run([queue, beat_queue], ready, wake))
            .map_err(|e| SharedStoreError::Unreachable(format!("cannot start its thread: {e}")))?;
        started.recv().map_err(|_| {
            SharedStoreError::Unreachable("the store's thread has stopped".into())
        })??;
        let link = Arc::new(Link {
            jobs,
            beats,
            health,
            proxy: proxy.to_owned(),
        });
        Ok((PgStore { link: link.clone() }, link))
    }
}

impl Store for PgStore {
    fn since(&mut self, seq: u64) -> Result<Vec<Event>, StoreError> {
        match self.link.call(Op::Since(seq))? {
            Reply::Events(events) => Ok(events),
            _ => Ok(unreachable_reply()?),
        }
    }

    fn append(&mut self, entry: &Entry, applied: u64) -> Result<u64, StoreError> {
        let op = Op::Append {
            entry: Box::new(entry.clone()),
            applied,
        };
        match self.link.call(op)? {
            Reply::Seq(seq) => Ok(seq),
            _ => Ok(unreachable_reply()?),
        }
    }

    fn confirm(&mut self) -> Result<(), StoreError> {
        self.link.call(Op::Confirm)?;
        Ok(())
    }

    fn undo(&mut self) {
        let _ = self.link.call(Op::Undo);
    }

    fn release(&mut self) {
        let _ = self.link.call(Op::Release);
    }

    fn shared(&self) -> bool {
        true
    }
}

/// TLS to the store, the certificate checked against `ca` and the host name.
fn tls_connector(
    ca: &std::path::Path,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, SharedStoreError> {
    let refused =
        |why: String| SharedStoreError::Refused(format!("TLS CA file {}: {why}", ca.display()));
    let pem = std::fs::read(ca).map_err(|e| refused(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| refused(e.to_string()))?;
        roots.add(cert).map_err(|e| refused(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(refused("holds no certificate".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| refused(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Where the store is and how to reach it.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pg: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// How long one job (or one connection attempt) may take.
    op_timeout: Duration,
}

impl Endpoint {
    /// Read the URL from where the config says (it never enters the
    /// config model, a log line or an error) and set up TLS.
    pub(crate) fn from_config(config: &PgStoreConfig) -> Result<Endpoint, SharedStoreError> {
        let url = config
            .url
            .read()
            .map_err(|e| SharedStoreError::Refused(format!("its connection URL: {e}")))?
            .ok_or_else(|| SharedStoreError::Refused("no connection URL".into()))?;
        let mut pg: tokio_postgres::Config = url.parse().map_err(|_| {
            SharedStoreError::Refused(
                "its connection URL does not parse (postgres://user:password@host:port/database \
                 or key=value pairs)"
                    .into(),
            )
        })?;
        let op_timeout =
            (config.fail_closed_after / 3).clamp(Duration::from_secs(1), Duration::from_secs(5));
        pg.connect_timeout(op_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .application_name("jitgate");
        let tls = match &config.tls_ca_file {
            None => None,
            Some(ca) => {
                // verify-full: TLS or nothing, whatever the URL says.
                pg.ssl_mode(tokio_postgres::config::SslMode::Require);
                Some(tls_connector(ca)?)
            }
        };
        Ok(Endpoint {
            pg,
            tls,
            op_timeout,
        })
    }

    /// A new connection, driven by a task on the current runtime, with the
    /// server's limits on how long this proxy may hold the chain's head.
    ///
    /// The head is locked from a change's Append to its Confirm: a proxy
    /// that stalls or vanishes meanwhile must not hold every other proxy's
    /// writes for long, so the server gives up on it. Waiting for the lock
    /// gives up well before the job's own deadline (so contention reads as
    /// "busy", not as a lost store); an idle transaction is given ample
    /// time (audit records are written while it is open). Set with `SET`
    /// after connecting, not in the startup `options`, which would replace
    /// the URL's own and which poolers refuse.
    pub(crate) async fn connect(&self) -> Result<Client, SharedStoreError> {
        let client = self.open().await?;
        let limits = format!(
            "SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {}",
            (self.op_timeout / 2).as_millis(),
            (self.op_timeout * 3)
                .max(IDLE_IN_TRANSACTION_FLOOR)
                .as_millis()
        );
        client
            .batch_execute(&limits)
            .await
            .map_err(|e| SharedStoreError::Unreachable(describe(&e)))?;
        Ok(client)
    }

    async fn open(&self) -> Result<Client, SharedStoreError> {
        let unreachable = |e: tokio_postgres::Error| SharedStoreError::Unreachable(describe(&e));
        let client = match &self.tls {
            None => {
                let (client, connection) = self
                    .pg
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(unreachable)?;
                tokio::spawn(connection);
                client
            }
            Some(tls) => {
                let (client, connection) =
                    self.pg.connect(tls.clone()).await.map_err(unreachable)?;
                tokio::spawn(connection);
                client
            }
        };
        Ok(client)
    }
}

/// The store's thread: one connection for jobs, one for notifications.
struct Worker {
    endpoint: Endpoint,
    client: Option<Client>,
    /// A transaction is open on `client` (a change between `Append` and
    /// `Confirm`/`Undo`, or one that was `Behind` and is decided again).
    in_txn: bool,
    backoff: Duration,
    next_try: Instant,
    op_timeout: Duration,
    health: Arc<Health>,
    proxy: String,
}

impl Worker {
    fn run(
        mut self,
        [mut queue, beat_queue]: [mpsc::UnboundedReceiver<Job>; 2],
        ready: std::sync::mpsc::SyncSender<Result<(), SharedStoreError>>,
        wake: impl Fn() + Send + Sync + 'static,
    ) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready.send(Err(SharedStoreError::Unreachable(e.to_string())));
                return;
            }
        };
        runtime.block_on(async move {
            // At start the store must be there and its schema usable.
            let first = match self.connect().await {
                Ok(mut client) => schema::migrate(&mut client).await.map(|()| client),
                Err(e) => Err(e),
            };
            match first {
                Ok(client) => {
                    self.client = Some(client);
                    self.health.contact();
                    let _ = ready.send(Ok(()));
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            }
            tokio::spawn(listen(self.endpoint.clone(), Arc::new(wake)));
            tokio::spawn(self.sibling().serve(beat_queue));
            while let Some(job) = queue.recv().await {
                let answer = self.handle(job.op).await;
                let _ = job.reply.send(answer);
            }
        });
    }

    async fn connect(&mut self) -> Result<Client, SharedStoreError> {
        self.endpoint.connect().await
    }

    /// A worker for a second connection to the same store.
    fn sibling(&self) -> Worker {
        Worker {
            endpoint: self.endpoint.clone(),
            client: None,
            in_txn: false,
            backoff: FIRST_BACKOFF,
            next_try: Instant::now(),
            op_timeout: self.op_timeout,
            health: self.health.clone(),
            proxy: self.proxy.clone(),
        }
    }

    async fn serve(mut self, mut queue: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = queue.recv().await {
            let answer = self.handle(job.op).await;
            let _ = job.reply.send(answer);
        }
    }

    /// The connection for the next job: the open one, or a new one unless
    /// the backoff after the last failure has not passed yet.
    async fn client(&mut self) -> Result<&mut Client, SharedStoreError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
            // The server rolled back whatever was open on it: a `Confirm`
            // must say so, never `COMMIT` on a new connection (which would
            // "succeed" with nothing to commit).
            self.in_txn = false;
        }
        if self.client.is_none() {
            if Instant::now() < self.next_try {
                return Err(SharedStoreError::Unreachable(
                    "not connected; the next attempt is due shortly".into(),
                ));
            }
            match tokio::time::timeout(self.op_timeout, self.connect()).await {
                Ok(Ok(client)) => {
                    self.backoff = FIRST_BACKOFF;
                    tracing::info!("connected to the store");
                    self.client = Some(client);
                }
                Ok(Err(e)) => return Err(self.failed(e)),
                Err(_) => {
                    return Err(
                        self.failed(SharedStoreError::Unreachable("connecting timed out".into()))
                    );
                }
            }
        }
        Ok(self.client.as_mut().expect("set above"))
    }

    /// Drop the connection after a failure and wait before the next attempt.
    fn failed(&mut self, e: SharedStoreError) -> SharedStoreError {
        if self.health.up() {
            tracing::warn!(error = %e, "lost the store");
        }
        self.health.lost();
        self.client = None;
        self.in_txn = false;
        self.next_try = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        e
    }

    async fn handle(&mut self, op: Op) -> Result<Reply, SharedStoreError> {
        let confirming = matches!(op, Op::Confirm);
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
            self.in_txn = false;
        }
        match op {
            // Nothing to take back: none was open, or it went with the connection.
            Op::Undo | Op::Release if !self.in_txn => return Ok(Reply::Done),
            Op::Confirm if !self.in_txn => {
                return Err(SharedStoreError::Unreachable(
                    "its connection broke before the change was committed, so it was rolled back"
                        .into(),
                ));
            }
            _ => {}
        }
        let timeout = self.op_timeout;
        let proxy = self.proxy.clone();
        let mut in_txn = self.in_txn;
        let client = self.client().await?;
        let answer = tokio::time::timeout(timeout, run_op(client, op, &proxy, &mut in_txn)).await;
        self.in_txn = in_txn;
        let lost = match answer {
            Ok(Ok(reply)) => {
                self.health.contact();
                return Ok(reply);
            }
            // A COMMIT the server answered with an error may still have
            // committed (a synchronous standby's wait cut short, say).
            Ok(Err(OpError::Refused(_))) if confirming => {
                self.health.contact();
                self.in_txn = false;
                return Err(SharedStoreError::Unconfirmed);
            }
            Ok(Err(OpError::Refused(why))) => {
                self.health.contact();
                // Leave no transaction open behind a refused write; if the
                // ROLLBACK itself hangs, drop the connection (the server
                // rolls back).
                if self.in_txn
                    && let Some(client) = self.client.as_mut()
                {
                    let rolled_back =
                        tokio::time::timeout(timeout, client.batch_execute("ROLLBACK")).await;
                    if !matches!(rolled_back, Ok(Ok(()))) {
                        self.in_txn = false;
                        return Err(self.failed(SharedStoreError::Refused(why)));
                    }
                }
                self.in_txn = false;
                return Err(SharedStoreError::Refused(why));
            }
            Ok(Err(OpError::Behind)) => {
                self.health.contact();
                return Err(SharedStoreError::Behind);
            }
            Ok(Err(OpError::Lost(why))) => why,
            Err(_) => format!("no answer within {}", humantime::format_duration(timeout)),
        };
        // The connection is dropped, so the server rolls back whatever it
        // held open; only a commit's fate is unknown.
        Err(self.failed(if confirming {
            SharedStoreError::Unconfirmed
        } else {
            SharedStoreError::Unreachable(lost)
        }))
    }
}

/// Why a store whose last change is before this proxy's is refused.
pub(crate) fn went_back(head: i64, applied: u64) -> String {
    format!(
        "its last change is {head}, but this proxy has applied {applied}: the store was restored \
         from a backup or replaced. Stop every proxy and start them again on the store as it is"
    )
}

/// How a job failed: the server said no (the connection is fine), another
/// proxy wrote first, or the connection broke.
enum OpError {
    Refused(String),
    Behind,
    Lost(String),
}

/// A value in the store this jitgate cannot read (a NULL, an infinite
/// time): the store's content is at fault, not the connection.
fn odd(e: tokio_postgres::Error) -> OpError {
    OpError::Refused(format!("it holds a value this jitgate cannot read ({e})"))
}

impl From<tokio_postgres::Error> for OpError {
    fn from(e: tokio_postgres::Error) -> OpError {
        let Some(db) = e.as_db_error() else {
            return OpError::Lost(describe(&e));
        };
        match db.code().code() {
            // The server ends this connection (shutdown, failover, our own
            // idle limit): as good as a broken connection.
            code if code.starts_with("08") || code.starts_with("57P0") || code == "25P03" => {
                OpError::Lost(describe(&e))
            }
            // Another proxy held the chain's head past lock_timeout.
            "55P03" | "40P01" | "40001" => OpError::Refused(format!(
                "the store is busy: another proxy held its head too long ({})",
                describe(&e)
            )),
            _ => OpError::Refused(describe(&e)),
        }
    }
}

/// Run one job; `in_txn` says whether a transaction is open on `client`,
/// before and after.
async fn run_op(
    client: &mut Client,
    op: Op,
    proxy: &str,
    in_txn: &mut bool,
) -> Result<Reply, OpError> {
    match op {
        Op::Since(seq) => since(client, seq).await.map(Reply::Events),
        Op::Append { entry, applied } => {
            if !*in_txn {
                client.batch_execute("BEGIN").await?;
                *in_txn = true;
            }
            append(client, &entry, applied, proxy).await.map(Reply::Seq)
        }
        Op::Confirm | Op::Undo | Op::Release => {
            let end = if matches!(op, Op::Confirm) {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            *in_txn = false;
            client.batch_execute(end).await?;
            Ok(Reply::Done)
        }
        Op::Heartbeat {
            applied,
            sessions,
            stale_after,
        } => {
            // On the heartbeat connection, which never holds a change's
            // transaction (see `Link::call`).
            let tx = client.transaction().await?;
            let beat = heartbeat(&tx, proxy, applied, &sessions, stale_after).await?;
            tx.commit().await?;
            Ok(Reply::Beat(beat))
        }
        Op::Sessions => fleet_sessions(client).await.map(Reply::Sessions),
    }
}

fn seq_param(seq: u64) -> Result<i64, OpError> {
    i64::try_from(seq)
        .map_err(|_| OpError::Refused(format!("sequence number {seq} is out of range")))
}

async fn since(client: &Client, seq: u64) -> Result<Vec<Event>, OpError> {
    let rows = client
        .query(
            "SELECT seq, line FROM jitgate_events WHERE seq > $1 ORDER BY seq",
            &[&seq_param(seq)?],
        )
        .await?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let seq: i64 = row.try_get(0).map_err(odd)?;
        let line: &str = row.try_get(1).map_err(odd)?;
        let parsed: EventLine = serde_json::from_str(line).map_err(|e| {
            OpError::Refused(format!(
                "event {seq} is not one jitgate wrote or knows ({e}); is a newer jitgate writing to this store?"
            ))
        })?;
        events.push(Event {
            seq: seq as u64,
            entry: parsed.entry,
        });
    }
    Ok(events)
}

/// Begin a transaction and write `entry` after the head, if the head is
/// `applied`. The transaction stays open for `Confirm` or `Undo`.
async fn append(
    client: &mut Client,
    entry: &Entry,
    applied: u64,
    proxy: &str,
) -> Result<u64, OpError> {
    let head = client
        .query_one("SELECT seq, hash, now() FROM jitgate_head FOR UPDATE", &[])
        .await?;
    let (head_seq, prev, at): (i64, String, SystemTime) = (
        head.try_get(0).map_err(odd)?,
        head.try_get(1).map_err(odd)?,
        head.try_get(2).map_err(odd)?,
    );
    if (head_seq as u64) < applied {
        return Err(OpError::Refused(went_back(head_seq, applied)));
    }
    if head_seq as u64 != applied {
        // The transaction stays open and keeps the head locked: the model
        // catches up (on this connection), decides again and appends, and
        // no other proxy can get in between this time.
        return Err(OpError::Behind);
    }
    let seq = applied + 1;
    let line = EventLine {
        prev,
        seq,
        at,
        proxy: proxy.to_owned(),
        entry: entry.clone(),
    };
    let text = serde_json::to_string(&line).map_err(|e| OpError::Refused(e.to_string()))?;
    let hash = event_hash(&text);
    let seq_i = seq_param(seq)?;
    client
        .execute(
            "INSERT INTO jitgate_events (seq, at, proxy, line, hash) VALUES ($1, $2, $3, $4, $5)",
            &[&seq_i, &at, &proxy, &text, &hash],
        )
        .await?;
    client
        .execute(
            "UPDATE jitgate_head SET seq = $1, hash = $2",
            &[&seq_i, &hash],
        )
        .await?;
    client
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &seq.to_string()])
        .await?;
    Ok(seq)
}

async fn heartbeat(
    tx: &impl tokio_postgres::GenericClient,
    proxy: &str,
    applied: u64,
    sessions: &[SessionRow],
    stale_after: Duration,
) -> Result<Beat, OpError> {
    let stale_secs = stale_after.as_secs_f64();
    // The clock first, on its own, so its round trip is one query's.
    let sent = SystemTime::now();
    let store_now: SystemTime = tx
        .query_one("SELECT clock_timestamp()", &[])
        .await?
        .try_get(0)
        .map_err(odd)?;
    let clock = (store_now, sent, SystemTime::now());
    let row = tx
        .query_one(
            "INSERT INTO jitgate_proxies (name, heartbeat_at, applied_seq) VALUES ($1, now(), $2)
             ON CONFLICT (name) DO UPDATE SET heartbeat_at = now(), applied_seq = $2
             RETURNING now(), (SELECT seq FROM jitgate_head)",
            &[&proxy, &seq_param(applied)?],
        )
        .await?;
    let head: Option<i64> = row.try_get(1).map_err(odd)?;
    let head = head.ok_or_else(|| OpError::Refused("the store has no head row".into()))?;
    let ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    tx.execute(
        "DELETE FROM jitgate_sessions WHERE proxy = $1 AND NOT (id = ANY($2))",
        &[&proxy, &ids],
    )
    .await?;
    // All of this proxy's sessions in one statement, whatever their number:
    // the heartbeat shares the store's connection with the catch-up.
    let column = |f: fn(&SessionRow) -> &str| sessions.iter().map(f).collect::<Vec<&str>>();
    let started: Vec<SystemTime> = sessions.iter().map(|s| s.started_at).collect();
    let statements: Vec<i64> = sessions
        .iter()
        .map(|s| s.statements.min(i64::MAX as u64) as i64)
        .collect();
    if !sessions.is_empty() {
        tx.execute(
            "INSERT INTO jitgate_sessions
                (id, proxy, identity, target, level, grant_id, client_addr, started_at, statements)
             SELECT id, $1, identity, target, level, grant_id, client_addr, started_at, statements
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::timestamptz[], $9::bigint[])
                  AS s(id, identity, target, level, grant_id, client_addr, started_at, statements)
             ON CONFLICT (id) DO UPDATE SET statements = EXCLUDED.statements",
            &[
                &proxy,
                &ids,
                &column(|s| &s.identity),
                &column(|s| &s.target),
                &column(|s| &s.level),
                &column(|s| &s.grant),
                &column(|s| &s.client_addr),
                &started,
                &statements,
            ],
        )
        .await?;
    }
    // A proxy silent for long has died or lost the store: its sessions
    // ended (it fails closed well before this), so its rows go.
    tx.execute(
        "WITH gone AS (
            DELETE FROM jitgate_proxies
            WHERE heartbeat_at < now() - make_interval(secs => $1) RETURNING name)
         DELETE FROM jitgate_sessions WHERE proxy IN (SELECT name FROM gone)",
        &[&stale_secs],
    )
    .await?;
    Ok(Beat {
        clock,
        head: head as u64,
    })
}

async fn fleet_sessions(client: &Client) -> Result<Vec<SessionRow>, OpError> {
    let rows = client
        .query(
            "SELECT id, proxy, identity, target, level, grant_id, client_addr, started_at, statements
             FROM jitgate_sessions ORDER BY started_at, id",
            &[],
        )
        .await?;
    let row = |r: &tokio_postgres::Row| -> Result<SessionRow, tokio_postgres::Error> {
        Ok(SessionRow {
            id: r.try_get(0)?,
            proxy: r.try_get(1)?,
            identity: r.try_get(2)?,
            target: r.try_get(3)?,
            level: r.try_get(4)?,
            grant: r.try_get(5)?,
            client_addr: r.try_get(6)?,
            started_at: r.try_get(7)?,
            statements: r.try_get::<_, i64>(8)?.max(0) as u64,
        })
    };
    rows.iter().map(row).collect::<Result<_, _>>().map_err(odd)
}

/// Keep a connection that `LISTEN`s for new events, and wake the follower
/// on each notification and after each (re)connect, when notifications may
/// have been missed. Reconnects with the same backoff as the jobs.
async fn listen(endpoint: Endpoint, wake: Arc<dyn Fn() + Send + Sync>) {
    let Endpoint { pg, tls, .. } = endpoint;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let listened = match &tls {
            None => match pg.connect(tokio_postgres::NoTls).await {
                Ok((client, connection)) => listen_on(client, connection, &*wake).await,
                Err(e) => Err(e),
            },
            Some(tls) => match pg.connect(tls.clone()).await {
                Ok((client, connection)) => listen_on(client, connection, &*wake).await,
                Err(e) => Err(e),
            },
        };
        match listened {
            // It listened, then the connection ended: try again at once.
            Ok(()) => backoff = FIRST_BACKOFF,
            Err(e) => {
                tracing::debug!(error = %describe(&e), "cannot listen for the store's events");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn listen_on<T>(
    client: Client,
    mut connection: tokio_postgres::Connection<Socket, T>,
    wake: &(dyn Fn() + Send + Sync),
) -> Result<(), tokio_postgres::Error>
where
    T: tokio_postgres::tls::TlsStream + Unpin + Send + 'static,
{
    let (nudge, mut nudges) = mpsc::unbounded_channel();
    let driver = async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    let _ = nudge.send(());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    };
    let driver = tokio::spawn(driver);
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    // Whatever was written while nobody listened is read now.
    wake();
    while nudges.recv().await.is_some() {
        wake();
    }
    driver.abort();
    Ok(())
}
