//! End to end, the order the apply operation keeps: the state is checked again under the lock
//! (and planned again when it moved on), nothing is called before the run's row is written,
//! and a stop stops every queued call.

mod apply_common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use apply_common::{APP, Env, Fake, Out, THREE, many};
use timctl_core::ids::ConversationKey;
use timctl_core::ledger::{Deleted, LedgerWriter, RunInfo, SqliteLedgerWriter, StateLock};

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

#[test]
fn the_state_moving_on_while_waiting_for_the_lock_plans_again_under_it() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    // This test holds the lock (as another apply would) over a state that exists.
    let lock = StateLock::acquire(&env.state, "another apply", Duration::ZERO).unwrap();
    let mut other = SqliteLedgerWriter::create_or_open(&env.state, APP, lock).unwrap();

    let mut args = apply_args(&env);
    args.extend(["--lock-timeout".into(), "2m".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = env
        .timctl(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once its plan is printed, it has read the state it planned against and goes for the
    // lock, which it cannot have.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    while !printed.contains("Plan: 3 to delete") {
        let mut line = String::new();
        assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "{printed}");
        printed.push_str(&line);
    }
    // Meanwhile the other apply deletes alice → bob and lets the lock go.
    other
        .record_deleted(
            &RunInfo::new("other"),
            &[Deleted {
                key: ConversationKey::new("alice".parse().unwrap(), "user:bob".parse().unwrap()),
                clear_roaming: true,
                deleted_at: jiff::Timestamp::now(),
            }],
        )
        .unwrap();
    drop(other);

    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let out = Out {
        code: out.status.code(),
        stdout: printed + &rest,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stderr.contains("planned again"), "{}", out.all());
    assert!(
        out.stdout
            .contains("Plan: 2 to delete, 0 to forget, 1 unchanged."),
        "{}",
        out.all()
    );
    // Not stale, and not called again for what the other apply had done.
    assert!(
        !fake.calls().iter().any(|c| c.key.peer == "bob"),
        "{:?}",
        fake.calls()
    );
    assert_eq!(fake.calls().len(), 2);
    assert_eq!(env.entries().len(), 3);
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
