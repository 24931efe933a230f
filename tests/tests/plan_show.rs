//! `timctl show PLANFILE` through the real binary, on plans saved by the library.

use timctl_core::api::Region;
use timctl_core::desired::{App, DesiredEntry, DesiredState};
use timctl_core::ids::ConversationKey;
use timctl_core::plan::{self, Filter};

fn saved(dir: &tempfile::TempDir) -> (std::path::PathBuf, String) {
    let desired = DesiredState {
        app: App {
            sdkappid: 1_400_000_001,
            region: Region::Tokyo,
            admin: "administrator".parse().unwrap(),
        },
        entries: vec![DesiredEntry {
            key: ConversationKey::new("alice".parse().unwrap(), "user:bob".parse().unwrap()),
            clear_roaming: false,
        }],
        digest: "abc".to_owned(),
        files: 1,
    };
    let p = plan::diff(&desired, None, &[], &Filter::default());
    let path = dir.path().join("plan.json");
    plan::saved::write(&p, &path).unwrap();
    (path, plan::saved::to_json(&p))
}

#[test]
fn show_prints_a_saved_plan_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let (path, json) = saved(&dir);
    let run = |format: &str| {
        let out = timctl_tests::succeeds(
            timctl_tests::timctl()
                .arg("show")
                .arg(&path)
                .args(["--format", format]),
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        run("json"),
        json,
        "show --format json is the saved document"
    );
    let text = run("text");
    assert!(text.contains("alice\n  - delete user:bob\n"), "{text}");
    assert!(
        text.ends_with("Plan: 1 to delete, 0 to forget, 0 unchanged.\n"),
        "{text}"
    );
    assert!(run("markdown").starts_with("### timctl plan: 1 to delete"));
}

#[test]
fn show_refuses_a_broken_or_edited_plan_with_where() {
    let dir = tempfile::tempdir().unwrap();
    let (path, json) = saved(&dir);
    std::fs::write(&path, json.replace("\"delete\":1", "\"delete\":9")).unwrap();
    let out = timctl_tests::timctl()
        .arg("show")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("inconsistent"));

    std::fs::write(&path, "{\"format_version\": 1,\n  \"app\": oops}").unwrap();
    let out = timctl_tests::timctl()
        .arg("show")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plan.json:2:"), "{err}");

    let out = timctl_tests::timctl()
        .args(["show", "/nonexistent/plan.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/plan.json"));
}
