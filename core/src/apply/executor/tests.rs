//! The executor's rules, with a scripted deleter and an in-memory recorder. End-to-end
//! tests of `timctl apply` (real HTTP, real ledger) live in `tests/`.

use super::*;
use crate::ids::{GroupId, Peer};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Answers each deletion by its From_Account: `fatal*`, `bad*` (50002), `ghost*` (50001),
/// anything else is deleted. Sleeps `delay` per call.
struct Scripted {
    calls: AtomicUsize,
    delay: Duration,
}

impl Deleter for Scripted {
    async fn delete(&self, d: &Deletion) -> DeletionOutcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let from = d.key.from.as_str();
        if from.starts_with("fatal") {
            DeletionOutcome::Fatal {
                message: "the UserSig was rejected (70003)".into(),
            }
        } else if from.starts_with("bad") {
            DeletionOutcome::ItemFailed {
                code: Some(50002),
                message: "bad".into(),
            }
        } else if from.starts_with("ghost") {
            DeletionOutcome::AlreadyAbsent { code: 50001 }
        } else {
            DeletionOutcome::Deleted
        }
    }
}

#[derive(Default)]
struct Memory {
    batches: Vec<(Instant, Vec<Deleted>)>,
    forgotten: Vec<ConversationKey>,
}

impl Recorder for Memory {
    fn record(&mut self, confirmed: &[Deleted]) -> Result<(), RecordError> {
        self.batches.push((Instant::now(), confirmed.to_vec()));
        Ok(())
    }
    fn forget(&mut self, entries: &[ConversationKey]) -> Result<(), RecordError> {
        self.forgotten.extend_from_slice(entries);
        Ok(())
    }
}

fn deletions(from: &str, n: usize) -> Vec<Deletion> {
    (0..n)
        .map(|i| Deletion {
            key: ConversationKey::new(
                UserId::new(format!("{from}{i}")).unwrap(),
                Peer::User(UserId::new("peer").unwrap()),
            ),
            clear_roaming: i % 2 == 0,
        })
        .collect()
}

struct Run {
    summary: RunSummary,
    recorder: Memory,
    events: Vec<Event>,
    calls: usize,
}

fn check(
    plan: Vec<Deletion>,
    forgets: Vec<ConversationKey>,
    opts: ExecOptions,
    stop: &Stop,
    delay: Duration,
) -> Run {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deleter = Scripted {
        calls: AtomicUsize::new(0),
        delay,
    };
    let mut events = Vec::new();
    let Executed {
        summary,
        recorder,
        record_error,
    } = rt.block_on(execute(
        Execution {
            deletions: plan,
            forgets,
            deleter: &deleter,
            recorder: Memory::default(),
            opts: &opts,
            stop,
        },
        &mut |e: &Event| events.push(e.clone()),
    ));
    assert!(record_error.is_none());
    Run {
        summary,
        recorder,
        events,
        calls: deleter.calls.load(Ordering::SeqCst),
    }
}

fn recorded(r: &Run) -> usize {
    r.recorder.batches.iter().map(|(_, b)| b.len()).sum()
}

#[test]
fn everything_deleted_is_recorded_once() {
    let plan = deletions("alice", 100);
    let r = check(
        plan,
        vec![],
        ExecOptions::new(32),
        &Stop::new(),
        Duration::ZERO,
    );
    assert_eq!(
        (r.summary.deleted, r.summary.failed, r.calls),
        (100, 0, 100)
    );
    assert_eq!(recorded(&r), 100);
    assert!(r.summary.succeeded());
    assert!(matches!(
        r.events.first(),
        Some(Event::Planned {
            delete: 100,
            forget: 0
        })
    ));
    assert!(matches!(r.events.last(), Some(Event::Summary(_))));
}

#[test]
fn confirmations_are_recorded_while_the_run_goes_on() {
    let opts = ExecOptions {
        concurrency: 1,
        flush_interval: Duration::from_millis(50),
        ..ExecOptions::new(32)
    };
    let plan = deletions("alice", 20);
    let start = Instant::now();
    let r = check(plan, vec![], opts, &Stop::new(), Duration::from_millis(20));
    // 20 calls of 20 ms with a 50 ms flush interval: several batches, the first long
    // before the run ended.
    assert!(
        r.recorder.batches.len() >= 3,
        "{} batches",
        r.recorder.batches.len()
    );
    let first = r.recorder.batches[0].0.duration_since(start);
    assert!(
        first < Duration::from_millis(300),
        "first batch after {first:?}"
    );
    assert_eq!(recorded(&r), 20);
}

#[test]
fn a_fatal_answer_stops_new_calls() {
    let mut plan = deletions("alice", 2);
    plan.extend(deletions("fatal", 1));
    plan.extend(deletions("carol", 50));
    let opts = ExecOptions {
        concurrency: 1,
        ..ExecOptions::new(32)
    };
    let r = check(plan, vec![], opts, &Stop::new(), Duration::ZERO);
    assert_eq!(r.calls, 3);
    assert_eq!(r.summary.stopped, Some(StopReason::Fatal));
    assert_eq!(
        r.summary.stop_message.as_deref(),
        Some("the UserSig was rejected (70003)")
    );
    assert_eq!((r.summary.deleted, r.summary.not_started), (2, 50));
    assert_eq!(recorded(&r), 2);
    assert!(!r.summary.succeeded());
}

#[test]
fn one_item_failure_does_not_stop_the_rest() {
    let mut plan = deletions("alice", 10);
    plan.extend(deletions("bad", 3));
    plan.extend(deletions("carol", 10));
    let r = check(
        plan,
        vec![],
        ExecOptions::new(32),
        &Stop::new(),
        Duration::ZERO,
    );
    assert_eq!(
        (r.summary.deleted, r.summary.failed, r.summary.stopped),
        (20, 3, None)
    );
    let failed: Vec<&Event> = r
        .events
        .iter()
        .filter(|e| matches!(e, Event::Failed { .. }))
        .collect();
    assert_eq!(failed.len(), 3);
    assert_eq!(recorded(&r), 20);
}

#[test]
fn the_same_failure_everywhere_stops_the_run_early() {
    let plan = deletions("bad", 1000);
    let opts = ExecOptions {
        concurrency: 4,
        ..ExecOptions::new(32)
    };
    let r = check(plan, vec![], opts, &Stop::new(), Duration::ZERO);
    assert_eq!(r.summary.stopped, Some(StopReason::TooManyFailures));
    assert!(r.calls < 60, "{} calls", r.calls);
    assert!(
        r.summary
            .stop_message
            .unwrap()
            .contains("failed with code 50002")
    );
}

#[test]
fn missing_users_count_as_done_and_are_named() {
    let mut plan = deletions("ghost", 3);
    plan.extend(deletions("ghost", 3)); // the same users again: named once
    plan.extend(deletions("alice", 2));
    // A group conversation's 50001 can only be about its user; a one-to-one one's may be about
    // the other participant, and the summary counts those apart.
    plan.push(Deletion {
        key: ConversationKey::new(
            UserId::new("ghost0").unwrap(),
            Peer::Group(GroupId::new("@TGS#g").unwrap()),
        ),
        clear_roaming: false,
    });
    let r = check(
        plan,
        vec![],
        ExecOptions::new(32),
        &Stop::new(),
        Duration::ZERO,
    );
    assert_eq!((r.summary.deleted, r.summary.already_absent), (2, 7));
    assert_eq!(r.summary.missing_users, vec!["ghost0", "ghost1", "ghost2"]);
    assert_eq!(r.summary.missing_user_count, 3);
    assert_eq!(r.summary.missing_in_one_to_one, 6);
    assert_eq!(recorded(&r), 9);
    assert!(r.summary.succeeded());
}

#[test]
fn every_missing_user_is_counted_once_and_the_first_hundred_named() {
    let mut plan = deletions("ghost", 150);
    plan.extend(deletions("ghost", 150));
    let r = check(
        plan,
        vec![],
        ExecOptions::new(32),
        &Stop::new(),
        Duration::ZERO,
    );
    assert_eq!(r.summary.missing_user_count, 150);
    assert_eq!(r.summary.missing_users.len(), MISSING_USERS_SHOWN);
    assert_eq!(r.summary.already_absent, 300);
}

#[test]
fn a_stop_from_outside_lets_nothing_new_start() {
    let stop = Stop::new();
    assert!(stop.stop(StopReason::Terminated));
    assert!(!stop.stop(StopReason::Interrupted), "the first reason wins");
    let r = check(
        deletions("alice", 10),
        vec![],
        ExecOptions::new(32),
        &stop,
        Duration::ZERO,
    );
    assert_eq!((r.calls, r.summary.not_started), (0, 10));
    assert_eq!(r.summary.stopped, Some(StopReason::Terminated));
}

#[test]
fn forgets_reach_the_recorder_without_calls() {
    let forgets = vec![ConversationKey::new(
        UserId::new("alice").unwrap(),
        Peer::User(UserId::new("bob").unwrap()),
    )];
    let r = check(
        vec![],
        forgets.clone(),
        ExecOptions::new(32),
        &Stop::new(),
        Duration::ZERO,
    );
    assert_eq!(r.calls, 0);
    assert_eq!(r.recorder.forgotten, forgets);
    assert_eq!(r.summary.forgotten, 1);
}

/// A recorder that cannot write until `open` is set: a stalled state.
struct Stalled {
    open: Arc<std::sync::atomic::AtomicBool>,
    recorded: Arc<AtomicUsize>,
}

impl Recorder for Stalled {
    fn record(&mut self, confirmed: &[Deleted]) -> Result<(), RecordError> {
        while !self.open.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.recorded.fetch_add(confirmed.len(), Ordering::SeqCst);
        Ok(())
    }
    fn forget(&mut self, _: &[ConversationKey]) -> Result<(), RecordError> {
        Ok(())
    }
}

/// Issue 18.3: calls never outrun a state that cannot keep up. While the recorder is stuck,
/// no more than `max_unrecorded` calls are made; once it writes again, the run finishes and
/// records everything.
#[test]
fn calls_wait_for_a_stalled_state_beyond_max_unrecorded() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let deleter = Arc::new(Scripted {
        calls: AtomicUsize::new(0),
        delay: Duration::ZERO,
    });
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recorded = Arc::new(AtomicUsize::new(0));
    let recorder = Stalled {
        open: Arc::clone(&open),
        recorded: Arc::clone(&recorded),
    };
    let mut opts = ExecOptions::new(8);
    opts.max_unrecorded = 40;
    opts.flush_interval = Duration::from_millis(10);
    let stop = Stop::new();
    let run = rt.spawn({
        let deleter = Arc::clone(&deleter);
        let stop = stop.clone();
        async move {
            execute(
                Execution {
                    deletions: deletions("alice", 500),
                    forgets: vec![],
                    deleter: &*deleter,
                    recorder,
                    opts: &opts,
                    stop: &stop,
                },
                &mut |_: &Event| {},
            )
            .await
            .summary
        }
    });
    // Wait for the slots to be taken, then give the calls time to run on if nothing held
    // them (without the bound, all 500 are made at once).
    while deleter.calls.load(Ordering::SeqCst) < 40 {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let last = deleter.calls.load(Ordering::SeqCst);
    assert_eq!(last, 40, "calls made while the state was stalled");
    assert_eq!(recorded.load(Ordering::SeqCst), 0);
    open.store(true, Ordering::SeqCst);
    let summary = rt.block_on(run).unwrap();
    assert_eq!(summary.deleted, 500);
    assert_eq!(recorded.load(Ordering::SeqCst), 500);
    assert_eq!(deleter.calls.load(Ordering::SeqCst), 500);
}

/// Issue 18.3: a stop reaches calls waiting for a slot behind a stalled state: they are not
/// started, and the executor ends once the state has taken what it had.
#[test]
fn a_stop_releases_calls_waiting_for_a_stalled_state() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let deleter = Arc::new(Scripted {
        calls: AtomicUsize::new(0),
        delay: Duration::ZERO,
    });
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recorded = Arc::new(AtomicUsize::new(0));
    let recorder = Stalled {
        open: Arc::clone(&open),
        recorded: Arc::clone(&recorded),
    };
    let mut opts = ExecOptions::new(4);
    opts.max_unrecorded = 10;
    let stop = Stop::new();
    let run = rt.spawn({
        let deleter = Arc::clone(&deleter);
        let stop = stop.clone();
        async move {
            execute(
                Execution {
                    deletions: deletions("alice", 100),
                    forgets: vec![],
                    deleter: &*deleter,
                    recorder,
                    opts: &opts,
                    stop: &stop,
                },
                &mut |_: &Event| {},
            )
            .await
            .summary
        }
    });
    while deleter.calls.load(Ordering::SeqCst) < 10 {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.stop(StopReason::Terminated);
    open.store(true, Ordering::SeqCst);
    let summary = rt.block_on(run).unwrap();
    assert_eq!(deleter.calls.load(Ordering::SeqCst), 10);
    assert_eq!(summary.deleted, 10);
    assert_eq!(summary.not_started, 90);
    assert_eq!(recorded.load(Ordering::SeqCst), 10);
}

#[test]
fn failures_are_grouped_by_code_most_frequent_first_naming_the_first_few() {
    let mut recap = FailureRecap::default();
    for i in 0..5 {
        recap.add(
            &format!("u{i}"),
            PeerKind::User,
            "p",
            Some(50002),
            "50002 (bad)",
        );
    }
    recap.add("t", PeerKind::Group, "@TGS#g", None, "timed out");
    recap.add("v", PeerKind::User, "p", Some(90001), "90001 (other)");
    recap.add(
        "w",
        PeerKind::User,
        "p",
        Some(90001),
        "90001 (other, again)",
    );
    let groups = recap.groups();
    let codes: Vec<_> = groups.iter().map(|g| (g.code, g.count)).collect();
    assert_eq!(codes, [(Some(50002), 5), (Some(90001), 2), (None, 1)]);
    assert_eq!(groups[0].first.len(), FAILURES_SHOWN_PER_CODE);
    assert_eq!(groups[0].first[0].from, "u0");
    assert_eq!(
        groups[1].message, "90001 (other)",
        "the first message is kept"
    );
    let (users, more) = recap.users();
    assert_eq!(users, ["t", "u0", "u1", "u2", "u3", "u4", "v", "w"]);
    assert!(!more);
    for i in 0..20 {
        recap.add(
            &format!("x{i:02}"),
            PeerKind::User,
            "p",
            Some(50002),
            "50002 (bad)",
        );
    }
    let (users, more) = recap.users();
    assert_eq!(users.len(), FAILED_USERS_SHOWN);
    assert!(more);
}

#[test]
fn progress_says_the_share_done_and_the_time_left() {
    assert_eq!(progress_figures(0, 500, 0.0), (0, None));
    assert_eq!(progress_figures(100, 500, 50.0), (20, Some(8)));
    assert_eq!(progress_figures(499, 500, 200.0), (99, Some(1)));
    assert_eq!(progress_figures(0, 0, 0.0), (100, None));
}

#[test]
fn an_event_line_starts_with_its_version_time_and_run() {
    let run: uuid::Uuid = "6f1c2e3a-0000-4000-8000-000000000001".parse().unwrap();
    let at: jiff::Timestamp = "2026-12-05T23:50:01.123456Z".parse().unwrap();
    let line = event_line(
        run,
        at,
        &Event::Planned {
            delete: 2,
            forget: 0,
        },
    )
    .unwrap();
    assert_eq!(
        line,
        "{\"format_version\":1,\"at\":\"2026-12-05T23:50:01.123Z\",\
         \"run\":\"6f1c2e3a-0000-4000-8000-000000000001\",\"event\":\"planned\",\"delete\":2,\"forget\":0}"
    );
    let summary = event_line(run, at, &Event::Summary(RunSummary::default())).unwrap();
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(v["event"], "summary");
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["failures"], serde_json::json!([]));
    let error = event_line(
        run,
        at,
        &Event::Error {
            message: "no".into(),
        },
    )
    .unwrap();
    assert!(
        error.ends_with("\"event\":\"error\",\"message\":\"no\"}"),
        "{error}"
    );
}
