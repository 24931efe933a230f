//! Why the PostgreSQL writer writes a batch the way it does (BENCHMARKS.md): 100 batches of 1000
//! new entries, each one statement of the writer's shape (the write and the serial bump in one
//! `WITH`, prepared once), five ways:
//!
//! - an upsert with the two foreign keys schema 2 had on entries;
//! - an upsert without them (schema 3);
//! - a plain insert without them (what the writer does until a batch names a recorded entry);
//! - that insert with an event appended for every entry in the same statement, as the writer
//!   does since the history (schema 4), but into an `events` table stripped of its primary key
//!   and indexes: what the event rows alone cost;
//! - the same with the `events` table as schema 4 has it (the identity primary key and the
//!   three indexes on time, user and peer): what the history costs the server.
//!
//! The entries are `bench::key`'s, as the state benchmark records. Each shape writes into a
//! fresh database of one throwaway cluster (fsync on), the three interleaved, three rounds;
//! every time, and the medians. The statements are written out here rather than taken
//! from the writer: this measures shapes, so that a change of shape can be measured first.
//!
//! `cargo bench -p timctl-tests --bench pg_write_shapes` (`SHAPES_BATCHES` for another count).

use std::time::{Duration, Instant};

use timctl_core::ids::PeerKind;
use timctl_core::ledger::{LedgerWriter, LocatedStore, RunInfo, StateLocation, StateName};
use timctl_tests::bench;
use timctl_tests::pg::PgCluster;

const APP: u64 = 1_400_000_001;
const BATCH: usize = 1000;

const INSERT: &str = "INSERT INTO timctl.entries
        (state, from_account, kind, peer, clear_roaming, deleted_at, run, origin)
     SELECT $1, * FROM unnest($2::text[], $3::smallint[], $4::text[], $5::boolean[],
                              $6::bigint[], $7::bigint[], $8::text[])";

const ON_CONFLICT: &str = "ON CONFLICT (state, from_account, kind, peer) DO UPDATE SET
        clear_roaming = excluded.clear_roaming, deleted_at = excluded.deleted_at,
        run = excluded.run, origin = excluded.origin";

/// The writer's statement with the history: the entries and their events from one `unnest`
/// (`$9` the events' times in milliseconds, `$10` their reasons, `$11` their action), in the
/// order of the batch.
const INSERT_WITH_EVENTS: &str = "WITH input AS (
        SELECT * FROM unnest($2::text[], $3::smallint[], $4::text[], $5::boolean[],
                             $6::bigint[], $7::bigint[], $8::text[], $9::bigint[], $10::text[])
          WITH ORDINALITY
          AS i(from_account, kind, peer, clear_roaming, deleted_at, run, origin, at, reason, n)),
     written AS (
        INSERT INTO timctl.entries
          (state, from_account, kind, peer, clear_roaming, deleted_at, run, origin)
        SELECT $1, from_account, kind, peer, clear_roaming, deleted_at, run, origin FROM input
        RETURNING 1),
     logged AS (
        INSERT INTO timctl.events
          (state, at, action, reason, from_account, kind, peer, clear_roaming, run)
        SELECT $1, at, $11, reason, from_account, kind, peer, clear_roaming, run FROM input
        ORDER BY n)
     UPDATE timctl.states SET serial = serial + 1
     WHERE id = $1 AND EXISTS (SELECT 1 FROM written) RETURNING serial";

#[derive(Clone, Copy, Debug)]
enum Shape {
    UpsertWithForeignKeys,
    Upsert,
    Insert,
    InsertWithUnindexedEvents,
    InsertWithEvents,
}

impl Shape {
    fn sql(self) -> String {
        let write = match self {
            Shape::UpsertWithForeignKeys | Shape::Upsert => format!("{INSERT} {ON_CONFLICT}"),
            Shape::Insert => INSERT.to_owned(),
            Shape::InsertWithUnindexedEvents | Shape::InsertWithEvents => {
                return INSERT_WITH_EVENTS.to_owned();
            }
        };
        format!(
            "WITH written AS ({write} RETURNING 1)
             UPDATE timctl.states SET serial = serial + 1 WHERE id = $1 RETURNING serial"
        )
    }

    fn with_events(self) -> bool {
        matches!(
            self,
            Shape::InsertWithUnindexedEvents | Shape::InsertWithEvents
        )
    }
}

/// Writes `batches` batches of new entries in `shape` into a fresh state of a new database.
fn write(cluster: &PgCluster, shape: Shape, batches: usize) -> Duration {
    let url = cluster.url_with_password(&cluster.database());
    // timctl makes the schema, the state and the run, as apply would.
    let store = LocatedStore::new(
        StateLocation::parse(url.as_ref()).unwrap(),
        StateName::default(),
    )
    .unwrap();
    let mut writer = store
        .create_or_open_writer(APP, "bench", Duration::ZERO)
        .unwrap();
    writer.begin_run(&RunInfo::new("bench")).unwrap();
    drop(writer);

    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    if let Shape::UpsertWithForeignKeys = shape {
        client
            .batch_execute(
                "ALTER TABLE timctl.entries
                   ADD FOREIGN KEY (state) REFERENCES timctl.states (id) ON DELETE CASCADE,
                   ADD FOREIGN KEY (run) REFERENCES timctl.runs (id) ON DELETE CASCADE",
            )
            .unwrap();
    }
    if let Shape::InsertWithUnindexedEvents = shape {
        client
            .batch_execute(
                "ALTER TABLE timctl.events DROP CONSTRAINT events_pkey;
                 DROP INDEX timctl.events_state_at, timctl.events_state_from,
                            timctl.events_state_peer",
            )
            .unwrap();
    }
    let (state, run): (i64, i64) = {
        let row = client
            .query_one("SELECT state, id FROM timctl.runs", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    let statement = client.prepare(&shape.sql()).unwrap();
    let started = Instant::now();
    for b in 0..batches {
        let keys: Vec<_> = (b * BATCH..(b + 1) * BATCH).map(bench::key).collect();
        let from: Vec<&str> = keys.iter().map(|k| k.from.as_str()).collect();
        let kind: Vec<i16> = keys
            .iter()
            .map(|k| match k.peer.kind() {
                PeerKind::User => 1,
                PeerKind::Group => 2,
            })
            .collect();
        let peer: Vec<&str> = keys.iter().map(|k| k.peer.id()).collect();
        let clear_roaming: Vec<bool> = (0..BATCH).map(|i| i.is_multiple_of(3)).collect();
        let deleted_at = vec![1_700_000_000_i64; BATCH];
        let runs = vec![run; BATCH];
        let origin = vec!["deleted"; BATCH];
        let at: Vec<i64> = (0..BATCH as i64)
            .map(|i| 1_700_000_000_000 + (b * BATCH) as i64 + i)
            .collect();
        let reason = vec!["new"; BATCH];
        let entries: [&(dyn postgres::types::ToSql + Sync); 8] = [
            &state,
            &from,
            &kind,
            &peer,
            &clear_roaming,
            &deleted_at,
            &runs,
            &origin,
        ];
        let events: [&(dyn postgres::types::ToSql + Sync); 3] = [&at, &reason, &"deleted"];
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = if shape.with_events() {
            entries.iter().chain(&events).copied().collect()
        } else {
            entries.to_vec()
        };
        client.query_one(&statement, &params).unwrap();
    }
    started.elapsed()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let batches = bench::size("SHAPES_BATCHES", if full { 100 } else { 2 });
    let rounds = if full { 3 } else { 1 };
    let cluster = PgCluster::start();
    let shapes = [
        Shape::UpsertWithForeignKeys,
        Shape::Upsert,
        Shape::Insert,
        Shape::InsertWithUnindexedEvents,
        Shape::InsertWithEvents,
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); shapes.len()];
    for _ in 0..rounds {
        for (s, shape) in shapes.iter().enumerate() {
            times[s].push(write(&cluster, *shape, batches));
        }
    }
    println!("{batches} batches of {BATCH} new entries, one statement each:");
    let mut medians = Vec::new();
    for (shape, mut t) in shapes.iter().zip(times) {
        let all: Vec<String> = t.iter().map(|d| format!("{d:.2?}")).collect();
        t.sort();
        let median = t[t.len() / 2];
        medians.push(median);
        println!("  {shape:?}: median {median:.2?} ({})", all.join(", "));
    }
    // The history's cost against the insert without it, the writer's shape before schema 4.
    let insert = medians[2].as_secs_f64();
    for (shape, median) in shapes.iter().zip(&medians).skip(3) {
        println!("  {shape:?} / Insert: {:.2}", median.as_secs_f64() / insert);
    }
}
