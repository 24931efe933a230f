//! `timctl validate` on the shipped examples and on good manifests of every shape.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn validate(args: &[&str]) -> std::process::Output {
    timctl_tests::timctl()
        .current_dir(root())
        .arg("validate")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn examples_are_valid_with_a_one_line_summary() {
    let small = validate(&["-f", "examples/timctl.yaml"]);
    assert_eq!(small.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&small.stdout),
        "The manifests are valid: 2 users, 3 conversations, 1 file.\n"
    );
    let acme = validate(&["-f", "examples/acme"]);
    assert_eq!(acme.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&acme.stdout),
        "The manifests are valid: 6 users, 11 conversations, 4 files.\n"
    );
}

#[test]
fn json_format_gives_the_summary() {
    let out = validate(&["-f", "examples/acme", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["valid"], true);
    assert_eq!(
        doc["summary"],
        serde_json::json!({"users": 6, "conversations": 11, "files": 4})
    );
}

#[test]
fn every_example_has_the_schema_modeline() {
    let mut files = Vec::new();
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if !p.is_dir() {
                out.push(p)
            } else if !p.ends_with("examples/ci") && !p.ends_with("examples/serve") {
                // examples/ci holds CI pipelines and examples/serve deployment files (systemd,
                // Kubernetes, Prometheus), not manifests.
                walk(&p, out)
            }
        }
    }
    walk(&root().join("examples"), &mut files);
    for f in files
        .iter()
        .filter(|f| !f.to_string_lossy().ends_with(".json.yaml"))
    {
        let first = std::fs::read_to_string(f).unwrap();
        let first = first.lines().next().unwrap();
        let target = first
            .strip_prefix("# yaml-language-server: $schema=")
            .unwrap_or_else(|| panic!("{} has no modeline", f.display()));
        let schema = f.parent().unwrap().join(target);
        assert!(
            schema
                .canonicalize()
                .unwrap()
                .ends_with("timctl.schema.json"),
            "{}",
            f.display()
        );
    }
}

#[test]
fn defaults_sorting_and_digest_through_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    let b = dir.path().join("b.yml");
    std::fs::write(
        &a,
        "version: 1\napp: {sdkappid: 7, region: tokyo, admin: admin}\ndefaults: {clear_roaming: true}\nabsent:\n  zed:\n    - user: bob\n    - group: g1\n      clear_roaming: false\n  amy:\n    - user: carl\n",
    )
    .unwrap();
    // JSON is YAML: a manifest written as JSON is accepted.
    std::fs::write(
        &b,
        r#"{"version": 1, "absent": {"amy": [{"group": "@TGS#x"}], "bob": []}}"#,
    )
    .unwrap();
    let state = timctl_core::manifest::load(&[dir.path().to_owned()]).unwrap();
    assert_eq!(state.files, 2);
    assert_eq!(state.app.sdkappid, 7);
    let got: Vec<(String, String, bool)> = state
        .entries
        .iter()
        .map(|e| {
            (
                e.key.from.to_string(),
                e.key.peer.to_string(),
                e.clear_roaming,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("amy".into(), "user:carl".into(), true),
            ("amy".into(), "group:@TGS#x".into(), false),
            ("zed".into(), "user:bob".into(), true),
            ("zed".into(), "group:g1".into(), false),
        ]
    );
    // The digest depends on content, not on the order the files are given in.
    let reversed = timctl_core::manifest::load(&[b.clone(), a.clone()]).unwrap();
    assert_eq!(reversed.digest, state.digest);
    assert_eq!(state.digest.len(), 64);
    std::fs::write(
        &b,
        r#"{"version": 1, "absent": {"amy": [{"group": "@TGS#y"}]}}"#,
    )
    .unwrap();
    let changed = timctl_core::manifest::load(&[a, b]).unwrap();
    assert_ne!(changed.digest, state.digest);
}

#[test]
fn a_big_manifest_loads_past_the_default_node_budget() {
    // 60,000 entries is about 200,000 nodes more than serde-saphyr's default budget allows.
    use std::fmt::Write;
    let mut s =
        String::from("version: 1\napp: {sdkappid: 7, region: china, admin: admin}\nabsent:\n");
    for u in 0..6000 {
        let _ = writeln!(s, "  u{u}:");
        for p in 0..10 {
            let _ = writeln!(s, "    - user: p{p}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.yaml");
    std::fs::write(&f, s).unwrap();
    let state = timctl_core::manifest::load(&[f]).unwrap();
    assert_eq!(state.entries.len(), 60_000);
    assert!(state.entries.windows(2).all(|w| w[0].key < w[1].key));
}
