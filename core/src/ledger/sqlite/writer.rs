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
        let action = origin.event_action();
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
