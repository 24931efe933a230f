//! `fake-tim`: runs the fake Tencent Cloud Chat endpoint on loopback and prints its URL, for
//! trying timctl locally:
//!
//! ```text
//! $ fake-tim --secret-key test-key --latency 20ms..80ms
//! http://127.0.0.1:41234/
//! $ TIMCTL_ENDPOINT=http://127.0.0.1:41234/ TIMCTL_SECRET_KEY=test-key timctl apply
//! ```
//!
//! `--seed FILE` fills the conversation lists that get_list serves, from JSON:
//!
//! ```text
//! {"conversations": {"alice": ["user:bob", "group:@TGS#1"]},
//!  "pinned": {"alice": ["user:carol"]},
//!  "missing_users": ["ghost"]}
//! ```
//!
//! (`missing_users` are answered 50001 by both endpoints.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use timctl_tests::{DEFAULT_PAGE_SIZE, FakeConfig, FakePeer, FakeTim};

#[derive(Debug, Parser)]
#[command(
    name = "fake-tim",
    about = "A local fake of the Tencent Cloud Chat v4/recentcontact/delete and get_list endpoints."
)]
struct Args {
    /// The app's SDKAppID.
    #[arg(long, default_value_t = 1400000001)]
    sdkappid: u64,
    /// The app admin account (the only identifier accepted).
    #[arg(long, default_value = "administrator")]
    admin: String,
    /// The app's secret key, to verify UserSigs with.
    #[arg(
        long,
        env = "FAKE_TIM_SECRET_KEY",
        default_value = "fake-tim-secret-key",
        hide_env_values = true
    )]
    secret_key: String,
    /// Latency of each answer: a range like 20ms..80ms, or one duration.
    #[arg(long, default_value = "0ms")]
    latency: String,
    /// Requests allowed per endpoint per sliding second before 60007.
    #[arg(long, default_value_t = 200)]
    limit: u32,
    /// The most conversations in one get_list page.
    #[arg(long, default_value_t = DEFAULT_PAGE_SIZE)]
    page_size: usize,
    /// A JSON file of conversation lists to serve (see the binary's documentation).
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

fn parse_latency(s: &str) -> Result<(Duration, Duration), String> {
    let one =
        |t: &str| humantime::parse_duration(t.trim()).map_err(|e| format!("--latency {s:?}: {e}"));
    match s.split_once("..") {
        Some((lo, hi)) => {
            let (lo, hi) = (one(lo)?, one(hi)?);
            if lo > hi {
                return Err(format!(
                    "--latency {s:?}: the lower bound is above the upper"
                ));
            }
            Ok((lo, hi))
        }
        None => one(s).map(|d| (d, d)),
    }
}

/// The `--seed` file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Seed {
    #[serde(default)]
    conversations: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pinned: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    missing_users: Vec<String>,
}

type SeedLists = Vec<(String, Vec<FakePeer>, bool)>;

fn read_seed(path: &Path) -> Result<(SeedLists, Vec<String>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--seed {}: cannot read it: {e}", path.display()))?;
    let seed: Seed = serde_json::from_str(&text)
        .map_err(|e| format!("--seed {}:{}:{}: {e}", path.display(), e.line(), e.column()))?;
    let mut lists = Vec::new();
    for (map, pinned) in [(seed.conversations, false), (seed.pinned, true)] {
        for (user, peers) in map {
            let peers = peers
                .iter()
                .map(|p| {
                    FakePeer::parse(p).ok_or_else(|| {
                        format!(
                            "--seed {}: {p:?} (user {user}) must be user:ID or group:ID",
                            path.display()
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            lists.push((user, peers, pinned));
        }
    }
    Ok((lists, seed.missing_users))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let latency = match parse_latency(&args.latency) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fake-tim: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let (lists, missing) = match args.seed.as_deref().map(read_seed).transpose() {
        Ok(seed) => seed.unwrap_or_default(),
        Err(e) => {
            eprintln!("fake-tim: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let config = FakeConfig {
        sdkappid: args.sdkappid,
        admin: args.admin,
        secret_key: args.secret_key,
        latency,
        limit_per_second: args.limit,
        page_size: args.page_size,
        users: missing.into_iter().map(|u| (u, 50001)).collect(),
        ..FakeConfig::default()
    };
    let fake = match FakeTim::start_on(config, SocketAddr::from(([127, 0, 0, 1], args.port))).await
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fake-tim: could not listen on 127.0.0.1:{}: {e}", args.port);
            return std::process::ExitCode::from(1);
        }
    };
    for (user, peers, pinned) in lists {
        fake.seed_conversations(&user, peers, pinned);
    }
    println!("{}", fake.url());
    let _ = tokio::signal::ctrl_c().await;
    let s = fake.stats();
    eprintln!(
        "fake-tim: {} requests, {} deletions, {} frequency-limited, at most {} in one second",
        s.requests,
        fake.deletions().values().sum::<usize>(),
        s.frequency_limited,
        s.max_in_any_second
    );
    std::process::ExitCode::SUCCESS
}
