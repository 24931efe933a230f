//! `timctl serve` replicas on one PostgreSQL state (a throwaway cluster):
//!
//! 1. Enforcement latency through the standby: N forbidden conversations (default 1,000)
//!    brought back by one-to-one messages spread over SECONDS (default 20), their callbacks
//!    posted to the standby, deleted by the active replica; then the same with the callbacks
//!    posted to the active replica itself (the single-process figure, same state). Latency is
//!    fake-tim's clock from the message to the deletion that removed it.
//! 2. Failover, ROUNDS times (default 5): a message every 10 ms to the standby, kill -9 of the
//!    active replica, and the time from the kill to the next deletion fake-tim confirms.
//!
//! `cargo bench -p timctl-tests --bench serve_replicas` (release), or
//! `cargo test -p timctl-tests --bench serve_replicas` (the debug build, quicker to build).

use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timctl_tests::ports::free_addr;

use timctl_tests::bench::{api_pace, runtime, size, write_manifest};
use timctl_tests::callbacks::{CallbackTarget, get};
use timctl_tests::pg::PgCluster;
use timctl_tests::{FakeEndpoint, FakeTim, timctl};

const KEY: &str = "serve-bench-secret-key";
const TOKEN: &str = "serve-bench-callback-token";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

struct Serve {
    child: Child,
    listen: String,
    ops: String,
}

fn start(manifest: &Path, state: &str, fake: &FakeTim) -> Serve {
    let (listen, ops) = (free_addr(), free_addr());
    let child = timctl()
        .args(["serve", "-f"])
        .arg(manifest)
        .args(["--listen", &listen, "--ops-listen", &ops])
        .env("TIMCTL_STATE", state)
        .env("TIMCTL_ENDPOINT", fake.url())
        .env("TIMCTL_SECRET_KEY", KEY)
        .env("TIMCTL_CALLBACK_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Serve { child, listen, ops }
}

/// Waits (at most two minutes) until `/readyz`'s body contains `what`.
fn wait_readyz(rt: &tokio::runtime::Runtime, serve: &Serve, what: &str) {
    let waited = Instant::now();
    while !rt
        .block_on(get(&serve.ops, "/readyz"))
        .is_ok_and(|a| a.status == 200 && a.body.contains(what))
    {
        assert!(waited.elapsed() < Duration::from_secs(120), "never {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn target(serve: &Serve) -> CallbackTarget {
    CallbackTarget {
        addr: serve.listen.clone(),
        path: "/callback".into(),
        token: Some(TOKEN.into()),
        sdkappid: 1_400_000_001,
    }
}

/// Brings back `n` conversations over `seconds` with callbacks to `to`; the latencies.
fn latencies(
    rt: &tokio::runtime::Runtime,
    fake: &Arc<FakeTim>,
    to: &Serve,
    n: usize,
    per_user: usize,
    seconds: u64,
) -> Vec<Duration> {
    let before = fake.lifetimes().len();
    fake.callbacks_to(target(to));
    let interval = Duration::from_secs(seconds) / n as u32;
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
    while fake.lifetimes().len() < before + n && waited.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut l = fake.lifetimes()[before..].to_vec();
    l.sort();
    l
}

fn main() {
    let n = size("N", 1000);
    let seconds = size("SECONDS", 20) as u64;
    let rounds = size("ROUNDS", 5);
    let per_user = 20;
    let rt = runtime(2);
    let cluster = PgCluster::start();
    let db = cluster.database();
    let state = cluster.url_with_password(&db);
    let fake = Arc::new(rt.block_on(FakeTim::start(api_pace(KEY))).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), n, per_user);

    let mut active = start(&manifest, &state, &fake);
    wait_readyz(&rt, &active, "first resync: done");
    let mut standby = start(&manifest, &state, &fake);
    wait_readyz(&rt, &standby, "ready: standby");

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (what, to) in [
        ("through the standby", &standby),
        ("to the active one", &active),
    ] {
        let l = latencies(&rt, &fake, to, n, per_user, seconds);
        println!(
            "serve replicas, callbacks {what}: {} of {n} deleted over {seconds} s; p50 {:.0} ms, \
             p99 {:.0} ms, max {:.0} ms",
            l.len(),
            ms(percentile(&l, 0.50)),
            ms(percentile(&l, 0.99)),
            ms(*l.last().unwrap()),
        );
    }

    let mut failovers = Vec::new();
    for round in 0..rounds {
        fake.callbacks_to(target(&standby));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // A message every 10 ms to the standby, so that there is always something to delete.
        let sender = {
            let (fake, done) = (fake.clone(), done.clone());
            rt.spawn(async move {
                let mut i = 0_usize;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let (user, peer) = (
                        format!("user{}", (i / per_user) % (n / per_user)),
                        format!("peer{}", i % per_user),
                    );
                    let _ = fake.send_one_to_one(&peer, &user, i as u64).await;
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        std::thread::sleep(Duration::from_millis(500));
        let confirmed = |fake: &FakeTim| fake.deletions().values().sum::<usize>();
        let before = confirmed(&fake);
        let killed = Instant::now();
        active.child.kill().unwrap();
        active.child.wait().unwrap();
        // Deletions the killed one had in flight may still be counted: the next one is the
        // survivor's once it is active.
        while !rt
            .block_on(get(&standby.ops, "/readyz"))
            .is_ok_and(|a| a.body.starts_with("ready: active"))
        {
            assert!(killed.elapsed() < Duration::from_secs(60), "no takeover");
            std::thread::sleep(Duration::from_millis(5));
        }
        let at_takeover = confirmed(&fake).max(before);
        while confirmed(&fake) <= at_takeover {
            assert!(killed.elapsed() < Duration::from_secs(60), "no deletion");
            std::thread::sleep(Duration::from_millis(2));
        }
        let took = killed.elapsed();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = rt.block_on(sender);
        println!("failover round {round}: kill -9 to the next confirmed deletion {took:?}");
        failovers.push(took);
        // The survivor is the active one; a new standby beside it.
        active = standby;
        standby = start(&manifest, &state, &fake);
        wait_readyz(&rt, &standby, "ready: standby");
        wait_readyz(&rt, &active, "first resync: done");
    }
    failovers.sort();
    if !failovers.is_empty() {
        println!(
            "failover: median {:.0} ms of {rounds} (min {:.0}, max {:.0}); deletes at most {} in \
             any second",
            ms(failovers[failovers.len() / 2]),
            ms(failovers[0]),
            ms(*failovers.last().unwrap()),
            fake.stats_for(FakeEndpoint::Delete).max_in_any_second,
        );
    }
    for mut s in [active, standby] {
        let _ = s.child.kill();
        let _ = s.child.wait();
    }
}
