//! What `timctl apply` prints for pipelines and people (issue 24, items 3 and 5), end to end
//! with the real binary, fake-tim over loopback and a real SQLite state: JSON events stamped
//! with their format version, time and run, refusals that still end with `error` and
//! `summary`, one vocabulary in text and JSON, the recap of failures, "stopped" after a
//! signal, `-q`, and the progress line without a terminal.

mod apply_common;

use std::time::Duration;

use apply_common::*;

#[test]
fn every_json_event_carries_its_format_version_time_and_the_runs_id() {
    let fake = Fake::start(|c| {
        c.users.insert("u1".into(), 50001);
    });
    let env = Env::new(&fake, &many(3, 2));
    let out = env.apply(&["--json"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let events = events(&out.stdout);
    assert!(events.len() >= 8, "{}", out.all());
    let run = events[0]["run"].as_str().expect("a run ID").to_owned();
    for e in &events {
        assert_eq!(e["format_version"], 1, "{e}");
        assert_eq!(e["run"], run.as_str(), "one run for every event: {e}");
        let at = e["at"].as_str().expect("at");
        at.parse::<jiff::Timestamp>()
            .unwrap_or_else(|err| panic!("{at} is not RFC 3339: {err}"));
    }
    // The history names the run by the same ID.
    let runs = env.timctl(&["state", "runs", "--json"]).output().unwrap();
    let runs = String::from_utf8(runs.stdout).unwrap();
    assert!(runs.contains(&format!("\"run\":\"{run}\"")), "{runs}");
    // Text and JSON count the same things under the same names: u1's two are already absent.
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(
        (
            summary["deleted"].as_u64(),
            summary["already_absent"].as_u64()
        ),
        (Some(4), Some(2))
    );
    let env = Env::new(&fake, &many(3, 2));
    let text = env.apply(&[]);
    assert!(
        text.stdout
            .ends_with("Apply complete: 4 deleted, 2 already absent, 0 forgotten, 0 failed.\n"),
        "{}",
        text.all()
    );
}

/// The last two events of a refused `--json` apply.
fn error_then_summary(out: &Out) -> String {
    assert_eq!(out.code, Some(1), "{}", out.all());
    let events = events(&out.stdout);
    let n = events.len();
    assert!(
        n >= 2,
        "a refused apply must still print events:\n{}",
        out.all()
    );
    assert_eq!(events[n - 2]["event"], "error", "{}", out.all());
    assert_eq!(events[n - 1]["event"], "summary", "{}", out.all());
    assert_eq!(events[n - 1]["format_version"], 1);
    assert_eq!(events[n - 1]["deleted"], 0);
    assert_eq!(events[n - 2]["run"], events[n - 1]["run"]);
    events[n - 2]["message"].as_str().unwrap().to_owned()
}

#[test]
fn a_refused_json_apply_still_ends_with_an_error_then_the_summary() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, &many(3, 2));
    let message = error_then_summary(&env.apply(&["--json", "--max-deletes", "2"]));
    assert!(message.contains("more than --max-deletes 2"), "{message}");

    // No approval: no terminal and no --auto-approve.
    let m = env.manifest.to_str().unwrap();
    let out: Out = env
        .timctl(&["apply", "-f", m, "--json"])
        .output()
        .unwrap()
        .into();
    let message = error_then_summary(&out);
    assert!(
        message.contains("refusing to apply without confirmation"),
        "{message}"
    );

    // A stale saved plan.
    let plan = env.dir.path().join("plan.json");
    let made = env.plan(&["--out", plan.to_str().unwrap()]);
    assert_eq!(made.code, Some(0), "{}", made.all());
    assert_eq!(env.apply(&[]).code, Some(0));
    let out: Out = env
        .timctl(&["apply", plan.to_str().unwrap(), "--json"])
        .output()
        .unwrap()
        .into();
    let message = error_then_summary(&out);
    assert!(message.contains("there is a state now"), "{message}");
    assert!(!out.stdout.contains(KEY) && !out.stderr.contains(KEY));
    assert_eq!(fake.deletions().len(), 6, "the refusals called nothing");
}

#[test]
fn state_list_and_validate_json_carry_a_format_version() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    let list = env.timctl(&["state", "list", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["format_version"], 1, "{list}");
    let m = env.manifest.to_str().unwrap();
    let valid = env
        .timctl(&["validate", "-f", m, "--format", "json"])
        .output()
        .unwrap();
    let valid: serde_json::Value = serde_json::from_slice(&valid.stdout).unwrap();
    assert_eq!(valid["format_version"], 1, "{valid}");
    assert_eq!(valid["valid"], true);
}

#[test]
fn failures_are_recapped_by_code_with_the_command_that_retries_them() {
    let fake = Fake::start(|c| {
        c.users.insert("u3".into(), 50002);
        c.users.insert("u7".into(), 50002);
    });
    let env = Env::new(&fake, &many(10, 3));
    let out = env.apply(&[]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    // Each failure line says its code once.
    assert!(
        out.stderr.contains("failed: u3 → user:p0: 50002 (")
            && !out.stderr.contains("(50002): 50002"),
        "{}",
        out.all()
    );
    assert!(
        out.stderr
            .contains("6 deletions failed; they are not in the state"),
        "{}",
        out.all()
    );
    let group = out
        .stderr
        .lines()
        .find(|l| l.starts_with("  6 × 50002 (Incorrect request parameter)"))
        .unwrap_or_else(|| panic!("no group line in\n{}", out.all()));
    // The first three to fail (calls run concurrently, so which ones varies), then a count.
    assert!(group.ends_with(" and 3 more"), "{group}");
    assert_eq!(group.matches(" → user:p").count(), 3, "{group}");
    let m = env.manifest.to_str().unwrap();
    let retry = format!("Retry them: timctl apply -f {m} --user u3 --user u7");
    assert!(out.stderr.contains(&retry), "{retry} in\n{}", out.all());
    // The command does what it says, once the server is fixed.
    fake.update(|c| c.users.clear());
    let again = env.apply(&["--user", "u3", "--user", "u7"]);
    assert_eq!(again.code, Some(0), "{}", again.all());
    assert_eq!(env.entries().len(), 30);
}

#[test]
fn an_interrupted_apply_says_stopped_never_complete() {
    let fake =
        Fake::start(|c| c.latency = (Duration::from_millis(200), Duration::from_millis(200)));
    let env = Env::new(&fake, &many(10, 10));
    let child = env.spawn_apply(&["--rate", "20"]);
    fake.wait_until("no call", |f| !f.calls().is_empty());
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let out: Out = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, Some(130), "{}", out.all());
    let last = out.stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("Apply stopped: "), "{}", out.all());
    assert!(last.contains(" not started."), "{}", out.all());
    assert!(!out.stdout.contains("Apply complete"), "{}", out.all());
}

#[test]
fn quiet_prints_only_the_last_line_not_the_plan() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    let out = env.apply(&["-q"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(
        out.stdout,
        "Apply complete: 3 deleted, 0 forgotten, 0 failed.\n",
        "{}",
        out.all()
    );
}

#[test]
fn without_a_terminal_each_progress_line_has_the_share_done_and_the_eta() {
    // 300 deletions at 100/s: about 3 s, so at least the line at 2 s.
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, &many(30, 10));
    let out = env.apply(&["--rate", "100"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("Progress: "))
        .collect();
    assert!(!lines.is_empty(), "{}", out.all());
    for line in lines {
        assert!(
            line.contains("/300 done (") && line.contains("%), "),
            "{line}"
        );
        assert!(line.contains(" per second, ETA "), "{line}");
    }
}
