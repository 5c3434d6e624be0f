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

/// Read the events in order and check the chain and the head, all in one
/// snapshot (a live fleet writes meanwhile; the check sees the chain as it
/// was when it began).
pub async fn verify(config: &PgStoreConfig) -> Result<ChainReport, SharedStoreError> {
    let mut client = Endpoint::from_config(config)?.connect().await?;
    let failed = |e: tokio_postgres::Error| SharedStoreError::Unreachable(describe(&e));
    let odd = |e: tokio_postgres::Error| SharedStoreError::Refused(describe(&e));
    let snapshot = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(failed)?;
    let head = snapshot
        .query_one("SELECT seq, hash FROM jitgate_head", &[])
        .await
        .map_err(failed)?;
    let (head_seq, head_hash): (i64, String) =
        (head.try_get(0).map_err(odd)?, head.try_get(1).map_err(odd)?);
    let outside: i64 = snapshot
        .query_one(
            "SELECT count(*) FROM jitgate_events WHERE seq < 1 OR seq > $1",
            &[&head_seq],
        )
        .await
        .map_err(failed)?
        .try_get(0)
        .map_err(odd)?;
    let mut prev = FIRST_PREV.to_owned();
    let mut expected: u64 = 1;
    loop {
        let rows = snapshot
            .query(
                "SELECT seq, line, hash FROM jitgate_events WHERE seq >= $1 AND seq <= $2 \
                 ORDER BY seq LIMIT $3",
                &[&(expected as i64), &head_seq, &PAGE],
            )
            .await
            .map_err(failed)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let (seq, line, hash): (i64, &str, &str) = (
                row.try_get(0).map_err(odd)?,
                row.try_get(1).map_err(odd)?,
                row.try_get(2).map_err(odd)?,
            );
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
    let events = expected - 1;
    let first_bad = if head_seq as u64 != events || head_hash != prev {
        Some((
            events + 1,
            format!("the head says the chain ends at event {head_seq} with another hash"),
        ))
    } else if outside > 0 {
        Some((
            events + 1,
            format!("{outside} event(s) numbered outside the chain (below 1 or past its head)"),
        ))
    } else {
        None
    };
    Ok(ChainReport { events, first_bad })
}
