use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::api::Region;
use crate::ids::{GroupId, Peer, UserId};

fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn app() -> App {
    App {
        sdkappid: 1_400_000_001,
        region: Region::Singapore,
        admin: user("administrator"),
    }
}

fn desired(entries: &[(&str, &str, bool)]) -> DesiredState {
    let mut entries: Vec<DesiredEntry> = entries
        .iter()
        .map(|(from, peer, clear)| DesiredEntry {
            key: ConversationKey::new(user(from), peer.parse().unwrap()),
            clear_roaming: *clear,
        })
        .collect();
    entries.sort();
    DesiredState {
        app: app(),
        entries,
        digest: "d1".to_owned(),
        files: 1,
    }
}

fn recorded(entries: &[(&str, &str, bool)]) -> Vec<StateEntry> {
    let mut entries: Vec<StateEntry> = entries
        .iter()
        .map(|(from, peer, clear)| StateEntry {
            key: ConversationKey::new(user(from), peer.parse().unwrap()),
            clear_roaming: *clear,
            deleted_at: jiff::Timestamp::UNIX_EPOCH,
            run_id: uuid::Uuid::nil(),
            origin: crate::ledger::Origin::Deleted,
        })
        .collect();
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    entries
}

fn actions(plan: &Plan) -> Vec<(String, String, &'static str, bool)> {
    plan.changes
        .iter()
        .map(|c| {
            (
                c.key.from.to_string(),
                c.key.peer.to_string(),
                c.action.as_str(),
                c.clear_roaming,
            )
        })
        .collect()
}

#[test]
fn fresh_state_deletes_everything() {
    let d = desired(&[("alice", "user:bob", true), ("alice", "group:g1", false)]);
    let plan = diff(&d, None, &[], &Filter::default());
    assert_eq!(
        actions(&plan),
        vec![
            ("alice".into(), "user:bob".into(), "delete", true),
            ("alice".into(), "group:g1".into(), "delete", false),
        ]
    );
    assert_eq!(
        plan.summary,
        Summary {
            delete: 2,
            record: 0,
            forget: 0,
            unchanged: 0
        }
    );
    assert_eq!(plan.state, None);
    assert_eq!(plan.manifest_digest, "d1");
}

#[test]
fn recorded_entries_are_unchanged_removed_ones_forgotten() {
    let d = desired(&[("alice", "user:bob", false), ("carol", "user:dave", false)]);
    let s = recorded(&[("alice", "user:bob", false), ("erin", "group:g2", true)]);
    let plan = diff(&d, None, &s, &Filter::default());
    assert_eq!(
        actions(&plan),
        vec![
            ("carol".into(), "user:dave".into(), "delete", false),
            ("erin".into(), "group:g2".into(), "forget", true),
        ]
    );
    assert_eq!(plan.summary.unchanged, 1);
}

#[test]
fn clear_roaming_upgrade_deletes_again_but_downgrade_does_not() {
    let d = desired(&[("alice", "user:bob", true), ("alice", "user:carl", false)]);
    let s = recorded(&[("alice", "user:bob", false), ("alice", "user:carl", true)]);
    let plan = diff(&d, None, &s, &Filter::default());
    assert_eq!(
        actions(&plan),
        vec![("alice".into(), "user:bob".into(), "delete", true)]
    );
    assert_eq!(plan.summary.unchanged, 1);
}

#[test]
fn reassert_deletes_every_manifest_entry_but_still_forgets() {
    let d = desired(&[("alice", "user:bob", false)]);
    let s = recorded(&[("alice", "user:bob", false), ("alice", "user:zed", false)]);
    let filter = Filter {
        reassert: true,
        ..Filter::default()
    };
    let plan = diff(&d, None, &s, &filter);
    assert_eq!(
        actions(&plan),
        vec![
            ("alice".into(), "user:bob".into(), "delete", false),
            ("alice".into(), "user:zed".into(), "forget", false),
        ]
    );
    assert_eq!(plan.summary.unchanged, 0);
}

#[test]
fn filters_narrow_deletes_forgets_and_unchanged() {
    let d = desired(&[
        ("alice", "user:bob", false),
        ("carol", "user:dave", false),
        ("erin", "user:frank", false),
    ]);
    let s = recorded(&[("alice", "user:old", false), ("erin", "user:frank", false)]);
    let only = Filter {
        users: [user("alice"), user("erin")].into(),
        exclude_users: [user("erin")].into(),
        ..Filter::default()
    };
    let plan = diff(&d, None, &s, &only);
    assert_eq!(
        actions(&plan),
        vec![
            ("alice".into(), "user:bob".into(), "delete", false),
            ("alice".into(), "user:old".into(), "forget", false),
        ]
    );
    assert_eq!(plan.summary.unchanged, 0);
}

#[test]
fn unsorted_input_is_sorted_not_trusted() {
    let mut d = desired(&[("alice", "user:bob", false), ("bob", "user:x", false)]);
    d.entries.reverse();
    let mut s = recorded(&[("alice", "user:bob", false), ("zed", "user:x", false)]);
    s.reverse();
    let plan = diff(&d, None, &s, &Filter::default());
    assert_eq!(
        actions(&plan),
        vec![
            ("bob".into(), "user:x".into(), "delete", false),
            ("zed".into(), "user:x".into(), "forget", false),
        ]
    );
}

#[test]
fn users_sort_before_groups_as_in_the_ledger() {
    // The ledger sorts by type code (1 user, 2 group), which must agree with `Peer`'s order,
    // or the merge would see equal keys as different.
    let u = Peer::User(user("zzz"));
    let g = Peer::Group(GroupId::new("aaa").unwrap());
    assert!(u < g);
}

// ----- properties -----

fn arb_peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        "[a-d]{1,2}".prop_map(|s| Peer::User(UserId::new(s).unwrap())),
        "[a-d]{1,2}".prop_map(|s| Peer::Group(GroupId::new(s).unwrap())),
    ]
}

fn arb_user() -> impl Strategy<Value = UserId> {
    "[a-e]".prop_map(|s| UserId::new(s).unwrap())
}

fn arb_entries() -> impl Strategy<Value = BTreeMap<ConversationKey, bool>> {
    prop::collection::btree_map(
        (arb_user(), arb_peer()).prop_map(|(from, peer)| ConversationKey::new(from, peer)),
        any::<bool>(),
        0..40,
    )
}

fn arb_filter() -> impl Strategy<Value = Filter> {
    (
        any::<bool>(),
        prop::collection::btree_set(arb_user(), 0..3),
        prop::collection::btree_set(arb_user(), 0..2),
    )
        .prop_map(|(reassert, users, exclude_users)| Filter {
            reassert,
            users,
            exclude_users,
        })
}

fn to_desired(m: &BTreeMap<ConversationKey, bool>) -> DesiredState {
    DesiredState {
        app: app(),
        entries: m
            .iter()
            .map(|(key, clear)| DesiredEntry {
                key: key.clone(),
                clear_roaming: *clear,
            })
            .collect(),
        digest: "d".to_owned(),
        files: 1,
    }
}

fn to_state(m: &BTreeMap<ConversationKey, bool>) -> Vec<StateEntry> {
    m.iter()
        .map(|(key, clear)| StateEntry {
            key: key.clone(),
            clear_roaming: *clear,
            deleted_at: jiff::Timestamp::UNIX_EPOCH,
            run_id: uuid::Uuid::nil(),
            origin: crate::ledger::Origin::Deleted,
        })
        .collect()
}

/// What apply does to the state with a plan.
fn apply_effects(state: &mut BTreeMap<ConversationKey, bool>, plan: &Plan) {
    for c in &plan.changes {
        let key = c.key.clone();
        match c.action {
            Action::Delete | Action::Record => {
                state.insert(key, c.clear_roaming);
            }
            Action::Forget => {
                state.remove(&key);
            }
        }
    }
}

proptest! {
    #[test]
    fn applying_a_plan_then_planning_again_changes_nothing(
        want in arb_entries(), have in arb_entries(), filter in arb_filter()
    ) {
        let d = to_desired(&want);
        let plan = diff(&d, None, &to_state(&have), &filter);
        let mut after = have.clone();
        apply_effects(&mut after, &plan);
        let again = Filter { reassert: false, ..filter.clone() };
        let replan = diff(&d, None, &to_state(&after), &again);
        prop_assert!(replan.changes.is_empty(), "{:?}", replan.changes);
        // Everything the manifest asks for within the filter is now unchanged.
        let in_filter = want.keys().filter(|k| filter.includes(&k.from)).count() as u64;
        prop_assert_eq!(replan.summary.unchanged, in_filter);
    }

    #[test]
    fn plans_touch_only_filtered_users_and_each_entry_once(
        want in arb_entries(), have in arb_entries(), filter in arb_filter()
    ) {
        let plan = diff(&to_desired(&want), None, &to_state(&have), &filter);
        let mut keys = BTreeSet::new();
        for c in &plan.changes {
            prop_assert!(filter.includes(&c.key.from), "{} is outside the filter", c.key.from);
            prop_assert!(keys.insert(c.key.clone()), "{} twice", c.key);
            match c.action {
                Action::Delete => prop_assert!(want.contains_key(&c.key)),
                Action::Record => prop_assert!(false, "a plan without refresh records nothing"),
                Action::Forget => {
                    prop_assert!(have.contains_key(&c.key));
                    prop_assert!(!want.contains_key(&c.key));
                }
            }
        }
        // Sorted, as the invariant says, and the counts add up.
        prop_assert!(plan.changes.is_sorted_by(|a, b| a.key < b.key));
        let deletes = plan.changes.iter().filter(|c| c.action == Action::Delete).count() as u64;
        prop_assert_eq!(plan.summary.delete, deletes);
        prop_assert_eq!(plan.summary.forget, plan.changes.len() as u64 - deletes);
        let in_filter = want.keys().filter(|k| filter.includes(&k.from)).count() as u64;
        prop_assert_eq!(plan.summary.delete + plan.summary.unchanged, in_filter);
    }

    #[test]
    fn saved_plans_round_trip(want in arb_entries(), have in arb_entries(), filter in arb_filter()) {
        let plan = diff(&to_desired(&want), None, &to_state(&have), &filter);
        let json = saved::to_json(&plan);
        let back = saved::from_json(&json, std::path::Path::new("p.json")).unwrap();
        prop_assert_eq!(back, plan);
    }
}

#[test]
fn check_state_rules() {
    let a = StateRef {
        lineage: uuid::Uuid::from_u128(1),
        serial: 3,
    };
    let b = StateRef {
        lineage: uuid::Uuid::from_u128(2),
        serial: 3,
    };
    let a4 = StateRef { serial: 4, ..a };
    assert_eq!(check_state(None, None), Ok(()));
    assert_eq!(check_state(Some(a), Some(a)), Ok(()));
    assert!(matches!(
        check_state(None, Some(a)),
        Err(StalePlan::StateAppeared { .. })
    ));
    assert!(matches!(
        check_state(Some(a), None),
        Err(StalePlan::StateVanished { .. })
    ));
    assert!(matches!(
        check_state(Some(a), Some(b)),
        Err(StalePlan::LineageChanged { .. })
    ));
    assert!(matches!(
        check_state(Some(a), Some(a4)),
        Err(StalePlan::SerialChanged { .. })
    ));
}

#[test]
fn edited_plan_files_are_refused() {
    let d = desired(&[("alice", "user:bob", true), ("carol", "group:g", false)]);
    let plan = diff(&d, None, &[], &Filter::default());
    let json = saved::to_json(&plan);
    let p = std::path::Path::new("plan.json");

    let miscounted = json.replace("\"delete\":2", "\"delete\":1");
    assert!(matches!(
        saved::from_json(&miscounted, p),
        Err(PlanFileError::Invalid { .. })
    ));
    let bad_id = json.replace("\"bob\"", "\"\"");
    assert!(matches!(
        saved::from_json(&bad_id, p),
        Err(PlanFileError::Syntax { .. } | PlanFileError::Invalid { .. })
    ));
    let newer = json.replace("\"format_version\":2", "\"format_version\":3");
    assert!(matches!(
        saved::from_json(&newer, p),
        Err(PlanFileError::NewerFormat { found: 3, .. })
    ));
    // A reason that does not go with its action, or one only a refresh gives in a plan that
    // was not refreshed.
    let mismatched = json.replacen("\"reason\":\"new\"", "\"reason\":\"not_in_manifest\"", 1);
    assert!(matches!(
        saved::from_json(&mismatched, p),
        Err(PlanFileError::Invalid { .. })
    ));
    let unrefreshed = json.replacen("\"reason\":\"new\"", "\"reason\":\"present\"", 1);
    assert!(matches!(
        saved::from_json(&unrefreshed, p),
        Err(PlanFileError::Invalid { .. })
    ));
    let half_refreshed = json.replace("\"refreshed\":false", "\"refreshed\":true");
    assert!(matches!(
        saved::from_json(&half_refreshed, p),
        Err(PlanFileError::Invalid { .. })
    ));
    let no_reason = json.replacen("\"reason\":\"new\",", "", 1);
    assert!(matches!(
        saved::from_json(&no_reason, p),
        Err(PlanFileError::Invalid { .. })
    ));
    let broken = &json[..json.len() / 2];
    match saved::from_json(broken, p) {
        Err(PlanFileError::Syntax {
            line: 1, column, ..
        }) => assert!(column > 0),
        other => panic!("expected a syntax error, got {other:?}"),
    }
    let unknown = json.replace("\"summary\"", "\"extra\":1,\"summary\"");
    assert!(matches!(
        saved::from_json(&unknown, p),
        Err(PlanFileError::Syntax { .. })
    ));
}

#[test]
fn text_rendering_limits_and_counts_the_rest() {
    let d = desired(&[
        ("alice", "user:a", false),
        ("alice", "user:b", false),
        ("bob", "user:c", false),
        ("carl", "user:d", false),
    ]);
    let plan = diff(&d, None, &[], &Filter::default());
    let text = render::text(&plan, Some(2));
    assert!(text.contains("user:b"), "{text}");
    assert!(!text.contains("user:c"), "{text}");
    assert!(
        text.contains("2 more changes (2 to delete, 0 to forget) for 2 users not shown"),
        "{text}"
    );
    assert!(text.ends_with("Plan: 4 to delete, 0 to forget, 0 unchanged.\n"));
    assert!(!render::text(&plan, None).contains("not shown"));
}

#[test]
fn markdown_ids_cannot_break_the_table() {
    let d = desired(&[("a|b", "user:<x>*_`", false)]);
    let md = render::markdown(&diff(&d, None, &[], &Filter::default()), None);
    let row = md
        .lines()
        .find(|l| l.contains("| delete | new | <code>"))
        .unwrap();
    assert_eq!(row.matches('|').count(), 6, "{row}");
    assert!(!row.contains("<x>"), "{row}");
}

#[test]
fn version_1_plans_are_still_read() {
    let v1 = r#"{"format_version":1,"app":{"sdkappid":1400000001,"region":"singapore","admin":"administrator"},"state":null,"manifest_digest":"d1","changes":[{"action":"delete","from":"alice","type":"user","peer":"bob","clear_roaming":true},{"action":"forget","from":"carol","type":"group","peer":"g","clear_roaming":false}],"summary":{"delete":1,"forget":1,"unchanged":2}}"#;
    let plan = saved::from_json(v1, std::path::Path::new("v1.json")).unwrap();
    assert!(!plan.refreshed());
    assert_eq!(
        plan.changes.iter().map(|c| c.reason).collect::<Vec<_>>(),
        [Reason::New, Reason::NotInManifest]
    );
    assert_eq!(
        plan.summary,
        Summary {
            delete: 1,
            record: 0,
            forget: 1,
            unchanged: 2
        }
    );
    // Version 1 had no records.
    let with_record = v1.replace("\"action\":\"delete\"", "\"action\":\"record\"");
    assert!(saved::from_json(&with_record, std::path::Path::new("v1.json")).is_err());
}

#[test]
fn a_user_flag_naming_no_manifest_user_is_refused_with_the_closest_names() {
    let d = desired(&[
        ("alice", "user:bob", false),
        ("alina", "user:bob", false),
        ("carol", "user:dave", false),
    ]);
    let only = |users: &[&str], excluded: &[&str]| Filter {
        reassert: false,
        users: users.iter().map(|u| user(u)).collect(),
        exclude_users: excluded.iter().map(|u| user(u)).collect(),
    };
    assert!(only(&["alice"], &["carol"]).check_users(&d, &[]).is_ok());
    // A user only the state names is known: its entries are the plan's forgets.
    let s = recorded(&[("zed", "user:gone", false)]);
    assert!(only(&["zed"], &[]).check_users(&d, &s).is_ok());
    assert!(only(&["zed"], &[]).check_users(&d, &[]).is_err());

    let err = only(&["alcie"], &[]).check_users(&d, &s).unwrap_err();
    assert_eq!((err.flag, err.user.as_str()), ("--user", "alcie"));
    assert_eq!(err.closest, ["alice"]);

    let err = only(&[], &["zed"]).check_users(&d, &[]).unwrap_err();
    assert_eq!(err.flag, "--exclude-user");
    assert!(err.closest.is_empty(), "{:?}", err.closest);

    // plan::make refuses it (here with no state at all).
    let dir = tempfile::tempdir().unwrap();
    let ledger = crate::ledger::SqliteLedger::open_read_only(&dir.path().join("state.db")).unwrap();
    let err = make(&d, &ledger, &only(&["alcie"], &[]), None).unwrap_err();
    assert!(matches!(err, PlanError::UnknownUser(_)), "{err:?}");
}
