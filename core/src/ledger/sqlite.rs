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

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

pub(crate) mod copy;
mod history;

pub(crate) use history::prune as prune_history;

use super::history::{EventAction, EventReason};
use super::lock::{
    StateLock, check_dir, check_file, open_private, resolve_state_for_read, resolve_state_for_write,
};
use super::{
    Ledger, LedgerError, LedgerWriter, Meta, Origin, RunCommand, RunInfo, RunOrigin, Snapshot,
    StateEntry, StateRef, ToRecord, Written,
};
use crate::ids::{ConversationKey, Peer, PeerKind, UserId};

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

/// The API's conversation type: 1 one-to-one, 2 group. Sorting by it sorts users first, as
/// `Peer`'s `Ord` does.
fn kind_code(kind: PeerKind) -> i64 {
    match kind {
        PeerKind::User => 1,
        PeerKind::Group => 2,
    }
}

fn sqlite_err(path: &Path, doing: &'static str) -> impl FnOnce(rusqlite::Error) -> LedgerError {
    let path = path.to_owned();
    move |source| LedgerError::Sqlite {
        doing,
        path,
        source,
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
            return Err(LedgerError::NotALedger {
                path: path.to_owned(),
                why: format!("it holds a {kind} named {name:?} that timctl did not create"),
            });
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
            return Err(LedgerError::NotALedger {
                path: path.to_owned(),
                why: "it is not an SQLite database".to_owned(),
            });
        }
        Err(e) => return Err(sqlite_err(path, "reading its header")(e)),
    };
    match app_id {
        APPLICATION_ID => {
            let version = u32::try_from(version).map_err(|_| LedgerError::Corrupt {
                path: path.to_owned(),
                what: format!("schema version {version}"),
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
                Err(LedgerError::NotALedger {
                    path: path.to_owned(),
                    why: "it is an SQLite database of another program".to_owned(),
                })
            }
        }
        other => Err(LedgerError::NotALedger {
            path: path.to_owned(),
            why: format!("it is an SQLite database with application_id {other:#x}"),
        }),
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
    let corrupt = |what: String| LedgerError::Corrupt {
        path: path.to_owned(),
        what,
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
    let corrupt = |what: String| LedgerError::Corrupt {
        path: path.to_owned(),
        what,
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
    let corrupt = |what: String| LedgerError::Corrupt {
        path: path.to_owned(),
        what,
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
        let kind = match kind {
            1 => PeerKind::User,
            2 => PeerKind::Group,
            other => return Err(corrupt(format!("an entry of {from} has type {other}"))),
        };
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
            Err(LedgerError::Sqlite { source, .. })
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

/// A ledger opened for writing. It owns the state's exclusive lock for as long as it lives.
#[derive(Debug)]
pub struct SqliteLedgerWriter {
    path: PathBuf,
    conn: Connection,
    meta: Meta,
    /// The `runs` row of the last run recorded, so each batch need not look it up.
    run_row: Option<(uuid::Uuid, i64)>,
    _lock: StateLock,
}

impl SqliteLedgerWriter {
    /// Opens the ledger at `path` for writing, creating it (its directory, the file with mode
    /// 0600, the schema, a fresh lineage at serial 1) bound to `sdkappid` when there is none.
    /// Migrates an older schema. Refuses a ledger bound to another app.
    pub fn create_or_open(
        path: &Path,
        sdkappid: u64,
        lock: StateLock,
    ) -> Result<Self, LedgerError> {
        let (conn, meta) = Self::open_conn(path, &lock)?;
        let meta = match meta {
            Some(meta) => meta,
            None => {
                let lineage = uuid::Uuid::new_v4();
                let now = jiff::Timestamp::now().as_second();
                let sdkappid_sql = i64::try_from(sdkappid).map_err(|_| LedgerError::Corrupt {
                    path: path.to_owned(),
                    what: format!("SDKAppID {sdkappid} does not fit the state"),
                })?;
                conn.execute(
                    "INSERT INTO meta (id, lineage, serial, sdkappid, created_at, created_by)
                     VALUES (1, ?1, 1, ?2, ?3, ?4)",
                    params![
                        lineage.to_string(),
                        sdkappid_sql,
                        now,
                        env!("CARGO_PKG_VERSION")
                    ],
                )
                .map_err(sqlite_err(path, "creating its meta"))?;
                read_meta(&conn, path, SCHEMA_VERSION)?.ok_or_else(|| LedgerError::Corrupt {
                    path: path.to_owned(),
                    what: "the meta just written is missing".to_owned(),
                })?
            }
        };
        let writer = Self {
            path: path.to_owned(),
            conn,
            meta,
            run_row: None,
            _lock: lock,
        };
        writer.check_app(sdkappid)?;
        Ok(writer)
    }

    /// Opens an existing ledger for writing (for `state rm`); `Ok(None)` when there is no
    /// state, and then nothing is created but the lock file.
    pub fn open_existing(path: &Path, lock: StateLock) -> Result<Option<Self>, LedgerError> {
        let Some(resolved) = resolve_state_for_read(path)? else {
            return Ok(None);
        };
        if check_file(&resolved)?.is_none() {
            return Ok(None);
        }
        let (conn, meta) = Self::open_conn(path, &lock)?;
        Ok(meta.map(|meta| Self {
            path: path.to_owned(),
            conn,
            meta,
            run_row: None,
            _lock: lock,
        }))
    }

    /// Opens (creating the file 0600 if needed) and migrates; the meta if there is one.
    fn open_conn(path: &Path, lock: &StateLock) -> Result<(Connection, Option<Meta>), LedgerError> {
        let resolved = resolve_state_for_write(path)?;
        if lock.state() != resolved {
            return Err(LedgerError::WrongLock {
                path: path.to_owned(),
                locked: lock.state().to_owned(),
            });
        }
        check_file(&resolved)?;
        // Create the file ourselves so that it is 0600 from the first byte; SQLite gives its
        // journal the same mode.
        open_private(&resolved).map_err(|source| LedgerError::Io {
            doing: "create",
            path: path.to_owned(),
            source,
        })?;
        let mut conn = open_sqlite(&resolved, path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let found = inspect(&conn, path)?;
        conn.pragma_update(None, "journal_mode", "DELETE")
            .map_err(sqlite_err(path, "setting journal_mode"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite_err(path, "setting synchronous"))?;
        let from = match found {
            Found::Empty => 0,
            Found::Ledger(v) => v,
        };
        if from < SCHEMA_VERSION {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
                .map_err(sqlite_err(path, "starting a migration"))?;
            for migration in &MIGRATIONS[from as usize..] {
                tx.execute_batch(migration)
                    .map_err(sqlite_err(path, "migrating its schema"))?;
            }
            tx.pragma_update(None, "application_id", APPLICATION_ID)
                .map_err(sqlite_err(path, "migrating its schema"))?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(sqlite_err(path, "migrating its schema"))?;
            tx.commit()
                .map_err(sqlite_err(path, "committing a migration"))?;
        }
        // A process killed at the wrong moment can leave a journal that is not hot (SQLite
        // ignores it, and the read above already rolled back any hot one) but still lies
        // beside the database until the next write. Rewriting one header field in a
        // transaction makes SQLite replace and delete it, so the state is one file again.
        let mut journal = resolved.as_os_str().to_owned();
        journal.push("-journal");
        if Path::new(&journal).exists() {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sqlite_err(path, "clearing a stale journal"))?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(sqlite_err(path, "clearing a stale journal"))?;
            tx.commit()
                .map_err(sqlite_err(path, "clearing a stale journal"))?;
        }
        let meta = read_meta(&conn, path, SCHEMA_VERSION)?;
        Ok((conn, meta))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bumps the serial inside `tx` and returns the new state.
    fn bump(
        tx: &rusqlite::Transaction<'_>,
        path: &Path,
        lineage: uuid::Uuid,
    ) -> Result<StateRef, LedgerError> {
        let serial: i64 = tx
            .query_row(
                "UPDATE meta SET serial = serial + 1 WHERE id = 1 RETURNING serial",
                [],
                |r| r.get(0),
            )
            .map_err(sqlite_err(path, "bumping the serial"))?;
        Ok(StateRef {
            lineage,
            serial: serial as u64,
        })
    }
}

impl Ledger for SqliteLedgerWriter {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn meta(&self) -> Option<&Meta> {
        Some(&self.meta)
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, LedgerError> {
        read_snapshot(&self.conn, &self.path, self.meta.schema_version)
    }
}

impl SqliteLedgerWriter {
    /// The `runs` row of `run`, inserted if this writer has not written it yet.
    fn run_row(
        tx: &rusqlite::Transaction<'_>,
        path: &Path,
        known: Option<(uuid::Uuid, i64)>,
        run: &RunInfo,
    ) -> Result<i64, LedgerError> {
        if let Some((id, row)) = known
            && id == run.run_id
        {
            return Ok(row);
        }
        insert_run(tx, path, run, "INSERT OR IGNORE")?;
        tx.query_row(
            "SELECT id FROM runs WHERE run_id = ?1",
            [run.run_id.as_bytes().as_slice()],
            |r| r.get(0),
        )
        .map_err(sqlite_err(path, "recording the run"))
    }
}

/// Inserts `run`'s row (`verb`: `INSERT` or `INSERT OR IGNORE`); its row ID.
pub(crate) fn insert_run(
    conn: &Connection,
    path: &Path,
    run: &RunInfo,
    verb: &str,
) -> Result<i64, LedgerError> {
    conn.prepare_cached(&format!(
        "{verb} INTO runs (run_id, timctl_version, manifest_digest, started_at, command,
           commit_id, host, os_user, ci_job_url, ended_at, counts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))
    .and_then(|mut stmt| {
        stmt.execute(params![
            run.run_id.as_bytes().as_slice(),
            run.timctl_version,
            run.manifest_digest,
            run.started_at.as_second(),
            run.command.as_str(),
            run.origin.commit,
            run.origin.host,
            run.origin.os_user,
            run.origin.ci_job_url,
            run.ended_at.map(|t| t.as_millisecond()),
            run.counts_json(),
        ])
    })
    .map_err(sqlite_err(path, "recording the run"))?;
    Ok(conn.last_insert_rowid())
}

/// One event appended to the history.
const APPEND_EVENT: &str = "INSERT INTO events
    (at, action, reason, from_account, kind, peer, clear_roaming, run, trigger_json, latency_ms)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// Appends one event (inside the caller's transaction).
#[expect(
    clippy::too_many_arguments,
    reason = "one column each; a struct for one call site would only rename them"
)]
fn append_event(
    tx: &rusqlite::Transaction<'_>,
    path: &Path,
    at: jiff::Timestamp,
    action: EventAction,
    reason: EventReason,
    key: &ConversationKey,
    clear_roaming: bool,
    run_row: i64,
) -> Result<(), LedgerError> {
    tx.prepare_cached(APPEND_EVENT)
        .and_then(|mut stmt| {
            stmt.execute(params![
                at.as_millisecond(),
                action.as_str(),
                reason.as_str(),
                key.from.as_str(),
                kind_code(key.peer.kind()),
                key.peer.id(),
                clear_roaming,
                run_row,
                None::<&str>,
                None::<i64>
            ])
        })
        .map_err(sqlite_err(path, "appending to the history"))?;
    Ok(())
}

impl SqliteLedgerWriter {
    /// [`LedgerWriter::record_items`].
    fn record_with(
        &mut self,
        run: &RunInfo,
        origin: Origin,
        batch: &[ToRecord<'_>],
    ) -> Result<Written, LedgerError> {
        if batch.is_empty() {
            return Ok(Written {
                state: self.meta.state,
                affected: 0,
            });
        }
        let action = match origin {
            Origin::Deleted => EventAction::Deleted,
            Origin::Absent => EventAction::Recorded,
        };
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sqlite_err(&path, "starting a write"))?;
        let run_row = Self::run_row(&tx, &path, self.run_row, run)?;
        let mut affected = 0;
        {
            // Prepared once per batch, not per item.
            // Inserted, or replaced when it says something else; an entry recorded the same
            // way stays as it was (its first deletion's time and run), so the serial stays
            // and no saved plan goes stale. `changes` is 0 when the update's WHERE refused.
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO entries (from_account, kind, peer, clear_roaming, deleted_at, run, origin)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (from_account, kind, peer) DO UPDATE SET
                        clear_roaming = excluded.clear_roaming,
                        deleted_at = excluded.deleted_at,
                        run = excluded.run,
                        origin = excluded.origin
                     WHERE entries.clear_roaming != excluded.clear_roaming
                        OR entries.origin != excluded.origin",
                )
                .map_err(sqlite_err(&path, "recording deletions"))?;
            let mut event = tx
                .prepare_cached(APPEND_EVENT)
                .map_err(sqlite_err(&path, "appending to the history"))?;
            let (action, origin) = (action.as_str(), origin.as_str());
            for item in batch {
                let d = item.deleted;
                let (from, kind, peer) = (
                    d.key.from.as_str(),
                    kind_code(d.key.peer.kind()),
                    d.key.peer.id(),
                );
                affected += upsert
                    .execute(params![
                        from,
                        kind,
                        peer,
                        d.clear_roaming,
                        d.deleted_at.as_second(),
                        run_row,
                        origin
                    ])
                    .map_err(sqlite_err(&path, "recording deletions"))?;
                event
                    .execute(params![
                        d.deleted_at.as_millisecond(),
                        action,
                        item.reason.as_str(),
                        from,
                        kind,
                        peer,
                        d.clear_roaming,
                        run_row,
                        item.trigger_text(),
                        item.latency_sql()
                    ])
                    .map_err(sqlite_err(&path, "appending to the history"))?;
            }
        }
        let state = if affected > 0 {
            Self::bump(&tx, &path, self.meta.state.lineage)?
        } else {
            self.meta.state
        };
        tx.commit()
            .map_err(sqlite_err(&path, "committing deletions"))?;
        self.run_row = Some((run.run_id, run_row));
        self.meta.state = state;
        Ok(Written { state, affected })
    }
}

impl LedgerWriter for SqliteLedgerWriter {
    fn begin_run(&mut self, run: &RunInfo) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sqlite_err(&path, "starting a write"))?;
        let row = Self::run_row(&tx, &path, self.run_row, run)?;
        tx.commit()
            .map_err(sqlite_err(&path, "recording the run"))?;
        self.run_row = Some((run.run_id, row));
        Ok(())
    }

    fn end_run(&mut self, run: &RunInfo) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "UPDATE runs SET ended_at = ?2, counts = ?3 WHERE run_id = ?1",
                params![
                    run.run_id.as_bytes().as_slice(),
                    run.ended_at.map(|t| t.as_millisecond()),
                    run.counts_json()
                ],
            )
            .map_err(sqlite_err(&self.path, "recording the run's end"))?;
        Ok(())
    }

    fn record_items(
        &mut self,
        run: &RunInfo,
        origin: Origin,
        batch: &[ToRecord<'_>],
    ) -> Result<Written, LedgerError> {
        self.record_with(run, origin, batch)
    }

    fn remove(
        &mut self,
        action: EventAction,
        reason: EventReason,
        batch: &[ConversationKey],
    ) -> Result<Written, LedgerError> {
        let unchanged = Written {
            state: self.meta.state,
            affected: 0,
        };
        if batch.is_empty() {
            return Ok(unchanged);
        }
        let Some((_, run_row)) = self.run_row else {
            return Err(LedgerError::NoRun {
                location: self.location(),
            });
        };
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sqlite_err(&path, "starting a write"))?;
        let now = jiff::Timestamp::now();
        let mut affected = 0;
        for key in batch {
            let removed: Option<bool> = tx
                .prepare_cached(
                    "DELETE FROM entries WHERE from_account = ?1 AND kind = ?2 AND peer = ?3
                     RETURNING clear_roaming",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(
                        params![key.from.as_str(), kind_code(key.peer.kind()), key.peer.id()],
                        |r| r.get(0),
                    )
                    .optional()
                })
                .map_err(sqlite_err(&path, "forgetting entries"))?;
            if let Some(clear_roaming) = removed {
                affected += 1;
                append_event(&tx, &path, now, action, reason, key, clear_roaming, run_row)?;
            }
        }
        if affected == 0 {
            // Nothing changed, so this was not a write: the serial stays.
            return Ok(unchanged);
        }
        let state = Self::bump(&tx, &path, self.meta.state.lineage)?;
        tx.commit()
            .map_err(sqlite_err(&path, "committing forgotten entries"))?;
        self.meta.state = state;
        Ok(Written { state, affected })
    }
}
