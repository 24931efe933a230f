//! The state's history end to end: the real binary against fake-tim, with the state in SQLite
//! and in PostgreSQL (a throwaway cluster, a fresh database per test). Conversations come back
//! through fake-tim's `send_message`, as a new message brings them back on the real server.

mod apply_common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;

use apply_common::{Env, Fake, Out, THREE, many, wait_for};
use serde_json::Value;
use timctl_tests::FakePeer;
use timctl_tests::pg::PgCluster;

/// Where a test's state lives.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// An env of `absent` on `backend`: the default SQLite file, or a fresh database.
fn env(fake: &Fake, absent: &str, backend: Backend) -> Env {
    let mut env = Env::new(fake, absent);
    if let Backend::Postgres = backend {
        let cluster = PgCluster::shared();
        env.state = PathBuf::from(cluster.url_with_password(&cluster.database()));
    }
    env
}

/// A test per backend, each calling `$case(Backend)`.
macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $case() { super::$case(super::Backend::Sqlite) })*
        }
        mod postgres {
            $(#[test] fn $case() { super::$case(super::Backend::Postgres) })*
        }
    };
}

both_backends!(
    a_conversation_that_comes_back_is_deleted_again_in_the_history_only,
    records_forgets_removals_and_migrations_are_events_and_runs,
    a_killed_apply_leaves_an_event_for_each_recorded_change_and_no_other,
    prune_history_removes_exactly_the_older_events_and_records_itself,
);

fn ok(out: Out) -> Out {
    assert_eq!(out.code, Some(0), "{}", out.all());
    out
}

/// Parses JSON Lines, checking that every line carries `format_version` 1.
fn lines(out: &Out) -> Vec<Value> {
    out.stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(v["format_version"], 1, "{l}");
            v
        })
        .collect()
}

impl Env {
    /// `state history --json ARGS`, oldest first, as (action, reason, from, type:peer).
    fn story(&self, args: &[&str]) -> Vec<(String, String, String, String)> {
        let mut events = self.history(args);
        events.reverse();
        events
            .iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap().to_owned();
                (
                    s("action"),
                    s("reason"),
                    s("from"),
                    format!("{}:{}", s("type"), s("peer")),
                )
            })
            .collect()
    }

    /// `state history --json ARGS`, newest first.
    fn history(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["state", "history", "--json"];
        all.extend_from_slice(args);
        lines(&ok(self.timctl(&all).output().unwrap().into()))
    }

    /// `state runs --json --limit 0`, newest first.
    fn runs(&self) -> Vec<Value> {
        lines(&ok(self
            .timctl(&["state", "runs", "--json", "--limit", "0"])
            .output()
            .unwrap()
            .into()))
    }
}

fn e4(a: &str, r: &str, f: &str, p: &str) -> (String, String, String, String) {
    (a.into(), r.into(), f.into(), p.into())
}

/// The auditor's question: when was it deleted, by which run, and how often did it come back.
/// Re-deleting a conversation that came back appends history and leaves the entries and the
/// serial as they were, so a plan saved before still applies.
fn a_conversation_that_comes_back_is_deleted_again_in_the_history_only(backend: Backend) {
    let fake = Fake::start(|_| {});
    let env = env(&fake, THREE, backend);
    ok(env.apply(&[]));
    let entries = env.entries();
    let state = env.state_ref().unwrap();
    // A plan saved now, from a manifest that names one more conversation.
    let more = env.dir.path().join("more.yaml");
    std::fs::write(
        &more,
        apply_common::manifest_text(&format!("{THREE}  erin:\n    - user: frank\n")),
    )
    .unwrap();
    let saved = env.dir.path().join("saved.json");
    ok(env
        .timctl(&[
            "plan",
            "-f",
            more.to_str().unwrap(),
            "--out",
            saved.to_str().unwrap(),
        ])
        .output()
        .unwrap()
        .into());

    // Both of alice's conversations come back; apply --refresh deletes them again, twice.
    for _ in 0..2 {
        fake.send_message("alice", FakePeer::user("bob"));
        fake.send_message("alice", FakePeer::group("@TGS#2C5SZEAEF"));
        let out = ok(env.apply(&["--refresh"]));
        assert!(out.stdout.contains("2 deleted"), "{}", out.all());
        assert_eq!(env.entries(), entries, "the entries are as they were");
        assert_eq!(env.state_ref().unwrap(), state, "the serial did not move");
    }
    assert!(fake.conversations("alice").is_empty());

    let story = env.story(&["--user", "alice", "--peer", "user:bob"]);
    assert_eq!(
        story,
        [
            e4("deleted", "new", "alice", "user:bob"),
            e4("deleted", "came_back", "alice", "user:bob"),
            e4("deleted", "came_back", "alice", "user:bob"),
        ]
    );
    let events = env.history(&["--user", "alice"]);
    assert_eq!(events.len(), 6);
    let runs = env.runs();
    assert_eq!(runs.len(), 3);
    // Newest first: the last re-deletions belong to the last run, which records them.
    assert_eq!(events[0]["run"], runs[0]["run"]);
    assert_eq!(runs[0]["counts"]["deleted"], 2);
    assert!(
        runs.iter()
            .all(|r| r["command"] == "apply" && r["ended_at"].is_string()),
        "{runs:?}"
    );
    let at = events[0]["at"].as_str().unwrap();
    assert!(
        at.ends_with('Z') && at.len() == "2026-01-31T12:00:00.000Z".len(),
        "UTC with milliseconds: {at}"
    );

    // The plan saved before the re-deletions still applies.
    let out = ok(env
        .timctl(&["apply", saved.to_str().unwrap()])
        .output()
        .unwrap()
        .into());
    assert!(out.stdout.contains("1 deleted"), "{}", out.all());
    assert_eq!(
        env.story(&["--user", "erin"]),
        [e4("deleted", "new", "erin", "user:frank")]
    );
}

/// Records (`absent`), forgets, `state rm` and `state migrate` are events and runs with their
/// commands; the filters narrow as documented.
fn records_forgets_removals_and_migrations_are_events_and_runs(backend: Backend) {
    let fake = Fake::start(|_| {});
    fake.seed_conversations(
        "alice",
        [FakePeer::user("bob"), FakePeer::group("@TGS#2C5SZEAEF")],
        false,
    );
    let env = env(&fake, THREE, backend);
    ok(env.apply(&["--refresh"]));
    // Just after the first apply's newest event.
    let newest: jiff::Timestamp = env.history(&[])[0]["at"].as_str().unwrap().parse().unwrap();
    let after_first = (newest + jiff::SignedDuration::from_millis(1)).to_string();
    std::thread::sleep(std::time::Duration::from_millis(20));
    // carol is no longer in the manifest: her entry is forgotten.
    env.write_manifest(
        "  alice:\n    - user: bob\n      clear_roaming: true\n    - group: \"@TGS#2C5SZEAEF\"\n",
    );
    ok(env.apply(&[]));
    ok(env
        .timctl(&["state", "rm", "alice", "group:@TGS#2C5SZEAEF"])
        .output()
        .unwrap()
        .into());
    let mut story = env.story(&["--limit", "0"]);
    // The record comes first (it is at the time the list was read); one batch's deletions are
    // in the order their calls were confirmed.
    story[1..3].sort();
    assert_eq!(
        story,
        [
            e4("recorded", "absent", "carol", "user:dave"),
            e4("deleted", "present", "alice", "group:@TGS#2C5SZEAEF"),
            e4("deleted", "present", "alice", "user:bob"),
            e4("forgotten", "not_in_manifest", "carol", "user:dave"),
            e4("removed", "requested", "alice", "group:@TGS#2C5SZEAEF"),
        ]
    );
    let runs = env.runs();
    let commands: Vec<&str> = runs
        .iter()
        .map(|r| r["command"].as_str().unwrap())
        .collect();
    assert_eq!(commands, ["state rm", "apply", "apply"]);
    assert_eq!(runs[0]["counts"]["removed"], 1);
    assert_eq!(runs[2]["counts"]["recorded"], 1);
    // Filters.
    assert_eq!(
        env.story(&["--run", runs[1]["run"].as_str().unwrap()]),
        [e4("forgotten", "not_in_manifest", "carol", "user:dave")]
    );
    assert_eq!(env.history(&["--peer", "user:dave"]).len(), 2);
    assert_eq!(env.history(&["--since", &after_first]).len(), 2);
    assert_eq!(env.history(&["--until", &after_first]).len(), 3);
    assert_eq!(env.history(&["--since", "1h"]).len(), 5);
    assert_eq!(env.history(&["--until", "1h"]).len(), 0);
    assert_eq!(env.history(&["--limit", "2"]).len(), 2);
    assert_eq!(env.history(&["--user", "nobody"]).len(), 0);
    let table: Out = ok(env.timctl(&["state", "history"]).output().unwrap().into());
    assert!(table.stdout.starts_with("AT "), "{}", table.stdout);
    assert!(table.stdout.contains("not_in_manifest"), "{}", table.stdout);
    let bad: Out = env
        .timctl(&["state", "history", "--since", "last tuesday"])
        .output()
        .unwrap()
        .into();
    assert_eq!(bad.code, Some(1), "{}", bad.all());
    assert!(bad.stderr.contains("RFC 3339"), "{}", bad.all());

    // Migrate to the other backend: the history and runs go along, and the copy is a run.
    let to = match backend {
        Backend::Sqlite => {
            let cluster = PgCluster::shared();
            cluster.url_with_password(&cluster.database())
        }
        Backend::Postgres => env
            .dir
            .path()
            .join("copy/state.db")
            .to_str()
            .unwrap()
            .to_owned(),
    };
    ok(env
        .timctl(&["state", "migrate", "--to", &to])
        .output()
        .unwrap()
        .into());
    let source_history = env.history(&["--limit", "0"]);
    let copy = Env {
        state: PathBuf::from(&to),
        ..Env::new(&fake, THREE)
    };
    assert_eq!(copy.history(&["--limit", "0"]), source_history);
    let copied_runs = copy.runs();
    assert_eq!(copied_runs[0]["command"], "state migrate");
    assert_eq!(copied_runs[0]["counts"]["events"], 5);
    assert_eq!(copied_runs[1..], runs[..]);
}

/// SIGKILL mid-apply: every event belongs to a recorded entry change, none is missing for a
/// recorded deletion, none exists for an unrecorded one.
fn a_killed_apply_leaves_an_event_for_each_recorded_change_and_no_other(backend: Backend) {
    let fake = Fake::start(|c| {
        c.latency = (
            std::time::Duration::from_millis(5),
            std::time::Duration::from_millis(20),
        )
    });
    let env = env(&fake, &many(10, 100), backend);
    let mut child = env.spawn_apply(&["--rate", "300"]);
    wait_for("the apply never recorded three batches", || {
        env.state_ref().is_some_and(|(_, serial)| serial >= 4)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let entries = env.entries();
    assert!(
        !entries.is_empty() && entries.len() < 1_000,
        "{}",
        entries.len()
    );
    let mut events: Vec<(String, String, bool)> = env
        .history(&["--limit", "0"])
        .iter()
        .map(|e| {
            assert_eq!(e["action"], "deleted");
            (
                e["from"].as_str().unwrap().to_owned(),
                format!(
                    "{}:{}",
                    e["type"].as_str().unwrap(),
                    e["peer"].as_str().unwrap()
                ),
                e["clear_roaming"].as_bool().unwrap(),
            )
        })
        .collect();
    events.sort();
    assert_eq!(
        events, entries,
        "one event per recorded entry, and no other"
    );
    // The next apply finishes, and the history follows.
    ok(env.apply(&[]));
    assert_eq!(env.history(&["--limit", "0"]).len(), 1_000);
    let runs = env.runs();
    assert_eq!(runs.len(), 2);
    assert!(runs[1]["ended_at"].is_null(), "the killed run never ended");
}

/// `state prune-history --before` removes exactly the older events, without the writer lock,
/// and records itself; `--dry-run` counts and changes nothing.
fn prune_history_removes_exactly_the_older_events_and_records_itself(backend: Backend) {
    let fake = Fake::start(|_| {});
    let env = env(&fake, THREE, backend);
    ok(env.apply(&[]));
    std::thread::sleep(std::time::Duration::from_millis(20));
    fake.send_message("carol", FakePeer::user("dave"));
    ok(env.apply(&["--refresh"]));
    let events = env.history(&[]);
    assert_eq!(events.len(), 4);
    let cutoff = events[0]["at"].as_str().unwrap().to_owned();
    let dry: Out = ok(env
        .timctl(&["state", "prune-history", "--before", &cutoff, "--dry-run"])
        .output()
        .unwrap()
        .into());
    assert!(
        dry.stdout.contains("Would delete 3 events"),
        "{}",
        dry.all()
    );
    assert_eq!(env.history(&[]).len(), 4);
    let serial = env.state_ref().unwrap();
    let out: Out = ok(env
        .timctl(&["state", "prune-history", "--before", &cutoff])
        .output()
        .unwrap()
        .into());
    assert!(out.stdout.contains("Deleted 3 events"), "{}", out.all());
    assert_eq!(
        env.story(&[]),
        [e4("deleted", "came_back", "carol", "user:dave")]
    );
    assert_eq!(
        env.state_ref().unwrap(),
        serial,
        "the entries are untouched"
    );
    assert_eq!(env.entries().len(), 3);
    let runs = env.runs();
    assert_eq!(runs[0]["command"], "state prune-history");
    assert_eq!(runs[0]["counts"]["pruned"], 3);
    assert_eq!(runs.len(), 3, "the dry run is no run");
}

#[test]
fn runs_carry_the_ci_job_url_of_github_actions_and_gitlab_ci() {
    let fake = Fake::start(|_| {});
    let env = env(&fake, THREE, Backend::Sqlite);
    // Whatever CI runs these tests.
    let timctl = |args: &[&str]| {
        let mut cmd = env.timctl(args);
        for var in ["GITHUB_ACTIONS", "GITLAB_CI", "CI_JOB_URL", "GITHUB_RUN_ID"] {
            cmd.env_remove(var);
        }
        cmd
    };
    ok(timctl(&["apply", "--auto-approve"])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_SERVER_URL", "https://github.com")
        .env("GITHUB_REPOSITORY", "octo/moderation")
        .env("GITHUB_RUN_ID", "4242")
        .output()
        .unwrap()
        .into());
    ok(timctl(&["state", "rm", "carol", "user:dave"])
        .env("GITLAB_CI", "true")
        .env(
            "CI_JOB_URL",
            "https://gitlab.example.com/octo/moderation/-/jobs/77",
        )
        .output()
        .unwrap()
        .into());
    ok(timctl(&["state", "rm", "alice", "user:bob"])
        .env("CI_JOB_URL", "https://gitlab.example.com/not-gitlab-ci")
        .output()
        .unwrap()
        .into());
    let runs = env.runs();
    let urls: Vec<&Value> = runs.iter().map(|r| &r["ci_job_url"]).collect();
    assert_eq!(
        urls,
        [
            &Value::Null,
            &Value::from("https://gitlab.example.com/octo/moderation/-/jobs/77"),
            &Value::from("https://github.com/octo/moderation/actions/runs/4242"),
        ]
    );
    for run in &runs {
        assert!(run["host"].is_string(), "{run}");
        assert_eq!(run["timctl_version"], env!("CARGO_PKG_VERSION"));
    }
    let table: Out = ok(env.timctl(&["state", "runs"]).output().unwrap().into());
    assert!(
        table.stdout.contains("actions/runs/4242"),
        "{}",
        table.stdout
    );
}

/// cron, systemd units and containers often run without `USER`: the run still names who ran it,
/// from the process's user ID.
#[test]
fn a_run_without_user_in_the_environment_still_names_its_os_user() {
    let fake = Fake::start(|_| {});
    let env = env(&fake, THREE, Backend::Sqlite);
    let mut apply = env.timctl(&["apply", "--auto-approve"]);
    for var in ["USER", "LOGNAME", "USERNAME"] {
        apply.env_remove(var);
    }
    ok(apply.output().unwrap().into());
    let runs = env.runs();
    let expected = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            let uid = rustix::process::getuid().as_raw().to_string();
            passwd.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid).then(|| f[0].to_owned())
            })
        })
        .unwrap_or_else(|| format!("uid {}", rustix::process::getuid().as_raw()));
    assert_eq!(runs[0]["os_user"], Value::from(expected), "{}", runs[0]);
}

#[test]
fn a_closed_stdout_ends_state_history_quietly() {
    let fake = Fake::start(|c| c.limit_per_second = 100_000);
    // More rows than a pipe holds.
    let env = env(&fake, &many(10, 100), Backend::Sqlite);
    ok(env.apply(&["--rate", "1000"]));
    for args in [
        &["state", "history", "--limit", "0"][..],
        &["state", "history", "--json", "--limit", "0"],
    ] {
        let mut child = env
            .timctl(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
