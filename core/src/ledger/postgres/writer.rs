//! Writing a PostgreSQL state: through the session that holds its advisory lock, one
//! transaction per batch, each bumping the serial.

use std::collections::HashMap;

use super::{
    PgError, PgLocation, PgLockHolder, SCHEMA_VERSION, Session, connect, kind_code, lock,
    lock_client, migrate, off_runtime, query_err, read_snapshot, read_state_rows, schema_version,
    sdkappid_sql, shown,
};
use crate::ids::ConversationKey;
use crate::ledger::{
    Deleted, Ledger, LedgerError, LedgerWriter, Meta, Origin, RunInfo, Snapshot, StateEntry,
    StateRef, Written,
};

/// A PostgreSQL state opened for writing, through the session that holds its advisory lock.
/// Dropping it ends the session, and the lock with it.
#[derive(Debug)]
pub struct PgLedgerWriter {
    location: PgLocation,
    name: String,
    session: Session,
    state: i64,
    meta: Meta,
    /// The `runs` row of the last run recorded, so each batch need not look it up.
    run_row: Option<(uuid::Uuid, i64)>,
    /// The batch statements, prepared on this session at their first use: a batch is then one
    /// round trip (bind and execute), not a parse and a describe as well.
    statements: Statements,
    /// Whether a batch has named an entry already in the state. Until one does, batches are
    /// plain inserts; from then on, upserts (see [`Self::record_blocking`]).
    upserting: bool,
    holder: PgLockHolder,
}

/// The session's prepared batch statements, each `None` until first used.
#[derive(Debug, Default)]
struct Statements {
    insert: Option<postgres::Statement>,
    upsert: Option<postgres::Statement>,
    forget: Option<postgres::Statement>,
}

/// The prepared statement in `slot`, prepared from `sql()` on `session` at its first use (the
/// text is only made then).
fn prepared<'s>(
    slot: &'s mut Option<postgres::Statement>,
    session: &mut postgres::Client,
    sql: impl FnOnce() -> String,
) -> Result<&'s postgres::Statement, postgres::Error> {
    match slot {
        Some(statement) => Ok(statement),
        None => Ok(slot.insert(session.prepare(&sql())?)),
    }
}

impl PgLedgerWriter {
    /// Takes the lock of the state `name` of `sdkappid` for `operation` (waiting up to
    /// `lock_timeout`), migrates the schema, and opens the state, creating it (a fresh lineage
    /// at serial 1) when there is none (apply, the destination of `state migrate`). A refusal
    /// writes nothing.
    pub fn create_or_open(
        location: &PgLocation,
        name: &str,
        sdkappid: u64,
        operation: &str,
        lock_timeout: std::time::Duration,
    ) -> Result<Self, PgError> {
        let (session, holder) =
            Self::connect_locked(location, name, sdkappid, operation, lock_timeout)?;
        Self::migrate_and_open(location, name, sdkappid, session, holder)
    }

    /// Takes the lock like [`create_or_open`](Self::create_or_open), then opens the state only
    /// when it exists: `None` (the lock released, nothing written, not even the schema) when
    /// there is none (`state rm`, the source of `state migrate`).
    pub fn open_existing(
        location: &PgLocation,
        name: &str,
        sdkappid: u64,
        operation: &str,
        lock_timeout: std::time::Duration,
    ) -> Result<Option<Self>, PgError> {
        let (mut session, holder) =
            Self::connect_locked(location, name, sdkappid, operation, lock_timeout)?;
        let version = schema_version(&mut session, location)?;
        if version == 0
            || read_state_rows(&mut session, location, name, Some(sdkappid), version)?.is_empty()
        {
            return Ok(None);
        }
        Self::migrate_and_open(location, name, sdkappid, session, holder).map(Some)
    }

    /// Connects and takes the lock of the state `name` of `sdkappid` for `operation`, waiting up
    /// to `lock_timeout`. The session holds the lock until it ends.
    fn connect_locked(
        location: &PgLocation,
        name: &str,
        sdkappid: u64,
        operation: &str,
        lock_timeout: std::time::Duration,
    ) -> Result<(postgres::Client, PgLockHolder), PgError> {
        // An SDKAppID PostgreSQL cannot hold is refused before connecting.
        sdkappid_sql(sdkappid)?;
        let mut session = connect(location)?;
        let holder = lock::acquire(
            &mut session,
            location,
            name,
            sdkappid,
            operation,
            lock_timeout,
        )?;
        Ok((session, holder))
    }

    /// Under the lock `holder` took in `session`: migrates the schema, records the holder, and
    /// opens the state, creating it when there is none.
    fn migrate_and_open(
        location: &PgLocation,
        name: &str,
        sdkappid: u64,
        mut session: postgres::Client,
        holder: PgLockHolder,
    ) -> Result<Self, PgError> {
        let app = sdkappid_sql(sdkappid)?;
        migrate(&mut session, location)?;
        lock::write_holder(&mut session, location, name, sdkappid, &holder)?;
        let mut rows =
            read_state_rows(&mut session, location, name, Some(sdkappid), SCHEMA_VERSION)?;
        let (state, meta) = match rows.pop() {
            Some(row) => row,
            None => {
                session
                    .execute(
                        "INSERT INTO timctl.states
                           (sdkappid, name, lineage, serial, created_at, created_by)
                         VALUES ($1, $2, $3, 1, $4, $5)",
                        &[
                            &app,
                            &name,
                            &uuid::Uuid::new_v4(),
                            &jiff::Timestamp::now().as_second(),
                            &env!("CARGO_PKG_VERSION"),
                        ],
                    )
                    .map_err(query_err(location, "creating the state"))?;
                read_state_rows(&mut session, location, name, Some(sdkappid), SCHEMA_VERSION)?
                    .pop()
                    .ok_or_else(|| PgError::Corrupt {
                        state: location.to_string(),
                        what: "the state just created is missing".to_owned(),
                    })?
            }
        };
        Ok(Self {
            location: location.clone(),
            name: name.to_owned(),
            session: Session::new(session),
            state,
            meta,
            run_row: None,
            statements: Statements::default(),
            upserting: false,
            holder,
        })
    }

    /// Who holds the lock: this process.
    pub fn holder(&self) -> &PgLockHolder {
        &self.holder
    }

    /// Writes a whole state copied from another ledger (`state migrate`): its lineage, serial,
    /// runs and entries, in one transaction. Only into a state created by this writer and
    /// still empty.
    pub fn import(
        &mut self,
        meta: &Meta,
        runs: &[RunInfo],
        entries: &[StateEntry],
    ) -> Result<(), PgError> {
        let location = &self.location;
        let doing = "copying the state";
        let mut session = lock_client(&self.session);
        let mut tx = session.transaction().map_err(query_err(location, doing))?;
        tx.execute(
            "UPDATE timctl.states SET lineage = $2, serial = $3, created_at = $4, created_by = $5
             WHERE id = $1",
            &[
                &self.state,
                &meta.state.lineage,
                &(meta.state.serial as i64),
                &meta.created_at.as_second(),
                &meta.created_by,
            ],
        )
        .map_err(query_err(location, doing))?;
        let mut run_rows = HashMap::new();
        for run in runs {
            let id: i64 = tx
                .query_one(
                    "INSERT INTO timctl.runs (state, run_id, timctl_version, manifest_digest, started_at)
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    &[
                        &self.state,
                        &run.run_id,
                        &run.timctl_version,
                        &run.manifest_digest,
                        &run.started_at.as_second(),
                    ],
                )
                .map_err(query_err(location, doing))?
                .get(0);
            run_rows.insert(run.run_id, id);
        }
        for chunk in entries.chunks(10_000) {
            let mut cols = Columns::default();
            for e in chunk {
                let run = *run_rows.get(&e.run_id).ok_or_else(|| PgError::Corrupt {
                    state: location.to_string(),
                    what: format!("the entry {} names no known run", e.key),
                })?;
                cols.push(&e.key, e.clear_roaming, e.deleted_at, run, e.origin);
            }
            cols.upsert(&mut tx, self.state)
                .map_err(query_err(location, doing))?;
        }
        tx.commit().map_err(query_err(location, doing))?;
        self.meta.state = meta.state;
        self.meta.created_at = meta.created_at;
        self.meta.created_by.clone_from(&meta.created_by);
        Ok(())
    }

    /// The `runs` row of `run`, inserted when it is not there yet.
    fn run_row(
        client: &mut impl postgres::GenericClient,
        location: &PgLocation,
        state: i64,
        run: &RunInfo,
    ) -> Result<i64, PgError> {
        Ok(client
            .query_one(
                "WITH new AS (
                    INSERT INTO timctl.runs (state, run_id, timctl_version, manifest_digest, started_at)
                    VALUES ($1, $2, $3, $4, $5) ON CONFLICT (state, run_id) DO NOTHING RETURNING id)
                 SELECT id FROM new UNION ALL
                 SELECT id FROM timctl.runs WHERE state = $1 AND run_id = $2",
                &[
                    &state,
                    &run.run_id,
                    &run.timctl_version,
                    &run.manifest_digest,
                    &run.started_at.as_second(),
                ],
            )
            .map_err(query_err(location, "recording the run"))?
            .get(0))
    }
}

/// A batch of entries inserted into `timctl.entries`, from `unnest` of one array per column.
const INSERT_ENTRIES: &str = "INSERT INTO timctl.entries
        (state, from_account, kind, peer, clear_roaming, deleted_at, run, origin)
     SELECT $1, * FROM unnest($2::text[], $3::smallint[], $4::text[], $5::boolean[],
                              $6::bigint[], $7::bigint[], $8::text[])";

/// Inserted, or replacing the earlier record of the same conversation: the last one wins.
const UPSERT_ENTRIES: &str = "INSERT INTO timctl.entries
        (state, from_account, kind, peer, clear_roaming, deleted_at, run, origin)
     SELECT $1, * FROM unnest($2::text[], $3::smallint[], $4::text[], $5::boolean[],
                              $6::bigint[], $7::bigint[], $8::text[])
     ON CONFLICT (state, from_account, kind, peer) DO UPDATE SET
        clear_roaming = excluded.clear_roaming,
        deleted_at = excluded.deleted_at,
        run = excluded.run,
        origin = excluded.origin";

/// One batch of records as one statement, so one transaction and one round trip: `write` (an
/// insert or an upsert), and the serial bump it causes. A data-modifying `WITH` always runs to
/// completion, whether or not the outer statement reads it.
fn record_sql(write: &str) -> String {
    format!(
        "WITH written AS ({write} RETURNING 1)
         UPDATE timctl.states SET serial = serial + 1 WHERE id = $1 RETURNING serial"
    )
}

/// One batch of forgets as one statement: the deletion, and a serial bump only when it removed
/// something (a write that changes nothing keeps the serial). Returns the rows removed and the
/// new serial (NULL when nothing was removed).
const FORGET: &str = "WITH gone AS (
        DELETE FROM timctl.entries e
        USING unnest($2::text[], $3::smallint[], $4::text[]) AS f(from_account, kind, peer)
        WHERE e.state = $1 AND e.from_account = f.from_account AND e.kind = f.kind
          AND e.peer = f.peer
        RETURNING 1),
     bumped AS (
        UPDATE timctl.states SET serial = serial + 1
        WHERE id = $1 AND EXISTS (SELECT 1 FROM gone)
        RETURNING serial)
     SELECT (SELECT count(*) FROM gone), (SELECT serial FROM bumped)";

/// A batch of entries as columns, for one `INSERT … SELECT FROM unnest(…)`: one statement per
/// batch, not one per entry.
#[derive(Default)]
struct Columns<'a> {
    from: Vec<&'a str>,
    kind: Vec<i16>,
    peer: Vec<&'a str>,
    clear_roaming: Vec<bool>,
    deleted_at: Vec<i64>,
    run: Vec<i64>,
    origin: Vec<&'static str>,
}

impl<'a> Columns<'a> {
    fn push(
        &mut self,
        key: &'a ConversationKey,
        clear_roaming: bool,
        at: jiff::Timestamp,
        run: i64,
        origin: Origin,
    ) {
        self.from.push(key.from.as_str());
        self.kind.push(kind_code(key.peer.kind()));
        self.peer.push(key.peer.id());
        self.clear_roaming.push(clear_roaming);
        self.deleted_at.push(at.as_second());
        self.run.push(run);
        self.origin.push(origin.as_str());
    }

    /// Inserts, or replaces the earlier record of the same conversation: the last deletion
    /// wins. The batch must not name one conversation twice.
    fn upsert(
        &self,
        tx: &mut postgres::Transaction<'_>,
        state: i64,
    ) -> Result<u64, postgres::Error> {
        tx.execute(UPSERT_ENTRIES, &self.params(&state))
    }

    /// The statement parameters: the state, then one array per column.
    fn params<'p>(&'p self, state: &'p i64) -> [&'p (dyn postgres::types::ToSql + Sync); 8] {
        [
            state,
            &self.from,
            &self.kind,
            &self.peer,
            &self.clear_roaming,
            &self.deleted_at,
            &self.run,
            &self.origin,
        ]
    }
}

impl PgLedgerWriter {
    fn location_shown(&self) -> String {
        shown(&self.location, &self.name)
    }

    fn snapshot_blocking(&self) -> Result<Option<Snapshot>, LedgerError> {
        let doing = "reading the state";
        let mut session = lock_client(&self.session);
        let mut tx = session
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(query_err(&self.location, doing))?;
        let meta = read_state_rows(
            &mut tx,
            &self.location,
            &self.name,
            Some(self.meta.sdkappid),
            self.meta.schema_version,
        )?
        .pop()
        .map(|(_, meta)| meta)
        .ok_or_else(|| PgError::Corrupt {
            state: self.location.to_string(),
            what: "the state being written has vanished".to_owned(),
        })?;
        let snapshot = read_snapshot(&mut tx, &self.location, self.state, meta)?;
        tx.commit().map_err(query_err(&self.location, doing))?;
        Ok(Some(snapshot))
    }
}

impl PgLedgerWriter {
    /// The `runs` row of `run`: the one this writer last used, or one inserted (or found) now,
    /// in a statement of its own. A run row without entries is harmless, and apply writes it
    /// before its first call anyway.
    fn ensure_run_row(&mut self, run: &RunInfo) -> Result<i64, LedgerError> {
        if let Some((id, row)) = self.run_row
            && id == run.run_id
        {
            return Ok(row);
        }
        let session = self.session.get_mut();
        let row = Self::run_row(session, &self.location, self.state, run)?;
        self.run_row = Some((run.run_id, row));
        Ok(row)
    }

    fn begin_run_blocking(&mut self, run: &RunInfo) -> Result<(), LedgerError> {
        self.ensure_run_row(run).map(drop)
    }

    fn record_blocking(
        &mut self,
        run: &RunInfo,
        batch: &[Deleted],
        origin: Origin,
    ) -> Result<Written, LedgerError> {
        if batch.is_empty() {
            return Ok(Written {
                state: self.meta.state,
                affected: 0,
            });
        }
        let run_row = self.ensure_run_row(run)?;
        // One statement cannot update a row twice; should a batch name one conversation twice,
        // its last deletion wins, as it would in two batches.
        let mut seen = std::collections::HashSet::with_capacity(batch.len());
        let mut cols = Columns::default();
        for d in batch.iter().rev() {
            if seen.insert(&d.key) {
                cols.push(&d.key, d.clear_roaming, d.deleted_at, run_row, origin);
            }
        }
        let location = &self.location;
        let doing = "recording deletions";
        let session = self.session.get_mut();
        let params = cols.params(&self.state);
        // A plain insert costs the server about two thirds of what an upsert does (no
        // conflict check before each row, no confirmation after it), and most batches are new
        // deletions. So a batch is inserted first; should one name an entry the state already
        // holds (a re-asserted, returned or clear-roaming deletion), the statement fails whole,
        // with nothing written, and is made again as an upsert, as is every later batch of
        // this writer.
        let mut inserted = None;
        if !self.upserting {
            let insert = prepared(&mut self.statements.insert, session, || {
                record_sql(INSERT_ENTRIES)
            })
            .map_err(query_err(location, doing))?;
            match session.query_one(insert, &params) {
                Ok(row) => inserted = Some(row),
                Err(e) if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) => {
                    self.upserting = true;
                }
                Err(e) => return Err(query_err(location, doing)(e).into()),
            }
        }
        let row = match inserted {
            Some(row) => row,
            None => {
                let upsert = prepared(&mut self.statements.upsert, session, || {
                    record_sql(UPSERT_ENTRIES)
                })
                .map_err(query_err(location, doing))?;
                session
                    .query_one(upsert, &params)
                    .map_err(query_err(location, doing))?
            }
        };
        let serial: i64 = row.get(0);
        let state = StateRef {
            lineage: self.meta.state.lineage,
            serial: serial as u64,
        };
        self.meta.state = state;
        Ok(Written {
            state,
            affected: batch.len(),
        })
    }

    fn forget_blocking(&mut self, batch: &[ConversationKey]) -> Result<Written, LedgerError> {
        if batch.is_empty() {
            return Ok(Written {
                state: self.meta.state,
                affected: 0,
            });
        }
        let location = &self.location;
        let doing = "forgetting entries";
        let from: Vec<&str> = batch.iter().map(|k| k.from.as_str()).collect();
        let kind: Vec<i16> = batch.iter().map(|k| kind_code(k.peer.kind())).collect();
        let peer: Vec<&str> = batch.iter().map(|k| k.peer.id()).collect();
        let session = self.session.get_mut();
        let statement = prepared(&mut self.statements.forget, session, || FORGET.to_owned())
            .map_err(query_err(location, doing))?;
        let row = session
            .query_one(statement, &[&self.state, &from, &kind, &peer])
            .map_err(query_err(location, doing))?;
        let (affected, serial): (i64, Option<i64>) = (row.get(0), row.get(1));
        // Nothing removed was not a write: the serial stays.
        if let Some(serial) = serial {
            self.meta.state = StateRef {
                lineage: self.meta.state.lineage,
                serial: serial as u64,
            };
        }
        Ok(Written {
            state: self.meta.state,
            affected: affected as usize,
        })
    }
}

// The synchronous driver blocks on a runtime of its own, which tokio forbids on a thread that
// drives async tasks (apply records from inside its runtime): `off_runtime` moves each call to
// a thread of its own there, and runs it in place everywhere else.
impl Ledger for PgLedgerWriter {
    fn location(&self) -> String {
        self.location_shown()
    }

    fn meta(&self) -> Option<&Meta> {
        Some(&self.meta)
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, LedgerError> {
        off_runtime(|| self.snapshot_blocking())
    }
}

impl LedgerWriter for PgLedgerWriter {
    fn begin_run(&mut self, run: &RunInfo) -> Result<(), LedgerError> {
        off_runtime(|| self.begin_run_blocking(run))
    }

    fn record_deleted(&mut self, run: &RunInfo, batch: &[Deleted]) -> Result<Written, LedgerError> {
        off_runtime(|| self.record_blocking(run, batch, Origin::Deleted))
    }

    fn record_absent(&mut self, run: &RunInfo, batch: &[Deleted]) -> Result<Written, LedgerError> {
        off_runtime(|| self.record_blocking(run, batch, Origin::Absent))
    }

    fn forget(&mut self, batch: &[ConversationKey]) -> Result<Written, LedgerError> {
        off_runtime(|| self.forget_blocking(batch))
    }
}

impl Drop for PgLedgerWriter {
    fn drop(&mut self) {
        // Clear the holder row so nobody reads a stale name; ending the session releases the
        // lock anyway, and a lost session has nothing left to clear.
        let (name, sdkappid) = (self.name.clone(), self.meta.sdkappid);
        let session = self.session.get_mut();
        off_runtime(|| lock::release(session, &name, sdkappid));
    }
}
