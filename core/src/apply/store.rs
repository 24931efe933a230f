//! Where the state lives, as the apply operation (and `state rm`, `state migrate`) sees it: a
//! reader without the lock, and a writer that holds it.

use std::path::PathBuf;
use std::time::Duration;

use crate::ledger::{
    LedgerError, LedgerWriter, LockError, SqliteLedger, SqliteLedgerWriter, StateLock,
};

/// Why the state could not be opened or locked.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum StoreError {
    /// Another process holds the lock, or the lock file could not be made.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Lock(#[from] LockError),
    /// The state could not be read or written.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Ledger(#[from] LedgerError),
}

/// A place a state can be: it opens the state for reading (no lock, no credentials) and for
/// writing (under the state's exclusive lock, which the writer holds while it lives).
///
/// The apply operation is written against this trait only, so every backend plugs in by
/// implementing it.
pub trait StateStore {
    /// The state opened for reading.
    type Reader: crate::ledger::Ledger;
    /// The state opened for writing, holding the lock.
    type Writer: LedgerWriter + Send + 'static;

    /// Opens the state for reading; a missing state reads as "no state". `sdkappid` says which
    /// app's state is wanted (a backend holding several picks by it).
    fn open_read(&self, sdkappid: u64) -> Result<Self::Reader, StoreError>;

    /// Takes the lock for `operation` (waiting up to `lock_timeout`), then opens the state for
    /// writing; `None`, with the lock released, when there is no state.
    fn open_existing(
        &self,
        sdkappid: u64,
        operation: &str,
        lock_timeout: Duration,
    ) -> Result<Option<Self::Writer>, StoreError>;

    /// Takes the lock, then opens the state for writing, creating it bound to `sdkappid` when
    /// there is none.
    fn create_or_open(
        &self,
        sdkappid: u64,
        operation: &str,
        lock_timeout: Duration,
    ) -> Result<Self::Writer, StoreError>;
}

/// A state in one SQLite file, locked by `<file>.lock`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteStore {
    /// The file.
    pub path: PathBuf,
}

impl StateStore for SqliteStore {
    type Reader = SqliteLedger;
    type Writer = SqliteLedgerWriter;

    fn open_read(&self, _sdkappid: u64) -> Result<SqliteLedger, StoreError> {
        Ok(SqliteLedger::open_read_only(&self.path)?)
    }

    fn open_existing(
        &self,
        _sdkappid: u64,
        operation: &str,
        lock_timeout: Duration,
    ) -> Result<Option<SqliteLedgerWriter>, StoreError> {
        let lock = StateLock::acquire(&self.path, operation, lock_timeout)?;
        Ok(SqliteLedgerWriter::open_existing(&self.path, lock)?)
    }

    fn create_or_open(
        &self,
        sdkappid: u64,
        operation: &str,
        lock_timeout: Duration,
    ) -> Result<SqliteLedgerWriter, StoreError> {
        let lock = StateLock::acquire(&self.path, operation, lock_timeout)?;
        Ok(SqliteLedgerWriter::create_or_open(
            &self.path, sdkappid, lock,
        )?)
    }
}
