//! The listing phase over an in-memory lister: each user once, bounded concurrency, a fatal
//! answer stops everything queued.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn peer(s: &str) -> Peer {
    s.parse().unwrap()
}

/// A server in memory: per user, its whole list (or an outcome to give instead).
#[derive(Default)]
struct FakeLister {
    lists: BTreeMap<UserId, Result<BTreeSet<Peer>, ListOutcome>>,
    calls: Mutex<Vec<UserId>>,
    /// Users whose list never answers.
    silent: BTreeSet<UserId>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

impl Lister for FakeLister {
    async fn list(&self, user: &UserId, wanted: &BTreeSet<Peer>) -> ListOutcome {
        self.calls.lock().unwrap().push(user.clone());
        if self.silent.contains(user) {
            return std::future::pending().await;
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::task::yield_now().await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        match self.lists.get(user) {
            Some(Ok(list)) => ListOutcome::Listed {
                present: list & wanted,
                pages: 1,
            },
            Some(Err(outcome)) => outcome.clone(),
            None => ListOutcome::Listed {
                present: BTreeSet::new(),
                pages: 1,
            },
        }
    }
}

fn wanted(users: usize) -> BTreeMap<UserId, BTreeSet<Peer>> {
    (0..users)
        .map(|i| {
            (
                user(&format!("u{i:03}")),
                [peer("user:bob"), peer("group:g")].into(),
            )
        })
        .collect()
}

fn opts(concurrency: usize) -> ListOptions {
    ListOptions {
        progress_interval: Duration::from_secs(3600),
        ..ListOptions::new(concurrency)
    }
}

#[tokio::test]
async fn each_user_is_listed_once_keeping_only_wanted_conversations() {
    let mut lister = FakeLister::default();
    lister.lists.insert(
        user("u001"),
        Ok([peer("user:bob"), peer("user:stranger"), peer("group:other")].into()),
    );
    lister
        .lists
        .insert(user("u002"), Err(ListOutcome::DoesNotExist));
    lister.lists.insert(
        user("u003"),
        Err(ListOutcome::Unreadable {
            why: "a page without CompleteFlag".into(),
            kind: "a page without CompleteFlag".into(),
        }),
    );
    let want = wanted(40);
    let mut events = Vec::new();
    let (seen, summary) = list(&want, &lister, &opts(7), &Stop::new(), &mut |e| {
        events.push(e.clone())
    })
    .await
    .unwrap();
    let mut calls = lister.calls.lock().unwrap().clone();
    calls.sort();
    assert_eq!(calls, want.keys().cloned().collect::<Vec<_>>());
    assert!(lister.most_in_flight.load(Ordering::SeqCst) <= 7);
    assert_eq!(seen.users.len(), 40);
    assert_eq!(
        seen.users[&user("u001")],
        Observation::Listed([peer("user:bob")].into())
    );
    assert_eq!(seen.users[&user("u002")], Observation::DoesNotExist);
    assert!(matches!(
        &seen.users[&user("u003")],
        Observation::Unreadable(why) if why.contains("CompleteFlag")
    ));
    assert_eq!(summary.users, 40);
    assert_eq!(events[0], ListingEvent::Listing { users: 40 });
    let listed = events
        .iter()
        .filter(|e| matches!(e, ListingEvent::Listed { .. }))
        .count();
    assert_eq!(listed, 40);
    assert_eq!(seen.at.subsec_nanosecond(), 0);
}

#[tokio::test]
async fn a_fatal_answer_stops_at_once_with_its_message() {
    let mut lister = FakeLister::default();
    lister.lists.insert(
        user("u002"),
        Err(ListOutcome::Fatal("the UserSig has expired (70001)".into())),
    );
    let stop = Stop::new();
    let result = list(&wanted(50), &lister, &opts(1), &stop, &mut |_| {}).await;
    assert_eq!(
        result.unwrap_err(),
        ListingError::Fatal {
            message: "the UserSig has expired (70001)".into()
        }
    );
    assert_eq!(stop.reason(), Some(StopReason::Fatal));
    // One at a time: nobody after the fatal answer was called.
    assert_eq!(lister.calls.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_stop_from_outside_is_an_error_not_a_partial_plan() {
    let lister = FakeLister::default();
    let stop = Stop::new();
    stop.stop(StopReason::Interrupted);
    let result = list(&wanted(5), &lister, &opts(2), &stop, &mut |_| {}).await;
    assert_eq!(
        result.unwrap_err(),
        ListingError::Stopped {
            reason: StopReason::Interrupted
        }
    );
    assert!(lister.calls.lock().unwrap().is_empty());
}

/// Issue 18.7: when most users' lists fail the same way, listing stops, as apply does, rather
/// than fail for every user.
#[tokio::test]
async fn most_lists_failing_the_same_way_stop_listing() {
    let mut lister = FakeLister::default();
    let want = wanted(200);
    for (i, u) in want.keys().enumerate() {
        // Every tenth fails another way: still "most of them the same way".
        let kind = if i % 10 == 9 {
            "a paging loop"
        } else {
            "code 50002"
        };
        lister.lists.insert(
            u.clone(),
            Err(ListOutcome::Unreadable {
                why: format!("{u}: {kind}"),
                kind: kind.into(),
            }),
        );
    }
    let stop = Stop::new();
    let result = list(&want, &lister, &opts(1), &stop, &mut |_| {}).await;
    match result.unwrap_err() {
        ListingError::TooManyFailures { message } => {
            assert!(message.contains("45 of the last 50"), "{message}");
            assert!(message.contains("code 50002"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(stop.reason(), Some(StopReason::TooManyFailures));
    // One at a time: the 45th 50002 is the 49th user (nine in ten fail with it).
    assert_eq!(lister.calls.lock().unwrap().len(), 49);
}

/// Issue 18.5: a stop from outside ends listing at once, without waiting for the lists in
/// flight (here, lists that never answer): listing has nothing to record.
#[tokio::test(start_paused = true)]
async fn a_stop_does_not_wait_for_lists_in_flight() {
    let mut lister = FakeLister::default();
    let want = wanted(10);
    lister.silent = want.keys().cloned().collect();
    let stop = Stop::new();
    let stopper = {
        let stop = stop.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.stop(StopReason::Terminated);
        }
    };
    let options = opts(4);
    let mut ignore = |_: &ListingEvent| {};
    let (result, ()) = tokio::join!(
        tokio::time::timeout(
            Duration::from_secs(3600),
            list(&want, &lister, &options, &stop, &mut ignore)
        ),
        stopper
    );
    assert_eq!(
        result.expect("observe returns without waiting for the silent lists"),
        Err(ListingError::Stopped {
            reason: StopReason::Terminated
        })
    );
    assert_eq!(lister.calls.lock().unwrap().len(), 4);
}

#[test]
fn listed_events_serialize_as_documented() {
    let e = ListingEvent::Listed {
        from: "alice".into(),
        outcome: "unreadable",
        present: 0,
        pages: 0,
        why: Some("no CompleteFlag".into()),
    };
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        serde_json::json!({"event": "listed", "from": "alice", "outcome": "unreadable",
                           "present": 0, "pages": 0, "why": "no CompleteFlag"})
    );
}

/// A state in memory: the seam every operation reads through, with no file and no database.
struct MemoryLedger {
    meta: Option<crate::ledger::Meta>,
    entries: Vec<crate::ledger::StateEntry>,
}

impl MemoryLedger {
    fn of_app(sdkappid: u64, recorded: &[(&str, &str)]) -> Self {
        let entries = recorded
            .iter()
            .map(|(from, peer)| crate::ledger::StateEntry {
                key: crate::ids::ConversationKey::new(user(from), self::peer(peer)),
                clear_roaming: false,
                deleted_at: jiff::Timestamp::UNIX_EPOCH,
                run_id: uuid::Uuid::nil(),
                origin: crate::ledger::Origin::Deleted,
            })
            .collect();
        MemoryLedger {
            meta: Some(crate::ledger::Meta {
                state: crate::ledger::StateRef {
                    lineage: uuid::Uuid::from_u128(7),
                    serial: 3,
                },
                sdkappid,
                created_at: jiff::Timestamp::UNIX_EPOCH,
                created_by: "test".to_owned(),
                schema_version: 1,
            }),
            entries,
        }
    }
}

impl Ledger for MemoryLedger {
    fn location(&self) -> String {
        "memory".to_owned()
    }
    fn meta(&self) -> Option<&crate::ledger::Meta> {
        self.meta.as_ref()
    }
    fn snapshot(&self) -> Result<Option<crate::ledger::Snapshot>, LedgerError> {
        Ok(self.meta.clone().map(|meta| crate::ledger::Snapshot {
            meta,
            runs: Vec::new(),
            entries: self.entries.clone(),
        }))
    }
}

const APP: u64 = 1_400_000_001;

/// The manifests: alice must not talk to bob or carol, dave (never imported) not to erin, and
/// frank not to grace.
fn manifests() -> DesiredState {
    let mut entries: Vec<crate::desired::DesiredEntry> = [
        ("alice", "user:bob"),
        ("alice", "user:carol"),
        ("dave", "user:erin"),
        ("frank", "user:grace"),
    ]
    .iter()
    .map(|(from, p)| crate::desired::DesiredEntry {
        key: crate::ids::ConversationKey::new(user(from), peer(p)),
        clear_roaming: false,
    })
    .collect();
    entries.sort();
    DesiredState {
        app: crate::desired::App {
            sdkappid: APP,
            region: crate::api::Region::Singapore,
            admin: user("administrator"),
        },
        entries,
        digest: "d".to_owned(),
        files: 1,
    }
}

/// The reconcile operation as `plan --refresh`, `apply --refresh` and serve's resync run it,
/// with no binary: the users chosen and the app checked on one read of the state, each listed
/// once through the lister, and the plan made from the same state and what the lists held.
#[tokio::test]
async fn reconcile_plans_from_the_state_and_what_the_lists_hold() {
    use crate::plan::{Action, Reason};
    let desired = manifests();
    // alice's bob was deleted before, and came back; frank's grace is recorded and gone.
    let state = MemoryLedger::of_app(
        APP,
        &[
            ("alice", "user:bob"),
            ("frank", "user:grace"),
            ("zoe", "user:x"),
        ],
    );
    let filter = Filter::default();
    let wanted = users_to_list(&desired, &state, &filter).unwrap();
    assert_eq!(
        wanted.keys().map(|u| u.as_str()).collect::<Vec<_>>(),
        ["alice", "dave", "frank"],
        "the manifests' users, each once; zoe is only in the state, so she is not listed"
    );
    let lister = FakeLister {
        lists: [
            (
                user("alice"),
                Ok([peer("user:bob"), peer("user:mallory")].into()),
            ),
            (user("dave"), Err(ListOutcome::DoesNotExist)),
            (user("frank"), Ok(BTreeSet::new())),
        ]
        .into(),
        ..FakeLister::default()
    };
    let mut events = Vec::new();
    let (seen, summary) = list(&wanted, &lister, &opts(2), &Stop::new(), &mut |e| {
        events.push(e.clone())
    })
    .await
    .unwrap();
    assert_eq!(summary.users, 3);
    assert_eq!(
        lister.calls.lock().unwrap().len(),
        3,
        "one list per user, no call twice"
    );
    assert_eq!(events[0], ListingEvent::Listing { users: 3 });

    let plan = crate::plan::make(&desired, &state, &filter, Some(&seen)).unwrap();
    assert_eq!(
        plan.state,
        state.state_ref(),
        "planned against the state it read"
    );
    assert_eq!(plan.refreshed_at, Some(seen.at));
    let changes: Vec<(&str, String, Action, Reason)> = plan
        .changes
        .iter()
        .map(|c| {
            (
                c.key.from.as_str(),
                c.key.peer.to_string(),
                c.action,
                c.reason,
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            (
                "alice",
                "user:bob".to_owned(),
                Action::Delete,
                Reason::CameBack
            ),
            (
                "alice",
                "user:carol".to_owned(),
                Action::Record,
                Reason::Absent
            ),
            (
                "dave",
                "user:erin".to_owned(),
                Action::Record,
                Reason::Absent
            ),
            (
                "zoe",
                "user:x".to_owned(),
                Action::Forget,
                Reason::NotInManifest
            ),
        ]
    );
    // Without the lists, the same state plans from the state alone.
    let unrefreshed = crate::plan::make(&desired, &state, &filter, None).unwrap();
    assert!(unrefreshed.refreshed_at.is_none());
    assert!(
        unrefreshed
            .changes
            .iter()
            .all(|c| c.reason == Reason::New || c.reason == Reason::NotInManifest)
    );
}

/// A state bound to another app is refused before any list is read: the lister is never
/// called, and no credentials are needed to find out.
#[test]
fn reconcile_refuses_another_apps_state_before_listing() {
    let state = MemoryLedger::of_app(APP + 1, &[]);
    let refused = users_to_list(&manifests(), &state, &Filter::default()).unwrap_err();
    assert!(
        matches!(refused, LedgerError::OtherApp { bound, requested, .. }
            if bound == APP + 1 && requested == APP),
        "{refused:?}"
    );
}
