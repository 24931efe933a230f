//! The SQLite ledger and its lock, on real files and real processes.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use timctl_core::ids::{ConversationKey, UserId};
use timctl_core::ledger::sqlite::SCHEMA_VERSION;
use timctl_core::ledger::{
    Deleted, Ledger, LedgerError, LedgerWriter, LockError, Origin, RunInfo, SqliteError,
    SqliteLedger, SqliteLedgerWriter, StateLock,
};

const APP: u64 = 1_400_000_001;
const OTHER_APP: u64 = 1_400_000_002;

fn state_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("nested").join(".timctl").join("state.db")
}

fn writer(path: &Path, app: u64) -> Result<SqliteLedgerWriter, LedgerError> {
    let lock = StateLock::acquire(path, "test", Duration::ZERO).expect("lock");
    SqliteLedgerWriter::create_or_open(path, app, lock)
}

fn deleted(from: &str, peer: &str, clear_roaming: bool) -> Deleted {
    Deleted {
        key: key(from, peer),
        clear_roaming,
        deleted_at: jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    }
}

fn key(from: &str, peer: &str) -> ConversationKey {
    ConversationKey::new(UserId::new(from).unwrap(), peer.parse().unwrap())
}

fn listing(l: &dyn Ledger) -> Vec<(String, String, bool)> {
    l.entries()
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.key.from.to_string(),
                e.key.peer.to_string(),
                e.clear_roaming,
            )
        })
        .collect()
}

#[test]
fn create_bind_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let w = writer(&path, APP).unwrap();
    let meta = w.meta().unwrap().clone();
    assert_eq!(meta.sdkappid, APP);
    assert_eq!(meta.state.serial, 1, "creation is the first write");
    assert_eq!(meta.schema_version, SCHEMA_VERSION);
    assert_eq!(meta.created_by, env!("CARGO_PKG_VERSION"));
    drop(w);

    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the state file is private");
    let lock_mode = std::fs::metadata(dir.path().join("nested/.timctl/state.db.lock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(lock_mode, 0o600);

    let r = SqliteLedger::open_read_only(&path).unwrap();
    assert_eq!(r.meta().unwrap().state, meta.state);
    assert_eq!(r.meta().unwrap().sdkappid, APP);
    let w = writer(&path, APP).unwrap();
    assert_eq!(
        w.meta().unwrap().state,
        meta.state,
        "reopening writes nothing"
    );

    // After a normal close the state is one file: no journal or WAL beside it.
    drop(w);
    drop(r);
    let mut names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["state.db", "state.db.lock"]);
}

#[test]
fn another_app_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    drop(writer(&path, APP).unwrap());
    match writer(&path, OTHER_APP) {
        Err(LedgerError::OtherApp {
            bound, requested, ..
        }) => {
            assert_eq!((bound, requested), (APP, OTHER_APP));
        }
        other => panic!("expected OtherApp, got {other:?}"),
    }
    let r = SqliteLedger::open_read_only(&path).unwrap();
    let err = r.check_app(OTHER_APP).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("belongs to SDKAppID 1400000001, not 1400000002"),
        "{msg}"
    );
    assert!(r.check_app(APP).is_ok());
    assert_eq!(
        r.meta().unwrap().sdkappid,
        APP,
        "the refusal changed nothing"
    );
}

#[test]
fn serial_and_lineage_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let mut w = writer(&path, APP).unwrap();
    let first = w.state_ref().unwrap();
    let run = RunInfo::new("digest-1");

    let written = w
        .record_deleted(
            &run,
            &[
                deleted("alice", "user:bob", false),
                deleted("alice", "group:g", true),
            ],
        )
        .unwrap();
    assert_eq!(written.affected, 2);
    assert_eq!(
        written.state.serial,
        first.serial + 1,
        "one batch, one bump"
    );
    assert_eq!(
        written.state.lineage, first.lineage,
        "the lineage never changes"
    );

    let same = w.record_deleted(&run, &[]).unwrap();
    assert_eq!(same.state, written.state, "an empty batch is not a write");
    let none = w.forget(&[key("nobody", "user:x")]).unwrap();
    assert_eq!(
        (none.affected, none.state),
        (0, written.state),
        "forgetting nothing is not a write"
    );

    let upgraded = w
        .record_deleted(&run, &[deleted("alice", "user:bob", true)])
        .unwrap();
    assert_eq!(upgraded.state.serial, first.serial + 2);
    let forgot = w
        .forget(&[key("alice", "group:g"), key("alice", "user:zzz")])
        .unwrap();
    assert_eq!(forgot.affected, 1);
    assert_eq!(forgot.state.serial, first.serial + 3);
    assert_eq!(
        listing(&w),
        [("alice".to_owned(), "user:bob".to_owned(), true)]
    );
    drop(w);

    // A reader sees exactly the committed state.
    let r = SqliteLedger::open_read_only(&path).unwrap();
    assert_eq!(r.state_ref(), Some(forgot.state));
    let runs = r.runs().unwrap();
    assert_eq!(runs.len(), 1, "one run, recorded once");
    assert_eq!(runs[0].run_id, run.run_id);
    assert_eq!(runs[0].manifest_digest, "digest-1");
    assert_eq!(r.entries().unwrap()[0].run_id, run.run_id);
    drop(r);

    // A ledger deleted and created again is another lineage.
    std::fs::remove_file(&path).unwrap();
    let again = writer(&path, APP).unwrap();
    assert_ne!(again.state_ref().unwrap().lineage, first.lineage);
    assert_eq!(again.state_ref().unwrap().serial, 1);
}

#[test]
fn entries_come_back_sorted_like_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let mut w = writer(&path, APP).unwrap();
    let run = RunInfo::new("d");
    w.record_deleted(
        &run,
        &[
            deleted("bob", "user:a", false),
            deleted("alice", "group:a", false),
            deleted("alice", "user:z", true),
            deleted("alice", "user:B", false),
        ],
    )
    .unwrap();
    // Users before groups, byte order within: the order of `Peer` and `DesiredEntry`.
    assert_eq!(
        listing(&w),
        [
            ("alice".to_owned(), "user:B".to_owned(), false),
            ("alice".to_owned(), "user:z".to_owned(), true),
            ("alice".to_owned(), "group:a".to_owned(), false),
            ("bob".to_owned(), "user:a".to_owned(), false),
        ]
    );
    let e = &w.entries().unwrap()[0];
    assert_eq!(e.deleted_at.as_second(), 1_700_000_000);
}

#[test]
fn missing_and_empty_files_are_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let r = SqliteLedger::open_read_only(&path).unwrap();
    assert!(r.meta().is_none());
    assert!(r.entries().unwrap().is_empty());
    assert!(!path.exists(), "reading creates nothing");
    assert!(
        !path.parent().unwrap().exists(),
        "reading creates no directory"
    );

    // An empty file (touched by hand, or left by an interrupted first run) is version 0 and
    // migrates to the current schema when a writer opens it.
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"").unwrap();
    assert!(
        SqliteLedger::open_read_only(&path)
            .unwrap()
            .meta()
            .is_none()
    );
    let w = writer(&path, APP).unwrap();
    assert_eq!(w.meta().unwrap().schema_version, SCHEMA_VERSION);
    assert_eq!(w.meta().unwrap().state.serial, 1);
    drop(w);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (app_id, version): (i64, i64) = conn
        .query_row(
            "SELECT application_id, user_version FROM pragma_application_id, pragma_user_version",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((app_id, version), (0x5449_4d43, i64::from(SCHEMA_VERSION)));
}

#[test]
fn an_empty_sqlite_database_migrates_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 0; VACUUM;")
        .unwrap();
    let w = writer(&path, APP).unwrap();
    assert_eq!(w.meta().unwrap().schema_version, SCHEMA_VERSION);
}

#[test]
fn a_file_that_is_not_a_ledger_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    let content = "these are my notes, not a database\n".repeat(50);
    std::fs::write(&text, &content).unwrap();
    for result in [
        SqliteLedger::open_read_only(&text).map(|_| ()),
        writer(&text, APP).map(|_| ()),
    ] {
        match result {
            Err(LedgerError::Sqlite(e @ SqliteError::NotALedger { .. })) => {
                assert!(e.to_string().contains("not an SQLite database"), "{e}");
            }
            other => panic!("expected NotALedger, got {other:?}"),
        }
    }
    assert_eq!(std::fs::read_to_string(&text).unwrap(), content);

    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE photos (id INTEGER PRIMARY KEY);")
        .unwrap();
    match writer(&other, APP) {
        Err(LedgerError::Sqlite(e @ SqliteError::NotALedger { .. })) => {
            assert!(e.to_string().contains("another program"), "{e}")
        }
        other => panic!("expected NotALedger, got {other:?}"),
    }
}

#[test]
fn a_ledger_from_a_newer_timctl_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    drop(writer(&path, APP).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99;")
        .unwrap();
    for result in [
        SqliteLedger::open_read_only(&path).map(|_| ()),
        writer(&path, APP).map(|_| ()),
    ] {
        match result {
            Err(
                e @ LedgerError::NewerFormat {
                    found: 99,
                    supported: SCHEMA_VERSION,
                    ..
                },
            ) => {
                assert!(e.to_string().contains("schema version 99"), "{e}");
                let help = miette::Diagnostic::help(&e).unwrap().to_string();
                assert!(help.contains("upgrade timctl"), "{help}");
            }
            other => panic!("expected NewerFormat, got {other:?}"),
        }
    }
}

#[test]
fn a_writer_needs_the_lock_of_its_own_state() {
    let dir = tempfile::tempdir().unwrap();
    let lock = StateLock::acquire(&dir.path().join("a.db"), "test", Duration::ZERO).unwrap();
    assert!(matches!(
        SqliteLedgerWriter::create_or_open(&dir.path().join("b.db"), APP, lock),
        Err(LedgerError::Sqlite(SqliteError::WrongLock { .. }))
    ));
    assert!(!dir.path().join("b.db").exists());
}

#[test]
fn open_existing_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let lock = StateLock::acquire(&path, "state rm", Duration::ZERO).unwrap();
    assert!(
        SqliteLedgerWriter::open_existing(&path, lock)
            .unwrap()
            .is_none()
    );
    assert!(!path.exists());
}

#[test]
fn a_second_lock_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let held = StateLock::acquire(&path, "apply", Duration::ZERO).unwrap();
    let start = Instant::now();
    match StateLock::acquire(&path, "state rm", Duration::from_millis(300)) {
        Err(e @ LockError::Locked { .. }) => {
            assert!(
                start.elapsed() >= Duration::from_millis(300),
                "it waited the timeout"
            );
            let LockError::Locked { holder, .. } = &e else {
                unreachable!()
            };
            let holder = holder.as_ref().expect("the holder is named");
            assert_eq!(holder.pid, std::process::id());
            assert_eq!(holder.operation, "apply");
            assert_eq!(&holder.host, &held.holder().host);
            let msg = e.to_string();
            assert!(msg.contains("is locked by apply (pid"), "{msg}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(held);
    let again = StateLock::acquire(&path, "state rm", Duration::ZERO).unwrap();
    assert_eq!(again.holder().operation, "state rm");
}

#[test]
fn lock_timeout_waits_for_the_holder_to_finish() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let held = StateLock::acquire(&path, "apply", Duration::ZERO).unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        drop(held);
    });
    let start = Instant::now();
    let lock = StateLock::acquire(&path, "apply", Duration::from_secs(20)).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(350));
    assert_eq!(lock.holder().pid, std::process::id());
    releaser.join().unwrap();
}

// ----- real child processes -----

const CHILD_ENV: &str = "TIMCTL_TEST_LEDGER_CHILD";

/// Runs this test binary again as a child that executes `role` (see `child_role`).
fn spawn_child(role: &str, path: &Path) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_role", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{role}:{}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdout)
}

fn read_line(out: &mut BufReader<std::process::ChildStdout>) -> String {
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child exited early"
        );
        // The test harness prints its own text (`test child_role ... ` with no newline before
        // the test runs); ours is tagged.
        if let Some(at) = line.find("CHILD ") {
            return line[at + "CHILD ".len()..].trim().to_owned();
        }
    }
}

fn sigkill(child: &mut Child) {
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}

/// Tells the parent something, at once (stdout is not a terminal, so flush).
fn say(what: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "CHILD {what}").unwrap();
    out.flush().unwrap();
}

/// The child's side of the process tests. Run by itself (without the environment variable) it
/// has no role and returns at once.
#[test]
fn child_role() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (role, path) = spec.split_once(':').unwrap();
    let path = PathBuf::from(path);
    match role {
        "hold-lock" => {
            let _lock = StateLock::acquire(&path, "apply", Duration::ZERO).unwrap();
            say("locked");
            std::thread::sleep(Duration::from_secs(60));
        }
        "write-forever" => {
            let mut w = writer(&path, APP).unwrap();
            let run = RunInfo::new("crash-test");
            for i in 0.. {
                let batch: Vec<Deleted> = (0..50)
                    .map(|j| deleted(&format!("u{i}"), &format!("user:p{j}"), false))
                    .collect();
                let written = w.record_deleted(&run, &batch).unwrap();
                say(&format!("committed {i} {}", written.state.serial));
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

#[test]
fn the_lock_is_freed_when_its_holder_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let (mut child, mut out) = spawn_child("hold-lock", &path);
    assert_eq!(read_line(&mut out), "locked");

    match StateLock::acquire(&path, "apply", Duration::ZERO) {
        Err(LockError::Locked {
            holder: Some(h), ..
        }) => {
            assert_eq!(h.pid, child.id(), "the refusal names the child");
            assert_eq!(h.operation, "apply");
        }
        other => panic!("expected Locked by the child, got {other:?}"),
    }
    sigkill(&mut child);
    let lock = StateLock::acquire(&path, "apply", Duration::from_secs(5))
        .expect("a killed holder leaves no stuck lock");
    assert_eq!(lock.holder().pid, std::process::id());
}

#[test]
fn a_writer_killed_mid_run_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let (mut child, mut out) = spawn_child("write-forever", &path);
    let mut last = (0, 0);
    for _ in 0..20 {
        let line = read_line(&mut out);
        let mut words = line.split(' ').skip(1).map(|w| w.parse::<u64>().unwrap());
        last = (words.next().unwrap(), words.next().unwrap());
    }
    sigkill(&mut child);

    // Everything the child reported as committed is there, and the file opens for reading
    // (rolling back a half-written batch if the kill landed mid-transaction).
    let r = SqliteLedger::open_read_only(&path).unwrap();
    let serial = r.state_ref().unwrap().serial;
    assert!(serial >= last.1, "serial {serial} < committed {}", last.1);
    let entries = r.entries().unwrap();
    assert_eq!(
        entries.len() as u64,
        (serial - 1) * 50,
        "whole batches only"
    );
    for i in 0..=last.0 {
        let from = format!("u{i}");
        assert_eq!(
            entries
                .iter()
                .filter(|e| e.key.from.as_str() == from)
                .count(),
            50,
            "{from}"
        );
    }
    drop(r);
    // A writer then opens it, and once closed the state is one file again.
    drop(writer(&path, APP).unwrap());
    assert!(!path.with_extension("db-journal").exists());
    assert!(!path.with_extension("db-wal").exists());
}

#[test]
fn records_are_kept_apart_from_deletions_by_origin() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let mut w = writer(&path, APP).unwrap();
    let run = RunInfo::new("d1");
    let before = w
        .record_deleted(&run, &[deleted("alice", "user:bob", false)])
        .unwrap();
    let written = w
        .record_absent(&run, &[deleted("alice", "user:carl", true)])
        .unwrap();
    assert_eq!(written.affected, 1);
    assert_eq!(written.state.serial, before.state.serial + 1);
    let origins = |l: &dyn Ledger| {
        l.entries()
            .unwrap()
            .into_iter()
            .map(|e| (e.key.peer.to_string(), e.origin, e.clear_roaming))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        origins(&w),
        [
            ("user:bob".to_owned(), Origin::Deleted, false),
            ("user:carl".to_owned(), Origin::Absent, true),
        ]
    );
    // A later deletion of a conversation seen absent makes it a deletion.
    w.record_deleted(&run, &[deleted("alice", "user:carl", true)])
        .unwrap();
    drop(w);
    let r = SqliteLedger::open_read_only(&path).unwrap();
    assert_eq!(origins(&r)[1].1, Origin::Deleted);
}

#[test]
fn a_version_1_ledger_reads_as_deletions_and_migrates_on_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let mut w = writer(&path, APP).unwrap();
    let run = RunInfo::new("d1");
    w.record_deleted(&run, &[deleted("alice", "user:bob", true)])
        .unwrap();
    drop(w);
    // Take the file back to schema version 1, as the first release wrote it.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "ALTER TABLE entries DROP COLUMN origin;
         DROP TABLE events;
         ALTER TABLE runs DROP COLUMN command;
         ALTER TABLE runs DROP COLUMN commit_id;
         ALTER TABLE runs DROP COLUMN host;
         ALTER TABLE runs DROP COLUMN os_user;
         ALTER TABLE runs DROP COLUMN ci_job_url;
         ALTER TABLE runs DROP COLUMN ended_at;
         ALTER TABLE runs DROP COLUMN counts;
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);

    let r = SqliteLedger::open_read_only(&path).unwrap();
    assert_eq!(r.meta().unwrap().schema_version, 1);
    let entries = r.entries().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].origin, Origin::Deleted);
    drop(r);

    let mut w = writer(&path, APP).unwrap();
    assert_eq!(w.meta().unwrap().schema_version, SCHEMA_VERSION);
    w.record_absent(&run, &[deleted("alice", "user:carl", false)])
        .unwrap();
    let origins: Vec<Origin> = w.entries().unwrap().iter().map(|e| e.origin).collect();
    assert_eq!(origins, [Origin::Deleted, Origin::Absent]);
}

/// Issue 11.7: a reader never sees meta, runs and entries of different commits. The writer
/// records each batch under a new run, so reading the runs before the entries (two
/// statements, no transaction) would find an entry naming "no known run"; and each commit adds
/// exactly `BATCH` entries and one serial, so a serial paired with another commit's entries
/// breaks `entries == (serial - 1) * BATCH`.
#[test]
fn a_reader_sees_one_commit_while_a_writer_commits() {
    const BATCH: usize = 4;
    const WRITES: usize = 150;
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let mut w = writer(&path, APP).unwrap();
    let reader = SqliteLedger::open_read_only(&path).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let reads = std::thread::scope(|scope| {
        let done = &done;
        let writing = scope.spawn(move || {
            for i in 0..WRITES {
                let batch: Vec<Deleted> = (0..BATCH)
                    .map(|j| deleted(&format!("u{i}"), &format!("user:p{j}"), false))
                    .collect();
                w.record_deleted(&RunInfo::new(format!("run {i}")), &batch)
                    .unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut reads = 0_usize;
        let mut seen_serials = std::collections::BTreeSet::new();
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let snapshot = reader
                .snapshot()
                .unwrap_or_else(|e| panic!("a read during writes failed: {e:?}"))
                .expect("the state exists");
            let serial = snapshot.meta.state.serial as usize;
            assert_eq!(
                snapshot.entries.len(),
                (serial - 1) * BATCH,
                "serial {serial} paired with another commit's entries"
            );
            assert_eq!(snapshot.runs.len(), serial - 1, "one run per commit");
            for e in &snapshot.entries {
                assert!(snapshot.runs.iter().any(|r| r.run_id == e.run_id));
            }
            seen_serials.insert(serial);
            reads += 1;
        }
        writing.join().unwrap();
        (reads, seen_serials.len())
    });
    // The loop must have read at all for the assertions to mean anything.
    assert!(reads.0 > 0);
    let last = reader.snapshot().unwrap().unwrap();
    assert_eq!(last.meta.state.serial as usize, WRITES + 1);
    assert_eq!(last.entries.len(), WRITES * BATCH);
}

// Issue 11.2: links, special files and directories another user could change.

fn refused_as_not_a_file(err: &dyn std::fmt::Debug, what: &str) {
    let text = format!("{err:?}");
    assert!(
        text.contains("NotAFile") && text.contains(what),
        "expected a refusal of {what}, got {text}"
    );
}

#[test]
fn a_lock_file_that_is_a_link_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, path.with_extension("db.lock")).unwrap();

    let err = StateLock::acquire(&path, "apply", Duration::ZERO).unwrap_err();
    refused_as_not_a_file(&err, "a symbolic link");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn a_dangling_state_link_creates_nothing_at_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let target = dir.path().join("elsewhere.db");
    std::os::unix::fs::symlink(&target, &path).unwrap();

    let err = writer(&path, APP).unwrap_err();
    refused_as_not_a_file(&err, "a symbolic link");
    assert!(!target.exists(), "nothing was created through the link");
    let err = SqliteLedger::open_read_only(&path).unwrap_err();
    refused_as_not_a_file(&err, "a symbolic link");
}

#[test]
fn a_state_that_is_a_link_to_a_ledger_is_refused_for_reading_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let mut w = writer(&path, APP).unwrap();
    w.record_deleted(&RunInfo::new("d"), &[deleted("a", "user:b", false)])
        .unwrap();
    drop(w);
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let err = SqliteLedger::open_read_only(&link).unwrap_err();
    refused_as_not_a_file(&err, "a symbolic link");
    let fifo = dir.path().join("fifo.db");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let err = SqliteLedger::open_read_only(&fifo).unwrap_err();
    refused_as_not_a_file(&err, "a special file");
}

#[test]
fn a_state_directory_others_can_write_is_refused_unless_sticky() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = shared.join("state.db");
    let err = StateLock::acquire(&path, "apply", Duration::ZERO).unwrap_err();
    let text = format!("{err}");
    assert!(
        text.contains("refusing the state directory") && text.contains("mode 777"),
        "{text}"
    );
    assert!(!path.with_extension("db.lock").exists(), "nothing created");

    // The sticky bit (as on /tmp) makes it safe: only a file's owner may replace it.
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    drop(writer(&path, APP).expect("a sticky shared directory is fine"));
}

#[test]
fn a_state_directory_of_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    let me = rustix::process::getuid().as_raw();
    // Root's directories are trusted (root can change anything anyway).
    timctl_core::ledger::lock::check_dir(Path::new("/")).expect("root's directory is fine");
    // Giving a directory away needs root; run as anyone else, the refusal is not reachable.
    if me == 0 {
        std::os::unix::fs::chown(&theirs, Some(4242), None).unwrap();
        let err =
            StateLock::acquire(&theirs.join("state.db"), "apply", Duration::ZERO).unwrap_err();
        let text = format!("{err}");
        assert!(text.contains("belongs to user 4242"), "{text}");
    }
}

#[test]
fn two_spellings_of_one_state_share_one_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let alias = dir.path().join("alias");
    std::os::unix::fs::symlink(path.parent().unwrap(), &alias).unwrap();
    let other_spelling = alias.join(".").join("state.db");

    let lock = StateLock::acquire(&path, "apply", Duration::ZERO).unwrap();
    match StateLock::acquire(&other_spelling, "apply", Duration::ZERO) {
        Err(LockError::Locked { .. }) => {}
        other => panic!("the other spelling must find the lock taken, got {other:?}"),
    }
    // The lock taken under one spelling opens the state under the other.
    let mut w = SqliteLedgerWriter::create_or_open(&other_spelling, APP, lock)
        .expect("one state, one lock, whatever the spelling");
    w.record_deleted(&RunInfo::new("d"), &[deleted("a", "user:b", false)])
        .unwrap();
    drop(w);
    assert_eq!(
        SqliteLedger::open_read_only(&path)
            .unwrap()
            .entries()
            .unwrap()
            .len(),
        1
    );
}

// Issue 11.8: a hostile state file.

#[test]
fn a_state_with_objects_timctl_did_not_create_is_refused() {
    for (name, sql) in [
        (
            "t",
            "CREATE TRIGGER t AFTER INSERT ON entries BEGIN DELETE FROM entries; END;",
        ),
        ("v", "CREATE VIEW v AS SELECT randomblob(1000000000)"),
        ("extra", "CREATE TABLE extra (x)"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);
        drop(writer(&path, APP).unwrap());
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(sql)
            .unwrap();

        let err = writer(&path, APP).unwrap_err();
        let text = format!("{err}");
        assert!(
            text.contains("is not a timctl state database") && text.contains(name),
            "{text}"
        );
        let err = SqliteLedger::open_read_only(&path).unwrap_err();
        assert!(format!("{err}").contains("did not create"), "{err}");
    }
}
