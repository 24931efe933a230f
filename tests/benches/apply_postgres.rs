//! `timctl apply` end to end with the state in PostgreSQL (BENCHMARKS.md): the release binary
//! against fake-tim, once with the state in a throwaway local PostgreSQL cluster and once in
//! SQLite, in the same run.
//!
//! 1. At the API's pace: 20–80 ms latency, the documented 200 calls/s enforced, timctl at its
//!    default rate. Deletions per second (first call to last result) as a ratio to 200/s.
//! 2. At a fast fake: no latency, no limit, `--rate 50000`, so that calls outrun the API by far
//!    and recording is what a slow state would hold back. The time apply spent recording (its
//!    own debug line, `TIMCTL_LOG=timctl_core::apply::executor=debug`) and the whole command's
//!    wall time, PostgreSQL against SQLite (medians of 3).
//!
//! `cargo bench -p timctl-tests --bench apply_postgres` (`APPLY_PG_N`, default 10,000;
//! `APPLY_PG_FAST_N`, default 100,000).

use std::process::Stdio;
use std::time::{Duration, Instant};

use timctl_tests::pg::PgCluster;
use timctl_tests::{FakeConfig, FakeTim, bench};

const KEY: &str = "bench-apply-pg-key";

/// What one apply took.
struct Applied {
    summary: serde_json::Value,
    wall: Duration,
    /// The time spent writing confirmed deletions to the state, as apply's debug line says.
    recording: Duration,
}

/// Applies `n` deletions against `fake` with the state in `state`, with `extra` flags.
fn apply(fake: &FakeTim, n: usize, state: &str, extra: &[&str]) -> Applied {
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
        .env("TIMCTL_LOG", "timctl_core::apply::executor=debug")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let wall = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("events")).unwrap();
    assert_eq!(summary["deleted"].as_u64(), Some(n as u64), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let recording_ms: u64 = stderr
        .split_whitespace()
        .find_map(|field| field.strip_prefix("recording_ms="))
        .unwrap_or_else(|| panic!("no recording line in: {stderr}"))
        .parse()
        .unwrap();
    Applied {
        summary,
        wall,
        recording: Duration::from_millis(recording_ms),
    }
}

fn run(rt: &tokio::runtime::Runtime, n: usize, state: &str, label: &str) {
    let fake = rt.block_on(FakeTim::start(bench::api_pace(KEY))).unwrap();
    let elapsed = apply(&fake, n, state, &[]).summary["elapsed_seconds"]
        .as_f64()
        .unwrap();
    let stats = fake.stats();
    let per_s = n as f64 / elapsed;
    println!(
        "| {label} | {n} | {elapsed:.2} | {per_s:.1} | {:.3} | {} | {} |",
        per_s / 200.0,
        stats.max_in_any_second,
        stats.frequency_limited
    );
}

/// Recording time and the whole apply's wall time at a fast fake, each state fresh: medians of
/// `runs`.
fn fast(
    rt: &tokio::runtime::Runtime,
    n: usize,
    runs: usize,
    state: impl Fn(usize) -> String,
) -> (Duration, Duration) {
    let fake = rt
        .block_on(FakeTim::start(FakeConfig {
            secret_key: KEY.into(),
            latency: (Duration::ZERO, Duration::ZERO),
            limit_per_second: u32::MAX,
            ..FakeConfig::default()
        }))
        .unwrap();
    let (mut recording, mut wall): (Vec<Duration>, Vec<Duration>) = (0..runs)
        .map(|r| {
            let a = apply(
                &fake,
                n,
                &state(r),
                &["--rate", "50000", "--concurrency", "64"],
            );
            (a.recording, a.wall)
        })
        .unzip();
    recording.sort();
    wall.sort();
    (recording[runs / 2], wall[runs / 2])
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
    for (what, pg, sqlite) in [("recording", pg.0, sqlite.0), ("wall time", pg.1, sqlite.1)] {
        println!(
            "apply {fast_n} at a fast fake (--rate 50000), {what}: PostgreSQL {pg:.2?}, SQLite {sqlite:.2?}; ratio {:.2}",
            pg.as_secs_f64() / sqlite.as_secs_f64()
        );
    }
}
