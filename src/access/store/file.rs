//! The file store: the journal in `data_dir`, for a proxy on its own.

use std::path::Path;

use super::{Event, Store};
use crate::access::StoreError;
use crate::access::journal::{Entry, Journal, ReadEntry};

pub(crate) struct FileStore {
    journal: Journal,
    /// Entries in the file: the sequence number of the last one.
    len: u64,
}

impl FileStore {
    /// Open the journal at `path` and read back every entry (the line
    /// number stands for the sequence number).
    pub(crate) fn open(path: &Path) -> Result<(FileStore, Vec<ReadEntry>), StoreError> {
        let (journal, entries) = Journal::open(path)?;
        let len = entries.len() as u64;
        Ok((FileStore { journal, len }, entries))
    }
}

impl Store for FileStore {
    fn since(&mut self, _seq: u64) -> Result<Vec<Event>, StoreError> {
        // Nobody else writes to this file.
        Ok(Vec::new())
    }

    fn append(&mut self, entry: &Entry, _applied: u64) -> Result<u64, StoreError> {
        self.journal.append(entry)?;
        self.len += 1;
        Ok(self.len)
    }

    fn confirm(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn undo(&mut self) {
        self.journal.undo_last();
        self.len -= 1;
    }

    fn shared(&self) -> bool {
        false
    }
}
