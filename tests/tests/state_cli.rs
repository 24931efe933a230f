//! `timctl state list|rm` and `timctl show` through the real binary, on a real SQLite ledger.

use std::path::Path;
use std::time::Duration;

use std::process::Command;
use timctl_core::ids::ConversationKey;
use timctl_core::ledger::{
    Deleted, Ledger, LedgerWriter, RunInfo, SqliteLedger, SqliteLedgerWriter, StateLock,
};

const APP: u64 = 1_400_000_001;

fn timctl(state: &Path) -> Command {
    let mut cmd = timctl_tests::timctl();
    cmd.env("TIMCTL_STATE", state);
    cmd
}

fn seed(state: &Path) {
    let lock = StateLock::acquire(state, "seed", Duration::ZERO).unwrap();
    let mut w = SqliteLedgerWriter::create_or_open(state, APP, lock).unwrap();
    let at = jiff::Timestamp::from_second(1_700_000_000).unwrap();
    let d = |from: &str, peer: &str, clear| Deleted {
        key: ConversationKey::new(from.parse().unwrap(), peer.parse().unwrap()),
        clear_roaming: clear,
        deleted_at: at,
    };
    w.record_deleted(
        &RunInfo::new("digest"),
        &[
            d("alice", "user:bob", true),
            d("alice", "group:@TGS#1", false),
        ],
    )
    .unwrap();
}

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).unwrap()
}

#[test]
fn list_with_no_state_is_empty_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".timctl/state.db");
    let out = timctl_tests::succeeds(timctl(&state).args(["state", "list", "--json"]));
    assert_eq!(
        json(&out.stdout),
        serde_json::json!({"format_version": 1, "lineage": null, "serial": null, "sdkappid": null, "entries": []})
    );
    let out = timctl(&state).args(["state", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("No state at"));
    assert!(!dir.path().join(".timctl").exists());
}

#[test]
fn list_json_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    seed(&state);
    let meta = SqliteLedger::open_read_only(&state)
        .unwrap()
        .meta()
        .unwrap()
        .clone();
    // The global flag works after the command too.
    let out = timctl_tests::succeeds(
        timctl_tests::timctl()
            .args(["state", "list", "--json", "--state"])
            .arg(&state),
    );
    assert_eq!(
        json(&out.stdout),
        serde_json::json!({
            "format_version": 1,
            "lineage": meta.state.lineage.to_string(),
            "serial": 2,
            "sdkappid": APP,
            "entries": [
                {"from": "alice", "type": "user", "peer": "bob", "clear_roaming": true,
                 "deleted_at": "2023-11-14T22:13:20Z", "origin": "deleted"},
                {"from": "alice", "type": "group", "peer": "@TGS#1", "clear_roaming": false,
                 "deleted_at": "2023-11-14T22:13:20Z", "origin": "deleted"},
            ]
        })
    );
}

#[test]
fn rm_removes_one_entry_and_bumps_the_serial() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    seed(&state);

    let out = timctl_tests::succeeds(timctl(&state).args([
        "state",
        "rm",
        "alice",
        "user:bob",
        "--dry-run",
    ]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Would remove alice user:bob"));
    assert_eq!(
        SqliteLedger::open_read_only(&state)
            .unwrap()
            .state_ref()
            .unwrap()
            .serial,
        2
    );

    timctl_tests::succeeds(timctl(&state).args(["state", "rm", "alice", "user:bob"]));
    let ledger = SqliteLedger::open_read_only(&state).unwrap();
    assert_eq!(ledger.state_ref().unwrap().serial, 3);
    let left: Vec<String> = ledger
        .entries()
        .unwrap()
        .iter()
        .map(|e| e.key.peer.to_string())
        .collect();
    assert_eq!(left, ["group:@TGS#1"]);

    // Removing it again is an error that changes nothing.
    let out = timctl(&state)
        .args(["state", "rm", "alice", "user:bob"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not in the state"));
    assert_eq!(
        SqliteLedger::open_read_only(&state)
            .unwrap()
            .state_ref()
            .unwrap()
            .serial,
        3
    );
}

#[test]
fn rm_rejects_bad_input_and_missing_state_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    for args in [
        &["state", "rm", "alice", "bob"][..],
        &["state", "rm", "", "user:bob"],
        &["state", "rm", "alice", "user:bob"],
        &["state", "rm"],
    ] {
        let out = timctl(&state).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
    }
    assert!(!state.exists(), "no state was created");
}

#[test]
fn rm_is_refused_while_the_state_is_locked_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    seed(&state);
    let held = StateLock::acquire(&state, "apply", Duration::ZERO).unwrap();
    let out = timctl(&state)
        .args([
            "state",
            "rm",
            "alice",
            "user:bob",
            "--lock-timeout",
            "300ms",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is locked by apply"), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    drop(held);
    assert_eq!(
        SqliteLedger::open_read_only(&state)
            .unwrap()
            .entries()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_ledger_of_a_newer_timctl_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    seed(&state);
    rusqlite::Connection::open(&state)
        .unwrap()
        .execute_batch("PRAGMA user_version = 7")
        .unwrap();
    let out = timctl(&state).args(["state", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("schema version 7"), "{err}");
    assert!(err.contains("upgrade timctl"), "{err}");
}
