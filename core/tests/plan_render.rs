//! Snapshots of a plan's three renderings. The plan is built from fixed data (fixed lineage,
//! digest) so the snapshots are stable; a plan holds no secrets, so neither do they.

use timctl_core::api::Region;
use timctl_core::desired::{App, DesiredEntry, DesiredState};
use timctl_core::ids::{ConversationKey, UserId};
use timctl_core::ledger::{Origin, StateEntry, StateRef};
use timctl_core::plan::observed::{Observation, Observations};
use timctl_core::plan::{self, Filter, Plan, render};

fn fixture() -> Plan {
    let (desired, state, state_ref) = inputs();
    plan::diff(&desired, Some(state_ref), &state, &Filter::default())
}

/// The same inputs, refreshed: alice's list holds bob, carol's holds dave (came back), erin's
/// could not be read, and gina (new in the manifest) has an empty list.
fn refreshed() -> Plan {
    let (mut desired, state, state_ref) = inputs();
    let user = |s: &str| UserId::new(s).unwrap();
    desired.entries.push(DesiredEntry {
        key: ConversationKey::new(user("gina"), "user:harry".parse().unwrap()),
        clear_roaming: false,
    });
    desired.entries.sort();
    let listed =
        |peers: &[&str]| Observation::Listed(peers.iter().map(|p| p.parse().unwrap()).collect());
    let seen = Observations {
        at: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        users: [
            (user("alice"), listed(&["user:bob"])),
            (user("carol"), listed(&["user:dave"])),
            (
                user("erin"),
                Observation::Unreadable("a page without CompleteFlag".to_owned()),
            ),
            (user("gina"), listed(&[])),
        ]
        .into_iter()
        .collect(),
    };
    plan::observed::diff(&desired, Some(state_ref), &state, &Filter::default(), &seen)
}

fn inputs() -> (DesiredState, Vec<StateEntry>, StateRef) {
    let user = |s: &str| UserId::new(s).unwrap();
    let want = |from: &str, peer: &str, clear: bool| DesiredEntry {
        key: ConversationKey::new(user(from), peer.parse().unwrap()),
        clear_roaming: clear,
    };
    let had = |from: &str, peer: &str, clear: bool| StateEntry {
        key: ConversationKey::new(user(from), peer.parse().unwrap()),
        clear_roaming: clear,
        deleted_at: jiff::Timestamp::from_second(1_700_000_000).unwrap(),
        run_id: uuid::Uuid::nil(),
        origin: Origin::Deleted,
    };
    let desired = DesiredState {
        app: App {
            sdkappid: 1_400_000_001,
            region: Region::Singapore,
            admin: user("administrator"),
        },
        entries: vec![
            want("alice", "user:bob", true),
            want("alice", "group:@TGS#2C5SZEAEF", false),
            want("carol", "user:dave", false),
            want("erin", "user:frank", true),
        ],
        digest: "9f2c1e0b7a".to_owned(),
        files: 1,
    };
    let state = vec![
        had("carol", "user:dave", false),
        had("erin", "user:frank", false),
        had("zoe", "group:old|group", false),
    ];
    let state_ref = StateRef {
        lineage: uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
        serial: 7,
    };
    (desired, state, state_ref)
}

fn no_changes() -> Plan {
    let mut p = fixture();
    p.changes.clear();
    p.summary = plan::Summary {
        delete: 0,
        record: 0,
        forget: 0,
        unchanged: 4,
    };
    p.state = None;
    p
}

#[test]
fn text() {
    insta::assert_snapshot!("text", render::text(&fixture(), None));
    insta::assert_snapshot!("text_limited", render::text(&fixture(), Some(2)));
    insta::assert_snapshot!("text_no_changes", render::text(&no_changes(), None));
}

#[test]
fn json() {
    let json = plan::saved::to_json(&fixture());
    insta::assert_snapshot!("json", json);
    insta::assert_snapshot!("json_no_state", plan::saved::to_json(&no_changes()));
}

#[test]
fn markdown() {
    insta::assert_snapshot!("markdown", render::markdown(&fixture(), None));
    insta::assert_snapshot!("markdown_limited", render::markdown(&fixture(), Some(1)));
    insta::assert_snapshot!("markdown_no_changes", render::markdown(&no_changes(), None));
}

#[test]
fn refreshed_renderings() {
    let plan = refreshed();
    insta::assert_snapshot!("refreshed_text", render::text(&plan, None));
    insta::assert_snapshot!("refreshed_json", plan::saved::to_json(&plan));
    insta::assert_snapshot!("refreshed_markdown", render::markdown(&plan, None));
}

#[test]
fn refreshed_saved_plans_read_back_as_written() {
    let plan = refreshed();
    let back = plan::saved::from_json(&plan::saved::to_json(&plan), "p.json".as_ref()).unwrap();
    assert_eq!(back, plan);
    assert!(back.refreshed());
}
