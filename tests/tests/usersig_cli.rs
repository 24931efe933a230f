//! `timctl usersig`: makes a UserSig printed alone on stdout, verifies one with exit 0 or 1 and
//! the reason, accepts the reference libraries' UserSigs, and needs the secret key.

use timctl_core::usersig::{self, SecretKey};

const KEY: &str = "cli-secret-key-0123456789";

fn timctl(args: &[&str], key: Option<&str>) -> std::process::Output {
    let mut cmd = timctl_tests::timctl();
    cmd.args(args);
    if let Some(k) = key {
        cmd.env("TIMCTL_SECRET_KEY", k);
    }
    cmd.output().unwrap()
}

/// Exit 1, with `needle` in what it says on stderr.
fn fails_saying(out: &std::process::Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(needle), "{}", text(&out.stderr));
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn make_prints_the_usersig_alone_and_verify_accepts_it() {
    let out = timctl(
        &[
            "usersig",
            "--sdkappid",
            "1400000001",
            "--identifier",
            "administrator",
            "--expire",
            "1h",
        ],
        Some(KEY),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let sig = stdout.trim_end_matches('\n');
    assert_eq!(stdout.lines().count(), 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let v = usersig::verify(
        sig,
        &SecretKey::new(KEY).unwrap(),
        1400000001,
        "administrator",
        now,
    )
    .unwrap();
    assert_eq!(v.expire, 3600);
    assert!(!text(&out.stderr).contains(KEY));

    let out = timctl(
        &[
            "usersig",
            "--verify",
            sig,
            "--sdkappid",
            "1400000001",
            "--identifier",
            "administrator",
        ],
        Some(KEY),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("valid: UserSig for administrator in app 1400000001"),
        "{}",
        text(&out.stdout)
    );

    // Each reason, with exit 1 and nothing on stdout.
    for (args, key, reason) in [
        (
            vec!["--sdkappid", "1400000001", "--identifier", "administrator"],
            "another-key",
            "another secret key",
        ),
        (
            vec!["--sdkappid", "1400000001", "--identifier", "alice"],
            KEY,
            "made for identifier \"administrator\"",
        ),
        (
            vec!["--sdkappid", "1400000002", "--identifier", "administrator"],
            KEY,
            "made for SDKAppID 1400000001",
        ),
    ] {
        let mut a = vec!["usersig", "--verify", sig];
        a.extend(args);
        let out = timctl(&a, Some(key));
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stdout).is_empty());
        let err = text(&out.stderr);
        assert!(err.contains(reason), "{err}");
        assert!(!err.contains(sig) && !err.contains(KEY), "{err}");
    }
    let out = timctl(
        &[
            "usersig",
            "--verify",
            "garbage",
            "--sdkappid",
            "1",
            "--identifier",
            "a",
        ],
        Some(KEY),
    );
    fails_saying(&out, "malformed");
}

#[test]
fn verify_reports_an_expired_usersig() {
    let sig = usersig::make(7, "admin", &SecretKey::new(KEY).unwrap(), 1_600_000_000, 60);
    let out = timctl(
        &[
            "usersig",
            "--verify",
            &sig,
            "--sdkappid",
            "7",
            "--identifier",
            "admin",
        ],
        Some(KEY),
    );
    fails_saying(&out, "expired");
}

/// The reference libraries' UserSigs verify through the command too (their expiry is long
/// past, so the HMAC and identity checks pass and expiry is what fails).
#[test]
fn reference_library_usersigs_are_recognised() {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../vectors/usersigs.json")).unwrap();
    let key = v["key"].as_str().unwrap();
    let app = v["sdkappid"].to_string();
    for lib in ["python_tls_sig_api_v2_1_1", "npm_tls_sig_api_v2_1_0_2"] {
        let case = &v[lib][0];
        let sig = case["usersig"].as_str().unwrap();
        let id = case["identifier"].as_str().unwrap();
        let out = timctl(
            &[
                "usersig",
                "--verify",
                sig,
                "--sdkappid",
                &app,
                "--identifier",
                id,
            ],
            Some(key),
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("expired"),
            "{lib}: {}",
            text(&out.stderr)
        );
        let out = timctl(
            &[
                "usersig",
                "--verify",
                sig,
                "--sdkappid",
                &app,
                "--identifier",
                id,
            ],
            Some("wrong"),
        );
        assert!(
            text(&out.stderr).contains("another secret key"),
            "{lib}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn without_a_key_or_app_it_says_what_to_set() {
    let out = timctl(&["usersig", "--sdkappid", "1", "--identifier", "a"], None);
    fails_saying(&out, "TIMCTL_SECRET_KEY");
    assert!(text(&out.stdout).is_empty());
    let out = timctl(&["usersig", "--identifier", "a"], Some(KEY));
    fails_saying(&out, "--sdkappid");
    let out = timctl(
        &[
            "usersig",
            "--sdkappid",
            "1",
            "--identifier",
            "this-identifier-is-far-too-long-for-chat",
        ],
        Some(KEY),
    );
    fails_saying(&out, "--identifier");
}

#[test]
fn the_app_defaults_to_the_manifests() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/timctl.yaml");
    let out = timctl(&["usersig", "-f", manifest], Some(KEY));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sig = text(&out.stdout);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // examples/timctl.yaml: sdkappid 1400000001, admin "administrator".
    let key = SecretKey::new(KEY).unwrap();
    usersig::verify(sig.trim(), &key, 1400000001, "administrator", now).unwrap();
    // A flag still wins over the manifest.
    let out = timctl(
        &["usersig", "-f", manifest, "--identifier", "alice"],
        Some(KEY),
    );
    let sig = text(&out.stdout);
    usersig::verify(sig.trim(), &key, 1400000001, "alice", now).unwrap();
    let out = timctl(
        &["usersig", "--verify", sig.trim(), "-f", manifest],
        Some(KEY),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "made for alice, checked for the admin"
    );
}

/// Runs `timctl usersig --verify -` with `input` written to its stdin from another thread; the
/// writer's result says whether the command took the whole input.
fn verify_from_stdin(input: Vec<u8>) -> (std::process::Output, std::io::Result<()>) {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = timctl_tests::timctl()
        .args([
            "usersig",
            "--verify",
            "-",
            "--sdkappid",
            "1400000001",
            "--identifier",
            "administrator",
        ])
        .env("TIMCTL_SECRET_KEY", KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    (out, writer.join().unwrap())
}

/// `--verify -` reads the UserSig from stdin, but never more than 64 KiB of it: a larger input
/// is refused with a clear error before it is read whole.
#[test]
fn verify_from_stdin_is_bounded() {
    let key = SecretKey::new(KEY).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sig = usersig::make(1400000001, "administrator", &key, now, 3600);
    let (out, written) = verify_from_stdin(format!("{sig}\n").into_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("valid: "),
        "{}",
        text(&out.stdout)
    );
    written.unwrap();

    // 16 MiB: far more than the pipe buffers, so the writer only finishes if it is all read.
    let (out, written) = verify_from_stdin(vec![b'A'; 16 << 20]);
    fails_saying(&out, "more than 64 KiB");
    assert!(text(&out.stdout).is_empty());
    let err = written.expect_err("the command stopped reading at the cap");
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
}
