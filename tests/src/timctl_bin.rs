//! Where the end-to-end tests find the `timctl` binary.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The `timctl` binary, built (or brought up to date) first, once per test process.
///
/// The end-to-end tests live in this package and the binary in another (`reconciler/`), so
/// Cargo neither builds it for them nor tells them where it is: `CARGO_BIN_EXE_*` covers a
/// package's own binaries only. Building it here means `cargo test --workspace` and `cargo test
/// -p timctl-tests` work on a fresh clone, and never run a stale binary after an edit.
///
/// # Panics
/// When the build fails: every test that needs the binary would fail anyway, and the build's
/// own errors are on stderr.
pub fn timctl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let exe = std::env::current_exe().expect("the test binary knows where it is");
        // Tests and benches run from target/<profile>/deps/: build the same profile.
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binaries live in target/<profile>/deps");
        let mut build = std::process::Command::new(cargo);
        build.args([
            "build", "--quiet", "--locked", "-p", "timctl", "--bin", "timctl",
        ]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build -p timctl");
        assert!(status.success(), "cargo build -p timctl failed");
        let bin = profile_dir.join(format!("timctl{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
}

/// `timctl` ready to run in a test: an up-to-date binary ([`timctl_bin`]) with none of the
/// caller's `TIMCTL_*` variables, so that a developer's real state, endpoint or key can never
/// reach a test run, and no colour. Tests add what they need.
pub fn timctl() -> std::process::Command {
    let mut cmd = std::process::Command::new(timctl_bin());
    for var in [
        "TIMCTL_STATE",
        "TIMCTL_STATE_NAME",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGUSER",
        "TIMCTL_ENDPOINT",
        "TIMCTL_SECRET_KEY",
        "TIMCTL_SECRET_KEY_FILE",
        "TIMCTL_USERSIG",
        "TIMCTL_LOG",
    ] {
        cmd.env_remove(var);
    }
    // Every flag's variable too (TIMCTL_MANIFEST, TIMCTL_MAX_DELETES, ...): a developer's own
    // settings must not change what a test runs.
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("TIMCTL_") {
            cmd.env_remove(var);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}
