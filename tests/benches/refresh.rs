//! Benchmark: `timctl plan --refresh` end to end, the real release binary against fake-tim (in
//! this process) holding a conversation list per user.
//!
//! 1. Rate: N users (default 3,000), one page each (20 conversations, the manifest's one among
//!    them for half the users), at 20–80 ms latency and the default `--refresh-rate`: get_list
//!    calls per second as a ratio to the documented 200/s, the fake's largest count in any one
//!    second, frequency-limit answers, peak RSS, and that each user was listed exactly once.
//! 2. Memory: many users (default 100,000) against a fast fake (latency 0, limit raised,
//!    `--refresh-rate 20000`): peak RSS of `plan --refresh` next to `plan` on the same manifest
//!    (what the manifest and the plan alone take). The lists hold 20 conversations per user
//!    (two million in all); only the manifest's are kept, so the difference must stay small.
//!
//! ```text
//! cargo build --release -p timctl && cargo bench -p timctl-tests --bench refresh
//! RATE_USERS=3000 MEM_USERS=100000 cargo bench -p timctl-tests --bench refresh
//! ```
//!
//! Peak RSS is VmHWM of the child read from /proc every 50 ms until it exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use timctl_tests::measure::{mib, status_kb};
use timctl_tests::{FakeConfig, FakeEndpoint, FakePeer, FakeTim, bench};

const KEY: &str = "bench-refresh-key";
const DOCUMENTED: f64 = 200.0;
/// Conversations in each user's list on the server (`PER_LIST`, default 20): raising it while
/// the manifest stays the same shows whether memory follows the lists or the manifest.
fn per_list() -> usize {
    timctl_tests::bench::size("PER_LIST", 20)
}

/// A manifest of `users` users with one conversation each (`user: target`).
fn manifest(dir: &Path, users: usize) -> PathBuf {
    use std::io::Write;
    let path = dir.join("timctl.yaml");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("manifest"));
    writeln!(
        f,
        "version: 1\napp:\n  sdkappid: 1400000001\n  region: singapore\n  admin: administrator\nabsent:"
    )
    .expect("write");
    for u in 0..users {
        writeln!(f, "  user{u}:\n    - user: target").expect("write");
    }
    f.flush().expect("flush");
    path
}

/// Every user's list: `per_list()` conversations; the manifest's `target` in every other one.
fn seed(fake: &FakeTim, users: usize) {
    for u in 0..users {
        let name = format!("user{u}");
        let mut peers: Vec<FakePeer> = (1..per_list())
            .map(|p| FakePeer::user(format!("other{p}")))
            .collect();
        peers.push(if u % 2 == 0 {
            FakePeer::user("target")
        } else {
            FakePeer::user("other0")
        });
        fake.seed_conversations(&name, peers, false);
    }
}

struct Measured {
    seconds: f64,
    peak_kb: u64,
    stdout: String,
}

fn measure(mut cmd: Command) -> Measured {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("timctl starts");
    let pid = child.id().to_string();
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let mut peak = 0;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "timctl failed: {status}");
            break;
        }
        if let Some(hwm) = status_kb(&pid, "VmHWM:") {
            peak = peak.max(hwm);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Measured {
        seconds: started.elapsed().as_secs_f64(),
        peak_kb: peak,
        stdout: reader.join().unwrap_or_default(),
    }
}

fn plan_cmd(dir: &Path, manifest: &Path, url: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(timctl_tests::timctl_bin());
    cmd.arg("plan")
        .arg("-f")
        .arg(manifest)
        .args(["--format", "json", "-q"])
        .args(extra)
        .env("TIMCTL_STATE", dir.join("state.db"))
        .env("TIMCTL_ENDPOINT", url)
        .env("TIMCTL_SECRET_KEY", KEY)
        .env_remove("TIMCTL_USERSIG")
        .stdin(Stdio::null());
    cmd
}

/// Checks the refreshed plan: half the users' target present, half recorded.
fn check_plan(stdout: &str, users: usize) {
    let doc: serde_json::Value = serde_json::from_str(stdout).expect("a JSON plan");
    assert_eq!(doc["refreshed"], true);
    assert_eq!(
        doc["summary"]["delete"].as_u64(),
        Some(users.div_ceil(2) as u64)
    );
    assert_eq!(doc["summary"]["record"].as_u64(), Some((users / 2) as u64));
}

fn rate_run(rt: &tokio::runtime::Runtime, users: usize) {
    let fake = rt
        .block_on(FakeTim::start(bench::api_pace(KEY)))
        .expect("fake-tim starts");
    seed(&fake, users);
    let dir = tempfile::tempdir().expect("temp dir");
    let m = manifest(dir.path(), users);
    let r = measure(plan_cmd(dir.path(), &m, fake.url(), &["--refresh"]));
    check_plan(&r.stdout, users);
    let stats = fake.stats_for(FakeEndpoint::GetList);
    let per_user = fake.get_list_calls();
    let once = per_user.len() == users && per_user.values().all(|&n| n == 1);
    // Wall time includes start-up and the manifest (a few ms at this size), so the ratio is a
    // slight underestimate of the listing's own rate.
    let per_s = stats.requests as f64 / r.seconds;
    println!(
        "| {users} | 20–80 ms | default | {:.2} | {} | {per_s:.1} | {:.3} | {} | {} | {} | {:.1} |",
        r.seconds,
        stats.requests,
        per_s / DOCUMENTED,
        stats.max_in_any_second,
        stats.frequency_limited,
        if once { "yes" } else { "NO" },
        mib(r.peak_kb)
    );
}

fn memory_run(rt: &tokio::runtime::Runtime, users: usize) {
    let fake = rt
        .block_on(FakeTim::start(FakeConfig {
            secret_key: KEY.into(),
            limit_per_second: 1_000_000,
            ..FakeConfig::default()
        }))
        .expect("fake-tim starts");
    seed(&fake, users);
    let dir = tempfile::tempdir().expect("temp dir");
    let m = manifest(dir.path(), users);
    let p = measure(plan_cmd(dir.path(), &m, fake.url(), &[]));
    let r = measure(plan_cmd(
        dir.path(),
        &m,
        fake.url(),
        &["--refresh", "--refresh-rate", "20000"],
    ));
    check_plan(&r.stdout, users);
    let calls = fake.stats_for(FakeEndpoint::GetList).requests;
    println!(
        "| {users} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
        users * per_list(),
        mib(p.peak_kb),
        mib(r.peak_kb),
        mib(r.peak_kb.saturating_sub(p.peak_kb)),
        r.seconds,
        calls as f64 / r.seconds
    );
}

fn main() {
    let rt = timctl_tests::bench::runtime(2);
    let rate = timctl_tests::bench::sizes("RATE_USERS", "3000");
    if !rate.is_empty() {
        println!(
            "| users | latency | refresh rate | wall s | get_list calls | calls/s | ratio to 200/s | max in any 1 s | frequency-limit answers | each user listed once | peak RSS MiB |"
        );
        println!("|--:|---|---|--:|--:|--:|--:|--:|--:|---|--:|");
        for n in rate {
            rate_run(&rt, n);
        }
    }
    let mem = timctl_tests::bench::sizes("MEM_USERS", "100000");
    if !mem.is_empty() {
        println!();
        println!(
            "| users | conversations on the server | `plan` peak MiB | `plan --refresh` peak MiB | difference MiB | refresh wall s | calls/s |"
        );
        println!("|--:|--:|--:|--:|--:|--:|--:|");
        for n in mem {
            memory_run(&rt, n);
        }
    }
}
