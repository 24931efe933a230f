//! Writing a whole state copied from another ledger (`timctl state migrate`).

use std::collections::HashMap;

use rusqlite::params;

use super::{SqliteLedgerWriter, kind_code, sqlite_err};
use crate::ledger::{LedgerError, Meta, RunInfo, StateEntry};

impl SqliteLedgerWriter {
    /// Writes `meta`'s lineage and serial, `runs` and `entries` into this state, which this
    /// writer created and nobody has written yet, in one transaction.
    pub fn import(
        &mut self,
        meta: &Meta,
        runs: &[RunInfo],
        entries: &[StateEntry],
    ) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let doing = "copying the state";
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sqlite_err(&path, doing))?;
        tx.execute(
            "UPDATE meta SET lineage = ?1, serial = ?2, created_at = ?3, created_by = ?4 WHERE id = 1",
            params![
                meta.state.lineage.to_string(),
                meta.state.serial as i64,
                meta.created_at.as_second(),
                meta.created_by
            ],
        )
        .map_err(sqlite_err(&path, doing))?;
        let mut rows = HashMap::new();
        for run in runs {
            tx.execute(
                "INSERT INTO runs (run_id, timctl_version, manifest_digest, started_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    run.run_id.as_bytes().as_slice(),
                    run.timctl_version,
                    run.manifest_digest,
                    run.started_at.as_second()
                ],
            )
            .map_err(sqlite_err(&path, doing))?;
            rows.insert(run.run_id, tx.last_insert_rowid());
        }
        {
            let mut stmt = tx
                .prepare(
                    "INSERT INTO entries
                       (from_account, kind, peer, clear_roaming, deleted_at, run, origin)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sqlite_err(&path, doing))?;
            for e in entries {
                let run = rows.get(&e.run_id).ok_or_else(|| LedgerError::Corrupt {
                    path: path.clone(),
                    what: format!("the entry {} names no known run", e.key),
                })?;
                stmt.execute(params![
                    e.key.from.as_str(),
                    kind_code(e.key.peer.kind()),
                    e.key.peer.id(),
                    e.clear_roaming,
                    e.deleted_at.as_second(),
                    run,
                    e.origin.as_str()
                ])
                .map_err(sqlite_err(&path, doing))?;
            }
        }
        tx.commit().map_err(sqlite_err(&path, doing))?;
        self.meta.state = meta.state;
        self.meta.created_at = meta.created_at;
        self.meta.created_by.clone_from(&meta.created_by);
        Ok(())
    }
}
