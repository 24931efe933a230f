//! Snapshots of a plan's three renderings. The plan is built from fixed data (fixed lineage,
//! digest) so the snapshots are stable; a plan holds no secrets, so neither do they.

use timctl_core::api::Region;
use timctl_core::desired::{App, DesiredEntry, DesiredState};
use timctl_core::ids::{ConversationKey, UserId};
use timctl_core::ledger::{StateEntry, StateRef};
use timctl_core::plan::{self, Filter, Plan, render};

fn fixture() -> Plan {
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
    plan::diff(&desired, Some(state_ref), &state, &Filter::default())
}

fn no_changes() -> Plan {
    let mut p = fixture();
    p.changes.clear();
    p.summary = plan::Summary {
        delete: 0,
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
