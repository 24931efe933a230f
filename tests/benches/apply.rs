//! Benchmark: `timctl apply` end to end, the real release binary against fake-tim (in this
//! process) and a real SQLite state in a temp dir.
//!
//! 1. Rate: N deletions (default 10,000) with 20–80 ms latency at the default `--rate` and
//!    `--concurrency`: deletions per second as a ratio to the documented 200/s, the fake's
//!    largest count in any one second, frequency-limit answers, peak RSS.
//! 2. Memory: larger plans (default 100,000 and 1,000,000) against a fast fake (latency 0,
//!    limit raised, `--rate 20000`): peak RSS of `timctl apply` next to the peak of `timctl
//!    plan` on the same manifest (what the manifest and plan alone take), and the RSS when the
//!    first deletion is made and at the end of the run. The executor's own memory is the
//!    difference, and it must not grow with the plan.
//!
//! A harness of its own (not criterion): one run takes a minute of wall time by design.
//!
//! ```text
//! cargo build --release -p timctl && cargo bench -p timctl-tests --bench apply
//! RATE_N=10000 MEM_NS=100000,1000000 cargo bench -p timctl-tests --bench apply
//! ```
//!
//! Peak RSS is VmHWM of the child read from /proc every 50 ms until it exits (so it can miss
//! growth in its last 50 ms).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use timctl_tests::measure::{mib, status_kb};

use timctl_tests::{FakeConfig, FakeTim, bench};

const KEY: &str = "bench-apply-key";
const DOCUMENTED: f64 = 200.0;

struct Measured {
    seconds: f64,
    peak_kb: u64,
    rss_at_first_call_kb: u64,
    rss_at_end_kb: u64,
    stdout: String,
}

/// Runs `cmd` to the end, sampling its memory; `calls` says how many calls the fake has seen.
fn measure(mut cmd: Command, calls: impl Fn() -> u64) -> Measured {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("timctl starts");
    let pid = child.id().to_string();
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let (mut peak, mut first, mut last) = (0, 0, 0);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "timctl failed: {status}");
            break;
        }
        if let (Some(hwm), Some(rss)) = (status_kb(&pid, "VmHWM:"), status_kb(&pid, "VmRSS:")) {
            peak = peak.max(hwm);
            if first == 0 && calls() > 0 {
                first = rss;
            }
            last = rss;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Measured {
        seconds: started.elapsed().as_secs_f64(),
        peak_kb: peak,
        rss_at_first_call_kb: first,
        rss_at_end_kb: last,
        stdout: reader.join().unwrap_or_default(),
    }
}

fn apply_cmd(dir: &Path, manifest: &Path, url: &str, extra: &[&str]) -> Command {
    // The binary with a clean environment: no TIMCTL_* of the caller's reaches the run.
    let mut cmd = timctl_tests::timctl();
    cmd.arg("apply")
        .arg("-f")
        .arg(manifest)
        .args(["--auto-approve", "--json", "-q"])
        .args(extra)
        .env("TIMCTL_STATE", dir.join("state.db"))
        .env("TIMCTL_ENDPOINT", url)
        .env("TIMCTL_SECRET_KEY", KEY)
        .env_remove("TIMCTL_USERSIG")
        .stdin(Stdio::null());
    cmd
}

/// The `summary` event's `elapsed_seconds` (first call to last result).
fn summary(stdout: &str) -> serde_json::Value {
    let last = stdout.lines().last().expect("events");
    let v: serde_json::Value = serde_json::from_str(last).expect("JSON");
    assert_eq!(v["event"], "summary");
    v
}

fn rate_run(rt: &tokio::runtime::Runtime, n: usize) {
    let fake = rt
        .block_on(FakeTim::start(bench::api_pace(KEY)))
        .expect("fake-tim starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let m = bench::write_manifest(dir.path(), n, 1000);
    let r = measure(apply_cmd(dir.path(), &m, fake.url(), &[]), || {
        fake.stats().requests
    });
    let s = summary(&r.stdout);
    let deleted = s["deleted"].as_u64().unwrap_or(0);
    assert_eq!(deleted as usize, n, "every deletion succeeded");
    let elapsed = s["elapsed_seconds"].as_f64().unwrap_or(f64::NAN);
    let stats = fake.stats();
    let per_s = n as f64 / elapsed;
    println!(
        "| {n} | 20–80 ms | default | {elapsed:.2} | {:.2} | {per_s:.1} | {:.3} | {} | {} | {:.1} |",
        r.seconds,
        per_s / DOCUMENTED,
        stats.max_in_any_second,
        stats.frequency_limited,
        mib(r.peak_kb)
    );
}

fn memory_run(rt: &tokio::runtime::Runtime, n: usize) {
    let fake = rt
        .block_on(FakeTim::start(FakeConfig {
            secret_key: KEY.into(),
            limit_per_second: 1_000_000,
            ..FakeConfig::default()
        }))
        .expect("fake-tim starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let m = bench::write_manifest(dir.path(), n, 1000);
    // What the manifest and the plan alone take: `timctl plan` on the same inputs.
    let mut plan = timctl_tests::timctl();
    plan.arg("plan")
        .arg("-f")
        .arg(&m)
        .args(["--format", "json"])
        .env("TIMCTL_STATE", dir.path().join("state.db"))
        .stdin(Stdio::null());
    let p = measure(plan, || 0);
    let r = measure(
        apply_cmd(
            dir.path(),
            &m,
            fake.url(),
            &["--rate", "20000", "--concurrency", "64"],
        ),
        || fake.stats().requests,
    );
    let s = summary(&r.stdout);
    assert_eq!(s["deleted"].as_u64().unwrap_or(0) as usize, n);
    let elapsed = s["elapsed_seconds"].as_f64().unwrap_or(f64::NAN);
    println!(
        "| {n} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {elapsed:.1} | {:.0} |",
        mib(p.peak_kb),
        mib(r.peak_kb),
        mib(r.peak_kb.saturating_sub(p.peak_kb)),
        mib(r.rss_at_first_call_kb),
        mib(r.rss_at_end_kb),
        n as f64 / elapsed
    );
    drop(fake);
}

fn main() {
    let rt = bench::runtime(2);
    let rate_ns = bench::sizes("RATE_N", "10000");
    if !rate_ns.is_empty() {
        println!(
            "| deletions | latency | rate | apply s (first call to last result) | wall s | deletions/s | ratio to 200/s | max in any 1 s | frequency-limit answers | peak RSS MiB |"
        );
        println!("|--:|---|---|--:|--:|--:|--:|--:|--:|--:|");
        for n in rate_ns {
            rate_run(&rt, n);
        }
    }
    let mem_ns = bench::sizes("MEM_NS", "100000,1000000");
    if !mem_ns.is_empty() {
        println!();
        println!(
            "| deletions | `plan` peak MiB | `apply` peak MiB | apply − plan MiB | RSS at first call MiB | RSS at end MiB | apply s | deletions/s |"
        );
        println!("|--:|--:|--:|--:|--:|--:|--:|--:|");
        for n in mem_ns {
            memory_run(&rt, n);
        }
    }
}
