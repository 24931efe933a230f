//! `timctl serve` replicas on one PostgreSQL state, end to end: real binaries, fake-tim posting
//! the documented callbacks over loopback, and a throwaway PostgreSQL cluster. Every replica is
//! ready; the one holding the state's lock deletes; a standby's callbacks reach it through the
//! state's queue; when the active one dies, loses its session or stalls, calls stop and another
//! term (on the same replica or another) takes over.

mod apply_common;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use timctl_tests::ports::free_addr;

use apply_common::{APP, Env, Fake, conv, many, wait_for};
use timctl_tests::callbacks::{self, CallbackAnswer, CallbackTarget};
use timctl_tests::pg::PgCluster;
use timctl_tests::{FakeEndpoint, FakePeer};

/// The callback token set "in the console".
const TOKEN: &str = "serve-replicas-token-71c2";

/// An env whose state is a fresh database of the shared cluster; its name.
fn pg_env(fake: &Fake, absent: &str) -> (Env, String) {
    let cluster = PgCluster::shared();
    let db = cluster.database();
    let mut env = Env::new(fake, absent);
    env.state = PathBuf::from(cluster.url_with_password(&db));
    (env, db)
}

/// A running `timctl serve`.
struct Serve {
    child: Option<Child>,
    listen: String,
    ops: String,
    rt: tokio::runtime::Runtime,
}

impl Serve {
    /// Starts serve on `env`'s state and waits until `/readyz` answers 200.
    fn start(env: &Env, extra: &[&str]) -> Serve {
        let (listen, ops) = (free_addr(), free_addr());
        let manifest = env.manifest.to_str().unwrap();
        let mut args = vec![
            "serve",
            "-f",
            manifest,
            "--listen",
            &listen,
            "--ops-listen",
            &ops,
        ];
        args.extend_from_slice(extra);
        let child = env
            .timctl(&args)
            .env("TIMCTL_CALLBACK_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let serve = Serve {
            child: Some(child),
            listen,
            ops,
            rt,
        };
        wait_for("serve never became ready", || {
            serve.get("/readyz").is_some_and(|a| a.status == 200)
        });
        serve
    }

    fn get(&self, path: &str) -> Option<CallbackAnswer> {
        self.rt.block_on(callbacks::get(&self.ops, path)).ok()
    }

    /// [`Serve::start`] alone on its state: waits until it is active and its first resync
    /// is done.
    fn start_active(env: &Env) -> Serve {
        let serve = Serve::start(env, &[]);
        wait_for("serve active", || serve.is_active());
        wait_for("the first resync", || {
            serve.readyz().contains("first resync: done")
        });
        serve
    }

    /// `/readyz`'s body, or "" when it cannot be read.
    fn readyz(&self) -> String {
        self.get("/readyz").map(|a| a.body).unwrap_or_default()
    }

    fn is_active(&self) -> bool {
        self.get("/readyz")
            .is_some_and(|a| a.status == 200 && a.body.starts_with("ready: active"))
    }

    fn metric(&self, line_start: &str) -> f64 {
        self.get("/metrics")
            .map(|a| a.body)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    fn target(&self) -> CallbackTarget {
        CallbackTarget {
            addr: self.listen.clone(),
            path: "/callback".into(),
            token: Some(TOKEN.into()),
            sdkappid: APP,
        }
    }

    /// A message from `from` to `to`: the conversation is back in `to`'s list, and the
    /// callback goes to this serve; its answer must be 200.
    fn message(&self, fake: &Fake, from: &str, to: &str, seq: u64) {
        fake.send_message(to, FakePeer::user(from));
        let body = callbacks::one_to_one_body(from, to, seq);
        let answer = self
            .rt
            .block_on(self.target().post("C2C.CallbackAfterSendMsg", &body))
            .unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
    }

    fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn terminate(mut self) -> (Option<i32>, String) {
        timctl_tests::run::terminate(self.child.take().unwrap())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The server process of the session holding the state's lock (the active replica's writer).
fn lock_holder_backend(db: &str) -> i32 {
    let mut admin = PgCluster::shared().admin_on(db);
    let mut pid = 0;
    wait_for("no session holds the state's lock", || {
        let row = admin
            .query_opt(
                "SELECT h.backend_pid FROM timctl.lock_holders h WHERE EXISTS (
                    SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted
                    AND l.pid = h.backend_pid)",
                &[],
            )
            .unwrap();
        pid = row.map_or(0, |r| r.get(0));
        pid != 0
    });
    pid
}

/// Every one of `users` × `peers` is absent from its user's list on the server.
fn all_deleted(fake: &Fake, users: usize, peers: usize) -> bool {
    (0..users).all(|u| {
        let list = fake.conversations(&format!("u{u}"));
        (0..peers).all(|p| {
            !list
                .iter()
                .any(|c| c.peer == FakePeer::user(format!("p{p}")))
        })
    })
}

/// The deletions fake-tim confirmed, per conversation.
fn deleted_on_server(fake: &Fake) -> std::collections::BTreeSet<(String, String)> {
    fake.deletions()
        .keys()
        .map(|k| (k.from.clone(), format!("user:{}", k.peer)))
        .collect()
}

fn recorded(env: &Env) -> std::collections::BTreeSet<(String, String)> {
    env.entries().into_iter().map(|(f, p, _)| (f, p)).collect()
}

#[test]
fn two_serves_on_one_state_are_both_ready_one_active_and_the_standbys_callbacks_are_enforced() {
    let fake = Fake::start(|_| {});
    let (env, _db) = pg_env(&fake, &many(4, 5));
    let active = Serve::start(&env, &[]);
    wait_for("the first serve active", || active.is_active());
    let standby = Serve::start(&env, &[]);
    let body = standby.readyz();
    assert!(body.starts_with("ready: standby"), "{body}");
    assert!(active.is_active(), "{}", active.readyz());
    assert_eq!(active.metric("timctl_active "), 1.0);
    assert_eq!(standby.metric("timctl_active "), 0.0);
    assert_eq!(standby.metric("timctl_ready "), 1.0);
    wait_for("the first resync", || {
        active.readyz().contains("first resync: done")
    });
    // The first resync found every conversation absent: nothing called yet.
    assert_eq!(fake.stats_for(FakeEndpoint::Delete).requests, 0);

    // Every message's callback goes to the standby only.
    for u in 0..4 {
        for p in 0..5 {
            standby.message(
                &fake,
                &format!("p{p}"),
                &format!("u{u}"),
                (u * 5 + p) as u64,
            );
        }
    }
    wait_for("the standby's callbacks enforced", || {
        all_deleted(&fake, 4, 5)
    });
    for u in 0..4 {
        for p in 0..5 {
            let k = conv(&format!("u{u}"), 1, &format!("p{p}"), false);
            assert_eq!(fake.deletions().get(&k), Some(&1), "{k:?}");
        }
    }
    // By the active replica, recorded as enforced with the standby's callbacks as triggers.
    wait_for("the active one counts them", || {
        active.metric(r#"timctl_deletions_total{reason="enforced",outcome="deleted"}"#) == 20.0
    });
    assert_eq!(
        standby.metric(r#"timctl_deletions_total{reason="enforced",outcome="deleted"}"#),
        0.0
    );
    wait_for("the history says enforced", || {
        let out = apply_common::Out::from(
            env.timctl(&["state", "history", "--json", "--limit", "0"])
                .output()
                .unwrap(),
        );
        out.stdout
            .lines()
            .filter(|l| l.contains(r#""reason":"enforced""#) && l.contains(r#""msg_key""#))
            .count()
            == 20
    });

    // The standby stops at SIGTERM like any serve; the active one too.
    let (code, stderr) = standby.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = active.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn the_active_killed_mid_enforcement_the_standby_takes_over_and_every_answered_callback_ends_deleted()
 {
    const USERS: usize = 10;
    const PEERS: usize = 20;
    // Slow answers, so that the kill comes while deletions are in flight.
    let fake = Fake::start(|c| c.latency = (Duration::from_millis(20), Duration::from_millis(60)));
    let (env, _db) = pg_env(&fake, &many(USERS, PEERS));
    let first = Serve::start(&env, &[]);
    wait_for("the first serve active", || first.is_active());
    let second = Serve::start(&env, &[]);
    assert!(second.readyz().starts_with("ready: standby"));
    wait_for("the first resync", || {
        first.readyz().contains("first resync: done")
    });
    // Half the messages' callbacks go to each replica, alternately.
    let mut seq = 0;
    let mut send = |to: &Serve, u: usize, p: usize| {
        seq += 1;
        to.message(&fake, &format!("p{p}"), &format!("u{u}"), seq);
    };
    for u in 0..USERS / 2 {
        for p in 0..PEERS {
            send(if p % 2 == 0 { &first } else { &second }, u, p);
        }
    }
    fake.wait_until("no deletion before the kill", |f| {
        f.stats_for(FakeEndpoint::Delete).requests >= 10
    });
    let killed_at = Instant::now();
    first.kill9();
    // The rest go to the survivor, while it takes over.
    for u in USERS / 2..USERS {
        for p in 0..PEERS {
            send(&second, u, p);
        }
    }
    let took_over = loop {
        if second.is_active() {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "the standby did not become active within 30 s: {}",
            second.readyz()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    wait_for("every answered callback's conversation deleted", || {
        all_deleted(&fake, USERS, PEERS)
    });
    let deletes = fake.stats_for(FakeEndpoint::Delete);
    assert!(
        deletes.max_in_any_second <= 200 && deletes.frequency_limited == 0,
        "{deletes:?}"
    );
    // Nothing the server confirmed is missing from the state (the takeover resync records
    // what the killed replica deleted and never recorded).
    wait_for("every deletion in the state", || {
        deleted_on_server(&fake).is_subset(&recorded(&env))
    });
    eprintln!("took over after {took_over:?}");
}

#[test]
fn the_active_ones_session_terminated_it_recovers_by_itself_and_loses_nothing() {
    let fake = Fake::start(|_| {});
    let (env, db) = pg_env(&fake, &many(3, 4));
    let serve = Serve::start_active(&env);
    serve.message(&fake, "p0", "u0", 1);
    wait_for("the first deletion", || all_deleted(&fake, 1, 1));
    let old = lock_holder_backend(&db);
    let mut admin = PgCluster::shared().admin_on(&db);
    let terminated: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&old])
        .unwrap()
        .get(0);
    assert!(terminated);
    // The next deletion cannot be recorded on the lost session: calls stop, serve reconnects,
    // takes the lock again on a new session and resyncs.
    serve.message(&fake, "p1", "u0", 2);
    wait_for("a new session holds the lock", || {
        lock_holder_backend(&db) != old
    });
    wait_for("active again", || serve.is_active());
    for (i, u) in (1..3).enumerate() {
        for p in 0..4 {
            serve.message(
                &fake,
                &format!("p{p}"),
                &format!("u{u}"),
                10 + (i * 4 + p) as u64,
            );
        }
    }
    wait_for("enforcement resumed", || all_deleted(&fake, 3, 4));
    wait_for("every deletion in the state", || {
        deleted_on_server(&fake).is_subset(&recorded(&env))
    });
    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_stalled_state_stops_the_calls_and_they_resume_once_it_answers() {
    let fake = Fake::start(|_| {});
    let (env, db) = pg_env(&fake, &many(3, 4));
    let serve = Serve::start_active(&env);
    let backend = lock_holder_backend(&db);
    // SIGSTOP on the writer's server process: it accepts data and answers nothing.
    signal(backend, "-STOP");
    let frozen = Resume(backend);
    // A deletion whose recording never finishes: calls stop, and serve says so.
    serve.message(&fake, "p0", "u0", 1);
    wait_for("serve noticed the stalled state", || !serve.is_active());
    let made = fake.stats_for(FakeEndpoint::Delete).requests;
    // Messages now are answered and kept (in the queue, a standby's, or in memory), never
    // called while the state stalls.
    for p in 0..4 {
        serve.message(&fake, &format!("p{p}"), "u2", 10 + p as u64);
    }
    wait_for("the callbacks counted", || {
        serve.metric(
            r#"timctl_callbacks_total{command="C2C.CallbackAfterSendMsg",outcome="queued"}"#,
        ) + serve.metric(
            r#"timctl_callbacks_total{command="C2C.CallbackAfterSendMsg",outcome="overflow"}"#,
        ) >= 5.0
    });
    assert_eq!(
        fake.stats_for(FakeEndpoint::Delete).requests,
        made,
        "a call went out while the state stalled"
    );
    for p in 0..4 {
        let k = conv("u2", 1, &format!("p{p}"), false);
        assert_eq!(fake.deletions().get(&k), None, "{k:?}");
    }
    drop(frozen);
    // Once the server answers, a term takes over and what was kept is deleted.
    wait_for("active again", || serve.is_active());
    wait_for("what was kept is deleted", || {
        let list = fake.conversations("u2");
        list.is_empty() && fake.conversations("u0").is_empty()
    });
    wait_for("every deletion in the state", || {
        deleted_on_server(&fake).is_subset(&recorded(&env))
    });
}

/// Sends SIGCONT to a stopped server process when dropped, even when the test fails.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

/// `kill -SIGNAL PID`, as root when the cluster runs as `postgres`.
fn signal(pid: i32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

#[test]
fn a_cluster_restart_under_two_replicas_loses_nothing_and_enforcement_resumes() {
    // A cluster of its own: this test stops it.
    let cluster = PgCluster::start();
    let db = cluster.database();
    let fake = Fake::start(|_| {});
    let mut env = Env::new(&fake, &many(4, 4));
    env.state = PathBuf::from(cluster.url_with_password(&db));
    let first = Serve::start(&env, &[]);
    wait_for("the first serve active", || first.is_active());
    let second = Serve::start(&env, &[]);
    assert!(second.readyz().starts_with("ready: standby"));
    wait_for("the first resync", || {
        first.readyz().contains("first resync: done")
    });
    first.message(&fake, "p0", "u0", 1);
    second.message(&fake, "p1", "u0", 2);
    wait_for("deleted before the restart", || {
        fake.conversations("u0").is_empty()
    });

    cluster.stop_server();
    // The active one finds the state gone at its next write: that deletion is confirmed and
    // cannot be recorded; calls stop, and neither replica is ready while the server is down.
    first.message(&fake, "p2", "u1", 3);
    wait_for("neither replica ready", || {
        !first.is_active()
            && first.get("/readyz").is_some_and(|a| a.status == 503)
            && second.get("/readyz").is_some_and(|a| a.status == 503)
    });
    let made = fake.stats_for(FakeEndpoint::Delete).requests;
    // Callbacks are still answered, and kept.
    for p in 0..4 {
        first.message(&fake, &format!("p{p}"), "u2", 10 + p as u64);
        second.message(&fake, &format!("p{p}"), "u3", 20 + p as u64);
    }
    assert_eq!(
        fake.stats_for(FakeEndpoint::Delete).requests,
        made,
        "a call went out while the state was down"
    );

    cluster.start_server();
    wait_for("one replica active again", || {
        first.is_active() || second.is_active()
    });
    // Every conversation a message brought back (u0's p0 and p1, u1's p2, all of u2's and
    // u3's) ends deleted.
    wait_for("everything kept is deleted", || all_deleted(&fake, 4, 4));
    wait_for("every deletion in the state", || {
        deleted_on_server(&fake).is_subset(&recorded(&env))
    });
    wait_for("both ready again", || {
        first.get("/readyz").is_some_and(|a| a.status == 200)
            && second.get("/readyz").is_some_and(|a| a.status == 200)
    });
    assert!(
        first.is_active() != second.is_active(),
        "exactly one active: {} / {}",
        first.readyz(),
        second.readyz()
    );
}
