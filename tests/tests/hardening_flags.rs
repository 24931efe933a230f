//! Issue 18.9, the small ones at the command line: a state name that would look like another
//! (white space at an end, an invisible or bidirectional-control character) and
//! `--concurrency 0` are refused, exit 1, before anything is read, called or written.

use std::process::Stdio;

const MANIFEST: &str = "version: 1\napp:\n  sdkappid: 1400000001\n  region: singapore\n  admin: administrator\nabsent:\n  alice:\n    - user: bob\n";

fn run(args: &[&str]) -> (Option<i32>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("timctl.yaml"), MANIFEST).unwrap();
    let out = timctl_tests::timctl()
        .args(args)
        .current_dir(dir.path())
        // Nothing listens here: a refusal must come before any call.
        .env("TIMCTL_ENDPOINT", "http://127.0.0.1:9")
        .env("TIMCTL_SECRET_KEY", "hardening-flags-key")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        dir,
    )
}

#[test]
fn state_names_that_look_like_another_are_refused() {
    for name in [
        "prod ",
        " prod",
        "pr\u{202E}dor",
        "prod\u{200B}",
        "prod\u{2066}",
        "pro\u{00A0}d",
        "prod\u{FEFF}",
    ] {
        let (code, err, dir) = run(&[
            "state",
            "list",
            "--state",
            "postgres://ci@127.0.0.1:9/db",
            "--state-name",
            name,
        ]);
        assert_eq!(code, Some(1), "{name:?}: {err}");
        assert!(err.contains("state name"), "{name:?}: {err}");
        assert!(
            !err.contains(name) || name.is_ascii(),
            "shown escaped: {err}"
        );
        assert!(!dir.path().join(".timctl").exists());
    }
    // An ordinary name with an inner space stays allowed (it fails later, on the unreachable
    // database, not on its name).
    let (code, err, _dir) = run(&[
        "state",
        "list",
        "--state",
        "postgres://ci@127.0.0.1:9/db?connect_timeout=2",
        "--state-name",
        "team a",
    ]);
    assert_eq!(code, Some(1));
    assert!(!err.contains("state name"), "{err}");
}

#[test]
fn concurrency_zero_is_refused_not_taken_as_one() {
    let (code, err, dir) = run(&["apply", "--auto-approve", "--concurrency", "0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--concurrency must be at least 1"), "{err}");
    assert!(!dir.path().join(".timctl").exists());
}
