//! Issue 18 (items 2, 5, 7) and issue 24 (item 1), end to end: the real binary against
//! fake-tim's hostile get_list answers. A 50001 after the first page, a cursor cycle, a
//! get_list that never answers, `--max-retries` for listing, the "most lists fail the same way"
//! stop, signals while listing, and the drift alarm that must not pass when it could not look.

use std::collections::HashMap;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use timctl_tests::{FakeConfig, FakePeer, FakeTim, ListFault};

const KEY: &str = "refresh-hardening-secret-key";

struct Env {
    dir: tempfile::TempDir,
    fake: FakeTim,
    _rt: tokio::runtime::Runtime,
}

/// A manifest asking each user's `bob` conversation deleted, fake-tim scripting the users'
/// get_list faults, and `lists` seeding real conversations.
fn env(users: &[&str], faults: &[(&str, ListFault)], lists: &[(&str, usize)]) -> Env {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let config = FakeConfig {
        secret_key: KEY.into(),
        page_size: 10,
        list_faults: faults
            .iter()
            .map(|(u, f)| ((*u).to_owned(), *f))
            .collect::<HashMap<_, _>>(),
        ..FakeConfig::default()
    };
    let fake = rt.block_on(FakeTim::start(config)).unwrap();
    for (user, n) in lists {
        for i in 0..*n {
            fake.seed_conversations(user, [FakePeer::user(format!("other{i:03}"))], false);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let absent: String = users
        .iter()
        .map(|u| format!("  {u}:\n    - user: bob\n"))
        .collect();
    std::fs::write(
        dir.path().join("timctl.yaml"),
        format!(
            "version: 1\napp:\n  sdkappid: 1400000001\n  region: singapore\n  admin: administrator\nabsent:\n{absent}"
        ),
    )
    .unwrap();
    Env { dir, fake, _rt: rt }
}

impl Env {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = timctl_tests::timctl();
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("TIMCTL_STATE", self.dir.path().join(".timctl/state.db"))
            .env("TIMCTL_ENDPOINT", self.fake.url())
            .env("TIMCTL_SECRET_KEY", KEY)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// get_list calls fake-tim processed for `user`.
    fn list_calls(&self, user: &str) -> usize {
        self.fake.get_list_calls().get(user).copied().unwrap_or(0)
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The plan's changes as (from, action, reason).
fn changes(out: &Output) -> Vec<(String, String, String)> {
    let doc: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(out)));
    doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["from"].as_str().unwrap().to_owned(),
                c["action"].as_str().unwrap().to_owned(),
                c["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn ch(from: &str, action: &str, reason: &str) -> (String, String, String) {
    (from.into(), action.into(), reason.into())
}

/// Issue 18.2: only a 50001 to the first page says the user does not exist. After a first
/// page that showed a list with more to come, 50001 leaves the list unread: the entry is an
/// unverified delete, never recorded as absent (which would keep it undeleted for good).
#[test]
fn a_50001_after_the_first_page_is_unverified_never_absent() {
    let e = env(
        &["vanishing", "gone"],
        &[
            ("vanishing", ListFault::CodeAfterFirstPage(50001)),
            ("gone", ListFault::Code(50001)),
        ],
        &[("vanishing", 25)],
    );
    let out = e.run(&["plan", "--refresh", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        changes(&out),
        vec![
            ch("gone", "record", "absent"),
            ch("vanishing", "delete", "unverified"),
        ]
    );
    assert_eq!(e.list_calls("vanishing"), 2);
    let err = stderr(&out);
    assert!(
        err.contains("vanishing") && err.contains("50001") && err.contains("page 2"),
        "{err}"
    );

    // And apply settles it: the unverified entry is deleted, the record of the user that
    // does not exist is written.
    let out = e.run(&["apply", "--refresh", "--auto-approve"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let deleted: Vec<_> = e.fake.calls().into_iter().map(|c| c.key.from).collect();
    assert_eq!(deleted, ["vanishing"]);
}

/// Issue 18.7: a cursor cycle A → B → A is a paging loop as soon as A comes back, not at the
/// thousand-page cap.
#[test]
fn a_cursor_cycle_is_a_loop_as_soon_as_a_cursor_comes_back() {
    let e = env(&["cycling"], &[("cycling", ListFault::CursorCycle)], &[]);
    let out = e.run(&["plan", "--refresh", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(changes(&out), vec![ch("cycling", "delete", "unverified")]);
    // Page 1 (zero cursors) answers A, page 2 (A) answers B, page 3 (B) answers A again.
    assert_eq!(e.list_calls("cycling"), 3);
    assert!(stderr(&out).contains("loops"), "{}", stderr(&out));
}

/// Issue 18.7: `--max-retries` reaches the listing client, for `apply --refresh` and for
/// `plan --refresh`, which accepts it.
#[test]
fn max_retries_reaches_the_listing_client() {
    let e = env(&["flaky"], &[("flaky", ListFault::Code(50004))], &[]);
    let out = e.run(&[
        "plan",
        "--refresh",
        "--max-retries",
        "0",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(changes(&out), vec![ch("flaky", "delete", "unverified")]);
    assert_eq!(e.list_calls("flaky"), 1);

    let out = e.run(&[
        "plan",
        "--refresh",
        "--max-retries",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(e.list_calls("flaky"), 1 + 3);

    // apply stops at the prompt (no terminal): what matters is how often it listed.
    let out = e.run(&["apply", "--refresh", "--max-retries", "0"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(e.list_calls("flaky"), 1 + 3 + 1);
    assert!(e.fake.calls().is_empty());
}

/// Issue 18.7: when most users' lists fail the same way, listing stops, as apply does, rather
/// than call for every user; nothing is planned and the exit is 1.
#[test]
fn most_lists_failing_the_same_way_stop_listing_early() {
    let users: Vec<String> = (0..300).map(|i| format!("u{i:03}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let faults: Vec<(&str, ListFault)> =
        names.iter().map(|u| (*u, ListFault::Code(50002))).collect();
    let e = env(&names, &faults, &[]);
    // Five users at a time (20 calls/s / 4), so few are in flight when the rule trips.
    let out = e.run(&["plan", "--refresh", "--refresh-rate", "20"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("of the last 50 users' conversation lists") && err.contains("(code"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "no plan is printed");
    let listed = e.fake.get_list_calls().len();
    assert!((45..=60).contains(&listed), "{listed} users were listed");
}

fn all_list_calls(e: &Env) -> usize {
    e.fake.get_list_calls().values().sum()
}

/// Waits until fake-tim has seen more than `before` get_list calls (so the child is listing,
/// its signal handlers installed), or the child has exited.
fn wait_for_listing(e: &Env, child: &mut Child, before: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while all_list_calls(e) <= before {
        assert!(child.try_wait().unwrap().is_none(), "timctl exited early");
        assert!(Instant::now() < deadline, "timctl never listed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Issue 18.5: Ctrl-C or SIGTERM while listing (here against a get_list that never answers, so
/// waiting for the calls in flight would take the client's whole 30 s request timeout) says
/// "Stopping", exits 130 or 143 rather than 1, and plans nothing.
#[test]
fn a_signal_while_listing_stops_at_once_with_130_or_143() {
    let e = env(
        &["silent1", "silent2"],
        &[
            ("silent1", ListFault::Silent),
            ("silent2", ListFault::Silent),
        ],
        &[],
    );
    for (command, sig, code) in [
        (&["plan", "--refresh"][..], "-INT", 130),
        (&["plan", "--refresh"][..], "-TERM", 143),
        (&["apply", "--refresh", "--auto-approve"][..], "-TERM", 143),
    ] {
        let before = all_list_calls(&e);
        let mut child = e.spawn(command);
        wait_for_listing(&e, &mut child, before);
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{command:?} {sig}: {err}");
        assert!(err.contains("Stopping"), "{err}");
        assert!(err.contains("nothing was planned or changed"), "{err}");
        assert!(out.stdout.is_empty(), "no plan is printed");
        assert!(!e.dir.path().join(".timctl/state.db").exists());
    }
}

/// Issue 24.1: the drift alarm exits 1 when any user's list could not be read, after printing
/// the plan, and says which users it could not check; with every list read it passes.
#[test]
fn the_drift_alarm_fails_when_it_could_not_look() {
    let e = env(
        &["fine", "unreadable"],
        &[("unreadable", ListFault::NoCompleteFlag)],
        &[("fine", 3)],
    );
    let out = e.run(&["plan", "--refresh", "--drift-exitcode"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("unreadable"),
        "the plan is printed first: {plan}"
    );
    let err = stderr(&out);
    assert!(
        err.contains("the drift alarm could not check 1 users") && err.contains("unreadable"),
        "{err}"
    );

    let e = env(&["fine"], &[], &[("fine", 3)]);
    let out = e.run(&["plan", "--refresh", "--drift-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Issue 18.9: while a long list pages, the progress line counts its pages as they come (not
/// "0 calls/s" until the user is done) and does not guess an ETA from the users done.
#[test]
fn listing_progress_counts_pages_as_they_come() {
    use std::io::BufRead;
    let e = env(
        &["quick", "endless"],
        &[("endless", ListFault::NeverComplete)],
        &[("quick", 3)],
    );
    let mut child = e.spawn(&["plan", "--refresh", "--refresh-rate", "40"]);
    let stderr = child.stderr.take().unwrap();
    let mut seen = None;
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if line.starts_with("Listing conversation lists: 1/2 users") {
            seen = Some(line);
            break;
        }
    }
    signal(&child, "-TERM");
    let _ = child.wait();
    let line = seen.expect("a progress line while the endless list pages");
    assert!(line.contains("1 list still paging"), "{line}");
    assert!(!line.contains("ETA"), "{line}");
    let rate: f64 = line
        .split(", ")
        .find_map(|part| part.strip_suffix(" calls/s"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no calls/s in {line}"));
    assert!(
        rate >= 5.0,
        "the pages of the list still paging count: {line}"
    );
}
