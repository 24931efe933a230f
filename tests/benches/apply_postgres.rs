//! `timctl apply` end to end with the state in PostgreSQL (BENCHMARKS.md): the release binary
//! against fake-tim, once with the state in a throwaway local PostgreSQL cluster and once in
//! SQLite, in the same run.
//!
//! 1. At the API's pace: 20–80 ms latency, the documented 200 calls/s enforced, timctl at its
//!    default rate. Deletions per second (first call to last result) as a ratio to 200/s.
//! 2. At a fast fake: no latency, no limit, `--rate 50000`, so that calls outrun the API by far
//!    and recording is what a slow state would hold back. The whole command's wall time,
//!    PostgreSQL against SQLite (medians of 3).
//!
//! `cargo bench -p timctl-tests --bench apply_postgres` (`APPLY_PG_N`, default 10,000;
//! `APPLY_PG_FAST_N`, default 100,000).

use std::process::Stdio;
use std::time::{Duration, Instant};

use timctl_tests::pg::PgCluster;
use timctl_tests::{FakeConfig, FakeTim, bench};

const KEY: &str = "bench-apply-pg-key";

/// Applies `n` deletions against `fake` with the state in `state`, with `extra` flags; the
/// summary event and the command's wall time.
fn apply(fake: &FakeTim, n: usize, state: &str, extra: &[&str]) -> (serde_json::Value, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let m = bench::write_manifest(dir.path(), n, 10);
    let started = Instant::now();
    let out = timctl_tests::timctl()
        .arg("apply")
        .arg("-f")
        .arg(&m)
        .args(["--auto-approve", "--json", "-q"])
        .args(extra)
        .env("TIMCTL_STATE", state)
        .env("TIMCTL_ENDPOINT", fake.url())
        .env("TIMCTL_SECRET_KEY", KEY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let wall = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("events")).unwrap();
    assert_eq!(summary["deleted"].as_u64(), Some(n as u64), "{stdout}");
    (summary, wall)
}

fn run(rt: &tokio::runtime::Runtime, n: usize, state: &str, label: &str) {
    let fake = rt
        .block_on(FakeTim::start(FakeConfig {
            secret_key: KEY.into(),
            latency: (Duration::from_millis(20), Duration::from_millis(80)),
            ..FakeConfig::default()
        }))
        .unwrap();
    let (summary, _) = apply(&fake, n, state, &[]);
    let elapsed = summary["elapsed_seconds"].as_f64().unwrap();
    let stats = fake.stats();
    let per_s = n as f64 / elapsed;
    println!(
        "| {label} | {n} | {elapsed:.2} | {per_s:.1} | {:.3} | {} | {} |",
        per_s / 200.0,
        stats.max_in_any_second,
        stats.frequency_limited
    );
}

/// The whole apply's wall time at a fast fake, each state fresh: medians of `runs`.
fn fast(
    rt: &tokio::runtime::Runtime,
    n: usize,
    runs: usize,
    state: impl Fn(usize) -> String,
) -> Duration {
    let fake = rt
        .block_on(FakeTim::start(FakeConfig {
            secret_key: KEY.into(),
            latency: (Duration::ZERO, Duration::ZERO),
            limit_per_second: u32::MAX,
            ..FakeConfig::default()
        }))
        .unwrap();
    let mut walls: Vec<Duration> = (0..runs)
        .map(|r| {
            apply(
                &fake,
                n,
                &state(r),
                &["--rate", "50000", "--concurrency", "64"],
            )
            .1
        })
        .collect();
    walls.sort();
    walls[walls.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = bench::size("APPLY_PG_N", if full { 10_000 } else { 200 });
    let fast_n = bench::size("APPLY_PG_FAST_N", if full { 100_000 } else { 200 });
    let rt = bench::runtime(2);
    let cluster = PgCluster::start();
    let db = cluster.database();
    let sqlite_dir = tempfile::tempdir().unwrap();
    println!(
        "| state | deletions | apply s | deletions/s | ratio to 200/s | max in any 1 s | frequency-limit answers |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|");
    run(&rt, n, &cluster.url_with_password(&db), "PostgreSQL");
    run(
        &rt,
        n,
        sqlite_dir.path().join("state.db").to_str().unwrap(),
        "SQLite",
    );

    let runs = if full { 3 } else { 1 };
    let pg = fast(&rt, fast_n, runs, |_| {
        cluster.url_with_password(&cluster.database())
    });
    let sqlite = fast(&rt, fast_n, runs, |r| {
        sqlite_dir
            .path()
            .join(format!("fast{r}.db"))
            .to_str()
            .unwrap()
            .to_owned()
    });
    println!(
        "apply {fast_n} at a fast fake (--rate 50000): PostgreSQL {pg:.2?}, SQLite {sqlite:.2?}; ratio {:.2}",
        pg.as_secs_f64() / sqlite.as_secs_f64()
    );
}
