//! `plan --refresh` and `apply --refresh` end to end: the real binary against a loopback server
//! that keeps per-user conversation lists and pages them as the get_list documentation says
//! (https://www.tencentcloud.com/document/product/1047/43087): cursors, CompleteFlag, pinned
//! conversations, 50001, and the misbehaviours a client must survive (no CompleteFlag,
//! repeated cursors, FAIL with ErrorCode 0, fatal answers).
//!
//! FIXME: move these onto fake-tim once it keeps conversation lists; this server is the
//! smallest that answers both endpoints.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

const PAGE: usize = 100;

/// How a user's list behaves.
#[derive(Clone, Debug)]
enum Behaviour {
    /// Pages through `list` (type, peer, pinned).
    List(Vec<(u8, String, bool)>),
    /// 50001.
    Missing,
    /// Pages without CompleteFlag.
    NoCompleteFlag,
    /// CompleteFlag 0 and the same cursors forever.
    RepeatCursors,
    /// ActionStatus FAIL with ErrorCode 0, every time.
    FailCodeZero,
    /// 70001 (an expired UserSig): fatal.
    Fatal,
}

#[derive(Default)]
struct Server {
    users: BTreeMap<String, Behaviour>,
    list_calls: BTreeMap<String, usize>,
    deletes: Vec<(String, String)>,
    /// When set, every 20th get_list request (5%) answers 50004, a transient failure.
    faulty: bool,
    requests: usize,
    faults: usize,
}

type Shared = Arc<Mutex<Server>>;

fn ok(mut v: Value) -> Value {
    v["ActionStatus"] = json!("OK");
    v["ErrorCode"] = json!(0);
    v["ErrorInfo"] = json!("");
    v
}

async fn get_list(State(s): State<Shared>, body: String) -> axum::Json<Value> {
    let req: Value = serde_json::from_str(&body).unwrap();
    let from = req["From_Account"].as_str().unwrap().to_owned();
    assert_eq!(req["AssistFlags"], 63, "AssistFlags must be 63");
    let mut s = s.lock().unwrap();
    s.requests += 1;
    if s.faulty && s.requests % 20 == 0 {
        s.faults += 1;
        return axum::Json(
            json!({"ActionStatus": "FAIL", "ErrorCode": 50004, "ErrorInfo": "busy"}),
        );
    }
    *s.list_calls.entry(from.clone()).or_default() += 1;
    let behaviour = s
        .users
        .get(&from)
        .cloned()
        .unwrap_or(Behaviour::List(Vec::new()));
    let start = req["StartIndex"].as_u64().unwrap() as usize;
    axum::Json(match behaviour {
        Behaviour::List(list) => {
            // Pinned first, as one page stream; the cursor is the index into it.
            let mut ordered: Vec<&(u8, String, bool)> = list.iter().filter(|c| c.2).collect();
            ordered.extend(list.iter().filter(|c| !c.2));
            let end = (start + PAGE).min(ordered.len());
            let items: Vec<Value> = ordered[start.min(end)..end]
                .iter()
                .map(|(t, peer, pinned)| {
                    let key = if *t == 1 { "To_Account" } else { "GroupId" };
                    json!({"Type": t, key: peer, "MsgTime": 1_700_000_000, "TopFlag": u8::from(*pinned),
                           "StandardMark": "01", "ContactGroupId": [1]})
                })
                .collect();
            let complete = end >= ordered.len();
            ok(
                json!({"SessionItem": items, "CompleteFlag": u8::from(complete),
                      "TimeStamp": 1_700_000_000, "StartIndex": end, "TopTimeStamp": 1_700_000_000,
                      "TopStartIndex": 0}),
            )
        }
        Behaviour::Missing => {
            json!({"ActionStatus": "FAIL", "ErrorCode": 50001, "ErrorInfo": "not imported"})
        }
        Behaviour::NoCompleteFlag => ok(
            json!({"SessionItem": [], "TimeStamp": 1, "StartIndex": start + 1,
                                               "TopTimeStamp": 0, "TopStartIndex": 0}),
        ),
        Behaviour::RepeatCursors => {
            ok(json!({"SessionItem": [], "CompleteFlag": 0, "TimeStamp": 5,
                                              "StartIndex": 5, "TopTimeStamp": 5, "TopStartIndex": 5}))
        }
        Behaviour::FailCodeZero => json!({"ActionStatus": "FAIL", "ErrorCode": 0, "ErrorInfo": ""}),
        Behaviour::Fatal => {
            json!({"ActionStatus": "FAIL", "ErrorCode": 70001, "ErrorInfo": "UserSig expired"})
        }
    })
}

async fn delete(State(s): State<Shared>, body: String) -> axum::Json<Value> {
    let req: Value = serde_json::from_str(&body).unwrap();
    let from = req["From_Account"].as_str().unwrap().to_owned();
    let (t, peer) = match req["Type"].as_u64().unwrap() {
        1 => (1, req["To_Account"].as_str().unwrap().to_owned()),
        _ => (2, req["ToGroupid"].as_str().unwrap().to_owned()),
    };
    let mut s = s.lock().unwrap();
    s.deletes.push((from.clone(), format!("{t}:{peer}")));
    if let Some(Behaviour::List(list)) = s.users.get_mut(&from) {
        list.retain(|c| !(c.0 == t && c.1 == peer));
    }
    axum::Json(ok(json!({})))
}

struct Env {
    dir: tempfile::TempDir,
    url: String,
    server: Shared,
    _rt: tokio::runtime::Runtime,
}

fn env(manifest_absent: &str, users: Vec<(&str, Behaviour)>) -> Env {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server: Shared = Arc::new(Mutex::new(Server {
        users: users.into_iter().map(|(u, b)| (u.to_owned(), b)).collect(),
        ..Server::default()
    }));
    let app = axum::Router::new()
        .route("/v4/recentcontact/get_list", post(get_list))
        .route("/v4/recentcontact/delete", post(delete))
        .with_state(Arc::clone(&server));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("timctl.yaml"),
        format!(
            "version: 1\napp:\n  sdkappid: 1400000001\n  region: singapore\n  admin: administrator\nabsent:\n{manifest_absent}"
        ),
    )
    .unwrap();
    Env {
        dir,
        url,
        server,
        _rt: rt,
    }
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
            .env("TIMCTL_ENDPOINT", &self.url)
            .env("TIMCTL_SECRET_KEY", "refresh-e2e-secret-key")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
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

    fn entries(&self) -> Vec<(String, String, String)> {
        let out = self.run(&["state", "list", "--json"]);
        let doc: Value = serde_json::from_str(&out.stdout).unwrap();
        doc["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["from"].as_str().unwrap().to_owned(),
                    format!(
                        "{}:{}",
                        e["type"].as_str().unwrap(),
                        e["peer"].as_str().unwrap()
                    ),
                    e["origin"].as_str().unwrap().to_owned(),
                )
            })
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

fn others(n: usize) -> Vec<(u8, String, bool)> {
    (0..n).map(|i| (1, format!("other{i:03}"), false)).collect()
}

fn exists(p: &Path) -> bool {
    p.exists()
}

/// Half the manifest's conversations exist, among others; alice's is on her last page and
/// one of hers is pinned.
fn half_present() -> Env {
    let mut alice = others(250);
    alice.push((1, "bob".into(), false)); // the last page
    alice.push((2, "pinned-group".into(), true));
    let mut carol = others(3);
    carol.push((1, "erin".into(), false));
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
    {
        let s = e.server.lock().unwrap();
        assert!(s.deletes.is_empty(), "plan --refresh calls only get_list");
        // Each user listed once: alice's 252 conversations are three pages, carol's one.
        assert_eq!(s.list_calls["alice"], 3);
        assert_eq!(s.list_calls["carol"], 1);
    }
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
    let mut deleted = e.server.lock().unwrap().deletes.clone();
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
    if let Some(Behaviour::List(list)) = e.server.lock().unwrap().users.get_mut("alice") {
        list.push((1, "bob".into(), false));
    }
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

    let before = e.server.lock().unwrap().deletes.len();
    let applied = e.run(&["apply", "--refresh", "--auto-approve"]);
    assert_eq!(applied.code, Some(0), "{}", applied.stderr);
    let s = e.server.lock().unwrap();
    assert_eq!(
        s.deletes[before..],
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

#[test]
fn missing_and_unreadable_users_are_named_never_recorded_unless_missing() {
    let e = env(
        "  ghost:\n    - user: bob\n      clear_roaming: true\n  nocomplete:\n    - user: a\n  looping:\n    - user: b\n  failing:\n    - user: c\n",
        vec![
            ("ghost", Behaviour::Missing),
            ("nocomplete", Behaviour::NoCompleteFlag),
            ("looping", Behaviour::RepeatCursors),
            ("failing", Behaviour::FailCodeZero),
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
        out.stderr.contains("do not exist (50001)") && out.stderr.contains("ghost"),
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
        out.stderr.contains("answered the cursors it was sent"),
        "{}",
        out.stderr
    );
    // The looping server was left after one repeat, not a thousand pages.
    assert_eq!(e.server.lock().unwrap().list_calls["looping"], 2);
}

#[test]
fn a_fatal_answer_while_listing_stops_at_once_with_one_message() {
    let mut users = vec![("fatal", Behaviour::Fatal)];
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
    let called = e.server.lock().unwrap().list_calls.len();
    assert!(
        called < 10,
        "{called} users were called after a fatal answer"
    );
}

#[test]
fn transient_faults_while_listing_give_the_same_plan() {
    // Many users, so that 5% of the calls is several faults.
    let mut manifest = String::new();
    let mut users = Vec::new();
    for i in 0..60 {
        manifest.push_str(&format!("  u{i:02}:\n    - user: bob\n"));
        let list = if i % 2 == 0 {
            vec![(1, "bob".to_owned(), false)]
        } else {
            others(1)
        };
        users.push((format!("u{i:02}"), Behaviour::List(list)));
    }
    let build = |faulty: bool| {
        let e = env(
            &manifest,
            users.iter().map(|(u, b)| (u.as_str(), b.clone())).collect(),
        );
        e.server.lock().unwrap().faulty = faulty;
        e
    };
    let (calm, faulty) = (build(false), build(true));
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
    assert_eq!(plan_calm.len(), 60);
    assert!(faulty.server.lock().unwrap().faults >= 3);
}
