//! The wrong context is said, never silently planned around: a state that does not exist, and a
//! `--user`/`--exclude-user` that names nobody (a typo would otherwise print "No changes").

use std::path::Path;
use std::process::Output;

const MANIFEST: &str = "version: 1\napp:\n  sdkappid: 1400000001\n  region: singapore\n  \
    admin: administrator\nabsent:\n  alice:\n    - user: bob\n  carol:\n    - user: dave\n";

fn check(out: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

fn timctl(dir: &Path, args: &[&str]) -> Output {
    timctl_tests::timctl()
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_plan_without_a_state_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("timctl.yaml"), MANIFEST).unwrap();
    for format in ["text", "json", "markdown"] {
        let out = timctl(
            dir.path(),
            &["plan", "--state", "sate.db", "--format", format],
        );
        let (_, stderr) = check(&out, 0);
        assert!(
            stderr.contains("warning: no state at sate.db: every entry is planned as new"),
            "{format}: {stderr}"
        );
    }
    assert!(!dir.path().join("sate.db").exists(), "plan created nothing");
}

#[test]
fn a_user_flag_naming_nobody_is_an_error_with_the_closest_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("timctl.yaml"), MANIFEST).unwrap();
    for args in [
        &["plan", "--user", "alcie"][..],
        &["apply", "--user", "alcie", "--auto-approve"],
    ] {
        let (command, out) = (args[0], timctl(dir.path(), args));
        let (stdout, stderr) = check(&out, 1);
        assert!(stderr.contains("--user \"alcie\""), "{command}: {stderr}");
        assert!(
            stderr.contains("did you mean alice?"),
            "{command}: {stderr}"
        );
        assert!(!stdout.contains("No changes"), "{command}: {stdout}");
        assert!(
            !dir.path().join(".timctl/state.db").exists(),
            "{command} wrote nothing"
        );
    }
    let out = timctl(dir.path(), &["plan", "--exclude-user", "zed"]);
    let (_, stderr) = check(&out, 1);
    assert!(stderr.contains("--exclude-user \"zed\""), "{stderr}");
    // A user the manifests name is fine.
    let out = timctl(dir.path(), &["plan", "--user", "carol"]);
    let (stdout, _) = check(&out, 0);
    assert!(stdout.contains("Plan: 1 to delete"), "{stdout}");
}

#[test]
fn plan_text_is_coloured_only_when_asked_or_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("timctl.yaml"), MANIFEST).unwrap();
    // The test harness sets NO_COLOR=1 and stdout is a pipe: `always` still colours.
    let out = timctl(dir.path(), &["plan", "--color", "always"]);
    let (stdout, _) = check(&out, 0);
    assert!(
        stdout.contains("\u{1b}[31m- delete\u{1b}[0m user:bob"),
        "{stdout:?}"
    );
    assert!(stdout.contains("\u{1b}[1malice\u{1b}[0m"), "{stdout:?}");
    for args in [
        &["plan"][..],
        &["plan", "--color", "never"],
        &["plan", "--color", "always", "--format", "json"],
        &["plan", "--color", "always", "--format", "markdown"],
    ] {
        let out = timctl(dir.path(), args);
        let (stdout, _) = check(&out, 0);
        assert!(!stdout.contains('\u{1b}'), "{args:?}: {stdout:?}");
    }
    let out = timctl_tests::timctl()
        .current_dir(dir.path())
        .args(["plan"])
        .env("TIMCTL_COLOR", "always")
        .output()
        .unwrap();
    let (stdout, _) = check(&out, 0);
    assert!(stdout.contains("\u{1b}[31m"), "{stdout:?}");
}

#[test]
fn plan_text_is_coloured_on_a_terminal_unless_no_color() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("timctl.yaml"), MANIFEST).unwrap();
    // util-linux's `script` runs the plan on a pseudo-terminal.
    let on_a_terminal = |no_color: &str| {
        let out = std::process::Command::new("script")
            .current_dir(dir.path())
            .args([
                "-qec",
                &format!("{} plan", timctl_tests::timctl_bin().display()),
                "/dev/null",
            ])
            .env_remove("TIMCTL_STATE")
            .env("NO_COLOR", no_color)
            .output()
            .expect("script (util-linux) runs");
        check(&out, 0).0
    };
    assert!(on_a_terminal("").contains("\u{1b}[31m- delete"));
    assert!(!on_a_terminal("1").contains('\u{1b}'));
}
