//! `timctl plan` end to end through the real binary: real manifests, a real SQLite ledger.

use std::path::{Path, PathBuf};
use std::time::Duration;

use timctl_core::ids::ConversationKey;

use timctl_core::ledger::{
    Deleted, Ledger, LedgerWriter, RunInfo, SqliteLedger, SqliteLedgerWriter, StateLock,
};

const APP: u64 = 1_400_000_001;

struct Env {
    _dir: tempfile::TempDir,
    manifest: PathBuf,
    state: PathBuf,
}

fn env(absent: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("timctl.yaml");
    std::fs::write(
        &manifest,
        format!(
            "version: 1\napp:\n  sdkappid: {APP}\n  region: singapore\n  admin: administrator\n\
             absent:\n{absent}"
        ),
    )
    .unwrap();
    let state = dir.path().join(".timctl/state.db");
    Env {
        _dir: dir,
        manifest,
        state,
    }
}

const TWO: &str = "  alice:\n    - user: bob\n      clear_roaming: true\n    - group: \"@TGS#2C5SZEAEF\"\n  carol:\n    - user: dave\n";

fn plan(e: &Env, args: &[&str]) -> (Option<i32>, String, String) {
    let out = timctl_tests::timctl()
        .arg("plan")
        .arg("-f")
        .arg(&e.manifest)
        .args(args)
        .env("TIMCTL_STATE", &e.state)
        .env("COLUMNS", "400")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn record(state: &Path, entries: &[(&str, &str, bool)]) {
    let lock = StateLock::acquire(state, "test", Duration::ZERO).unwrap();
    let mut w = SqliteLedgerWriter::create_or_open(state, APP, lock).unwrap();
    let batch: Vec<Deleted> = entries
        .iter()
        .map(|(from, peer, clear)| Deleted {
            key: ConversationKey::new(from.parse().unwrap(), peer.parse().unwrap()),
            clear_roaming: *clear,
            deleted_at: jiff::Timestamp::now(),
        })
        .collect();
    w.record_deleted(&RunInfo::new("t"), &batch).unwrap();
}

fn changes(json: &str) -> Vec<(String, String, String, bool)> {
    let doc: serde_json::Value = serde_json::from_str(json).unwrap();
    doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["action"].as_str().unwrap().to_owned(),
                c["from"].as_str().unwrap().to_owned(),
                format!(
                    "{}:{}",
                    c["type"].as_str().unwrap(),
                    c["peer"].as_str().unwrap()
                ),
                c["clear_roaming"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn c(action: &str, from: &str, peer: &str, clear: bool) -> (String, String, String, bool) {
    (action.into(), from.into(), peer.into(), clear)
}

#[test]
fn fresh_state_plans_every_deletion_and_creates_nothing() {
    let e = env(TWO);
    let (code, out, err) = plan(&e, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("alice\n  - delete user:bob (and clear roaming messages)\n"),
        "{out}"
    );
    assert!(
        out.ends_with("Plan: 3 to delete, 0 to forget, 0 unchanged.\n"),
        "{out}"
    );
    assert!(
        !e.state.exists() && !e.state.parent().unwrap().exists(),
        "plan writes nothing"
    );

    let (_, json, _) = plan(&e, &["--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["format_version"], 2);
    assert_eq!(doc["refreshed"], false);
    assert_eq!(doc["refreshed_at"], serde_json::Value::Null);
    assert!(
        doc["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["reason"] == "new")
    );
    assert_eq!(doc["state"], serde_json::Value::Null);
    assert_eq!(
        doc["app"],
        serde_json::json!({"sdkappid": APP, "region": "singapore", "admin": "administrator"})
    );
    assert_eq!(
        doc["summary"],
        serde_json::json!({"delete": 3, "record": 0, "forget": 0, "unchanged": 0})
    );
}

#[test]
fn recorded_removed_and_upgraded_entries() {
    let e = env(TWO);
    record(
        &e.state,
        &[
            ("alice", "user:bob", false), // the manifest now wants clear_roaming: delete again
            ("alice", "group:@TGS#2C5SZEAEF", false), // unchanged
            ("zed", "user:gone", false),  // no longer in the manifest: forget
        ],
    );
    let (code, json, err) = plan(&e, &["--format", "json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        changes(&json),
        [
            c("delete", "alice", "user:bob", true),
            c("delete", "carol", "user:dave", false),
            c("forget", "zed", "user:gone", false),
        ]
    );
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let meta = SqliteLedger::open_read_only(&e.state)
        .unwrap()
        .meta()
        .unwrap()
        .clone();
    assert_eq!(doc["state"]["lineage"], meta.state.lineage.to_string());
    assert_eq!(doc["state"]["serial"], meta.state.serial);
    assert_eq!(doc["summary"]["unchanged"], 1);

    // --reassert deletes every manifest entry again.
    let (_, json, _) = plan(&e, &["--format", "json", "--reassert"]);
    assert_eq!(changes(&json).iter().filter(|c| c.0 == "delete").count(), 3);

    // Filters narrow the plan to some From_Accounts.
    let (_, json, _) = plan(&e, &["--format", "json", "--user", "zed"]);
    assert_eq!(changes(&json), [c("forget", "zed", "user:gone", false)]);
    let (_, json, _) = plan(
        &e,
        &[
            "--format",
            "json",
            "--exclude-user",
            "alice",
            "--exclude-user",
            "zed",
        ],
    );
    assert_eq!(changes(&json), [c("delete", "carol", "user:dave", false)]);
}

#[test]
fn detailed_exitcode_and_no_changes() {
    let e = env("  alice:\n    - user: bob\n");
    let (code, _, _) = plan(&e, &["--detailed-exitcode"]);
    assert_eq!(code, Some(2), "changes");
    record(&e.state, &[("alice", "user:bob", false)]);
    let (code, out, _) = plan(&e, &["--detailed-exitcode"]);
    assert_eq!(code, Some(0));
    assert_eq!(out, "No changes. The state matches the manifest.\n");
    let (code, _, _) = plan(&e, &["--detailed-exitcode", "--bogus-flag"]);
    assert_eq!(code, Some(1), "a usage error is 1, never 2");
    let (code, _, _) = plan(&e, &["--detailed-exitcode", "--user", ""]);
    assert_eq!(code, Some(1), "a bad --user is an error");
}

#[test]
fn another_apps_state_is_refused() {
    let e = env(TWO);
    let lock = StateLock::acquire(&e.state, "test", Duration::ZERO).unwrap();
    drop(SqliteLedgerWriter::create_or_open(&e.state, APP + 1, lock).unwrap());
    let (code, _, err) = plan(&e, &[]);
    assert_eq!(code, Some(1));
    // miette wraps long lines; compare with the wrapping taken out.
    let err = err
        .split_whitespace()
        .filter(|w| *w != "|")
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        err.contains("belongs to SDKAppID 1400000002, not 1400000001"),
        "{err}"
    );
}

#[test]
fn saved_plan_content_markdown_and_show() {
    let e = env(TWO);
    record(&e.state, &[("zed", "user:gone", true)]);
    let out_file = e
        .state
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("plan.json");
    let (code, stdout, err) = plan(
        &e,
        &["--out", out_file.to_str().unwrap(), "--format", "json"],
    );
    assert_eq!(code, Some(0), "{err}");
    let saved = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(saved, stdout, "the saved plan is the JSON document");
    let doc: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(doc["state"]["serial"], 2);
    assert_eq!(doc["changes"].as_array().unwrap().len(), 4);
    assert!(
        doc["manifest_digest"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );

    let (_, md, _) = plan(&e, &["--format", "markdown"]);
    assert!(
        md.starts_with("### timctl plan: 3 to delete, 1 to forget, 0 unchanged"),
        "{md}"
    );
    assert!(md.contains("<details>"));

    let shown = timctl_tests::timctl()
        .arg("show")
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&shown.stdout)
            .ends_with("Plan: 3 to delete, 1 to forget, 0 unchanged.\n")
    );
}
