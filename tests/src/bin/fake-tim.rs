//! `fake-tim`: runs the fake Tencent Cloud Chat endpoint on loopback and prints its URL, for
//! trying timctl locally:
//!
//! ```text
//! $ fake-tim --secret-key test-key --latency 20ms..80ms
//! http://127.0.0.1:41234/
//! $ TIMCTL_ENDPOINT=http://127.0.0.1:41234/ TIMCTL_SECRET_KEY=test-key timctl apply
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use timctl_tests::{FakeConfig, FakeTim};

#[derive(Debug, Parser)]
#[command(
    name = "fake-tim",
    about = "A local fake of the Tencent Cloud Chat v4/recentcontact/delete endpoint."
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
    /// Requests allowed per sliding second before 60007.
    #[arg(long, default_value_t = 200)]
    limit: u32,
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
    let config = FakeConfig {
        sdkappid: args.sdkappid,
        admin: args.admin,
        secret_key: args.secret_key,
        latency,
        limit_per_second: args.limit,
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
