//! Benchmark: calls per second the client sustains against fake-tim with 20–80 ms latency, as a
//! ratio to the documented 200/s, and the frequency-limit answers it provokes (target: ≥ 0.97
//! of the limit, none). A harness of its own (not criterion): one run takes seconds of wall
//! time by design, since it measures a rate.
//!
//! `cargo bench -p timctl-tests --bench client_rate` (CALLS=3000 RUNS=3 by default).

use std::time::Instant;

use timctl_core::api::{Conversation, RecentContactDelete, RecentContactDeleteRequest};
use timctl_core::client::{BaseUrl, Client, ClientConfig, Credentials, Outcome};
use timctl_core::usersig::SecretKey;
use timctl_tests::FakeTim;

const DOCUMENTED: f64 = 200.0;

struct Run {
    calls_per_second: f64,
    frequency_limited: u64,
    max_in_any_second: u64,
    retries: u64,
}

async fn run(calls: usize, rate: Option<f64>, concurrency: usize) -> Run {
    let fake = FakeTim::start(timctl_tests::bench::api_pace("bench-key"))
        .await
        .expect("fake-tim starts");
    let mut cfg = ClientConfig::new(
        BaseUrl::parse(fake.url()).expect("loopback URL"),
        1400000001,
        "administrator",
        Credentials::SecretKey(SecretKey::new("bench-key").expect("key")),
    );
    if let Some(r) = rate {
        cfg.set_rate::<RecentContactDelete>(r);
    }
    let client = Client::new(cfg).expect("client");
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = Instant::now();
    let tasks: Vec<_> = (0..calls)
        .map(|i| {
            let client = client.clone();
            let sem = sem.clone();
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await.expect("semaphore open");
                let req = RecentContactDeleteRequest {
                    from_account: format!("user{}", i % 100),
                    conversation: Conversation::OneToOne {
                        to_account: format!("peer{i}"),
                    },
                    clear_ramble: Some(false),
                };
                matches!(
                    client.call::<RecentContactDelete>(&req).await,
                    Outcome::Success(_)
                )
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.expect("task") {
            ok += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(ok, calls, "every call succeeds");
    let s = fake.stats();
    Run {
        calls_per_second: calls as f64 / elapsed,
        frequency_limited: s.frequency_limited,
        max_in_any_second: s.max_in_any_second,
        retries: client.stats().retries,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let calls = env("CALLS", 3000);
    let runs = env("RUNS", 3);
    println!(
        "{calls} calls per run, {runs} runs, latency 20-80 ms, documented limit {DOCUMENTED}/s"
    );
    println!(
        "| rate setting | concurrency | median calls/s | ratio to 200/s | frequency-limit answers | max in any 1 s | retries |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, rate, conc) in [("default (197)", None, 64), ("--rate 200", Some(200.0), 64)] {
        let mut rates = Vec::new();
        let (mut limited, mut max_window, mut retries) = (0, 0, 0);
        for _ in 0..runs {
            let r = run(calls, rate, conc).await;
            rates.push(r.calls_per_second);
            limited += r.frequency_limited;
            max_window = max_window.max(r.max_in_any_second);
            retries += r.retries;
        }
        let m = median(rates);
        println!(
            "| {label} | {conc} | {m:.1} | {:.3} | {limited} | {max_window} | {retries} |",
            m / DOCUMENTED
        );
    }
}
