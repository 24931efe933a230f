//! The state in PostgreSQL, end to end: the real `timctl` binary, fake-tim on loopback, and a
//! throwaway PostgreSQL cluster (one for this test binary, a fresh database per test).

mod apply_common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use apply_common::{Env, Fake, Out, THREE, many, wait_for};
use timctl_tests::pg::PgCluster;

/// An env whose state is a fresh database of the shared cluster, the password in the URL.
fn pg_env(fake: &Fake, absent: &str) -> (Env, String) {
    let cluster = PgCluster::shared();
    let db = cluster.database();
    let mut env = Env::new(fake, absent);
    env.state = PathBuf::from(cluster.url_with_password(&db));
    (env, db)
}

/// Asserts that no output shows the database password.
fn assert_no_password(out: &Out, password: &str) {
    assert!(
        !out.stdout.contains(password) && !out.stderr.contains(password),
        "the password leaked:\n{}",
        out.all()
    );
}

#[test]
fn apply_plan_and_list_with_the_state_in_postgres_write_nothing_to_disk() {
    let password = PgCluster::shared().password().to_owned();
    let fake = Fake::start(|_| {});
    let (env, db) = pg_env(&fake, THREE);
    let out = env.apply(&[]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_no_password(&out, &password);
    assert_eq!(env.entries().len(), 3);
    let (_, serial) = env.state_ref().unwrap();
    assert_eq!(serial, 2, "created, then one batch");
    let plan = env.plan(&[]);
    assert_eq!(plan.code, Some(0), "{}", plan.all());
    assert!(plan.stdout.contains("No changes"), "{}", plan.all());
    assert_no_password(&plan, &password);
    // A saved plan holds no password either.
    let planfile = env.dir.path().join("plan.json");
    let out = env.plan(&["--out", planfile.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let saved = std::fs::read_to_string(&planfile).unwrap();
    assert!(!saved.contains(&password));
    // Nothing of the state on the runner's disk: no .timctl/, no lock file.
    let files: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 2, "only the manifest and the plan: {files:?}");
    // state list names the state without its password.
    let out: Out = env.timctl(&["state", "list"]).output().unwrap().into();
    assert!(out.stdout.contains(&db), "{}", out.all());
    assert_no_password(&out, &password);
}

#[test]
fn a_second_apply_is_refused_then_finishes_after_the_holder_is_killed() {
    let fake =
        Fake::start(|c| c.latency = (Duration::from_millis(100), Duration::from_millis(100)));
    let (env, _) = pg_env(&fake, &many(5, 8));
    let m = env.manifest.to_str().unwrap();
    let mut first = env
        .timctl(&["apply", "-f", m, "--auto-approve", "--rate", "10"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // It holds the lock once it calls; wait until it has recorded a batch, too.
    wait_for("the first apply never recorded", || {
        env.state_ref().is_some_and(|(_, serial)| serial >= 2)
    });
    let second: Out = env
        .timctl(&["apply", "-f", m, "--auto-approve"])
        .output()
        .unwrap()
        .into();
    assert_eq!(second.code, Some(1), "{}", second.all());
    assert!(second.stderr.contains("locked"), "{}", second.all());
    // miette wraps the message: compare it as words.
    let words: Vec<&str> = second
        .stderr
        .split_whitespace()
        .filter(|w| *w != "|")
        .collect();
    let flat = words.join(" ");
    assert!(
        flat.contains(&format!("apply (pid {} on", first.id()))
            && flat.contains("database backend pid"),
        "names the holder:\n{}",
        second.all()
    );
    first.kill().unwrap();
    assert_eq!(first.wait().unwrap().code(), None, "killed before the end");
    let recorded_before: std::collections::BTreeSet<_> = env
        .entries()
        .into_iter()
        .map(|(from, peer, _)| (from, peer))
        .collect();
    assert!(
        recorded_before.len() < 40,
        "the holder was killed mid-apply"
    );
    // The killed holder's session ends, and its lock with it: the server notices the closed
    // connection within moments, so the next apply waits for that rather than race it.
    let third = env.apply(&["--lock-timeout", "30s"]);
    assert_eq!(third.code, Some(0), "{}", third.all());
    assert_eq!(env.entries().len(), 40, "every deletion recorded");
    let per = fake.calls_per_conversation();
    assert_eq!(per.len(), 40);
    for (conv, n) in per {
        let key = (conv.from.clone(), format!("user:{}", conv.peer));
        if recorded_before.contains(&key) {
            assert_eq!(n, 1, "{key:?} was recorded, so never sent again");
        } else {
            assert!(n <= 2, "{key:?} sent {n} times");
        }
    }
}

#[test]
fn migrate_sqlite_to_postgres_and_back_keeps_everything() {
    let cluster = PgCluster::shared();
    let password = cluster.password().to_owned();
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    assert_eq!(env.apply(&[]).code, Some(0));
    let sqlite_entries = env.entries();
    let sqlite_ref = env.state_ref().unwrap();
    let db = cluster.database();
    let url = cluster.url_with_password(&db);

    let out: Out = env
        .timctl(&["state", "migrate", "--to", &url])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_no_password(&out, &password);
    let mut in_pg = Env::new(&fake, THREE);
    in_pg.state = PathBuf::from(&url);
    assert_eq!(in_pg.entries(), sqlite_entries);
    assert_eq!(in_pg.state_ref().unwrap(), sqlite_ref);
    let plan = in_pg.plan(&[]);
    assert!(plan.stdout.contains("No changes"), "{}", plan.all());

    // Onto a state that exists: refused, nothing copied.
    let again: Out = env
        .timctl(&["state", "migrate", "--to", &url])
        .output()
        .unwrap()
        .into();
    assert_eq!(again.code, Some(1), "{}", again.all());
    assert!(again.stderr.contains("already holds"), "{}", again.all());
    assert_no_password(&again, &password);

    // And back to a new SQLite file.
    let copy = in_pg.dir.path().join("copy.db");
    let out: Out = in_pg
        .timctl(&["state", "migrate", "--to", copy.to_str().unwrap()])
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, Some(0), "{}", out.all());
    let mut back = Env::new(&fake, THREE);
    back.state = copy;
    assert_eq!(back.entries(), sqlite_entries);
    assert_eq!(back.state_ref().unwrap(), sqlite_ref);
    let plan = back.plan(&[]);
    assert!(plan.stdout.contains("No changes"), "{}", plan.all());
    assert_eq!(fake.stats().requests, 3, "migrating calls nothing");
}

#[test]
fn no_password_in_errors_wrong_password_or_unreachable_server() {
    let cluster = PgCluster::shared();
    let fake = Fake::start(|_| {});
    let db = cluster.database();
    let env = Env::new(&fake, THREE);
    let wrong = "Wr0ng-pw-7f3a";
    let bad_url = format!(
        "postgres://{}:{wrong}@127.0.0.1:{}/{db}?sslmode=disable",
        timctl_tests::pg::ROLE,
        cluster.port()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = format!(
        "postgres://{}:{wrong}@127.0.0.1:{port}/{db}?sslmode=disable&connect_timeout=5",
        timctl_tests::pg::ROLE
    );
    for (state, pgpassword, says) in [
        (bad_url.as_str(), None, "password authentication failed"),
        (
            cluster.url(&db).as_str(),
            Some(wrong),
            "password authentication failed",
        ),
        (unreachable.as_str(), None, "cannot connect"),
    ] {
        for args in [
            vec!["plan"],
            vec!["apply", "--auto-approve"],
            vec!["state", "list"],
        ] {
            let mut cmd = env.timctl(&args);
            cmd.env("TIMCTL_STATE", state);
            if let Some(pw) = pgpassword {
                cmd.env("PGPASSWORD", pw);
            }
            let out: Out = cmd.output().unwrap().into();
            assert_eq!(out.code, Some(1), "{}", out.all());
            assert!(out.stderr.contains(says), "{args:?}: {}", out.all());
            assert!(out.stderr.contains(&db), "names the state: {}", out.all());
            assert_no_password(&out, wrong);
        }
    }
    // Nor in --help, which shows the environment's values of other flags.
    let mut cmd = env.timctl(&["--help"]);
    cmd.env("TIMCTL_STATE", &bad_url);
    let out: Out = cmd.output().unwrap().into();
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("--state-name"), "{}", out.all());
    assert_no_password(&out, wrong);
    assert_eq!(fake.stats().requests, 0);
}

#[test]
fn state_commands_pick_the_app() {
    let fake = Fake::start(|_| {});
    let (env, _) = pg_env(&fake, THREE);
    assert_eq!(env.apply(&[]).code, Some(0));
    let url = env.state.to_str().unwrap().to_owned();
    // Away from the manifest: the only app in the database.
    let elsewhere = tempfile::tempdir().unwrap();
    let list = |args: &[&str]| -> Out {
        let mut cmd = env.timctl(args);
        cmd.current_dir(elsewhere.path()).env("TIMCTL_STATE", &url);
        cmd.output().unwrap().into()
    };
    let out = list(&["state", "list", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains("\"sdkappid\":1400000001"),
        "{}",
        out.all()
    );
    // A second app in the same database: now it must be named.
    let other = tempfile::tempdir().unwrap();
    let manifest = other.path().join("timctl.yaml");
    std::fs::write(
        &manifest,
        apply_common::manifest_text("  x:\n    - user: y\n").replace("1400000001", "1400000002"),
    )
    .unwrap();
    let other_fake = Fake::start(|c| c.sdkappid = 1_400_000_002);
    let mut cmd = env.timctl(&["apply", "--auto-approve", "-f", manifest.to_str().unwrap()]);
    cmd.env("TIMCTL_STATE", &url)
        .env("TIMCTL_ENDPOINT", other_fake.url());
    let out: Out = cmd.output().unwrap().into();
    assert_eq!(out.code, Some(0), "{}", out.all());
    let out = list(&["state", "list"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("1400000001") && out.stderr.contains("1400000002"),
        "names the apps: {}",
        out.all()
    );
    let out = list(&["state", "list", "--json", "--sdkappid", "1400000002"]);
    assert!(out.stdout.contains("\"from\":\"x\""), "{}", out.all());
    let out = list(&["state", "rm", "x", "user:y", "--sdkappid", "1400000002"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let out = list(&["state", "list", "--json", "-f", manifest.to_str().unwrap()]);
    assert!(out.stdout.contains("\"entries\":[]"), "{}", out.all());
}
