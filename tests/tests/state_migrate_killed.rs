//! `timctl state migrate` killed at several moments, SQLite → PostgreSQL and back: the
//! destination holds either nothing or the whole copy, never a half or an empty state, and the
//! next migrate then finishes (or says the copy is already there).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use timctl_core::ids::ConversationKey;
use timctl_core::ledger::{Deleted, LedgerWriter, LocatedStore, RunInfo, StateLocation, StateName};
use timctl_tests::pg::PgCluster;
use timctl_tests::state_list::StateList;

const APP: u64 = 1_400_000_001;
/// Enough entries (each with its event) that a copy takes a while in a debug build.
const ENTRIES: usize = 60_000;

/// Writes a state of `ENTRIES` entries and as many events at `state` through the library.
fn fill(state: &str) {
    let store = LocatedStore::new(
        StateLocation::parse(state.as_ref()).unwrap(),
        StateName::default(),
    )
    .unwrap();
    let mut w = store
        .create_or_open_writer(APP, "test", Duration::ZERO)
        .unwrap();
    let run = RunInfo::new("fill");
    let at = jiff::Timestamp::from_second(1_700_000_000).unwrap();
    let batch: Vec<Deleted> = (0..ENTRIES)
        .map(|i| Deleted {
            key: ConversationKey::new(
                format!("u{:03}", i / 1000).parse().unwrap(),
                format!("user:p{:04}", i % 1000).parse().unwrap(),
            ),
            clear_roaming: false,
            deleted_at: at,
        })
        .collect();
    for chunk in batch.chunks(10_000) {
        w.record_deleted(&run, chunk).unwrap();
    }
}

fn timctl(state: &str, dir: &Path) -> std::process::Command {
    let mut cmd = timctl_tests::timctl();
    cmd.env("TIMCTL_STATE", state)
        .current_dir(dir)
        .stdin(Stdio::null());
    cmd
}

/// The destination's (lineage, entries, events), through the binary; `None` when it holds no
/// state.
fn held(state: &str, dir: &Path) -> Option<(String, usize, usize)> {
    let list = StateList::read(timctl(state, dir).args(["state", "list", "--json"]));
    let (lineage, _) = list.state_ref()?;
    let history = timctl(state, dir)
        .args(["state", "history", "--json", "--limit", "0"])
        .output()
        .unwrap();
    assert!(history.status.success());
    let events = history.stdout.iter().filter(|&&b| b == b'\n').count();
    Some((lineage, list.entries.len(), events))
}

fn killed_then_retried(source: &str, dest: &str, dir: &Path) {
    fill(source);
    let (lineage, _) = StateList::read(timctl(source, dir).args(["state", "list", "--json"]))
        .state_ref()
        .unwrap();
    let whole = (lineage, ENTRIES, ENTRIES);
    let mut copied = false;
    for after_ms in [0, 40, 150, 400, 900, 1_600] {
        let mut child = timctl(source, dir)
            .args(["state", "migrate", "--to", dest])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(after_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        match held(dest, dir) {
            None => assert!(!copied, "a copy once whole is never undone"),
            Some(found) => {
                assert_eq!(found, whole, "killed after {after_ms} ms ({status})");
                copied = true;
            }
        }
        if status.success() {
            copied = true;
        }
    }
    let retry = timctl(source, dir)
        .args(["state", "migrate", "--to", dest])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&retry.stderr);
    if copied {
        assert!(stderr.contains("already holds"), "{stderr}");
    } else {
        assert!(retry.status.success(), "{stderr}");
    }
    assert_eq!(held(dest, dir), Some(whole));
}

fn pg_state() -> String {
    let cluster = PgCluster::shared();
    cluster.url_with_password(&cluster.database())
}

#[test]
fn a_killed_migrate_from_sqlite_to_postgres_leaves_nothing_or_everything() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("src/state.db");
    killed_then_retried(source.to_str().unwrap(), &pg_state(), dir.path());
}

#[test]
fn a_killed_migrate_from_postgres_to_sqlite_leaves_nothing_or_everything() {
    let dir = tempfile::tempdir().unwrap();
    let dest: PathBuf = dir.path().join("dest/state.db");
    killed_then_retried(&pg_state(), dest.to_str().unwrap(), dir.path());
    // The staging file of the killed copies is gone: the state is one file again.
    let mut left: Vec<String> = std::fs::read_dir(dir.path().join("dest"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["state.db", "state.db.lock"]);
}
