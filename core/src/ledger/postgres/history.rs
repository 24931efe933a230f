//! Reading and pruning the PostgreSQL state's history.
//!
//! A reader's `REPEATABLE READ` transaction is one snapshot that holds up no writer, so the
//! events are one streamed query in it: the driver hands rows over as they arrive (its channel
//! to the connection holds one message), so memory does not grow with the history.

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;

use super::{
    HISTORY_SCHEMA, PgError, PgLedger, PgLocation, connect, kind_code, kind_of_code, lock_client,
    query_err, read_state_rows, run_columns, run_from_row, schema_version, sdkappid_sql,
};
use crate::ids::{ConversationKey, Peer, UserId};
use crate::ledger::RunInfo;
use crate::ledger::history::{Event, EventAction, EventReason, HistoryError, HistoryQuery};

/// The columns of an event, as [`event_from_row`] reads them.
pub(super) const EVENT_COLUMNS: &str = "e.at, e.action, e.reason, e.from_account, e.kind, e.peer,
    e.clear_roaming, r.run_id, e.trigger_json::text, e.latency_ms";

impl PgLedger {
    /// Streams the events `query` selects, newest first, to `each`, from this reader's
    /// snapshot.
    pub fn history(
        &self,
        query: &HistoryQuery,
        each: &mut dyn FnMut(&Event) -> std::io::Result<()>,
    ) -> Result<(), HistoryError> {
        let (Some(meta), Some(read)) = (&self.meta, &self.read) else {
            return Ok(());
        };
        if meta.schema_version < HISTORY_SCHEMA {
            return Ok(());
        }
        // Only the filters given go into the SQL, so that the planner picks the index that
        // answers them.
        let mut filters = vec!["e.state = $1".to_owned()];
        let mut values: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(read.state)];
        let param = |value: Box<dyn ToSql + Sync + Send>, values: &mut Vec<_>| {
            values.push(value);
            format!("${}", values.len())
        };
        if let Some(user) = &query.user {
            let p = param(Box::new(user.as_str().to_owned()), &mut values);
            filters.push(format!("e.from_account = {p}"));
        }
        if let Some(peer) = &query.peer {
            let k = param(Box::new(kind_code(peer.kind())), &mut values);
            let p = param(Box::new(peer.id().to_owned()), &mut values);
            filters.push(format!("e.kind = {k} AND e.peer = {p}"));
        }
        if let Some(since) = query.since {
            let p = param(Box::new(since.as_millisecond()), &mut values);
            filters.push(format!("e.at >= {p}"));
        }
        if let Some(until) = query.until {
            let p = param(Box::new(until.as_millisecond()), &mut values);
            filters.push(format!("e.at < {p}"));
        }
        if let Some(run) = query.run {
            let p = param(Box::new(run), &mut values);
            filters.push(format!("r.run_id = {p}"));
        }
        let limit = query
            .limit
            .map(|l| format!(" LIMIT {}", i64::try_from(l).unwrap_or(i64::MAX)))
            .unwrap_or_default();
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM timctl.events e JOIN timctl.runs r ON r.id = e.run
             WHERE {} ORDER BY e.at DESC, e.id DESC{limit}",
            filters.join(" AND ")
        );
        let location = &self.location;
        // Synchronous, in place: the commands that read the history run off any async runtime.
        {
            let mut client = lock_client(&read.client);
            let doing = "reading the history";
            let mut rows = client
                .query_raw(
                    &sql,
                    values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)),
                )
                .map_err(query_err(location, doing))?;
            while let Some(r) = rows.next().map_err(query_err(location, doing))? {
                each(&event_from_row(&r, location)?).map_err(HistoryError::Write)?;
            }
            Ok(())
        }
    }

    /// Streams the runs, newest first, at most `limit` (`None`: all), to `each`.
    pub fn runs_newest_first(
        &self,
        limit: Option<u64>,
        each: &mut dyn FnMut(&RunInfo) -> std::io::Result<()>,
    ) -> Result<(), HistoryError> {
        let (Some(meta), Some(read)) = (&self.meta, &self.read) else {
            return Ok(());
        };
        let location = &self.location;
        let limit = limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        let sql = format!(
            "SELECT {} FROM timctl.runs WHERE state = $1 ORDER BY id DESC LIMIT $2",
            run_columns(meta.schema_version)
        );
        // Synchronous, in place: the commands that read the history run off any async runtime.
        {
            let mut client = lock_client(&read.client);
            let doing = "reading runs";
            let params: [&(dyn ToSql + Sync); 2] = [&read.state, &limit];
            let mut rows = client
                .query_raw(&sql, params)
                .map_err(query_err(location, doing))?;
            while let Some(r) = rows.next().map_err(query_err(location, doing))? {
                let (_, run) = run_from_row(&r, location)?;
                each(&run).map_err(HistoryError::Write)?;
            }
            Ok(())
        }
    }
}

/// One row of [`EVENT_COLUMNS`].
pub(super) fn event_from_row(r: &postgres::Row, location: &PgLocation) -> Result<Event, PgError> {
    let corrupt = |what: String| PgError::Corrupt {
        state: location.to_string(),
        what,
    };
    let (at, action, reason): (i64, &str, &str) = (r.get(0), r.get(1), r.get(2));
    let from = UserId::new(r.get::<_, &str>(3))
        .map_err(|e| corrupt(format!("an event's From_Account: {e}")))?;
    let kind = r.get::<_, i16>(4);
    let kind = kind_of_code(i64::from(kind))
        .ok_or_else(|| corrupt(format!("an event of {from} has type {kind}")))?;
    let peer = Peer::from_parts(kind, r.get::<_, &str>(5))
        .map_err(|e| corrupt(format!("an event of {from} has a bad peer: {e}")))?;
    let trigger: Option<&str> = r.get(8);
    let latency: Option<i64> = r.get(9);
    Ok(Event {
        at: jiff::Timestamp::from_millisecond(at)
            .map_err(|_| corrupt(format!("an event is at {at}")))?,
        action: EventAction::parse(action)
            .ok_or_else(|| corrupt(format!("an event has the action {action:?}")))?,
        reason: EventReason::parse(reason)
            .ok_or_else(|| corrupt(format!("an event has the reason {reason:?}")))?,
        key: ConversationKey::new(from, peer),
        clear_roaming: r.get(6),
        run_id: r.get(7),
        trigger: trigger.and_then(|t| serde_json::from_str(t).ok()),
        latency_ms: latency.and_then(|l| u64::try_from(l).ok()),
    })
}

/// Deletes the events of the state `name` of `sdkappid` (or the only app's) older than
/// `before`, in one short transaction and without the writer lock, recording `run` (its counts
/// `pruned`) in it. With `dry_run`, counts them and writes nothing. `None` when there is no
/// state; `Some(0)`, nothing written, for a schema from before the history.
pub(crate) fn prune(
    location: &PgLocation,
    name: &str,
    sdkappid: Option<u64>,
    before: jiff::Timestamp,
    dry_run: bool,
    run: &mut RunInfo,
) -> Result<Option<u64>, PgError> {
    if let Some(app) = sdkappid {
        sdkappid_sql(app)?;
    }
    let mut client = connect(location)?;
    let version = schema_version(&mut client, location)?;
    if version == 0 {
        return Ok(None);
    }
    let doing = "pruning the history";
    let mut tx = client.transaction().map_err(query_err(location, doing))?;
    let mut rows = read_state_rows(&mut tx, location, name, sdkappid, version)?;
    if rows.len() > 1 {
        return Err(PgError::WhichApp {
            state: location.to_string(),
            apps: rows.iter().map(|(_, m)| m.sdkappid).collect(),
        });
    }
    let Some((state, _)) = rows.pop() else {
        return Ok(None);
    };
    if version < HISTORY_SCHEMA {
        return Ok(Some(0));
    }
    let cutoff = before.as_millisecond();
    if dry_run {
        let n: i64 = tx
            .query_one(
                "SELECT count(*) FROM timctl.events WHERE state = $1 AND at < $2",
                &[&state, &cutoff],
            )
            .map_err(query_err(location, doing))?
            .get(0);
        return Ok(Some(n as u64));
    }
    let pruned = tx
        .execute(
            "DELETE FROM timctl.events WHERE state = $1 AND at < $2",
            &[&state, &cutoff],
        )
        .map_err(query_err(location, doing))?;
    run.end([("pruned", pruned)]);
    super::writer::insert_run(&mut tx, location, state, run)?;
    tx.commit().map_err(query_err(location, doing))?;
    Ok(Some(pruned))
}
