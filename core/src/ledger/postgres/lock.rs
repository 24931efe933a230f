//! The lock of a PostgreSQL state: a session-level advisory lock, held by the session that
//! writes, so that nothing a crash leaves behind can keep it: when the holder's session ends
//! (exit, SIGKILL, or TCP keepalives giving up on a vanished runner), the server releases it.
//!
//! The key is `pg_try_advisory_lock(int4, int4)`: the first half is timctl's namespace,
//! [`NAMESPACE`] (`"TIMC"` in ASCII), so timctl's locks never meet an application's single-key
//! locks; the second is the first four bytes (big-endian, as a signed `int4`) of
//! `BLAKE3("timctl state lock\0" || SDKAppID as 8 bytes big-endian || state name)`. A u64
//! SDKAppID and a name do not fit 32 bits, so two states may share a key (about one chance in
//! four billion per pair): then they merely wait for each other; nothing is ever written to the
//! wrong state, whose row is found by (SDKAppID, name).
//!
//! The holder writes a row into `timctl.lock_holders` so that a refused run can name it; the
//! row is believed only while its backend still holds an advisory lock (`pg_locks`), so a stale
//! row left by a killed holder names nobody.

use std::time::{Duration, Instant};

use super::{PgError, PgLocation, query_err, schema_version, sdkappid_sql};

/// The first key of every timctl state lock: "TIMC".
pub const NAMESPACE: i32 = 0x5449_4d43;

/// The first key of the schema migration's transaction lock: "TIMS".
pub(crate) const SCHEMA_NAMESPACE: i32 = 0x5449_4d53;

/// How often a waiting `--lock-timeout` tries again.
const POLL: Duration = Duration::from_millis(200);

/// The second key of the state's lock (see the module's documentation).
pub fn state_key(sdkappid: u64, name: &str) -> i32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"timctl state lock\0");
    hasher.update(&sdkappid.to_be_bytes());
    hasher.update(name.as_bytes());
    let hash = hasher.finalize();
    let b = hash.as_bytes();
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Who holds a PostgreSQL state's lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgLockHolder {
    /// The holder's host name.
    pub host: String,
    /// The holder's process ID on that host.
    pub client_pid: u32,
    /// The server process of the holder's session (`pg_backend_pid()`).
    pub backend_pid: i32,
    /// What it is doing (`apply`, `state rm`).
    pub operation: String,
    /// Since when.
    pub since: jiff::Timestamp,
}

impl std::fmt::Display for PgLockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (pid {} on {}, database backend pid {}, since {})",
            self.operation,
            self.client_pid,
            self.host,
            self.backend_pid,
            self.since.strftime("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// Takes the lock on `session`, polling up to `timeout`; refused, it names the holder.
pub(crate) fn acquire(
    session: &mut postgres::Client,
    location: &PgLocation,
    name: &str,
    sdkappid: u64,
    operation: &str,
    timeout: Duration,
) -> Result<PgLockHolder, PgError> {
    // The server's keepalives on this session: a runner that vanishes (its machine gone, the
    // network cut) stops answering, and the server ends the session, releasing the lock, after
    // about 30 + 6 × 10 seconds. They are settings any role may change for its session; on a
    // Unix socket they do nothing.
    session
        .batch_execute(
            "SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; \
             SET tcp_keepalives_count = 6",
        )
        .map_err(query_err(location, "setting keepalives"))?;
    let key = state_key(sdkappid, name);
    let start = Instant::now();
    loop {
        let got: bool = session
            .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&NAMESPACE, &key])
            .map_err(query_err(location, "taking the lock"))?
            .get(0);
        if got {
            break;
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(PgError::Locked {
                state: format!("{location} (state {name:?})"),
                holder: read_holder(session, location, name, sdkappid).unwrap_or(None),
                waited,
            });
        }
        std::thread::sleep(POLL.min(timeout - waited));
    }
    let backend_pid: i32 = session
        .query_one("SELECT pg_backend_pid()", &[])
        .map_err(query_err(location, "taking the lock"))?
        .get(0);
    Ok(PgLockHolder {
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        client_pid: std::process::id(),
        backend_pid,
        operation: operation.to_owned(),
        since: jiff::Timestamp::now(),
    })
}

/// Writes the holder row (the schema must exist), as this session.
pub(crate) fn write_holder(
    session: &mut postgres::Client,
    location: &PgLocation,
    name: &str,
    sdkappid: u64,
    holder: &PgLockHolder,
) -> Result<(), PgError> {
    session
        .execute(
            "INSERT INTO timctl.lock_holders
               (sdkappid, name, host, client_pid, backend_pid, operation, since)
             VALUES ($1, $2, $3, $4, pg_backend_pid(), $5, $6)
             ON CONFLICT (sdkappid, name) DO UPDATE SET
                host = excluded.host, client_pid = excluded.client_pid,
                backend_pid = excluded.backend_pid, operation = excluded.operation,
                since = excluded.since",
            &[
                &sdkappid_sql(sdkappid)?,
                &name,
                &holder.host,
                &i64::from(holder.client_pid),
                &holder.operation,
                &holder.since.as_second(),
            ],
        )
        .map_err(query_err(location, "writing the lock's holder"))?;
    Ok(())
}

/// Reads who holds the lock: the holder row, if its backend still holds an advisory lock.
fn read_holder(
    session: &mut postgres::Client,
    location: &PgLocation,
    name: &str,
    sdkappid: u64,
) -> Result<Option<PgLockHolder>, PgError> {
    if schema_version(session, location)? == 0 {
        return Ok(None);
    }
    let row = session
        .query_opt(
            "SELECT h.host, h.client_pid, h.backend_pid, h.operation, h.since
             FROM timctl.lock_holders h
             WHERE h.sdkappid = $1 AND h.name = $2 AND EXISTS (
                SELECT 1 FROM pg_locks l
                WHERE l.locktype = 'advisory' AND l.granted AND l.pid = h.backend_pid)",
            &[&sdkappid_sql(sdkappid)?, &name],
        )
        .map_err(query_err(location, "reading who holds the lock"))?;
    Ok(row.map(|r| PgLockHolder {
        host: r.get(0),
        client_pid: u32::try_from(r.get::<_, i64>(1)).unwrap_or(0),
        backend_pid: r.get(2),
        operation: r.get(3),
        since: jiff::Timestamp::from_second(r.get(4)).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
    }))
}

/// Clears the holder row and releases the lock. Best effort: a lost session has released it.
pub(crate) fn release(session: &mut postgres::Client, name: &str, sdkappid: u64) {
    let Ok(app) = sdkappid_sql(sdkappid) else {
        return;
    };
    let _ = session.execute(
        "DELETE FROM timctl.lock_holders
         WHERE sdkappid = $1 AND name = $2 AND backend_pid = pg_backend_pid()",
        &[&app, &name],
    );
    let _ = session.execute(
        "SELECT pg_advisory_unlock($1, $2)",
        &[&NAMESPACE, &state_key(sdkappid, name)],
    );
}
