//! Copying a whole state in and out of SQLite (`timctl state migrate`).
//!
//! A copy into SQLite is all or nothing: it is written into a file beside the destination
//! (`<state>.migrating`), synced, and renamed over the destination only when complete, so a
//! migrate killed at any moment leaves either no state there or the whole copy. A leftover
//! file of a killed migrate is removed by the next one, under the destination's lock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{OpenFlags, params};

use super::{
    APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, SqliteError, SqliteLedgerWriter, insert_run,
    kind_code, open_private, open_sqlite, sqlite_err,
};
use crate::ledger::history::Event;
use crate::ledger::migrate::EventSource;
use crate::ledger::{LedgerError, RunInfo, Snapshot, StateLock};

/// The file a copy is written into before it is renamed to `resolved`.
fn staging_path(resolved: &Path) -> PathBuf {
    let mut name = resolved.file_name().unwrap_or_default().to_owned();
    name.push(".migrating");
    resolved.with_file_name(name)
}

/// Writes `snapshot`, the events `events` streams (oldest first) and `run` (ended, with its
/// counts) as a new state file at the state `lock` is for, all or nothing (see the module's
/// documentation). The caller has checked that no state is there. Returns the events copied.
pub(crate) fn write_new(
    lock: &StateLock,
    path: &Path,
    snapshot: &Snapshot,
    events: EventSource<'_>,
    run: &mut RunInfo,
) -> Result<u64, LedgerError> {
    let doing = "copying the state";
    let resolved = lock.state().to_owned();
    let staging = staging_path(&resolved);
    let io = |doing: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| LedgerError::Io {
            doing,
            path,
            source,
        }
    };
    match std::fs::remove_file(&staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io("remove the copy a killed migrate left", &staging)(e));
        }
        _ => {}
    }
    open_private(&staging).map_err(io("create", &staging))?;
    let mut conn = open_sqlite(&staging, path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    // The staging file is thrown away whole if anything fails: it needs no journal.
    conn.pragma_update(None, "journal_mode", "OFF")
        .map_err(sqlite_err(path, doing))?;
    let tx = conn.transaction().map_err(sqlite_err(path, doing))?;
    for migration in MIGRATIONS {
        tx.execute_batch(migration)
            .map_err(sqlite_err(path, doing))?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(sqlite_err(path, doing))?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sqlite_err(path, doing))?;
    let meta = &snapshot.meta;
    let sdkappid = i64::try_from(meta.sdkappid).map_err(|_| {
        LedgerError::from(SqliteError::Corrupt {
            path: path.to_owned(),
            what: format!("SDKAppID {} does not fit the state", meta.sdkappid),
        })
    })?;
    tx.execute(
        "INSERT INTO meta (id, lineage, serial, sdkappid, created_at, created_by)
         VALUES (1, ?1, ?2, ?3, ?4, ?5)",
        params![
            meta.state.lineage.to_string(),
            meta.state.serial as i64,
            sdkappid,
            meta.created_at.as_second(),
            meta.created_by
        ],
    )
    .map_err(sqlite_err(path, doing))?;
    let mut rows = HashMap::new();
    for r in &snapshot.runs {
        rows.insert(r.run_id, insert_run(&tx, path, r, "INSERT")?);
    }
    let unknown_run = |what: String| {
        LedgerError::from(SqliteError::Corrupt {
            path: path.to_owned(),
            what,
        })
    };
    {
        let mut stmt = tx
            .prepare(
                "INSERT INTO entries
                   (from_account, kind, peer, clear_roaming, deleted_at, run, origin)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(sqlite_err(path, doing))?;
        for e in &snapshot.entries {
            let run = rows
                .get(&e.run_id)
                .ok_or_else(|| unknown_run(format!("the entry {} names no known run", e.key)))?;
            stmt.execute(params![
                e.key.from.as_str(),
                kind_code(e.key.peer.kind()),
                e.key.peer.id(),
                e.clear_roaming,
                e.deleted_at.as_second(),
                run,
                e.origin.as_str()
            ])
            .map_err(sqlite_err(path, doing))?;
        }
    }
    let mut copied = 0_u64;
    {
        let mut stmt = tx
            .prepare(
                "INSERT INTO events (at, action, reason, from_account, kind, peer, clear_roaming,
                                     run, trigger_json, latency_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .map_err(sqlite_err(path, doing))?;
        events(&mut |e: &Event| {
            let run = rows
                .get(&e.run_id)
                .ok_or_else(|| unknown_run(format!("an event of {} names no known run", e.key)))?;
            stmt.execute(params![
                e.at.as_millisecond(),
                e.action.as_str(),
                e.reason.as_str(),
                e.key.from.as_str(),
                kind_code(e.key.peer.kind()),
                e.key.peer.id(),
                e.clear_roaming,
                run,
                e.trigger.as_ref().map(|t| t.to_string()),
                e.latency_ms.map(|l| l as i64)
            ])
            .map_err(sqlite_err(path, doing))?;
            copied += 1;
            Ok(())
        })?;
    }
    run.end([
        ("entries", snapshot.entries.len() as u64),
        ("runs", snapshot.runs.len() as u64),
        ("events", copied),
    ]);
    insert_run(&tx, path, run, "INSERT")?;
    tx.commit().map_err(sqlite_err(path, doing))?;
    conn.close()
        .map_err(|(_, e)| sqlite_err(path, "closing the copy")(e))?;
    std::fs::File::open(&staging)
        .and_then(|f| f.sync_all())
        .map_err(io("sync", &staging))?;
    std::fs::rename(&staging, &resolved).map_err(io("rename the copy to", &resolved))?;
    if let Some(dir) = resolved.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", dir))?;
    }
    Ok(copied)
}

impl SqliteLedgerWriter {
    /// Streams every event of this state, oldest first, to `each` (`state migrate`), in one
    /// read transaction.
    pub(crate) fn events_oldest_first(
        &self,
        each: &mut dyn FnMut(&Event) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let doing = "reading the history";
        let path = &self.path;
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(sqlite_err(path, doing))?;
        let mut stmt = tx
            .prepare(
                "SELECT e.id, e.at, e.action, e.reason, e.from_account, e.kind, e.peer,
                        e.clear_roaming, r.run_id, e.trigger_json, e.latency_ms
                 FROM events e JOIN runs r ON r.id = e.run ORDER BY e.id",
            )
            .map_err(sqlite_err(path, doing))?;
        let mut rows = stmt.query([]).map_err(sqlite_err(path, doing))?;
        while let Some(r) = rows.next().map_err(sqlite_err(path, doing))? {
            let (_, event) = super::history::event_from_row(r, path)?;
            each(&event)?;
        }
        Ok(())
    }
}
