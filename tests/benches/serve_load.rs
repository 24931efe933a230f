//! `timctl serve` under load (issue 21's benchmarks), three parts:
//!
//! 1. Resync cost: USERS (default 10,000) manifest users against fake-tim at the API's pace:
//!    the first (full) resync's get_list calls and time, then a targeted one after a reload
//!    (SIGHUP) that changes one user's entries.
//! 2. Callback throughput: a Rust load client on CONNECTIONS keep-alive connections (default
//!    32) posting valid signed `C2C.CallbackAfterSendMsg` callbacks for SECONDS (default 10),
//!    90% for conversations no manifest names, against serve with an N-entry manifest (default
//!    1,000,000), and the same load against a bare handler that answers the same OK and does
//!    nothing (a child process too, so both sides pay the same), served by `axum::serve` and by
//!    serve's own listener with its limits; with SERVE_BASELINE (a path to another timctl
//!    binary), that serve too. ROUNDS rounds (default 3), the sides one after the other in
//!    each. Callbacks/s, p99 answer latency, errors, and the median ratios.
//! 3. Memory: serve's RSS with the N-entry manifest at rest (after its first resync) and after
//!    FLOOD_SECONDS (default 60; 0 skips it) of that load, once its queue has drained.
//!
//! `cargo bench -p timctl-tests --bench serve_load` (release); `PARTS=resync` or
//! `PARTS=throughput` runs one part.

use std::io::Write as _;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timctl_tests::ports::free_addr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use timctl_tests::bench::{api_pace, runtime, size, write_manifest};
use timctl_tests::callbacks::{callback_query, get, one_to_one_body, unix_now};
use timctl_tests::measure::{mib, status_kb};
use timctl_tests::{FakeConfig, FakeEndpoint, FakePeer, FakeTim, timctl};

const KEY: &str = "serve-load-secret-key";
const TOKEN: &str = "serve-load-callback-token";
const APP: u64 = 1_400_000_001;
const BARE: &str = "SERVE_LOAD_BARE_ADDR";
const BARE_STACK: &str = "SERVE_LOAD_BARE_STACK";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The bare handler: the same route and answer as serve, nothing else. With `stack` "axum",
/// served by `axum::serve` (the issue's ceiling of the HTTP stack; TCP_NODELAY set, as serve
/// sets it); with "listener", by serve's own listener with serve's limits (1024 connections,
/// the 10 s header and idle deadline, the 10 s request timeout; serve's 1 MiB body limit is
/// in its handler), so that what the limits cost is told apart from what a callback's checks
/// cost.
fn bare(addr: &str, stack: &str) {
    let rt = runtime(2);
    rt.block_on(async {
        let router = axum::Router::new().route(
            "/callback",
            axum::routing::post(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#,
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        if stack == "listener" {
            let timeout = Duration::from_secs(10);
            let router = timctl_core::serve::http::with_request_timeout(router, timeout);
            let limits = timctl_core::serve::listener::Limits {
                max_connections: 1024,
                client_timeout: timeout,
            };
            let (_keep, never) = tokio::sync::watch::channel(false);
            timctl_core::serve::listener::serve(listener, router, limits, None, never).await;
        } else {
            use axum::serve::ListenerExt as _;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, router).await.unwrap();
        }
    });
}

fn main() {
    if let Ok(addr) = std::env::var(BARE) {
        bare(&addr, &std::env::var(BARE_STACK).unwrap_or_default());
        return;
    }
    let parts = std::env::var("PARTS").unwrap_or_else(|_| "resync,throughput".into());
    let rt = runtime(2);
    if parts.contains("resync") {
        resync_cost(&rt);
    }
    if parts.contains("throughput") {
        throughput_and_memory(&rt);
    }
}

/// A running serve with its ops address.
struct Serve {
    child: Child,
    ops: String,
    listen: String,
}

fn start_serve(
    fake: &FakeTim,
    dir: &std::path::Path,
    manifest: &std::path::Path,
    extra: &[&str],
) -> Serve {
    start_serve_of(timctl(), fake, dir, manifest, extra)
}

/// [`start_serve`] with another binary, as `timctl()` prepares it (none of the caller's
/// `TIMCTL_*` variables).
fn start_serve_of(
    mut command: std::process::Command,
    fake: &FakeTim,
    dir: &std::path::Path,
    manifest: &std::path::Path,
    extra: &[&str],
) -> Serve {
    let (listen, ops) = (free_addr(), free_addr());
    let child = command
        .args(["serve", "-f"])
        .arg(manifest)
        .args(["--listen", &listen, "--ops-listen", &ops])
        .args(extra)
        .env("TIMCTL_STATE", dir.join("state.db"))
        .env("TIMCTL_ENDPOINT", fake.url())
        .env("TIMCTL_SECRET_KEY", KEY)
        .env("TIMCTL_CALLBACK_TOKEN", TOKEN)
        .env("TIMCTL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Serve { child, ops, listen }
}

fn wait_until(rt: &tokio::runtime::Runtime, serve: &Serve, what: &str, body_has: &str) {
    let waited = Instant::now();
    loop {
        if rt
            .block_on(get(&serve.ops, "/readyz"))
            .is_ok_and(|a| a.body.contains(body_has))
        {
            return;
        }
        assert!(waited.elapsed() < Duration::from_secs(1800), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(mut serve: Serve) {
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_child(&serve.child),
        rustix::process::Signal::TERM,
    );
    let _ = serve.child.wait();
}

fn resync_cost(rt: &tokio::runtime::Runtime) {
    let users = size("USERS", 10_000);
    let fake = rt.block_on(FakeTim::start(api_pace(KEY))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Two conversations a user; every user has a few conversations with others on the server.
    let manifest = write_manifest(dir.path(), users * 2, 2);
    for u in 0..users {
        fake.seed_conversations(
            &format!("user{u}"),
            (0..3).map(|i| FakePeer::user(format!("friend{i}"))),
            false,
        );
    }
    let started = Instant::now();
    let serve = start_serve(&fake, dir.path(), &manifest, &["--reload-interval", "1h"]);
    wait_until(rt, &serve, "the first resync", "first resync: done");
    let full = started.elapsed();
    let full_calls = fake.stats_for(FakeEndpoint::GetList).requests;
    // One user's entries change: a reload (SIGHUP) resyncs that user only.
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("  user0x:\n    - user: newpeer\n");
    fake.seed_conversations("user0x", [FakePeer::user("newpeer")], false);
    let tmp = dir.path().join("swap.yaml.tmp");
    std::fs::File::create(&tmp)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    std::fs::rename(&tmp, &manifest).unwrap();
    let started = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&serve.child),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    while !fake.conversations("user0x").is_empty() {
        assert!(started.elapsed() < Duration::from_secs(600));
        std::thread::sleep(Duration::from_millis(2));
    }
    let targeted = started.elapsed();
    let targeted_calls = fake.stats_for(FakeEndpoint::GetList).requests - full_calls;
    stop(serve);
    println!(
        "resync cost, {users} users (fake-tim 20-80 ms, 200/s): full: {full_calls} get_list \
         calls, {:.1} s (serve start to first resync done); targeted (one user changed, \
         SIGHUP to deletion): {targeted_calls} get_list calls, {:.0} ms",
        full.as_secs_f64(),
        targeted.as_secs_f64() * 1000.0
    );
}

/// What one load run did.
struct Load {
    answered: u64,
    errors: u64,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

/// `connections` keep-alive connections posting signed callbacks to `addr` for `seconds`;
/// 90% for strangers, 10% for conversations the N-entry manifest names.
async fn load(addr: &str, connections: usize, seconds: u64, users: usize) -> Load {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let addr = addr.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut answered, mut errors) = (0u64, 0u64);
            let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else {
                return (0, 1, latencies);
            };
            let _ = stream.set_nodelay(true);
            let mut i = c as u64;
            let mut query_at = (0, String::new());
            let mut buf = vec![0u8; 4096];
            while Instant::now() < deadline {
                i += connections as u64;
                let now = unix_now();
                if query_at.0 != now {
                    query_at = (
                        now,
                        callback_query(APP, "C2C.CallbackAfterSendMsg", Some(TOKEN), now),
                    );
                }
                let body = if i.is_multiple_of(10) {
                    // `peer{p}` writes to `user{u}`: (user{u}, peer{p}) is forbidden.
                    let u = (i / 10) as usize % users.max(1);
                    one_to_one_body(&format!("peer{}", i % 20), &format!("user{u}"), i)
                } else {
                    one_to_one_body(&format!("stranger{}", i % 997), &format!("other{i}"), i)
                };
                let request = format!(
                    "POST /callback?{} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    query_at.1,
                    body.len()
                );
                let sent = Instant::now();
                if stream.write_all(request.as_bytes()).await.is_err() {
                    errors += 1;
                    break;
                }
                // Read one answer: headers, then Content-Length bytes.
                let mut got = 0usize;
                let ok = loop {
                    match stream.read(&mut buf[got..]).await {
                        Ok(0) | Err(_) => break None,
                        Ok(n) => got += n,
                    }
                    let text = &buf[..got];
                    if let Some(end) = text.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&text[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if got >= end + 4 + length {
                            break Some(head.starts_with("http/1.1 200"));
                        }
                    }
                };
                match ok {
                    Some(true) => {
                        answered += 1;
                        latencies.push(sent.elapsed());
                    }
                    Some(false) => errors += 1,
                    None => {
                        errors += 1;
                        break;
                    }
                }
            }
            (answered, errors, latencies)
        }));
    }
    let mut all = Load {
        answered: 0,
        errors: 0,
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (a, e, l) = t.await.unwrap();
        all.answered += a;
        all.errors += e;
        all.latencies.extend(l);
    }
    all.elapsed = started.elapsed();
    all.latencies.sort();
    all
}

fn report(what: &str, l: &Load) -> (f64, Duration) {
    let rate = l.answered as f64 / l.elapsed.as_secs_f64();
    let p99 = percentile(&l.latencies, 0.99);
    println!(
        "  {what}: {:.0} callbacks/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        rate,
        percentile(&l.latencies, 0.5).as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        l.errors
    );
    (rate, p99)
}

fn rss_mib(child: &Child) -> f64 {
    status_kb(&child.id().to_string(), "VmRSS:").map_or(f64::NAN, mib)
}

fn throughput_and_memory(rt: &tokio::runtime::Runtime) {
    let n = size("N", 1_000_000);
    let per_user = 20;
    let users = n.div_ceil(per_user);
    let seconds = size("SECONDS", 10) as u64;
    let connections = size("CONNECTIONS", 32);
    let flood = size("FLOOD_SECONDS", 60) as u64;
    // A fast fake without the rate limit for the first resync (every list empty: N records),
    // then at the API's pace for the load.
    let fake = Arc::new(
        rt.block_on(FakeTim::start(FakeConfig {
            secret_key: KEY.into(),
            limit_per_second: 1_000_000,
            ..FakeConfig::default()
        }))
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), n, per_user);
    let flags = ["--refresh-rate", "20000", "--reload-interval", "1h"];
    let started = Instant::now();
    let serve = start_serve(&fake, dir.path(), &manifest, &flags);
    wait_until(rt, &serve, "serve's readiness", "ready: active");
    let at_ready = rss_mib(&serve.child);
    wait_until(rt, &serve, "the first resync", "first resync: done");
    println!(
        "serve with {n} entries: ready and first resync done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // SERVE_BASELINE names another timctl binary (an earlier build, say): it serves the same
    // manifest from a state of its own and takes the same load in the same rounds.
    let baseline_dir = tempfile::tempdir().unwrap();
    let baseline = std::env::var_os("SERVE_BASELINE").map(|bin| {
        let mut command = std::process::Command::new(&bin);
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("TIMCTL_") {
                command.env_remove(var);
            }
        }
        let b = start_serve_of(command, &fake, baseline_dir.path(), &manifest, &flags);
        wait_until(rt, &b, "the baseline's readiness", "ready: active");
        let at_ready = rss_mib(&b.child);
        wait_until(rt, &b, "the baseline's first resync", "first resync: done");
        (b, at_ready)
    });
    fake.update(|c| *c = FakeConfig { ..api_pace(KEY) });
    std::thread::sleep(Duration::from_secs(2));
    let at_rest = rss_mib(&serve.child);
    println!(
        "memory, {n} entries: serve RSS {at_ready:.0} MiB at ready (manifests loaded, index \
         built, first resync starting), {at_rest:.0} MiB at rest after the first resync"
    );
    if let Some((b, b_ready)) = &baseline {
        println!(
            "memory, {n} entries: baseline RSS {b_ready:.0} MiB at ready, {:.0} MiB at rest",
            rss_mib(&b.child)
        );
    }

    // Two bare handlers: axum::serve (the issue's ceiling), and serve's own listener and
    // limits (what serve pays before its handler runs).
    let bares: Vec<(&str, String, Child)> = [
        ("bare axum", "axum"),
        ("bare, serve's listener", "listener"),
    ]
    .into_iter()
    .map(|(name, stack)| {
        let addr = free_addr();
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .env(BARE, &addr)
            .env(BARE_STACK, stack)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        (name, addr, child)
    })
    .collect();
    std::thread::sleep(Duration::from_millis(500));
    let rounds = size("ROUNDS", 3);
    println!(
        "callback throughput, {connections} keep-alive connections, {seconds} s each, 90% \
         strangers, {rounds} rounds:"
    );
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let mut rates = Vec::new();
        for (name, addr, _) in &bares {
            let b = rt.block_on(load(addr, connections, seconds, users));
            rates.push((
                name.to_string(),
                report(&format!("round {round} {name}"), &b),
            ));
        }
        if let Some((b, _)) = &baseline {
            let l = rt.block_on(load(&b.listen, connections, seconds, users));
            rates.push((
                "baseline serve".into(),
                report(&format!("round {round} baseline serve"), &l),
            ));
        }
        let s = rt.block_on(load(&serve.listen, connections, seconds, users));
        let (s_rate, s_p99) = report(&format!("round {round} serve"), &s);
        for (name, (rate, p99)) in rates {
            ratios.push((
                round,
                name,
                s_rate / rate,
                s_p99.as_secs_f64() / p99.as_secs_f64().max(1e-9),
            ));
        }
    }
    for (_, _, mut child) in bares {
        let _ = child.kill();
        let _ = child.wait();
    }
    for (round, name, rate, p99) in &ratios {
        println!("  round {round}: serve / {name}: rate {rate:.2}, p99 {p99:.2}");
    }
    // The median of each ratio over the rounds.
    let mut names: Vec<&String> = ratios.iter().map(|r| &r.1).collect();
    names.dedup();
    names.truncate(ratios.len() / rounds.max(1));
    for name in names {
        let median = |pick: fn(&(usize, String, f64, f64)) -> f64| {
            let mut v: Vec<f64> = ratios.iter().filter(|r| &r.1 == name).map(pick).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "  median of {rounds} rounds: serve / {name}: rate {:.2}, p99 {:.2}",
            median(|r| r.2),
            median(|r| r.3)
        );
    }
    if let Some((b, _)) = baseline {
        stop(b);
    }

    if flood == 0 {
        stop(serve);
        return;
    }
    let f = rt.block_on(load(&serve.listen, connections, flood, users));
    report(&format!("flood {flood} s serve"), &f);
    // Let the queue drain (the deletions the flood's 10% asked for) before reading; an
    // unreadable /metrics counts as not drained.
    let waited = Instant::now();
    let mut depth = f64::NAN;
    while waited.elapsed() < Duration::from_secs(900) {
        depth = rt
            .block_on(get(&serve.ops, "/metrics"))
            .ok()
            .and_then(|m| {
                m.body.lines().find_map(|l| {
                    l.strip_prefix("timctl_queue_depth ")?
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
            })
            .unwrap_or(f64::NAN);
        if depth == 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "  after the flood: queue depth {depth} after {:.0} s of draining",
        waited.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_mib(&serve.child);
    println!(
        "memory, {n} entries: RSS at rest {at_rest:.0} MiB, after {flood} s of flood {after:.0} \
         MiB ({:+.1}%)",
        (after / at_rest - 1.0) * 100.0
    );
    stop(serve);
}
