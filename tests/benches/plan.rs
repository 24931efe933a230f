//! The plan benchmark of BENCHMARKS.md: a 1M-entry desired state against an empty state and
//! against a 1M-entry ledger that overlaps it by half, split into reading the ledger, diffing
//! and rendering the JSON document. Prints medians; peak memory is the process's VmHWM.
//!
//! Then (building the release `timctl` binary if needed) the end-to-end `timctl plan --format json`
//! on the same entries written as one manifest file, against no state and against the ledger:
//! wall time and peak memory (`/usr/bin/time`), medians of 3.
//!
//! `cargo bench -p timctl-tests --bench plan` (set
//! `PLAN_BENCH_N` for another size).

use std::time::{Duration, Instant};

use timctl_core::api::Region;
use timctl_core::desired::{App, DesiredEntry, DesiredState};
use timctl_core::ids::{Peer, UserId};
use timctl_core::ledger::{
    Deleted, Ledger, LedgerWriter, RunInfo, SqliteLedger, SqliteLedgerWriter, StateLock,
};
use timctl_core::plan::{self, Filter};
use timctl_tests::bench;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run small then.
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("PLAN_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 2_000 });
    let runs = if full { 5 } else { 1 };

    let t = Instant::now();
    let mut entries: Vec<DesiredEntry> = (0..n)
        .map(|i| DesiredEntry {
            key: bench::key(i),
            clear_roaming: i.is_multiple_of(3),
        })
        .collect();
    entries.sort();
    let desired = DesiredState {
        app: App {
            sdkappid: 1_400_000_001,
            region: Region::Singapore,
            admin: UserId::new("administrator").unwrap(),
        },
        entries,
        digest: "bench".to_owned(),
        files: 1,
    };
    println!("generated {n} desired entries in {:.2?}", t.elapsed());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let t = Instant::now();
    {
        let lock = StateLock::acquire(&path, "bench", Duration::ZERO).unwrap();
        let mut w = SqliteLedgerWriter::create_or_open(&path, 1_400_000_001, lock).unwrap();
        let at = jiff::Timestamp::now();
        let batch: Vec<Deleted> = (n / 2..n + n / 2)
            .map(|i| Deleted {
                key: bench::key(i),
                clear_roaming: false,
                deleted_at: at,
            })
            .collect();
        w.record_deleted(&RunInfo::new("bench"), &batch).unwrap();
    }
    println!(
        "wrote a {n}-entry ledger (half overlapping) in {:.2?} ({} MiB on disk)",
        t.elapsed(),
        std::fs::metadata(&path).unwrap().len() / (1 << 20)
    );

    let mut read = Vec::new();
    let mut state = Vec::new();
    let mut state_ref = None;
    for _ in 0..runs {
        let t = Instant::now();
        let ledger = SqliteLedger::open_read_only(&path).unwrap();
        state = ledger.entries().unwrap();
        state_ref = ledger.state_ref();
        read.push(t.elapsed());
    }
    let filter = Filter::default();
    let mut diff_empty = Vec::new();
    let mut diff_full = Vec::new();
    let mut json = Vec::new();
    let mut summary = None;
    for _ in 0..runs {
        let t = Instant::now();
        let p = plan::diff(&desired, None, &[], &filter);
        diff_empty.push(t.elapsed());
        drop(p);
        let t = Instant::now();
        let p = plan::diff(&desired, state_ref, &state, &filter);
        diff_full.push(t.elapsed());
        let t = Instant::now();
        let mut out = std::io::BufWriter::new(std::io::sink());
        plan::saved::to_writer(&p, &mut out).unwrap();
        json.push(t.elapsed());
        summary = Some(p.summary);
    }
    let s = summary.unwrap();
    // Deletes: the first half (not in the ledger), and entries of the second half that ask for
    // clear_roaming, which the ledger recorded without.
    let upgraded = (n / 2..n).filter(|i| i.is_multiple_of(3)).count();
    assert_eq!(s.delete as usize, n / 2 + upgraded);
    println!(
        "read ledger ({} entries): median {:.3?}",
        state.len(),
        median(read)
    );
    println!(
        "diff vs empty state:      median {:.3?}",
        median(diff_empty)
    );
    println!(
        "diff vs ledger:           median {:.3?} ({} delete, {} forget, {} unchanged)",
        median(diff_full),
        s.delete,
        s.forget,
        s.unchanged
    );
    println!("render JSON to a sink:    median {:.3?}", median(json));
    println!(
        "peak RSS (VmHWM): {:.0} MiB",
        timctl_tests::measure::peak_rss_mib()
    );
    drop(state);

    end_to_end(&desired, dir.path(), &path, runs.min(3));
}

/// Writes `desired` as one manifest file, in the documented manifest layout.
fn write_manifest(desired: &DesiredState, path: &std::path::Path) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(
        out,
        "version: 1\napp:\n  sdkappid: {}\n  region: singapore\n  admin: administrator\nabsent:",
        desired.app.sdkappid
    )
    .unwrap();
    let mut last: Option<&UserId> = None;
    for e in &desired.entries {
        if last != Some(&e.key.from) {
            writeln!(out, "  {}:", e.key.from).unwrap();
            last = Some(&e.key.from);
        }
        let (kind, id) = match &e.key.peer {
            Peer::User(u) => ("user", u.as_str()),
            Peer::Group(g) => ("group", g.as_str()),
        };
        if e.clear_roaming {
            writeln!(out, "    - {{ {kind}: \"{id}\", clear_roaming: true }}").unwrap();
        } else {
            writeln!(out, "    - {kind}: \"{id}\"").unwrap();
        }
    }
    out.flush().unwrap();
}

/// `timctl plan --format json` as a user runs it: time and peak memory from `/usr/bin/time`.
fn end_to_end(
    desired: &DesiredState,
    dir: &std::path::Path,
    ledger: &std::path::Path,
    runs: usize,
) {
    let timctl = timctl_tests::timctl_bin();
    let manifest = dir.join("big.yaml");
    write_manifest(desired, &manifest);
    let mb = std::fs::metadata(&manifest).unwrap().len() as f64 / 1e6;
    println!("wrote the manifest: {mb:.1} MB");
    for (label, state) in [
        ("no state", dir.join("none.db")),
        ("the ledger", ledger.to_path_buf()),
    ] {
        let mut secs = Vec::new();
        let mut peak = Vec::new();
        for _ in 0..runs {
            let out = timctl_tests::succeeds(
                std::process::Command::new("/usr/bin/time")
                    .args(["-f", "%e %M"])
                    .arg(timctl)
                    .args(["plan", "--format", "json", "-f"])
                    .arg(&manifest)
                    .arg("--state")
                    .arg(&state)
                    .stdout(std::process::Stdio::null()),
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().last().unwrap_or_default().to_owned();
            let mut it = last.split_whitespace();
            secs.push(Duration::from_secs_f64(it.next().unwrap().parse().unwrap()));
            peak.push(it.next().unwrap().parse::<u64>().unwrap() / 1024);
        }
        peak.sort();
        println!(
            "timctl plan --format json vs {label}: median {:.2?}, peak RSS median {} MiB",
            median(secs),
            peak[peak.len() / 2]
        );
    }
}
