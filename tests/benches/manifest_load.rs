//! The manifest load benchmark: `cargo bench -p timctl-tests --bench manifest_load [SIZES]`,
//! e.g. `-- 10000,100000`.
//!
//! It writes manifests of 10k, 100k and 1M conversations (10 per user) into a temporary
//! directory, as one file and as 16 files, and loads each several times, every run in a fresh
//! child process so that peak memory (VmHWM) is that run's alone. In the same run it times
//! PyYAML's C loader on the same single files, which is what a user would otherwise script.
//! It prints a Markdown table of medians for BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const RUNS: usize = 5;

fn main() {
    // `cargo bench` passes `--bench`; the harness takes its own arguments only.
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    if args.get(1).map(String::as_str) == Some("--once") {
        once(&args[2..]);
        return;
    }
    let sizes: Vec<usize> = match args.get(1) {
        Some(list) => list
            .split(',')
            .map(|s| s.parse().expect("sizes like 10000,100000"))
            .collect(),
        None => vec![10_000, 100_000, 1_000_000],
    };
    let dir = std::env::temp_dir().join(format!("timctl-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the benchmark directory");
    println!(
        "| entries | layout | MB | timctl load+validate (median s) | MB/s | µs/entry | peak RSS MiB | PyYAML CSafeLoader (median s) | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        let single = dir.join(format!("m{n}.yaml"));
        write_manifest(&single, 0..n / 10, true);
        let split = dir.join(format!("split{n}"));
        std::fs::create_dir_all(&split).expect("create the split directory");
        let users = n / 10;
        for part in 0..16 {
            let lo = users * part / 16;
            let hi = users * (part + 1) / 16;
            write_manifest(
                &split.join(format!("part{part:02}.yaml")),
                lo..hi,
                part == 0,
            );
        }
        let bytes = std::fs::metadata(&single).expect("stat the manifest").len() as f64;
        let mb = bytes / 1e6;

        let (t, rss) = median_runs(&single, n);
        let py = median((0..RUNS.min(3)).map(|_| pyyaml(&single)).collect());
        println!(
            "| {n} | 1 file | {mb:.1} | {t:.3} | {:.1} | {:.2} | {rss:.0} | {py:.2} | {:.1}× |",
            mb / t,
            t * 1e6 / n as f64,
            py / t
        );
        let (t16, rss16) = median_runs(&split, n);
        println!(
            "| {n} | 16 files | {mb:.1} | {t16:.3} | {:.1} | {:.2} | {rss16:.0} | | |",
            mb / t16,
            t16 * 1e6 / n as f64,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes users `users` with ten conversations each (nine users, one group; every third with
/// clear_roaming), the shape of a real app's manifest.
fn write_manifest(path: &Path, users: std::ops::Range<usize>, with_app: bool) {
    use std::fmt::Write as _;
    let mut s = String::from("version: 1\n");
    if with_app {
        s.push_str("app:\n  sdkappid: 1400000001\n  region: singapore\n  admin: administrator\n");
    }
    s.push_str("absent:\n");
    for u in users {
        let _ = writeln!(s, "  user{u:07}:");
        for k in 0..10 {
            if k == 9 {
                let _ = writeln!(s, "    - group: \"@TGS#{u:07}\"");
            } else {
                let _ = writeln!(s, "    - user: peer{:07}", (u * 7 + k * 13) % 9_999_991);
            }
            if (u + k) % 3 == 0 {
                s.push_str("      clear_roaming: true\n");
            }
        }
    }
    std::fs::write(path, s).expect("write the manifest");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Loads `path` RUNS times, each in a child process; medians of seconds and peak MiB.
fn median_runs(path: &Path, expected: usize) -> (f64, f64) {
    let exe = std::env::current_exe().expect("find the harness binary");
    let mut times = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..RUNS {
        let out = timctl_tests::succeeds(
            Command::new(&exe)
                .arg("--once")
                .arg(path)
                .arg(expected.to_string()),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut parts = text.split_whitespace();
        times.push(parts.next().and_then(|s| s.parse().ok()).expect("seconds"));
        rss.push(parts.next().and_then(|s| s.parse().ok()).expect("MiB"));
    }
    (median(times), median(rss))
}

/// The child: one load, then "seconds peak_MiB" on stdout.
fn once(args: &[String]) {
    let path = PathBuf::from(&args[0]);
    let expected: usize = args[1].parse().expect("entry count");
    let start = Instant::now();
    let state = match timctl_core::manifest::load(&[path]) {
        Ok(s) => s,
        Err(e) => panic!("the benchmark manifest failed to load: {e}"),
    };
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(state.entries.len(), expected);
    println!("{secs:.4} {:.1}", timctl_tests::measure::peak_rss_mib());
}

/// PyYAML's C loader on the same file, timed inside Python (load only, not start-up).
fn pyyaml(path: &Path) -> f64 {
    let script = "import sys,time,yaml\nt=time.perf_counter()\nyaml.load(open(sys.argv[1]),Loader=yaml.CSafeLoader)\nprint(time.perf_counter()-t)";
    match Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}
