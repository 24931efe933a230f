//! `timctl apply` end to end: the real binary, fake-tim over loopback, a real SQLite state in a
//! temp dir. The lifecycle of a manifest, saved plans, the prompt, refusals, per-item and fatal
//! failures, `--json`, the lock, and secrets.

mod apply_common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;

use apply_common::*;

fn requests(fake: &Fake) -> u64 {
    fake.stats().requests
}

#[test]
fn lifecycle_deletes_once_then_nothing_then_forgets_then_upgrades() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);

    // A fresh state: exactly the manifest's three conversations, once each, with the right
    // Type, peer field and ClearRamble.
    let out = env.apply(&[]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout
            .ends_with("Apply complete: 3 deleted, 0 forgotten, 0 failed.\n"),
        "{}",
        out.all()
    );
    let expected: BTreeMap<_, _> = [
        (conv("alice", 1, "bob", true), 1),
        (conv("alice", 2, "@TGS#2C5SZEAEF", false), 1),
        (conv("carol", 1, "dave", false), 1),
    ]
    .into();
    assert_eq!(fake.calls_per_conversation(), expected);
    assert_eq!(fake.deletions(), expected);
    assert_eq!(
        env.entries(),
        [
            ("alice".into(), "group:@TGS#2C5SZEAEF".into(), false),
            ("alice".into(), "user:bob".into(), true),
            ("carol".into(), "user:dave".into(), false),
        ]
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&env.state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the state is private");
    }

    // The plan now shows nothing, and applying again calls nothing.
    let plan = env.plan(&[]);
    assert_eq!(plan.code, Some(0), "{}", plan.all());
    assert!(
        plan.stdout
            .contains("No changes. The state matches the manifest."),
        "{}",
        plan.all()
    );
    let before = requests(&fake);
    let again = env.apply(&[]);
    assert_eq!(again.code, Some(0), "{}", again.all());
    assert_eq!(requests(&fake), before, "a second apply makes no call");
    assert!(
        again
            .stdout
            .ends_with("Apply complete: 0 deleted, 0 forgotten, 0 failed.\n"),
        "{}",
        again.all()
    );

    // Removing carol's entry: one forget, no call.
    env.write_manifest(
        "  alice:\n    - user: bob\n      clear_roaming: true\n    - group: \"@TGS#2C5SZEAEF\"\n",
    );
    let forget = env.apply(&[]);
    assert_eq!(forget.code, Some(0), "{}", forget.all());
    assert!(
        forget
            .stdout
            .ends_with("Apply complete: 0 deleted, 1 forgotten, 0 failed.\n"),
        "{}",
        forget.all()
    );
    assert_eq!(requests(&fake), before, "forgetting makes no call");
    assert_eq!(env.entries().len(), 2);

    // Turning clear_roaming on for the group: one call, with ClearRamble 1.
    env.write_manifest(
        "  alice:\n    - user: bob\n      clear_roaming: true\n    - group: \"@TGS#2C5SZEAEF\"\n      clear_roaming: true\n",
    );
    let upgrade = env.apply(&[]);
    assert_eq!(upgrade.code, Some(0), "{}", upgrade.all());
    assert_eq!(requests(&fake), before + 1, "{}", upgrade.all());
    let last = fake.calls().last().cloned().unwrap();
    assert_eq!(last.key, conv("alice", 2, "@TGS#2C5SZEAEF", true));
    assert_eq!(
        env.entries(),
        [
            ("alice".into(), "group:@TGS#2C5SZEAEF".into(), true),
            ("alice".into(), "user:bob".into(), true),
        ]
    );
}

#[test]
fn a_saved_plan_is_applied_once_and_refused_when_stale() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    let plan_file = env.dir.path().join("plan.json");
    let p = plan_file.to_str().unwrap();
    let out = env.plan(&["--out", p]);
    assert_eq!(out.code, Some(0), "{}", out.all());

    // Carried out with no prompt (stdin is not a terminal) and no manifest read: the manifest
    // is gone.
    std::fs::remove_file(&env.manifest).unwrap();
    let first: Out = env.timctl(&["apply", p]).output().unwrap().into();
    assert_eq!(first.code, Some(0), "{}", first.all());
    assert_eq!(fake.deletions().len(), 3);
    assert_eq!(env.entries().len(), 3);

    // Applied once: the state has moved on (there was no state then, there is one now).
    let before = requests(&fake);
    let serial = env.state_ref();
    let again: Out = env.timctl(&["apply", p]).output().unwrap().into();
    assert_eq!(again.code, Some(1), "{}", again.all());
    assert!(again.stderr.contains("stale"), "{}", again.all());
    assert_eq!(requests(&fake), before, "a stale plan calls nothing");
    assert_eq!(env.state_ref(), serial, "a stale plan changes nothing");

    // A plan made against a state, refused after another apply moved the serial.
    env.write_manifest(&format!("{THREE}  erin:\n    - user: frank\n"));
    let p2 = env.dir.path().join("plan2.json");
    let out = env.plan(&["--out", p2.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    env.write_manifest(&format!("{THREE}  gina:\n    - user: hank\n"));
    assert_eq!(env.apply(&[]).code, Some(0));
    let before = requests(&fake);
    let serial = env.state_ref();
    let stale: Out = env
        .timctl(&["apply", p2.to_str().unwrap()])
        .output()
        .unwrap()
        .into();
    assert_eq!(stale.code, Some(1), "{}", stale.all());
    assert!(stale.stderr.contains("stale"), "{}", stale.all());
    assert_eq!(requests(&fake), before);
    assert_eq!(env.state_ref(), serial);
    assert!(
        !fake.calls().iter().any(|c| c.key.from == "erin"),
        "the stale plan's deletion was never made"
    );
}

#[test]
fn without_a_terminal_or_over_max_deletes_nothing_changes() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, &many(2, 3));
    let m = env.manifest.to_str().unwrap();

    let no_tty: Out = env.timctl(&["apply", "-f", m]).output().unwrap().into();
    assert_eq!(no_tty.code, Some(1), "{}", no_tty.all());
    assert!(
        no_tty.stderr.contains("standard input is not a terminal"),
        "{}",
        no_tty.all()
    );

    let over = env.apply(&["--max-deletes", "5"]);
    assert_eq!(over.code, Some(1), "{}", over.all());
    assert!(over.stderr.contains("--max-deletes 5"), "{}", over.all());

    assert_eq!(requests(&fake), 0, "nothing was called");
    assert!(!env.state.exists(), "no state was created");

    // At the limit it goes ahead.
    let at = env.apply(&["--max-deletes", "6"]);
    assert_eq!(at.code, Some(0), "{}", at.all());
    assert_eq!(fake.deletions().len(), 6);
}

/// Runs `timctl apply` on a pseudo-terminal (util-linux `script`), typing `answer`.
fn apply_on_a_terminal(env: &Env, answer: &str) -> Out {
    let bin = timctl_tests::timctl_bin();
    let line = format!("{} apply -f {}", bin.display(), env.manifest.display());
    let cmd = env.timctl(&[]);
    // `script` runs `line` on a new pty; what we write to its stdin is typed there.
    let mut child = std::process::Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env_remove("TIMCTL_USERSIG")
        .env_remove("TIMCTL_SECRET_KEY_FILE")
        .current_dir(env.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` is installed");
    // Type the answer only once the question is on the screen, as a person would.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{answer}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap().into()
}

#[test]
fn on_a_terminal_yes_proceeds_and_anything_else_changes_nothing() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);

    let no = apply_on_a_terminal(&env, "y");
    assert!(
        no.stdout.contains("Do you want to perform these actions?")
            && no
                .stdout
                .contains("There is no undo. Only 'yes' will be accepted to approve."),
        "{}",
        no.all()
    );
    assert!(no.stdout.contains("apply cancelled"), "{}", no.all());
    assert_eq!(no.code, Some(1), "{}", no.all());
    assert_eq!(requests(&fake), 0);
    assert!(!env.state.exists());

    let yes = apply_on_a_terminal(&env, "yes");
    assert_eq!(yes.code, Some(0), "{}", yes.all());
    assert!(
        yes.stdout
            .contains("Apply complete: 3 deleted, 0 forgotten, 0 failed."),
        "{}",
        yes.all()
    );
    assert_eq!(fake.deletions().len(), 3);
    assert_eq!(env.entries().len(), 3);
}

#[test]
fn item_failures_are_listed_and_only_they_are_retried() {
    let fake = Fake::start(|c| {
        c.users.insert("u3".into(), 50002);
        c.users.insert("u7".into(), 50002);
    });
    let env = Env::new(&fake, &many(10, 3));
    let out = env.apply(&[]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stdout
            .ends_with("Apply complete: 24 deleted, 0 forgotten, 6 failed.\n"),
        "{}",
        out.all()
    );
    for u in ["u3", "u7"] {
        for p in ["p0", "p1", "p2"] {
            let line = format!("failed: {u} → user:{p}: 50002 (");
            assert!(out.stderr.contains(&line), "{line} in\n{}", out.all());
        }
    }
    assert_eq!(out.stderr.matches("failed: ").count(), 6, "{}", out.all());
    assert_eq!(env.entries().len(), 24);

    // Fixed on the server's side: the next apply makes only the six failed calls.
    fake.update(|c| c.users.clear());
    let before = fake.calls().len();
    let again = env.apply(&[]);
    assert_eq!(again.code, Some(0), "{}", again.all());
    let retried: Vec<_> = fake.calls()[before..]
        .iter()
        .map(|c| c.key.from.clone())
        .collect();
    assert_eq!(retried.len(), 6, "{retried:?}");
    assert!(
        retried.iter().all(|f| f == "u3" || f == "u7"),
        "{retried:?}"
    );
    assert_eq!(env.entries().len(), 30);
    assert_eq!(fake.deletions().len(), 30);
}

#[test]
fn users_that_do_not_exist_count_as_done_and_are_named() {
    let fake = Fake::start(|c| {
        c.users.insert("ghost".into(), 50001);
    });
    let env = Env::new(
        &fake,
        &format!("{THREE}  ghost:\n    - user: bob\n    - user: carol\n"),
    );
    let out = env.apply(&[]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stderr.contains("warning: 1 user does not exist (50001)")
            && out.stderr.contains(": ghost.")
            // Both were one-to-one: 50001 may have named bob or carol rather than ghost.
            && out.stderr.contains("warning: 2 of these were one-to-one conversations"),
        "{}",
        out.all()
    );
    assert!(
        out.stdout
            .ends_with("Apply complete: 3 deleted, 2 already absent, 0 forgotten, 0 failed.\n"),
        "{}",
        out.all()
    );
    let entries = env.entries();
    assert!(entries.contains(&("ghost".into(), "user:bob".into(), false)));
    assert!(entries.contains(&("ghost".into(), "user:carol".into(), false)));
    let before = requests(&fake);
    assert_eq!(env.apply(&[]).code, Some(0));
    assert_eq!(requests(&fake), before, "recorded: not called again");
}

#[test]
fn when_every_call_fails_the_same_way_apply_stops_early() {
    let fake = Fake::start(|c| c.fail_all = Some(50002));
    let env = Env::new(&fake, &many(30, 10));
    let out = env.apply(&["--concurrency", "8"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let calls = fake.calls().len();
    assert!(
        (45..=60).contains(&calls),
        "stops after the failure pattern, with only in-flight calls after it: {calls} of 300"
    );
    assert!(
        out.stderr.contains("failed with code 50002; stopping"),
        "{}",
        out.all()
    );
    assert!(out.stderr.contains("were not started"), "{}", out.all());
    assert!(!env.entries().iter().any(|_| true), "nothing was deleted");
}

/// One fatal message, at most the in-flight calls, exit 1.
fn assert_fatal(fake: &Fake, out: &Out, concurrency: u64, says: &str) {
    assert_eq!(out.code, Some(1), "{}", out.all());
    let n = fake.stats().requests;
    assert!(
        (1..=concurrency).contains(&n),
        "at most the calls in flight ({concurrency}) were made: {n}"
    );
    assert!(out.stderr.contains(says), "{says:?} in\n{}", out.all());
    assert_eq!(
        out.stderr.matches(says).count(),
        1,
        "said once, not also in a log line:\n{}",
        out.all()
    );
    assert_eq!(
        out.stderr.matches("Error:").count(),
        1,
        "one message, not one per item:\n{}",
        out.all()
    );
    assert!(!out.stderr.contains("failed: "), "{}", out.all());
}

#[test]
fn a_wrong_key_stops_at_once_with_one_message() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, &many(20, 10));
    let mut cmd = env.timctl(&[
        "apply",
        "-f",
        env.manifest.to_str().unwrap(),
        "--auto-approve",
        "--concurrency",
        "4",
    ]);
    cmd.env("TIMCTL_SECRET_KEY", "not-the-app-key");
    let out: Out = cmd.output().unwrap().into();
    assert_fatal(&fake, &out, 4, "TIMCTL_SECRET_KEY");
    assert!(fake.deletions().is_empty());
    assert!(env.entries().is_empty());
}

#[test]
fn an_expired_usersig_stops_at_once_with_one_message() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, &many(20, 10));
    let key = timctl_core::usersig::SecretKey::new(KEY).unwrap();
    let now = jiff::Timestamp::now().as_second() as u64;
    // Made two hours ago, valid for one.
    let sig = timctl_core::usersig::make(APP, "administrator", &key, now - 7200, 3600);
    let mut cmd = env.timctl(&[
        "apply",
        "-f",
        env.manifest.to_str().unwrap(),
        "--auto-approve",
        "--concurrency",
        "4",
    ]);
    cmd.env_remove("TIMCTL_SECRET_KEY")
        .env("TIMCTL_USERSIG", &sig);
    let out: Out = cmd.output().unwrap().into();
    assert_fatal(&fake, &out, 4, "The UserSig has expired (70001)");
    assert!(!out.stderr.contains(&sig) && !out.stdout.contains(&sig));
}

#[test]
fn json_prints_one_event_per_line_ending_with_the_summary() {
    let fake = Fake::start(|c| {
        c.users.insert("u1".into(), 50002);
        c.users.insert("u2".into(), 50001);
    });
    let env = Env::new(&fake, &many(4, 2));
    let out = env.apply(&["--json"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let events = events(&out.stdout);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"planned"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"summary"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "deleted").count(), 6);
    assert_eq!(kinds.iter().filter(|k| **k == "failed").count(), 2);
    assert_eq!(events[0]["delete"], 8);
    let failed = events.iter().find(|e| e["event"] == "failed").unwrap();
    assert_eq!(failed["from"], "u1");
    assert_eq!(failed["type"], "user");
    assert_eq!(failed["code"], 50002);
    let absent: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "deleted" && e["already_absent"] == true)
        .map(|e| e["from"].as_str().unwrap())
        .collect();
    assert_eq!(absent, ["u2", "u2"]);
    let summary = events.last().unwrap();
    assert_eq!(summary["deleted"], 4);
    assert_eq!(summary["already_absent"], 2);
    assert_eq!(summary["failed"], 2);
    assert_eq!(summary["missing_users"], serde_json::json!(["u2"]));
    assert!(
        !out.stdout.contains("Apply complete"),
        "--json prints only events on stdout"
    );
}

#[test]
fn a_second_apply_is_refused_naming_the_holder() {
    // Slow enough that the first apply still holds the lock when the second starts.
    let fake = Fake::start(|c| {
        c.latency = (
            std::time::Duration::from_millis(100),
            std::time::Duration::from_millis(100),
        )
    });
    let env = Env::new(&fake, &many(5, 6));
    let m = env.manifest.to_str().unwrap();
    let mut first = env
        .timctl(&["apply", "-f", m, "--auto-approve", "--rate", "10"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The first holds the lock once it has started calling.
    fake.wait_until("the first apply never called", |f| f.stats().requests > 0);
    let second: Out = env
        .timctl(&["apply", "-f", m, "--auto-approve"])
        .output()
        .unwrap()
        .into();
    let pid = first.id();
    let status = first.wait().unwrap();
    assert_eq!(second.code, Some(1), "{}", second.all());
    assert!(second.stderr.contains("locked"), "{}", second.all());
    assert!(
        second.stderr.contains(&pid.to_string()) && second.stderr.contains("apply"),
        "names the holder (pid {pid}, apply):\n{}",
        second.all()
    );
    assert_eq!(status.code(), Some(0));
    let per = fake.calls_per_conversation();
    assert_eq!(per.len(), 30);
    assert!(per.values().all(|n| *n == 1), "the second made no call");
}

#[test]
fn no_secret_in_output_the_state_or_a_plan_file() {
    let fake = Fake::start(|c| {
        c.fault_rate = 0.3;
        c.faults = vec![
            timctl_tests::Fault::Code(50004),
            timctl_tests::Fault::Http502,
            timctl_tests::Fault::Drop,
        ];
        c.users.insert("u1".into(), 50002);
    });
    let env = Env::new(&fake, &many(4, 3));
    let key = timctl_core::usersig::SecretKey::new(KEY).unwrap();
    let now = jiff::Timestamp::now().as_second() as u64;
    let sig = timctl_core::usersig::make(APP, "administrator", &key, now, 3600);
    let plan_file = env.dir.path().join("plan.json");
    let mut outs = vec![env.plan(&["--out", plan_file.to_str().unwrap(), "-v"])];
    // With the key, verbose and in JSON; then with a ready UserSig.
    outs.push(
        env.timctl(&["apply", plan_file.to_str().unwrap(), "-v", "--json"])
            .output()
            .unwrap()
            .into(),
    );
    fake.update(|c| c.users.clear());
    let mut cmd = env.timctl(&[
        "apply",
        "-f",
        env.manifest.to_str().unwrap(),
        "--auto-approve",
        "-v",
    ]);
    cmd.env_remove("TIMCTL_SECRET_KEY")
        .env("TIMCTL_USERSIG", &sig);
    outs.push(cmd.output().unwrap().into());
    assert_eq!(outs[2].code, Some(0), "{}", outs[2].all());
    assert_eq!(fake.deletions().len(), 12);

    for out in &outs {
        for secret in [KEY, sig.as_str(), "usersig="] {
            assert!(!out.all().contains(secret), "{secret:?} in\n{}", out.all());
        }
    }
    let files = all_bytes(env.dir.path());
    assert!(files.iter().any(|(p, _)| *p == env.state));
    assert!(files.iter().any(|(p, _)| *p == plan_file));
    for (path, bytes) in files {
        for secret in [KEY, sig.as_str(), "usersig="] {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "{secret:?} in {}",
                path.display()
            );
        }
    }
}

#[test]
fn refusals_create_no_state_directory_and_no_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("new").join("state.db");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/timctl.yaml");
    for args in [
        // No terminal on stdin and no --auto-approve.
        &["apply", "-f", example][..],
        &[
            "apply",
            "-f",
            example,
            "--auto-approve",
            "--max-deletes",
            "2",
        ],
        &["apply", "-f", "does-not-exist.yaml", "--auto-approve"][..],
        &["apply", "no-such-plan.json"],
        &["apply", "--user", "bad\tid", "--auto-approve"],
        &["apply", "--rate", "4000000000", "--auto-approve"],
    ] {
        let out = timctl_tests::timctl()
            .args(args)
            .stdin(std::process::Stdio::null())
            .arg("--state")
            .arg(&state)
            .env("TIMCTL_SECRET_KEY", "some-key")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "timctl {args:?}");
        assert!(
            !dir.path().join("new").exists(),
            "timctl {args:?} wrote something"
        );
    }
}

#[test]
fn a_run_of_a_few_seconds_reports_progress() {
    // 500 deletions at 200/s take about 2.5 s: at least one progress report, every 2 s.
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, &many(50, 10));
    let out = env.apply(&["--json", "--rate", "200"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let progress: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "progress")
        .collect();
    assert!(!progress.is_empty(), "no progress event:\n{}", out.stdout);
    assert_eq!(progress[0]["total"], 500);
    assert!(progress[0]["done"].as_u64().unwrap() > 0);

    // Without a terminal and without --json: a short line on stderr instead.
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, &many(50, 10));
    let out = env.apply(&["--rate", "200"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stderr.contains("Progress: "), "{}", out.all());
    assert!(out.stderr.contains("/500 done"), "{}", out.all());
}

/// `-vv` (or `TIMCTL_LOG`) says at the end how long recording took: how many batches and
/// deletions, and the milliseconds the state's writes took, so an operator can tell whether
/// the state is what holds a run back (and the PostgreSQL apply benchmark reads it).
#[test]
fn apply_says_at_debug_level_how_long_recording_took() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, &many(3, 4));
    let out: Out = env
        .timctl(&[
            "apply",
            "-f",
            env.manifest.to_str().unwrap(),
            "--auto-approve",
            "-vv",
        ])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, Some(0), "{}", out.all());
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("recorded confirmed deletions"))
        .unwrap_or_else(|| panic!("no recording line: {}", out.all()));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .parse()
            .unwrap()
    };
    assert_eq!(field("deletions"), 12, "{line}");
    assert!(field("batches") >= 1, "{line}");
    // Milliseconds are present and a number; their value is the machine's.
    field("recording_ms");
    assert_eq!(env.entries().len(), 12);
    assert!(!out.all().contains(KEY), "the debug log holds no secret");
    assert!(
        !out.all().contains("usersig="),
        "nor a signed URL: {}",
        out.all()
    );
}
