//! Issue 11 through the real binary: hostile input files, state paths that are not plain, and a
//! stdout closed by its reader.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use timctl_core::ids::ConversationKey;
use timctl_core::ledger::{Deleted, LedgerWriter, RunInfo, SqliteLedgerWriter, StateLock};

const APP: u64 = 1_400_000_001;

fn manifest(dir: &Path, users: usize) -> std::path::PathBuf {
    let mut text = format!(
        "version: 1\napp:\n  sdkappid: {APP}\n  region: singapore\n  admin: administrator\nabsent:\n"
    );
    for i in 0..users {
        text.push_str(&format!("  user{i:06}:\n    - user: peer{i:06}\n"));
    }
    let path = dir.join("timctl.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `cmd` with its stdout closed before timctl writes a byte; returns (status, stderr).
fn with_closed_stdout(mut cmd: Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn a_device_as_manifest_is_refused_before_reading() {
    // Before issue 11.5 this read /dev/zero until memory ran out.
    let out = timctl_tests::timctl()
        .args(["validate", "-f", "/dev/zero"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("/dev/zero") && stderr.contains("a character device"),
        "{stderr}"
    );
    assert!(stderr.contains("regular file"), "{stderr}");
}

#[test]
fn a_fifo_as_manifest_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("timctl.yaml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // No writer ever opens the FIFO: before the fix, timctl blocked here forever.
    let out = timctl_tests::timctl()
        .args(["validate", "-f"])
        .arg(&fifo)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("FIFO"), "{stderr}");
}

#[test]
fn a_file_uri_as_state_path_is_a_plain_file_name() {
    // SQLite, built with URI support, would read `file:…?mode=memory` as an in-memory database:
    // a state that records deletions nowhere. timctl treats every state path as a file name.
    let dir = tempfile::tempdir().unwrap();
    let name = "file:state.db?mode=memory";
    let real = dir.path().join(name);
    let lock = StateLock::acquire(&real, "test", Duration::ZERO).unwrap();
    let mut w = SqliteLedgerWriter::create_or_open(&real, APP, lock).unwrap();
    let run = RunInfo::new("d");
    w.record_deleted(
        &run,
        &[Deleted {
            key: ConversationKey::new("alice".parse().unwrap(), "user:bob".parse().unwrap()),
            clear_roaming: false,
            deleted_at: jiff::Timestamp::from_second(1_700_000_000).unwrap(),
        }],
    )
    .unwrap();
    drop(w);

    let out = timctl_tests::timctl()
        .current_dir(dir.path())
        .args(["state", "list", "--state", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("1 entries") && stdout.contains("alice user:bob"),
        "{stdout}"
    );
}

#[test]
fn a_state_directory_others_can_write_is_refused_for_reading_too() {
    // Another user who can write the directory can swap the state for one of theirs: a plan
    // read from it would show their state (nothing to do, say) as this one's.
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let state = shared.join("state.db");
    let lock = StateLock::acquire(&state, "test", Duration::ZERO).unwrap();
    drop(SqliteLedgerWriter::create_or_open(&state, APP, lock).unwrap());
    let manifest = manifest(dir.path(), 1);
    let readers: [&[&str]; 3] = [
        &["state", "list"],
        &["state", "rm", "user000000", "user:peer000000", "--dry-run"],
        &["plan", "-f", manifest.to_str().unwrap()],
    ];
    let run = |args: &[&str]| {
        timctl_tests::timctl()
            .args(args)
            .arg("--state")
            .arg(&state)
            .output()
            .unwrap()
    };
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    for args in readers {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("refusing the state directory")
                && stderr.contains("mode 777")
                && stderr.contains("chmod go-w"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
    }
    // The sticky bit (as on /tmp) makes it safe, for readers as for writers.
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = run(readers[0]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn plan_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path(), 5_000);
    let mut cmd = timctl_tests::timctl();
    cmd.args(["plan", "--limit", "0", "-f"])
        .arg(&manifest)
        .arg("--state")
        .arg(dir.path().join("state.db"));
    let (code, stderr) = with_closed_stdout(cmd);
    assert_eq!(code, Some(0), "{stderr}");
    // Nothing to say about a reader that left; only that there is no state yet.
    assert!(
        stderr
            .lines()
            .all(|l| l.starts_with("warning: no state at ")),
        "{stderr}"
    );
}

#[test]
fn state_list_and_validate_into_a_closed_pipe_exit_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path(), 10);
    let mut list = timctl_tests::timctl();
    list.args(["state", "list", "--state"])
        .arg(dir.path().join("state.db"));
    let mut validate = timctl_tests::timctl();
    validate
        .args(["validate", "--format", "json", "-f"])
        .arg(&manifest);
    for cmd in [list, validate] {
        let (code, stderr) = with_closed_stdout(cmd);
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(stderr, "");
    }
}

#[test]
fn plan_out_replaces_a_link_instead_of_writing_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path(), 3);
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    let out_path = dir.path().join("plan.json");
    std::os::unix::fs::symlink(&victim, &out_path).unwrap();
    let out = timctl_tests::timctl()
        .args(["plan", "-f"])
        .arg(&manifest)
        .arg("--state")
        .arg(dir.path().join("state.db"))
        .arg("--out")
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let meta = std::fs::symlink_metadata(&out_path).unwrap();
    assert!(meta.is_file(), "the link was replaced by the plan");
    timctl_core::plan::saved::read(&out_path).expect("the plan reads back");
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("tmp")), "{names:?}");
}

// Issue 18.1: a manifest directory's links are not followed, and no diagnostic shows a secret.

const SECRET_KEY: &str = "5ecre7k3y0f7heapp5ecre7k3y0f7heapp5ecre7k3y0f7heapp0123456789abc";
const PG_PASSWORD_IN_URL: &str = "url-pa55w0rd-never-shown";
const PG_PASSWORD: &str = "env-pa55w0rd-never-shown";
const CALLBACK_TOKEN: &str = "cal1back-t0ken-never-shown";

/// A valid manifest in `dir`, and a file elsewhere that holds the secret key as YAML would
/// show it (a key with an error under it, so that a frame would quote the line).
fn directory_with_a_link(dir: &Path, link_target: &Path) -> std::path::PathBuf {
    let manifests = dir.join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    manifest(&manifests, 2);
    std::os::unix::fs::symlink(link_target, manifests.join("linked.yaml")).unwrap();
    manifests
}

/// Every way `validate` prints, and `plan` and `apply` (whose problems `main` prints), over
/// `-f path`, with every secret of a run in the environment.
fn outputs_with_secrets(path: &Path, state: &str) -> Vec<(String, std::process::Output)> {
    let mut runs: Vec<(String, Vec<&str>)> = ["text", "json", "github"]
        .into_iter()
        .map(|f| {
            (
                format!("validate --format {f}"),
                vec!["validate", "--format", f],
            )
        })
        .collect();
    runs.push(("plan".into(), vec!["plan"]));
    runs.push((
        "plan --format json".into(),
        vec!["plan", "--format", "json"],
    ));
    runs.push(("apply".into(), vec!["apply", "--auto-approve"]));
    runs.push((
        "apply --json".into(),
        vec!["apply", "--auto-approve", "--json"],
    ));
    runs.into_iter()
        .map(|(name, args)| {
            let out = timctl_tests::timctl()
                .args(args)
                .arg("-f")
                .arg(path)
                .args(["--state", state])
                .env("TIMCTL_SECRET_KEY", SECRET_KEY)
                .env("PGPASSWORD", PG_PASSWORD)
                .env("TIMCTL_CALLBACK_TOKEN", CALLBACK_TOKEN)
                .output()
                .unwrap();
            (name, out)
        })
        .collect()
}

fn assert_no_secret(name: &str, out: &std::process::Output) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in [SECRET_KEY, PG_PASSWORD_IN_URL, PG_PASSWORD, CALLBACK_TOKEN] {
        assert!(
            !all.to_ascii_lowercase()
                .contains(&secret.to_ascii_lowercase()),
            "{name} printed a secret: {all}"
        );
    }
}

#[test]
fn a_link_in_a_manifest_directory_to_a_file_holding_the_key_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("credentials");
    std::fs::write(&key_file, format!("{SECRET_KEY}:\n  - not: a manifest\n")).unwrap();
    let manifests = directory_with_a_link(dir.path(), &key_file);
    let out = timctl_tests::timctl()
        .args(["validate", "-f"])
        .arg(&manifests)
        .env("TIMCTL_SECRET_KEY_FILE", &key_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Before the fix the link was read as a second manifest, and its frame quoted the key.
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 file."), "{stdout}");
    assert_no_secret("validate", &out);
}

#[test]
fn a_directory_link_to_the_root_is_not_walked() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    manifest(&manifests, 2);
    std::os::unix::fs::symlink("/", manifests.join("root")).unwrap();
    // A file link too, to a file that is a manifest: skipped all the same.
    std::os::unix::fs::symlink(manifests.join("timctl.yaml"), manifests.join("again.yaml"))
        .unwrap();
    let out = timctl_tests::succeeds(
        timctl_tests::timctl()
            .args(["validate", "--format", "json", "-f"])
            .arg(&manifests),
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["summary"]["files"], 1, "{doc}");
}

#[test]
fn a_manifest_named_with_f_through_a_link_is_read() {
    // `-f` naming a link follows it: the user named the path themselves.
    let dir = tempfile::tempdir().unwrap();
    let real = manifest(dir.path(), 2);
    let link = dir.path().join("link.yaml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = timctl_tests::succeeds(timctl_tests::timctl().args(["validate", "-f"]).arg(&link));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 users"));
}

#[test]
fn a_file_named_with_f_that_holds_the_key_shows_a_redaction_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("oops.yaml");
    // The key as a user of `absent` (a bad ID: 64 bytes), and the password in a comment near
    // it: the frame quotes both lines.
    std::fs::write(
        &file,
        format!(
            "version: 1\napp:\n  sdkappid: {APP}\n  region: singapore\n  admin: administrator\n\
             absent:\n  # {PG_PASSWORD} {CALLBACK_TOKEN}\n  {SECRET_KEY}:\n    - user: bob\n"
        ),
    )
    .unwrap();
    let state = format!("postgres://timctl:{PG_PASSWORD_IN_URL}@127.0.0.1:1/timctl");
    for (name, out) in outputs_with_secrets(&file, &state) {
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert_no_secret(&name, &out);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The problem is still reported, at its place, with the key redacted.
        assert!(all.contains("oops.yaml"), "{name}: {all}");
        // Every output but validate's JSON and GitHub annotations shows the code frame.
        if !name.starts_with("validate --format j") && !name.ends_with("github") {
            assert!(all.contains("[redacted]:"), "{name}: {all}");
            assert!(all.contains("- user: bob"), "{name}: {all}");
        }
    }
}

#[test]
fn an_explicit_link_to_the_environment_prints_no_secret() {
    // `-f` may follow a link, so this file is read: the second wall (redaction) holds.
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("env.yaml");
    std::os::unix::fs::symlink("/proc/self/environ", &link).unwrap();
    let state = format!("postgres://timctl:{PG_PASSWORD_IN_URL}@127.0.0.1:1/timctl");
    for (name, out) in outputs_with_secrets(&link, &state) {
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert_no_secret(&name, &out);
    }
}
