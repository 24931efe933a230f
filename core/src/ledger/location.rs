//! Where the state is, and opening it there: an SQLite file or a PostgreSQL database, chosen by
//! the `--state` value (`postgres://…`/`postgresql://…` is PostgreSQL, anything else a path).
//!
//! The commands see only [`StateLocation`], [`open_read`] and [`LocatedStore`] (the one way to
//! lock and open a state for writing); the two backends' types stay behind [`AnyLedger`] and
//! [`AnyWriter`].

use std::path::PathBuf;
use std::time::Duration;

use super::history::{Event, EventAction, EventReason, HistoryError, HistoryQuery};
use super::postgres::{PgLedger, PgLedgerWriter, PgLocation};
use super::{
    Ledger, LedgerError, LedgerWriter, Meta, Origin, RunInfo, Snapshot, SqliteLedger,
    SqliteLedgerWriter, StateLock, ToRecord, Written,
};
use crate::ids::ConversationKey;

/// The name of the default state (`--state-name`).
pub const DEFAULT_STATE_NAME: &str = "default";

/// Why a state location or name was refused.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LocationError {
    /// `--state-name` with an SQLite state.
    #[error(
        "--state-name {name:?} applies to PostgreSQL states only; an SQLite state is named by its file"
    )]
    #[diagnostic(
        code(timctl::state::name),
        help(
            "pass --state with another file path instead, or drop --state-name (TIMCTL_STATE_NAME)"
        )
    )]
    NamedSqliteState {
        /// The name given.
        name: String,
    },
    /// A state name that is empty, too long, or has control characters.
    #[error("the state name {name:?} is not valid: {why}")]
    #[diagnostic(code(timctl::state::name))]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// A state's name within a PostgreSQL database: 1 to 100 characters, no control, invisible or
/// bidirectional-control characters, no white space at either end.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StateName(String);

impl StateName {
    /// Checks `name`.
    pub fn new(name: &str) -> Result<Self, LocationError> {
        let bad = |why| LocationError::BadName {
            name: name.to_owned(),
            why,
        };
        if name.is_empty() {
            return Err(bad("it is empty"));
        }
        if name.chars().count() > 100 {
            return Err(bad("it is longer than 100 characters"));
        }
        if name.chars().any(char::is_control) {
            return Err(bad("it has control characters"));
        }
        // A name must read as what it is: `prod ` or `prod` behind a right-to-left override
        // would look like `prod` in every listing and be another state.
        if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
            return Err(bad("it begins or ends with white space"));
        }
        if name
            .chars()
            .any(|c| (c.is_whitespace() && c != ' ') || is_invisible_or_bidi(c))
        {
            return Err(bad(
                "it has an invisible or bidirectional-control character (shown escaped)",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Characters that show nothing, or change the order others show in: zero-width and other
/// format characters, bidirectional controls, fillers and variation selectors.
fn is_invisible_or_bidi(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

impl Default for StateName {
    fn default() -> Self {
        Self(DEFAULT_STATE_NAME.to_owned())
    }
}

impl std::fmt::Display for StateName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a state lives. `Display` never shows a password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateLocation {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(PgLocation),
}

impl StateLocation {
    /// Reads a `--state` value: a `postgres://`/`postgresql://` URL, else a file path.
    pub fn parse(value: &std::ffi::OsStr) -> Result<Self, LedgerError> {
        match value.to_str() {
            Some(s) if super::postgres::config::is_postgres_url(s) => {
                Ok(Self::Postgres(PgLocation::parse(s)?))
            }
            _ => Ok(Self::Sqlite(PathBuf::from(value))),
        }
    }

    /// Refuses a name other than the default for an SQLite state.
    pub fn check_name(&self, name: &StateName) -> Result<(), LocationError> {
        match self {
            Self::Sqlite(_) if name.as_str() != DEFAULT_STATE_NAME => {
                Err(LocationError::NamedSqliteState {
                    name: name.0.clone(),
                })
            }
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for StateLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(pg) => write!(f, "{pg}"),
        }
    }
}

/// A ledger opened for reading, of either backend.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per command, never in a collection: a box would buy nothing"
)]
pub enum AnyLedger {
    /// SQLite.
    Sqlite(SqliteLedger),
    /// PostgreSQL.
    Postgres(PgLedger),
}

/// Opens the state for reading. `sdkappid` picks the app's state in a PostgreSQL database (with
/// none, the only app there); an SQLite file is bound to one app, which `check_app` checks.
pub fn open_read(
    location: &StateLocation,
    name: &StateName,
    sdkappid: Option<u64>,
) -> Result<AnyLedger, LedgerError> {
    location.check_name(name)?;
    Ok(match location {
        StateLocation::Sqlite(path) => AnyLedger::Sqlite(SqliteLedger::open_read_only(path)?),
        StateLocation::Postgres(pg) => AnyLedger::Postgres(super::postgres::off_runtime(|| {
            PgLedger::open_read_only(pg, name.as_str(), sdkappid)
        })?),
    })
}

impl AnyLedger {
    /// The backend, for reading.
    fn inner(&self) -> &dyn Ledger {
        match self {
            Self::Sqlite(l) => l,
            Self::Postgres(l) => l,
        }
    }
}

impl Ledger for AnyLedger {
    fn location(&self) -> String {
        self.inner().location()
    }
    fn meta(&self) -> Option<&Meta> {
        self.inner().meta()
    }
    fn snapshot(&self) -> Result<Option<Snapshot>, LedgerError> {
        self.inner().snapshot()
    }
}

/// A ledger opened for writing, of either backend; it holds the state's lock while it lives.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per command, never in a collection: a box would buy nothing"
)]
pub enum AnyWriter {
    /// SQLite, with its lock file.
    Sqlite(SqliteLedgerWriter),
    /// PostgreSQL, through the session holding the advisory lock.
    Postgres(PgLedgerWriter),
}

/// A state where `--state` and `--state-name` say: an SQLite file (locked by `<file>.lock`) or a
/// named state in a PostgreSQL database (locked by a session-level advisory lock).
///
/// Every command that writes the state (apply, `state rm`, `state migrate`) locks and opens it
/// through this one type, so they take the lock, refuse another app's state and create a state
/// the same way. Its name is checked against its location when it is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocatedStore {
    location: StateLocation,
    name: StateName,
}

impl LocatedStore {
    /// The state `name` at `location`; refuses a name other than the default for an SQLite
    /// state.
    pub fn new(location: StateLocation, name: StateName) -> Result<Self, LocationError> {
        location.check_name(&name)?;
        Ok(Self { location, name })
    }

    /// The file or the database.
    pub fn location(&self) -> &StateLocation {
        &self.location
    }

    /// Which of the database's states (an SQLite file holds one, `default`).
    pub fn name(&self) -> &StateName {
        &self.name
    }

    /// The app whose state this is, for a command not told which: the SDKAppID an SQLite file
    /// is bound to, or the only app with a state of this name in a PostgreSQL database (an
    /// error naming them when there are several). `None` when there is no state.
    pub fn only_app(&self) -> Result<Option<u64>, LedgerError> {
        Ok(open_read(&self.location, &self.name, None)?
            .meta()
            .map(|m| m.sdkappid))
    }

    /// Takes the state's lock for `operation` (waiting up to `lock_timeout`), then opens the
    /// state for writing, creating it bound to `sdkappid` when there is none. An SQLite state
    /// creates its lock file (and directory); a PostgreSQL one writes nothing to the local disk.
    pub fn create_or_open_writer(
        &self,
        sdkappid: u64,
        operation: &str,
        lock_timeout: Duration,
    ) -> Result<AnyWriter, LedgerError> {
        Ok(match &self.location {
            StateLocation::Sqlite(path) => {
                let lock = StateLock::acquire(path, operation, lock_timeout)?;
                AnyWriter::Sqlite(SqliteLedgerWriter::create_or_open(path, sdkappid, lock)?)
            }
            StateLocation::Postgres(pg) => {
                AnyWriter::Postgres(super::postgres::off_runtime(|| {
                    PgLedgerWriter::create_or_open(
                        pg,
                        self.name.as_str(),
                        sdkappid,
                        operation,
                        lock_timeout,
                    )
                })?)
            }
        })
    }

    /// Takes the state's lock like [`create_or_open_writer`](Self::create_or_open_writer),
    /// then opens the state for writing when there is one; `None`, with the lock released and
    /// no state created, when there is none. An SQLite state bound to another app than
    /// `sdkappid` is refused; a PostgreSQL database keeps each app's states apart, so another
    /// app's state there is simply not this one (`None`).
    pub fn open_existing_writer(
        &self,
        sdkappid: u64,
        operation: &str,
        lock_timeout: Duration,
    ) -> Result<Option<AnyWriter>, LedgerError> {
        match &self.location {
            StateLocation::Sqlite(path) => {
                let lock = StateLock::acquire(path, operation, lock_timeout)?;
                let writer = SqliteLedgerWriter::open_existing(path, lock)?;
                if let Some(w) = &writer {
                    w.check_app(sdkappid)?;
                }
                Ok(writer.map(AnyWriter::Sqlite))
            }
            StateLocation::Postgres(pg) => Ok(super::postgres::off_runtime(|| {
                PgLedgerWriter::open_existing(
                    pg,
                    self.name.as_str(),
                    sdkappid,
                    operation,
                    lock_timeout,
                )
            })?
            .map(AnyWriter::Postgres)),
        }
    }
}

impl std::fmt::Display for LocatedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.location.fmt(f)
    }
}

impl AnyWriter {
    /// The backend, for reading.
    fn inner(&self) -> &dyn Ledger {
        match self {
            Self::Sqlite(l) => l,
            Self::Postgres(l) => l,
        }
    }
}

impl Ledger for AnyWriter {
    fn location(&self) -> String {
        self.inner().location()
    }
    fn meta(&self) -> Option<&Meta> {
        self.inner().meta()
    }
    fn snapshot(&self) -> Result<Option<Snapshot>, LedgerError> {
        self.inner().snapshot()
    }
}

impl LedgerWriter for AnyWriter {
    fn begin_run(&mut self, run: &RunInfo) -> Result<(), LedgerError> {
        match self {
            Self::Sqlite(w) => w.begin_run(run),
            Self::Postgres(w) => w.begin_run(run),
        }
    }
    fn end_run(&mut self, run: &RunInfo) -> Result<(), LedgerError> {
        match self {
            Self::Sqlite(w) => w.end_run(run),
            Self::Postgres(w) => w.end_run(run),
        }
    }
    fn record_items(
        &mut self,
        run: &RunInfo,
        origin: Origin,
        batch: &[ToRecord<'_>],
    ) -> Result<Written, LedgerError> {
        match self {
            Self::Sqlite(w) => w.record_items(run, origin, batch),
            Self::Postgres(w) => w.record_items(run, origin, batch),
        }
    }
    fn remove(
        &mut self,
        action: EventAction,
        reason: EventReason,
        batch: &[ConversationKey],
    ) -> Result<Written, LedgerError> {
        match self {
            Self::Sqlite(w) => w.remove(action, reason, batch),
            Self::Postgres(w) => w.remove(action, reason, batch),
        }
    }
}

impl AnyLedger {
    /// Streams the events `query` selects, newest first, to `each`, from one consistent view
    /// of the history (see `sqlite/history.rs` and `postgres/history.rs` for how), without the
    /// lock.
    pub fn history(
        &self,
        query: &HistoryQuery,
        each: &mut dyn FnMut(&Event) -> std::io::Result<()>,
    ) -> Result<(), HistoryError> {
        match self {
            Self::Sqlite(l) => l.history(query, each),
            Self::Postgres(l) => l.history(query, each),
        }
    }

    /// Streams the runs, newest first, at most `limit` (`None`: all), to `each`.
    pub fn runs_newest_first(
        &self,
        limit: Option<u64>,
        each: &mut dyn FnMut(&RunInfo) -> std::io::Result<()>,
    ) -> Result<(), HistoryError> {
        match self {
            Self::Sqlite(l) => l.runs_newest_first(limit, each),
            Self::Postgres(l) => l.runs_newest_first(limit, each),
        }
    }
}

/// Deletes the history's events older than `before` (`state prune-history`), in one short
/// transaction and without the writer lock, so it runs beside an apply or serve; `run` (its
/// command `state prune-history`) is recorded in the same transaction with its count
/// `pruned`. With `dry_run`, counts and writes nothing. `None` when there is no state; `Some(0)`
/// with nothing written for a state from before the history (its first writer upgrades it).
pub fn prune_history(
    location: &StateLocation,
    name: &StateName,
    sdkappid: Option<u64>,
    before: jiff::Timestamp,
    dry_run: bool,
    run: &mut RunInfo,
) -> Result<Option<u64>, LedgerError> {
    location.check_name(name)?;
    match location {
        StateLocation::Sqlite(path) => {
            if let Some(app) = sdkappid {
                // An SQLite file is bound to one app: never prune another's.
                SqliteLedger::open_read_only(path)?.check_app(app)?;
            }
            super::sqlite::prune_history(path, before, dry_run, run)
        }
        StateLocation::Postgres(pg) => Ok(super::postgres::off_runtime(|| {
            super::postgres::prune_history(pg, name.as_str(), sdkappid, before, dry_run, run)
        })?),
    }
}
