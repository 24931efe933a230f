//! The PostgreSQL ledger: the state of a team's CI runners, in timctl's own schema `timctl`.
//!
//! One database holds the states of several apps and several named states per app, each a row
//! of `timctl.states` keyed by (SDKAppID, name) with its own lineage and serial; entries and runs
//! hang off it. The schema is versioned (`timctl.schema_version`) and migrated by the first
//! writer, under a transaction-level advisory lock so that two first writers do not race; a
//! newer schema is refused.
//!
//! Reads are one `REPEATABLE READ` transaction, so meta, runs and entries are one snapshot even
//! while an apply writes. Writes go through the session that holds the state's advisory lock
//! ([`lock`]); each batch is one transaction that also bumps the serial. When that session is
//! lost, every later write fails, and apply stops.
//!
//! The driver is the synchronous `postgres` crate: the ledger traits are blocking, and apply
//! already records on a thread of its own.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use postgres::fallible_iterator::FallibleIterator;

use super::{Ledger, Meta, RunCommand, RunInfo, RunOrigin, Snapshot, StateEntry, StateRef};
pub(super) use super::{kind_code, kind_of_code};
use crate::ids::{ConversationKey, Peer, UserId};

pub mod config;
mod history;
pub mod lock;
pub mod queue;
mod writer;

pub use config::{PgLocation, SslMode};
pub use lock::PgLockHolder;
pub use writer::PgLedgerWriter;

pub(crate) use history::prune as prune_history;

/// The migrations: `MIGRATIONS[n]` takes schema version `n` to `n + 1`. Never edit one that has
/// shipped; append. Text columns that sort are `COLLATE "C"` (byte order), the order of
/// `DesiredEntry`, whatever the database's default collation.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the first release.
    r#"CREATE TABLE timctl.schema_version (
        id integer PRIMARY KEY CHECK (id = 1),
        version integer NOT NULL
    );
    INSERT INTO timctl.schema_version (id, version) VALUES (1, 0);
    CREATE TABLE timctl.states (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        sdkappid bigint NOT NULL CHECK (sdkappid >= 0),
        name text NOT NULL,
        lineage uuid NOT NULL,
        serial bigint NOT NULL,
        created_at bigint NOT NULL,
        created_by text NOT NULL,
        UNIQUE (sdkappid, name)
    );
    CREATE TABLE timctl.runs (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        state bigint NOT NULL REFERENCES timctl.states (id) ON DELETE CASCADE,
        run_id uuid NOT NULL,
        timctl_version text NOT NULL,
        manifest_digest text NOT NULL,
        started_at bigint NOT NULL,
        UNIQUE (state, run_id)
    );
    CREATE TABLE timctl.entries (
        state bigint NOT NULL REFERENCES timctl.states (id) ON DELETE CASCADE,
        from_account text COLLATE "C" NOT NULL,
        kind smallint NOT NULL CHECK (kind IN (1, 2)),
        peer text COLLATE "C" NOT NULL,
        clear_roaming boolean NOT NULL,
        deleted_at bigint NOT NULL,
        run bigint NOT NULL REFERENCES timctl.runs (id) ON DELETE CASCADE,
        PRIMARY KEY (state, from_account, kind, peer)
    );
    CREATE TABLE timctl.lock_holders (
        sdkappid bigint NOT NULL,
        name text NOT NULL,
        host text NOT NULL,
        client_pid bigint NOT NULL,
        backend_pid integer NOT NULL,
        operation text NOT NULL,
        since bigint NOT NULL,
        PRIMARY KEY (sdkappid, name)
    );"#,
    // 1 -> 2: an entry says whether timctl deleted the conversation or a refresh saw it absent
    // (no call made). Entries written before refresh existed were all deletions.
    r#"ALTER TABLE timctl.entries
        ADD COLUMN origin text NOT NULL DEFAULT 'deleted' CHECK (origin IN ('deleted', 'absent'));"#,
    // 2 -> 3: no foreign keys on entries. Their checks ran once per row per key, a trigger
    // each, and tripled the cost of recording a batch. What they guarded still holds: the
    // writer inserts a run's row before any entry names it, nothing deletes runs or states,
    // and every read refuses an entry that names no known run (`Corrupt`), as the SQLite
    // ledger, whose foreign keys were never enforced, always has.
    r#"ALTER TABLE timctl.entries
        DROP CONSTRAINT entries_state_fkey,
        DROP CONSTRAINT entries_run_fkey;"#,
    // 3 -> 4: the history. Runs say which command ran, where and by whom, when it ended and
    // what it counted (every run before this was an apply); `events` is the append-only log
    // of every change to the entries, indexed for the per-user, per-peer and per-time
    // questions in the order they are shown (time, then insertion). No foreign keys, as for
    // entries: the writer inserts a run before any event names it, and nothing deletes runs.
    r#"ALTER TABLE timctl.runs
        ADD COLUMN command text NOT NULL DEFAULT 'apply',
        ADD COLUMN commit_id text,
        ADD COLUMN host text,
        ADD COLUMN os_user text,
        ADD COLUMN ci_job_url text,
        ADD COLUMN ended_at bigint,
        ADD COLUMN counts jsonb;
    CREATE TABLE timctl.events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        state bigint NOT NULL,
        at bigint NOT NULL,
        action text NOT NULL CHECK (action IN ('deleted', 'recorded', 'forgotten', 'removed')),
        reason text NOT NULL,
        from_account text COLLATE "C" NOT NULL,
        kind smallint NOT NULL CHECK (kind IN (1, 2)),
        peer text COLLATE "C" NOT NULL,
        clear_roaming boolean NOT NULL,
        run bigint NOT NULL,
        trigger_json jsonb,
        latency_ms bigint
    );
    CREATE INDEX events_state_at ON timctl.events (state, at, id);
    CREATE INDEX events_state_from ON timctl.events (state, from_account, at, id);
    CREATE INDEX events_state_peer ON timctl.events (state, kind, peer, at, id);"#,
    // 4 -> 5: serve's replicas. A standby replica puts the conversations its callbacks concern
    // here (durably, before it answers) and the active one takes them. Keyed by the state's
    // (SDKAppID, name), not its row, so that a standby can queue before it has read the
    // state; nothing else refers to it, and `state migrate` does not copy it (it holds work in
    // flight, not state).
    r#"CREATE TABLE timctl.queue (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        sdkappid bigint NOT NULL,
        name text NOT NULL,
        from_account text COLLATE "C" NOT NULL,
        kind smallint NOT NULL CHECK (kind IN (1, 2)),
        peer text COLLATE "C" NOT NULL,
        clear_roaming boolean NOT NULL,
        arrived_at bigint NOT NULL,
        trigger_json jsonb
    );
    CREATE INDEX queue_state ON timctl.queue (sdkappid, name, id);"#,
];

/// The first schema version with the history (`events`, and the runs' new columns).
pub(crate) const HISTORY_SCHEMA: u32 = 4;

/// The schema version this timctl writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Why the PostgreSQL state could not be reached, read or written. No variant carries the
/// password: locations are shown through [`PgLocation`]'s `Display`.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PgError {
    /// The `postgres://` URL is malformed.
    #[error("the state URL is not valid: {why}")]
    #[diagnostic(
        code(timctl::state::url),
        help("write it as postgres://USER@HOST:PORT/DATABASE?sslmode=verify-full")
    )]
    BadUrl {
        /// What is wrong (never the URL itself).
        why: String,
    },
    /// No session could be opened.
    #[error("cannot connect to the state {state}")]
    #[diagnostic(
        code(timctl::state::connect),
        help(
            "check the host, port, user and database in --state (TIMCTL_STATE), and the password in the URL, PGPASSWORD or ~/.pgpass"
        )
    )]
    Connect {
        /// The state, without password.
        state: String,
        /// The cause.
        #[source]
        source: postgres::Error,
    },
    /// No session was ready within `connect_timeout` (TCP, TLS, startup and authentication
    /// together, as libpq counts it).
    #[error("cannot connect to the state {state}: no session within connect_timeout={seconds}")]
    #[diagnostic(
        code(timctl::state::connect_timeout),
        help(
            "the server (or a pooler in front of it) accepted the connection but did not finish it; check that it is running and not overloaded, or raise connect_timeout in --state"
        )
    )]
    ConnectTimeout {
        /// The state, without password.
        state: String,
        /// The limit, in seconds.
        seconds: u64,
    },
    /// TLS could not be set up as `sslmode` asks.
    #[error("cannot set up TLS for the state {state}: {why}")]
    #[diagnostic(code(timctl::state::tls))]
    Tls {
        /// The state, without password.
        state: String,
        /// What failed.
        why: String,
    },
    /// A query failed (the session may be lost).
    #[error("the state {state} failed while {doing}")]
    #[diagnostic(code(timctl::state::postgres))]
    Query {
        /// The state, without password.
        state: String,
        /// What timctl was doing.
        doing: &'static str,
        /// The cause.
        #[source]
        source: postgres::Error,
    },
    /// Another session holds the state's lock.
    #[error("the state {state} is locked by {}", holder.as_ref().map_or_else(|| "another timctl (holder unknown)".to_owned(), |h| h.to_string()))]
    #[diagnostic(
        code(timctl::state::locked),
        help(
            "wait for it to finish, or pass --lock-timeout 5m to wait; the lock goes with its holder's session, even after a crash"
        )
    )]
    Locked {
        /// The state, without password.
        state: String,
        /// Who holds it, when its holder row says.
        holder: Option<PgLockHolder>,
        /// How long timctl waited.
        waited: std::time::Duration,
    },
    /// The schema was written by a newer timctl.
    #[error(
        "the state {state} has schema version {found}; this timctl ({version}) knows up to {supported}"
    )]
    #[diagnostic(
        code(timctl::state::newer_format),
        help("upgrade timctl; the state was written by a newer version and is left untouched")
    )]
    NewerSchema {
        /// The state, without password.
        state: String,
        /// The schema version found.
        found: u32,
        /// The newest this timctl knows.
        supported: u32,
        /// This timctl's version.
        version: &'static str,
    },
    /// The stored data breaks an invariant.
    #[error("the state {state} holds invalid data: {what}")]
    #[diagnostic(code(timctl::state::corrupt))]
    Corrupt {
        /// The state, without password.
        state: String,
        /// What is wrong.
        what: String,
    },
    /// An SDKAppID above `i64::MAX` does not fit PostgreSQL's `bigint`.
    #[error(
        "SDKAppID {sdkappid} is too large for the PostgreSQL state (at most {})",
        i64::MAX
    )]
    #[diagnostic(code(timctl::state::sdkappid_range))]
    SdkAppIdRange {
        /// The SDKAppID.
        sdkappid: u64,
    },
    /// Several apps have a state of this name, and nothing said which one.
    #[error("the database {state} holds states of several apps ({}); say which", apps.iter().map(u64::to_string).collect::<Vec<_>>().join(", "))]
    #[diagnostic(
        code(timctl::state::which_app),
        help("pass --sdkappid, or -f with the app's manifest")
    )]
    WhichApp {
        /// The state, without password.
        state: String,
        /// The apps found.
        apps: Vec<u64>,
    },
}

/// The SDKAppID as stored: a `bigint`. SDKAppIDs are 10 digits in practice; a larger one is
/// refused, never truncated.
pub(crate) fn sdkappid_sql(sdkappid: u64) -> Result<i64, PgError> {
    i64::try_from(sdkappid).map_err(|_| PgError::SdkAppIdRange { sdkappid })
}

/// Builds the `Query` error of `state` for what was being done.
fn query_err(state: &PgLocation, doing: &'static str) -> impl FnOnce(postgres::Error) -> PgError {
    let state = state.to_string();
    move |source| PgError::Query {
        state,
        doing,
        source,
    }
}

/// Opens a session as the location says (TLS per `sslmode`), within `connect_timeout` when the
/// URL gives one. The driver's own connect timeout covers only the TCP connect; libpq's covers
/// the whole connection (TCP, TLS, startup, authentication), and so does this one: a server
/// that accepts and never answers (a stopped postmaster, a pooler queueing clients) fails
/// after `connect_timeout` instead of hanging.
pub(crate) fn connect(location: &PgLocation) -> Result<postgres::Client, PgError> {
    let Some(limit) = location.connect_timeout else {
        return connect_unbounded(location);
    };
    // The blocking driver cannot be cancelled: the attempt runs on a thread of its own, which
    // is left behind past the limit (a late session is dropped, closing it, when it comes).
    let (tx, rx) = std::sync::mpsc::channel();
    let attempt = location.clone();
    let spawned = std::thread::Builder::new()
        .name("timctl-pg-connect".to_owned())
        .spawn(move || {
            let _ = tx.send(connect_unbounded(&attempt));
        });
    if spawned.is_err() {
        return connect_unbounded(location);
    }
    match rx.recv_timeout(limit) {
        Ok(connected) => connected,
        Err(_) => Err(PgError::ConnectTimeout {
            state: location.to_string(),
            seconds: limit.as_secs(),
        }),
    }
}

/// Opens the session, then bounds every statement on it ([`config::STATEMENT_TIMEOUT`]): a
/// statement the server cannot finish (a lock it waits for, a stalled disk) fails instead of
/// hanging, which stops an apply, as a lost session does.
fn connect_unbounded(location: &PgLocation) -> Result<postgres::Client, PgError> {
    let config = location.driver_config();
    let connected = match location.tls_config()? {
        None => config.connect(postgres::NoTls),
        Some(tls) => config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls)),
    };
    let mut client = connected.map_err(|source| PgError::Connect {
        state: location.to_string(),
        source,
    })?;
    client
        .batch_execute(&format!(
            "SET statement_timeout = {}",
            config::STATEMENT_TIMEOUT.as_millis()
        ))
        .map_err(query_err(location, "setting the statement timeout"))?;
    Ok(client)
}

/// The schema version of the database: 0 when timctl's schema is not there yet.
fn schema_version(
    client: &mut impl postgres::GenericClient,
    location: &PgLocation,
) -> Result<u32, PgError> {
    let doing = "reading its schema version";
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('timctl.schema_version') IS NOT NULL",
            &[],
        )
        .map_err(query_err(location, doing))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let version: i32 = client
        .query_one(
            "SELECT version FROM timctl.schema_version WHERE id = 1",
            &[],
        )
        .map_err(query_err(location, doing))?
        .get(0);
    let version = u32::try_from(version).map_err(|_| PgError::Corrupt {
        state: location.to_string(),
        what: format!("schema version {version}"),
    })?;
    if version > SCHEMA_VERSION {
        return Err(PgError::NewerSchema {
            state: location.to_string(),
            found: version,
            supported: SCHEMA_VERSION,
            version: env!("CARGO_PKG_VERSION"),
        });
    }
    Ok(version)
}

/// Creates or migrates timctl's schema to [`SCHEMA_VERSION`], in one transaction, under a
/// transaction-level advisory lock of its own so that concurrent first writers wait in turn.
pub(crate) fn migrate(client: &mut postgres::Client, location: &PgLocation) -> Result<(), PgError> {
    let doing = "migrating its schema";
    // Up to date is the common case, and needs no lock and no privilege beyond the schema's.
    if schema_version(client, location)? == SCHEMA_VERSION {
        return Ok(());
    }
    let mut tx = client.transaction().map_err(query_err(location, doing))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, 0)",
        &[&lock::SCHEMA_NAMESPACE],
    )
    .map_err(query_err(location, doing))?;
    // Only when missing: `CREATE SCHEMA IF NOT EXISTS` would need the CREATE privilege on the
    // database even where a DBA made the schema beforehand.
    let has_schema: bool = tx
        .query_one("SELECT to_regnamespace('timctl') IS NOT NULL", &[])
        .map_err(query_err(location, doing))?
        .get(0);
    if !has_schema {
        tx.batch_execute("CREATE SCHEMA timctl")
            .map_err(query_err(location, doing))?;
    }
    let from = schema_version(&mut tx, location)?;
    if from < SCHEMA_VERSION {
        for migration in &MIGRATIONS[from as usize..] {
            tx.batch_execute(migration)
                .map_err(query_err(location, doing))?;
        }
        tx.execute(
            "UPDATE timctl.schema_version SET version = $1 WHERE id = 1",
            &[&(SCHEMA_VERSION as i32)],
        )
        .map_err(query_err(location, doing))?;
    }
    tx.commit().map_err(query_err(location, doing))
}

/// A `timctl.states` row: its ID and meta.
fn read_state_rows(
    client: &mut impl postgres::GenericClient,
    location: &PgLocation,
    name: &str,
    sdkappid: Option<u64>,
    schema_version: u32,
) -> Result<Vec<(i64, Meta)>, PgError> {
    let doing = "reading its meta";
    let sql = "SELECT id, sdkappid, lineage, serial, created_at, created_by FROM timctl.states
               WHERE name = $1 AND ($2::bigint IS NULL OR sdkappid = $2) ORDER BY sdkappid";
    let app = sdkappid.map(sdkappid_sql).transpose()?;
    let rows = client
        .query(sql, &[&name, &app])
        .map_err(query_err(location, doing))?;
    let corrupt = |what: String| PgError::Corrupt {
        state: location.to_string(),
        what,
    };
    rows.iter()
        .map(|r| {
            let (serial, sdkappid, created_at): (i64, i64, i64) = (r.get(3), r.get(1), r.get(4));
            Ok((
                r.get(0),
                Meta {
                    state: StateRef {
                        lineage: r.get(2),
                        serial: u64::try_from(serial)
                            .map_err(|_| corrupt(format!("serial {serial}")))?,
                    },
                    sdkappid: u64::try_from(sdkappid)
                        .map_err(|_| corrupt(format!("sdkappid {sdkappid}")))?,
                    created_at: jiff::Timestamp::from_second(created_at)
                        .map_err(|_| corrupt(format!("created_at {created_at}")))?,
                    created_by: r.get(5),
                    schema_version,
                },
            ))
        })
        .collect()
}

/// The columns of a run, as [`run_from_row`] reads them; a schema from before the history
/// reads as applies with nothing more known.
fn run_columns(schema_version: u32) -> &'static str {
    if schema_version >= HISTORY_SCHEMA {
        "id, run_id, timctl_version, manifest_digest, started_at, command, commit_id, host,
         os_user, ci_job_url, ended_at, counts::text"
    } else {
        "id, run_id, timctl_version, manifest_digest, started_at, 'apply', NULL::text,
         NULL::text, NULL::text, NULL::text, NULL::bigint, NULL::text"
    }
}

/// One row of [`run_columns`].
fn run_from_row(r: &postgres::Row, location: &PgLocation) -> Result<(i64, RunInfo), PgError> {
    let corrupt = |what: String| PgError::Corrupt {
        state: location.to_string(),
        what,
    };
    let (id, started_at, command): (i64, i64, &str) = (r.get(0), r.get(4), r.get(5));
    let ended_at: Option<i64> = r.get(10);
    Ok((
        id,
        RunInfo {
            run_id: r.get(1),
            command: RunCommand::parse(command)
                .ok_or_else(|| corrupt(format!("run {id} has the command {command:?}")))?,
            timctl_version: r.get(2),
            manifest_digest: r.get(3),
            origin: RunOrigin {
                commit: r.get(6),
                host: r.get(7),
                os_user: r.get(8),
                ci_job_url: r.get(9),
            },
            started_at: jiff::Timestamp::from_second(started_at)
                .map_err(|_| corrupt(format!("a run started at {started_at}")))?,
            ended_at: ended_at
                .map(|ms| {
                    jiff::Timestamp::from_millisecond(ms)
                        .map_err(|_| corrupt(format!("a run ended at {ms}")))
                })
                .transpose()?,
            counts: RunInfo::counts_from_json(r.get(11)),
        },
    ))
}

fn read_runs(
    client: &mut impl postgres::GenericClient,
    location: &PgLocation,
    state: i64,
    schema_version: u32,
) -> Result<Vec<(i64, RunInfo)>, PgError> {
    let rows = client
        .query(
            &format!(
                "SELECT {} FROM timctl.runs WHERE state = $1 ORDER BY id",
                run_columns(schema_version)
            ),
            &[&state],
        )
        .map_err(query_err(location, "reading runs"))?;
    rows.iter().map(|r| run_from_row(r, location)).collect()
}

/// Meta, runs and entries of `state`, read through `client` (inside one transaction).
fn read_snapshot(
    client: &mut impl postgres::GenericClient,
    location: &PgLocation,
    state: i64,
    meta: Meta,
) -> Result<Snapshot, PgError> {
    let runs = read_runs(client, location, state, meta.schema_version)?;
    // Runs are few; mapping their IDs in memory is cheaper than a join per entry.
    let by_id: HashMap<i64, uuid::Uuid> = runs.iter().map(|(id, r)| (*id, r.run_id)).collect();
    // Schema 1 had no origin column: everything in it was deleted by timctl.
    let has_origin = meta.schema_version >= 2;
    let entries = read_entries(client, location, state, &by_id, has_origin)?;
    Ok(Snapshot {
        meta,
        runs: runs.into_iter().map(|(_, r)| r).collect(),
        entries,
    })
}

/// Every entry of `state`, in one streamed query (the rows are decoded as they arrive, never
/// one query per user), in byte order of (`from`, type, peer).
fn read_entries(
    client: &mut impl postgres::GenericClient,
    location: &PgLocation,
    state: i64,
    runs: &HashMap<i64, uuid::Uuid>,
    has_origin: bool,
) -> Result<Vec<StateEntry>, PgError> {
    let doing = "reading entries";
    // The primary key's index already holds the entries in this order. Without a fresh
    // ANALYZE (autovacuum runs it minutes after a big apply, if ever) the planner takes the
    // table for small, and sorts it instead: at 1M entries, an external merge sort on disk that
    // made a plan twice as slow. Forbidding sorts for the rest of the caller's transaction
    // (both callers hold one; `SET LOCAL` does nothing outside one) keeps the index's order.
    client
        .batch_execute("SET LOCAL enable_sort = off")
        .map_err(query_err(location, doing))?;
    // Not sized from a `count(*)`: that is a second pass over the table, and a count is not
    // something to allocate by.
    let mut entries = Vec::new();
    let mut rows = client
        .query_raw(
            if has_origin {
                "SELECT from_account, kind, peer, clear_roaming, deleted_at, run, origin
                 FROM timctl.entries WHERE state = $1 ORDER BY from_account, kind, peer"
            } else {
                "SELECT from_account, kind, peer, clear_roaming, deleted_at, run, 'deleted'
                 FROM timctl.entries WHERE state = $1 ORDER BY from_account, kind, peer"
            },
            [&state],
        )
        .map_err(query_err(location, doing))?;
    let corrupt = |what: String| PgError::Corrupt {
        state: location.to_string(),
        what,
    };
    while let Some(r) = rows.next().map_err(query_err(location, doing))? {
        let from = UserId::new(r.get::<_, &str>(0))
            .map_err(|e| corrupt(format!("an entry's From_Account: {e}")))?;
        let kind = r.get::<_, i16>(1);
        let kind = kind_of_code(i64::from(kind))
            .ok_or_else(|| corrupt(format!("an entry of {from} has type {kind}")))?;
        let peer = Peer::from_parts(kind, r.get::<_, &str>(2))
            .map_err(|e| corrupt(format!("an entry of {from} has a bad peer: {e}")))?;
        let (deleted_at, run): (i64, i64) = (r.get(4), r.get(5));
        let origin = crate::ledger::Origin::parse(r.get::<_, &str>(6))
            .ok_or_else(|| corrupt(format!("the entry {from} {peer} has an unknown origin")))?;
        let run_id = *runs
            .get(&run)
            .ok_or_else(|| corrupt(format!("the entry {from} {peer} names no known run")))?;
        entries.push(StateEntry {
            deleted_at: jiff::Timestamp::from_second(deleted_at).map_err(|_| {
                corrupt(format!(
                    "the entry {from} {peer} was deleted at {deleted_at}"
                ))
            })?,
            clear_roaming: r.get(3),
            key: ConversationKey::new(from, peer),
            run_id,
            origin,
        });
    }
    Ok(entries)
}

/// An open `REPEATABLE READ` transaction, and the state's row.
#[derive(Debug)]
struct ReadTx {
    client: Session,
    state: i64,
}

/// A session, shared by `&self` reads and `&mut self` writes. It is closed off any async
/// runtime (see [`off_runtime`]); the `Option` is `None` only inside `drop`.
struct Session(Option<Mutex<postgres::Client>>);

impl Session {
    fn new(client: postgres::Client) -> Self {
        Self(Some(Mutex::new(client)))
    }

    fn get_mut(&mut self) -> &mut postgres::Client {
        self.0
            .as_mut()
            .expect("a session is only taken when dropped")
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            off_runtime(move || drop(client));
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session")
    }
}

fn lock_client(client: &Session) -> MutexGuard<'_, postgres::Client> {
    // A panic while holding it leaves nothing half-done that matters: each write is a
    // transaction the server rolls back.
    client
        .0
        .as_ref()
        .expect("a session is only taken when dropped")
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Runs `f`, which uses the synchronous driver, where it may block. The driver drives its
/// connection on a runtime of its own, which tokio forbids starting (or dropping) on a thread
/// that is driving async tasks; apply records from inside its runtime. There `f` runs on a
/// thread of its own (one per batch: nothing next to a network round trip); anywhere else, in
/// place.
pub(crate) fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|scope| {
        scope
            .spawn(f)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A PostgreSQL state opened for reading: no lock, and no write of any kind (not even the
/// schema). Meta, runs and entries are read in one `REPEATABLE READ` transaction.
#[derive(Debug)]
pub struct PgLedger {
    location: PgLocation,
    name: String,
    meta: Option<Meta>,
    read: Option<ReadTx>,
}

impl PgLedger {
    /// Opens the state `name` of `sdkappid` for reading; with no SDKAppID, the only app that has
    /// a state of that name (an error naming them when there are several). No state yet is not
    /// an error: the ledger is empty.
    pub fn open_read_only(
        location: &PgLocation,
        name: &str,
        sdkappid: Option<u64>,
    ) -> Result<Self, PgError> {
        let mut client = connect(location)?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .map_err(query_err(location, "starting a read"))?;
        let version = schema_version(&mut client, location)?;
        let mut rows = if version == 0 {
            Vec::new()
        } else {
            read_state_rows(&mut client, location, name, sdkappid, version)?
        };
        if rows.len() > 1 {
            return Err(PgError::WhichApp {
                state: location.to_string(),
                apps: rows.iter().map(|(_, m)| m.sdkappid).collect(),
            });
        }
        let (meta, read) = match rows.pop() {
            Some((state, meta)) => (
                Some(meta),
                Some(ReadTx {
                    client: Session::new(client),
                    state,
                }),
            ),
            None => (None, None),
        };
        Ok(Self {
            location: location.clone(),
            name: name.to_owned(),
            meta,
            read,
        })
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// `location` and the state name, for messages.
fn shown(location: &PgLocation, name: &str) -> String {
    format!("{location} (state {name:?})")
}

impl Ledger for PgLedger {
    fn location(&self) -> String {
        shown(&self.location, &self.name)
    }

    fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, super::LedgerError> {
        let (Some(meta), Some(read)) = (&self.meta, &self.read) else {
            return Ok(None);
        };
        // The meta was read in this same transaction, when the ledger was opened.
        off_runtime(|| {
            let mut client = lock_client(&read.client);
            Ok(Some(read_snapshot(
                &mut *client,
                &self.location,
                read.state,
                meta.clone(),
            )?))
        })
    }
}
