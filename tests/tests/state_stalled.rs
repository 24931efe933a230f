//! Issue 18.3 and 18.6: a state that stalls. Calls never outrun the state by more than about a
//! second of them (a PostgreSQL server stopped with SIGSTOP, an SQLite reader holding its
//! lock); SIGTERM ends the run by itself even when the state never answers; `connect_timeout`
//! bounds the whole connection to a server that accepts and never answers; a Unix socket
//! directory in `host=` with an empty host is taken, as libpq takes it. A test binary of its
//! own, because it freezes its cluster.

mod apply_common;

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use apply_common::{Env, Fake, Out, many, wait_for};
use timctl_tests::pg::PgCluster;

/// The apply's `--rate`: one second of calls, the most that may be confirmed and unrecorded.
const RATE: usize = 100;

/// Waits until the fake's count of deletions stops growing (the calls are held back), and
/// returns it. Without a bound on the calls, it grows until the whole plan is done.
fn settled_deletions(fake: &Fake) -> usize {
    let mut last = fake.deletions().len();
    loop {
        std::thread::sleep(Duration::from_millis(1500));
        let now = fake.deletions().len();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Waits for the child to exit by itself, for at most a minute (a hang fails the test).
fn exits_by_itself(mut child: Child) -> Out {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("timctl did not exit by itself after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap().into()
}

#[test]
fn a_frozen_postgres_holds_the_calls_back_and_sigterm_still_ends_the_run() {
    let cluster = PgCluster::start();
    let db = cluster.database();
    let fake = Fake::start(|c| c.latency = (Duration::from_millis(5), Duration::from_millis(10)));
    let mut env = Env::new(&fake, &many(20, 100));
    env.state = PathBuf::from(cluster.url_with_password(&db));
    let child = env.spawn_apply(&["--rate", &RATE.to_string()]);
    fake.wait_until("apply never called", |f| f.deletions().len() >= 200);
    let frozen = cluster.freeze();
    let during = settled_deletions(&fake);
    assert!(during < 2000, "the calls went on with the state frozen");

    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let out = exits_by_itself(child);
    assert_eq!(out.code, Some(143), "{}", out.all());
    assert!(out.stderr.contains("exiting now"), "{}", out.all());
    drop(frozen);

    // What the server deleted and the state does not hold is at most one second of calls.
    let recorded = env.entries().len();
    let deleted = fake.deletions().len();
    assert!(
        deleted - recorded <= RATE,
        "{deleted} deleted, {recorded} recorded"
    );
    let again = env.apply(&["--lock-timeout", "60s"]);
    assert_eq!(again.code, Some(0), "{}", again.all());
    assert_eq!(env.entries().len(), 2000);
}

#[test]
fn an_sqlite_reader_holding_its_lock_holds_the_calls_back() {
    let fake = Fake::start(|c| c.latency = (Duration::from_millis(5), Duration::from_millis(10)));
    let env = Env::new(&fake, &many(20, 100));
    let child = env.spawn_apply(&["--rate", &RATE.to_string()]);
    fake.wait_until("apply never called", |f| f.deletions().len() >= 200);
    wait_for("no state", || env.state.exists());
    // A reader in a transaction keeps a SHARED lock: no writer can commit until it ends.
    let reader = rusqlite::Connection::open(&env.state).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
        .unwrap();
    let during = settled_deletions(&fake);
    assert!(during < 2000, "the calls went on with the state locked");
    let recorded_during = env_entries_unlocked(&env, &reader);
    assert!(
        during - recorded_during <= RATE,
        "{during} deleted, {recorded_during} recorded while the state was locked"
    );
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    let out: Out = child.wait_with_output().unwrap().into();
    // The writer may have given up on the lock (exit 1) or got it in time (exit 0); either
    // way nothing confirmed is lost beyond what the next apply makes again.
    assert!(matches!(out.code, Some(0 | 1)), "{}", out.all());
    let again = env.apply(&[]);
    assert_eq!(again.code, Some(0), "{}", again.all());
    assert_eq!(env.entries().len(), 2000);
}

/// The entries as the reader holding the lock sees them (the committed ones).
fn env_entries_unlocked(_env: &Env, reader: &rusqlite::Connection) -> usize {
    reader
        .query_row("SELECT count(*) FROM entries", [], |r| r.get::<_, i64>(0))
        .unwrap() as usize
}

/// Issue 18.6: a server that accepts the connection and never answers (a stopped postmaster's
/// port, a pooler queueing clients) fails after `connect_timeout`, naming it, rather than
/// waiting forever.
#[test]
fn connect_timeout_bounds_a_server_that_accepts_and_never_answers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds every connection, answering nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let fake = Fake::start(|_| {});
    let mut env = Env::new(&fake, &many(1, 1));
    env.state = PathBuf::from(format!(
        "postgres://timctl:pw@127.0.0.1:{port}/db?sslmode=disable&connect_timeout=2"
    ));
    let child = env
        .timctl(&["plan"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = exits_by_itself(child);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("connect_timeout=2"), "{}", out.all());
    assert!(!out.stderr.contains(":pw@"), "{}", out.all());
}

/// Issue 18.9: `postgres://user@/db?host=/dir`, a Unix socket directory with an empty host,
/// as libpq accepts it.
#[test]
fn a_unix_socket_directory_with_an_empty_host_is_taken() {
    let cluster = PgCluster::shared();
    let db = cluster.database();
    let fake = Fake::start(|_| {});
    let mut env = Env::new(&fake, &many(2, 3));
    let socket_url = format!(
        "postgres://{}@:{}/{db}?host={}&sslmode=disable",
        timctl_tests::pg::ROLE,
        cluster.port(),
        cluster.dir().display()
    );
    env.state = PathBuf::from(&socket_url);
    let out = env
        .timctl(&["apply", "--auto-approve", "--state", &socket_url])
        .env("PGPASSWORD", cluster.password())
        .output()
        .unwrap();
    let out: Out = out.into();
    assert_eq!(out.code, Some(0), "{}", out.all());
}

/// Issue 18.6 against the real thing: a PostgreSQL server stopped with SIGSTOP (its kernel
/// still accepts the connection; nothing answers the startup) fails after `connect_timeout`.
#[test]
fn connect_timeout_bounds_a_frozen_postgres() {
    let cluster = PgCluster::start();
    let db = cluster.database();
    let fake = Fake::start(|_| {});
    let mut env = Env::new(&fake, &many(1, 1));
    env.state = PathBuf::from(format!(
        "{}&connect_timeout=2",
        cluster.url_with_password(&db)
    ));
    let frozen = cluster.freeze();
    let child = env
        .timctl(&["plan"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = exits_by_itself(child);
    drop(frozen);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("connect_timeout=2"), "{}", out.all());
    assert!(!out.stderr.contains(cluster.password()), "{}", out.all());
}
