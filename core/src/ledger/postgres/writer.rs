//! Writing a PostgreSQL state: through the session that holds its advisory lock, one
//! transaction per batch, each bumping the serial.

use std::collections::HashMap;

use super::history::{EVENT_COLUMNS, event_from_row};
use super::{
    PgError, PgLocation, PgLockHolder, SCHEMA_VERSION, Session, connect, kind_code, lock,
    lock_client, migrate, off_runtime, query_err, read_snapshot, read_state_rows, schema_version,
    sdkappid_sql, shown,
};
use crate::ids::ConversationKey;
use crate::ledger::history::{Event, EventAction, EventReason};
use crate::ledger::migrate::EventSource;
use crate::ledger::{
    Ledger, LedgerError, LedgerWriter, Meta, Origin, RunInfo, Snapshot, StateRef, ToRecord, Written,
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

    /// Takes the lock of the state `name` of `sdkappid` for `operation` and writes into it, as
    /// one transaction, a whole state copied from another ledger (`state migrate`):
    /// `snapshot`'s lineage, serial, runs and entries, the events `events` streams (oldest
    /// first), and `run` (ended, with its counts). A migrate killed at any moment leaves
    /// nothing (the schema aside). `None`, with nothing written, when the database already
    /// holds that state; else the events copied.
    #[expect(
        clippy::too_many_arguments,
        reason = "the lock's four and the copy's three; a struct would only rename them"
    )]
    pub(crate) fn import_new(
        location: &PgLocation,
        name: &str,
        sdkappid: u64,
        operation: &str,
        lock_timeout: std::time::Duration,
        snapshot: &Snapshot,
        events: EventSource<'_>,
        run: &mut RunInfo,
    ) -> Result<Option<u64>, LedgerError> {
        let (mut session, holder) =
            Self::connect_locked(location, name, sdkappid, operation, lock_timeout)?;
        migrate(&mut session, location)?;
        lock::write_holder(&mut session, location, name, sdkappid, &holder)?;
        let copied = Self::import_locked(&mut session, location, name, snapshot, events, run);
        lock::release(&mut session, name, sdkappid);
        copied
    }

    fn import_locked(
        session: &mut postgres::Client,
        location: &PgLocation,
        name: &str,
        snapshot: &Snapshot,
        events: EventSource<'_>,
        run: &mut RunInfo,
    ) -> Result<Option<u64>, LedgerError> {
        let meta = &snapshot.meta;
        let doing = "copying the state";
        if !read_state_rows(session, location, name, Some(meta.sdkappid), SCHEMA_VERSION)?
            .is_empty()
        {
            return Ok(None);
        }
        let mut tx = session.transaction().map_err(query_err(location, doing))?;
        let state: i64 = tx
            .query_one(
                "INSERT INTO timctl.states (sdkappid, name, lineage, serial, created_at, created_by)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[
                    &sdkappid_sql(meta.sdkappid)?,
                    &name,
                    &meta.state.lineage,
                    &(meta.state.serial as i64),
                    &meta.created_at.as_second(),
                    &meta.created_by,
                ],
            )
            .map_err(query_err(location, doing))?
            .get(0);
        let mut run_rows = HashMap::new();
        for r in &snapshot.runs {
            run_rows.insert(r.run_id, insert_run(&mut tx, location, state, r)?);
        }
        let unknown_run = |what: String| PgError::Corrupt {
            state: location.to_string(),
            what,
        };
        for chunk in snapshot.entries.chunks(10_000) {
            let mut cols = ImportedEntries::default();
            for e in chunk {
                let run = *run_rows.get(&e.run_id).ok_or_else(|| {
                    unknown_run(format!("the entry {} names no known run", e.key))
                })?;
                cols.from.push(e.key.from.as_str());
                cols.kind.push(kind_code(e.key.peer.kind()));
                cols.peer.push(e.key.peer.id());
                cols.clear_roaming.push(e.clear_roaming);
                cols.deleted_at.push(e.deleted_at.as_second());
                cols.run.push(run);
                cols.origin.push(e.origin.as_str());
            }
            tx.execute(
                "INSERT INTO timctl.entries
                   (state, from_account, kind, peer, clear_roaming, deleted_at, run, origin)
                 SELECT $1, * FROM unnest($2::text[], $3::smallint[], $4::text[],
                                          $5::boolean[], $6::bigint[], $7::bigint[], $8::text[])",
                &[
                    &state,
                    &cols.from,
                    &cols.kind,
                    &cols.peer,
                    &cols.clear_roaming,
                    &cols.deleted_at,
                    &cols.run,
                    &cols.origin,
                ],
            )
            .map_err(query_err(location, doing))?;
        }
        let mut copied = 0_u64;
        let mut pending: Vec<(Event, i64)> = Vec::new();
        let flush = |tx: &mut postgres::Transaction<'_>,
                     pending: &mut Vec<(Event, i64)>|
         -> Result<(), LedgerError> {
            if pending.is_empty() {
                return Ok(());
            }
            let at: Vec<i64> = pending.iter().map(|(e, _)| e.at.as_millisecond()).collect();
            let action: Vec<&str> = pending.iter().map(|(e, _)| e.action.as_str()).collect();
            let reason: Vec<&str> = pending.iter().map(|(e, _)| e.reason.as_str()).collect();
            let from: Vec<&str> = pending.iter().map(|(e, _)| e.key.from.as_str()).collect();
            let kind: Vec<i16> = pending
                .iter()
                .map(|(e, _)| kind_code(e.key.peer.kind()))
                .collect();
            let peer: Vec<&str> = pending.iter().map(|(e, _)| e.key.peer.id()).collect();
            let clear: Vec<bool> = pending.iter().map(|(e, _)| e.clear_roaming).collect();
            let run: Vec<i64> = pending.iter().map(|(_, r)| *r).collect();
            let trigger: Vec<Option<String>> = pending
                .iter()
                .map(|(e, _)| e.trigger.as_ref().map(|t| t.to_string()))
                .collect();
            let latency: Vec<Option<i64>> = pending
                .iter()
                .map(|(e, _)| e.latency_ms.map(|l| l as i64))
                .collect();
            // `WITH ORDINALITY` keeps the source's order in the new IDs.
            tx.execute(
                "INSERT INTO timctl.events (state, at, action, reason, from_account, kind, peer,
                                            clear_roaming, run, trigger_json, latency_ms)
                 SELECT $1, at, action, reason, from_account, kind, peer, clear_roaming, run,
                        trigger_json::jsonb, latency_ms
                 FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::smallint[],
                             $7::text[], $8::boolean[], $9::bigint[], $10::text[], $11::bigint[])
                      WITH ORDINALITY
                      AS i(at, action, reason, from_account, kind, peer, clear_roaming, run,
                           trigger_json, latency_ms, n)
                 ORDER BY n",
                &[
                    &state, &at, &action, &reason, &from, &kind, &peer, &clear, &run, &trigger,
                    &latency,
                ],
            )
            .map_err(query_err(location, doing))?;
            pending.clear();
            Ok(())
        };
        events(&mut |e: &Event| {
            let run = *run_rows
                .get(&e.run_id)
                .ok_or_else(|| unknown_run(format!("an event of {} names no known run", e.key)))?;
            pending.push((e.clone(), run));
            copied += 1;
            if pending.len() >= 10_000 {
                flush(&mut tx, &mut pending)?;
            }
            Ok(())
        })?;
        flush(&mut tx, &mut pending)?;
        run.end([
            ("entries", snapshot.entries.len() as u64),
            ("runs", snapshot.runs.len() as u64),
            ("events", copied),
        ]);
        insert_run(&mut tx, location, state, run)?;
        tx.commit().map_err(query_err(location, doing))?;
        Ok(Some(copied))
    }

    /// Streams every event of this state, oldest first, to `each` (`state migrate`), from one
    /// `REPEATABLE READ` snapshot.
    pub(crate) fn events_oldest_first(
        &self,
        each: &mut dyn FnMut(&Event) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        use postgres::fallible_iterator::FallibleIterator;
        let doing = "reading the history";
        let location = &self.location;
        let mut session = lock_client(&self.session);
        let mut tx = session
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(query_err(location, doing))?;
        let params: [&(dyn postgres::types::ToSql + Sync); 1] = [&self.state];
        let mut rows = tx
            .query_raw(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM timctl.events e JOIN timctl.runs r ON r.id = e.run
                     WHERE e.state = $1 ORDER BY e.id"
                ),
                params,
            )
            .map_err(query_err(location, doing))?;
        while let Some(r) = rows.next().map_err(query_err(location, doing))? {
            each(&event_from_row(&r, location)?)?;
        }
        drop(rows);
        tx.commit().map_err(query_err(location, doing))?;
        Ok(())
    }

    /// Who holds the lock: this process.
    pub fn holder(&self) -> &PgLockHolder {
        &self.holder
    }

    /// The `runs` row of `run`, inserted when it is not there yet.
    fn run_row(
        client: &mut impl postgres::GenericClient,
        location: &PgLocation,
        state: i64,
        run: &RunInfo,
    ) -> Result<i64, PgError> {
        let found = client
            .query_opt(
                "SELECT id FROM timctl.runs WHERE state = $1 AND run_id = $2",
                &[&state, &run.run_id],
            )
            .map_err(query_err(location, "recording the run"))?;
        match found {
            Some(row) => Ok(row.get(0)),
            None => insert_run(client, location, state, run),
        }
    }
}

/// Inserts `run`'s row into `state`'s runs; its row ID.
pub(super) fn insert_run(
    client: &mut impl postgres::GenericClient,
    location: &PgLocation,
    state: i64,
    run: &RunInfo,
) -> Result<i64, PgError> {
    Ok(client
        .query_one(
            "INSERT INTO timctl.runs (state, run_id, timctl_version, manifest_digest, started_at,
               command, commit_id, host, os_user, ci_job_url, ended_at, counts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::text::jsonb)
             RETURNING id",
            &[
                &state,
                &run.run_id,
                &run.timctl_version,
                &run.manifest_digest,
                &run.started_at.as_second(),
                &run.command.as_str(),
                &run.origin.commit,
                &run.origin.host,
                &run.origin.os_user,
                &run.origin.ci_job_url,
                &run.ended_at.map(|t| t.as_millisecond()),
                &run.counts_json(),
            ],
        )
        .map_err(query_err(location, "recording the run"))?
        .get(0))
}

/// One batch of records as one statement, so one transaction and one round trip: the
/// entries written (`on_conflict` empty for a plain insert, which fails whole when one is
/// already there), an event appended for every item, and the serial bumped only when an entry
/// was written. An entry already recorded the same way (its clear_roaming and origin) is left
/// as it was: re-deleting a conversation that came back changes the history, not the entries.
/// A data-modifying `WITH` always runs to completion, whether or not the outer statement reads
/// it. Returns the entries written and the new serial (NULL when none was).
///
/// Parameters: `$1` state, `$2`…`$8` one array per column (from, kind, peer, clear_roaming,
/// deleted_at in seconds, event time in milliseconds, reason), `$9` run, `$10` origin, `$11`
/// event action, `$12` and `$13` two more arrays (trigger as JSON text, latency_ms).
fn record_sql(on_conflict: &str) -> String {
    format!(
        "WITH input AS (
            SELECT * FROM unnest($2::text[], $3::smallint[], $4::text[], $5::boolean[],
                                 $6::bigint[], $7::bigint[], $8::text[], $12::text[],
                                 $13::bigint[]) WITH ORDINALITY
              AS i(from_account, kind, peer, clear_roaming, deleted_at, at, reason,
                   trigger_json, latency_ms, n)),
         written AS (
            INSERT INTO timctl.entries
              (state, from_account, kind, peer, clear_roaming, deleted_at, run, origin)
            SELECT $1, from_account, kind, peer, clear_roaming, deleted_at, $9, $10 FROM input
            {on_conflict}
            RETURNING 1),
         logged AS (
            INSERT INTO timctl.events
              (state, at, action, reason, from_account, kind, peer, clear_roaming, run,
               trigger_json, latency_ms)
            SELECT $1, at, $11, reason, from_account, kind, peer, clear_roaming, $9,
                   trigger_json::jsonb, latency_ms FROM input
            ORDER BY n),
         bumped AS (
            UPDATE timctl.states SET serial = serial + 1
            WHERE id = $1 AND EXISTS (SELECT 1 FROM written)
            RETURNING serial)
         SELECT (SELECT count(*) FROM written), (SELECT serial FROM bumped)"
    )
}

/// The upsert of [`record_sql`]: replacing an entry only when it says something else.
const UPSERT: &str = "ON CONFLICT (state, from_account, kind, peer) DO UPDATE SET
        clear_roaming = excluded.clear_roaming,
        deleted_at = excluded.deleted_at,
        run = excluded.run,
        origin = excluded.origin
     WHERE entries.clear_roaming IS DISTINCT FROM excluded.clear_roaming
        OR entries.origin IS DISTINCT FROM excluded.origin";

/// One batch of removals as one statement: the deletion, an event for each entry removed, and
/// a serial bump only when it removed something (a write that changes nothing keeps the
/// serial). Returns the rows removed and the new serial (NULL when nothing was removed).
///
/// Parameters: `$1` state, `$2`…`$4` arrays (from, kind, peer), `$5` event time in
/// milliseconds, `$6` action, `$7` reason, `$8` run.
const REMOVE: &str = "WITH gone AS (
        DELETE FROM timctl.entries e
        USING unnest($2::text[], $3::smallint[], $4::text[]) AS f(from_account, kind, peer)
        WHERE e.state = $1 AND e.from_account = f.from_account AND e.kind = f.kind
          AND e.peer = f.peer
        RETURNING e.from_account, e.kind, e.peer, e.clear_roaming),
     logged AS (
        INSERT INTO timctl.events
          (state, at, action, reason, from_account, kind, peer, clear_roaming, run)
        SELECT $1, $5, $6, $7, from_account, kind, peer, clear_roaming, $8 FROM gone),
     bumped AS (
        UPDATE timctl.states SET serial = serial + 1
        WHERE id = $1 AND EXISTS (SELECT 1 FROM gone)
        RETURNING serial)
     SELECT (SELECT count(*) FROM gone), (SELECT serial FROM bumped)";

/// A chunk of copied entries as columns (`state migrate`).
#[derive(Default)]
struct ImportedEntries<'a> {
    from: Vec<&'a str>,
    kind: Vec<i16>,
    peer: Vec<&'a str>,
    clear_roaming: Vec<bool>,
    deleted_at: Vec<i64>,
    run: Vec<i64>,
    origin: Vec<&'static str>,
}

/// A batch of records as columns, for [`record_sql`]: one statement per batch, not one per
/// entry.
#[derive(Default)]
struct Columns<'a> {
    from: Vec<&'a str>,
    kind: Vec<i16>,
    peer: Vec<&'a str>,
    clear_roaming: Vec<bool>,
    deleted_at: Vec<i64>,
    at: Vec<i64>,
    reason: Vec<&'static str>,
    trigger: Vec<Option<String>>,
    latency_ms: Vec<Option<i64>>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, item: &ToRecord<'a>) {
        let d = item.deleted;
        self.from.push(d.key.from.as_str());
        self.kind.push(kind_code(d.key.peer.kind()));
        self.peer.push(d.key.peer.id());
        self.clear_roaming.push(d.clear_roaming);
        self.deleted_at.push(d.deleted_at.as_second());
        self.at.push(d.deleted_at.as_millisecond());
        self.reason.push(item.reason.as_str());
        self.trigger.push(item.trigger_text());
        self.latency_ms.push(item.latency_sql());
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
        origin: Origin,
        batch: &[ToRecord<'_>],
    ) -> Result<Written, LedgerError> {
        if batch.is_empty() {
            return Ok(Written {
                state: self.meta.state,
                affected: 0,
            });
        }
        let run_row = self.ensure_run_row(run)?;
        let action = origin.event_action();
        // One statement cannot write a row twice; should a batch name one conversation twice,
        // its last record wins, as it would in two batches (and the history keeps one event).
        let last: HashMap<&ConversationKey, usize> = batch
            .iter()
            .enumerate()
            .map(|(i, item)| (&item.deleted.key, i))
            .collect();
        let mut cols = Columns::default();
        for (i, item) in batch.iter().enumerate() {
            if last[&item.deleted.key] == i {
                cols.push(item);
            }
        }
        let location = &self.location;
        let doing = "recording deletions";
        let session = self.session.get_mut();
        let (origin, action) = (origin.as_str(), action.as_str());
        let params: [&(dyn postgres::types::ToSql + Sync); 13] = [
            &self.state,
            &cols.from,
            &cols.kind,
            &cols.peer,
            &cols.clear_roaming,
            &cols.deleted_at,
            &cols.at,
            &cols.reason,
            &run_row,
            &origin,
            &action,
            &cols.trigger,
            &cols.latency_ms,
        ];
        // A plain insert costs the server about two thirds of what an upsert does (no
        // conflict check before each row, no confirmation after it), and most batches are new
        // deletions. So a batch is inserted first; should one name an entry the state already
        // holds (a re-asserted, returned or clear-roaming deletion), the statement fails whole,
        // with nothing written (its events neither), and is made again as an upsert, as is
        // every later batch of this writer.
        let mut inserted = None;
        if !self.upserting {
            let insert = prepared(&mut self.statements.insert, session, || record_sql(""))
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
                let upsert = prepared(&mut self.statements.upsert, session, || record_sql(UPSERT))
                    .map_err(query_err(location, doing))?;
                session
                    .query_one(upsert, &params)
                    .map_err(query_err(location, doing))?
            }
        };
        let (affected, serial): (i64, Option<i64>) = (row.get(0), row.get(1));
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

    fn remove_blocking(
        &mut self,
        action: EventAction,
        reason: EventReason,
        batch: &[ConversationKey],
    ) -> Result<Written, LedgerError> {
        if batch.is_empty() {
            return Ok(Written {
                state: self.meta.state,
                affected: 0,
            });
        }
        let Some((_, run_row)) = self.run_row else {
            return Err(LedgerError::NoRun {
                location: self.location_shown(),
            });
        };
        let location = &self.location;
        let doing = "forgetting entries";
        let from: Vec<&str> = batch.iter().map(|k| k.from.as_str()).collect();
        let kind: Vec<i16> = batch.iter().map(|k| kind_code(k.peer.kind())).collect();
        let peer: Vec<&str> = batch.iter().map(|k| k.peer.id()).collect();
        let now = jiff::Timestamp::now().as_millisecond();
        let session = self.session.get_mut();
        let statement = prepared(&mut self.statements.forget, session, || REMOVE.to_owned())
            .map_err(query_err(location, doing))?;
        let row = session
            .query_one(
                statement,
                &[
                    &self.state,
                    &from,
                    &kind,
                    &peer,
                    &now,
                    &action.as_str(),
                    &reason.as_str(),
                    &run_row,
                ],
            )
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

    fn end_run_blocking(&mut self, run: &RunInfo) -> Result<(), LedgerError> {
        let session = self.session.get_mut();
        session
            .execute(
                "UPDATE timctl.runs SET ended_at = $3, counts = $4::text::jsonb
                 WHERE state = $1 AND run_id = $2",
                &[
                    &self.state,
                    &run.run_id,
                    &run.ended_at.map(|t| t.as_millisecond()),
                    &run.counts_json(),
                ],
            )
            .map_err(query_err(&self.location, "recording the run's end"))?;
        Ok(())
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

    fn end_run(&mut self, run: &RunInfo) -> Result<(), LedgerError> {
        off_runtime(|| self.end_run_blocking(run))
    }

    fn record_items(
        &mut self,
        run: &RunInfo,
        origin: Origin,
        batch: &[ToRecord<'_>],
    ) -> Result<Written, LedgerError> {
        off_runtime(|| self.record_blocking(run, origin, batch))
    }

    fn remove(
        &mut self,
        action: EventAction,
        reason: EventReason,
        batch: &[ConversationKey],
    ) -> Result<Written, LedgerError> {
        off_runtime(|| self.remove_blocking(action, reason, batch))
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
