//! `timctl apply` end to end with the state in PostgreSQL (BENCHMARKS.md): the release binary
//! against fake-tim (20–80 ms latency, the documented 200 calls/s enforced) at the default rate,
//! once with the state in a throwaway local PostgreSQL cluster and once in SQLite, in the same
//! run. Deletions per second (first call to last result) as a ratio to 200/s.
//!
//! `cargo bench -p timctl-tests --bench apply_postgres` (`APPLY_PG_N`, default 10,000).

use std::process::Stdio;
use std::time::Duration;

use timctl_tests::pg::PgCluster;
use timctl_tests::{FakeConfig, FakeTim, bench};

const KEY: &str = "bench-apply-pg-key";

fn run(rt: &tokio::runtime::Runtime, n: usize, state: &str, label: &str) {
    let fake = rt
        .block_on(FakeTim::start(FakeConfig {
            secret_key: KEY.into(),
            latency: (Duration::from_millis(20), Duration::from_millis(80)),
            ..FakeConfig::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = bench::write_manifest(dir.path(), n, 10);
    let out = timctl_tests::timctl()
        .arg("apply")
        .arg("-f")
        .arg(&m)
        .args(["--auto-approve", "--json", "-q"])
        .env("TIMCTL_STATE", state)
        .env("TIMCTL_ENDPOINT", fake.url())
        .env("TIMCTL_SECRET_KEY", KEY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("events")).unwrap();
    assert_eq!(summary["deleted"].as_u64(), Some(n as u64), "{stdout}");
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

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = bench::size("APPLY_PG_N", if full { 10_000 } else { 200 });
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
}
