//! `jitgate audit verify --store`: check the fleet's events chain.
//!
//! Each event's text holds the hash of the one before (`prev`); its own
//! hash is kept beside it, and the head row holds the last one's. An event
//! changed, removed, inserted or reordered in the database breaks the chain
//! at or after it, and the check names the first event that does not fit.

use super::pg::Endpoint;
use super::schema::describe;
use super::{EventLine, FIRST_PREV, SharedStoreError, event_hash};
use crate::config::PgStoreConfig;

/// Events read per query, so a long history is never held whole.
const PAGE: i64 = 10_000;

/// What the check found.
pub struct ChainReport {
    /// Events checked.
    pub events: u64,
    /// The first event that breaks the chain, and why.
    pub first_bad: Option<(u64, String)>,
}

/// Read the events in order and check the chain and the head.
pub async fn verify(config: &PgStoreConfig) -> Result<ChainReport, SharedStoreError> {
    let client = Endpoint::from_config(config)?.connect().await?;
    let failed = |e: tokio_postgres::Error| SharedStoreError::Unreachable(describe(&e));
    let mut prev = FIRST_PREV.to_owned();
    let mut expected: u64 = 1;
    loop {
        let rows = client
            .query(
                "SELECT seq, line, hash FROM jitgate_events WHERE seq >= $1 ORDER BY seq LIMIT $2",
                &[&(expected as i64), &PAGE],
            )
            .await
            .map_err(failed)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let (seq, line, hash): (i64, &str, &str) = (row.get(0), row.get(1), row.get(2));
            let seq = seq as u64;
            let bad = |why: String| {
                Ok(ChainReport {
                    events: expected - 1,
                    first_bad: Some((expected, why)),
                })
            };
            if seq != expected {
                return bad(format!("missing: the next event found is {seq}"));
            }
            let parsed: EventLine = match serde_json::from_str(line) {
                Ok(p) => p,
                Err(e) => return bad(format!("not an event ({e})")),
            };
            if parsed.seq != seq {
                return bad(format!("its text says it is event {}", parsed.seq));
            }
            if parsed.prev != prev {
                return bad("its prev is not the hash of the event before it".into());
            }
            let own = event_hash(line);
            if own != hash {
                return bad("its text does not match its hash".into());
            }
            prev = own;
            expected += 1;
        }
    }
    let head = client
        .query_one("SELECT seq, hash FROM jitgate_head", &[])
        .await
        .map_err(failed)?;
    let (head_seq, head_hash): (i64, String) = (head.get(0), head.get(1));
    let events = expected - 1;
    let first_bad = (head_seq as u64 != events || head_hash != prev).then(|| {
        (
            events,
            format!("the head says the chain ends at event {head_seq} with another hash"),
        )
    });
    Ok(ChainReport { events, first_bad })
}
