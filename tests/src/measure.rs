//! Memory readings for the benchmarks.

/// A field of `/proc/<pid>/status` in kB, e.g. `status_kb("self", "VmHWM:")` for this
/// process's peak resident set. `None` where /proc or the field is missing.
pub fn status_kb(pid: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// This process's peak resident set (VmHWM) in MiB, NaN where it cannot be read.
pub fn peak_rss_mib() -> f64 {
    status_kb("self", "VmHWM:").map_or(f64::NAN, mib)
}

/// KiB (as `/proc` counts) in MiB.
pub fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}
