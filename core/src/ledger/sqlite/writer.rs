//! Writing an SQLite state: through the writer that holds its lock file, one transaction per
//! batch, each bumping the serial when an entry changed.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::lock::{
    StateLock, check_file, open_private, resolve_state_for_read, resolve_state_for_write,
};
use super::{
    APPLICATION_ID, Found, MIGRATIONS, SCHEMA_VERSION, SqliteError, inspect, open_sqlite,
    read_meta, read_snapshot, sqlite_err,
};
use crate::ids::ConversationKey;
use crate::ledger::history::{EventAction, EventReason};
use crate::ledger::{
    Ledger, LedgerError, LedgerWriter, Meta, Origin, RunInfo, Snapshot, StateRef, ToRecord,
    Written, kind_code,
};

/// A ledger opened for writing. It owns the state's exclusive lock for as long as it lives.
#[derive(Debug)]
pub struct SqliteLedgerWriter {
    pub(super) path: PathBuf,
    pub(super) conn: Connection,
    pub(super) meta: Meta,
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
                let sdkappid_sql = i64::try_from(sdkappid).map_err(|_| {
                    LedgerError::from(SqliteError::Corrupt {
                        path: path.to_owned(),
                        what: format!("SDKAppID {sdkappid} does not fit the state"),
                    })
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
                read_meta(&conn, path, SCHEMA_VERSION)?.ok_or_else(|| {
                    LedgerError::from(SqliteError::Corrupt {
                        path: path.to_owned(),
                        what: "the meta just written is missing".to_owned(),
                    })
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
            return Err(LedgerError::from(SqliteError::WrongLock {
                path: path.to_owned(),
                locked: lock.state().to_owned(),
            }));
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
            .prepare_cached("UPDATE meta SET serial = serial + 1 WHERE id = 1 RETURNING serial")
            .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
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

/// The row counts of the multi-row statements a batch is written with, largest first. A
/// statement of many rows costs SQLite far less per row than as many one-row statements (one
/// step, one reset and one opening of the table's and indexes' cursors for all of them, a
/// large share of a one-row statement's cost), and each size is prepared once per connection
/// and kept in its statement cache: at most [`ROWS_PER_STATEMENT`]'s length for the entries and
/// as many for the events (BENCHMARKS.md, "History").
const ROWS_PER_STATEMENT: [usize; 4] = [64, 16, 4, 1];

/// `batch` cut into chunks of the sizes of [`ROWS_PER_STATEMENT`], in order: as many of the
/// largest as fit, then of the next (1000 items: 15 of 64, 2 of 16, 2 of 4); each with the
/// index of its size in [`ROWS_PER_STATEMENT`].
fn multi_row_chunks<T>(batch: &[T]) -> impl Iterator<Item = (usize, &[T])> {
    let mut rest = batch;
    std::iter::from_fn(move || {
        let (i, size) = ROWS_PER_STATEMENT
            .into_iter()
            .enumerate()
            .find(|&(_, size)| size <= rest.len())?;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some((i, chunk))
    })
}

/// `INSERT INTO {table} ({columns}) VALUES` followed by `rows` rows, each of `per_row`
/// parameters numbered after the `shared` ones (`?1`…`?{shared}`, the same for every row),
/// then `row_tail`'s columns, which name the shared parameters; then `suffix`.
fn multi_row_sql(
    head: &str,
    rows: usize,
    shared: usize,
    per_row: usize,
    row_tail: &str,
    suffix: &str,
) -> String {
    use std::fmt::Write as _;
    let mut sql = String::from(head);
    for row in 0..rows {
        sql.push_str(if row == 0 { " (" } else { ", (" });
        for column in 0..per_row {
            let n = shared + row * per_row + column + 1;
            let _ = write!(sql, "{}?{n}", if column == 0 { "" } else { ", " });
        }
        sql.push_str(row_tail);
        sql.push(')');
    }
    sql.push_str(suffix);
    sql
}

/// The entries' upsert of `rows` rows: `?1` the run, `?2` the origin, then per row from,
/// kind, peer, clear_roaming, deleted_at. Inserted, or replaced when it says something else;
/// an entry recorded the same way stays as it was (its first deletion's time and run), so the
/// serial stays and no saved plan goes stale. SQLite counts as changed only the rows inserted
/// or replaced, not those whose update the WHERE refused.
fn upsert_entries_sql(rows: usize) -> String {
    multi_row_sql(
        "INSERT INTO entries (from_account, kind, peer, clear_roaming, deleted_at, run, origin)
         VALUES",
        rows,
        2,
        5,
        ", ?1, ?2",
        " ON CONFLICT (from_account, kind, peer) DO UPDATE SET
            clear_roaming = excluded.clear_roaming,
            deleted_at = excluded.deleted_at,
            run = excluded.run,
            origin = excluded.origin
         WHERE entries.clear_roaming != excluded.clear_roaming
            OR entries.origin != excluded.origin",
    )
}

/// The events' insert of `rows` rows: `?1` the run, `?2` the action, then per row at,
/// reason, from, kind, peer, clear_roaming, trigger, latency. The rows are appended in the
/// batch's order, which orders events of the same millisecond.
fn append_events_sql(rows: usize) -> String {
    multi_row_sql(
        "INSERT INTO events (at, reason, from_account, kind, peer, clear_roaming, trigger_json,
                             latency_ms, run, action)
         VALUES",
        rows,
        2,
        8,
        ", ?1, ?2",
        "",
    )
}

/// The statement texts of [`ROWS_PER_STATEMENT`]'s sizes, made once per process.
struct MultiRowSql {
    upsert_entries: [String; ROWS_PER_STATEMENT.len()],
    append_events: [String; ROWS_PER_STATEMENT.len()],
}

static MULTI_ROW_SQL: std::sync::LazyLock<MultiRowSql> = std::sync::LazyLock::new(|| MultiRowSql {
    upsert_entries: ROWS_PER_STATEMENT.map(upsert_entries_sql),
    append_events: ROWS_PER_STATEMENT.map(append_events_sql),
});

/// Upserts `chunk`'s entries in one statement, that of size `size` (an index into
/// [`ROWS_PER_STATEMENT`]); how many were inserted or replaced.
fn upsert_entries(
    tx: &rusqlite::Transaction<'_>,
    (size, chunk): (usize, &[ToRecord<'_>]),
    run_row: i64,
    origin: &str,
) -> rusqlite::Result<usize> {
    let mut stmt = tx.prepare_cached(&MULTI_ROW_SQL.upsert_entries[size])?;
    stmt.raw_bind_parameter(1, run_row)?;
    stmt.raw_bind_parameter(2, origin)?;
    let mut n = 3;
    for item in chunk {
        let d = item.deleted;
        stmt.raw_bind_parameter(n, d.key.from.as_str())?;
        stmt.raw_bind_parameter(n + 1, kind_code(d.key.peer.kind()))?;
        stmt.raw_bind_parameter(n + 2, d.key.peer.id())?;
        stmt.raw_bind_parameter(n + 3, d.clear_roaming)?;
        stmt.raw_bind_parameter(n + 4, d.deleted_at.as_second())?;
        n += 5;
    }
    stmt.raw_execute()
}

/// Appends `chunk`'s events in one statement, that of size `size` (an index into
/// [`ROWS_PER_STATEMENT`]).
fn append_events(
    tx: &rusqlite::Transaction<'_>,
    (size, chunk): (usize, &[ToRecord<'_>]),
    run_row: i64,
    action: &str,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(&MULTI_ROW_SQL.append_events[size])?;
    stmt.raw_bind_parameter(1, run_row)?;
    stmt.raw_bind_parameter(2, action)?;
    let mut n = 3;
    for item in chunk {
        let d = item.deleted;
        stmt.raw_bind_parameter(n, d.deleted_at.as_millisecond())?;
        stmt.raw_bind_parameter(n + 1, item.reason.as_str())?;
        stmt.raw_bind_parameter(n + 2, d.key.from.as_str())?;
        stmt.raw_bind_parameter(n + 3, kind_code(d.key.peer.kind()))?;
        stmt.raw_bind_parameter(n + 4, d.key.peer.id())?;
        stmt.raw_bind_parameter(n + 5, d.clear_roaming)?;
        stmt.raw_bind_parameter(n + 6, item.trigger_text())?;
        stmt.raw_bind_parameter(n + 7, item.latency_sql())?;
        n += 8;
    }
    stmt.raw_execute()?;
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
        let action = origin.event_action();
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sqlite_err(&path, "starting a write"))?;
        let run_row = Self::run_row(&tx, &path, self.run_row, run)?;
        let (origin, action) = (origin.as_str(), action.as_str());
        let mut affected = 0;
        // All the entries first, then all the events: each statement's rows go to the same
        // few B-tree pages, which stay in the page cache from one chunk to the next.
        for chunk in multi_row_chunks(batch) {
            affected += upsert_entries(&tx, chunk, run_row, origin)
                .map_err(sqlite_err(&path, "recording deletions"))?;
        }
        for chunk in multi_row_chunks(batch) {
            append_events(&tx, chunk, run_row, action)
                .map_err(sqlite_err(&path, "appending to the history"))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserId;
    use crate::ledger::history::HistoryQuery;
    use crate::ledger::{Deleted, SqliteLedger};

    #[test]
    fn a_batch_is_cut_into_the_fewest_statements_of_the_prepared_sizes() {
        let sizes = |n: usize| -> Vec<usize> {
            multi_row_chunks(&vec![(); n])
                .map(|(i, chunk)| {
                    assert_eq!(ROWS_PER_STATEMENT[i], chunk.len());
                    chunk.len()
                })
                .collect()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(3), [1, 1, 1]);
        assert_eq!(sizes(87), [64, 16, 4, 1, 1, 1]);
        let thousand = sizes(1000);
        assert_eq!(thousand.iter().sum::<usize>(), 1000);
        assert_eq!(thousand.len(), 15 + 2 + 2);
    }

    /// A batch across every statement size, naming one conversation in two chunks (first as
    /// kept, then with roaming cleared), another twice the same way, and one the state
    /// already records the same way: every item has its event in the batch's order, the
    /// entries hold the last record of each, and only the changed ones count as affected.
    #[test]
    fn multi_row_statements_write_what_one_row_statements_would() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let lock = StateLock::acquire(&path, "test", std::time::Duration::ZERO).unwrap();
        let mut w = SqliteLedgerWriter::create_or_open(&path, 1, lock).unwrap();
        let run = RunInfo::new("d");
        let at = |i: i64| jiff::Timestamp::from_millisecond(1_700_000_000_000 + i).unwrap();
        // Entries keep their time to the second.
        let second = |t: jiff::Timestamp| jiff::Timestamp::from_second(t.as_second()).unwrap();
        let item = |from: &str, clear_roaming: bool, i: i64| Deleted {
            key: ConversationKey::new(UserId::new(from).unwrap(), "user:p".parse().unwrap()),
            clear_roaming,
            deleted_at: at(i),
        };
        w.record_deleted(&run, &[item("known", false, 0)]).unwrap();
        let before = w.meta().unwrap().state.serial;
        let mut batch: Vec<Deleted> = (0..87)
            .map(|i| item(&format!("u{i:03}"), false, i))
            .collect();
        // Item 70 (in the chunk of 16) records item 3 (in the first chunk of 64) again,
        // clearing roaming; item 85 (a chunk of 1) records item 84 again the same way; item
        // 86 is the entry recorded before, the same way.
        batch[70] = item("u003", true, 70);
        batch[85] = item("u084", false, 85);
        batch[86] = item("known", false, 86);
        let written = w.record_deleted(&run, &batch).unwrap();
        // 84 new entries, one replaced; u084's second record and known's change nothing.
        assert_eq!(written.affected, 85);
        assert_eq!(written.state.serial, before + 1);
        drop(w);

        let r = SqliteLedger::open_read_only(&path).unwrap();
        let entries = r.entries().unwrap();
        assert_eq!(entries.len(), 1 + 84);
        let u003 = entries
            .iter()
            .find(|e| e.key.from.as_str() == "u003")
            .unwrap();
        assert!(u003.clear_roaming);
        assert_eq!(u003.deleted_at, second(at(70)));
        let known = entries
            .iter()
            .find(|e| e.key.from.as_str() == "known")
            .unwrap();
        assert_eq!(known.deleted_at, second(at(0)));

        let mut events = Vec::new();
        r.history(&HistoryQuery::default(), &mut |e| {
            events.push(e.clone());
            Ok(())
        })
        .unwrap();
        events.reverse();
        let seen: Vec<(String, bool, jiff::Timestamp)> = events
            .iter()
            .map(|e| (e.key.from.to_string(), e.clear_roaming, e.at))
            .collect();
        let mut expected = vec![("known".to_owned(), false, at(0))];
        expected.extend(
            batch
                .iter()
                .map(|d| (d.key.from.to_string(), d.clear_roaming, d.deleted_at)),
        );
        assert_eq!(seen, expected);
        assert!(
            events
                .iter()
                .all(|e| e.run_id == run.run_id && e.trigger.is_none())
        );
    }
}
