//! The history (BENCHMARKS.md, "History"): what it costs to record, how fast it answers, and
//! how much memory streaming it takes.
//!
//! 1. Recording at a fast fake (no latency, no limit, `--rate 50000`): `timctl apply` of
//!    `HISTORY_FAST_N` deletions (default 100,000) with this timctl and with the binary named
//!    by `HISTORY_BASE_TIMCTL` (the commit before the history, built beforehand), state in
//!    SQLite and in PostgreSQL, each run on a fresh state, interleaved; the time apply spent
//!    recording, from its own debug line (`recording_ms=`), medians of `HISTORY_RUNS` (3).
//! 2. A history of `HISTORY_N` events (default 10,000,000) generated directly in the database
//!    (100,000 users with 100 events each, 997 peers): the median wall time of the whole
//!    command `timctl state history --user U` and `--peer user:P` (11 runs each), and the
//!    state's size per event.
//! 3. Peak RSS (the child's VmHWM) of `timctl state history --json --limit N` with stdout to
//!    /dev/null, streaming a tenth of the history and all of it.
//!
//! `HISTORY_BASE_TIMCTL=/path/to/old/timctl cargo bench -p timctl-tests --bench history`
//! (without it, part 1 measures this timctl only). `HISTORY_OTHER_TIMCTL` names one more
//! binary with the history (an earlier build of this timctl, to measure a change to the
//! writer), measured in the same rounds.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use timctl_core::ledger::{LedgerWriter, LocatedStore, RunInfo, StateLocation, StateName};
use timctl_tests::measure::{mib, status_kb};
use timctl_tests::pg::PgCluster;
use timctl_tests::{FakeConfig, FakeTim, bench};

const KEY: &str = "bench-history-key";
const APP: u64 = 1_400_000_001;

/// The time `timctl` at `bin` spent recording an apply of `n` deletions against `fake`.
fn recording(bin: &Path, fake: &FakeTim, n: usize, state: &str) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let m = bench::write_manifest(dir.path(), n, 10);
    // The same clean environment, for either binary.
    let mut cmd = Command::new(bin);
    cmd.env_clear();
    let out = cmd
        .arg("apply")
        .arg("-f")
        .arg(&m)
        .args([
            "--auto-approve",
            "--json",
            "-q",
            "--rate",
            "50000",
            "--concurrency",
            "64",
        ])
        .env("TIMCTL_STATE", state)
        .env("TIMCTL_ENDPOINT", fake.url())
        .env("TIMCTL_SECRET_KEY", KEY)
        .env("TIMCTL_LOG", "timctl_core::apply::executor=debug")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ms: u64 = stderr
        .split_whitespace()
        .find_map(|field| field.strip_prefix("recording_ms="))
        .unwrap_or_else(|| panic!("no recording line in: {stderr}"))
        .parse()
        .unwrap();
    Duration::from_millis(ms)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn part_1(rt: &tokio::runtime::Runtime, cluster: &PgCluster, n: usize, runs: usize) {
    let fake = rt
        .block_on(FakeTim::start(FakeConfig {
            secret_key: KEY.into(),
            latency: (Duration::ZERO, Duration::ZERO),
            limit_per_second: u32::MAX,
            ..FakeConfig::default()
        }))
        .unwrap();
    let now = timctl_tests::timctl_bin().to_owned();
    let base = std::env::var_os("HISTORY_BASE_TIMCTL").map(std::path::PathBuf::from);
    let dir = tempfile::tempdir().unwrap();
    let mut file = 0;
    let mut sqlite = || {
        file += 1;
        dir.path()
            .join(format!("s{file}.db"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let pg = || cluster.url_with_password(&cluster.database());
    let other = std::env::var_os("HISTORY_OTHER_TIMCTL").map(std::path::PathBuf::from);
    let mut bins: Vec<(&str, &Path)> = Vec::new();
    if let Some(base) = &base {
        bins.push(("without history", base));
    }
    if let Some(other) = &other {
        bins.push(("with history, HISTORY_OTHER_TIMCTL", other));
    }
    bins.push(("with history", &now));
    let mut times = vec![(Vec::new(), Vec::new()); bins.len()];
    for _ in 0..runs {
        for (i, (_, bin)) in bins.iter().enumerate() {
            times[i].0.push(recording(bin, &fake, n, &sqlite()));
            times[i].1.push(recording(bin, &fake, n, &pg()));
        }
    }
    println!("| apply {n} at a fast fake, time spent recording | SQLite | PostgreSQL |");
    println!("|---|--:|--:|");
    // Every run after the median: on a shared machine their spread says how far to trust it.
    let runs_of = |v: &[Duration]| {
        let all: Vec<String> = v
            .iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect();
        all.join(", ")
    };
    for ((label, _), (s, p)) in bins.iter().zip(&times) {
        println!(
            "| {label} | {:.2?} ({}) | {:.2?} ({}) |",
            median(s.clone()),
            runs_of(s),
            median(p.clone()),
            runs_of(p)
        );
    }
    let medians: Vec<(Duration, Duration)> = times
        .into_iter()
        .map(|(s, p)| (median(s), median(p)))
        .collect();
    // Each binary with the history against the one without.
    if base.is_some() {
        let (s0, p0) = medians[0];
        for ((label, _), (s, p)) in bins.iter().zip(&medians).skip(1) {
            println!(
                "| ratio, {label} | {:.2} | {:.2} |",
                s.as_secs_f64() / s0.as_secs_f64(),
                p.as_secs_f64() / p0.as_secs_f64()
            );
        }
    }
}

/// A state with one run at `state`, through the library; `(runs.id)` is 1 in SQLite.
fn new_state(state: &str) {
    let store = LocatedStore::new(
        StateLocation::parse(state.as_ref()).unwrap(),
        StateName::default(),
    )
    .unwrap();
    let mut w = store
        .create_or_open_writer(APP, "bench", Duration::ZERO)
        .unwrap();
    w.begin_run(&RunInfo::new("bench")).unwrap();
}

/// The generated events' columns from `i`: 100,000 users (`user0`…), 997 peers (`peer0`…),
/// one event every 10 ms.
const EVENT_VALUES: &str = "1700000000000 + i * 10, 'deleted', 'new',
    'user' || (i % 100000), 1, 'peer' || (i % 997), 0";

fn generate_sqlite(path: &Path, n: usize) -> u64 {
    new_state(path.to_str().unwrap());
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "DROP INDEX events_at; DROP INDEX events_from; DROP INDEX events_peer;
         WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < {last})
         INSERT INTO events (at, action, reason, from_account, kind, peer, clear_roaming, run)
         SELECT {EVENT_VALUES}, 1 FROM c;
         CREATE INDEX events_at ON events (at);
         CREATE INDEX events_from ON events (from_account, at);
         CREATE INDEX events_peer ON events (kind, peer, at);
         ANALYZE;",
        last = n - 1
    ))
    .unwrap();
    drop(conn);
    std::fs::metadata(path).unwrap().len()
}

fn generate_postgres(cluster: &PgCluster, db: &str, n: usize) -> u64 {
    new_state(&cluster.url_with_password(db));
    let mut admin = cluster.admin_on(db);
    admin
        .batch_execute(&format!(
            "DROP INDEX timctl.events_state_at; DROP INDEX timctl.events_state_from;
             DROP INDEX timctl.events_state_peer;
             INSERT INTO timctl.events
               (state, at, action, reason, from_account, kind, peer, clear_roaming, run)
             SELECT s.id, {values}, r.id
             FROM generate_series(0, {last}) i, timctl.states s, timctl.runs r;
             CREATE INDEX events_state_at ON timctl.events (state, at, id);
             CREATE INDEX events_state_from ON timctl.events (state, from_account, at, id);
             CREATE INDEX events_state_peer ON timctl.events (state, kind, peer, at, id);",
            values = EVENT_VALUES.replace(", 0", ", false"),
            last = n - 1
        ))
        .unwrap();
    // A statement of its own: VACUUM cannot run in the batch's implicit transaction.
    admin.batch_execute("VACUUM ANALYZE timctl.events").unwrap();
    let size: i64 = admin
        .query_one("SELECT pg_total_relation_size('timctl.events')", &[])
        .unwrap()
        .get(0);
    size as u64
}

/// The median wall time of `timctl state history ARGS` (11 runs) on `state`.
fn latency(state: &str, args: &[&str]) -> Duration {
    let runs = (0..11)
        .map(|_| {
            let started = Instant::now();
            let out = timctl_tests::timctl()
                .args(["state", "history"])
                .args(args)
                .env("TIMCTL_STATE", state)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let took = started.elapsed();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            took
        })
        .collect();
    median(runs)
}

/// Peak RSS (MiB) and wall time of `timctl state history --json --limit LIMIT` on `state`.
fn streaming(state: &str, limit: usize) -> (f64, Duration) {
    let started = Instant::now();
    let mut child = timctl_tests::timctl()
        .args(["state", "history", "--json", "--limit", &limit.to_string()])
        .env("TIMCTL_STATE", state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let mut peak = 0;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        if let Some(hwm) = status_kb(&pid, "VmHWM:") {
            peak = peak.max(hwm);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (mib(peak), started.elapsed())
}

fn part_2_and_3(label: &str, state: &str, bytes: u64, n: usize) {
    let user = latency(state, &["--user", "user4242"]);
    let peer = latency(state, &["--peer", "user:peer42"]);
    println!(
        "| {label} | {n} | {user:.1?} | {peer:.1?} | {:.0} |",
        bytes as f64 / n as f64
    );
    for limit in [n / 10, n] {
        let (rss, took) = streaming(state, limit);
        println!("|  {label} streaming {limit} events: peak RSS {rss:.1} MiB in {took:.1?} |");
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let fast_n = bench::size("HISTORY_FAST_N", if full { 100_000 } else { 200 });
    let runs = bench::size("HISTORY_RUNS", if full { 3 } else { 1 });
    let n = bench::size("HISTORY_N", if full { 10_000_000 } else { 200_000 });
    let rt = bench::runtime(2);
    let cluster = PgCluster::start();
    part_1(&rt, &cluster, fast_n, runs);

    println!(
        "| state | events | `state history --user` median | `--peer` median | bytes per event |"
    );
    println!("|---|--:|--:|--:|--:|");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let bytes = generate_sqlite(&path, n);
    part_2_and_3("SQLite", path.to_str().unwrap(), bytes, n);
    drop(dir);
    let db = cluster.database();
    let bytes = generate_postgres(&cluster, &db, n);
    part_2_and_3("PostgreSQL", &cluster.url_with_password(&db), bytes, n);
}
