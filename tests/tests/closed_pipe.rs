//! A reader of stdout that goes away (`timctl apply … | head -0`, a CI step piping events into
//! a tool that dies): timctl must not panic, and every deletion the server confirmed must still
//! be recorded in the state. Each run here gets a pipe for stdout whose reading end is closed,
//! before the binary writes anything or after its first line.

mod apply_common;

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::process::{Command, Stdio};

use apply_common::{Env, Fake, Out, many};
use timctl_tests::FakePeer;

const USERS: usize = 5;
const PER_USER: usize = 10;

/// When the reading end of stdout is closed.
#[derive(Clone, Copy, Debug)]
enum Close {
    /// Before the binary writes anything. (The binary loads manifests and the state before
    /// its first write, so in practice the pipe is closed by then.)
    AtOnce,
    /// After its first line.
    AfterFirstLine,
}

/// Runs `cmd` with its stdout a pipe closed as `close` says, and waits for it.
fn run_into_closed_stdout(mut cmd: Command, close: Close) -> Out {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    if let Close::AfterFirstLine = close {
        let mut first = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty(), "the binary wrote nothing");
    } else {
        drop(stdout);
    }
    child.wait_with_output().unwrap().into()
}

/// No panic, and the exit code one of a finished run.
fn exited_without_panicking(out: &Out, what: &str) {
    assert!(!out.stderr.contains("panicked"), "{what}: {}", out.all());
    assert_ne!(out.code, Some(101), "{what}: {}", out.all());
    assert!(
        out.code.is_some(),
        "{what}: killed by a signal: {}",
        out.all()
    );
}

/// Every conversation the fake deleted is in the state, as `state list --json` reads it.
fn confirmed_deletions_are_recorded(fake: &Fake, env: &Env, what: &str) -> usize {
    let deleted: BTreeSet<(String, String)> = fake
        .deletions()
        .into_keys()
        .map(|k| {
            let kind = if k.kind == 1 { "user" } else { "group" };
            (k.from, format!("{kind}:{}", k.peer))
        })
        .collect();
    let recorded: BTreeSet<(String, String)> = env
        .entries()
        .into_iter()
        .map(|(from, conversation, _)| (from, conversation))
        .collect();
    let lost: Vec<_> = deleted.difference(&recorded).collect();
    assert!(
        lost.is_empty(),
        "{what}: deleted but not recorded: {lost:?}"
    );
    deleted.len()
}

/// `timctl apply PLANFILE` prints nothing on stdout but its last line, the summary: written
/// into a closed pipe, it neither panics nor changes the exit code, and the run is recorded.
#[test]
fn the_apply_summary_line_into_a_closed_stdout() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, &many(USERS, PER_USER));
    let out = env.plan(&["--out", "saved.json"]);
    assert_eq!(out.code, Some(0), "{}", out.all());

    let out = run_into_closed_stdout(env.timctl(&["apply", "saved.json"]), Close::AtOnce);
    exited_without_panicking(&out, "apply PLANFILE");
    assert_eq!(out.code, Some(0), "{}", out.all());
    let deleted = confirmed_deletions_are_recorded(&fake, &env, "apply PLANFILE");
    assert_eq!(deleted, USERS * PER_USER);
    assert_eq!(env.entries().len(), USERS * PER_USER);
}

/// `apply --json` writes its events on stdout while it deletes: a reader that leaves at once
/// or after the first event misses the rest, and nothing else changes.
#[test]
fn apply_json_events_into_a_closed_stdout() {
    for close in [Close::AtOnce, Close::AfterFirstLine] {
        let fake = Fake::start(|_| {});
        let env = Env::new(&fake, &many(USERS, PER_USER));
        let manifest = env.manifest.to_str().unwrap();
        let out = run_into_closed_stdout(
            env.timctl(&["apply", "-f", manifest, "--auto-approve", "--json"]),
            close,
        );
        let what = format!("apply --json, closed {close:?}");
        exited_without_panicking(&out, &what);
        assert_eq!(out.code, Some(0), "{what}: {}", out.all());
        let deleted = confirmed_deletions_are_recorded(&fake, &env, &what);
        assert_eq!(deleted, USERS * PER_USER, "{what}");
    }
}

/// `apply --refresh --json` writes the listing's events before the deletions': neither kind
/// into a closed stdout stops the run or loses a record.
#[test]
fn apply_refresh_json_events_into_a_closed_stdout() {
    for close in [Close::AtOnce, Close::AfterFirstLine] {
        let fake = Fake::start(|_| {});
        let env = Env::new(&fake, &many(USERS, PER_USER));
        for u in 0..USERS {
            fake.seed_conversations(
                &format!("u{u}"),
                (0..PER_USER).map(|p| FakePeer::user(format!("p{p}"))),
                false,
            );
        }
        let manifest = env.manifest.to_str().unwrap();
        let out = run_into_closed_stdout(
            env.timctl(&[
                "apply",
                "-f",
                manifest,
                "--auto-approve",
                "--refresh",
                "--json",
            ]),
            close,
        );
        let what = format!("apply --refresh --json, closed {close:?}");
        exited_without_panicking(&out, &what);
        assert_eq!(out.code, Some(0), "{what}: {}", out.all());
        let deleted = confirmed_deletions_are_recorded(&fake, &env, &what);
        assert_eq!(deleted, USERS * PER_USER, "{what}");
        assert!(
            (0..USERS).all(|u| fake.conversations(&format!("u{u}")).is_empty()),
            "{what}"
        );
    }
}

/// `plan --refresh` into a closed stdout: the reader has gone, so the plan is not printed and
/// the exit is quiet; nothing is written to the state either way.
#[test]
fn plan_refresh_into_a_closed_stdout() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, &many(USERS, PER_USER));
    fake.seed_conversations("u0", [FakePeer::user("p0")], false);
    let manifest = env.manifest.to_str().unwrap();
    for format in ["text", "json"] {
        let out = run_into_closed_stdout(
            env.timctl(&["plan", "-f", manifest, "--refresh", "--format", format]),
            Close::AtOnce,
        );
        let what = format!("plan --refresh --format {format}");
        exited_without_panicking(&out, &what);
        assert_eq!(out.code, Some(0), "{what}: {}", out.all());
        // Nothing but the warning that there is no state yet.
        assert!(
            out.stderr
                .lines()
                .all(|l| l.starts_with("warning: no state at ")),
            "{what}: {}",
            out.all()
        );
    }
    assert!(fake.deletions().is_empty());
    assert_eq!(env.state_ref(), None, "plan wrote no state");
}

/// `timctl apply -f MANIFEST --auto-approve` prints the plan on stdout before it starts: into a
/// closed pipe the plan is lost, and the run goes on (nobody had to read it to approve it).
#[test]
fn auto_approved_apply_goes_on_when_the_plan_meets_a_closed_stdout() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, &many(USERS, PER_USER));
    let manifest = env.manifest.to_str().unwrap();
    let out = run_into_closed_stdout(
        env.timctl(&["apply", "-f", manifest, "--auto-approve"]),
        Close::AtOnce,
    );
    exited_without_panicking(&out, "apply -f --auto-approve");
    assert_eq!(out.code, Some(0), "{}", out.all());
    let deleted = confirmed_deletions_are_recorded(&fake, &env, "apply -f --auto-approve");
    assert_eq!(deleted, USERS * PER_USER);
}

/// Without `--auto-approve`, a plan that cannot be shown cannot be approved: apply refuses,
/// exit 1, saying nothing was changed, and makes no call.
#[test]
fn apply_asking_for_approval_refuses_when_the_plan_meets_a_closed_stdout() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, &many(USERS, PER_USER));
    let manifest = env.manifest.to_str().unwrap();
    let out = run_into_closed_stdout(env.timctl(&["apply", "-f", manifest]), Close::AtOnce);
    exited_without_panicking(&out, "apply -f");
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("stdout was closed") && out.stderr.contains("nothing was changed"),
        "{}",
        out.all()
    );
    assert_eq!(fake.stats().requests, 0);
    assert_eq!(env.state_ref(), None, "no state was written");
}

/// A closed stderr (`timctl apply 2>&1 | head`): the warnings apply prints at the end are lost,
/// and nothing else; the run is recorded and exits as it would have.
#[test]
fn apply_warnings_into_a_closed_stderr() {
    let fake = Fake::start(|c| {
        // A user that does not exist: a warning on stderr at the end of the run.
        c.users.insert("u1".into(), 50001);
    });
    let env = Env::new(&fake, &many(USERS, PER_USER));
    let mut child = env.spawn_apply(&[]);
    drop(child.stderr.take());
    let out: Out = child.wait_with_output().unwrap().into();
    assert_ne!(out.code, Some(101), "{}", out.all());
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("Apply complete"), "{}", out.all());
    confirmed_deletions_are_recorded(&fake, &env, "apply, stderr closed");
    assert_eq!(
        env.entries().len(),
        USERS * PER_USER,
        "50001 counts as done"
    );
}

/// `state rm` and `usersig` print one line on stdout: into a closed pipe it is lost, quietly,
/// and the state change it reports is made all the same.
#[test]
fn one_line_commands_into_a_closed_stdout() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, &many(1, 2));
    let manifest = env.manifest.to_str().unwrap();
    let out = env.apply(&[]);
    assert_eq!(out.code, Some(0), "{}", out.all());

    let out = run_into_closed_stdout(
        env.timctl(&["state", "rm", "u0", "user:p0", "-f", manifest]),
        Close::AtOnce,
    );
    exited_without_panicking(&out, "state rm");
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(
        env.entries().len(),
        1,
        "removed although nobody read the line"
    );

    let out = run_into_closed_stdout(env.timctl(&["usersig", "-f", manifest]), Close::AtOnce);
    exited_without_panicking(&out, "usersig");
    assert_eq!(out.code, Some(0), "{}", out.all());
}

/// An apply with nothing to do needs nobody's approval: into a closed stdout it ends as it
/// would have, exit 0, without a call.
#[test]
fn apply_with_nothing_to_do_into_a_closed_stdout() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, &many(1, 2));
    let out = env.apply(&[]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let calls = fake.stats().requests;

    let manifest = env.manifest.to_str().unwrap();
    let out = run_into_closed_stdout(env.timctl(&["apply", "-f", manifest]), Close::AtOnce);
    exited_without_panicking(&out, "apply with no changes");
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(fake.stats().requests, calls, "no call");
}
