//! The PostgreSQL store's tables, created and migrated at start.
//!
//! Migrations run in one transaction under an advisory lock, so proxies that
//! start at once take turns: the first creates the tables, the others find
//! them made. A store whose schema is newer than this jitgate knows is
//! refused, so an old proxy never writes to tables it does not understand.

use tokio_postgres::{Client, GenericClient};

use super::{FIRST_PREV, SharedStoreError};

/// The advisory lock migrations take ("jitgate" in ASCII).
const MIGRATION_LOCK: i64 = 0x006a_6974_6761_7465;

/// Each migration, in order; the schema's version is how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: the events chain, its head, the proxies and their sessions.
    "CREATE TABLE jitgate_events (
        seq bigint PRIMARY KEY,
        at timestamptz NOT NULL,
        proxy text NOT NULL,
        line text NOT NULL,
        hash text NOT NULL
    );
    CREATE TABLE jitgate_head (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        seq bigint NOT NULL,
        hash text NOT NULL
    );
    CREATE TABLE jitgate_proxies (
        name text PRIMARY KEY,
        heartbeat_at timestamptz NOT NULL,
        applied_seq bigint NOT NULL
    );
    CREATE TABLE jitgate_sessions (
        id text PRIMARY KEY,
        proxy text NOT NULL,
        identity text NOT NULL,
        target text NOT NULL,
        level text NOT NULL,
        grant_id text NOT NULL,
        client_addr text NOT NULL,
        started_at timestamptz NOT NULL,
        statements bigint NOT NULL DEFAULT 0
    );
    CREATE INDEX jitgate_sessions_proxy ON jitgate_sessions (proxy);",
];

/// The schema version this jitgate writes.
pub(crate) const VERSION: i32 = MIGRATIONS.len() as i32;

/// Create or migrate the schema; refuse a newer one.
pub(super) async fn migrate(client: &mut Client) -> Result<(), SharedStoreError> {
    let refused = |e: tokio_postgres::Error| SharedStoreError::Refused(describe(&e));
    let tx = client.transaction().await.map_err(refused)?;
    // "relation already exists, skipping" is not news.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(refused)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(refused)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS jitgate_schema (version integer NOT NULL)")
        .await
        .map_err(refused)?;
    let found = usable_version(&tx).await?;
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(migration).await.map_err(refused)?;
        if i == 0 {
            tx.execute(
                "INSERT INTO jitgate_head (seq, hash) VALUES (0, $1)",
                &[&FIRST_PREV],
            )
            .await
            .map_err(refused)?;
        }
    }
    if found == 0 {
        tx.execute(
            "INSERT INTO jitgate_schema (version) VALUES ($1)",
            &[&VERSION],
        )
        .await
        .map_err(refused)?;
    } else if found < VERSION {
        tx.execute("UPDATE jitgate_schema SET version = $1", &[&VERSION])
            .await
            .map_err(refused)?;
    }
    tx.commit().await.map_err(refused)?;
    if found < VERSION {
        tracing::info!(from = found, to = VERSION, "the store's schema is migrated");
    }
    Ok(())
}

/// The schema's version (0 before the first migration), refused when it is
/// newer than this jitgate knows.
async fn usable_version(client: &impl GenericClient) -> Result<i32, SharedStoreError> {
    let found: i32 = first_value(client, "SELECT version FROM jitgate_schema")
        .await?
        .unwrap_or(0);
    if found > VERSION {
        return Err(SharedStoreError::Refused(format!(
            "its schema is version {found}, newer than this jitgate knows (version {VERSION}); \
             upgrade this proxy to the version the rest of the fleet runs"
        )));
    }
    Ok(found)
}

/// The first column of the first row `sql` returns, if it returns one.
async fn first_value<T: for<'a> tokio_postgres::types::FromSql<'a>>(
    client: &impl GenericClient,
    sql: &str,
) -> Result<Option<T>, SharedStoreError> {
    let refused = |e: tokio_postgres::Error| SharedStoreError::Refused(describe(&e));
    let row = client.query_opt(sql, &[]).await.map_err(refused)?;
    row.map(|row| row.try_get(0)).transpose().map_err(refused)
}

/// A PostgreSQL error as one line: the server's message when it sent one.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.code().code(), db.message());
    }
    // "error performing TLS handshake" says little without its cause
    // ("invalid peer certificate: UnknownIssuer"). The URL is in none of them.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `check-config`'s line about the store: reachable, and at which schema
/// version and event (without changing anything: no migration here).
pub(crate) async fn describe_store(
    config: &crate::config::PgStoreConfig,
) -> Result<String, SharedStoreError> {
    let client = super::pg::Endpoint::from_config(config)?.connect().await?;
    let exists = first_value(&client, "SELECT to_regclass('jitgate_schema') IS NOT NULL")
        .await?
        .unwrap_or(false);
    if !exists {
        return Ok("reachable, no tables yet (the first proxy to start creates them)".into());
    }
    let version = usable_version(&client).await?;
    let head: i64 = first_value(&client, "SELECT seq FROM jitgate_head")
        .await?
        .unwrap_or(0);
    Ok(format!(
        "reachable, schema version {version}, {head} events"
    ))
}
