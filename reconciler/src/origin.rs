//! Where and by whom a run runs, as the history records it: the one place every command that
//! writes a run (apply, serve, the state commands) reads it from the environment.

use timctl_core::ledger::RunOrigin;

/// Where and by whom this run runs, for the history: the commit timctl was built from, the
/// host, the OS user and the CI job's URL (GitHub Actions, GitLab CI). Only the binary reads
/// the environment.
pub(crate) fn run_origin() -> RunOrigin {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    // `TIMCTL_LONG_VERSION` reads `0.1.0 (commit 0123abcd…, 2026-01-31)`, or `commit unknown`.
    let long = env!("TIMCTL_LONG_VERSION");
    let commit = long
        .split_once("(commit ")
        .map(|(_, rest)| {
            rest.split([',', ')'])
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .filter(|c| !c.is_empty() && !c.starts_with("unknown"));
    RunOrigin {
        commit,
        host: Some(gethostname()).filter(|h| !h.is_empty()),
        os_user: var("USER")
            .or_else(|| var("LOGNAME"))
            .or_else(|| var("USERNAME")),
        ci_job_url: RunOrigin::ci_job_url(var),
    }
}

/// The host's name, as the state's lock holder names it.
fn gethostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
