//! The PostgreSQL state against the SQLite one (BENCHMARKS.md), on a throwaway local cluster
//! (`tests/src/pg.rs`; fsync on, as SQLite's `synchronous=FULL`):
//!
//! 1. recording: 100k confirmed deletions written as apply writes them, in batches of 1000 (a
//!    fast server: the executor's batch limit) and of 50 (200 calls/s flushed every 250 ms);
//! 2. planning against a 1M-entry state, half of it in a 1M-entry manifest: reading the state
//!    (one snapshot); opening, reading and diffing it (`plan::make`), the part of a plan that
//!    depends on the backend; and the whole `timctl plan --format json` (release binary, the
//!    manifest loaded from YAML), as a user runs it.
//!
//! Medians of 3; ratios PostgreSQL / SQLite.
//! `cargo bench -p timctl-tests --bench state_postgres` (`STATE_BENCH_N` for another plan size).

use std::process::Stdio;
use std::time::{Duration, Instant};

use timctl_core::api::Region;
use timctl_core::desired::{App, DesiredEntry, DesiredState};
use timctl_core::ids::{ConversationKey, UserId};
use timctl_core::ledger::{
    self, AnyWriter, Deleted, Ledger, LedgerWriter, LocatedStore, RunInfo, StateLocation, StateName,
};
use timctl_core::plan::{self, Filter};
use timctl_tests::bench;
use timctl_tests::pg::PgCluster;

const APP: u64 = 1_400_000_001;

fn deleted(i: usize) -> Deleted {
    Deleted {
        key: bench::key(i),
        clear_roaming: i.is_multiple_of(3),
        deleted_at: jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    }
}

/// The plan's keys: those of [`bench::write_manifest`] at 100 per user.
fn plan_key(i: usize) -> ConversationKey {
    let from = UserId::new(format!("user{}", i / 100)).unwrap();
    ConversationKey::new(from, format!("user:peer{}", i % 100).parse().unwrap())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn writer(location: &StateLocation) -> AnyWriter {
    LocatedStore::new(location.clone(), StateName::default())
        .unwrap()
        .create_or_open_writer(APP, "bench", Duration::ZERO)
        .unwrap()
}

/// A fresh state of each backend, as `--state` says it: an SQLite file in `dir`, a new
/// database of `cluster`.
fn fresh(cluster: &PgCluster, dir: &tempfile::TempDir, run: usize) -> [String; 2] {
    let sqlite = dir.path().join(format!("state{run}.db"));
    [
        sqlite.to_str().unwrap().to_owned(),
        cluster.url_with_password(&cluster.database()),
    ]
}

fn location(state: &str) -> StateLocation {
    StateLocation::parse(state.as_ref()).unwrap()
}

fn record(location: &StateLocation, n: usize, batch: usize) -> Duration {
    let mut w = writer(location);
    let run = RunInfo::new("bench");
    let all: Vec<Deleted> = (0..n).map(deleted).collect();
    let t = Instant::now();
    for chunk in all.chunks(batch) {
        w.record_deleted(&run, chunk).unwrap();
    }
    t.elapsed()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runs = if full { 3 } else { 1 };
    let record_n = if full { 100_000 } else { 2_000 };
    let plan_n: usize = std::env::var("STATE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 2_000 });
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let names = ["SQLite", "PostgreSQL"];

    for batch in [1000, 50] {
        let mut times = [Vec::new(), Vec::new()];
        for r in 0..runs {
            for (b, state) in fresh(&cluster, &dir, r * 10 + batch).iter().enumerate() {
                times[b].push(record(&location(state), record_n, batch));
            }
        }
        let [s, p] = times.map(median);
        println!(
            "record {record_n} in batches of {batch}: {}: {s:.2?} ({:.0}/s), {}: {p:.2?} ({:.0}/s); ratio {:.2}",
            names[0],
            record_n as f64 / s.as_secs_f64(),
            names[1],
            record_n as f64 / p.as_secs_f64(),
            p.as_secs_f64() / s.as_secs_f64()
        );
    }

    // Planning against a state of plan_n entries, half of them in the desired state.
    let states = fresh(&cluster, &dir, 999);
    let locations = states.each_ref().map(|s| location(s));
    for location in &locations {
        let mut w = writer(location);
        let run = RunInfo::new("bench");
        let all: Vec<Deleted> = (plan_n / 2..plan_n + plan_n / 2)
            .map(|i| Deleted {
                key: plan_key(i),
                clear_roaming: false,
                deleted_at: jiff::Timestamp::from_second(1_700_000_000).unwrap(),
            })
            .collect();
        for chunk in all.chunks(10_000) {
            w.record_deleted(&run, chunk).unwrap();
        }
    }
    let manifest = bench::write_manifest(dir.path(), plan_n, 100);
    let mut entries: Vec<DesiredEntry> = (0..plan_n)
        .map(|i| DesiredEntry {
            key: plan_key(i),
            clear_roaming: false,
        })
        .collect();
    entries.sort();
    let desired = DesiredState {
        app: App {
            sdkappid: APP,
            region: Region::Singapore,
            admin: UserId::new("administrator").unwrap(),
        },
        entries,
        digest: "bench".into(),
        files: 1,
    };
    // Built (or found up to date) before any timing.
    timctl_tests::timctl_bin();
    let mut read_times = [Vec::new(), Vec::new()];
    let mut plan_times = [Vec::new(), Vec::new()];
    let mut command_times = [Vec::new(), Vec::new()];
    for _ in 0..runs {
        for (b, location) in locations.iter().enumerate() {
            let t = Instant::now();
            let l = ledger::open_read(location, &StateName::default(), Some(APP)).unwrap();
            let snapshot = l.snapshot().unwrap().unwrap();
            read_times[b].push(t.elapsed());
            assert_eq!(snapshot.entries.len(), plan_n);
            drop(snapshot);
            let t = Instant::now();
            let l = ledger::open_read(location, &StateName::default(), Some(APP)).unwrap();
            let plan = plan::make(&desired, &l, &Filter::default(), None).unwrap();
            plan_times[b].push(t.elapsed());
            assert_eq!(plan.summary.delete as usize, plan_n / 2);
            assert_eq!(plan.summary.forget as usize, plan_n / 2);

            let t = Instant::now();
            let status = timctl_tests::timctl()
                .args(["plan", "--format", "json", "-f"])
                .arg(&manifest)
                .env("TIMCTL_STATE", &states[b])
                .stdout(Stdio::null())
                .status()
                .unwrap();
            command_times[b].push(t.elapsed());
            assert!(status.success());
        }
    }
    let [rs, rp] = read_times.map(median);
    let [ps, pp] = plan_times.map(median);
    let [cs, cp] = command_times.map(median);
    println!(
        "read {plan_n} entries: SQLite {rs:.2?}, PostgreSQL {rp:.2?}; ratio {:.2}",
        rp.as_secs_f64() / rs.as_secs_f64()
    );
    println!(
        "open + read + diff against {plan_n} desired: SQLite {ps:.2?}, PostgreSQL {pp:.2?}; ratio {:.2}",
        pp.as_secs_f64() / ps.as_secs_f64()
    );
    println!(
        "timctl plan --format json, {plan_n} in the manifest: SQLite {cs:.2?}, PostgreSQL {cp:.2?}; ratio {:.2}",
        cp.as_secs_f64() / cs.as_secs_f64()
    );
}
