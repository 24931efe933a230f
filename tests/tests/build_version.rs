//! `reconciler/build.rs`, the script that stamps `--version` with the commit, run for real
//! outside this checkout: compiled with rustc and run as cargo would, over a copy of the
//! sources in a fresh git repository (clean, then dirty) and in a directory with no git at all
//! (a source archive). The checkout's own case is in `gitops_cli.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// build.rs compiled once into a temp dir that lives for the test process.
fn build_script() -> &'static Path {
    static SCRIPT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &SCRIPT
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let exe = dir.path().join("build-script");
            let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
            let status = Command::new(rustc)
                .args(["--edition", "2024", "-O", "-o"])
                .arg(&exe)
                .arg(root().join("reconciler/build.rs"))
                .status()
                .expect("rustc runs");
            assert!(status.success(), "build.rs compiles");
            (dir, exe)
        })
        .1
}

/// A workspace-shaped copy: Cargo.toml, Cargo.lock, api-spec/, core/, macros/, reconciler/.
fn source_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_sources(dir.path());
    dir
}

fn write_sources(dir: &Path) {
    for sub in ["api-spec", "macros/src", "core/src", "reconciler/src"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for (file, text) in [
        ("Cargo.toml", "[workspace]\n"),
        ("Cargo.lock", "version = 4\n"),
        ("core/src/lib.rs", "// core\n"),
        ("reconciler/Cargo.toml", "[package]\nname = \"timctl\"\n"),
        ("reconciler/src/main.rs", "fn main() {}\n"),
        ("README.md", "readme\n"),
    ] {
        std::fs::write(dir.join(file), text).unwrap();
    }
}

/// Runs the build script as cargo would for `reconciler/` in `workspace`; returns the version
/// it stamps and the files it asks cargo to watch.
fn run_build_script(workspace: &Path) -> (String, Vec<String>) {
    let out = Command::new(build_script())
        .current_dir(workspace.join("reconciler"))
        .env("CARGO_MANIFEST_DIR", workspace.join("reconciler"))
        .env("CARGO_PKG_VERSION", "9.8.7")
        .env_remove("TIMCTL_BUILD_COMMIT")
        // Never look above the temp dir for a repository.
        .env("GIT_CEILING_DIRECTORIES", workspace.parent().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let version = stdout
        .lines()
        .find_map(|l| l.strip_prefix("cargo:rustc-env=TIMCTL_LONG_VERSION="))
        .expect("the script sets TIMCTL_LONG_VERSION")
        .to_owned();
    let watched = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("cargo:rerun-if-changed="))
        .map(str::to_owned)
        .collect();
    (version, watched)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn outside_git_the_version_says_the_commit_is_unknown() {
    let copy = source_copy();
    let (version, watched) = run_build_script(copy.path());
    assert_eq!(
        version,
        "9.8.7 (commit unknown: not built from a git checkout)"
    );
    assert!(watched.is_empty(), "nothing to watch: {watched:?}");
}

#[test]
fn in_a_repository_the_version_names_the_commit_and_its_dirt() {
    let copy = source_copy();
    let dir = copy.path();
    git(dir, &["init", "-q"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "first"]);
    let head = git(dir, &["rev-parse", "--short=12", "HEAD"]);
    let date = git(dir, &["log", "-1", "--format=%cs"]);

    let (version, watched) = run_build_script(dir);
    assert_eq!(version, format!("9.8.7 (commit {head}, {date})"));
    // HEAD, the branch it points to, the index, and the sources: the stamp follows each.
    let git_dir = dir.join(".git");
    for expected in [
        git_dir.join("HEAD"),
        git_dir.join("index"),
        git_dir.join("refs/heads/main"),
        dir.join("core"),
        dir.join("reconciler"),
    ] {
        let expected = expected.canonicalize().unwrap();
        assert!(
            watched
                .iter()
                .any(|w| Path::new(w).canonicalize().ok().as_deref() == Some(&expected)),
            "{} not in {watched:?}",
            expected.display()
        );
    }

    // An untracked file, or an edit outside the binary's sources: still clean.
    std::fs::write(dir.join("core/src/scratch.rs"), "// scratch\n").unwrap();
    std::fs::write(dir.join("README.md"), "edited\n").unwrap();
    let (version, _) = run_build_script(dir);
    assert_eq!(version, format!("9.8.7 (commit {head}, {date})"));

    // An edit to a tracked source: dirty.
    std::fs::write(dir.join("core/src/lib.rs"), "// changed\n").unwrap();
    let (version, _) = run_build_script(dir);
    assert_eq!(version, format!("9.8.7 (commit {head}-dirty, {date})"));
}

#[test]
fn a_copy_inside_an_unrelated_repository_does_not_claim_its_commit() {
    let outer = tempfile::tempdir().unwrap();
    git(outer.path(), &["init", "-q"]);
    std::fs::write(outer.path().join("other.txt"), "other\n").unwrap();
    git(outer.path(), &["add", "-A"]);
    git(outer.path(), &["commit", "-qm", "unrelated"]);
    // The sources unpacked, untracked, inside it (a vendored tarball).
    let inner = outer.path().join("vendor/timctl");
    write_sources(&inner);
    let out = Command::new(build_script())
        .env("CARGO_MANIFEST_DIR", inner.join("reconciler"))
        .env("CARGO_PKG_VERSION", "9.8.7")
        .env_remove("TIMCTL_BUILD_COMMIT")
        .env("GIT_CEILING_DIRECTORIES", outer.path().parent().unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(
            "cargo:rustc-env=TIMCTL_LONG_VERSION=9.8.7 (commit unknown: not built from a git checkout)"
        ),
        "{stdout}"
    );
}

#[test]
fn packagers_can_name_the_commit_of_a_source_archive() {
    let copy = source_copy();
    let out = Command::new(build_script())
        .env("CARGO_MANIFEST_DIR", copy.path().join("reconciler"))
        .env("CARGO_PKG_VERSION", "9.8.7")
        .env("TIMCTL_BUILD_COMMIT", "abcdef123456")
        .env("GIT_CEILING_DIRECTORIES", copy.path().parent().unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("cargo:rustc-env=TIMCTL_LONG_VERSION=9.8.7 (commit abcdef123456)"),
        "{stdout}"
    );
    assert!(stdout.contains("cargo:rerun-if-env-changed=TIMCTL_BUILD_COMMIT"));
}
