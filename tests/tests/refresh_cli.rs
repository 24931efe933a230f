//! `--refresh` on the command line: what is refused before anything is called (usage errors,
//! missing credentials). The endpoint is a loopback listener that records whether anyone
//! connected, so "nothing called" is checked, not assumed.

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;

const MANIFEST: &str = "version: 1\napp:\n  sdkappid: 1400000001\n  region: singapore\n  admin: administrator\nabsent:\n  alice:\n    - user: bob\n";

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// A listener nobody should connect to, and the endpoint URL naming it.
fn silent_endpoint() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

fn nobody_connected(listener: &TcpListener) -> bool {
    matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

fn run(dir: &Path, url: &str, key: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = timctl_tests::timctl();
    cmd.args(args)
        .current_dir(dir)
        .env("TIMCTL_STATE", dir.join(".timctl/state.db"))
        .env("TIMCTL_ENDPOINT", url)
        .stdin(Stdio::null());
    if let Some(key) = key {
        cmd.env("TIMCTL_SECRET_KEY", key);
    }
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn usage_errors_exit_1_and_call_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("timctl.yaml"), MANIFEST).unwrap();
    std::fs::write(dir.path().join("saved.json"), "{}").unwrap();
    let (listener, url) = silent_endpoint();
    let key = Some("refresh-cli-secret-key");
    for args in [
        &["plan", "--refresh", "--reassert"][..],
        &["apply", "--refresh", "--reassert", "--auto-approve"],
        &["apply", "saved.json", "--refresh"],
        &["plan", "--drift-exitcode"],
        &["plan", "--refresh-rate", "10"],
        &[
            "plan",
            "--refresh",
            "--drift-exitcode",
            "--detailed-exitcode",
        ],
    ] {
        let out = run(dir.path(), &url, key, args);
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("cannot be used with") || out.stderr.contains("required"),
            "{args:?}: {}",
            out.stderr
        );
    }
    let out = run(
        dir.path(),
        &url,
        key,
        &["plan", "--refresh", "--refresh-rate", "0"],
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("--refresh-rate"), "{}", out.stderr);
    assert!(nobody_connected(&listener));
    assert!(!dir.path().join(".timctl").exists(), "nothing written");
}

#[test]
fn refreshing_without_credentials_is_refused_before_any_call() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("timctl.yaml"), MANIFEST).unwrap();
    let (listener, url) = silent_endpoint();
    for args in [
        &["plan", "--refresh"][..],
        &["plan", "--refresh", "--drift-exitcode"],
        &["apply", "--refresh", "--auto-approve"],
    ] {
        let out = run(dir.path(), &url, None, args);
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("credentials"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    }
    assert!(nobody_connected(&listener));
    assert!(!dir.path().join(".timctl").exists(), "nothing written");
    // Without --refresh, plan needs no credentials at all.
    let out = run(dir.path(), &url, None, &["plan"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}
