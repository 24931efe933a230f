//! Where the state lives, as the apply operation sees it: a reader without the lock, and a
//! writer that holds it.

use std::time::Duration;

use crate::ledger::{self, AnyLedger, AnyWriter, LedgerError, LedgerWriter, LocatedStore};

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
    fn open_read(&self, sdkappid: u64) -> Result<Self::Reader, LedgerError>;

    /// Takes the lock for `operation` (waiting up to `lock_timeout`), then opens the state for
    /// writing; `None`, with the lock released, when there is no state.
    fn open_existing(
        &self,
        sdkappid: u64,
        operation: &str,
        lock_timeout: Duration,
    ) -> Result<Option<Self::Writer>, LedgerError>;

    /// Takes the lock, then opens the state for writing, creating it bound to `sdkappid` when
    /// there is none.
    fn create_or_open(
        &self,
        sdkappid: u64,
        operation: &str,
        lock_timeout: Duration,
    ) -> Result<Self::Writer, LedgerError>;
}

/// The state where `--state` says, of either backend, locked and opened the way `state rm`
/// and `state migrate` lock and open it.
impl StateStore for LocatedStore {
    type Reader = AnyLedger;
    type Writer = AnyWriter;

    fn open_read(&self, sdkappid: u64) -> Result<AnyLedger, LedgerError> {
        ledger::open_read(self.location(), self.name(), Some(sdkappid))
    }

    fn open_existing(
        &self,
        sdkappid: u64,
        operation: &str,
        lock_timeout: Duration,
    ) -> Result<Option<AnyWriter>, LedgerError> {
        self.open_existing_writer(sdkappid, operation, lock_timeout)
    }

    fn create_or_open(
        &self,
        sdkappid: u64,
        operation: &str,
        lock_timeout: Duration,
    ) -> Result<AnyWriter, LedgerError> {
        self.create_or_open_writer(sdkappid, operation, lock_timeout)
    }
}
