//! Where the access model's changes are kept: the store.
//!
//! A store is the changes to requests and grants ([`Entry`]s), in order,
//! each with its sequence number. The model applies them in that order; a
//! proxy is a follower of its store. Two kinds:
//!
//! * [`FileStore`]: the journal in `data_dir` (`journal.rs`), for one proxy.
//!   Nobody else writes to it, so the model is always current with it.
//! * [`PgStore`]: a PostgreSQL database that every proxy of a fleet shares.
//!   A proxy writes a change only if it has applied every change before it
//!   (the store checks, under a row lock on the chain's head), so two
//!   proxies cannot both approve one request; a proxy that is behind catches
//!   up and decides again.
//!
//! Writing is two steps, so the audit records of a change can be written
//! between them: [`Store::append`] makes the change ready (fsynced for the
//! file; inside an open transaction for PostgreSQL), then
//! [`Store::confirm`] makes it final, or [`Store::undo`] takes it back.
//! Every call blocks the calling thread: the model calls them under its
//! book lock, from the admin API's blocking threads and its own timers'.

mod file;
pub(crate) mod pg;
pub(crate) mod schema;
mod verify;

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub(crate) use file::FileStore;
pub(crate) use pg::PgStore;
pub use verify::{ChainReport, verify};

use crate::access::journal::Entry;
use crate::access::requests::rfc3339_serde;

/// One stored change and its place in the order.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub seq: u64,
    pub entry: Entry,
}

/// Why a store did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SharedStoreError {
    /// The store cannot be reached now; nothing was changed.
    #[error("the PostgreSQL store cannot be reached ({0})")]
    Unreachable(String),
    /// Another proxy wrote first: catch up and decide again.
    #[error("another proxy changed the store first")]
    Behind,
    /// The store was asked to commit and the connection broke before it
    /// answered: the change may or may not be in the store.
    #[error(
        "the PostgreSQL store did not confirm the change before its connection broke; it may or may not have been made: list it again to see"
    )]
    Unconfirmed,
    /// The store holds something this proxy cannot use.
    #[error("the PostgreSQL store: {0}")]
    Refused(String),
}

impl SharedStoreError {
    /// What an API caller is told: what happened, without the store's own
    /// words (its login, its host), which go to the proxy's log.
    pub(crate) fn to_caller(&self) -> String {
        match self {
            SharedStoreError::Unreachable(_) => {
                "the PostgreSQL store cannot be reached, so nothing was changed".into()
            }
            SharedStoreError::Refused(_) => "the PostgreSQL store refused the change, so nothing \
                                              was changed (the proxy's log says why)"
                .into(),
            SharedStoreError::Behind | SharedStoreError::Unconfirmed => self.to_string(),
        }
    }
}

/// What a model needs of the place it keeps its changes.
pub(crate) trait Store: Send {
    /// The changes after `seq`, in order (what other proxies wrote).
    fn since(&mut self, seq: u64) -> Result<Vec<Event>, super::StoreError>;

    /// Write `entry` as the change after `applied` (the last change this
    /// proxy has applied); returns its sequence number. The change is not
    /// final until [`Store::confirm`]. `Behind` if another change came first.
    fn append(&mut self, entry: &Entry, applied: u64) -> Result<u64, super::StoreError>;

    /// Make the appended change final (and visible to every proxy).
    fn confirm(&mut self) -> Result<(), super::StoreError>;

    /// Take back the appended change: its audit records could not be written.
    fn undo(&mut self);

    /// End whatever a change left open: after [`Store::append`] answered
    /// `Behind`, the change is decided again under the same transaction
    /// (which holds the chain's head), or not at all.
    fn release(&mut self) {}

    /// Whether other proxies write to this store too.
    fn shared(&self) -> bool;
}

/// A change as the PostgreSQL store keeps it: one JSON text per event,
/// chained to the one before by `prev`, like the audit log's lines. The
/// text is kept byte for byte, so `jitgate store verify` can hash it again.
#[derive(Serialize, Deserialize)]
pub(crate) struct EventLine {
    pub prev: String,
    pub seq: u64,
    #[serde(with = "rfc3339_serde")]
    pub at: SystemTime,
    pub proxy: String,
    #[serde(flatten)]
    pub entry: Entry,
}

/// The `prev` of the first event.
pub(crate) const FIRST_PREV: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash that the next event's `prev` must hold.
pub(crate) fn event_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}
