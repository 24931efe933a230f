//! Enforcement latency of `timctl serve`: N forbidden conversations (default 1,000) brought
//! back by one-to-one messages spread evenly over SECONDS (default 20), fake-tim answering in
//! 20–80 ms at the documented 200 calls/s. Each latency is fake-tim's own clock from the
//! message that re-created the conversation (before its callback is posted) to the deletion
//! that removed it. Prints p50, p99 and max; the target is p99 ≤ 1 s.
//!
//! `cargo bench -p timctl-tests --bench serve_latency` (release), or
//! `cargo test -p timctl-tests --bench serve_latency` (the debug build, quicker to build).

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timctl_tests::ports::free_addr;

use timctl_tests::bench::{api_pace, runtime, size, write_manifest};
use timctl_tests::callbacks::{CallbackTarget, get};
use timctl_tests::{FakeTim, timctl};

const KEY: &str = "serve-bench-secret-key";
const TOKEN: &str = "serve-bench-callback-token";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() {
    let n = size("N", 1000);
    let seconds = size("SECONDS", 20) as u64;
    let per_user = 20;
    let rt = runtime(2);
    let fake = Arc::new(rt.block_on(FakeTim::start(api_pace(KEY))).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), n, per_user);
    let (listen, ops) = (free_addr(), free_addr());
    let mut child = timctl()
        .args(["serve", "-f"])
        .arg(&manifest)
        .args(["--listen", &listen, "--ops-listen", &ops])
        .env("TIMCTL_STATE", dir.path().join("state.db"))
        .env("TIMCTL_ENDPOINT", fake.url())
        .env("TIMCTL_SECRET_KEY", KEY)
        .env("TIMCTL_CALLBACK_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Ready, and the first resync (every entry deleted once) done, before the clock starts.
    let waited = Instant::now();
    loop {
        let ready = rt
            .block_on(get(&ops, "/readyz"))
            .is_ok_and(|a| a.body.contains("first resync: done"));
        if ready {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "serve never finished its resync"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    fake.callbacks_to(CallbackTarget {
        addr: listen.clone(),
        path: "/callback".into(),
        token: Some(TOKEN.into()),
        sdkappid: 1_400_000_001,
    });
    let interval = Duration::from_secs(seconds) / n as u32;
    let started = Instant::now();
    rt.block_on(async {
        let start = tokio::time::Instant::now();
        let mut sends = Vec::with_capacity(n);
        for i in 0..n {
            let fake = fake.clone();
            sends.push(tokio::spawn(async move {
                tokio::time::sleep_until(start + interval * i as u32).await;
                let (user, peer) = (
                    format!("user{}", i / per_user),
                    format!("peer{}", i % per_user),
                );
                let answer = fake.send_one_to_one(&peer, &user, i as u64).await;
                matches!(answer, Some(Ok(a)) if a.status == 200)
            }));
        }
        for s in sends {
            assert!(s.await.unwrap(), "a callback was not answered OK");
        }
    });
    let waited = Instant::now();
    while fake.lifetimes().len() < n && waited.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = started.elapsed();
    let mut lifetimes = fake.lifetimes();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    lifetimes.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "serve enforcement latency: {} of {n} conversations deleted, messages over {seconds} s \
         (wall {:.1} s); p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; serve exited {:?}",
        lifetimes.len(),
        wall.as_secs_f64(),
        ms(percentile(&lifetimes, 0.50)),
        ms(percentile(&lifetimes, 0.99)),
        ms(*lifetimes.last().unwrap()),
        status.code()
    );
}
