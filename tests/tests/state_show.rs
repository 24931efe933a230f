//! `state show FROM PEER` (one entry and its history) and `state list --user` (one user's
//! entries), through the binary against fake-tim and an SQLite state.

mod apply_common;

use apply_common::{Env, Fake, Out, THREE};
use timctl_tests::FakePeer;

fn ok(out: Out) -> Out {
    assert_eq!(out.code, Some(0), "{}", out.all());
    out
}

fn run(env: &Env, args: &[&str]) -> Out {
    ok(env.timctl(args).output().unwrap().into())
}

#[test]
fn state_show_prints_the_entry_then_its_history_newest_first() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    ok(env.apply(&[]));
    fake.send_message("alice", FakePeer::user("bob"));
    ok(env.apply(&["--refresh"]));

    let out = run(&env, &["state", "show", "alice", "user:bob"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("alice user:bob deleted ")
            && lines[0].ends_with("(roaming messages cleared)"),
        "{}",
        out.stdout
    );
    let history = out
        .stdout
        .split("History, newest first:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no history:\n{}", out.stdout));
    let rows: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{history}");
    assert!(
        rows[0].contains("came_back") && rows[1].contains(" new "),
        "{history}"
    );
    assert!(
        rows.iter()
            .all(|r| r.contains("alice") && r.contains("user:bob"))
    );

    // Removed from the state: no entry any more, and the history says what happened.
    run(&env, &["state", "rm", "alice", "user:bob"]);
    let out = run(&env, &["state", "show", "alice", "user:bob"]);
    assert!(
        out.stdout.starts_with("alice user:bob: not in the state"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("removed"), "{}", out.stdout);

    // Never recorded: no entry, no history.
    let out = run(&env, &["state", "show", "carol", "user:zed"]);
    assert!(
        out.stdout.contains("carol user:zed: not in the state"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("No history."), "{}", out.stdout);

    // A bad conversation is a usage error naming the form.
    let out: Out = env
        .timctl(&["state", "show", "carol", "zed"])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("user:ID or group:ID"), "{}", out.all());
}

#[test]
fn state_list_user_narrows_text_and_json_to_one_from_account() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    ok(env.apply(&[]));

    let out = run(&env, &["state", "list", "--user", "alice"]);
    assert!(out.stdout.contains("2 entries of alice."), "{}", out.stdout);
    assert!(
        out.stdout.contains("alice user:bob deleted"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("alice group:@TGS#2C5SZEAEF deleted"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("carol"), "{}", out.stdout);

    let out = run(&env, &["state", "list", "--user", "carol", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let entries = doc["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{doc}");
    assert_eq!(entries[0]["from"], "carol");
    // The whole state's serial, not a count of the user's entries.
    let all = run(&env, &["state", "list", "--json"]);
    let all: serde_json::Value = serde_json::from_str(&all.stdout).unwrap();
    assert_eq!(doc["serial"], all["serial"]);

    // A user with no entries: an empty list, not an error (the auditor may ask of anyone).
    let out = run(&env, &["state", "list", "--user", "nobody"]);
    assert!(
        out.stdout.contains("0 entries of nobody."),
        "{}",
        out.stdout
    );
}
