//! End to end, the order the apply operation keeps: the state is checked again under the lock
//! (and planned again when it moved on), nothing is called before the run's row is written,
//! and a stop stops every queued call.

mod apply_common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use apply_common::{APP, Env, Fake, Out, THREE, many};
use timctl_core::apply::{self, ApplyError, Source};
use timctl_core::ids::ConversationKey;
use timctl_core::ledger::{
    Deleted, LedgerWriter, LocatedStore, RunInfo, SqliteLedgerWriter, StateLocation, StateLock,
    StateName,
};
use timctl_core::plan::{self, StalePlan};

/// `cmd` run by bash with every file it writes capped at `bytes` (RLIMIT_FSIZE) and SIGXFSZ
/// ignored, so that a write past the cap fails as on a full disk, for any user and without
/// mounting anything.
fn with_file_size_cap(cmd: &Command, bytes: u64) -> Command {
    let mut capped = Command::new("bash");
    capped
        .arg("-c")
        // bash counts `ulimit -f` in blocks of 1024 bytes.
        .arg(format!(
            "trap '' XFSZ; ulimit -f {}; exec \"$0\" \"$@\"",
            bytes / 1024
        ))
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => capped.env(key, v),
            None => capped.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        capped.current_dir(dir);
    }
    capped
}

/// What SQLite says when a write past the cap fails (EFBIG). On a disk that is really full
/// (ENOSPC) it says `database or disk is full`, through the same path.
const CAUSE: &str = "disk I/O error";

fn apply_args(env: &Env) -> Vec<String> {
    vec![
        "apply".into(),
        "-f".into(),
        env.manifest.to_str().unwrap().into(),
        "--auto-approve".into(),
    ]
}

/// `timctl apply --auto-approve --lock-timeout 2m ARGS` started while this test holds the lock
/// through `other`; once it has printed `plan_line` (it has read the state it planned against
/// and goes for the lock), `meanwhile` changes the state and the lock is let go.
fn apply_while_another_holds_the_lock(
    env: &Env,
    mut other: SqliteLedgerWriter,
    args: &[&str],
    plan_line: &str,
    meanwhile: impl FnOnce(&mut SqliteLedgerWriter),
) -> Out {
    let mut all = apply_args(env);
    all.extend(["--lock-timeout".into(), "2m".into()]);
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut child = env
        .timctl(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    while !printed.contains(plan_line) {
        let mut line = String::new();
        assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "{printed}");
        printed.push_str(&line);
    }
    meanwhile(&mut other);
    drop(other);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code(),
        stdout: printed + &rest,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// This test's stand-in for another apply: the state, created, locked.
fn other_apply(env: &Env) -> SqliteLedgerWriter {
    let lock = StateLock::acquire(&env.state, "another apply", Duration::ZERO).unwrap();
    SqliteLedgerWriter::create_or_open(&env.state, APP, lock).unwrap()
}

fn alice_bob() -> ConversationKey {
    ConversationKey::new("alice".parse().unwrap(), "user:bob".parse().unwrap())
}

fn record_alice_bob(w: &mut SqliteLedgerWriter) {
    w.record_deleted(
        &RunInfo::new("other"),
        &[Deleted {
            key: alice_bob(),
            clear_roaming: true,
            deleted_at: jiff::Timestamp::now(),
        }],
    )
    .unwrap();
}

#[test]
fn the_state_moving_on_while_waiting_for_the_lock_plans_again_under_it() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    // Meanwhile the other apply deletes alice → bob.
    let out = apply_while_another_holds_the_lock(
        &env,
        other_apply(&env),
        &[],
        "Plan: 3 to delete",
        record_alice_bob,
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stderr.contains("planned again"), "{}", out.all());
    assert!(
        out.stdout
            .contains("Plan: 2 to delete, 0 to forget, 1 unchanged."),
        "{}",
        out.all()
    );
    // Not refused as stale, and no call again for what the other apply had done.
    assert!(
        !fake.calls().iter().any(|c| c.key.peer == "bob"),
        "{:?}",
        fake.calls()
    );
    assert_eq!(fake.calls().len(), 2);
    assert_eq!(env.entries().len(), 3);
}

/// The library's operation on a real state, because the binary shows a saved plan nothing
/// before it goes for the lock, so a test cannot tell when to move the state on.
#[test]
fn a_saved_plan_the_state_moved_past_before_the_lock_is_refused_under_it() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    drop(other_apply(&env));
    let plan_file = env.dir.path().join("plan.json");
    let out = env.plan(&["--out", plan_file.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let store = LocatedStore::new(
        StateLocation::Sqlite(env.state.clone()),
        StateName::default(),
    )
    .unwrap();
    let saved = plan::saved::read(&plan_file).unwrap();
    let state = timctl_core::ledger::open_read(store.location(), store.name(), Some(APP)).unwrap();
    let prepared = apply::prepare(Source::Saved(saved), &state).unwrap();
    drop(state);
    // Another apply moves the state on after the check without the lock.
    record_alice_bob(&mut other_apply(&env));
    let refused = prepared.lock(&store, Duration::ZERO).unwrap_err();
    assert!(
        matches!(
            refused,
            ApplyError::Stale(StalePlan::SerialChanged { then, now })
                if then.serial == 1 && now.serial == 2
        ),
        "{refused:?}"
    );
    assert_eq!(
        env.entries(),
        [("alice".to_owned(), "user:bob".to_owned(), true)],
        "only the other apply's write"
    );
}

#[test]
fn a_plan_made_again_under_the_lock_is_held_to_max_deletes() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    let mut other = other_apply(&env);
    record_alice_bob(&mut other);
    // Meanwhile the other one forgets alice → bob: there is one more to delete than planned.
    let out = apply_while_another_holds_the_lock(
        &env,
        other,
        &["--max-deletes", "2"],
        "Plan: 2 to delete",
        |w| {
            w.forget(&[alice_bob()]).unwrap();
        },
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("planned again"), "{}", out.all());
    assert!(
        out.stderr.contains("more than --max-deletes 2"),
        "{}",
        out.all()
    );
    assert_eq!(fake.calls().len(), 0, "{}", out.all());
    assert!(env.entries().is_empty());
}

#[test]
fn a_state_that_cannot_be_written_is_refused_before_anything_is_called() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    // A state that exists, then a cap below its size: the first write fails.
    let lock = StateLock::acquire(&env.state, "seed", Duration::ZERO).unwrap();
    drop(SqliteLedgerWriter::create_or_open(&env.state, APP, lock).unwrap());
    let args = apply_args(&env);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out: Out = with_file_size_cap(&env.timctl(&args), 2048)
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_eq!(fake.calls().len(), 0, "{}", out.all());
    assert!(out.stderr.contains("cannot be written"), "{}", out.all());
    assert_eq!(
        out.stderr.matches(CAUSE).count(),
        1,
        "the cause is named once: {}",
        out.all()
    );
    assert!(env.entries().is_empty());
}

#[test]
fn a_state_that_fills_up_mid_run_stops_every_queued_call() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, &many(4, 300));
    let lock = StateLock::acquire(&env.state, "seed", Duration::ZERO).unwrap();
    drop(SqliteLedgerWriter::create_or_open(&env.state, APP, lock).unwrap());
    // Writes within the file's pages succeed; the first page the entries need beyond them
    // fails, as on a full disk.
    let size = std::fs::metadata(&env.state).unwrap().len();
    let mut args = apply_args(&env);
    // Many calls queued in the client's limiter at once: today's bug sent them all.
    args.extend(["--rate", "40", "--concurrency", "100"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out: Out = with_file_size_cap(&env.timctl(&args), size + 1024)
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_eq!(
        out.stderr.matches(CAUSE).count(),
        1,
        "the cause is named once: {}",
        out.all()
    );
    let recorded = env.entries().len();
    let called = fake.calls().len();
    assert!(recorded > 0, "the first batches fit: {}", out.all());
    assert!(called < 1200, "the run stopped: {}", out.all());
    // Made but not recorded: the batch that failed (a quarter second at 40/s) and the calls
    // already on the wire. The 100 calls waiting in the client's queue were never sent.
    assert!(
        called - recorded < 40,
        "{called} calls, {recorded} recorded: {}",
        out.all()
    );
}
