//! The embedded ledger: one SQLite file (rusqlite, bundled library).
//!
//! Durability: the database uses SQLite's rollback journal (`journal_mode=DELETE`) with
//! `synchronous=FULL`. A commit is on disk when it returns. A process killed mid-transaction
//! leaves a hot journal that the next open rolls back, losing only the uncommitted batch; between
//! transactions there is no journal at all, so after timctl exits, normally or not, the state is
//! one whole file that a user can copy or commit. WAL would need a checkpoint at exit to get
//! there, and a SIGKILL would skip it; at one commit per second the journal costs nothing.
//!
//! Identity: `PRAGMA application_id` marks the file as a timctl ledger and `PRAGMA user_version`
//! holds its schema version. Migrations run in order from the version found to [`SCHEMA_VERSION`],
//! in one transaction, when a writer opens the file; an empty file (or an empty SQLite database)
//! is version 0.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

pub(crate) mod copy;
mod history;
pub mod lock;
mod writer;

pub use writer::SqliteLedgerWriter;
pub(crate) use writer::insert_run;

pub(crate) use history::prune as prune_history;

use super::{
    Ledger, LedgerError, Meta, Origin, RunCommand, RunInfo, RunOrigin, Snapshot, StateEntry,
    StateRef, kind_code, kind_of_code,
};
use crate::ids::{ConversationKey, Peer, UserId};
use lock::{
    LockError, StatePathError, check_dir, check_file, open_private, resolve_state_for_read,
};

/// Why the SQLite state could not be read or written (beside [`super::postgres::PgError`]).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SqliteError {
    /// The state's directory or file is refused (a link, a special file, a directory another
    /// user could change).
    #[error(transparent)]
    #[diagnostic(transparent)]
    Path(#[from] StatePathError),
    /// SQLite failed.
    #[error("the state database {path} failed while {doing}")]
    #[diagnostic(code(timctl::state::sqlite))]
    Query {
        /// What timctl was doing.
        doing: &'static str,
        /// The database.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The file exists and is not a timctl ledger.
    #[error("{path} is not a timctl state database ({why})")]
    #[diagnostic(
        code(timctl::state::not_a_ledger),
        help(
            "point --state (TIMCTL_STATE) at a timctl state file, or at a path that does not exist yet"
        )
    )]
    NotALedger {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        why: String,
    },
    /// The stored data breaks an invariant (edited by hand, or corrupted).
    #[error("the state database {path} holds invalid data: {what}")]
    #[diagnostic(code(timctl::state::corrupt))]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The state's lock file could not be taken.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Lock(#[from] LockError),
    /// A writer was asked to open a ledger with a lock taken for another path.
    #[error("the lock held is for {locked}, not for the state {path}")]
    #[diagnostic(code(timctl::state::wrong_lock))]
    WrongLock {
        /// The state.
        path: PathBuf,
        /// The state the lock is for.
        locked: PathBuf,
    },
}

/// `PRAGMA application_id` of a timctl ledger: "TIMC" in ASCII.
pub const APPLICATION_ID: i32 = 0x5449_4d43;

/// The migrations: `MIGRATIONS[n]` takes schema version `n` to `n + 1`. Never edit one that has
/// shipped; append.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the first release.
    "CREATE TABLE meta (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        lineage TEXT NOT NULL,
        serial INTEGER NOT NULL,
        sdkappid INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL
    ) STRICT;
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        run_id BLOB NOT NULL UNIQUE,
        timctl_version TEXT NOT NULL,
        manifest_digest TEXT NOT NULL,
        started_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE entries (
        from_account TEXT NOT NULL,
        kind INTEGER NOT NULL CHECK (kind IN (1, 2)),
        peer TEXT NOT NULL,
        clear_roaming INTEGER NOT NULL CHECK (clear_roaming IN (0, 1)),
        deleted_at INTEGER NOT NULL,
        run INTEGER NOT NULL REFERENCES runs (id),
        PRIMARY KEY (from_account, kind, peer)
    ) STRICT, WITHOUT ROWID;",
    // 1 -> 2: refresh records conversations seen absent (no call), and the state tells them
    // from deletions. Every entry before this was a deletion.
    "ALTER TABLE entries ADD COLUMN origin TEXT NOT NULL DEFAULT 'deleted'
        CHECK (origin IN ('deleted', 'absent'));",
    // 2 -> 3: the history. Runs say which command ran, where and by whom, when it ended and
    // what it counted (every run before this was an apply); `events` is the append-only log
    // of every change to the entries, indexed for the per-user, per-peer and per-time
    // questions (the rowid, last in every index, orders ties).
    "ALTER TABLE runs ADD COLUMN command TEXT NOT NULL DEFAULT 'apply';
    ALTER TABLE runs ADD COLUMN commit_id TEXT;
    ALTER TABLE runs ADD COLUMN host TEXT;
    ALTER TABLE runs ADD COLUMN os_user TEXT;
    ALTER TABLE runs ADD COLUMN ci_job_url TEXT;
    ALTER TABLE runs ADD COLUMN ended_at INTEGER;
    ALTER TABLE runs ADD COLUMN counts TEXT;
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('deleted', 'recorded', 'forgotten', 'removed')),
        reason TEXT NOT NULL,
        from_account TEXT NOT NULL,
        kind INTEGER NOT NULL CHECK (kind IN (1, 2)),
        peer TEXT NOT NULL,
        clear_roaming INTEGER NOT NULL CHECK (clear_roaming IN (0, 1)),
        run INTEGER NOT NULL,
        trigger_json TEXT,
        latency_ms INTEGER
    ) STRICT;
    CREATE INDEX events_at ON events (at);
    CREATE INDEX events_from ON events (from_account, at);
    CREATE INDEX events_peer ON events (kind, peer, at);",
];

/// The first schema version with the history (`events`, and the runs' new columns).
pub(crate) const HISTORY_SCHEMA: u32 = 3;

/// The schema version this timctl writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How long to wait for SQLite's own locks (a reader during a writer's commit).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What an opened file turned out to be.
enum Found {
    /// An empty file or an empty SQLite database: no state.
    Empty,
    /// A timctl ledger at this schema version.
    Ledger(u32),
}

fn sqlite_err(path: &Path, doing: &'static str) -> impl FnOnce(rusqlite::Error) -> LedgerError {
    let path = path.to_owned();
    move |source| {
        LedgerError::from(SqliteError::Query {
            doing,
            path,
            source,
        })
    }
}

fn is_not_a_database(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::NotADatabase)
}

/// The objects a ledger's schema may hold, as (type, name): what [`MIGRATIONS`] create, plus
/// SQLite's own indexes and statistics. Anything else (a trigger, a view, another table) was
/// not made by timctl and could act on every read or write, so the file is refused.
fn expected_object(kind: &str, name: &str, table: &str) -> bool {
    const TABLES: [&str; 4] = ["meta", "runs", "entries", "events"];
    const INDEXES: [&str; 3] = ["events_at", "events_from", "events_peer"];
    match kind {
        "table" => TABLES.contains(&name) || name.starts_with("sqlite_stat"),
        // Autoindexes back UNIQUE and PRIMARY KEY constraints; they hold no SQL.
        "index" => {
            (name.starts_with("sqlite_autoindex_") && TABLES.contains(&table))
                || (INDEXES.contains(&name) && table == "events")
        }
        _ => false,
    }
}

/// Opens `resolved` with `flags`, never through a symbolic link, and hardened against a hostile
/// file: defensive mode (no writing the schema by hand, no corrupting pragmas) and an untrusted
/// schema (views and triggers may call only functions SQLite marks innocuous).
fn open_sqlite(resolved: &Path, path: &Path, flags: OpenFlags) -> Result<Connection, LedgerError> {
    use rusqlite::config::DbConfig;

    let conn = Connection::open_with_flags(
        resolved,
        flags | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )
    .map_err(sqlite_err(path, "opening it"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sqlite_err(path, "setting the busy timeout"))?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .map_err(sqlite_err(path, "turning on defensive mode"))?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)
        .map_err(sqlite_err(path, "turning off the trusted schema"))?;
    Ok(conn)
}

/// Refuses a ledger whose schema holds objects timctl did not create ([`expected_object`]).
fn check_schema(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
    let mut stmt = conn
        .prepare("SELECT type, name, tbl_name FROM sqlite_schema")
        .map_err(sqlite_err(path, "reading its schema"))?;
    let mut rows = stmt
        .query([])
        .map_err(sqlite_err(path, "reading its schema"))?;
    while let Some(row) = rows
        .next()
        .map_err(sqlite_err(path, "reading its schema"))?
    {
        let text = |i| -> Result<String, LedgerError> {
            row.get_ref(i)
                .map(|v| v.as_str().unwrap_or("").to_owned())
                .map_err(sqlite_err(path, "reading its schema"))
        };
        let (kind, name, table) = (text(0)?, text(1)?, text(2)?);
        if !expected_object(&kind, &name, &table) {
            return Err(LedgerError::from(SqliteError::NotALedger {
                path: path.to_owned(),
                why: format!("it holds a {kind} named {name:?} that timctl did not create"),
            }));
        }
    }
    Ok(())
}

/// Tells a ledger from an empty database and from anything else.
fn inspect(conn: &Connection, path: &Path) -> Result<Found, LedgerError> {
    let ids = conn.query_row(
        "SELECT application_id, user_version FROM pragma_application_id, pragma_user_version",
        [],
        |row| Ok((row.get::<_, i32>(0)?, row.get::<_, i64>(1)?)),
    );
    let (app_id, version) = match ids {
        Ok(ids) => ids,
        Err(e) if is_not_a_database(&e) => {
            return Err(LedgerError::from(SqliteError::NotALedger {
                path: path.to_owned(),
                why: "it is not an SQLite database".to_owned(),
            }));
        }
        Err(e) => return Err(sqlite_err(path, "reading its header")(e)),
    };
    match app_id {
        APPLICATION_ID => {
            let version = u32::try_from(version).map_err(|_| {
                LedgerError::from(SqliteError::Corrupt {
                    path: path.to_owned(),
                    what: format!("schema version {version}"),
                })
            })?;
            if version > SCHEMA_VERSION {
                Err(LedgerError::NewerFormat {
                    path: path.to_owned(),
                    found: version,
                    supported: SCHEMA_VERSION,
                    version: env!("CARGO_PKG_VERSION"),
                })
            } else if version == 0 {
                Ok(Found::Empty)
            } else {
                check_schema(conn, path)?;
                Ok(Found::Ledger(version))
            }
        }
        0 => {
            let objects: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
                .map_err(sqlite_err(path, "reading its schema"))?;
            if objects == 0 {
                Ok(Found::Empty)
            } else {
                Err(LedgerError::from(SqliteError::NotALedger {
                    path: path.to_owned(),
                    why: "it is an SQLite database of another program".to_owned(),
                }))
            }
        }
        other => Err(LedgerError::from(SqliteError::NotALedger {
            path: path.to_owned(),
            why: format!("it is an SQLite database with application_id {other:#x}"),
        })),
    }
}

fn read_meta(
    conn: &Connection,
    path: &Path,
    schema_version: u32,
) -> Result<Option<Meta>, LedgerError> {
    let row = conn
        .query_row(
            "SELECT lineage, serial, sdkappid, created_at, created_by FROM meta WHERE id = 1",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            },
        )
        .optional()
        .map_err(sqlite_err(path, "reading its meta"))?;
    let Some((lineage, serial, sdkappid, created_at, created_by)) = row else {
        return Ok(None);
    };
    let corrupt = |what: String| {
        LedgerError::from(SqliteError::Corrupt {
            path: path.to_owned(),
            what,
        })
    };
    Ok(Some(Meta {
        state: StateRef {
            lineage: lineage
                .parse()
                .map_err(|_| corrupt(format!("lineage {lineage:?} is not a UUID")))?,
            serial: u64::try_from(serial).map_err(|_| corrupt(format!("serial {serial}")))?,
        },
        sdkappid: u64::try_from(sdkappid).map_err(|_| corrupt(format!("sdkappid {sdkappid}")))?,
        created_at: jiff::Timestamp::from_second(created_at)
            .map_err(|_| corrupt(format!("created_at {created_at}")))?,
        created_by,
        schema_version,
    }))
}

/// The columns of a run, as [`run_from_row`] reads them; a ledger from before the history
/// reads as applies with nothing more known.
fn run_columns(schema_version: u32) -> &'static str {
    if schema_version >= HISTORY_SCHEMA {
        "id, run_id, timctl_version, manifest_digest, started_at, command, commit_id, host,
         os_user, ci_job_url, ended_at, counts"
    } else {
        "id, run_id, timctl_version, manifest_digest, started_at, 'apply', NULL, NULL, NULL,
         NULL, NULL, NULL"
    }
}

/// One row of [`run_columns`].
fn run_from_row(r: &rusqlite::Row<'_>, path: &Path) -> Result<(i64, RunInfo), LedgerError> {
    let read = |r: &rusqlite::Row<'_>| -> rusqlite::Result<_> {
        Ok((
            (
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
            ),
            (
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, Option<String>>(9)?,
                r.get::<_, Option<i64>>(10)?,
                r.get::<_, Option<String>>(11)?,
            ),
        ))
    };
    let (
        (id, run_id, timctl_version, manifest_digest, started_at, command),
        (commit, host, os_user, ci_job_url, ended_at, counts),
    ) = read(r).map_err(sqlite_err(path, "reading runs"))?;
    let corrupt = |what: String| {
        LedgerError::from(SqliteError::Corrupt {
            path: path.to_owned(),
            what,
        })
    };
    Ok((
        id,
        RunInfo {
            run_id: uuid::Uuid::from_slice(&run_id)
                .map_err(|_| corrupt(format!("run {id} has an ID that is not a UUID")))?,
            command: RunCommand::parse(&command)
                .ok_or_else(|| corrupt(format!("run {id} has the command {command:?}")))?,
            timctl_version,
            manifest_digest,
            origin: RunOrigin {
                commit,
                host,
                os_user,
                ci_job_url,
            },
            started_at: jiff::Timestamp::from_second(started_at)
                .map_err(|_| corrupt(format!("run {id} started at {started_at}")))?,
            ended_at: ended_at
                .map(|ms| {
                    jiff::Timestamp::from_millisecond(ms)
                        .map_err(|_| corrupt(format!("run {id} ended at {ms}")))
                })
                .transpose()?,
            counts: RunInfo::counts_from_json(counts.as_deref()),
        },
    ))
}

fn read_runs(
    conn: &Connection,
    path: &Path,
    schema_version: u32,
) -> Result<Vec<(i64, RunInfo)>, LedgerError> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {} FROM runs ORDER BY id",
            run_columns(schema_version)
        ))
        .map_err(sqlite_err(path, "reading runs"))?;
    let mut rows = stmt.query([]).map_err(sqlite_err(path, "reading runs"))?;
    let mut runs = Vec::new();
    while let Some(r) = rows.next().map_err(sqlite_err(path, "reading runs"))? {
        runs.push(run_from_row(r, path)?);
    }
    Ok(runs)
}

/// Reads every entry of a ledger at `schema_version` (a read-only open does not migrate, so an
/// older file is read as it is: before version 2 every entry was a deletion).
fn read_entries(
    conn: &Connection,
    path: &Path,
    runs: &[(i64, RunInfo)],
    schema_version: u32,
) -> Result<Vec<StateEntry>, LedgerError> {
    // Runs are few; mapping their row IDs in memory is cheaper than a join per entry.
    let runs: HashMap<i64, uuid::Uuid> = runs.iter().map(|(id, run)| (*id, run.run_id)).collect();
    // Not sized from `count(*)`: the file may be hostile, and a count is no promise of rows.
    let mut entries = Vec::new();
    // The primary key's order is (from_account, kind, peer) under BINARY collation, which is
    // byte order: the same order as `DesiredEntry`, so the diff can merge without sorting.
    let origin_column = if schema_version >= 2 {
        "origin"
    } else {
        "'deleted'"
    };
    let mut stmt = conn
        .prepare(&format!(
            "SELECT from_account, kind, peer, clear_roaming, deleted_at, run, {origin_column}
             FROM entries ORDER BY from_account, kind, peer"
        ))
        .map_err(sqlite_err(path, "reading entries"))?;
    let mut rows = stmt
        .query([])
        .map_err(sqlite_err(path, "reading entries"))?;
    let corrupt = |what: String| {
        LedgerError::from(SqliteError::Corrupt {
            path: path.to_owned(),
            what,
        })
    };
    while let Some(r) = rows.next().map_err(sqlite_err(path, "reading entries"))? {
        let read = |r: &rusqlite::Row<'_>| -> rusqlite::Result<_> {
            Ok((
                r.get_ref(0)?.as_str()?.to_owned(),
                r.get::<_, i64>(1)?,
                r.get_ref(2)?.as_str()?.to_owned(),
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get_ref(6)?.as_str()?.to_owned(),
            ))
        };
        let (from, kind, peer, clear_roaming, deleted_at, run, origin) =
            read(r).map_err(sqlite_err(path, "reading entries"))?;
        let from =
            UserId::new(from).map_err(|e| corrupt(format!("an entry's From_Account: {e}")))?;
        let kind = kind_of_code(kind)
            .ok_or_else(|| corrupt(format!("an entry of {from} has type {kind}")))?;
        let peer = Peer::from_parts(kind, peer)
            .map_err(|e| corrupt(format!("an entry of {from} has a bad peer: {e}")))?;
        let run_id = *runs
            .get(&run)
            .ok_or_else(|| corrupt(format!("the entry {from} {peer} names no known run")))?;
        let origin = Origin::parse(&origin)
            .ok_or_else(|| corrupt(format!("the entry {from} {peer} has origin {origin:?}")))?;
        entries.push(StateEntry {
            deleted_at: jiff::Timestamp::from_second(deleted_at).map_err(|_| {
                corrupt(format!(
                    "the entry {from} {peer} was deleted at {deleted_at}"
                ))
            })?,
            key: ConversationKey::new(from, peer),
            clear_roaming: clear_roaming != 0,
            run_id,
            origin,
        });
    }
    Ok(entries)
}

/// Reads meta, runs and entries in one deferred read transaction. SQLite holds its shared lock
/// from the first read to the end of the transaction, so no writer commits in between: what is
/// returned is one committed state.
fn read_snapshot(
    conn: &Connection,
    path: &Path,
    schema_version: u32,
) -> Result<Option<Snapshot>, LedgerError> {
    // `unchecked_transaction` because readers hold the connection shared; nothing else uses it
    // meanwhile (a `Connection` is not `Sync`). Dropping the transaction ends it (a rollback,
    // which for a read changes nothing).
    let tx = conn
        .unchecked_transaction()
        .map_err(sqlite_err(path, "starting a read"))?;
    let Some(meta) = read_meta(&tx, path, schema_version)? else {
        return Ok(None);
    };
    let runs = read_runs(&tx, path, schema_version)?;
    let entries = read_entries(&tx, path, &runs, schema_version)?;
    drop(tx);
    Ok(Some(Snapshot {
        meta,
        runs: runs.into_iter().map(|(_, run)| run).collect(),
        entries,
    }))
}

/// A ledger opened for reading: no lock, no credentials, and no state when the file is absent.
#[derive(Debug)]
pub struct SqliteLedger {
    path: PathBuf,
    conn: Option<Connection>,
    meta: Option<Meta>,
}

impl SqliteLedger {
    /// Opens the ledger at `path` for reading. A missing or empty file is "no state" (meta
    /// `None`, no entries), not an error; a file that is not a ledger, or is a newer one, is.
    pub fn open_read_only(path: &Path) -> Result<Self, LedgerError> {
        let none = || Self {
            path: path.to_owned(),
            conn: None,
            meta: None,
        };
        let Some(resolved) = resolve_state_for_read(path)? else {
            return Ok(none());
        };
        // Refused as a writer refuses it: where another user can swap the state, what a reader
        // shows is theirs (a plan with no changes, a saved plan that looks current), and a hot
        // journal there would even have this reader write.
        if let Some(dir) = resolved.parent() {
            check_dir(dir)?;
        }
        match check_file(&resolved)? {
            None => return Ok(none()),
            Some(m) if m.len() == 0 => return Ok(none()),
            Some(_) => {}
        }
        let conn = open_sqlite(&resolved, path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let found = match inspect(&conn, path) {
            // A killed writer left a hot journal, which a read-only connection cannot roll
            // back. Rolling it back needs write access to the files but changes no committed
            // data, so open read-write for just that; timctl itself still writes nothing.
            Err(LedgerError::Sqlite(SqliteError::Query { source, .. }))
                if source.sqlite_error().is_some_and(|e| {
                    e.extended_code == rusqlite::ffi::SQLITE_READONLY_ROLLBACK
                }) =>
            {
                drop(conn);
                let conn = open_sqlite(&resolved, path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
                let found = inspect(&conn, path)?;
                return Self::from_found(path, conn, found);
            }
            other => other?,
        };
        Self::from_found(path, conn, found)
    }

    fn from_found(path: &Path, conn: Connection, found: Found) -> Result<Self, LedgerError> {
        let meta = match found {
            Found::Empty => None,
            Found::Ledger(version) => read_meta(&conn, path, version)?,
        };
        Ok(Self {
            path: path.to_owned(),
            conn: meta.is_some().then_some(conn),
            meta,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Ledger for SqliteLedger {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, LedgerError> {
        match (&self.conn, &self.meta) {
            (Some(conn), Some(meta)) => read_snapshot(conn, &self.path, meta.schema_version),
            _ => Ok(None),
        }
    }
}
