//! `timctl apply` under trouble, end to end: injected transient faults, SIGTERM, and SIGKILL at
//! random moments, with the real binary, fake-tim over loopback and a real SQLite state.

mod apply_common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use apply_common::*;
use timctl_tests::{ConversationKey, Fault};

/// The state's entries as the fake's conversation keys.
fn ledger_keys(env: &Env) -> BTreeSet<ConversationKey> {
    env.entries()
        .into_iter()
        .map(|(from, peer, clear)| {
            let (kind, id) = peer.split_once(':').unwrap();
            conv(&from, if kind == "user" { 1 } else { 2 }, id, clear)
        })
        .collect()
}

#[test]
fn transient_faults_are_retried_and_nothing_is_deleted_twice() {
    let fake = Fake::start(|c| {
        c.fault_rate = 0.05;
        c.faults = vec![
            Fault::Code(50004),
            Fault::Code(50005),
            Fault::Http502,
            Fault::Drop,
        ];
    });
    let env = Env::new(&fake, &many(30, 10));
    let out = env.apply(&[]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout
            .ends_with("Apply complete: 300 deleted, 0 forgotten, 0 failed.\n"),
        "{}",
        out.all()
    );
    assert!(fake.stats().faults > 0, "faults were injected");
    // The fake injects faults before processing a call, so no confirmation is ever lost in
    // flight here: every conversation is deleted exactly once.
    let per = fake.calls_per_conversation();
    let expected: BTreeMap<_, _> = many_keys(30, 10).into_iter().map(|k| (k, 1)).collect();
    assert_eq!(per, expected);
    assert_eq!(ledger_keys(&env), expected.keys().cloned().collect());
}

/// Sends `signal` to an apply mid-run: it must exit with `code`, having finished and recorded
/// the calls in flight, and a resume must send only what was not recorded.
fn stopped_by_a_signal_then_resumed(signal: rustix::process::Signal, code: i32) {
    let fake = Fake::start(|c| c.latency = (Duration::from_millis(20), Duration::from_millis(50)));
    let env = Env::new(&fake, &many(30, 10));
    let child = env.spawn_apply(&["--rate", "100"]);
    fake.wait_until("no progress", |f| f.calls().len() >= 40);
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), signal).unwrap();
    let out: Out = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, Some(code), "{}", out.all());
    assert!(out.stderr.contains("Stopping"), "{}", out.all());
    assert!(out.stderr.contains("run apply again"), "{}", out.all());

    // Every call the fake processed finished and was recorded, nothing more.
    let deleted: BTreeSet<_> = fake.deletions().into_keys().collect();
    assert!(deleted.len() < 300, "stopped early: {}", deleted.len());
    assert_eq!(ledger_keys(&env), deleted);

    let resumed = env.apply(&[]);
    assert_eq!(resumed.code, Some(0), "{}", resumed.all());
    let per = fake.calls_per_conversation();
    let expected: BTreeMap<_, _> = many_keys(30, 10).into_iter().map(|k| (k, 1)).collect();
    assert_eq!(per, expected, "the resume sent only what was not recorded");
    assert_eq!(ledger_keys(&env).len(), 300);
}

#[test]
fn sigterm_finishes_in_flight_calls_records_them_and_resume_finishes() {
    stopped_by_a_signal_then_resumed(rustix::process::Signal::TERM, 143);
}

#[test]
fn ctrl_c_finishes_in_flight_calls_records_them_and_resume_finishes() {
    stopped_by_a_signal_then_resumed(rustix::process::Signal::INT, 130);
}

#[test]
fn a_second_ctrl_c_exits_at_once_and_the_state_still_opens() {
    // Slow answers, so the first Ctrl-C has calls in flight to wait for.
    let fake = Fake::start(|c| c.latency = (Duration::from_secs(3), Duration::from_secs(3)));
    let env = Env::new(&fake, &many(10, 10));
    let child = env.spawn_apply(&["--rate", "50"]);
    fake.wait_until("no progress", |f| !f.calls().is_empty());
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let out: Out = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, Some(130), "{}", out.all());
    assert!(out.stderr.contains("Interrupted again"), "{}", out.all());
    // It left before the answers came back: the server may have deleted what it was asked, but
    // nothing unconfirmed is in the state, which still opens, and the resume finishes the rest
    // (deleting again is harmless).
    let deleted: BTreeSet<_> = fake.deletions().into_keys().collect();
    assert!(ledger_keys(&env).is_subset(&deleted));
    assert!(ledger_keys(&env).len() < 100);
    let resumed = env.apply(&[]);
    assert_eq!(resumed.code, Some(0), "{}", resumed.all());
    assert_eq!(ledger_keys(&env).len(), 100);
}

/// One run killed after `after`; returns how many deletions were confirmed before the kill.
fn killed_then_resumed(after: Duration) -> usize {
    let fake = Fake::start(|c| c.latency = (Duration::from_millis(2), Duration::from_millis(10)));
    let env = Env::new(&fake, &many(30, 10));
    let m = env.manifest.to_str().unwrap();
    let mut child = env
        .timctl(&["apply", "-f", m, "--auto-approve", "--rate", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // When each processed call was first seen. The fake records a call just before it answers,
    // so "seen" is never earlier than the confirmation timctl got.
    let mut seen: Vec<Instant> = Vec::new();
    let poll = |seen: &mut Vec<Instant>| {
        let n = fake.calls().len();
        let now = Instant::now();
        seen.resize(n, now);
    };
    let started = Instant::now();
    while started.elapsed() < after {
        poll(&mut seen);
        std::thread::sleep(Duration::from_millis(5));
    }
    poll(&mut seen);
    child.kill().unwrap();
    let killed_at = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "killed before it finished ({after:?})");

    let calls = fake.calls();
    let after_kill = ledger_keys(&env); // The state opens after a SIGKILL.
    let confirmed: BTreeSet<_> = calls
        .iter()
        .filter(|c| c.code == 0)
        .map(|c| c.key.clone())
        .collect();
    assert!(
        after_kill.is_subset(&confirmed),
        "the state holds only confirmed deletions"
    );
    for (i, c) in calls.iter().enumerate() {
        if i < seen.len() && killed_at.duration_since(seen[i]) > Duration::from_secs(1) {
            assert!(
                after_kill.contains(&c.key),
                "{:?}, confirmed {:?} before the kill, is not in the state",
                c.key,
                killed_at.duration_since(seen[i])
            );
        }
    }

    let resumed = env.apply(&[]);
    assert_eq!(resumed.code, Some(0), "{}", resumed.all());
    let expected: BTreeSet<_> = many_keys(30, 10).into_iter().collect();
    assert_eq!(
        ledger_keys(&env),
        expected,
        "the resume completes the manifest"
    );
    for (key, n) in fake.calls_per_conversation() {
        assert!(expected.contains(&key));
        assert!(
            n == 1 || !after_kill.contains(&key),
            "{key:?} was sent again though it was recorded"
        );
    }
    confirmed.len()
}

#[test]
fn sigkill_at_random_moments_loses_nothing_older_than_a_second() {
    // Five runs at once (each its own fake and state), killed between 0.1 s and 2.6 s into a
    // run of about 3 s.
    let delays: Vec<Duration> = (0..5)
        .map(|i| Duration::from_millis(100 + i * 500 + rand::random_range(0..400)))
        .collect();
    let confirmed: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = delays
            .iter()
            .map(|d| s.spawn(move || killed_then_resumed(*d)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!("killed after {delays:?}, with {confirmed:?} deletions confirmed");
    // The later kills came after some deletions had been confirmed.
    assert!(
        confirmed.iter().filter(|n| **n > 0).count() >= 3,
        "{delays:?} {confirmed:?}"
    );
}
