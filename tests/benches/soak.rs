//! Soak test (issues 11 and 18.3): N deletions (default 100,000) against fake-tim with 5 %
//! transient faults, `timctl apply` killed with SIGKILL at ten random moments and resumed each
//! time; every third kill (the second, fifth, eighth) comes while the state is stalled: a
//! reader holds SQLite's lock for three seconds, so no batch can be committed. Checks:
//!
//! - the state opens cleanly after every kill (`SqliteLedger` snapshot, `PRAGMA integrity_check`);
//! - no confirmed deletion is lost: everything fake-tim confirmed at least a second before a
//!   kill (four times the 250 ms recording interval) is in the state after it, when the state
//!   was not stalled;
//! - with the state stalled, the calls wait for it: at the kill, no more than one second of
//!   calls (the rate, 197) is confirmed and not recorded;
//! - re-sends stay within the last batch of each kill: a conversation deleted more than once
//!   is one that was confirmed but not yet recorded when some kill came;
//! - in the end every conversation is deleted (fake-tim says so) and recorded.
//!
//! Not in CI (it takes about N / 200 seconds). Run it with the debug binary (the rate limit, not
//! the CPU, sets the pace):
//!
//! ```text
//! cargo bench --profile dev -p timctl-tests --bench soak
//! SOAK_N=20000 SOAK_KILLS=10 cargo bench --profile dev -p timctl-tests --bench soak
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use timctl_core::ledger::{Ledger, SqliteLedger};
use timctl_tests::{ConversationKey, FakeConfig, FakeTim, Fault, bench};

const KEY: &str = "soak-secret-key-0123456789";

/// The apply's default rate: one second of calls, the most a stalled state may leave
/// confirmed and unrecorded.
const ONE_SECOND_OF_CALLS: usize = 197;

/// How long a stalled phase holds the state's lock: under the writer's 10 s busy timeout, so
/// the run waits for the state rather than failing on it.
const STALL: Duration = Duration::from_secs(3);

/// A one-to-one conversation as (From_Account, To_Account): the manifest has no groups, and
/// `ClearRamble` is not part of which conversation it is.
type Key = (String, String);

fn key(k: &ConversationKey) -> Key {
    assert_eq!(k.kind, 1, "the manifest has one-to-one conversations only");
    (k.from.clone(), k.peer.clone())
}

fn expected_keys(n: usize) -> BTreeSet<Key> {
    let per_user = 1000.min(n);
    (0..n)
        .map(|i| {
            (
                format!("user{}", i / per_user),
                format!("peer{}", i % per_user),
            )
        })
        .collect()
}

fn apply(bin: &Path, dir: &Path, manifest: &Path, url: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("apply")
        .arg("-f")
        .arg(manifest)
        .args(["--auto-approve", "-q"])
        .env("TIMCTL_STATE", dir.join("state.db"))
        .env("TIMCTL_ENDPOINT", url)
        .env("TIMCTL_SECRET_KEY", KEY)
        .env_remove("TIMCTL_USERSIG")
        .env_remove("TIMCTL_SECRET_KEY_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Opens the state after a kill and returns its entries as the fake's keys; panics unless it
/// opens cleanly.
fn state_after_kill(state: &Path) -> BTreeSet<Key> {
    let ledger = SqliteLedger::open_read_only(state).expect("the state opens after a SIGKILL");
    let snapshot = ledger
        .snapshot()
        .expect("the state reads after a SIGKILL")
        .expect("the state exists");
    drop(ledger);
    let conn =
        rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open for the integrity check");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok", "integrity_check after a SIGKILL");
    snapshot
        .entries
        .into_iter()
        .map(|e| (e.key.from.to_string(), e.key.peer.id().to_owned()))
        .collect()
}

fn confirmed(fake: &FakeTim) -> BTreeSet<Key> {
    fake.deletions().keys().map(key).collect()
}

/// How many successful deletions each conversation got.
fn deletions_per_key(fake: &FakeTim) -> BTreeMap<Key, usize> {
    let mut per = BTreeMap::new();
    for (k, n) in fake.deletions() {
        *per.entry(key(&k)).or_insert(0) += n;
    }
    per
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no arguments.
    let n = bench::size("SOAK_N", 100_000);
    let kills = bench::size("SOAK_KILLS", 10);
    let bin = timctl_tests::timctl_bin();
    let rt = bench::runtime(1);
    let fake = rt
        .block_on(FakeTim::start(FakeConfig {
            secret_key: KEY.into(),
            latency: (Duration::from_millis(2), Duration::from_millis(20)),
            fault_rate: 0.05,
            faults: vec![
                Fault::Code(50004),
                Fault::Code(50005),
                Fault::Http502,
                Fault::Drop,
            ],
            ..FakeConfig::default()
        }))
        .expect("fake-tim starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let m = bench::write_manifest(dir.path(), n, 1000);
    let state = dir.path().join("state.db");
    let expected = expected_keys(n);

    // Ten kill moments, at random points of the progress (by confirmed deletions), each leaving
    // at least 1,000 deletions (5 s at 200/s) to go, so that the run cannot finish in the up to
    // two seconds between reaching a target and the kill.
    let margin = (n / 50).max(1000);
    assert!(
        n > 2 * margin,
        "SOAK_N={n} is too small: a kill needs {margin} deletions on either side"
    );
    let mut targets: Vec<usize> = (0..kills)
        .map(|_| rand::random_range(margin..n - margin))
        .collect();
    targets.sort_unstable();
    println!("soak: {n} deletions, {kills} kills at about {targets:?} confirmed");

    let started = Instant::now();
    let mut recorded_by_kill = Vec::new();
    let mut confirmed_not_recorded: BTreeSet<Key> = BTreeSet::new();
    let mut largest_gap = 0;
    let mut largest_stalled_gap = 0;
    for (k, target) in targets.iter().enumerate() {
        let stalled = k % 3 == 1;
        let mut child = apply(bin, dir.path(), &m, fake.url())
            .spawn()
            .expect("timctl starts");
        // Cheap progress polling: the fake's request counter, not its call list.
        let wait_from = fake.stats().requests;
        let already = confirmed(&fake).len();
        let needed = target.saturating_sub(already).max(200) as u64;
        while fake.stats().requests < wait_from + needed {
            if let Some(status) = child.try_wait().expect("wait") {
                panic!("timctl exited ({status}) before kill {k}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rand::random_range(0..1000)));
        // What the fake confirmed now was confirmed more than a second before the kill.
        let safe = confirmed(&fake);
        let reader = if stalled {
            // A reader in a transaction holds a SHARED lock: no batch commits until it ends.
            let reader = rusqlite::Connection::open_with_flags(
                &state,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .expect("open the stalling reader");
            reader.execute_batch("BEGIN").expect("BEGIN");
            let _: i64 = reader
                .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
                .expect("take the shared lock");
            std::thread::sleep(STALL);
            Some(reader)
        } else {
            std::thread::sleep(Duration::from_secs(1));
            None
        };
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), None, "kill {k}: killed, not exited");
        drop(reader);
        let at_kill = confirmed(&fake);
        if stalled {
            // A writer killed while waiting to commit leaves a hot journal; the next writer
            // rolls it back, as this read-write open does, before the read-only checks.
            rusqlite::Connection::open(&state)
                .and_then(|c| c.query_row("SELECT count(*) FROM meta", [], |r| r.get::<_, i64>(0)))
                .expect("the state opens read-write after a stalled kill");
        }
        let recorded = state_after_kill(&state);
        if !stalled {
            let lost: Vec<_> = safe.difference(&recorded).take(5).collect();
            assert!(
                lost.is_empty(),
                "kill {k}: confirmed over a second before the kill but not recorded: {lost:?}"
            );
        }
        assert!(
            recorded.is_subset(&at_kill),
            "kill {k}: the state holds a deletion fake-tim never confirmed"
        );
        let gap: BTreeSet<_> = at_kill.difference(&recorded).cloned().collect();
        if stalled {
            assert!(
                gap.len() <= ONE_SECOND_OF_CALLS,
                "kill {k}: {} confirmed but not recorded with the state stalled, over one \
                 second of calls",
                gap.len()
            );
            largest_stalled_gap = largest_stalled_gap.max(gap.len());
        } else {
            largest_gap = largest_gap.max(gap.len());
        }
        println!(
            "kill {k}{} at {:.1}s: {} confirmed, {} recorded, {} confirmed but not recorded",
            if stalled { " (state stalled 3 s)" } else { "" },
            started.elapsed().as_secs_f64(),
            at_kill.len(),
            recorded.len(),
            gap.len()
        );
        confirmed_not_recorded.extend(gap);
        recorded_by_kill.push(recorded.len());
    }

    let out = apply(bin, dir.path(), &m, fake.url())
        .output()
        .expect("timctl runs");
    assert!(
        out.status.success(),
        "the final resume failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let elapsed = started.elapsed().as_secs_f64();

    let deleted = confirmed(&fake);
    assert_eq!(deleted, expected, "fake-tim: every conversation is deleted");
    assert_eq!(
        state_after_kill(&state),
        expected,
        "the state records every conversation"
    );
    let per = deletions_per_key(&fake);
    let resent: BTreeSet<_> = per
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k.clone())
        .collect();
    let outside: Vec<_> = resent.difference(&confirmed_not_recorded).take(5).collect();
    assert!(
        outside.is_empty(),
        "re-sent though recorded before every kill: {outside:?}"
    );
    let stats = fake.stats();
    println!(
        "| {n} | {kills} | {:.0} | {} | {} | {} | {largest_gap} | {largest_stalled_gap} | {} | {:.1} |",
        elapsed,
        stats.requests,
        stats.faults,
        resent.len(),
        per.values().sum::<usize>() - n,
        n as f64 / elapsed,
    );
    println!(
        "soak passed: every conversation deleted and recorded, no confirmed deletion lost, \
         at most one second of calls unrecorded with the state stalled, re-sends only from \
         the last batch of a kill"
    );
}
