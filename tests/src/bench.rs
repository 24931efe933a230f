//! What the benchmark harnesses share: their sizes from the environment, the runtime that
//! serves fake-tim, and the manifests they apply.

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
