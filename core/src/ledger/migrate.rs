//! `timctl state migrate`: a state copied whole (lineage, serial, runs, entries and history) to
//! another backend, under both states' locks, all or nothing at the destination: one
//! transaction in PostgreSQL, a file written beside and renamed in SQLite. A migrate killed at
//! any moment leaves the destination as it was, so the next one simply runs again.

use std::time::Duration;

use super::history::Event;
use super::location::{AnyWriter, LocatedStore, StateLocation, StateName};
use super::{Ledger, LedgerError, Meta, RunInfo, SqliteLedger, StateLock};

/// A stream of events, oldest first: called with where each one goes.
pub type EventSource<'a> =
    &'a mut dyn FnMut(&mut dyn FnMut(&Event) -> Result<(), LedgerError>) -> Result<(), LedgerError>;

/// What the lock files and messages say a migrate is doing.
const OPERATION: &str = "state migrate";

/// What a migrate copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migrated {
    /// The state copied (lineage, serial, app).
    pub meta: Meta,
    /// Entries copied.
    pub entries: usize,
    /// Runs copied (the migrate's own run aside).
    pub runs: usize,
    /// Events copied.
    pub events: u64,
    /// The source, for messages.
    pub from: String,
    /// The destination, for messages.
    pub to: String,
}

/// Why a migrate copied nothing.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum MigrateError {
    /// The source holds no state.
    #[error("there is no state at {location} to migrate")]
    #[diagnostic(code(timctl::state::migrate_nothing))]
    NoState {
        /// The source.
        location: String,
    },
    /// The destination already holds this state.
    #[error(
        "the destination {location} already holds a state of SDKAppID {sdkappid}; nothing was copied"
    )]
    #[diagnostic(
        code(timctl::state::migrate_exists),
        help("migrate to another destination, or remove that state first")
    )]
    DestinationHolds {
        /// The destination.
        location: String,
        /// The app.
        sdkappid: u64,
    },
    /// The destination is the source itself: copying would write over the state being read.
    #[error("--to names the state being copied ({location}); give another destination")]
    SameState {
        /// The state.
        location: String,
    },
    /// A state could not be locked, read or written.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Ledger(#[from] LedgerError),
}

/// Where `state migrate` copies the state at `from` to: `to`, as the state `to_name` there (by
/// default, an SQLite file's one state, or in PostgreSQL the source's name). Refuses a
/// destination that is the source itself: a copy never writes over a written state (and
/// [`migrate`] refuses any destination that already holds one).
pub fn destination(
    from: &LocatedStore,
    to: StateLocation,
    to_name: Option<StateName>,
) -> Result<LocatedStore, MigrateError> {
    let name = match (&to, to_name) {
        (_, Some(name)) => name,
        (StateLocation::Sqlite(_), None) => StateName::default(),
        (StateLocation::Postgres(_), None) => from.name().clone(),
    };
    let to = LocatedStore::new(to, name).map_err(LedgerError::from)?;
    if &to == from {
        return Err(MigrateError::SameState {
            location: from.to_string(),
        });
    }
    Ok(to)
}

/// Copies the state of `sdkappid` at `from` to `to` (see the module's documentation), recording
/// `run` (its command `state migrate`) in the copy with its counts. The source is unchanged.
pub fn migrate(
    from: &LocatedStore,
    to: &LocatedStore,
    sdkappid: u64,
    lock_timeout: Duration,
    mut run: RunInfo,
) -> Result<Migrated, MigrateError> {
    let no_state = || MigrateError::NoState {
        location: from.to_string(),
    };
    let source = from
        .open_existing_writer(sdkappid, OPERATION, lock_timeout)?
        .ok_or_else(no_state)?;
    let snapshot = source.snapshot()?.ok_or_else(no_state)?;
    let mut events = |each: &mut dyn FnMut(&Event) -> Result<(), LedgerError>| match &source {
        AnyWriter::Sqlite(w) => w.events_oldest_first(each),
        AnyWriter::Postgres(w) => w.events_oldest_first(each),
    };
    let holds = |location: String| MigrateError::DestinationHolds { location, sdkappid };
    let (copied, to_shown) = match to.location() {
        StateLocation::Sqlite(path) => {
            let lock =
                StateLock::acquire(path, OPERATION, lock_timeout).map_err(LedgerError::from)?;
            let existing = SqliteLedger::open_read_only(path)?;
            if existing.meta().is_some() {
                return Err(holds(existing.location()));
            }
            let copied =
                super::sqlite::copy::write_new(&lock, path, &snapshot, &mut events, &mut run)?;
            (copied, path.display().to_string())
        }
        StateLocation::Postgres(pg) => {
            let shown = format!("{pg} (state {:?})", to.name().as_str());
            let copied = super::postgres::PgLedgerWriter::import_new(
                pg,
                to.name().as_str(),
                sdkappid,
                OPERATION,
                lock_timeout,
                &snapshot,
                &mut events,
                &mut run,
            )?
            .ok_or_else(|| holds(shown.clone()))?;
            (copied, shown)
        }
    };
    Ok(Migrated {
        entries: snapshot.entries.len(),
        runs: snapshot.runs.len(),
        events: copied,
        from: source.location(),
        to: to_shown,
        meta: snapshot.meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(path: &str) -> StateLocation {
        StateLocation::Sqlite(path.into())
    }

    fn postgres(url: &str) -> StateLocation {
        StateLocation::parse(url.as_ref()).unwrap()
    }

    fn store(location: StateLocation, name: &str) -> LocatedStore {
        LocatedStore::new(location, StateName::new(name).unwrap()).unwrap()
    }

    #[test]
    fn the_destinations_name_defaults_by_backend() {
        let pg = store(postgres("postgres://u@db.example/timctl"), "prod");
        // Into SQLite: the file's one state.
        assert_eq!(
            destination(&pg, sqlite("copy.db"), None).unwrap(),
            store(sqlite("copy.db"), "default")
        );
        // Into PostgreSQL: the source's name, unless another is given.
        let file = store(sqlite("state.db"), "default");
        let other_db = postgres("postgres://u@db.example/other");
        assert_eq!(
            destination(&pg, other_db.clone(), None).unwrap(),
            store(other_db.clone(), "prod")
        );
        assert_eq!(
            destination(
                &file,
                other_db.clone(),
                Some(StateName::new("staging").unwrap())
            )
            .unwrap(),
            store(other_db, "staging")
        );
    }

    #[test]
    fn a_copy_never_writes_over_the_state_it_reads() {
        let file = store(sqlite("state.db"), "default");
        let same = destination(&file, sqlite("state.db"), None);
        match same {
            Err(e @ MigrateError::SameState { .. }) => assert_eq!(
                e.to_string(),
                "--to names the state being copied (state.db); give another destination"
            ),
            other => panic!("expected SameState, got {other:?}"),
        }
        let pg = store(postgres("postgres://u@db.example/timctl"), "prod");
        assert!(matches!(
            destination(&pg, postgres("postgres://u@db.example/timctl"), None),
            Err(MigrateError::SameState { .. })
        ));
        // Another state of the same database is another destination.
        assert!(
            destination(
                &pg,
                postgres("postgres://u@db.example/timctl"),
                Some(StateName::new("prod-copy").unwrap())
            )
            .is_ok()
        );
        // A name for an SQLite file is refused as `--state-name` is.
        assert!(matches!(
            destination(&pg, sqlite("copy.db"), Some(StateName::new("x").unwrap())),
            Err(MigrateError::Ledger(LedgerError::Location(_)))
        ));
    }
}
