//! What the benchmark harnesses share: their sizes from the environment, the runtime that
//! serves fake-tim and the pace it answers at, and the conversations and manifests they use.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The sizes to run, from `var` (comma-separated, e.g. `RATE_N=1000,10000`) or else
/// `default`; an empty value runs none.
///
/// # Panics
/// On a size that is not a number: a benchmark's input is the operator's, not a user's.
pub fn sizes(var: &str, default: &str) -> Vec<usize> {
    std::env::var(var)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().expect("a size is a number"))
        .collect()
}

/// One size from `var`, or `default`.
pub fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The runtime fake-tim runs on in a harness, beside the `timctl` process being measured.
///
/// # Panics
/// When the runtime cannot start.
pub fn runtime(worker_threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .build()
        .expect("the runtime starts")
}

/// Writes `dir/timctl.yaml`: `n` one-to-one conversations that must not exist, `per_user` per
/// From_Account (`user{u}` → `peer{p}`), for the app fake-tim serves by default.
///
/// # Panics
/// When the file cannot be written.
pub fn write_manifest(dir: &Path, n: usize, per_user: usize) -> PathBuf {
    let path = dir.join("timctl.yaml");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create manifest"));
    writeln!(
        f,
        "version: 1\napp:\n  sdkappid: 1400000001\n  region: singapore\n  admin: administrator\nabsent:"
    )
    .expect("write manifest");
    let per_user = per_user.clamp(1, n.max(1));
    for u in 0..n.div_ceil(per_user) {
        writeln!(f, "  user{u}:").expect("write manifest");
        for p in 0..per_user.min(n - u * per_user) {
            writeln!(f, "    - user: peer{p}").expect("write manifest");
        }
    }
    f.flush().expect("write manifest");
    path
}

/// fake-tim at the API's pace: 20–80 ms a call, the documented 200 calls/s enforced, UserSigs
/// checked against `secret_key`.
pub fn api_pace(secret_key: &str) -> crate::FakeConfig {
    crate::FakeConfig {
        secret_key: secret_key.into(),
        latency: (
            std::time::Duration::from_millis(20),
            std::time::Duration::from_millis(80),
        ),
        ..crate::FakeConfig::default()
    }
}

/// Conversation `i`: `user{i / 100}` (eight digits) with `group:@TGS#{i}` for every fifth `i`,
/// else with `user:peer{i}`; so 100 a user, users and groups mixed.
///
/// # Panics
/// Never for a `usize`: the IDs are within the API's limits.
pub fn key(i: usize) -> timctl_core::ids::ConversationKey {
    let from = timctl_core::ids::UserId::new(format!("user{:08}", i / 100)).expect("a UserID");
    let peer = if i.is_multiple_of(5) {
        format!("group:@TGS#{i:012}")
    } else {
        format!("user:peer{i:010}")
    };
    timctl_core::ids::ConversationKey::new(from, peer.parse().expect("a peer"))
}
