//! Each rule of the refreshed plan, one test apiece, then properties over random inputs.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::api::Region;
use crate::desired::App;
use crate::ids::ConversationKey;
use crate::ledger::Origin;
use crate::plan::{Action, Change, Summary};

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn peer(s: &str) -> Peer {
    s.parse().unwrap()
}

fn desired(entries: &[(&str, &str, bool)]) -> DesiredState {
    let mut entries: Vec<DesiredEntry> = entries
        .iter()
        .map(|(from, p, clear)| DesiredEntry {
            key: ConversationKey::new(user(from), peer(p)),
            clear_roaming: *clear,
        })
        .collect();
    entries.sort();
    DesiredState {
        app: App {
            sdkappid: 1_400_000_001,
            region: Region::Singapore,
            admin: user("administrator"),
        },
        entries,
        digest: "d".to_owned(),
        files: 1,
    }
}

fn state(entries: &[(&str, &str, bool)]) -> Vec<StateEntry> {
    let mut entries: Vec<StateEntry> = entries
        .iter()
        .map(|(from, p, clear)| StateEntry {
            key: ConversationKey::new(user(from), peer(p)),
            clear_roaming: *clear,
            deleted_at: jiff::Timestamp::UNIX_EPOCH,
            run_id: uuid::Uuid::nil(),
            origin: Origin::Deleted,
        })
        .collect();
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    entries
}

fn at() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_800_000_000).unwrap()
}

fn seen(users: &[(&str, Observation)]) -> Observations {
    Observations {
        at: at(),
        users: users.iter().map(|(u, o)| (user(u), o.clone())).collect(),
    }
}

fn listed(peers: &[&str]) -> Observation {
    Observation::Listed(peers.iter().map(|p| peer(p)).collect())
}

fn unreadable() -> Observation {
    Observation::Unreadable("a page without CompleteFlag".to_owned())
}

/// The one change of a one-entry plan (or `None` when it is unchanged).
fn only(
    want: (&str, &str, bool),
    had: Option<bool>,
    observation: Option<Observation>,
) -> Option<(Action, Reason, bool)> {
    let d = desired(&[want]);
    let s = match had {
        Some(clear) => state(&[(want.0, want.1, clear)]),
        None => Vec::new(),
    };
    let o = match observation {
        Some(o) => seen(&[(want.0, o)]),
        None => seen(&[]),
    };
    let plan = diff(&d, None, &s, &Filter::default(), &o);
    assert_eq!(plan.refreshed_at, Some(at()));
    assert!(plan.changes.len() <= 1);
    let counted = Summary::count(&plan.changes, plan.summary.unchanged);
    assert_eq!(plan.summary, counted);
    assert_eq!(plan.summary.unchanged, u64::from(plan.changes.is_empty()));
    plan.changes
        .first()
        .map(|c| (c.action, c.reason, c.clear_roaming))
}

#[test]
fn on_the_server_not_in_the_state_is_a_present_delete() {
    let got = only(
        ("alice", "user:bob", false),
        None,
        Some(listed(&["user:bob"])),
    );
    assert_eq!(got, Some((Action::Delete, Reason::Present, false)));
}

#[test]
fn on_the_server_and_in_the_state_came_back() {
    let got = only(
        ("alice", "user:bob", true),
        Some(true),
        Some(listed(&["user:bob"])),
    );
    assert_eq!(got, Some((Action::Delete, Reason::CameBack, true)));
}

#[test]
fn absent_and_not_in_the_state_is_recorded_with_the_manifest_clear_roaming() {
    let got = only(
        ("alice", "group:g1", false),
        None,
        Some(listed(&["user:x"])),
    );
    assert_eq!(got, Some((Action::Record, Reason::Absent, false)));
}

#[test]
fn absent_clear_roaming_entry_not_in_the_state_is_still_deleted() {
    let got = only(("alice", "user:bob", true), None, Some(listed(&[])));
    assert_eq!(got, Some((Action::Delete, Reason::ClearRoaming, true)));
}

#[test]
fn absent_and_in_the_state_is_unchanged() {
    assert_eq!(
        only(("alice", "user:bob", false), Some(false), Some(listed(&[]))),
        None
    );
    assert_eq!(
        only(("alice", "user:bob", true), Some(true), Some(listed(&[]))),
        None
    );
    // A record with clear-roaming covers an entry that no longer asks for it.
    assert_eq!(
        only(("alice", "user:bob", false), Some(true), Some(listed(&[]))),
        None
    );
}

#[test]
fn absent_in_the_state_without_clear_roaming_the_manifest_now_asks_for_is_deleted() {
    let got = only(("alice", "user:bob", true), Some(false), Some(listed(&[])));
    assert_eq!(got, Some((Action::Delete, Reason::ClearRoaming, true)));
}

#[test]
fn a_user_that_does_not_exist_is_recorded_clear_roaming_or_not() {
    for clear in [false, true] {
        let got = only(
            ("ghost", "user:bob", clear),
            None,
            Some(Observation::DoesNotExist),
        );
        assert_eq!(got, Some((Action::Record, Reason::Absent, clear)));
    }
    assert_eq!(
        only(
            ("ghost", "user:bob", true),
            Some(true),
            Some(Observation::DoesNotExist)
        ),
        None
    );
}

#[test]
fn an_unreadable_user_is_deleted_unverified_whatever_the_state() {
    for had in [None, Some(false), Some(true)] {
        for clear in [false, true] {
            let got = only(("alice", "user:bob", clear), had, Some(unreadable()));
            assert_eq!(got, Some((Action::Delete, Reason::Unverified, clear)));
        }
    }
}

#[test]
fn a_user_missing_from_the_observations_is_unverified_never_absent() {
    let got = only(("alice", "user:bob", false), None, None);
    assert_eq!(got, Some((Action::Delete, Reason::Unverified, false)));
}

#[test]
fn state_entries_not_in_the_manifest_are_forgotten_whatever_the_server_says() {
    let d = desired(&[("alice", "user:bob", false)]);
    let s = state(&[("alice", "user:bob", false), ("alice", "user:old", true)]);
    for o in [
        listed(&["user:old"]),
        unreadable(),
        Observation::DoesNotExist,
    ] {
        let plan = diff(&d, None, &s, &Filter::default(), &seen(&[("alice", o)]));
        let forgets: Vec<&Change> = plan
            .changes
            .iter()
            .filter(|c| c.action == Action::Forget)
            .collect();
        assert_eq!(forgets.len(), 1);
        assert_eq!(forgets[0].key.peer, peer("user:old"));
        assert_eq!(forgets[0].reason, Reason::NotInManifest);
        assert!(forgets[0].clear_roaming);
    }
}

#[test]
fn wanted_lists_each_manifest_user_within_the_filter_once() {
    let d = desired(&[
        ("alice", "user:bob", false),
        ("alice", "group:g", true),
        ("carol", "user:dave", false),
        ("erin", "user:x", false),
    ]);
    let filter = Filter {
        exclude_users: [user("erin")].into_iter().collect(),
        ..Filter::default()
    };
    let w = wanted(&d, &filter);
    assert_eq!(
        w.keys().map(UserId::as_str).collect::<Vec<_>>(),
        ["alice", "carol"]
    );
    assert_eq!(
        w[&user("alice")],
        [peer("user:bob"), peer("group:g")].into()
    );
}

#[test]
fn warnings_name_missing_and_unreadable_users() {
    let o = seen(&[
        ("alice", listed(&[])),
        ("ghost", Observation::DoesNotExist),
        ("erin", unreadable()),
    ]);
    assert_eq!(missing_users(&o), [&user("ghost")]);
    assert_eq!(
        unreadable_users(&o),
        [(&user("erin"), "a page without CompleteFlag")]
    );
}

#[test]
fn without_refresh_reasons_are_new_clear_roaming_reassert_and_not_in_manifest() {
    let d = desired(&[
        ("alice", "user:a", false),
        ("alice", "user:b", true),
        ("alice", "user:c", false),
    ]);
    let s = state(&[
        ("alice", "user:b", false),
        ("alice", "user:c", false),
        ("alice", "user:d", false),
    ]);
    let reasons = |reassert| {
        let filter = Filter {
            reassert,
            ..Filter::default()
        };
        crate::plan::diff(&d, None, &s, &filter)
            .changes
            .iter()
            .map(|c| (c.key.peer.to_string(), c.reason))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        reasons(false),
        [
            ("user:a".to_owned(), Reason::New),
            ("user:b".to_owned(), Reason::ClearRoaming),
            ("user:d".to_owned(), Reason::NotInManifest),
        ]
    );
    assert_eq!(
        reasons(true),
        [
            ("user:a".to_owned(), Reason::New),
            ("user:b".to_owned(), Reason::ClearRoaming),
            ("user:c".to_owned(), Reason::Reassert),
            ("user:d".to_owned(), Reason::NotInManifest),
        ]
    );
    assert!(
        crate::plan::diff(&d, None, &s, &Filter::default())
            .refreshed_at
            .is_none()
    );
}

#[test]
fn every_reason_has_one_spelling_and_one_action() {
    for r in Reason::ALL {
        assert_eq!(Reason::parse(r.as_str()), Some(r));
        let c = Change::new(ConversationKey::new(user("a"), peer("user:b")), r, false);
        assert_eq!(c.action, r.action());
    }
    assert_eq!(Reason::parse("gone"), None);
}

// ----- properties -----

fn arb_peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        "[a-c]".prop_map(|s| peer(&format!("user:{s}"))),
        "[a-c]".prop_map(|s| peer(&format!("group:{s}"))),
    ]
}

fn arb_user() -> impl Strategy<Value = UserId> {
    "[p-s]".prop_map(|s| user(&s))
}

fn arb_entries() -> impl Strategy<Value = BTreeMap<(UserId, Peer), bool>> {
    proptest::collection::btree_map((arb_user(), arb_peer()), any::<bool>(), 0..12)
}

/// Per user: `None` unreadable, `Some(None)` does not exist, `Some(Some(peers))` listed.
fn arb_server() -> impl Strategy<Value = BTreeMap<UserId, Option<Option<BTreeSet<Peer>>>>> {
    proptest::collection::btree_map(
        arb_user(),
        proptest::option::of(proptest::option::of(proptest::collection::btree_set(
            arb_peer(),
            0..6,
        ))),
        0..5,
    )
}

fn to_desired(m: &BTreeMap<(UserId, Peer), bool>) -> DesiredState {
    let mut d = desired(&[]);
    d.entries = m
        .iter()
        .map(|((from, peer), clear)| DesiredEntry {
            key: ConversationKey::new(from.clone(), peer.clone()),
            clear_roaming: *clear,
        })
        .collect();
    d
}

fn to_state(m: &BTreeMap<(UserId, Peer), bool>) -> Vec<StateEntry> {
    m.iter()
        .map(|((from, peer), clear)| StateEntry {
            key: ConversationKey::new(from.clone(), peer.clone()),
            clear_roaming: *clear,
            deleted_at: jiff::Timestamp::UNIX_EPOCH,
            run_id: uuid::Uuid::nil(),
            origin: Origin::Deleted,
        })
        .collect()
}

/// What the listing phase would report for `server`, keeping only the manifest's peers.
fn observe(
    server: &BTreeMap<UserId, Option<Option<BTreeSet<Peer>>>>,
    want: &BTreeMap<UserId, BTreeSet<Peer>>,
) -> Observations {
    let users = want
        .iter()
        .map(|(u, peers)| {
            let o = match server.get(u) {
                None => Observation::Listed(BTreeSet::new()),
                Some(None) => unreadable(),
                Some(Some(None)) => Observation::DoesNotExist,
                Some(Some(Some(list))) => Observation::Listed(&peers.clone() & list),
            };
            (u.clone(), o)
        })
        .collect();
    Observations { at: at(), users }
}

proptest! {
    #[test]
    fn never_records_an_unverified_user_and_deletes_everything_present(
        want in arb_entries(), have in arb_entries(), server in arb_server()
    ) {
        let d = to_desired(&want);
        let o = observe(&server, &wanted(&d, &Filter::default()));
        let plan = diff(&d, None, &to_state(&have), &Filter::default(), &o);
        let mut planned = BTreeSet::new();
        for c in &plan.changes {
            let key = (c.key.from.clone(), c.key.peer.clone());
            prop_assert!(planned.insert(key.clone()));
            prop_assert_eq!(c.action, c.reason.action());
            match o.users.get(&c.key.from) {
                Some(Observation::Unreadable(_)) => {
                    prop_assert_ne!(c.action, Action::Record);
                    if c.action == Action::Delete {
                        prop_assert_eq!(c.reason, Reason::Unverified);
                    }
                }
                Some(Observation::Listed(present)) if present.contains(&c.key.peer) => {
                    prop_assert!(c.reason.is_drift());
                }
                _ => prop_assert!(c.reason != Reason::Unverified && !c.reason.is_drift()),
            }
        }
        // Everything on the server that the manifest names is deleted.
        for (u, observation) in &o.users {
            if let Observation::Listed(present) = observation {
                for p in present {
                    prop_assert!(plan.changes.iter().any(|c| &c.key.from == u && &c.key.peer == p
                        && c.action == Action::Delete));
                }
            }
        }
        prop_assert!(plan.changes.is_sorted_by(|a, b| a.key < b.key));
        prop_assert_eq!(plan.summary, Summary::count(&plan.changes, plan.summary.unchanged));
    }

    #[test]
    fn applying_a_refreshed_plan_to_a_server_that_obeys_leaves_nothing_to_do(
        want in arb_entries(), have in arb_entries(), server in arb_server()
    ) {
        // Every user readable, so that the plan can settle.
        let server: BTreeMap<_, _> = server
            .into_iter()
            .map(|(u, o)| (u, Some(o.flatten())))
            .collect();
        let d = to_desired(&want);
        let w = wanted(&d, &Filter::default());
        let plan = diff(&d, None, &to_state(&have), &Filter::default(), &observe(&server, &w));
        let mut after_state = have.clone();
        let mut after_server = server.clone();
        for c in &plan.changes {
            let key = (c.key.from.clone(), c.key.peer.clone());
            match c.action {
                Action::Delete | Action::Record => {
                    after_state.insert(key, c.clear_roaming);
                }
                Action::Forget => {
                    after_state.remove(&key);
                }
            }
            if c.action == Action::Delete
                && let Some(Some(Some(list))) = after_server.get_mut(&c.key.from)
            {
                list.remove(&c.key.peer);
            }
        }
        let again = diff(&d, None, &to_state(&after_state), &Filter::default(), &observe(&after_server, &w));
        prop_assert!(again.changes.is_empty(), "{:?}", again.changes);
        // And a plan without refresh agrees that nothing is left.
        prop_assert!(crate::plan::diff(&d, None, &to_state(&after_state), &Filter::default()).changes.is_empty());
    }

    #[test]
    fn refreshed_plans_round_trip_through_the_saved_form(
        want in arb_entries(), have in arb_entries(), server in arb_server()
    ) {
        let d = to_desired(&want);
        let o = observe(&server, &wanted(&d, &Filter::default()));
        let plan = diff(&d, None, &to_state(&have), &Filter::default(), &o);
        let text = crate::plan::saved::to_json(&plan);
        let back = crate::plan::saved::from_json(&text, "p.json".as_ref()).unwrap();
        prop_assert_eq!(back, plan);
    }
}
