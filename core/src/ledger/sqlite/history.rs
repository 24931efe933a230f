//! Reading and pruning the SQLite state's history.
//!
//! The history is read page by page, newest first, each page one short read transaction, all
//! bounded by the newest event there was when reading began. In SQLite's rollback-journal mode
//! a reader's open transaction keeps a writer from committing; one long transaction would let
//! `state history | less`, paused at its first screen, stop an apply after the busy timeout.
//! Appends after the start are left out by the bound, so the events shown are the history as
//! it was when reading began (less what `state prune-history` removed meanwhile, which it
//! removes anyway).

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql};

use super::{
    Found, HISTORY_SCHEMA, SqliteError, SqliteLedger, check_file, insert_run, inspect, kind_code,
    kind_of_code, open_sqlite, resolve_state_for_read, run_columns, run_from_row, sqlite_err,
};
use crate::ids::{ConversationKey, Peer, UserId};
use crate::ledger::history::{Event, EventAction, EventReason, HistoryError, HistoryQuery};
use crate::ledger::{LedgerError, RunInfo};

/// Events read per page (per short read transaction).
const PAGE: i64 = 1_000;

impl SqliteLedger {
    /// Streams the events `query` selects, newest first, to `each`.
    pub fn history(
        &self,
        query: &HistoryQuery,
        each: &mut dyn FnMut(&Event) -> std::io::Result<()>,
    ) -> Result<(), HistoryError> {
        let (Some(conn), Some(meta)) = (&self.conn, &self.meta) else {
            return Ok(());
        };
        if meta.schema_version < HISTORY_SCHEMA {
            return Ok(());
        }
        read_history(conn, &self.path, query, each)
    }

    /// Streams the runs, newest first, at most `limit` (`None`: all), to `each`.
    pub fn runs_newest_first(
        &self,
        limit: Option<u64>,
        each: &mut dyn FnMut(&RunInfo) -> std::io::Result<()>,
    ) -> Result<(), HistoryError> {
        let (Some(conn), Some(meta)) = (&self.conn, &self.meta) else {
            return Ok(());
        };
        let path = &self.path;
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {} FROM runs ORDER BY id DESC LIMIT ?1",
                run_columns(meta.schema_version)
            ))
            .map_err(sqlite_err(path, "reading runs"))?;
        let limit = limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let mut rows = stmt
            .query([limit])
            .map_err(sqlite_err(path, "reading runs"))?;
        while let Some(r) = rows.next().map_err(sqlite_err(path, "reading runs"))? {
            let (_, run) = run_from_row(r, path)?;
            each(&run).map_err(HistoryError::Write)?;
        }
        Ok(())
    }
}

/// The page-by-page read described in the module's documentation.
fn read_history(
    conn: &Connection,
    path: &Path,
    query: &HistoryQuery,
    each: &mut dyn FnMut(&Event) -> std::io::Result<()>,
) -> Result<(), HistoryError> {
    let doing = "reading the history";
    let bound: Option<i64> = conn
        .query_row("SELECT max(id) FROM events", [], |r| r.get(0))
        .map_err(sqlite_err(path, doing))?;
    let Some(bound) = bound else {
        return Ok(());
    };
    let run_row = match query.run {
        None => None,
        Some(run) => {
            let row: Option<i64> = conn
                .query_row(
                    "SELECT id FROM runs WHERE run_id = ?1",
                    [run.as_bytes().as_slice()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sqlite_err(path, doing))?;
            // A run this state never saw has no events.
            let Some(row) = row else { return Ok(()) };
            Some(row)
        }
    };
    let (mut filters, values) = filters_of(query, bound, run_row);
    let first_page = page_sql(&filters);
    filters.push("e.at <= :last_at AND (e.at < :last_at OR e.id < :last_id)".into());
    let next_page = page_sql(&filters);
    let mut left = query.limit;
    let mut last: Option<(i64, i64)> = None;
    loop {
        let page = left.map_or(PAGE, |l| PAGE.min(i64::try_from(l).unwrap_or(PAGE)));
        if page == 0 {
            return Ok(());
        }
        let mut params: Vec<(&str, &dyn ToSql)> =
            values.iter().map(|(n, v)| (*n, v.as_ref())).collect();
        params.push((":page", &page));
        let (last_at, last_id) = last.unwrap_or_default();
        if last.is_some() {
            params.push((":last_at", &last_at));
            params.push((":last_id", &last_id));
        }
        // One short read transaction per page (see the module's documentation).
        let tx = conn
            .unchecked_transaction()
            .map_err(sqlite_err(path, doing))?;
        let mut stmt = tx
            .prepare_cached(if last.is_some() {
                &next_page
            } else {
                &first_page
            })
            .map_err(sqlite_err(path, doing))?;
        let mut rows = stmt
            .query(params.as_slice())
            .map_err(sqlite_err(path, doing))?;
        let mut events = Vec::new();
        while let Some(r) = rows.next().map_err(sqlite_err(path, doing))? {
            let (id, event) = event_from_row(r, path)?;
            last = Some((event.at.as_millisecond(), id));
            events.push(event);
        }
        drop(rows);
        drop(stmt);
        drop(tx);
        let read = events.len() as i64;
        for event in &events {
            each(event).map_err(HistoryError::Write)?;
        }
        if let Some(l) = &mut left {
            *l = l.saturating_sub(read as u64);
        }
        if read < page {
            return Ok(());
        }
    }
}

/// A named parameter and its value.
type Named = (&'static str, Box<dyn ToSql>);

/// The SQL conditions `query` asks for, and their values. Only the filters given go into the
/// SQL, so that SQLite picks the index that answers them (`events_from` for a user,
/// `events_peer` for a peer, `events_at` for a time).
fn filters_of(query: &HistoryQuery, bound: i64, run_row: Option<i64>) -> (Vec<String>, Vec<Named>) {
    let mut filters = vec!["e.id <= :bound".to_owned()];
    let mut values: Vec<Named> = vec![(":bound", Box::new(bound))];
    if let Some(user) = &query.user {
        filters.push("e.from_account = :user".into());
        values.push((":user", Box::new(user.as_str().to_owned())));
    }
    if let Some(peer) = &query.peer {
        filters.push("e.kind = :kind AND e.peer = :peer".into());
        values.push((":kind", Box::new(kind_code(peer.kind()))));
        values.push((":peer", Box::new(peer.id().to_owned())));
    }
    if let Some(since) = query.since {
        filters.push("e.at >= :since".into());
        values.push((":since", Box::new(since.as_millisecond())));
    }
    if let Some(until) = query.until {
        filters.push("e.at < :until".into());
        values.push((":until", Box::new(until.as_millisecond())));
    }
    if let Some(row) = run_row {
        filters.push("e.run = :run".into());
        values.push((":run", Box::new(row)));
    }
    (filters, values)
}

/// One page of events under `filters`, newest first.
fn page_sql(filters: &[String]) -> String {
    format!(
        "SELECT e.id, e.at, e.action, e.reason, e.from_account, e.kind, e.peer, e.clear_roaming,
                r.run_id, e.trigger_json, e.latency_ms
         FROM events e JOIN runs r ON r.id = e.run
         WHERE {} ORDER BY e.at DESC, e.id DESC LIMIT :page",
        filters.join(" AND ")
    )
}

/// One event row of [`read_history`]'s query, with its ID.
pub(super) fn event_from_row(
    r: &rusqlite::Row<'_>,
    path: &Path,
) -> Result<(i64, Event), LedgerError> {
    let doing = "reading the history";
    let corrupt = |what: String| {
        LedgerError::from(SqliteError::Corrupt {
            path: path.to_owned(),
            what,
        })
    };
    let get = |r: &rusqlite::Row<'_>| -> rusqlite::Result<_> {
        Ok((
            (
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
            ),
            (
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, Vec<u8>>(8)?,
                r.get::<_, Option<String>>(9)?,
                r.get::<_, Option<i64>>(10)?,
            ),
        ))
    };
    let ((id, at, action, reason, from, kind), (peer, clear_roaming, run_id, trigger, latency)) =
        get(r).map_err(sqlite_err(path, doing))?;
    let from = UserId::new(from).map_err(|e| corrupt(format!("event {id}'s From_Account: {e}")))?;
    let kind = kind_of_code(kind).ok_or_else(|| corrupt(format!("event {id} has type {kind}")))?;
    let peer = Peer::from_parts(kind, peer)
        .map_err(|e| corrupt(format!("event {id} has a bad peer: {e}")))?;
    Ok((
        id,
        Event {
            at: jiff::Timestamp::from_millisecond(at)
                .map_err(|_| corrupt(format!("event {id} is at {at}")))?,
            action: EventAction::parse(&action)
                .ok_or_else(|| corrupt(format!("event {id} has the action {action:?}")))?,
            reason: EventReason::parse(&reason)
                .ok_or_else(|| corrupt(format!("event {id} has the reason {reason:?}")))?,
            key: ConversationKey::new(from, peer),
            clear_roaming: clear_roaming != 0,
            run_id: uuid::Uuid::from_slice(&run_id)
                .map_err(|_| corrupt(format!("event {id}'s run is not a UUID")))?,
            trigger: trigger.and_then(|t| serde_json::from_str(&t).ok()),
            latency_ms: latency.and_then(|l| u64::try_from(l).ok()),
        },
    ))
}

/// Deletes the events of the SQLite state at `path` older than `before`, in one short
/// transaction and without the writer lock (the history is append-only, so it runs beside an
/// apply), recording `run` (its counts `pruned`) in the same transaction. With `dry_run`,
/// counts them and changes nothing. A state from before the history has none: 0, nothing
/// written.
pub(crate) fn prune(
    path: &Path,
    before: jiff::Timestamp,
    dry_run: bool,
    run: &mut RunInfo,
) -> Result<Option<u64>, LedgerError> {
    let Some(resolved) = resolve_state_for_read(path)? else {
        return Ok(None);
    };
    if let Some(dir) = resolved.parent() {
        super::check_dir(dir)?;
    }
    match check_file(&resolved)? {
        None => return Ok(None),
        Some(m) if m.len() == 0 => return Ok(None),
        Some(_) => {}
    }
    let flags = if dry_run {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    };
    let mut conn = open_sqlite(&resolved, path, flags)?;
    let version = match inspect(&conn, path)? {
        Found::Empty => return Ok(None),
        Found::Ledger(v) => v,
    };
    if version < HISTORY_SCHEMA {
        return Ok(Some(0));
    }
    let doing = "pruning the history";
    let cutoff = before.as_millisecond();
    if dry_run {
        let n: i64 = conn
            .query_row("SELECT count(*) FROM events WHERE at < ?1", [cutoff], |r| {
                r.get(0)
            })
            .map_err(sqlite_err(path, doing))?;
        return Ok(Some(n as u64));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite_err(path, "setting synchronous"))?;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sqlite_err(path, doing))?;
    let pruned = tx
        .execute("DELETE FROM events WHERE at < ?1", [cutoff])
        .map_err(sqlite_err(path, doing))? as u64;
    run.end([("pruned", pruned)]);
    insert_run(&tx, path, run, "INSERT")?;
    tx.commit().map_err(sqlite_err(path, doing))?;
    Ok(Some(pruned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{LedgerWriter, SqliteLedgerWriter, StateLock};

    /// The plan SQLite picks for the first page of `query`, one line per step.
    fn plan_of(conn: &Connection, query: &HistoryQuery) -> String {
        let (filters, values) = filters_of(query, i64::MAX, None);
        let sql = format!("EXPLAIN QUERY PLAN {}", page_sql(&filters));
        let mut params: Vec<(&str, &dyn ToSql)> =
            values.iter().map(|(n, v)| (*n, v.as_ref())).collect();
        params.push((":page", &100));
        let mut stmt = conn.prepare(&sql).unwrap();
        let rows = stmt
            .query_map(params.as_slice(), |r| r.get::<_, String>(3))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn users_peers_and_times_are_answered_from_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let lock = StateLock::acquire(&path, "test", std::time::Duration::ZERO).unwrap();
        let mut w = SqliteLedgerWriter::create_or_open(&path, 1, lock).unwrap();
        w.begin_run(&RunInfo::new("d")).unwrap();
        let conn = Connection::open(&path).unwrap();
        let user = HistoryQuery {
            user: Some(UserId::new("alice").unwrap()),
            ..Default::default()
        };
        let peer = HistoryQuery {
            peer: Some("user:bob".parse().unwrap()),
            ..Default::default()
        };
        let since = HistoryQuery {
            since: Some(jiff::Timestamp::UNIX_EPOCH),
            ..Default::default()
        };
        for (query, index) in [
            (&user, "events_from"),
            (&peer, "events_peer"),
            (&since, "events_at"),
            (&HistoryQuery::default(), "events_at"),
        ] {
            let plan = plan_of(&conn, query);
            assert!(
                plan.contains(&format!("SCAN e USING INDEX {index}"))
                    || plan.contains(&format!("SEARCH e USING INDEX {index}")),
                "{query:?}:\n{plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "no sort: {query:?}:\n{plan}");
        }
    }
}
