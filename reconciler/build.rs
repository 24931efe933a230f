//! Stamps the binary with the git commit it was built from, for `timctl --version`.
//!
//! A CI job's log then says exactly which code ran. Everything here is guarded: a build from a
//! tarball, from a copy without `.git`, on a machine without `git`, or inside some other
//! repository that does not track these sources still succeeds and says the commit is unknown.
//! Plain `git` commands keep this to a few lines with no build dependency (vergen and friends
//! pull in a dozen crates to do the same).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Set by packagers who build from a source archive but know the commit it was cut from.
const COMMIT_OVERRIDE: &str = "TIMCTL_BUILD_COMMIT";

/// What the binary is built from, relative to the workspace root.
const BUILD_INPUTS: [&str; 6] = [
    "Cargo.toml",
    "Cargo.lock",
    "api-spec",
    "macros",
    "core",
    "reconciler",
];

fn main() {
    let crate_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let version = std::env::var("CARGO_PKG_VERSION").expect("set by cargo");
    println!("cargo:rerun-if-env-changed={COMMIT_OVERRIDE}");

    let described = match std::env::var(COMMIT_OVERRIDE) {
        Ok(commit) if !commit.trim().is_empty() => format!("commit {}", commit.trim()),
        _ => match git_commit(&crate_dir) {
            Ok(commit) => commit,
            Err(why) => format!("commit unknown: {why}"),
        },
    };
    println!("cargo:rustc-env=TIMCTL_LONG_VERSION={version} ({described})");
}

/// `commit 1a2b3c4d5e6f[-dirty], 2026-11-29`, and tells cargo when to look again.
fn git_commit(crate_dir: &Path) -> Result<String, String> {
    // A source copy unpacked inside some unrelated repository must not claim that
    // repository's commit: the sources themselves have to be tracked.
    if let Err(why) = git(crate_dir, &["ls-files", "--error-unmatch", "Cargo.toml"]) {
        return Err(if why.starts_with("cannot run git") {
            why
        } else {
            "not built from a git checkout".to_owned()
        });
    }
    let git_dir = PathBuf::from(git(crate_dir, &["rev-parse", "--absolute-git-dir"])?);
    let common_dir = crate_dir.join(git(crate_dir, &["rev-parse", "--git-common-dir"])?);

    // Look again when HEAD moves (a checkout, a commit: HEAD itself, or the branch it points
    // to, loose or packed) or the index changes (staging, which `git status` compares against).
    // A linked worktree keeps HEAD and its index in its own git dir, and the refs in the
    // common one. Only existing files are named: cargo reruns on every build for a missing one.
    let mut watched = vec![
        git_dir.join("HEAD"),
        git_dir.join("index"),
        common_dir.join("packed-refs"),
    ];
    if let Ok(branch) = git(crate_dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(common_dir.join(branch));
    }
    // An edit to the sources makes the tree dirty without touching `.git`: watch the inputs
    // of the binary too, so that `-dirty` appears (and goes) with them. "Dirty" means these
    // differ from the commit; an edit to the README or the tests does not change the binary.
    let workspace = crate_dir.parent().unwrap_or(crate_dir);
    for input in BUILD_INPUTS {
        watched.push(workspace.join(input));
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }

    let hash = git(crate_dir, &["rev-parse", "--short=12", "HEAD"])?;
    let date = git(crate_dir, &["log", "-1", "--format=%cs", "HEAD"])?;
    // Tracked files only: an untracked scratch file is not part of what was built.
    let mut status_args = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    status_args.extend(BUILD_INPUTS);
    let status = git(workspace, &status_args)?;
    let dirty = if status.is_empty() { "" } else { "-dirty" };
    Ok(format!("commit {hash}{dirty}, {date}"))
}

/// Runs `git ARGS` in `dir` and returns its trimmed stdout, or why it could not.
fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run git ({e})"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "git {} failed: {}",
            args.join(" "),
            stderr.lines().next().unwrap_or("").trim()
        ));
    }
    String::from_utf8(out.stdout)
        .map(|s| s.trim().to_owned())
        .map_err(|_| format!("git {} printed non-UTF-8", args.join(" ")))
}
