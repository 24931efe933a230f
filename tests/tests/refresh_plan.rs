//! `plan --refresh` and `apply --refresh` end to end: the real binary against fake-tim, which
//! keeps per-user conversation lists and pages them as the get_list documentation says
//! (https://www.tencentcloud.com/document/product/1047/43087): cursors, CompleteFlag, pinned
//! conversations, 50001, and the misbehaviours a client must survive (no CompleteFlag,
//! repeated cursors, FAIL with ErrorCode 0, fatal answers, transient faults).

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use timctl_tests::state_list::StateList;
use timctl_tests::{FakeConfig, FakeEndpoint, FakePeer, FakeTim, Fault, ListFault};

/// The page size the lists are paged with: alice's 252 conversations are three pages.
const PAGE: usize = 100;
const KEY: &str = "refresh-e2e-secret-key";

/// How a user's list is set up on fake-tim.
#[derive(Clone, Debug)]
enum Behaviour {
    /// These conversations (peer, pinned), each with a new message in the order given, so the
    /// last ones are on the last page.
    List(Vec<(FakePeer, bool)>),
    /// A scripted answer for every call from this user (50001: the user does not exist).
    Code(i64),
    /// A scripted get_list misbehaviour.
    Fault(ListFault),
}

struct Env {
    dir: tempfile::TempDir,
    fake: FakeTim,
    _rt: tokio::runtime::Runtime,
}

fn env(manifest_absent: &str, users: Vec<(&str, Behaviour)>) -> Env {
    env_with(manifest_absent, users, FakeConfig::default())
}

fn env_with(manifest_absent: &str, users: Vec<(&str, Behaviour)>, base: FakeConfig) -> Env {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut config = FakeConfig {
        secret_key: KEY.into(),
        page_size: PAGE,
        users: HashMap::new(),
        list_faults: HashMap::new(),
        ..base
    };
    let mut lists = Vec::new();
    for (user, behaviour) in users {
        match behaviour {
            Behaviour::List(list) => lists.push((user, list)),
            Behaviour::Code(code) => {
                config.users.insert(user.to_owned(), code);
            }
            Behaviour::Fault(fault) => {
                config.list_faults.insert(user.to_owned(), fault);
            }
        }
    }
    let fake = rt.block_on(FakeTim::start(config)).unwrap();
    for (user, list) in lists {
        for (peer, pinned) in list {
            fake.seed_conversations(user, [peer], pinned);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("timctl.yaml"),
        format!(
            "version: 1\napp:\n  sdkappid: 1400000001\n  region: singapore\n  admin: administrator\nabsent:\n{manifest_absent}"
        ),
    )
    .unwrap();
    Env { dir, fake, _rt: rt }
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Env {
    fn run(&self, args: &[&str]) -> Out {
        let out = timctl_tests::timctl()
            .args(args)
            .current_dir(self.dir.path())
            .env("TIMCTL_STATE", self.state())
            .env("TIMCTL_ENDPOINT", self.fake.url())
            .env("TIMCTL_SECRET_KEY", KEY)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Every delete call fake-tim processed, as (from, type:peer), in arrival order.
    fn deletes(&self) -> Vec<(String, String)> {
        self.fake
            .calls()
            .into_iter()
            .map(|c| (c.key.from, format!("{}:{}", c.key.kind, c.key.peer)))
            .collect()
    }

    fn state(&self) -> std::path::PathBuf {
        self.dir.path().join(".timctl/state.db")
    }

    /// `plan --refresh --format json ARGS`: the changes as (from, type:peer, action, reason).
    fn refreshed_plan(&self, args: &[&str]) -> (Out, Vec<(String, String, String, String)>) {
        let mut all = vec!["plan", "--refresh", "--format", "json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let changes = serde_json::from_str::<Value>(&out.stdout)
            .map(|doc| {
                assert_eq!(doc["refreshed"], true);
                assert!(doc["refreshed_at"].is_string());
                changes(&doc)
            })
            .unwrap_or_default();
        (out, changes)
    }

    /// The state's entries, through `state list --json`, as (from, type:peer, origin).
    fn entries(&self) -> Vec<(String, String, String)> {
        let out = self.run(&["state", "list", "--json"]);
        StateList::parse(&out.stdout)
            .entries
            .iter()
            .map(|e| (e.from.clone(), e.conversation(), e.origin.clone()))
            .collect()
    }
}

fn changes(doc: &Value) -> Vec<(String, String, String, String)> {
    doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["from"].as_str().unwrap().to_owned(),
                format!(
                    "{}:{}",
                    c["type"].as_str().unwrap(),
                    c["peer"].as_str().unwrap()
                ),
                c["action"].as_str().unwrap().to_owned(),
                c["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn ch(from: &str, peer: &str, action: &str, reason: &str) -> (String, String, String, String) {
    (from.into(), peer.into(), action.into(), reason.into())
}

fn others(n: usize) -> Vec<(FakePeer, bool)> {
    (0..n)
        .map(|i| (FakePeer::user(format!("other{i:03}")), false))
        .collect()
}

fn exists(p: &Path) -> bool {
    p.exists()
}

/// Half the manifest's conversations exist, among others; alice's is on her last page and
/// one of hers is pinned.
fn half_present() -> Env {
    let mut alice = others(250);
    alice.push((FakePeer::user("bob"), false)); // the newest: the last page
    alice.push((FakePeer::group("pinned-group"), true));
    let mut carol = others(3);
    carol.push((FakePeer::user("erin"), false));
    env(
        "  alice:\n    - user: bob\n    - group: pinned-group\n    - user: nobody\n  carol:\n    - user: dave\n    - user: erin\n",
        vec![
            ("alice", Behaviour::List(alice)),
            ("carol", Behaviour::List(carol)),
        ],
    )
}

#[test]
fn half_present_plans_deletes_and_records_then_apply_settles_it() {
    let e = half_present();
    let (out, plan) = e.refreshed_plan(&[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        plan,
        [
            ch("alice", "user:bob", "delete", "present"),
            ch("alice", "user:nobody", "record", "absent"),
            ch("alice", "group:pinned-group", "delete", "present"),
            ch("carol", "user:dave", "record", "absent"),
            ch("carol", "user:erin", "delete", "present"),
        ]
    );
    assert_eq!(
        e.fake.stats_for(FakeEndpoint::Delete).requests,
        0,
        "plan --refresh calls only get_list"
    );
    // Each user listed once: alice's 252 conversations are three pages, carol's one.
    let calls = e.fake.get_list_calls();
    assert_eq!((calls["alice"], e.fake.pages_for("alice")), (3, 3));
    assert_eq!((calls["carol"], e.fake.pages_for("carol")), (1, 1));
    assert!(!exists(&e.state()), "plan --refresh creates no state");
    let text = e.run(&["plan", "--refresh"]);
    assert!(
        text.stdout
            .contains("+ record user:nobody (not on the server)"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("Plan: 3 to delete, 2 to record, 0 to forget, 0 unchanged."),
        "{}",
        text.stdout
    );

    let applied = e.run(&["apply", "--refresh", "--auto-approve"]);
    assert_eq!(applied.code, Some(0), "{}", applied.stderr);
    assert!(
        applied
            .stdout
            .contains("Apply complete: 3 deleted, 2 recorded, 0 forgotten, 0 failed."),
        "{}",
        applied.stdout
    );
    let mut deleted = e.deletes();
    deleted.sort();
    assert_eq!(
        deleted,
        [
            ("alice".to_owned(), "1:bob".to_owned()),
            ("alice".to_owned(), "2:pinned-group".to_owned()),
            ("carol".to_owned(), "1:erin".to_owned()),
        ]
    );
    let entries = e.entries();
    assert!(entries.contains(&("alice".into(), "user:nobody".into(), "absent".into())));
    assert!(entries.contains(&("alice".into(), "user:bob".into(), "deleted".into())));
    assert_eq!(entries.len(), 5);

    let (again, plan) = e.refreshed_plan(&["--detailed-exitcode"]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(plan.is_empty(), "{plan:?}");
}

#[test]
fn drift_came_back_is_found_only_with_refresh() {
    let e = half_present();
    let applied = e.run(&["apply", "--refresh", "--auto-approve"]);
    assert_eq!(applied.code, Some(0), "{}", applied.stderr);
    // A new message brings bob back into alice's list.
    e.fake.send_message("alice", FakePeer::user("bob"));
    let plain = e.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plain.code, Some(0), "{}", plain.stdout);
    assert!(plain.stdout.contains("No changes"), "{}", plain.stdout);

    let (out, plan) = e.refreshed_plan(&["--detailed-exitcode"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(plan, [ch("alice", "user:bob", "delete", "came_back")]);
    let drift = e.run(&["plan", "--refresh", "--drift-exitcode"]);
    assert_eq!(drift.code, Some(2), "{}", drift.stderr);
    assert!(
        drift.stdout.contains("came back on the server"),
        "{}",
        drift.stdout
    );

    let before = e.deletes().len();
    let applied = e.run(&["apply", "--refresh", "--auto-approve"]);
    assert_eq!(applied.code, Some(0), "{}", applied.stderr);
    assert_eq!(
        e.deletes()[before..],
        [("alice".to_owned(), "1:bob".to_owned())]
    );
}

#[test]
fn drift_exitcode_is_0_when_only_records_or_forgets_are_pending() {
    let e = env(
        "  alice:\n    - user: bob\n",
        vec![("alice", Behaviour::List(others(2)))],
    );
    let out = e.run(&["plan", "--refresh", "--drift-exitcode"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("+ record user:bob"), "{}", out.stdout);
    let detailed = e.run(&["plan", "--refresh", "--detailed-exitcode"]);
    assert_eq!(detailed.code, Some(2), "a record is a change");
}

/// `-q` keeps warnings: a user that does not exist may be a typo, and an unreadable list means
/// the plan could not look, so both must reach a quiet CI log.
#[test]
fn quiet_still_names_missing_and_unreadable_users() {
    let e = env(
        "  ghost:\n    - user: bob\n  failing:\n    - user: c\n",
        vec![
            ("ghost", Behaviour::Code(50001)),
            ("failing", Behaviour::Fault(ListFault::FailWithCodeZero)),
        ],
    );
    let out = e.run(&["plan", "--refresh", "-q", "--refresh-rate", "50"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("warning: 1 user does not exist (50001)")
            && out.stderr.contains("ghost"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("warning: the conversation list of failing could not be read"),
        "{}",
        out.stderr
    );
}

#[test]
fn missing_and_unreadable_users_are_named_never_recorded_unless_missing() {
    let e = env(
        "  ghost:\n    - user: bob\n      clear_roaming: true\n  nocomplete:\n    - user: a\n  looping:\n    - user: b\n  failing:\n    - user: c\n",
        vec![
            ("ghost", Behaviour::Code(50001)),
            ("nocomplete", Behaviour::Fault(ListFault::NoCompleteFlag)),
            ("looping", Behaviour::Fault(ListFault::RepeatCursors)),
            ("failing", Behaviour::Fault(ListFault::FailWithCodeZero)),
        ],
    );
    let (out, plan) = e.refreshed_plan(&["--refresh-rate", "50"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        plan,
        [
            ch("failing", "user:c", "delete", "unverified"),
            ch("ghost", "user:bob", "record", "absent"),
            ch("looping", "user:b", "delete", "unverified"),
            ch("nocomplete", "user:a", "delete", "unverified"),
        ]
    );
    assert!(
        out.stderr.contains("1 user does not exist (50001)") && out.stderr.contains("ghost"),
        "{}",
        out.stderr
    );
    for user in ["nocomplete", "looping", "failing"] {
        assert!(
            out.stderr
                .contains(&format!("conversation list of {user} could not be read")),
            "{user}: {}",
            out.stderr
        );
    }
    assert!(out.stderr.contains("no CompleteFlag"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("answered cursors already sent for this list"),
        "{}",
        out.stderr
    );
    // The looping server was left at its first repeat, not after a thousand pages: fake-tim's
    // RepeatCursors echoes the cursors of every request, the first included, so the first page
    // already repeats.
    assert_eq!(e.fake.get_list_calls()["looping"], 1);
}

#[test]
fn a_fatal_answer_while_listing_stops_at_once_with_one_message() {
    // 70001 (an expired UserSig) answered to get_list: fatal.
    let mut users = vec![("fatal", Behaviour::Fault(ListFault::Code(70001)))];
    let mut manifest = "  fatal:\n    - user: x\n".to_owned();
    let names: Vec<String> = (0..30).map(|i| format!("z{i:02}")).collect();
    for n in &names {
        manifest.push_str(&format!("  {n}:\n    - user: x\n"));
    }
    users.extend(
        names
            .iter()
            .map(|n| (n.as_str(), Behaviour::List(Vec::new()))),
    );
    let e = env(&manifest, users);
    let out = e.run(&["plan", "--refresh", "--refresh-rate", "2"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stdout.is_empty(),
        "no plan from a partial look: {}",
        out.stdout
    );
    assert_eq!(out.stderr.matches("70001").count(), 1, "{}", out.stderr);
    // At 2 calls/s, the users queued behind the fatal answer were never called.
    let called = e.fake.get_list_calls().len();
    assert!(
        called < 10,
        "{called} users were called after a fatal answer"
    );
}

#[test]
fn transient_faults_while_listing_give_the_same_plan() {
    // fake-tim injects its faults at random, 5% of the calls: with 300 users that is about 15
    // faults, and fewer than 3 is about one run in 25,000.
    const USERS: usize = 300;
    let mut manifest = String::new();
    let mut users = Vec::new();
    for i in 0..USERS {
        manifest.push_str(&format!("  u{i:03}:\n    - user: bob\n"));
        let list = if i % 2 == 0 {
            vec![(FakePeer::user("bob"), false)]
        } else {
            others(1)
        };
        users.push((format!("u{i:03}"), Behaviour::List(list)));
    }
    let build = |fault_rate: f64| {
        env_with(
            &manifest,
            users.iter().map(|(u, b)| (u.as_str(), b.clone())).collect(),
            // 50004: a transient failure.
            FakeConfig {
                fault_rate,
                faults: vec![Fault::Code(50004)],
                ..FakeConfig::default()
            },
        )
    };
    let (calm, faulty) = (build(0.0), build(0.05));
    let (a, plan_calm) = calm.refreshed_plan(&[]);
    let (b, plan_faulty) = faulty.refreshed_plan(&[]);
    assert_eq!(
        (a.code, b.code),
        (Some(0), Some(0)),
        "{}{}",
        a.stderr,
        b.stderr
    );
    assert_eq!(plan_calm, plan_faulty);
    assert_eq!(plan_calm.len(), USERS);
    assert_eq!(calm.fake.stats_for(FakeEndpoint::GetList).faults, 0);
    assert!(faulty.fake.stats_for(FakeEndpoint::GetList).faults >= 3);
}
